//! Where rch keeps its files, following the XDG base directories.
//!
//! Every location can be moved by the standard XDG variables, which is also how
//! tests isolate themselves; `RCH_CONFIG` and `RCH_SOCKET` name single files.

use std::path::PathBuf;

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "rch")
}

/// The user's home directory (`$HOME`, else `/`).
pub fn home_dir() -> PathBuf {
    directories::BaseDirs::new()
        .map(|b| b.home_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `$XDG_CONFIG_HOME/rch`.
pub fn config_dir() -> PathBuf {
    project_dirs()
        .map(|d| d.config_dir().to_path_buf())
        .unwrap_or_else(|| home_dir().join(".config/rch"))
}

/// `$XDG_STATE_HOME/rch`: the SQLite store, the daemon log, the lab.
pub fn state_dir() -> PathBuf {
    project_dirs()
        .and_then(|d| d.state_dir().map(|p| p.to_path_buf()))
        .unwrap_or_else(|| home_dir().join(".local/state/rch"))
}

/// `$XDG_DATA_HOME/rch`: shell wrapper shims.
pub fn data_dir() -> PathBuf {
    project_dirs()
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| home_dir().join(".local/share/rch"))
}

/// `$XDG_CACHE_HOME/rch`.
pub fn cache_dir() -> PathBuf {
    project_dirs()
        .map(|d| d.cache_dir().to_path_buf())
        .unwrap_or_else(|| home_dir().join(".cache/rch"))
}

/// `$XDG_RUNTIME_DIR/rch`, else the cache dir: the socket and SSH control sockets.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("rch"),
        _ => cache_dir(),
    }
}

/// The daemon socket: `RCH_SOCKET`, else `<runtime dir>/rch.sock`.
pub fn socket_path() -> PathBuf {
    match std::env::var_os("RCH_SOCKET") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => runtime_dir().join("rch.sock"),
    }
}

/// The SQLite state database.
pub fn state_db() -> PathBuf {
    state_dir().join("state.db")
}

/// The daemon log written by `rch daemon start`.
pub fn daemon_log() -> PathBuf {
    state_dir().join("daemon.log")
}

/// Directory of the local lab (`rch lab up`).
pub fn lab_dir() -> PathBuf {
    state_dir().join("lab")
}

/// Expand a leading `~/` to the home directory.
pub fn expand_tilde(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => home_dir().join(rest),
        None if p == "~" => home_dir(),
        None => PathBuf::from(p),
    }
}

/// The config file `rch lab up` writes; read as a layer while it exists.
pub fn lab_config_file() -> PathBuf {
    lab_dir().join("config.toml")
}
