//! Messages between the CLI and the daemon, their framing and version.
//!
//! Framing is one JSON object per line over the daemon's Unix socket. Every
//! request carries the protocol version; a daemon answers a request of another
//! version with an error instead of guessing. A lease lives as long as the
//! connection that asked for it: closing the connection without a `Release`
//! releases the lease with an unknown outcome (no breaker effect).

use crate::config::WorkerConfig;
use crate::remote::FailureKind;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Bumped on any incompatible change of the messages below.
pub const PROTOCOL_VERSION: u32 = 1;

/// A request line: the version and the body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Who is there: answered with `Response::Hello`.
    Ping,
    /// Ask for a worker slot for one build attempt.
    Lease(LeaseRequest),
    /// Give back the lease held on this connection, with what happened.
    Release { outcome: AttemptOutcome },
    /// Record a finished job (all its attempts), remote or local.
    Job(JobReport),
    /// The fleet as the daemon sees it.
    Status,
    /// Force workers' breakers CLOSED (`None` = all workers).
    Reset { worker: Option<String> },
    /// Probe workers now (`None` = all workers).
    Probe { worker: Option<String> },
    /// Drain, enable or disable a worker.
    SetWorker {
        worker: String,
        action: WorkerAction,
    },
    /// Recent jobs and breaker events of one worker.
    History { worker: String, limit: usize },
    /// Stored events; with `follow` the connection then streams live ones.
    Events { follow: bool, limit: usize },
    /// Prometheus text exposition.
    Metrics,
    /// Re-read the configuration.
    Reload,
    /// Stop the daemon.
    Shutdown,
    /// Whether a project tree is unchanged since a mark the daemon gave
    /// (answered with `Response::Tree`).
    Tree(TreeQuery),
}

/// A build asks whether its project tree changed since its last walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeQuery {
    /// Absolute path of the project root.
    pub root: String,
    /// The exclude patterns the push applies (directories they match are
    /// never sent, so they are not watched).
    pub excludes: Vec<String>,
    /// The mark given before the walk the client remembers, if any.
    pub since: Option<TreeMark>,
}

/// A point in the daemon's watch of one tree: the tree is unchanged since
/// the mark while the same daemon has watched it without a gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeMark {
    /// The daemon that gave it (random per start: a restarted daemon never
    /// vouches for what it did not watch).
    pub daemon: String,
    /// Which watch of the tree (a new one after any doubt).
    pub watch: u64,
    /// Changes seen by that watch when the mark was given.
    pub seq: u64,
}

/// The daemon's answer about a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tree", rename_all = "snake_case")]
pub enum TreeAnswer {
    /// Nothing under the root changed since the client's mark.
    Unchanged,
    /// Walk the tree. With a mark (the tree is watched now): a walk made
    /// after this answer may be vouched for later under that mark.
    Walk { mark: Option<TreeMark> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerAction {
    Drain,
    Enable,
    Disable,
}

impl WorkerAction {
    /// The snake_case name, as on the wire and in `worker.changed` events.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerAction::Drain => "drain",
            WorkerAction::Enable => "enable",
            WorkerAction::Disable => "disable",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// Absolute path of the project root (selection prefers its last worker).
    pub project: String,
    /// The command, for display in status and history.
    pub command: String,
    /// Only this worker (`--worker`, `RCH_WORKER`).
    pub worker: Option<String>,
    /// Workers that already failed this build.
    pub exclude: Vec<String>,
    /// The tools and toolchain the build needs of a worker.
    #[serde(default)]
    pub needs: crate::caps::Needs,
    /// The client's ssh agent: the daemon's probes authenticate as builds do,
    /// even when the daemon itself was started without one (systemd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_auth_sock: Option<std::path::PathBuf>,
    /// The files the client's user and lab layers come from: when they, or
    /// what is in them, differ from the daemon's, it reads them again first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<crate::config::DaemonFiles>,
}

/// How a leased attempt ended, as the breaker counts it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The command ran; its exit code is the build's answer.
    Success { exit_code: i32 },
    /// The worker failed as infrastructure.
    Failure { kind: FailureKind, message: String },
    /// Nobody knows (interrupted by the user): no breaker effect.
    Unknown,
    /// The worker has no such command: a routing fact, not a fault (no
    /// breaker effect); the daemon remembers it and probes the worker again.
    MissingTool { tool: String },
}

/// One finished `rch exec`, recorded in the job history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobReport {
    pub project: String,
    pub command: String,
    /// Worker id, or `None` when it ran locally.
    pub worker: Option<String>,
    pub outcome: JobOutcome,
    pub exit_code: Option<i32>,
    /// Why it ran where it ran.
    pub reason: String,
    pub queue_ms: u64,
    pub sync_ms: u64,
    pub run_ms: u64,
    pub return_ms: u64,
    /// Workers that failed before the final placement, with their reasons.
    pub failovers: Vec<Failover>,
    /// Where the time went, phase by phase.
    #[serde(default)]
    pub phases: crate::phases::Phases,
}

