//! The client's side of the worker agent ([`crate::agent`]): install it on a
//! worker and start it once per ssh master, forward its socket through the
//! master, and open one command on it.
//!
//! Setting up costs one login shell on the worker (two the first time a
//! version is installed: the `rch-agent` program next to `rch` is copied to
//! `~/.cache/rch/agent/`), then `ssh -O forward` asks the master to listen
//! on a local socket in its own directory. Each later build of any rch
//! process connects to that socket: no shell, no ssh process. A worker
//! whose system differs from this machine's, a missing `rch-agent` or any
//! failure to set it up leaves the builds on the login-shell path, which
//! stays complete; the mark lasts as long as the master.

use super::shell::login_shell_command;
use super::ssh::{self, Connection};
use crate::agent::wire::{Frame, Request};
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// The local program copied to workers, next to the running `rch`.
const PROGRAM: &str = "rch-agent";
/// How long setting the agent up may take before the build goes on without it.
const SETUP_WITHIN: Duration = Duration::from_secs(20);

/// The script that starts the agent: `$1` the version id, `$2` and `$3` the
/// `uname -s` `uname -m` pairs this machine's program runs on, `$4`
/// non-empty when the program follows on stdin to be installed. It prints
/// `upload` when the worker lacks this version, `unsupported` for another
/// system, else what `rch-agent start` prints (`ready <socket>`).
/// Installing removes other versions' programs.
const START_SCRIPT: &str = r#"case "$(uname -s) $(uname -m)" in "$2"|"$3") ;; *) echo unsupported; exit 0 ;; esac
d=$HOME/.cache/rch/agent; bin=$d/rch-agent-$1
if [ -n "$4" ]; then
  tmp=
  mkdir -p "$d" && chmod 700 "$d" && tmp=$(mktemp "$d/.install.XXXXXX") && cat >"$tmp" && chmod 700 "$tmp" && mv -f "$tmp" "$bin" ||
    { [ -z "$tmp" ] || rm -f "$tmp"; echo "failed cannot install the agent in $d"; exit 0; }
  for f in "$d"/rch-agent-*; do [ "$f" = "$bin" ] || rm -f -- "$f"; done
elif [ ! -x "$bin" ]; then
  echo upload; exit 0
fi
exec "$bin" start"#;

/// This machine's agent program and the id of its version.
#[derive(Debug, Clone)]
struct LocalProgram {
    path: PathBuf,
    id: String,
}

/// Finds or sets up the worker agent for `conn` (when `wanted`); the
/// connection then carries the forward's path. Never fails: without an
/// agent, builds take the login-shell path.
pub async fn attach(conn: &mut Connection, wanted: bool) {
    if !wanted {
        return;
    }
    let Some(program) = local_program() else {
        tracing::debug!(
            worker = conn.worker_id(),
            reason = "no rch-agent program next to rch here",
            "no worker agent; builds start a login shell"
        );
        return;
    };
    let forward = forward_path(conn, &program);
    let refused = refused_mark(conn, &program);
    if refused.exists() {
        return;
    }
    if forward.exists() {
        conn.set_agent_forward(Some(forward));
        return;
    }
    let Ok(_lock) = ssh::lock(&conn.master_dir().join("agent.lock"), conn.worker_id()).await else {
        return;
    };
    if forward.exists() {
        conn.set_agent_forward(Some(forward));
        return;
    }
    if refused.exists() {
        return;
    }
    let set_up = async {
        let socket = start(conn, &program).await?;
        request_forward(conn, &forward, &socket).await
    };
    match tokio::time::timeout(SETUP_WITHIN, set_up).await {
        Ok(Ok(())) => {
            tracing::debug!(worker = conn.worker_id(), forward = %forward.display(), "worker agent attached");
            conn.set_agent_forward(Some(forward));
        }
        Ok(Err(why)) => refuse(conn, &refused, &why),
        Err(_) => refuse(conn, &refused, "setting up took too long"),
    }
}

/// How often one master may start its agent again. A worker whose agent
/// keeps going away (a login manager that ends what a session started)
/// would otherwise cost each build one more shell than no agent at all.
const RESTARTS_PER_MASTER: u32 = 3;

