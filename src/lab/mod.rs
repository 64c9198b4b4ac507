//! The lab: throwaway sshd workers on 127.0.0.1 for trying rch and for its
//! tests, with real faults to inject (killed, paused, tarpitted, wrong keys,
//! an unusable remote base).
//!
//! A lab lives in one directory: a client key, a known_hosts file, an
//! ssh_config with one `Host rch-lab-wN` block per worker, the rch config
//! layer `config.toml`, the state file `lab.json`, and per worker a directory
//! with its host key, sshd_config, authorized_keys, pid file, log and remote
//! base. The sshd processes outlive the process that started them, so a later
//! process can [`Lab::open`] the lab to inject faults or take it down.
//! [`link`] puts a worker behind a link of a given latency and rate.

mod isolate;
pub mod link;
mod procs;
mod sshd;
mod tarpit;
mod toolchain;

pub use isolate::{Confinement, Isolation};
pub use tarpit::Tarpit;
pub use toolchain::LabToolchain;

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use sshd::SshdFiles;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many times `up` tries another port when one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;
/// How long a killed sshd may take to let go of its port.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a probe of a worker's port waits for the banner.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(500);

/// A lab was already running in the directory `up` was given.
#[derive(Debug, thiserror::Error)]
#[error("a lab is already up in {}", root.display())]
pub struct AlreadyUp {
    pub root: PathBuf,
}

/// There is no lab in the directory `open` was given.
#[derive(Debug, thiserror::Error)]
#[error("no lab is up in {} (start one with `rch lab up`)", root.display())]
pub struct NoLab {
    pub root: PathBuf,
}

/// The lab has no worker by that id.
#[derive(Debug, thiserror::Error)]
#[error("the lab has no worker `{id}` (it has {known})")]
pub struct UnknownWorker {
    pub id: String,
    pub known: String,
}

/// One local worker: an sshd on a port of 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabWorker {
    /// `w1`, `w2`, ...
    pub id: String,
    pub port: u16,
    /// Its `Host` name in the lab's ssh_config: `rch-lab-w1`.
    pub alias: String,
    /// Where rch puts its builds on this worker.
    pub remote_base: PathBuf,
    /// The worker's own directory (keys, sshd config, pid file, log).
    pub dir: PathBuf,
    /// The Rust toolchain it offers (the client's unless changed).
    #[serde(default)]
    pub toolchain: LabToolchain,
}

impl LabWorker {
    fn new(root: &Path, number: usize, port: u16) -> LabWorker {
        let id = format!("w{number}");
        let dir = root.join(&id);
        LabWorker {
            alias: format!("rch-lab-{id}"),
            remote_base: dir.join("builds"),
            dir,
            port,
            id,
            toolchain: LabToolchain::default(),
        }
    }

    fn host_key(&self) -> PathBuf {
        self.dir.join("host_key")
    }

    /// Where the original host key waits while a rotated one is in use.
    fn original_host_key(&self) -> PathBuf {
        self.dir.join("host_key.orig")
    }

    fn authorized_keys(&self) -> PathBuf {
        self.dir.join("authorized_keys")
    }

    fn sshd_config(&self) -> PathBuf {
        self.dir.join("sshd_config")
    }

    /// The login home of sessions on this worker.
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("sshd.pid")
    }

    /// The worker's sshd log (`sshd -E`).
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }
}

/// What a worker looks like from outside right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerHealth {
    /// sshd runs and answers.
    Up,
    /// Nothing listens: connections are refused.
    Down,
    /// sshd is frozen by SIGSTOP: connections hang.
    Stopped,
    /// A listener holds the port and never speaks: connections hang.
    Tarpit,
    /// sshd runs but no longer accepts the lab's client key.
    KeyRevoked,
    /// sshd runs with a host key that known_hosts does not list.
    HostKeyChanged,
    /// sshd runs but the remote base is not a directory.
    BaseBroken,
}

