//! The CLI's side of the daemon socket: connect (starting the daemon when it
//! is not running), send requests, read answers.

use crate::protocol::{
    read_line, write_line, Envelope, Request, Response, WireError, PROTOCOL_VERSION,
};
use anyhow::Context;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{BufReader, ReadHalf, WriteHalf};
use tokio::net::UnixStream;

/// How long a freshly started daemon gets to answer.
const START_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Client {
    reader: BufReader<ReadHalf<UnixStream>>,
    writer: WriteHalf<UnixStream>,
    buf: String,
}

impl Client {
    /// Connect to a running daemon of this user. The socket file must be ours
    /// and so must the process that accepted the connection (SO_PEERCRED),
    /// both checked before a single byte is sent: the project path and the
    /// command go only to our own daemon.
    pub async fn connect(socket: &Path) -> std::io::Result<Client> {
        check_socket_owner(socket)?;
        let stream = UnixStream::connect(socket).await?;
        check_peer(&stream, socket)?;
        let (r, w) = tokio::io::split(stream);
        Ok(Client {
            reader: BufReader::new(r),
            writer: w,
            buf: String::new(),
        })
    }

    /// Connect, starting the daemon in the background if none answers.
    /// A daemon that cannot start fails at once, with its cause.
    pub async fn connect_or_start(socket: &Path) -> anyhow::Result<Client> {
        match Client::connect(socket).await {
            Ok(c) => return Ok(c),
            // Someone else's socket: never start a daemon in its place.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(e.into()),
            Err(_) => {}
        }
        let mut daemon = start_daemon(socket)?;
        wait_for_started(socket, &mut daemon, START_TIMEOUT).await
    }

    pub async fn send(&mut self, request: Request) -> Result<(), WireError> {
        let envelope = Envelope {
            v: PROTOCOL_VERSION,
            request,
        };
        write_line(&mut self.writer, &envelope).await
    }

    pub async fn recv(&mut self) -> Result<Response, WireError> {
        read_line(&mut self.reader, &mut self.buf).await
    }

    /// Send a request and read its one answer.
    pub async fn call(&mut self, request: Request) -> Result<Response, WireError> {
        self.send(request).await?;
        self.recv().await
    }
}

/// Refuses a socket file that is not owned by this user (a missing one is
/// left to `connect`, which reports it).
fn check_socket_owner(socket: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(socket) else {
        return Ok(());
    };
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(foreign(format!(
            "daemon socket {} belongs to uid {}, not to you (uid {me}); refusing to use it",
            socket.display(),
            meta.uid()
        )));
    }
    Ok(())
}

/// Refuses a connection accepted by another user's process.
fn check_peer(stream: &UnixStream, socket: &Path) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() != me {
        return Err(foreign(format!(
            "the process behind {} runs as uid {}, not as you (uid {me}); refusing to talk to it",
            socket.display(),
            cred.uid()
        )));
    }
    Ok(())
}

fn foreign(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, message)
}

/// Poll the socket until a daemon answers (used only right after starting one).
pub async fn wait_for_daemon(socket: &Path, timeout: Duration) -> anyhow::Result<Client> {
    let deadline = Instant::now() + timeout;
    loop {
        match Client::connect(socket).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| {
                    format!(
                        "daemon did not come up on {} (see {})",
                        socket.display(),
                        crate::paths::daemon_log().display()
                    )
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Create the socket's directory (0700) and start the daemon; a directory
/// that cannot be created is said here, not after a wait.
pub fn start_daemon(socket: &Path) -> anyhow::Result<std::process::Child> {
    if let Some(dir) = socket.parent().filter(|d| !d.exists()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| {
                format!(
                    "cannot create the socket directory {} (set RCH_SOCKET or XDG_RUNTIME_DIR to a writable place)",
                    dir.display()
                )
            })?;
    }
    spawn_daemon().context("starting the daemon")
}

/// Wait for a daemon this process just started; if it exits first, fail at
/// once with the last line of its log (its reason) instead of waiting out
/// the timeout.
pub async fn wait_for_started(
    socket: &Path,
    daemon: &mut std::process::Child,
    timeout: Duration,
) -> anyhow::Result<Client> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(c) = Client::connect(socket).await {
            return Ok(c);
        }
        if let Ok(Some(status)) = daemon.try_wait() {
            // Another daemon may have won the race to the socket.
            if let Ok(c) = Client::connect(socket).await {
                return Ok(c);
            }
            let log = crate::paths::daemon_log();
            let reason = last_log_line(&log).unwrap_or_else(|| status.to_string());
            anyhow::bail!(
                "the daemon did not start: {reason} (log: {})",
                log.display()
            );
        }
        if Instant::now() >= deadline {
            return wait_for_daemon(socket, Duration::ZERO).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last non-empty line of the daemon log, without its time and level.
fn last_log_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let reason = match line.split_once(" ERROR ") {
        Some((_, rest)) => rest,
        None => line,
    };
    Some(reason.trim().trim_start_matches("rch: ").to_string())
}

/// Start `rch daemon run` detached from this process, logging to the daemon log.
fn spawn_daemon() -> anyhow::Result<std::process::Child> {
    let exe = std::env::current_exe().context("locating the rch binary")?;
    let log_path = crate::paths::daemon_log();
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["daemon", "run"])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from our
    // terminal and process group so Ctrl-C on a build does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    cmd.spawn().context("spawning rch daemon run")
}
