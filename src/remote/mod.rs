//! The remote side of a build: SSH master connections ([`ssh`]), where a
//! build lives on a worker ([`layout`], [`slot`]), rsync transfer over the
//! masters ([`sync`]) and remote execution ([`run`]).
//!
//! Every failure is reported as a [`RemoteFailure`]: a [`FailureKind`] the
//! breaker and the fallback logic can act on, plus one line for humans that
//! names the worker.

pub mod layout;
pub mod run;
pub mod slot;
pub mod ssh;
pub mod status;
pub mod sync;

use crate::config::{SshConfig, WorkerConfig};
use serde::{Deserialize, Serialize};

pub use layout::{build_dir, remote_project_dir};
pub use run::{run, run_to, RunReport, RunSpec};
pub use ssh::{connect, disconnect, probe, Connection};
pub use sync::{pull, push, Pull, DEFAULT_EXCLUDES};

/// Everything needed to reach one worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub worker: WorkerConfig,
    pub ssh: SshConfig,
    /// The ssh agent socket to authenticate with, when it is not this
    /// process's own `SSH_AUTH_SOCK` (the daemon probes with its clients' agent).
    #[serde(default)]
    pub agent: Option<std::path::PathBuf>,
}

/// Why an attempt failed around the build (never the build's own exit code).
///
/// Every kind but `Local` and `MissingTool` is a fault of the worker or the
/// way to it; `Local` is a problem on this machine (rsync or ssh missing here,
/// an unusable local path), which no worker is charged for and no other worker
/// would fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Local,
    ConnectRefused,
    ConnectTimeout,
    Auth,
    HostKey,
    Transfer,
    RemoteDir,
    ConnectionLost,
    Killed,
    Timeout,
    /// The command is not installed there: a routing fact, not a fault.
    MissingTool,
    Other,
}

impl FailureKind {
    /// Whether the worker is to blame: only such failures touch its breaker.
    /// A tool the worker lacks is a routing fact, not a fault.
    pub fn is_worker_fault(self) -> bool {
        !matches!(self, FailureKind::Local | FailureKind::MissingTool)
    }
}

/// An infrastructure failure; `message` is one line naming the worker.
#[derive(Clone, Debug, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct RemoteFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl RemoteFailure {
    /// A failure on `worker`; the message becomes `"<worker>: <detail>"`, folded to one line.
    pub fn new(kind: FailureKind, worker: &str, detail: impl AsRef<str>) -> Self {
        RemoteFailure {
            kind,
            message: format!("{worker}: {}", one_line(detail.as_ref())),
        }
    }
}

/// Joins the non-empty lines of `text` with "; " so a message stays on one line.
pub(crate) fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_message_names_the_worker_on_one_line() {
        let f = RemoteFailure::new(FailureKind::Transfer, "w1", "rsync failed\n  code 12\n");
        assert_eq!(f.to_string(), "w1: rsync failed; code 12");
    }

    #[test]
    fn failure_kind_serializes_snake_case() {
        let json = serde_json::to_string(&FailureKind::ConnectRefused).unwrap();
        assert_eq!(json, "\"connect_refused\"");
    }
}