/// Starts the agent again after it stopped answering (it exits when idle
/// for long, the worker restarted, its login files changed); the forward
/// stays, pointing at the same socket. Returns whether it answers now.
pub async fn restart(conn: &Connection) -> bool {
    let Some(program) = local_program() else {
        return false;
    };
    let expected = forward_path(conn, &program);
    if conn.agent_forward() != Some(expected.as_path()) {
        return false;
    }
    let count = conn
        .master_dir()
        .join(format!("agent-{}.restarts", program.id));
    let restarts: u32 = std::fs::read_to_string(&count)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    if restarts >= RESTARTS_PER_MASTER {
        refuse(
            conn,
            &refused_mark(conn, &program),
            "the agent keeps going away",
        );
        return false;
    }
    let _ = std::fs::write(&count, format!("{}\n", restarts + 1));
    let started = tokio::time::timeout(SETUP_WITHIN, start(conn, &program)).await;
    matches!(started, Ok(Ok(_)))
}

/// Remembers for the master's lifetime that this worker runs no agent.
fn refuse(conn: &Connection, mark: &Path, why: &str) {
    tracing::debug!(
        worker = conn.worker_id(),
        reason = why,
        "no worker agent; builds start a login shell"
    );
    let _ = std::fs::write(mark, format!("{why}\n"));
}

fn forward_path(conn: &Connection, program: &LocalProgram) -> PathBuf {
    conn.master_dir().join(format!("agent-{}", program.id))
}

fn refused_mark(conn: &Connection, program: &LocalProgram) -> PathBuf {
    conn.master_dir().join(format!("agent-{}.none", program.id))
}

/// Runs the start script, installing the program when the worker asks for
/// it; returns the agent's socket on the worker.
async fn start(conn: &Connection, program: &LocalProgram) -> Result<String, String> {
    match run_start_script(conn, program, None).await?.as_str() {
        "upload" => {
            let bytes = tokio::fs::read(&program.path)
                .await
                .map_err(|e| format!("{}: {e}", program.path.display()))?;
            tracing::debug!(
                worker = conn.worker_id(),
                bytes = bytes.len(),
                "installing the worker agent"
            );
            let answer = run_start_script(conn, program, Some(&bytes)).await?;
            ready_socket(&answer)
        }
        answer => ready_socket(answer),
    }
}

fn ready_socket(answer: &str) -> Result<String, String> {
    match answer.split_once(' ') {
        Some(("ready", socket)) if socket.starts_with('/') => Ok(socket.to_string()),
        _ if answer == "unsupported" => Err("the worker runs another system".to_string()),
        Some(("failed", why)) => Err(why.to_string()),
        _ => Err(format!("unexpected answer {answer:?}")),
    }
}

