//! The integration-test harness: a lab of real sshd workers in a short temp
//! directory, an isolated rch environment (config, state, socket, cache and
//! data dirs of its own) and helpers to run `rch`, ssh and small projects.
//!
//! Every test binary includes this with `mod support;` and uses what it needs.
#![allow(dead_code)]

mod config_merge;
pub mod formats;
mod project;
pub mod redis;
pub mod sandbox;
pub mod tally;

use rch::lab::Lab;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// How long `rch daemon stop` may take when a test ends.
const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The rch binary under test, quoted for a shell command line.
pub fn rch_bin() -> String {
    shlex::try_quote(env!("CARGO_BIN_EXE_rch"))
        .unwrap()
        .into_owned()
}

/// One test's world: lab workers plus an rch environment pointing at them.
pub struct TestEnv {
    pub lab: Lab,
    /// `/tmp/rch-t-XXXXXX`: short, because unix socket paths are limited.
    pub root: tempfile::TempDir,
    /// The project `rch()` runs in.
    pub project_dir: PathBuf,
}

impl TestEnv {
    /// The running daemon's live report of the fleet (`Request::Status`).
    pub fn fleet(&self) -> rch::state::report::FleetReport {
        use rch::protocol::{Request, Response};
        let socket = self.socket();
        block_on(async {
            let mut client = rch::client::Client::connect(&socket)
                .await
                .expect("daemon up");
            match client.call(Request::Status).await.expect("status") {
                Response::Status(report) => *report,
                other => panic!("unexpected answer {other:?}"),
            }
        })
    }

    /// One worker's circuit in the daemon's live report.
    pub fn circuit(&self, id: &str) -> rch::state::report::CircuitReport {
        self.fleet()
            .workers
            .into_iter()
            .find(|w| w.id == id)
            .unwrap_or_else(|| panic!("{id} in status"))
            .circuit
    }

    /// Start `workers` lab workers and an isolated rch environment whose
    /// config (`RCH_CONFIG`) lists them. Workers log in as the current user
    /// and see its toolchain (`~/.cargo`, `~/.rustup`) but, like real build
    /// machines, none of the client's files: not this temp root (projects,
    /// config, state), not the home, not this source tree.
    pub fn new(workers: usize) -> TestEnv {
        let root = tempfile::Builder::new()
            .prefix("rch-t-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        for dir in [
            "config/rch",
            "state",
            "cache",
            "data",
            "projects",
            "exchange",
        ] {
            std::fs::create_dir_all(root.path().join(dir)).expect("test dirs");
        }
        create_private_dir(&root.path().join("run"));
        let lab = Lab::up(
            &root.path().join("lab"),
            workers,
            client_isolation(root.path()),
        )
        .expect("starting lab workers");
        // As root (CI) the workers must be confined (`unshare --mount`): a
        // suite run on workers that see the client's files proves nothing.
        assert!(
            !nix::unistd::geteuid().is_root() || lab.confinement().is_isolated(),
            "test workers would share the client's files: {}",
            lab.confinement().describe()
        );
        let mut env = TestEnv {
            lab,
            root,
            project_dir: PathBuf::new(),
        };
        env.project_dir = env.project("app");
        env.write_config("");
        env
    }

    /// A directory that the test and every worker see at the same path: the
    /// test's own back channel to what runs on the workers (gates, tallies).
    /// rch never uses it; everything else of the client is invisible there.
    pub fn exchange_dir(&self) -> PathBuf {
        self.path().join("exchange")
    }

    /// The temp root as a path.
    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// The file `RCH_CONFIG` names.
    pub fn config_file(&self) -> PathBuf {
        self.path().join("config/rch/config.toml")
    }

    /// The daemon socket `RCH_SOCKET` names.
    pub fn socket(&self) -> PathBuf {
        self.path().join("run/rch/rch.sock")
    }

    /// Write the rch config: the lab's layer merged with `extra_toml`. Tables
    /// in `extra_toml` add to or override the lab's; a `[[workers]]` entry
    /// with a lab worker's id changes that worker, others are added.
    pub fn write_config(&self, extra_toml: &str) {
        let text = config_merge::merge(&self.lab.config_toml(), extra_toml);
        std::fs::write(self.config_file(), text).expect("writing the test config");
    }

