//! An rch without workers: a throwaway home, XDG dirs and a project tree,
//! for the commands that need no lab (config, hook), and the one rule every
//! harness here follows for the environment rch inherits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Remove every inherited `RCH_*` variable (but `RCH_LOG`, so a failing
/// test can be rerun with logs) from `cmd`: the developer's own settings
/// must not leak into a test.
pub fn strip_rch_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("RCH_") && name != "RCH_LOG" {
            cmd.env_remove(name.as_ref());
        }
    }
}

/// A throwaway home with a project tree `proj/sub` to run rch in.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let sandbox = Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        std::fs::create_dir_all(sandbox.cwd()).expect("project dir");
        sandbox
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn home(&self) -> PathBuf {
        self.root().join("home")
    }

    pub fn config_home(&self) -> PathBuf {
        self.home().join(".config")
    }

    pub fn state_home(&self) -> PathBuf {
        self.home().join(".local/state")
    }

    pub fn cwd(&self) -> PathBuf {
        self.root().join("proj/sub")
    }

    pub fn user_file(&self) -> PathBuf {
        self.config_home().join("rch/config.toml")
    }

    pub fn project_file(&self) -> PathBuf {
        self.root().join("proj/.rch/config.toml")
    }

    pub fn lab_file(&self) -> PathBuf {
        self.state_home().join("rch/lab/config.toml")
    }

    pub fn write(&self, path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    pub fn rch(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rch"));
        cmd.args(args)
            .current_dir(self.cwd())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.config_home())
            .env("XDG_STATE_HOME", self.state_home())
            .env("XDG_CACHE_HOME", self.home().join(".cache"))
            .env("XDG_DATA_HOME", self.home().join(".local/share"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run rch")
    }
}
