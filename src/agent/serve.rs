//! The agent on the worker: accepts connections on its socket and runs one
//! command for each: what the client sends after the request is the
//! command's stdin, its stdout and stderr go back in frames ([`super::wire`]).
//!
//! The client's end of the connection stays open for the whole command:
//! when the client goes away (killed, timed out, link lost) the command's
//! stdin reaches EOF, which is what rch's run script watches to kill the
//! build's process group — the same signal an ssh channel gives it.
//! The agent exits by itself after [`IDLE`] without a connection.

use super::wire::{Frame, Request, RequestError};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the agent waits without a connection before it exits: longer
/// than an ssh master stays up idle, so a master rarely outlives its agent.
pub const IDLE: Duration = Duration::from_secs(30 * 60);

/// `rch-agent serve <socket>`: listen on `socket` until idle.
pub fn main(args: &[OsString]) -> i32 {
    let Some(socket) = args.first().map(PathBuf::from) else {
        eprintln!("rch-agent serve: which socket?");
        return 2;
    };
    let Some(lock) = super::start::lock_for(&socket) else {
        // Another agent of this version serves this socket already.
        return 0;
    };
    let _ = std::fs::remove_file(&socket);
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rch-agent: cannot listen on {}: {e}", socket.display());
            return 1;
        }
    };
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let agent = Arc::new(Agent {
        inode: std::fs::metadata(&socket).map(|m| m.ino()).ok(),
        socket,
        lock: Mutex::new(Some(lock)),
        login: login_files(&home),
        home,
        activity: Activity::default(),
    });
    serve(listener, agent, IDLE);
    0
}

/// One serving agent: its socket (and which inode it bound), its lock, the
/// login files its environment came from.
struct Agent {
    socket: PathBuf,
    inode: Option<u64>,
    lock: Mutex<Option<std::fs::File>>,
    home: PathBuf,
    login: Vec<Option<(i64, i64, u64)>>,
    activity: Activity,
}

impl Agent {
    fn socket_is_ours(&self) -> bool {
        std::fs::metadata(&self.socket).map(|m| m.ino()).ok() == self.inode
    }

    /// Stops taking connections: the socket goes and the lock is let go,
    /// so the next `start` starts a new agent at once; commands already
    /// running finish, then this process exits (see [`spawn_idle_watch`]).
    fn retire(&self) {
        if self.socket_is_ours() {
            let _ = std::fs::remove_file(&self.socket);
        }
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Whether a login shell started now would read what this agent's did.
    fn login_unchanged(&self) -> bool {
        login_files(&self.home) == self.login
    }
}

/// The files a login shell reads, in the shells rch's workers use: their
/// times and sizes (or absence). The agent carries the environment of the
/// login shell that started it; when one of these changes (a tool's PATH
/// added to `~/.profile`), it makes way for a new agent.
fn login_files(home: &Path) -> Vec<Option<(i64, i64, u64)>> {
    const IN_HOME: &[&str] = &[
        ".profile",
        ".bash_profile",
        ".bash_login",
        ".bashrc",
        ".zshenv",
        ".zprofile",
        ".zlogin",
        ".zshrc",
        ".config/fish/config.fish",
    ];
    const SYSTEM: &[&str] = &[
        "/etc/profile",
        "/etc/profile.d",
        "/etc/environment",
        "/etc/bash.bashrc",
        "/etc/zsh/zshenv",
        "/etc/zshenv",
    ];
    let stamp = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.mtime(), m.mtime_nsec(), m.size()))
    };
    IN_HOME
        .iter()
        .map(|name| stamp(&home.join(name)))
        .chain(SYSTEM.iter().map(|path| stamp(Path::new(path))))
        .collect()
}

