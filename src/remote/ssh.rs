//! SSH master connections: one OpenSSH ControlMaster per worker, shared by
//! every rch process of the user.
//!
//! Masters live under `<runtime dir>/ssh/`. Each worker has a key (its id and a
//! short hash of everything that decides where and how ssh connects); under an
//! exclusive lock on `<key>.lock` a pointer file `<key>.ctl` names the control
//! socket of the live master. A process first tries to resume that master and
//! only builds a new one when it is gone, so concurrent builds share one TCP
//! connection and one authentication. Masters close themselves after ten idle
//! minutes (ControlPersist).

use super::failure::{classify_connect, last_line, ConnectSite, FailureKind, RemoteFailure};
use super::Target;
use crate::config::HostKeyPolicy;
use crate::paths;
use fs2::FileExt;
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::Write;
use std::num::NonZeroUsize;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long an unused master stays up before it exits by itself.
const MASTER_IDLE_SECS: usize = 600;
/// Keepalive period: a paused worker or a lost link is noticed after three
/// unanswered keepalives, i.e. within about 15 s.
const SERVER_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unix socket paths are limited to 108 bytes; ssh binds a temporary name
/// about 17 bytes longer than the final one before renaming it.
const MAX_CONTROL_PATH_LEN: usize = 108 - 18;
/// Length of the master directory name openssh creates (".ssh-connection" +
/// 6 random characters) plus "/master".
const MASTER_DIR_SUFFIX_LEN: usize = 1 + 21 + 7;

/// A live, shared master connection to one worker.
#[derive(Debug)]
pub struct Connection {
    session: Session,
    control_path: PathBuf,
    worker_id: String,
    compress: crate::config::Compress,
    /// The local end of the master's forward to the worker agent's socket,
    /// once [`super::agent::attach`] found or set it up.
    agent_forward: Option<PathBuf>,
}

impl Connection {
    /// The openssh session over the shared master.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The master's control socket (`ssh -S <path>`).
    pub fn control_path(&self) -> &Path {
        &self.control_path
    }

    /// The id of the worker this connection reaches.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The directory of this master's control socket, which lives and dies
    /// with the master (the agent's forward and its marks are kept there).
    pub fn master_dir(&self) -> &Path {
        self.control_path.parent().unwrap_or(Path::new("/"))
    }

    /// Where the worker agent answers, when this connection has one.
    pub fn agent_forward(&self) -> Option<&Path> {
        self.agent_forward.as_deref()
    }

    pub(crate) fn set_agent_forward(&mut self, forward: Option<PathBuf>) {
        self.agent_forward = forward;
    }

    /// The worker's `compress` setting.
    pub fn compress(&self) -> crate::config::Compress {
        self.compress
    }

    /// `ssh` running `remote_command` over the master, all three streams piped.
    ///
    /// The client gets a process group of its own, so a Ctrl-C meant for rch
    /// does not kill it under rch's feet: rch decides what an interrupt means
    /// and ends the client itself (it is killed when the handle is dropped).
    pub(crate) fn command(&self, remote_command: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.arg("-S")
            .arg(&self.control_path)
            .args(["-o", "ControlMaster=no", "-o", "BatchMode=yes", "-T"])
            .arg(MUX_HOST)
            .arg("--")
            .arg(remote_command)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }
}

/// Host name given to ssh and rsync over a master; ssh ignores it while the
/// control socket works, and it cannot resolve if the master is gone, so no
/// second, unconfigured connection is ever opened.
pub(crate) const MUX_HOST: &str = "rch-mux";

/// Connect to the target's worker, reusing the shared master when it is alive.
pub async fn connect(target: &Target) -> Result<Connection, RemoteFailure> {
    check_local_files(target)?;
    let files = MasterFiles::for_target(target)?;
    let _lock = lock(&files.lock, &target.worker.id).await?;
    if let Some(conn) = resume_live_master(&files, target).await {
        return Ok(conn);
    }
    discard_stale_master(&files);
    let master_dir = launch_master(target, &files.dir).await?;
    let control_path = master_dir.join("master");
    write_pointer(&files.pointer, &control_path)
        .map_err(|e| local_failure(target, "cannot record ssh master", e))?;
    Ok(connection_for(&control_path, target))
}

/// Close the shared master of this target, so the next connect starts afresh.
/// Errors are ignored: a master that is already gone is the wanted state.
pub async fn disconnect(target: &Target) {
    let Ok(files) = MasterFiles::for_target(target) else {
        return;
    };
    let Ok(_lock) = lock(&files.lock, &target.worker.id).await else {
        return;
    };
    if let Some(control_path) = read_pointer(&files.pointer) {
        let session = resumed_session(&control_path);
        let _ = session.close().await;
    }
    discard_stale_master(&files);
}

