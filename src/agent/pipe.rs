//! `rch-agent pipe <forward> <control> <host> <command words>...`: rsync's
//! remote shell (`-e`) on the client when the worker runs an agent.
//!
//! rsync calls its remote shell as it would call ssh: a host, then the words
//! of the remote command, which ssh would join with spaces for the remote
//! shell to parse. Here the agent runs those words with `sh -c` instead,
//! reached through the master's forwarded socket, so the transfer starts no
//! login shell. When the agent does not answer (it exited, or the forward is
//! gone), the words go to ssh over the master as before: a transfer never
//! fails because the shortcut was missing.

use super::wire::{Frame, Request};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Exit code when the link to the agent broke mid-command, as ssh's.
const LINK_LOST: i32 = 255;

pub fn main(args: &[OsString]) -> i32 {
    let [forward, control, host, words @ ..] = args else {
        eprintln!("rch-agent pipe: expected <forward> <control> <host> <command>...");
        return 2;
    };
    let joined = join_words(words);
    match UnixStream::connect(forward).map(|s| open(s, &joined)) {
        Ok(Ok(stream)) => relay(stream),
        _ => fall_back_to_ssh(control, host, words),
    }
}

/// ssh's way of making one remote command of several words.
fn join_words(words: &[OsString]) -> Vec<u8> {
    let mut joined = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            joined.push(b' ');
        }
        joined.extend_from_slice(word.as_bytes());
    }
    joined
}

/// Sends the request and waits for `Started`: before it nothing of our
/// stdin has been read, so falling back to ssh loses nothing.
fn open(mut stream: UnixStream, command: &[u8]) -> io::Result<UnixStream> {
    let request = Request {
        argv: vec![b"sh".to_vec(), b"-c".to_vec(), command.to_vec()],
    };
    stream.write_all(&request.encode())?;
    match Frame::read_from(&mut stream)? {
        Some(Frame::Started) => Ok(stream),
        other => Err(io::Error::other(format!("agent answered {other:?}"))),
    }
}

/// Our stdin goes to the command; its frames come out on our stdout and
/// stderr; its exit code becomes ours.
fn relay(stream: UnixStream) -> i32 {
    // rsync hands its remote shell non-blocking ends; these copies are ours
    // alone, and blocking reads and writes are what the relay expects.
    set_blocking(0);
    set_blocking(1);
    let Ok(mut to_agent) = stream.try_clone() else {
        return LINK_LOST;
    };
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_agent.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = to_agent.shutdown(Shutdown::Write);
    });
    let mut from_agent = io::BufReader::with_capacity(64 * 1024, stream);
    let (mut out, mut err) = (io::stdout().lock(), io::stderr().lock());
    loop {
        match Frame::read_from(&mut from_agent) {
            Ok(Some(Frame::Stdout(b))) => {
                if out.write_all(&b).and_then(|()| out.flush()).is_err() {
                    return LINK_LOST;
                }
            }
            Ok(Some(Frame::Stderr(b))) => {
                let _ = err.write_all(&b);
            }
            Ok(Some(Frame::Exit(code))) => return code,
            Ok(Some(Frame::Started | Frame::Refused(_))) => {}
            Ok(None) | Err(_) => {
                let _ = writeln!(err, "rch-agent: the link to the worker agent was lost");
                return LINK_LOST;
            }
        }
    }
}

/// Clears `O_NONBLOCK` on one of our standard descriptors.
fn set_blocking(fd: i32) {
    // SAFETY: fcntl on a descriptor number only reads and sets its flags;
    // a descriptor that is not open makes it fail, which changes nothing.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 && flags & libc::O_NONBLOCK != 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// Runs the words through ssh over the master, as rsync would have.
fn fall_back_to_ssh(control: &OsString, host: &OsString, words: &[OsString]) -> i32 {
    let e = Command::new("ssh")
        .arg("-S")
        .arg(control)
        .args(["-o", "ControlMaster=no", "-o", "BatchMode=yes"])
        .arg(host)
        .args(words)
        .exec();
    eprintln!("rch-agent: cannot run ssh: {e}");
    LINK_LOST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_join_as_ssh_joins_them() {
        let words: Vec<OsString> = ["rsync", "--server", "-e.Lsfx", ".", "a\\ b/"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(join_words(&words), b"rsync --server -e.Lsfx . a\\ b/");
    }
}
