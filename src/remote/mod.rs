//! The remote side of a build: SSH master connections ([`ssh`]), where a
//! build lives on a worker ([`layout`], [`slot`]), rsync transfer over the
//! masters ([`sync`]), what each build pushes ([`upload`]; small edits
//! ride in the run command, [`carry`]), remote
//! execution ([`run`], with its out-of-band status in [`status`] and the
//! build's stdin in [`input`]), what comes back and what the build deleted
//! ([`outputs`]), the
//! worker probe ([`probe`]) and builds at the client's own path ([`mirror`]).
//! A transfer's progress line on a terminal is [`progress`], the link each
//! worker's transfers measured (and whether to compress) [`link`]; both leaves.
//!
//! Two leaves sit under them: [`shell`] (quoting and the login-shell command)
//! and [`failure`] (the typed [`RemoteFailure`] and the one place that reads
//! ssh's and rsync's words to decide its kind). Dependencies point one way:
//! `run`, `sync`, `probe` -> `ssh` -> `failure`; any of them may use `shell`
//! and `layout`; nothing under `remote/` imports a sibling that imports it.

pub mod agent;
pub mod carry;
pub mod failure;
pub mod input;
pub mod layout;
pub mod link;
pub mod mirror;
pub mod outputs;
pub mod probe;
pub mod progress;
pub mod run;
pub(crate) mod shell;
pub mod slot;
pub mod ssh;
pub mod status;
pub mod sync;
pub mod upload;

use crate::config::{SshConfig, WorkerConfig};
use serde::{Deserialize, Serialize};

pub use failure::{FailureKind, RemoteFailure};
pub use layout::{build_dir, remote_project_dir};
pub use probe::probe;
pub use run::{run, run_to, RunReport, RunSpec};
pub use ssh::{connect, disconnect, Connection};
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
