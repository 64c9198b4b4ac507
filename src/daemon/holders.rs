//! The client processes that hold leases: who they are (the pid the kernel
//! reports for the connection, with that process's start time, so a reused
//! pid is never taken for it), whether they still run, and waiting for
//! their end. A restarted daemon keeps a saved lease while its holder runs
//! and gives the slot back when it ends.

use crate::state::store::Holder;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

/// How often a holder is looked at when the kernel cannot tell us of its end.
const POLL: Duration = Duration::from_secs(1);

/// The process `pid` as a holder, if it runs.
pub fn identify(pid: u32) -> Option<Holder> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(Holder {
        pid,
        start: start_time(&stat)?,
    })
}

/// Whether `holder` still runs (the same process, not a reuse of its pid).
pub fn alive(holder: &Holder) -> bool {
    identify(holder.pid).as_ref() == Some(holder)
}

/// Resolves when `holder` has ended: at once through a pidfd the kernel
/// marks readable at the process's end; else by looking every second.
pub async fn ended(holder: Holder) {
    if let Some(pidfd) = pidfd(holder.pid) {
        // Opened on the pid: make sure it still names the holder.
        if !alive(&holder) {
            return;
        }
        use tokio::io::{unix::AsyncFd, Interest};
        // SAFETY: the OwnedFd moves into the AsyncFd, which alone keeps it
        // open (and as the same descriptor) for its whole life.
        let registered = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) };
        if let Ok(fd) = registered {
            let _ = fd.readable().await;
            return;
        }
    }
    while alive(&holder) {
        tokio::time::sleep(POLL).await;
    }
}

/// A pidfd for `pid` (Linux 5.3 and later).
fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the fd was just returned to us and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Field 22 of `/proc/<pid>/stat`: the start time. The second field (the
/// command name, in parentheses) may hold spaces and parentheses itself, so
/// fields are counted after its last `)`.
fn start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_found_after_an_odd_command_name() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(start_time(stat), Some(98765));
        assert_eq!(start_time("42 (x"), None);
    }

    #[tokio::test]
    async fn this_process_is_alive_and_a_finished_child_has_ended() {
        let me = identify(std::process::id()).unwrap();
        assert!(alive(&me));
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let holder = identify(child.id()).unwrap();
        let waited = std::thread::spawn(move || child.wait());
        tokio::time::timeout(Duration::from_secs(10), ended(holder))
            .await
            .unwrap();
        waited.join().unwrap().unwrap();
    }
}