/// A worker a build left, and why: the failure, typed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failover {
    pub worker: String,
    pub reason: String,
    #[serde(default)]
    pub kind: FailureKind,
}

/// How a job ended, as recorded in its history.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    /// It ran on a worker; its exit code is the answer.
    Success,
    /// Infrastructure failed on every worker and fail-closed was asked.
    Failed,
    /// It ran on this machine.
    #[default]
    Local,
    /// The user interrupted it.
    Interrupted,
}

impl JobOutcome {
    /// The snake_case name, as on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Success => "success",
            JobOutcome::Failed => "failed",
            JobOutcome::Local => "local",
            JobOutcome::Interrupted => "interrupted",
        }
    }

    /// The outcome a stored name stands for.
    pub fn parse(name: &str) -> Option<JobOutcome> {
        [
            JobOutcome::Success,
            JobOutcome::Failed,
            JobOutcome::Local,
            JobOutcome::Interrupted,
        ]
        .into_iter()
        .find(|o| o.as_str() == name)
    }
}

impl std::fmt::Display for JobOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Hello {
        version: String,
        protocol: u32,
        pid: u32,
        uptime_secs: u64,
    },
    /// A slot on `worker` is yours until you release it or close the connection.
    Granted {
        worker: WorkerConfig,
        epoch: u64,
        /// Why this worker (e.g. "last built this project").
        why: String,
    },
    /// Every admissible worker is full; you are `position` in the queue.
    Queued {
        position: usize,
    },
    /// No worker for this build: run it locally (or fail closed), because `reason`.
    Local {
        reason: String,
    },
    Ok,
    Status(Box<crate::state::report::FleetReport>),
    Probed {
        results: Vec<crate::state::report::ProbeResult>,
    },
    History(crate::state::report::WorkerHistory),
    Event(crate::state::events::EventRecord),
    Metrics {
        text: String,
    },
    Tree(TreeAnswer),
    Error {
        message: String,
        /// Known worker ids, when the error is an unknown worker.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        known_workers: Vec<String>,
        /// The id asked for, when the error is that no such worker exists.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unknown_worker: Option<String>,
    },
}

/// Errors of the socket conversation itself.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad message: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Write one message as a JSON line.
pub async fn write_line<W, T>(w: &mut W, msg: &T) -> Result<(), WireError>
where
    W: tokio::io::AsyncWrite + Unpin,
    T: Serialize,
{
    let mut line = serde_json::to_vec(msg)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await?;
    Ok(())
}

/// Read one JSON line; `Closed` at end of stream.
pub async fn read_line<R, T>(r: &mut R, buf: &mut String) -> Result<T, WireError>
where
    R: tokio::io::AsyncBufRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    buf.clear();
    if r.read_line(buf).await? == 0 {
        return Err(WireError::Closed);
    }
    Ok(serde_json::from_str(buf.trim_end())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_carries_version_and_type() {
        let env = Envelope {
            v: PROTOCOL_VERSION,
            request: Request::Reset {
                worker: Some("w1".into()),
            },
        };
        let text = serde_json::to_string(&env).unwrap();
        assert_eq!(text, r#"{"v":1,"type":"reset","worker":"w1"}"#);
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert!(matches!(back.request, Request::Reset { worker: Some(w) } if w == "w1"));
    }

    #[test]
    fn outcome_round_trips() {
        let o = AttemptOutcome::Failure {
            kind: FailureKind::ConnectRefused,
            message: "w1: refused".into(),
        };
        let text = serde_json::to_string(&o).unwrap();
        let back: AttemptOutcome = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            back,
            AttemptOutcome::Failure {
                kind: FailureKind::ConnectRefused,
                ..
            }
        ));
    }
}
