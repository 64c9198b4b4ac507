//! Where a build's time went: the phases of one build (lease wait, connect,
//! snapshot, push, run, pull, release), each timed and traced.
//!
//! The build fills a [`Phases`] record as it goes; the record travels in the
//! job report to the daemon, which keeps it with the job (`rch status --jobs`,
//! `rch workers history`), and `rch exec -v` prints it as one line. Each phase
//! is also a tracing span (`RCH_LOG=rch=debug`), closed with its duration.

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// One step of a remote build, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Asking the daemon for a worker, including time in its queue.
    Lease,
    /// Opening (or reusing) the SSH master connection.
    Connect,
    /// Preparing the tree to send (what changed since the last push).
    Snapshot,
    /// Sending the project to the worker.
    Push,
    /// The command itself on the worker.
    Run,
    /// Bringing artifacts back.
    Pull,
    /// Handing the slot back to the daemon.
    Release,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Lease => "lease",
            Phase::Connect => "connect",
            Phase::Snapshot => "snapshot",
            Phase::Push => "push",
            Phase::Run => "run",
            Phase::Pull => "pull",
            Phase::Release => "release",
        }
    }

    /// A tracing span for this phase (span names must be static).
    fn span(self) -> tracing::Span {
        match self {
            Phase::Lease => tracing::info_span!("lease"),
            Phase::Connect => tracing::info_span!("connect"),
            Phase::Snapshot => tracing::info_span!("snapshot"),
            Phase::Push => tracing::info_span!("push"),
            Phase::Run => tracing::info_span!("run"),
            Phase::Pull => tracing::info_span!("pull"),
            Phase::Release => tracing::info_span!("release"),
        }
    }
}

/// One timed phase: microseconds, so a local lease (0.1ms) still shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTime {
    pub phase: Phase,
    pub us: u64,
}

/// The phases of one build, in the order they ran; a phase that ran more
/// than once (a failed attempt, then another worker) adds up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Phases(pub Vec<PhaseTime>);

impl Phases {
    /// Add `took` to `phase`.
    pub fn add(&mut self, phase: Phase, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        match self.0.iter_mut().find(|p| p.phase == phase) {
            Some(p) => p.us = p.us.saturating_add(us),
            None => self.0.push(PhaseTime { phase, us }),
        }
        tracing::debug!(
            phase = phase.as_str(),
            ms = us as f64 / 1000.0,
            "phase done"
        );
    }

    /// Run `fut` as `phase`: inside its span, timed, added to the record.
    pub async fn time<F: Future>(&mut self, phase: Phase, fut: F) -> F::Output {
        let span = phase.span();
        let start = Instant::now();
        let out = fut.instrument(span.clone()).await;
        let _entered = span.enter();
        self.add(phase, start.elapsed());
        out
    }

    /// Time spent in `phase` so far.
    pub fn get(&self, phase: Phase) -> Option<Duration> {
        self.0
            .iter()
            .find(|p| p.phase == phase)
            .map(|p| Duration::from_micros(p.us))
    }

    /// All phases together.
    pub fn total(&self) -> Duration {
        Duration::from_micros(self.0.iter().map(|p| p.us).sum())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `lease 0.1ms · push 3ms · run 25ms · pull 4ms`.
impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|p| format!("{} {}", p.phase.as_str(), short(p.us)))
            .collect();
        f.write_str(&parts.join(" · "))
    }
}

/// `0.1ms` under a millisecond, `25ms` under ten seconds, else `12.3s`.
pub fn short(us: u64) -> String {
    if us < 1_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else if us < 10_000_000 {
        format!("{}ms", (us + 500) / 1000)
    } else {
        format!("{:.1}s", us as f64 / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_reads_in_order_with_short_durations() {
        let mut p = Phases::default();
        p.add(Phase::Lease, Duration::from_micros(100));
        p.add(Phase::Push, Duration::from_micros(3_200));
        p.add(Phase::Run, Duration::from_millis(25));
        p.add(Phase::Pull, Duration::from_millis(4));
        assert_eq!(
            p.to_string(),
            "lease 0.1ms · push 3ms · run 25ms · pull 4ms"
        );
        assert_eq!(short(12_345_678), "12.3s");
    }

    #[test]
    fn repeated_phases_add_up_and_serialize_as_a_list() {
        let mut p = Phases::default();
        p.add(Phase::Push, Duration::from_millis(2));
        p.add(Phase::Push, Duration::from_millis(3));
        assert_eq!(p.get(Phase::Push), Some(Duration::from_millis(5)));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"[{"phase":"push","us":5000}]"#);
        assert_eq!(serde_json::from_str::<Phases>(&json).unwrap(), p);
    }

    #[tokio::test]
    async fn time_measures_the_future() {
        let mut p = Phases::default();
        let v = p
            .time(Phase::Run, async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                7
            })
            .await;
        assert_eq!(v, 7);
        assert!(p.get(Phase::Run).unwrap() >= Duration::from_millis(20));
    }
}