/// The last line the start script printed.
async fn run_start_script(
    conn: &Connection,
    program: &LocalProgram,
    install: Option<&[u8]>,
) -> Result<String, String> {
    let (here_a, here_b) = this_system();
    let flag = if install.is_some() { "1" } else { "" };
    let command = login_shell_command(START_SCRIPT, &[&program.id, &here_a, &here_b, flag]);
    let mut child = conn
        .command(&command)
        .spawn()
        .map_err(|e| format!("cannot run ssh: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        if let Some(bytes) = install {
            stdin
                .write_all(bytes)
                .await
                .map_err(|e| format!("sending the agent: {e}"))?;
        }
        drop(stdin);
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| format!("ssh: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().last().unwrap_or_default().trim().to_string())
}

/// `uname -s` and `uname -m` as a worker running this machine's program
/// answers them (two spellings where systems differ on the machine name).
fn this_system() -> (String, String) {
    let os = match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "freebsd" => "FreeBSD",
        other => other,
    };
    let arch = std::env::consts::ARCH;
    let alt = match arch {
        "aarch64" => "arm64",
        "x86_64" => "amd64",
        other => other,
    };
    (format!("{os} {arch}"), format!("{os} {alt}"))
}

/// Asks the master to listen on `forward` here and connect each connection
/// to the agent's `socket` there. `ssh -O forward` asks the running master
/// itself; openssh's own port forwarding starts a mux client that stays
/// behind for each forward.
async fn request_forward(conn: &Connection, forward: &Path, socket: &str) -> Result<(), String> {
    let mut spec = forward.as_os_str().to_owned();
    spec.push(":");
    spec.push(socket);
    let output = tokio::process::Command::new("ssh")
        .arg("-S")
        .arg(conn.control_path())
        .args([
            "-o",
            "ControlMaster=no",
            "-o",
            "BatchMode=yes",
            "-O",
            "forward",
            "-L",
        ])
        .arg(spec)
        .arg(ssh::MUX_HOST)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run ssh: {e}"))?;
    if output.status.success() && forward.exists() {
        Ok(())
    } else {
        Err(format!(
            "the master would not forward the agent's socket: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The `rch-agent` program next to the running `rch`, with its version id
/// (a hash of its bytes, cached by its size and time in the runtime dir).
fn local_program() -> Option<LocalProgram> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.join(PROGRAM);
    let meta = std::fs::metadata(&path).ok()?;
    let stamp = format!(
        "{} {} {} {}",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000
    );
    let cache = crate::paths::runtime_dir().join("agent-id");
    if let Some(id) = std::fs::read_to_string(&cache)
        .ok()
        .and_then(|text| {
            text.strip_prefix(&format!("{stamp} "))
                .map(|id| id.trim().to_string())
        })
        .filter(|id| !id.is_empty())
    {
        return Some(LocalProgram { path, id });
    }
    let bytes = std::fs::read(&path).ok()?;
    let digest = Sha256::digest(&bytes);
    let id: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let _ = std::fs::write(&cache, format!("{stamp} {id}\n"));
    Some(LocalProgram { path, id })
}

/// An open command on the agent: frames come on `frames`, the command's
/// stdin goes to `stdin`.
pub(crate) struct Opened {
    pub frames: BufReader<OwnedReadHalf>,
    pub stdin: NoSigPipe,
}

/// The write side of an agent connection, written with `MSG_NOSIGNAL`: a
/// connection the other side closed is an error to handle, never a SIGPIPE
/// (`rch exec` keeps SIGPIPE's default so `rch exec … | head` ends as the
/// local command would).
pub(crate) struct NoSigPipe(OwnedWriteHalf);

impl tokio::io::AsyncWrite for NoSigPipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::os::fd::AsRawFd;
        use std::task::{ready, Poll};
        let stream: &UnixStream = self.0.as_ref();
        loop {
            ready!(stream.poll_write_ready(cx))?;
            let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
                nix::sys::socket::send(
                    stream.as_raw_fd(),
                    buf,
                    nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                )
                .map_err(std::io::Error::from)
            });
            match sent {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Why a command did not start on the agent (nothing of it ran).
#[derive(Debug)]
pub(crate) struct NotStarted(pub String);

/// Connects to the agent, sends `request` and `early` (bytes the command
/// reads first, which may be sent again elsewhere if it does not start),
/// and waits for `Started`.
pub(crate) async fn open(
    forward: &Path,
    request: &Request,
    early: &[u8],
) -> Result<Opened, NotStarted> {
    let stream = UnixStream::connect(forward)
        .await
        .map_err(|e| NotStarted(format!("cannot reach the agent's forward: {e}")))?;
    let (read, stdin) = stream.into_split();
    let mut stdin = NoSigPipe(stdin);
    let mut message = request.encode();
    message.extend_from_slice(early);
    // A failed write shows as the missing `Started` below.
    let _ = stdin.write_all(&message).await;
    let mut frames = BufReader::with_capacity(64 * 1024, read);
    match read_frame(&mut frames).await {
        Ok(Some(Frame::Started)) => Ok(Opened { frames, stdin }),
        Ok(Some(Frame::Refused(why))) => Err(NotStarted(why)),
        Ok(other) => Err(NotStarted(format!("the agent answered {other:?}"))),
        Err(e) => Err(NotStarted(format!("reading the agent: {e}"))),
    }
}

/// One frame; `Ok(None)` when the stream ends between frames.
pub(crate) async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; Frame::HEADER_LEN];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (kind, len) = Frame::parse_header(head)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Frame::decode(kind, body).map(Some)
}

/// rsync's `-e` through the agent: `rch-agent pipe`, which falls back to
/// ssh over the master when the agent does not answer.
pub(crate) fn rsync_shell(conn: &Connection) -> Option<String> {
    let forward = conn.agent_forward()?;
    let program = std::env::current_exe().ok()?.parent()?.join(PROGRAM);
    let words = [
        program.to_string_lossy().into_owned(),
        "pipe".to_string(),
        forward.to_string_lossy().into_owned(),
        conn.control_path().to_string_lossy().into_owned(),
    ];
    Some(
        words
            .iter()
            .map(|w| super::shell::quote(w).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_answer_names_the_socket_or_why_not() {
        assert_eq!(
            ready_socket("ready /h/.cache/rch/agent/ab.sock").unwrap(),
            "/h/.cache/rch/agent/ab.sock"
        );
        assert!(ready_socket("unsupported")
            .unwrap_err()
            .contains("another system"));
        assert_eq!(
            ready_socket("failed cannot install").unwrap_err(),
            "cannot install"
        );
        assert!(ready_socket("ready relative").is_err());
        assert!(ready_socket("").is_err());
    }
}