/// Accepts until the agent is idle for `idle`, or retired and idle.
fn serve(listener: UnixListener, agent: Arc<Agent>, idle: Duration) {
    agent.activity.touch();
    spawn_idle_watch(Arc::clone(&agent), idle);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let agent = Arc::clone(&agent);
        agent.activity.open.fetch_add(1, Ordering::SeqCst);
        agent.activity.touch();
        std::thread::spawn(move || {
            handle(stream, &agent);
            agent.activity.touch();
            agent.activity.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Open connections and the time of the last one's start or end.
#[derive(Default)]
struct Activity {
    open: AtomicUsize,
    last_secs: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_secs.store(now_secs(), Ordering::SeqCst);
    }

    fn idle_for(&self) -> Option<Duration> {
        (self.open.load(Ordering::SeqCst) == 0).then(|| {
            Duration::from_secs(now_secs().saturating_sub(self.last_secs.load(Ordering::SeqCst)))
        })
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Exits the process once idle long enough, or once idle and its socket is
/// gone or replaced (retired, the account's cache was cleared, a newer
/// agent took the name): nobody can reach it any more.
fn spawn_idle_watch(agent: Arc<Agent>, idle: Duration) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(2).min(idle));
        let Some(idle_for) = agent.activity.idle_for() else {
            continue;
        };
        if idle_for >= idle || !agent.socket_is_ours() {
            agent.retire();
            std::process::exit(0);
        }
    });
}

/// One connection: read the request, run the command, send its output and
/// exit code. Writes that fail (the client left) are dropped, but the
/// command's output is still drained so it never blocks on a full pipe.
fn handle(mut stream: UnixStream, agent: &Agent) {
    let request = match Request::read_from(&mut stream) {
        Ok(r) => r,
        Err(RequestError::Io(_)) => return,
        Err(e) => {
            let _ = Frame::Refused(e.to_string()).write_to(&mut stream);
            return;
        }
    };
    if !agent.login_unchanged() {
        agent.retire();
        let why = "the login environment changed; start a new agent";
        let _ = Frame::Refused(why.to_string()).write_to(&mut stream);
        return;
    }
    let Ok(from_client) = stream.try_clone() else {
        return;
    };
    let mut child = match command(request).spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = Frame::Refused(format!("cannot start the command: {e}")).write_to(&mut stream);
            return;
        }
    };
    if let Some(stdin) = child.stdin.take() {
        std::thread::spawn(move || relay_stdin(from_client, stdin));
    }
    let out = Arc::new(Mutex::new(Some(stream)));
    send(&out, &Frame::Started);
    let stderr = child.stderr.take().map(|pipe| {
        let out = Arc::clone(&out);
        std::thread::spawn(move || forward(pipe, &out, Frame::Stderr))
    });
    if let Some(pipe) = child.stdout.take() {
        forward(pipe, &out, Frame::Stdout);
    }
    if let Some(thread) = stderr {
        let _ = thread.join();
    }
    let code = match child.wait() {
        Ok(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(_) => 255,
    };
    send(&out, &Frame::Exit(code));
}

/// The command's stdin is a pipe fed from the connection, not the
/// connection itself: a command that makes its stdin non-blocking (rsync
/// does) would otherwise make the agent's own writes fail.
fn command(request: Request) -> Command {
    let mut argv = request.argv.into_iter().map(OsString::from_vec);
    let mut cmd = Command::new(argv.next().unwrap_or_default());
    cmd.args(argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The client's bytes after the request, to the command's stdin, until the
/// client closes its side (which the command then reads as EOF) or the
/// command stops reading.
fn relay_stdin(mut from: UnixStream, mut to: impl Write) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Copies one of the command's output pipes into frames until it ends.
fn forward(mut pipe: impl Read, out: &Mutex<Option<UnixStream>>, frame: fn(Vec<u8>) -> Frame) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => send(out, &frame(buf[..n].to_vec())),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Writes a frame while the client is there; after a failed write the
/// stream is dropped and later frames are discarded.
fn send(out: &Mutex<Option<UnixStream>>, frame: &Frame) {
    let mut guard = out.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(stream) = guard.as_mut() {
        if frame
            .write_to(stream)
            .and_then(|()| stream.flush())
            .is_err()
        {
            *guard = None;
        }
    }
}
