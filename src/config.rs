//! Layered configuration: defaults < user < lab < project < environment < flags.

use crate::breaker::BreakerConfig;
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
    pub workers: Vec<WorkerConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneralConfig {
    pub enabled: bool,
    pub fallback: Fallback,
}

impl Default for GeneralConfig {
    fn default() -> Self {
        GeneralConfig {
            enabled: true,
            fallback: Fallback::Local,
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
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            queue_timeout_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransferConfig {
    pub exclude: Vec<String>,
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
}

/// A configuration error: names the file, line and key. Exit code 78.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub message: String,
}
