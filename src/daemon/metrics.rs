//! Counters and gauges of the daemon, rendered as Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Upper bounds (seconds) of the lease duration histogram.
const LEASE_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0];

#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub leases_granted: u64,
    pub local_decisions: u64,
    pub attempts_ok: u64,
    pub attempts_failed: u64,
    pub attempts_unknown: u64,
    pub probes: u64,
    pub transitions: BTreeMap<String, u64>,
    /// Finished jobs by (outcome, placement kind: remote|local).
    pub builds: BTreeMap<(String, String), u64>,
    /// Fallbacks by reason class.
    pub fallbacks: BTreeMap<String, u64>,
    lease_buckets: [u64; LEASE_BUCKETS.len()],
    lease_count: u64,
    lease_sum: f64,
}

/// One per-worker figure out of a [`Gauges::workers`] entry.
type WorkerValue = fn(&(&str, u8, u32, u32)) -> u64;

/// Gauges read at render time.
pub struct Gauges<'a> {
    /// (worker, state as 0 closed / 1 half-open / 2 open, slots in use, slots)
    pub workers: Vec<(&'a str, u8, u32, u32)>,
    pub queue_depth: usize,
}

impl Metrics {
    pub fn count_transition(&mut self, kind: &str) {
        *self.transitions.entry(kind.to_string()).or_default() += 1;
    }

    pub fn count_build(&mut self, outcome: &str, placement: &str) {
        *self
            .builds
            .entry((outcome.to_string(), placement.to_string()))
            .or_default() += 1;
    }

    pub fn count_fallback(&mut self, reason: &str) {
        *self.fallbacks.entry(reason.to_string()).or_default() += 1;
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
                |w| u64::from(w.1),
            ),
            ("rch_slots_in_use", "Slots leased per worker.", |w| {
                u64::from(w.2)
            }),
            ("rch_slots_total", "Configured slots per worker.", |w| {
                u64::from(w.3)
            }),
        ];
        for (name, help, value) in per_worker {
            family(o, name, "gauge", help);
            for w in &gauges.workers {
                let _ = writeln!(o, "{name}{{worker=\"{}\"}} {}", w.0, value(w));
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
            let _ = writeln!(o, "rch_circuit_transitions_total{{kind=\"{kind}\"}} {n}");
        }
        family(
            o,
            "rch_builds_total",
            "counter",
            "Finished builds by outcome and placement.",
        );
        for ((outcome, placement), n) in &self.builds {
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
        for (reason, n) in &self.fallbacks {
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
            workers: vec![("w1", 2, 1, 4)],
            queue_depth: 0,
        });
        assert!(text.contains("rch_lease_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("rch_lease_duration_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("rch_circuit_state{worker=\"w1\"} 2"));
    }
}
