//! Daemon events as one readable line each (`rch events`, `rch workers history`).

use crate::state::events::{Event, EventRecord};

/// `2024-05-01T12:00:00Z  circuit.opened     w1: opened after 3 failures …`.
pub fn event_line(record: &EventRecord) -> String {
    let name = record.event.name();
    let line = format!("{}  {name:<18} {}", record.at, describe(&record.event));
    match &record.origin {
        // A team event from another daemon says where it came from.
        Some(origin) => format!("{line}  [{origin}]"),
        None => line,
    }
}

/// A reason without the leading `w1: ` the line already shows.
fn reason<'a>(text: &'a str, worker: &str) -> &'a str {
    text.strip_prefix(worker)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(text)
}

/// What happened, in words.
fn describe(event: &Event) -> String {
    match event {
        Event::CircuitOpened {
            worker,
            failure_count,
            threshold,
            cooldown_seconds,
            reason: why,
        } => format!(
            "{worker}: opened after {failure_count} failures (threshold {threshold}), cooldown {cooldown_seconds}s: {}",
            reason(why, worker)
        ),
        Event::CircuitHalfOpen { worker, probe } => {
            let how = if *probe { "a probe" } else { "trial traffic" };
            format!("{worker}: half_open, testing with {how}")
        }
        Event::CircuitClosed {
            worker,
            recovery_time_seconds,
        } => format!(
            "{worker}: closed, recovered after {}",
            super::time::duration(*recovery_time_seconds)
        ),
        Event::CircuitReset { worker } => format!("{worker}: reset to closed by the operator"),
        Event::BuildFallback {
            worker,
            reason: why,
            to,
            ..
        } => format!(
            "{worker} failed, build moved to {to}: {}",
            reason(why, worker)
        ),
        Event::LeaseQueued { reason, position } => {
            format!("queued at position {position}: {reason}")
        }
        Event::WorkerChanged { worker, action } => format!("{worker}: {}", action.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(mut v: serde_json::Value) -> String {
        if v.get("at").is_none() {
            v["at"] = json!("2024-05-01T12:00:00Z");
        }
        event_line(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn opened_reads_as_a_sentence() {
        let e = json!({"event": "circuit.opened", "at": "2024-05-01T12:00:00Z", "worker": "w1",
            "failure_count": 3, "threshold": 3, "cooldown_seconds": 30, "reason": "refused"});
        assert_eq!(
            line(e),
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
            let got = line(e);
            assert!(got.ends_with(want), "{got} vs {want}");
        }
    }

    #[test]
    fn every_event_has_a_sentence_naming_its_worker() {
        for event in crate::state::events::samples() {
            let text = describe(&event);
            if let Some(worker) = event.worker() {
                assert!(text.starts_with(worker), "{text}");
            }
            assert!(!text.contains('{'), "{text}");
        }
    }
}
