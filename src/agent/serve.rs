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
    let Some(_lock) = super::start::lock_for(&socket) else {
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
    serve(listener, &socket, IDLE);
    0
}

/// Accepts until `idle` passes with no connection open, then removes the
/// socket (when it is still this agent's) and returns.
pub fn serve(listener: UnixListener, socket: &Path, idle: Duration) {
    let inode = std::fs::metadata(socket).map(|m| m.ino()).ok();
    let activity = Arc::new(Activity::default());
    activity.touch();
    spawn_idle_watch(Arc::clone(&activity), socket.to_path_buf(), inode, idle);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let activity = Arc::clone(&activity);
        activity.open.fetch_add(1, Ordering::SeqCst);
        activity.touch();
        std::thread::spawn(move || {
            handle(stream);
            activity.touch();
            activity.open.fetch_sub(1, Ordering::SeqCst);
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
/// gone or replaced (the account's cache was cleared, a newer agent took
/// the name): nobody can reach it any more. The socket is removed only if
/// it is still the one this agent bound.
fn spawn_idle_watch(activity: Arc<Activity>, socket: PathBuf, inode: Option<u64>, idle: Duration) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(2).min(idle));
        let Some(idle_for) = activity.idle_for() else {
            continue;
        };
        let ours = std::fs::metadata(&socket).map(|m| m.ino()).ok() == inode;
        if idle_for >= idle || !ours {
            if ours {
                let _ = std::fs::remove_file(&socket);
            }
            std::process::exit(0);
        }
    });
}

/// One connection: read the request, run the command, send its output and
/// exit code. Writes that fail (the client left) are dropped, but the
/// command's output is still drained so it never blocks on a full pipe.
fn handle(mut stream: UnixStream) {
    let request = match Request::read_from(&mut stream) {
        Ok(r) => r,
        Err(RequestError::Io(_)) => return,
        Err(e) => {
            let _ = Frame::Refused(e.to_string()).write_to(&mut stream);
            return;
        }
    };
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
        .envs(
            request
                .env
                .into_iter()
                .map(|(k, v)| (OsString::from_vec(k), OsString::from_vec(v))),
        )
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
