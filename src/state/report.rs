//! What the daemon reports about the fleet: the data behind `rch status`,
//! `rch workers probe` and `rch workers history`, shared by the daemon (live)
//! and the store (when the daemon is down).

use super::events::EventRecord;
use crate::breaker::{Breaker, State};
use crate::clock::rfc3339;
use crate::config::Config;
use crate::protocol::JobOutcome;
use serde::{Deserialize, Serialize};

/// Jobs a fleet report carries (`rch status --jobs`).
pub const RECENT_JOBS: usize = 20;

/// The whole fleet at one moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FleetReport {
    pub daemon: DaemonInfo,
    pub workers: Vec<WorkerReport>,
    /// Leases currently held.
    pub leases: Vec<LeaseReport>,
    /// Requests waiting for a slot, oldest first.
    pub queue: Vec<QueuedReport>,
    /// The most recent jobs, newest first.
    pub recent_jobs: Vec<JobRow>,
    /// The team link, when `[team]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<crate::team::TeamReport>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub running: bool,
    pub version: String,
    pub pid: Option<u32>,
    pub uptime_secs: Option<u64>,
    /// The configuration files changed into something invalid: why; the
    /// daemon runs on with the configuration it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    pub id: String,
    pub host: String,
    pub slots: u32,
    pub used: u32,
    pub priority: i64,
    pub enabled: bool,
    pub draining: bool,
    pub circuit: CircuitReport,
    /// RFC 3339 time of the last build that ran there.
    pub last_build: Option<String>,
    /// Round trip of the last successful probe.
    pub latency_ms: Option<u64>,
    /// Tools and toolchains the last probe found; absent until probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<crate::caps::Capabilities>,
}

/// One worker's breaker, as `rch status --circuits --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CircuitReport {
    /// `closed`, `open` or `half_open`.
    pub state: State,
    /// Consecutive infrastructure failures.
    pub failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Failure share over the rolling window, when it has samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    pub epoch: u64,
    /// Whether the breaker lets a build through now, as the daemon's own
    /// admission decides it (false for a half-open worker whose probes are
    /// all in flight).
    #[serde(default = "admits_by_default")]
    pub admits: bool,
}

fn admits_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseReport {
    pub worker: String,
    pub project: String,
    pub command: String,
    pub since: String,
    /// The build's current phase (`push`, `run`, ...), as its client last said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedReport {
    pub position: usize,
    pub project: String,
    pub command: String,
    pub since: String,
}

/// One row of the job history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRow {
    pub id: i64,
    pub at: String,
    pub project: String,
    pub command: String,
    /// Worker id or `local`.
    pub placement: String,
    pub outcome: JobOutcome,
    pub exit_code: Option<i32>,
    pub reason: String,
    pub queue_ms: u64,
    pub sync_ms: u64,
    pub run_ms: u64,
    pub return_ms: u64,
    /// Where the time went, phase by phase (empty for a local run).
    #[serde(default)]
    pub phases: crate::phases::Phases,
}

/// Result of probing one worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeResult {
    pub worker: String,
    pub ok: bool,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    /// Breaker state after the probe.
    pub state: State,
    /// What the probe found the worker can build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<crate::caps::Capabilities>,
}

/// Jobs and breaker transitions of one worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerHistory {
    pub worker: String,
    pub jobs: Vec<JobRow>,
    pub events: Vec<EventRecord>,
}

impl CircuitReport {
    /// A breaker as `rch status --circuits` shows it.
    pub fn of(b: Option<&Breaker>, config: &Config, now_ms: u64) -> CircuitReport {
        let Some(b) = b else {
            return CircuitReport {
                state: State::Closed,
                failures: 0,
                since: None,
                retry_in_secs: None,
                last_error: None,
                error_rate: None,
                epoch: 0,
                admits: true,
            };
        };
        let cfg = &config.circuit;
        CircuitReport {
            state: b.state,
            failures: b.consecutive_failures,
            since: Some(rfc3339(b.since_ms)),
            retry_in_secs: if b.state == State::Open {
                b.retry_in_ms(cfg, now_ms).map(|ms| ms.div_ceil(1000))
            } else {
                None
            },
            last_error: b.last_error.clone(),
            error_rate: b.error_rate(cfg, now_ms),
            epoch: b.epoch,
            admits: b.can_admit(cfg, now_ms),
        }
    }
}