impl fmt::Display for WorkerHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkerHealth::Up => "up",
            WorkerHealth::Down => "down",
            WorkerHealth::Stopped => "stopped",
            WorkerHealth::Tarpit => "tarpit",
            WorkerHealth::KeyRevoked => "key revoked",
            WorkerHealth::HostKeyChanged => "host key changed",
            WorkerHealth::BaseBroken => "remote base broken",
        })
    }
}

/// What `lab.json` keeps for a later process.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LabState {
    user: String,
    sshd: PathBuf,
    workers: Vec<LabWorker>,
    /// What the workers must not see (kept for restarts by later processes).
    #[serde(default)]
    isolation: Isolation,
    /// How the workers were confined.
    #[serde(default = "unknown_confinement")]
    confinement: Confinement,
}

fn unknown_confinement() -> Confinement {
    Confinement::Shared {
        why: "started by an older rch".to_string(),
    }
}

/// A set of local sshd workers in one directory.
pub struct Lab {
    root: PathBuf,
    state: LabState,
    /// Stop switches of the tarpits this process runs, by worker id.
    tarpits: Arc<Mutex<HashMap<String, Arc<AtomicBool>>>>,
}

impl Lab {
    /// Create a lab of `workers` sshd workers in `root` and start them, each
    /// confined so that it cannot see `isolation.hidden` (see [`Isolation`]).
    /// Fails with [`AlreadyUp`] when a lab is running there; leftovers of a
    /// lab whose workers all died are cleared first.
    pub fn up(root: &Path, workers: usize, isolation: Isolation) -> anyhow::Result<Lab> {
        if workers == 0 {
            bail!("a lab needs at least one worker");
        }
        let sshd = sshd::find_program("sshd")?;
        sshd::find_program("ssh-keygen")?;
        clear_dead_lab(root)?;
        create_private_dir(root)?;
        let mut lab = Lab {
            root: root.to_path_buf(),
            state: LabState {
                user: current_user(),
                sshd,
                workers: Vec::new(),
                confinement: isolate::available_confinement(),
                isolation,
            },
            tarpits: Arc::default(),
        };
        // lab.json first, so that `down` can clean up a half-built lab.
        lab.save_state()?;
        if let Err(err) = lab.build(workers) {
            let _ = lab.down();
            return Err(err);
        }
        Ok(lab)
    }

