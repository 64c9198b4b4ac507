//! Events the daemon emits: stored, streamed to `rch events --follow`,
//! counted by the metrics and logged as structured tracing lines. One typed
//! [`Event`] from the core to the screen; its names and fields are part of
//! the user-facing contract (each line is `{"event": <name>, <fields>, "at"}`).

use crate::remote::FailureKind;
use serde::{Deserialize, Serialize};

/// What happened. Serialized with an `event` field naming it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum Event {
    #[serde(rename = "circuit.opened")]
    CircuitOpened {
        worker: String,
        failure_count: u32,
        threshold: u32,
        cooldown_seconds: u64,
        reason: String,
    },
    #[serde(rename = "circuit.half_open")]
    CircuitHalfOpen { worker: String, probe: bool },
    #[serde(rename = "circuit.closed")]
    CircuitClosed {
        worker: String,
        recovery_time_seconds: u64,
    },
    #[serde(rename = "circuit.reset")]
    CircuitReset { worker: String },
    #[serde(rename = "build.fallback")]
    BuildFallback {
        worker: String,
        reason: String,
        to: String,
        /// What failed on `worker` (events stored before kinds read `other`).
        #[serde(default)]
        kind: FailureKind,
    },
    #[serde(rename = "lease.queued")]
    LeaseQueued { reason: String, position: usize },
    #[serde(rename = "worker.changed")]
    WorkerChanged {
        worker: String,
        action: crate::protocol::WorkerAction,
    },
}

impl Event {
    /// The worker the event is about, if any.
    pub fn worker(&self) -> Option<&str> {
        match self {
            Event::CircuitOpened { worker, .. }
            | Event::CircuitHalfOpen { worker, .. }
            | Event::CircuitClosed { worker, .. }
            | Event::CircuitReset { worker }
            | Event::BuildFallback { worker, .. }
            | Event::WorkerChanged { worker, .. } => Some(worker),
            Event::LeaseQueued { .. } => None,
        }
    }

    /// The event's name, as in its `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            Event::CircuitOpened { .. } => "circuit.opened",
            Event::CircuitHalfOpen { .. } => "circuit.half_open",
            Event::CircuitClosed { .. } => "circuit.closed",
            Event::CircuitReset { .. } => "circuit.reset",
            Event::BuildFallback { .. } => "build.fallback",
            Event::LeaseQueued { .. } => "lease.queued",
            Event::WorkerChanged { .. } => "worker.changed",
        }
    }
}

/// An event with its time, as stored, streamed and printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    #[serde(flatten)]
    pub event: Event,
    /// RFC 3339.
    pub at: String,
    /// `user@host:pid` of the team's daemon it came from; absent for this
    /// daemon's own events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl EventRecord {
    pub fn new(event: Event, now_ms: u64) -> Self {
        EventRecord {
            event,
            at: crate::clock::rfc3339(now_ms),
            origin: None,
        }
    }

    /// One JSON object, the line `rch events --json` prints.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One of each event, for tests that cover them all.
#[cfg(test)]
pub(crate) fn samples() -> Vec<Event> {
    use crate::protocol::WorkerAction;
    vec![
        Event::CircuitOpened {
            worker: "w1".into(),
            failure_count: 3,
            threshold: 3,
            cooldown_seconds: 30,
            reason: "w1: ssh connect refused".into(),
        },
        Event::CircuitHalfOpen {
            worker: "w1".into(),
            probe: true,
        },
        Event::CircuitClosed {
            worker: "w1".into(),
            recovery_time_seconds: 42,
        },
        Event::CircuitReset {
            worker: "w1".into(),
        },
        Event::BuildFallback {
            worker: "w1".into(),
            reason: "w1: ssh connect refused".into(),
            to: "w2".into(),
            kind: FailureKind::ConnectRefused,
        },
        Event::LeaseQueued {
            reason: "all admissible workers are busy".into(),
            position: 2,
        },
        Event::WorkerChanged {
            worker: "w2".into(),
            action: WorkerAction::Drain,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_has_event_and_at() {
        let e = EventRecord::new(
            Event::BuildFallback {
                worker: "w1".into(),
                reason: "refused".into(),
                to: "w2".into(),
                kind: FailureKind::ConnectRefused,
            },
            0,
        );
        let v: serde_json::Value = serde_json::from_str(&e.to_json_line()).unwrap();
        assert_eq!(v["event"], "build.fallback");
        assert_eq!(v["at"], "1970-01-01T00:00:00Z");
        assert_eq!(v["to"], "w2");
        assert_eq!(v["kind"], "connect_refused");
    }

    #[test]
    fn every_event_round_trips_with_its_contract_name() {
        for event in samples() {
            let record = EventRecord::new(event, 1_700_000_000_000);
            let line = record.to_json_line();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["event"], record.event.name(), "{line}");
            assert_eq!(v["at"], "2023-11-14T22:13:20Z");
            let back: EventRecord = serde_json::from_str(&line).unwrap();
            assert_eq!(back, record, "{line}");
        }
    }

    #[test]
    fn contract_fields_are_named_exactly() {
        let names = |e: &Event| -> Vec<String> {
            let v = serde_json::to_value(e).unwrap();
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        let s = samples();
        assert_eq!(
            names(&s[0]),
            [
                "cooldown_seconds",
                "event",
                "failure_count",
                "reason",
                "threshold",
                "worker"
            ]
        );
        assert_eq!(names(&s[1]), ["event", "probe", "worker"]);
        assert_eq!(names(&s[2]), ["event", "recovery_time_seconds", "worker"]);
        assert_eq!(names(&s[4]), ["event", "kind", "reason", "to", "worker"]);
        assert_eq!(names(&s[5]), ["event", "position", "reason"]);
    }

    #[test]
    fn a_fallback_stored_before_kinds_reads_as_other() {
        let line = r#"{"event":"build.fallback","worker":"w1","reason":"x","to":"local","at":"1970-01-01T00:00:00Z"}"#;
        let back: EventRecord = serde_json::from_str(line).unwrap();
        assert!(matches!(
            back.event,
            Event::BuildFallback {
                kind: FailureKind::Other,
                ..
            }
        ));
    }
}
