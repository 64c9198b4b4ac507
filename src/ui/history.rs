//! `rch workers history ID`: a worker's recent jobs and breaker transitions.

use super::{events, fleet, Output};
use crate::state::report::WorkerHistory;
use time::OffsetDateTime;

/// Transitions oldest first, then the jobs newest first.
pub fn history_text(out: &Output, h: &WorkerHistory, now: OffsetDateTime) -> String {
    let mut blocks = Vec::new();
    if h.events.is_empty() {
        blocks.push(format!(
            "{}: no breaker transitions or operator changes recorded",
            h.worker
        ));
    } else {
        let lines: Vec<String> = h.events.iter().map(events::event_line).collect();
        blocks.push(format!(
            "{}: events (oldest first)\n{}",
            h.worker,
            lines.join("\n")
        ));
    }
    if h.jobs.is_empty() {
        blocks.push(format!("{}: no jobs recorded", h.worker));
    } else {
        blocks.push(format!(
            "{}: jobs (newest first)\n{}",
            h.worker,
            fleet::jobs_table(out, &h.jobs, now)
        ));
    }
    blocks.join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shows_events_in_given_order() {
        let h = WorkerHistory {
            worker: "w1".into(),
            jobs: vec![],
            events: vec![
                serde_json::from_value(
                    json!({"event": "circuit.opened", "at": "a", "worker": "w1",
                    "failure_count": 3, "threshold": 3, "cooldown_seconds": 30, "reason": "x"}),
                )
                .unwrap(),
                serde_json::from_value(
                    json!({"event": "circuit.closed", "at": "b", "worker": "w1",
                    "recovery_time_seconds": 1}),
                )
                .unwrap(),
            ],
        };
        let text = history_text(&Output::plain(), &h, OffsetDateTime::UNIX_EPOCH);
        let opened = text.find("circuit.opened").unwrap();
        let closed = text.find("circuit.closed").unwrap();
        assert!(opened < closed);
        assert!(text.contains("w1: no jobs recorded"));
    }
}
