//! Events the daemon emits: stored, streamed to `rch events --follow`, and
//! logged as structured tracing lines. Names and payloads are part of the
//! user-facing contract.

use serde::Serialize;

/// What happened. Serialized with an `event` field naming it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event")]
pub enum EventKind {
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
    },
    #[serde(rename = "lease.queued")]
    LeaseQueued { reason: String, position: usize },
    #[serde(rename = "worker.changed")]
    WorkerChanged { worker: String, action: String },
}

impl EventKind {
    /// The worker the event is about, if any.
    pub fn worker(&self) -> Option<&str> {
        match self {
            EventKind::CircuitOpened { worker, .. }
            | EventKind::CircuitHalfOpen { worker, .. }
            | EventKind::CircuitClosed { worker, .. }
            | EventKind::CircuitReset { worker }
            | EventKind::BuildFallback { worker, .. }
            | EventKind::WorkerChanged { worker, .. } => Some(worker),
            EventKind::LeaseQueued { .. } => None,
        }
    }
}

/// An event with its time.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(flatten)]
    pub kind: EventKind,
    /// RFC 3339.
    pub at: String,
}

impl Event {
    pub fn new(kind: EventKind, now_ms: u64) -> Self {
        Event {
            kind,
            at: super::clock::rfc3339(now_ms),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_has_event_and_at() {
        let e = Event::new(
            EventKind::BuildFallback {
                worker: "w1".into(),
                reason: "refused".into(),
                to: "w2".into(),
            },
            0,
        );
        let v = e.to_json();
        assert_eq!(v["event"], "build.fallback");
        assert_eq!(v["at"], "1970-01-01T00:00:00Z");
        assert_eq!(v["to"], "w2");
    }
}