    /// The lab running in `root`, as `up` left it ([`NoLab`] if none).
    pub fn open(root: &Path) -> anyhow::Result<Lab> {
        let text = match fs::read_to_string(root.join("lab.json")) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NoLab {
                    root: root.to_path_buf(),
                }
                .into())
            }
            Err(e) => return Err(e).context("reading lab.json"),
        };
        let state = serde_json::from_str(&text)
            .with_context(|| format!("reading {}", root.join("lab.json").display()))?;
        Ok(Lab {
            root: root.to_path_buf(),
            state,
            tarpits: Arc::default(),
        })
    }

    /// Stop every worker (sshd, sessions, tarpits) and remove the lab directory.
    pub fn down(&self) -> anyhow::Result<()> {
        for worker in &self.state.workers {
            self.stop_everything(worker);
        }
        if self.root.join("lab.json").exists() {
            fs::remove_dir_all(&self.root)
                .with_context(|| format!("removing {}", self.root.display()))?;
        }
        Ok(())
    }

    /// The lab's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn workers(&self) -> &[LabWorker] {
        &self.state.workers
    }

    /// How the workers are kept from the client's files.
    pub fn confinement(&self) -> &Confinement {
        &self.state.confinement
    }

    /// The user the workers log in as (the one who started the lab).
    pub fn user(&self) -> &str {
        &self.state.user
    }

    /// The ssh_config with one `Host rch-lab-wN` block per worker.
    pub fn ssh_config(&self) -> PathBuf {
        self.root.join("ssh_config")
    }

    /// The known_hosts file listing every worker's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.root.join("known_hosts")
    }

    /// The private key the lab's workers accept.
    pub fn client_key(&self) -> PathBuf {
        self.root.join("client_key")
    }

    /// The rch config layer describing the lab's workers.
    pub fn rch_config(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// The text of the rch config layer ([`Lab::rch_config`]).
    pub fn config_toml(&self) -> String {
        let mut text = format!(
            "# rch lab: local workers; removed by `rch lab down`\n\
             [ssh]\n\
             config_file = {}\n\
             strict_host_key_checking = \"yes\"\n",
            toml_string(&self.ssh_config())
        );
        for worker in &self.state.workers {
            text.push_str(&format!(
                "\n[[workers]]\n\
                 id = \"{}\"\n\
                 host = \"{}\"\n\
                 slots = 4\n\
                 priority = 100\n\
                 remote_base = {}\n",
                worker.id,
                worker.alias,
                toml_string(&worker.remote_base)
            ));
        }
        text
    }

    /// How the worker looks right now: process state first, then the faults
    /// injected into its files.
    pub fn health(&self, id: &str) -> WorkerHealth {
        let Ok(worker) = self.worker(id) else {
            return WorkerHealth::Down;
        };
        if self.tarpit_running(id) {
            return WorkerHealth::Tarpit;
        }
        match sshd::listener_pid(&worker.pid_file()) {
            None if sshd::port_accepts(worker.port) => WorkerHealth::Tarpit,
            None => WorkerHealth::Down,
            Some(pid) if procs::is_stopped(pid) => WorkerHealth::Stopped,
            Some(_) => self.file_fault(worker).unwrap_or(WorkerHealth::Up),
        }
    }

    fn file_fault(&self, worker: &LabWorker) -> Option<WorkerHealth> {
        if worker.original_host_key().exists() {
            return Some(WorkerHealth::HostKeyChanged);
        }
        let client_key = fs::read_to_string(self.client_key().with_extension("pub")).ok();
        if fs::read_to_string(worker.authorized_keys()).ok() != client_key {
            return Some(WorkerHealth::KeyRevoked);
        }
        if !worker.remote_base.is_dir() {
            return Some(WorkerHealth::BaseBroken);
        }
        if !sshd::answers_banner(worker.port, HEALTH_TIMEOUT) {
            return Some(WorkerHealth::Tarpit);
        }
        None
    }

    /// SIGKILL the worker's sshd and everything its sessions run: new
    /// connections are refused and live ones die. Ends a tarpit too.
    pub fn kill(&self, id: &str) -> anyhow::Result<()> {
        let worker = self.worker(id)?;
        self.stop_everything(worker);
        if sshd::port_accepts(worker.port) {
            bail!("port {} of {id} still accepts connections", worker.port);
        }
        Ok(())
    }

    /// Bring the worker back on its port: end a tarpit, resume a stopped
    /// sshd, or start a killed one.
    pub fn revive(&self, id: &str) -> anyhow::Result<()> {
        let worker = self.worker(id)?;
        self.end_tarpit(worker);
        match sshd::listener_pid(&worker.pid_file()) {
            Some(pid) if procs::is_stopped(pid) => self.resume(id),
            Some(_) => Ok(()),
            None => self.start_sshd(worker).map(|_| ()),
        }
    }

    /// Undo every fault: revive, give back the client key, the original host
    /// key and the remote base directory.
    pub fn heal(&self, id: &str) -> anyhow::Result<()> {
        let worker = self.worker(id)?;
        self.restore_client_key(worker)?;
        if !worker.remote_base.is_dir() {
            let _ = fs::remove_file(&worker.remote_base);
            fs::create_dir_all(&worker.remote_base)?;
        }
        let original = worker.original_host_key();
        if original.exists() {
            fs::rename(&original, worker.host_key())?;
            fs::rename(
                original.with_extension("orig.pub"),
                worker.host_key().with_extension("pub"),
            )?;
            self.restart_listener(worker)?;
        }
        self.revive(id)
    }

    /// SIGKILL only the per-connection sshd processes: live connections are
    /// lost (what the remote commands do then is up to them); the listener
    /// stays and new connections work.
    pub fn kill_sessions(&self, id: &str) -> anyhow::Result<()> {
        let worker = self.worker(id)?;
        let Some(listener) = sshd::listener_pid(&worker.pid_file()) else {
            return Ok(());
        };
        let sessions: Vec<i32> = procs::descendants(listener)
            .into_iter()
            .filter(|&pid| procs::is_sshd(pid))
            .collect();
        procs::signal_all(&sessions, Signal::SIGKILL);
        Ok(())
    }

    /// SIGSTOP the listener and its sessions: connections hang.
    pub fn pause(&self, id: &str) -> anyhow::Result<()> {
        let worker = self.worker(id)?;
        let Some(listener) = sshd::listener_pid(&worker.pid_file()) else {
            bail!("{id} is not running");
        };
        procs::signal_all(&[listener], Signal::SIGSTOP);
        procs::signal_all(&self.session_processes(id), Signal::SIGSTOP);
        wait_until(STOP_TIMEOUT, || procs::is_stopped(listener));
        Ok(())
    }

    /// SIGCONT what [`Lab::pause`] stopped.
    pub fn resume(&self, id: &str) -> anyhow::Result<()> {
        let worker = self.worker(id)?;
        let listener = sshd::listener_pid(&worker.pid_file());
        procs::signal_all(&self.session_processes(id), Signal::SIGCONT);
        procs::signal_all(listener.as_slice(), Signal::SIGCONT);
        Ok(())
    }

    /// Kill the worker's sshd and hold its port with a listener that accepts
    /// connections and never sends a banner, until the guard is dropped or
    /// the worker is revived. It runs inside the calling process.
    pub fn tarpit(&self, id: &str) -> anyhow::Result<Tarpit> {
        let worker = self.worker(id)?;
        self.stop_everything(worker);
        let tarpit = Tarpit::start(worker.port)?;
        self.tarpits
            .lock()
            .expect("tarpit registry")
            .insert(id.to_string(), tarpit.stop_handle());
        Ok(tarpit)
    }

    /// Replace the worker's authorized_keys with a stranger's key: the lab's
    /// client key no longer logs in (authentication fails).
    pub fn revoke_key(&self, id: &str) -> anyhow::Result<()> {
        let worker = self.worker(id)?;
        let stranger = self.root.join("stranger_key");
        if !stranger.exists() {
            generate_key(&stranger, "rch-lab-stranger")?;
        }
        fs::copy(stranger.with_extension("pub"), worker.authorized_keys())?;
        Ok(())
    }

    /// Give the worker a new host key and restart its sshd; known_hosts still
    /// lists the old one, so strict host key checking fails.
    pub fn rotate_host_key(&self, id: &str) -> anyhow::Result<()> {
        let worker = self.worker(id)?;
        let original = worker.original_host_key();
        if !original.exists() {
            fs::rename(worker.host_key(), &original)?;
            fs::rename(
                worker.host_key().with_extension("pub"),
                original.with_extension("orig.pub"),
            )?;
        }
        generate_key(&worker.host_key(), &format!("rch-lab-{id}-rotated"))?;
        self.restart_listener(worker)
    }

    /// Replace the remote base directory by a regular file, so nothing can be
    /// created inside it, not even by root.
    pub fn break_remote_base(&self, id: &str) -> anyhow::Result<()> {
        let worker = self.worker(id)?;
        if worker.remote_base.is_dir() {
            fs::remove_dir_all(&worker.remote_base)?;
        }
        fs::write(&worker.remote_base, "not a directory: rch lab fault\n")?;
        Ok(())
    }

    /// Pids of the worker's per-connection sshd processes and all they run,
    /// including orphans of lost connections (found by the `SSH_CONNECTION`
    /// sshd gave them). Empty means nothing of the worker's sessions is left
    /// running.
    pub fn session_processes(&self, id: &str) -> Vec<i32> {
        let Ok(worker) = self.worker(id) else {
            return Vec::new();
        };
        let listener = sshd::listener_pid(&worker.pid_file());
        let children = listener.map(procs::descendants).unwrap_or_default();
        let strays = procs::strays(worker.port);
        procs::union(&[&children, &strays])
            .into_iter()
            .filter(|pid| Some(*pid) != listener)
            .collect()
    }

    /// What runs on the worker for its ssh sessions other than sshd itself:
    /// commands and their children. An idle shared master connection and
    /// the worker agent (both kept on purpose for reuse) show up in
    /// [`Lab::session_processes`] but not here; what the agent runs does.
    pub fn leftover_processes(&self, id: &str) -> Vec<i32> {
        self.session_processes(id)
            .into_iter()
            .filter(|pid| !procs::is_sshd(*pid) && !procs::is_worker_agent(*pid))
            .collect()
    }

    fn worker(&self, id: &str) -> anyhow::Result<&LabWorker> {
        self.state
            .workers
            .iter()
            .find(|w| w.id == id)
            .ok_or_else(|| {
                let known: Vec<&str> = self.state.workers.iter().map(|w| w.id.as_str()).collect();
                UnknownWorker {
                    id: id.to_string(),
                    known: known.join(", "),
                }
                .into()
            })
    }

    /// Create keys, per-worker files, start every sshd, then write the files
    /// clients use.
    fn build(&mut self, workers: usize) -> anyhow::Result<()> {
        generate_key(&self.client_key(), "rch-lab-client")?;
        let mut taken = BTreeSet::new();
        for number in 1..=workers {
            let worker = self.add_worker(number, &mut taken)?;
            self.state.workers.push(worker);
            self.save_state()?;
        }
        self.write_known_hosts()?;
        write_file(&self.ssh_config(), &self.ssh_config_text())?;
        write_file(&self.rch_config(), &self.config_toml())?;
        Ok(())
    }

    fn add_worker(&self, number: usize, taken: &mut BTreeSet<u16>) -> anyhow::Result<LabWorker> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = sshd::free_port(taken)?;
            taken.insert(port);
            let worker = LabWorker::new(&self.root, number, port);
            create_private_dir(&worker.dir)?;
            fs::create_dir_all(&worker.remote_base)?;
            if !worker.host_key().exists() {
                generate_key(&worker.host_key(), &format!("rch-lab-{}", worker.id))?;
            }
            self.restore_client_key(&worker)?;
            match self.start_sshd(&worker) {
                Ok(_) => return Ok(worker),
                Err(e) if e.is::<sshd::PortTaken>() => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    fn start_sshd(&self, worker: &LabWorker) -> anyhow::Result<i32> {
        let paths = WorkerPaths::of(worker);
        let files = paths.as_sshd_files();
        sshd::write_home(files.home)?;
        sshd::write_config(&self.state.sshd, worker.port, &files)?;
        let isolation = self.state.isolation.with_visible(&worker.dir);
        let isolation = toolchain::apply(&worker.toolchain, files.home, isolation)?;
        sshd::start(&self.state.sshd, worker.port, &files, &isolation)
            .with_context(|| format!("starting worker {}", worker.id))
    }

    /// Give worker `id` another Rust toolchain (none, or a rustc reporting
    /// another release) and restart it: its sessions end (shared master
    /// connections too, which would keep the old view), new ones get it.
    pub fn set_toolchain(&mut self, id: &str, toolchain: LabToolchain) -> anyhow::Result<()> {
        let mut worker = self.worker(id)?.clone();
        worker.toolchain = toolchain;
        if let Some(w) = self.state.workers.iter_mut().find(|w| w.id == id) {
            *w = worker.clone();
        }
        self.save_state()?;
        self.stop_everything(&worker);
        self.start_sshd(&worker).map(|_| ())
    }

    /// Stop only the listener and start it again (sessions carry on).
    fn restart_listener(&self, worker: &LabWorker) -> anyhow::Result<()> {
        if let Some(listener) = sshd::listener_pid(&worker.pid_file()) {
            procs::signal_all(&[listener], Signal::SIGKILL);
            wait_until(STOP_TIMEOUT, || !procs::is_alive(listener));
        }
        self.start_sshd(worker).map(|_| ())
    }

    /// End the worker's tarpit, its listener and everything its sessions run.
    fn stop_everything(&self, worker: &LabWorker) {
        self.end_tarpit(worker);
        let listener = sshd::listener_pid(&worker.pid_file());
        // Freeze the listener first so it forks no new session meanwhile.
        procs::signal_all(listener.as_slice(), Signal::SIGSTOP);
        let sessions = self.session_processes(&worker.id);
        procs::signal_all(listener.as_slice(), Signal::SIGKILL);
        procs::signal_all(&sessions, Signal::SIGKILL);
        if let Some(pid) = listener {
            wait_until(STOP_TIMEOUT, || !procs::is_alive(pid));
        }
        let _ = fs::remove_file(worker.pid_file());
    }

    fn tarpit_running(&self, id: &str) -> bool {
        let tarpits = self.tarpits.lock().expect("tarpit registry");
        tarpits
            .get(id)
            .is_some_and(|stop| !stop.load(Ordering::SeqCst))
    }

    fn end_tarpit(&self, worker: &LabWorker) {
        let stop = self
            .tarpits
            .lock()
            .expect("tarpit registry")
            .remove(&worker.id);
        if let Some(stop) = stop {
            if !stop.swap(true, Ordering::SeqCst) {
                tarpit::wait_until_released(worker.port, STOP_TIMEOUT);
            }
        }
    }

    fn restore_client_key(&self, worker: &LabWorker) -> anyhow::Result<()> {
        fs::copy(
            self.client_key().with_extension("pub"),
            worker.authorized_keys(),
        )
        .with_context(|| format!("writing {}", worker.authorized_keys().display()))?;
        Ok(())
    }

    fn write_known_hosts(&self) -> anyhow::Result<()> {
        let mut text = String::new();
        for worker in &self.state.workers {
            let public = fs::read_to_string(worker.host_key().with_extension("pub"))?;
            // Keep the key type and the key, drop the comment.
            let key: Vec<&str> = public.split_whitespace().take(2).collect();
            text.push_str(&format!("[127.0.0.1]:{} {}\n", worker.port, key.join(" ")));
        }
        write_file(&self.known_hosts(), &text)
    }

    fn ssh_config_text(&self) -> String {
        let mut text = String::from("# rch lab: local workers; removed by `rch lab down`\n");
        for worker in &self.state.workers {
            text.push_str(&self.host_block(&worker.alias, worker.port, None));
        }
        text
    }

    /// One `Host` entry of the lab's ssh config: `alias` reaches 127.0.0.1 on
    /// `port` with the lab's key and known_hosts; `host_key_of` names the
    /// worker port whose host key it must present (an entry through a proxy).
    pub(crate) fn host_block(&self, alias: &str, port: u16, host_key_of: Option<u16>) -> String {
        let host_key_alias = host_key_of
            .map(|real| format!("    HostKeyAlias [127.0.0.1]:{real}\n"))
            .unwrap_or_default();
        format!(
            "\nHost {alias}\n\
             \x20   HostName 127.0.0.1\n\
             \x20   Port {port}\n\
             {host_key_alias}\
             \x20   User {user}\n\
             \x20   IdentityFile {key}\n\
             \x20   IdentitiesOnly yes\n\
             \x20   UserKnownHostsFile {known_hosts}\n\
             \x20   GlobalKnownHostsFile /dev/null\n\
             \x20   StrictHostKeyChecking yes\n\
             \x20   CheckHostIP no\n\
             \x20   BatchMode yes\n",
            user = self.state.user,
            key = sshd::quote_token_path(&self.client_key()),
            known_hosts = sshd::quote_token_path(&self.known_hosts()),
        )
    }

    fn save_state(&self) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(&self.state)?;
        write_file(&self.root.join("lab.json"), &text)
    }
}