/// Where the master of one target is recorded.
struct MasterFiles {
    dir: PathBuf,
    lock: PathBuf,
    pointer: PathBuf,
}

impl MasterFiles {
    fn for_target(target: &Target) -> Result<Self, RemoteFailure> {
        let dir = paths::runtime_dir().join("ssh");
        let longest = dir.as_os_str().len() + MASTER_DIR_SUFFIX_LEN;
        if longest > MAX_CONTROL_PATH_LEN {
            return Err(RemoteFailure::new(
                FailureKind::Local,
                &target.worker.id,
                format!(
                    "runtime dir {} is too long for ssh control sockets",
                    dir.display()
                ),
            ));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| local_failure(target, "cannot create ssh control dir", e))?;
        let key = master_key(target);
        Ok(MasterFiles {
            lock: dir.join(format!("{key}.lock")),
            pointer: dir.join(format!("{key}.ctl")),
            dir,
        })
    }
}

/// `<id>-<hash>`: the id keeps names readable, the hash separates targets
/// that share an id but connect differently.
fn master_key(target: &Target) -> String {
    let w = &target.worker;
    let mut hasher = Sha256::new();
    for part in [
        w.host.clone(),
        w.port.map(|p| p.to_string()).unwrap_or_default(),
        w.user.clone().unwrap_or_default(),
        path_string(w.identity_file.as_deref()),
        path_string(target.ssh.config_file.as_deref()),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let hash = hasher.finalize();
    let hex: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    let id: String =
        w.id.chars()
            .take(16)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
    format!("{id}-{hex}")
}

fn path_string(p: Option<&Path>) -> String {
    p.map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Takes the exclusive lock of a target's master files; released on drop.
pub(crate) async fn lock(path: &Path, worker: &str) -> Result<File, RemoteFailure> {
    let path = path.to_path_buf();
    let locked = tokio::task::spawn_blocking(move || {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock_exclusive()?;
        Ok::<_, std::io::Error>(file)
    })
    .await;
    match locked {
        Ok(Ok(file)) => Ok(file),
        Ok(Err(e)) => Err(RemoteFailure::new(
            FailureKind::Local,
            worker,
            format!("cannot lock ssh master: {e}"),
        )),
        Err(e) => Err(RemoteFailure::new(
            FailureKind::Local,
            worker,
            e.to_string(),
        )),
    }
}

async fn resume_live_master(files: &MasterFiles, target: &Target) -> Option<Connection> {
    let control_path = read_pointer(&files.pointer)?;
    master_answers(&control_path)
        .await
        .then(|| connection_for(&control_path, target))
}

/// Whether a master listens on its control socket. Connecting is what
/// `ssh -O check` proves too (the master answers locally either way), without
/// starting an ssh process on the path of every build.
async fn master_answers(control_path: &Path) -> bool {
    tokio::net::UnixStream::connect(control_path).await.is_ok()
}

fn connection_for(control_path: &Path, target: &Target) -> Connection {
    Connection {
        session: resumed_session(control_path),
        control_path: control_path.to_path_buf(),
        worker_id: target.worker.id.clone(),
        compress: target.worker.compress,
        agent_forward: None,
    }
}

/// A session over an existing master; dropping it leaves the master running.
fn resumed_session(control_path: &Path) -> Session {
    let log = control_path.with_file_name("log");
    Session::resume(control_path.into(), Some(log.into_boxed_path()))
}

fn read_pointer(pointer: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(pointer).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| PathBuf::from(line))
}

/// Written to a temporary name and renamed, so readers never see half a path.
fn write_pointer(pointer: &Path, control_path: &Path) -> std::io::Result<()> {
    let tmp = pointer.with_extension("ctl.tmp");
    let mut file = File::create(&tmp)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    writeln!(file, "{}", control_path.display())?;
    file.sync_all()?;
    fs::rename(&tmp, pointer)
}

/// Removes the pointer and the directory of a master that is no longer usable.
fn discard_stale_master(files: &MasterFiles) {
    if let Some(control_path) = read_pointer(&files.pointer) {
        if let Some(master_dir) = control_path.parent() {
            // Only ever remove directories this module created.
            if master_dir.parent() == Some(files.dir.as_path()) {
                let _ = fs::remove_dir_all(master_dir);
            }
        }
    }
    let _ = fs::remove_file(&files.pointer);
}

/// Starts a detached master; returns its directory (holding `master` and `log`).
async fn launch_master(target: &Target, control_dir: &Path) -> Result<PathBuf, RemoteFailure> {
    let builder = session_builder(target, control_dir);
    let dir = builder
        .launch_master(&target.worker.host)
        .await
        .map_err(|e| connect_failure(target, &e))?;
    Ok(dir.keep())
}

fn session_builder(target: &Target, control_dir: &Path) -> SessionBuilder {
    let w = &target.worker;
    let mut b = SessionBuilder::default();
    b.control_directory(control_dir)
        .control_persist(ControlPersist::IdleFor(
            NonZeroUsize::new(MASTER_IDLE_SECS).expect("non-zero idle time"),
        ))
        .connect_timeout(Duration::from_secs(target.ssh.connect_timeout_secs.max(1)))
        .server_alive_interval(SERVER_ALIVE_INTERVAL)
        .known_hosts_check(match target.ssh.strict_host_key_checking {
            HostKeyPolicy::Yes => KnownHosts::Strict,
            HostKeyPolicy::AcceptNew => KnownHosts::Add,
        });
    if let Some(port) = w.port {
        b.port(port);
    }
    if let Some(user) = &w.user {
        b.user(user.clone());
    }
    if let Some(key) = &w.identity_file {
        b.keyfile(paths::expand_tilde(&key.to_string_lossy()));
    }
    if let Some(config) = &target.ssh.config_file {
        b.config_file(paths::expand_tilde(&config.to_string_lossy()));
    }
    if let Some(agent) = &target.agent {
        b.ssh_auth_sock(agent);
    }
    b
}

/// The files this machine must have to connect (the configured identity
/// file and ssh config): without them the fault is local, not the worker's.
fn check_local_files(target: &Target) -> Result<(), RemoteFailure> {
    let files = [
        ("identity_file", target.worker.identity_file.as_deref()),
        ("ssh.config_file", target.ssh.config_file.as_deref()),
    ];
    for (key, file) in files {
        let Some(file) = file else { continue };
        let path = paths::expand_tilde(&file.to_string_lossy());
        if let Err(e) = fs::metadata(&path) {
            return Err(RemoteFailure::new(
                FailureKind::Local,
                &target.worker.id,
                format!(
                    "{key} {} is not readable here: {e} (fix the path; `rch config validate` names where it is set)",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Maps a failed master start to a failure kind by what ssh reported.
fn connect_failure(target: &Target, err: &openssh::Error) -> RemoteFailure {
    if let openssh::Error::Connect(e) = err {
        if e.kind() == std::io::ErrorKind::NotFound {
            return RemoteFailure::new(
                FailureKind::Local,
                &target.worker.id,
                format!("cannot run ssh here: {e}"),
            );
        }
    }
    let site = ConnectSite {
        host: &target.worker.host,
        port: target.worker.port,
        timeout_secs: target.ssh.connect_timeout_secs,
    };
    let (kind, detail) = classify_connect(&error_text(err), &site);
    RemoteFailure::new(kind, &target.worker.id, detail)
}

/// An error running a command over an established master: a master that
/// went away means the connection is lost.
pub(crate) fn session_error(
    conn: &Connection,
    target: &Target,
    err: openssh::Error,
) -> RemoteFailure {
    let text = error_text(&err);
    let kind = match err {
        openssh::Error::RemoteProcessTerminated
        | openssh::Error::Disconnected
        | openssh::Error::Master(_) => FailureKind::ConnectionLost,
        _ => FailureKind::Other,
    };
    RemoteFailure::new(
        kind,
        conn.worker_id(),
        format!(
            "ssh to {} failed: {}",
            target.worker.host,
            last_line(&text).unwrap_or("unknown error")
        ),
    )
}

/// The error and its sources, which is where openssh keeps ssh's own words.
fn error_text(err: &openssh::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push('\n');
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn local_failure(target: &Target, what: &str, err: std::io::Error) -> RemoteFailure {
    RemoteFailure::new(
        FailureKind::Local,
        &target.worker.id,
        format!("{what}: {err}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SshConfig, WorkerConfig};

    fn target(port: Option<u16>) -> Target {
        Target {
            worker: WorkerConfig {
                id: "w1".into(),
                host: "127.0.0.1".into(),
                port,
                user: None,
                identity_file: None,
                slots: 1,
                priority: 100,
                remote_base: "~/.cache/rch/builds".into(),
                enabled: true,
                tools: Vec::new(),
                toolchain: None,
                cc_toolchain: None,
                max_disk_gb: None,
                mirror_paths: Default::default(),
                compress: Default::default(),
                agent: true,
            },
            ssh: SshConfig::default(),
            agent: None,
        }
    }

    #[test]
    fn key_depends_on_connection_settings() {
        let a = master_key(&target(Some(2222)));
        let b = master_key(&target(Some(2223)));
        assert_ne!(a, b);
        assert!(a.starts_with("w1-"));
        assert_eq!(a, master_key(&target(Some(2222))));
    }
}
