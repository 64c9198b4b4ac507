//! Daemon events as one readable line each (`rch events`, `rch workers history`).

use serde_json::Value;

/// `2024-05-01T12:00:00Z  circuit.opened     w1: opened after 3 failures …`.
pub fn event_line(event: &Value) -> String {
    let at = str_field(event, "at");
    let name = str_field(event, "event");
    format!("{at}  {name:<18} {}", describe(name, event))
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A reason without the leading `w1: ` the line already shows.
fn reason<'a>(e: &'a Value, worker: &str) -> &'a str {
    let text = str_field(e, "reason");
    text.strip_prefix(worker)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(text)
}

fn num_field(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// What happened, in words; unknown events show their fields as JSON.
fn describe(name: &str, e: &Value) -> String {
    let worker = str_field(e, "worker");
    match name {
        "circuit.opened" => format!(
            "{worker}: opened after {} failures (threshold {}), cooldown {}s: {}",
            num_field(e, "failure_count"),
            num_field(e, "threshold"),
            num_field(e, "cooldown_seconds"),
            reason(e, worker)
        ),
        "circuit.half_open" => {
            let how = if e.get("probe").and_then(Value::as_bool).unwrap_or(false) {
                "a probe"
            } else {
                "trial traffic"
            };
            format!("{worker}: half_open, testing with {how}")
        }
        "circuit.closed" => format!(
            "{worker}: closed, recovered after {}",
            super::time::duration(num_field(e, "recovery_time_seconds"))
        ),
        "circuit.reset" => format!("{worker}: reset to closed by the operator"),
        "build.fallback" => format!(
            "{worker} failed, build moved to {}: {}",
            str_field(e, "to"),
            reason(e, worker)
        ),
        "lease.queued" => format!(
            "queued at position {}: {}",
            num_field(e, "position"),
            str_field(e, "reason")
        ),
        "worker.changed" => format!("{worker}: {}", str_field(e, "action")),
        _ => rest_as_json(e),
    }
}

fn rest_as_json(e: &Value) -> String {
    let mut rest = e.clone();
    if let Some(map) = rest.as_object_mut() {
        map.remove("at");
        map.remove("event");
    }
    rest.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn opened_reads_as_a_sentence() {
        let e = json!({"event": "circuit.opened", "at": "2024-05-01T12:00:00Z", "worker": "w1",
            "failure_count": 3, "threshold": 3, "cooldown_seconds": 30, "reason": "refused"});
        assert_eq!(
            event_line(&e),
            "2024-05-01T12:00:00Z  circuit.opened     w1: opened after 3 failures (threshold 3), cooldown 30s: refused"
        );
    }

    #[test]
    fn every_known_event_names_its_subject() {
        let cases = [
            (
                json!({"event": "circuit.half_open", "worker": "w1", "probe": true}),
                "w1: half_open, testing with a probe",
            ),
            (
                json!({"event": "circuit.closed", "worker": "w1", "recovery_time_seconds": 75}),
                "w1: closed, recovered after 1m 15s",
            ),
            (
                json!({"event": "build.fallback", "worker": "w1", "to": "local", "reason": "refused"}),
                "w1 failed, build moved to local: refused",
            ),
            (
                json!({"event": "lease.queued", "position": 2, "reason": "busy"}),
                "queued at position 2: busy",
            ),
            (
                json!({"event": "worker.changed", "worker": "w2", "action": "drain"}),
                "w2: drain",
            ),
        ];
        for (e, want) in cases {
            assert!(
                event_line(&e).ends_with(want),
                "{} vs {want}",
                event_line(&e)
            );
        }
    }

    #[test]
    fn unknown_event_keeps_its_fields() {
        let e = json!({"event": "x.y", "at": "t", "n": 1});
        assert!(event_line(&e).ends_with(r#"{"n":1}"#));
    }
}