/// The files of one worker's sshd, owned so they can be borrowed as [`SshdFiles`].
struct WorkerPaths {
    config: PathBuf,
    home: PathBuf,
    host_key: PathBuf,
    authorized_keys: PathBuf,
    pid_file: PathBuf,
    log: PathBuf,
}

impl WorkerPaths {
    fn of(worker: &LabWorker) -> WorkerPaths {
        WorkerPaths {
            config: worker.sshd_config(),
            home: worker.home(),
            host_key: worker.host_key(),
            authorized_keys: worker.authorized_keys(),
            pid_file: worker.pid_file(),
            log: worker.log_file(),
        }
    }

    fn as_sshd_files(&self) -> SshdFiles<'_> {
        SshdFiles {
            config: &self.config,
            home: &self.home,
            host_key: &self.host_key,
            authorized_keys: &self.authorized_keys,
            pid_file: &self.pid_file,
            log: &self.log,
        }
    }
}

/// Refuse to replace a running lab; remove what a dead one left behind.
fn clear_dead_lab(root: &Path) -> anyhow::Result<()> {
    let Ok(old) = Lab::open(root) else {
        return Ok(());
    };
    let running = old
        .workers()
        .iter()
        .any(|w| sshd::listener_pid(&w.pid_file()).is_some());
    if running {
        return Err(AlreadyUp {
            root: root.to_path_buf(),
        }
        .into());
    }
    old.down()
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A fresh ed25519 key pair without passphrase at `path` and `path.pub`.
fn generate_key(path: &Path, comment: &str) -> anyhow::Result<()> {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("pub"));
    let output = Command::new(sshd::find_program("ssh-keygen")?)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("running ssh-keygen")?;
    if !output.status.success() {
        bail!(
            "ssh-keygen failed for {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The login name of the user running this process.
fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".to_string())
}

/// A path as a TOML basic string.
fn toml_string(path: &Path) -> String {
    toml::Value::String(path.to_string_lossy().into_owned()).to_string()
}

/// Poll `done` every few milliseconds until it holds or `timeout` passes;
/// tells which. (Tests use it too, to wait for what the lab changes.)
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_at(root: &str) -> Lab {
        let root = PathBuf::from(root);
        Lab {
            state: LabState {
                user: "builder".to_string(),
                sshd: PathBuf::from("/usr/sbin/sshd"),
                workers: vec![LabWorker::new(&root, 1, 40001)],
                isolation: Isolation::default(),
                confinement: unknown_confinement(),
            },
            root,
            tarpits: Arc::default(),
        }
    }

    #[test]
    fn config_layer_lists_workers_with_toml_quoting() {
        let lab = lab_at("/tmp/odd \"lab\"");
        let config: toml::Value = toml::from_str(&lab.config_toml()).unwrap();
        assert_eq!(
            config["ssh"]["config_file"].as_str(),
            Some("/tmp/odd \"lab\"/ssh_config")
        );
        assert_eq!(
            config["ssh"]["strict_host_key_checking"].as_str(),
            Some("yes")
        );
        let worker = &config["workers"][0];
        assert_eq!(worker["id"].as_str(), Some("w1"));
        assert_eq!(worker["host"].as_str(), Some("rch-lab-w1"));
        assert_eq!(
            worker["remote_base"].as_str(),
            Some("/tmp/odd \"lab\"/w1/builds")
        );
    }

    #[test]
    fn ssh_config_has_one_strict_block_per_worker() {
        let lab = lab_at("/tmp/a b");
        let text = lab.ssh_config_text();
        assert!(text.contains("Host rch-lab-w1\n"));
        assert!(text.contains("    Port 40001\n"));
        assert!(text.contains("    User builder\n"));
        assert!(text.contains("    IdentityFile \"/tmp/a b/client_key\"\n"));
        assert!(text.contains("    StrictHostKeyChecking yes\n"));
        assert!(text.contains("    BatchMode yes\n"));
    }

    #[test]
    fn unknown_worker_is_named() {
        let err = lab_at("/tmp/x").kill("w7").unwrap_err();
        assert!(err.is::<UnknownWorker>());
        assert!(err.to_string().contains("w7"));
    }
}
