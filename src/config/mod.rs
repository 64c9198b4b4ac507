//! Layered configuration: defaults < user < lab < project < environment < flags.
//!
//! This file holds the data types and the entry points; the work is split by
//! responsibility:
//! - `schema`: every key, its type and bounds; checks one TOML value.
//! - `file`: reads one TOML file into a layer, with `file:line: key: problem` errors.
//! - `layers`: finds the files, merges the layers, applies environment and flags,
//!   and remembers where each value came from.
//! - `render`: prints the effective configuration, optionally with origins.
//! - `readable`: the files the configuration names exist and can be read.
//! - `daemon_files`: the files the daemon's configuration comes from, and
//!   their stamp (the daemon reads them again when they change).

mod daemon_files;
mod file;
mod layers;
pub mod readable;
pub mod render;
mod schema;

pub use daemon_files::{DaemonFiles, FileStamp};
pub use layers::{
    find_project_root, load, load_with, parse_str, project_config_file, Loaded, Origin, Overrides,
    Sources,
};

use crate::breaker::BreakerConfig;
use crate::caps::{CcMatch, Policy, ToolchainMatch};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The effective configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub general: GeneralConfig,
    pub circuit: BreakerConfig,
    pub ssh: SshConfig,
    pub daemon: DaemonConfig,
    pub transfer: TransferConfig,
    pub env: crate::envrules::EnvConfig,
    pub cost: crate::cost::CostConfig,
    pub team: TeamConfig,
    pub workers: Vec<WorkerConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneralConfig {
    pub enabled: bool,
    pub fallback: Fallback,
    /// The remote build is killed after this many seconds.
    pub build_timeout_secs: u64,
    /// Toolchain match for every worker that does not set its own.
    pub toolchain: ToolchainMatch,
    /// C compiler match for every worker that does not set its own.
    pub cc_toolchain: CcMatch,
    /// Tools every worker must have (a worker's own list replaces it).
    pub tools: Vec<String>,
}

impl Default for GeneralConfig {
    fn default() -> Self {
        GeneralConfig {
            enabled: true,
            fallback: Fallback::Local,
            build_timeout_secs: 7200,
            toolchain: ToolchainMatch::default(),
            cc_toolchain: CcMatch::default(),
            tools: Vec::new(),
        }
    }
}

/// What to do when a build can run on no worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Fail open: run the command locally.
    Local,
    /// Fail closed: exit 75 with a reason.
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SshConfig {
    pub connect_timeout_secs: u64,
    pub strict_host_key_checking: HostKeyPolicy,
    pub config_file: Option<PathBuf>,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            connect_timeout_secs: 5,
            strict_host_key_checking: HostKeyPolicy::Yes,
            config_file: None,
        }
    }
}

/// `strict_host_key_checking`: never "no".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    Yes,
    AcceptNew,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonConfig {
    pub queue_timeout_secs: u64,
    /// `host:port` for the Prometheus metrics endpoint; off when absent.
    pub metrics_listen: Option<String>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            queue_timeout_secs: 60,
            metrics_listen: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferConfig {
    pub exclude: Vec<String>,
    /// Leave out what the tree's `.gitignore`/`.ignore` files ignore (build inputs excepted).
    pub respect_gitignore: bool,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            exclude: Vec::new(),
            respect_gitignore: true,
        }
    }
}

/// `[team]`: daemons with the same `name` share breakers, slots and events
/// through Redis. Off while `redis_url` is absent.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamConfig {
    /// `redis://` or `rediss://` URL; may carry a password, never printed.
    pub redis_url: Option<String>,
    /// The team's namespace: keys are `rch:{name}:...`.
    pub name: Option<String>,
    /// Bound on every Redis call; past it the daemon uses its local state.
    pub timeout_ms: u64,
}

impl Default for TeamConfig {
    fn default() -> Self {
        TeamConfig {
            redis_url: None,
            name: None,
            timeout_ms: 200,
        }
    }
}

impl std::fmt::Debug for TeamConfig {
    // Debug output reaches logs: the URL goes out with its password masked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamConfig")
            .field(
                "redis_url",
                &self.redis_url.as_deref().map(crate::team::url::masked),
            )
            .field("name", &self.name)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl TeamConfig {
    /// The URL and name when the team link is configured.
    pub fn link(&self) -> Option<(&str, &str)> {
        Some((self.redis_url.as_deref()?, self.name.as_deref()?))
    }
}

/// One `[[workers]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerConfig {
    pub id: String,
    pub host: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
    pub slots: u32,
    pub priority: i64,
    pub remote_base: String,
    pub enabled: bool,
    /// Tools this worker must have; a probe fails naming the ones it lacks.
    pub tools: Vec<String>,
    /// Overrides `general.toolchain` for this worker.
    pub toolchain: Option<ToolchainMatch>,
    /// Overrides `general.cc_toolchain` for this worker.
    pub cc_toolchain: Option<CcMatch>,
    /// Project dirs on this worker are kept under this many GB by the
    /// daemon (least recently used removed first); unlimited when absent.
    pub max_disk_gb: Option<f64>,
    /// Whether builds run at the client's own absolute path on this worker.
    #[serde(default)]
    pub mirror_paths: MirrorPaths,
    /// Whether rsync compresses transfers to and from this worker.
    #[serde(default)]
    pub compress: Compress,
    /// Whether builds on this worker go through the worker agent
    /// (`rch-agent`, installed by rch) instead of a login shell each.
    #[serde(default = "yes")]
    pub agent: bool,
}

