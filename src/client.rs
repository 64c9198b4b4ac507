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
    /// Connect to a running daemon.
    pub async fn connect(socket: &Path) -> std::io::Result<Client> {
        let stream = UnixStream::connect(socket).await?;
        let (r, w) = tokio::io::split(stream);
        Ok(Client {
            reader: BufReader::new(r),
            writer: w,
            buf: String::new(),
        })
    }

    /// Connect, starting the daemon in the background if none answers.
    pub async fn connect_or_start(socket: &Path) -> anyhow::Result<Client> {
        if let Ok(c) = Client::connect(socket).await {
            return Ok(c);
        }
        spawn_daemon().context("starting the daemon")?;
        wait_for_daemon(socket, START_TIMEOUT).await
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

/// Start `rch daemon run` detached from this process, logging to the daemon log.
pub fn spawn_daemon() -> anyhow::Result<u32> {
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
    let child = cmd.spawn().context("spawning rch daemon run")?;
    Ok(child.id())
}
