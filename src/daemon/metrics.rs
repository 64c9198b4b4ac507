//! Counters and gauges of the daemon, rendered as Prometheus text. Every
//! label comes from a typed value (an event, a job outcome, a failure kind).

use crate::breaker::State;
use crate::protocol::JobOutcome;
use crate::remote::FailureKind;
use crate::state::events::Event;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Upper bounds (seconds) of the lease duration histogram.
const LEASE_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0];

/// A breaker transition, as the `kind` label counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TransitionKind {
    Opened,
    HalfOpened,
    Closed,
    Reset,
}

impl TransitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Opened => "opened",
            TransitionKind::HalfOpened => "half_opened",
            TransitionKind::Closed => "closed",
            TransitionKind::Reset => "reset",
        }
    }
}

/// Where a finished job ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Placement {
    Remote,
    Local,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Remote => "remote",
            Placement::Local => "local",
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub leases_granted: u64,
    pub local_decisions: u64,
    pub attempts_ok: u64,
    pub attempts_failed: u64,
    pub attempts_unknown: u64,
    pub probes: u64,
    transitions: BTreeMap<TransitionKind, u64>,
    /// Finished jobs by outcome and placement.
    builds: BTreeMap<(JobOutcome, Placement), u64>,
    /// Fallbacks by what failed.
    fallbacks: BTreeMap<FailureKind, u64>,
    lease_buckets: [u64; LEASE_BUCKETS.len()],
    lease_count: u64,
    lease_sum: f64,
}

/// One worker's gauges, read at render time.
#[derive(Debug, Clone)]
pub struct WorkerGauge {
    pub id: String,
    pub state: State,
    pub used: u32,
    pub slots: u32,
}

/// Gauges read at render time.
pub struct Gauges {
    pub workers: Vec<WorkerGauge>,
    pub queue_depth: usize,
}

/// One per-worker figure out of a [`WorkerGauge`].
type WorkerValue = fn(&WorkerGauge) -> u64;

impl Metrics {
    /// Count what an emitted event says (transitions, fallbacks).
    pub fn observe(&mut self, event: &Event) {
        let transition = match event {
            Event::CircuitOpened { .. } => TransitionKind::Opened,
            Event::CircuitHalfOpen { .. } => TransitionKind::HalfOpened,
            Event::CircuitClosed { .. } => TransitionKind::Closed,
            Event::CircuitReset { .. } => TransitionKind::Reset,
            Event::BuildFallback { kind, .. } => {
                *self.fallbacks.entry(*kind).or_default() += 1;
                return;
            }
            Event::LeaseQueued { .. } | Event::WorkerChanged { .. } => return,
        };
        *self.transitions.entry(transition).or_default() += 1;
    }

    pub fn count_build(&mut self, outcome: JobOutcome, placement: Placement) {
        *self.builds.entry((outcome, placement)).or_default() += 1;
    }

    pub fn observe_lease_secs(&mut self, secs: f64) {
        for (i, bound) in LEASE_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.lease_buckets[i] += 1;
            }
        }
        self.lease_count += 1;
        self.lease_sum += secs;
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let o = &mut out;
        let per_worker: [(&str, &str, WorkerValue); 3] = [
            (
                "rch_circuit_state",
                "Circuit state per worker: 0 closed, 1 half_open, 2 open.",
                |w| match w.state {
                    State::Closed => 0,
                    State::HalfOpen => 1,
                    State::Open => 2,
                },
            ),
            ("rch_slots_in_use", "Slots leased per worker.", |w| {
                u64::from(w.used)
            }),
            ("rch_slots_total", "Configured slots per worker.", |w| {
                u64::from(w.slots)
            }),
        ];
        for (name, help, value) in per_worker {
            family(o, name, "gauge", help);
            for w in &gauges.workers {
                let _ = writeln!(o, "{name}{{worker=\"{}\"}} {}", w.id, value(w));
            }
        }
        family(
            o,
            "rch_queue_depth",
            "gauge",
            "Lease requests waiting for a slot.",
        );
        let _ = writeln!(o, "rch_queue_depth {}", gauges.queue_depth);
        family(
            o,
            "rch_circuit_transitions_total",
            "counter",
            "Breaker transitions by kind.",
        );
        for (kind, n) in &self.transitions {
            let kind = kind.as_str();
            let _ = writeln!(o, "rch_circuit_transitions_total{{kind=\"{kind}\"}} {n}");
        }
        family(
            o,
            "rch_builds_total",
            "counter",
            "Finished builds by outcome and placement.",
        );
        for ((outcome, placement), n) in &self.builds {
            let (outcome, placement) = (outcome.as_str(), placement.as_str());
            let _ = writeln!(
                o,
                "rch_builds_total{{outcome=\"{outcome}\",placement=\"{placement}\"}} {n}"
            );
        }
        family(
            o,
            "rch_fallbacks_total",
            "counter",
            "Builds that left a worker, by reason.",
        );
        for (kind, n) in &self.fallbacks {
            let reason = kind.as_str();
            let _ = writeln!(o, "rch_fallbacks_total{{reason=\"{reason}\"}} {n}");
        }
        family(o, "rch_leases_total", "counter", "Leases by result.");
        let _ = writeln!(
            o,
            "rch_leases_total{{result=\"granted\"}} {}",
            self.leases_granted
        );
        let _ = writeln!(
            o,
            "rch_leases_total{{result=\"local\"}} {}",
            self.local_decisions
        );
        family(
            o,
            "rch_attempts_total",
            "counter",
            "Released attempts by breaker outcome.",
        );
        let _ = writeln!(
            o,
            "rch_attempts_total{{outcome=\"success\"}} {}",
            self.attempts_ok
        );
        let _ = writeln!(
            o,
            "rch_attempts_total{{outcome=\"failure\"}} {}",
            self.attempts_failed
        );
        let _ = writeln!(
            o,
            "rch_attempts_total{{outcome=\"unknown\"}} {}",
            self.attempts_unknown
        );
        family(o, "rch_probes_total", "counter", "Worker probes run.");
        let _ = writeln!(o, "rch_probes_total {}", self.probes);
        family(
            o,
            "rch_lease_duration_seconds",
            "histogram",
            "How long leases were held.",
        );
        for (i, bound) in LEASE_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "rch_lease_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                self.lease_buckets[i]
            );
        }
        let _ = writeln!(
            o,
            "rch_lease_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            self.lease_count
        );
        let _ = writeln!(o, "rch_lease_duration_seconds_sum {}", self.lease_sum);
        let _ = writeln!(o, "rch_lease_duration_seconds_count {}", self.lease_count);
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let mut m = Metrics::default();
        m.observe_lease_secs(0.02);
        m.observe_lease_secs(2.0);
        let text = m.render(&Gauges {
            workers: vec![WorkerGauge {
                id: "w1".into(),
                state: State::Open,
                used: 1,
                slots: 4,
            }],
            queue_depth: 0,
        });
        assert!(text.contains("rch_lease_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("rch_lease_duration_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("rch_circuit_state{worker=\"w1\"} 2"));
    }
}