fn yes() -> bool {
    true
}

/// `compress`: `"auto"` (when this worker's transfers measured a slow
/// link), `true` (always) or `false` (never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compress {
    #[default]
    Auto,
    Always,
    Never,
}

impl Serialize for Compress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Compress::Auto => s.serialize_str("auto"),
            Compress::Always => s.serialize_bool(true),
            Compress::Never => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for Compress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match auto_or_bool(d, "compress")? {
            None => Compress::Auto,
            Some(true) => Compress::Always,
            Some(false) => Compress::Never,
        })
    }
}

/// A key that is `"auto"` (`None`), `true` or `false`.
fn auto_or_bool<'de, D: serde::Deserializer<'de>>(
    d: D,
    key: &str,
) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Flag(bool),
        Word(String),
    }
    match Raw::deserialize(d)? {
        Raw::Flag(flag) => Ok(Some(flag)),
        Raw::Word(w) if w == "auto" => Ok(None),
        Raw::Word(w) => Err(serde::de::Error::custom(format!(
            "{key}: expected \"auto\", true or false, got {w:?}"
        ))),
    }
}

/// `mirror_paths`: `"auto"` (when the tree has build files that record
/// absolute paths), `true` (always) or `false` (never: such trees build
/// elsewhere or locally).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MirrorPaths {
    #[default]
    Auto,
    Always,
    Never,
}

impl MirrorPaths {
    /// The value as written in the config file.
    pub fn as_toml(self) -> &'static str {
        match self {
            MirrorPaths::Auto => "\"auto\"",
            MirrorPaths::Always => "true",
            MirrorPaths::Never => "false",
        }
    }
}

impl Serialize for MirrorPaths {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MirrorPaths::Auto => s.serialize_str("auto"),
            MirrorPaths::Always => s.serialize_bool(true),
            MirrorPaths::Never => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for MirrorPaths {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match auto_or_bool(d, "mirror_paths")? {
            None => MirrorPaths::Auto,
            Some(true) => MirrorPaths::Always,
            Some(false) => MirrorPaths::Never,
        })
    }
}

impl WorkerConfig {
    /// A worker with every optional key at its default.
    pub fn new(id: impl Into<String>, host: impl Into<String>) -> Self {
        WorkerConfig {
            id: id.into(),
            host: host.into(),
            port: None,
            user: None,
            identity_file: None,
            slots: 4,
            priority: 100,
            remote_base: "~/.cache/rch/builds".to_string(),
            enabled: true,
            tools: Vec::new(),
            toolchain: None,
            cc_toolchain: None,
            max_disk_gb: None,
            mirror_paths: MirrorPaths::Auto,
            compress: Compress::Auto,
            agent: true,
        }
    }
}

impl Config {
    /// The worker with this id, if configured.
    pub fn worker(&self, id: &str) -> Option<&WorkerConfig> {
        self.workers.iter().find(|w| w.id == id)
    }

    /// How strictly `worker`'s toolchains must match: its own keys, else `[general]`'s.
    pub fn policy(&self, worker: &WorkerConfig) -> Policy {
        Policy {
            toolchain: worker.toolchain.unwrap_or(self.general.toolchain),
            cc_toolchain: worker.cc_toolchain.unwrap_or(self.general.cc_toolchain),
        }
    }

    /// The tools `worker` must have: its own list, else `general.tools`.
    pub fn required_tools<'a>(&'a self, worker: &'a WorkerConfig) -> &'a [String] {
        if worker.tools.is_empty() {
            &self.general.tools
        } else {
            &worker.tools
        }
    }

    /// The ids of all configured workers, in file order.
    pub fn worker_ids(&self) -> Vec<&str> {
        self.workers.iter().map(|w| w.id.as_str()).collect()
    }
}

/// A configuration error: names the file, line and key. Exit code 78.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub message: String,
}

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError {
            message: message.into(),
        }
    }
}

/// Whether a boolean environment variable is on (1/true/yes/on), read
/// directly for the fast paths that run before any config is loaded.
pub fn env_flag(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}