    /// The isolated environment: `(name, value)` to set. Every inherited
    /// `RCH_*` variable except `RCH_LOG` is removed by [`TestEnv::apply_env`].
    pub fn env_vars(&self) -> Vec<(&'static str, OsString)> {
        let dir = |name: &str| self.path().join(name).into_os_string();
        vec![
            ("RCH_CONFIG", self.config_file().into_os_string()),
            ("RCH_SOCKET", self.socket().into_os_string()),
            ("XDG_CONFIG_HOME", dir("config")),
            ("XDG_STATE_HOME", dir("state")),
            ("XDG_RUNTIME_DIR", dir("run")),
            ("XDG_CACHE_HOME", dir("cache")),
            ("XDG_DATA_HOME", dir("data")),
        ]
    }

    /// Put the isolated environment on any command.
    pub fn apply_env(&self, cmd: &mut Command) {
        sandbox::strip_rch_env(cmd);
        cmd.envs(self.env_vars());
    }

    /// `rch` with the isolated environment, run in the default project.
    pub fn rch(&self) -> Command {
        self.rch_in(&self.project_dir)
    }

    /// `rch` with the isolated environment, run in `dir`.
    pub fn rch_in(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rch"));
        self.apply_env(&mut cmd);
        cmd.current_dir(dir).stdin(Stdio::null());
        cmd
    }

    /// Run `command_line` under `script`, whose pty makes rch's stdout and
    /// stderr a terminal (as in an interactive shell); what it printed is
    /// on the returned stdout.
    pub fn on_terminal(&self, dir: &Path, command_line: &str) -> Output {
        let mut cmd = Command::new("script");
        self.apply_env(&mut cmd);
        cmd.args(["-qec", command_line, "/dev/null"])
            .env_remove("NO_COLOR")
            .current_dir(dir)
            .stdin(Stdio::null());
        cmd.output().expect("running script")
    }

    /// A small cargo project (a bin crate printing one line) under the temp
    /// root, created on first use. `name` is the directory name and may hold
    /// spaces or any unicode.
    pub fn project(&self, name: &str) -> PathBuf {
        project::create(&self.path().join("projects").join(name))
    }

    /// Run `remote_cmd` on worker `id` through the lab's ssh config.
    pub fn ssh(&self, id: &str, remote_cmd: &str) -> Output {
        self.ssh_with(id, &[], remote_cmd)
    }

    /// Like [`TestEnv::ssh`] with extra ssh options (`-o ConnectTimeout=1`).
    pub fn ssh_with(&self, id: &str, options: &[&str], remote_cmd: &str) -> Output {
        self.ssh_command(id, options, remote_cmd)
            .output()
            .expect("running ssh")
    }

    /// The ssh command [`TestEnv::ssh`] runs, to spawn it instead.
    pub fn ssh_command(&self, id: &str, options: &[&str], remote_cmd: &str) -> Command {
        let worker = self
            .lab
            .workers()
            .iter()
            .find(|w| w.id == id)
            .unwrap_or_else(|| panic!("no lab worker {id}"));
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg(self.lab.ssh_config())
            .args(["-o", "ConnectTimeout=5"])
            .args(options)
            .arg(&worker.alias)
            .arg("--")
            .arg(remote_cmd)
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        stop_daemon(self);
        if let Err(err) = self.lab.down() {
            eprintln!("taking the lab down: {err:#}");
        }
    }
}

/// `rch daemon stop`, bounded in time; errors are of no interest here.
fn stop_daemon(env: &TestEnv) {
    let mut cmd = env.rch();
    cmd.args(["daemon", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let Ok(mut child) = cmd.spawn() else {
        return;
    };
    if wait_for(DAEMON_STOP_TIMEOUT, || {
        matches!(child.try_wait(), Ok(Some(_)))
    }) {
        return;
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub use rch::lab::wait_until as wait_for;

/// Run a future on a throwaway runtime (tests are synchronous).
pub use rch::cli::block_on;

/// Stdout and stderr of a finished command, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// What test workers must not see: the test's temp root, the home and the
/// source tree of rch itself.
/// Only [`TestEnv::exchange_dir`] stays visible to both sides.
fn client_isolation(root: &Path) -> rch::lab::Isolation {
    rch::lab::Isolation::client(&[
        root.to_path_buf(),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    ])
    .with_visible(&root.join("exchange"))
}

fn create_private_dir(dir: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .expect("private dir");
}
