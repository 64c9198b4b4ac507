//! The processes of a lab worker, found through `/proc`.
//!
//! A worker's processes are its sshd listener, the per-connection sshd
//! processes it forks, and everything those run. Processes whose connection
//! died are reparented away from the listener, so they are also recognised by
//! the `SSH_CONNECTION` variable sshd gave them, which names the worker's port.
//! (Not by working directory: a user's own shell may sit in a worker's
//! directory, and the lab must never kill it.)

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::{BTreeSet, HashMap};
use std::fs;

/// One line of `/proc/PID/stat`, the fields the lab needs.
struct Stat {
    state: char,
    ppid: i32,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or ')'.
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid })
}

fn all_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Whether `pid` runs (a zombie counts as gone: it holds no sockets).
pub fn is_alive(pid: i32) -> bool {
    matches!(read_stat(pid), Some(s) if s.state != 'Z' && s.state != 'X')
}

/// Whether `pid` is stopped by a signal (SIGSTOP).
pub fn is_stopped(pid: i32) -> bool {
    matches!(read_stat(pid), Some(s) if s.state == 'T')
}

/// The short command name of `pid` (`sshd`, `sshd-session`, `bash`, ...).
pub fn command_name(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Whether `pid` is one of sshd's own processes (listener or per-connection).
pub fn is_sshd(pid: i32) -> bool {
    command_name(pid).is_some_and(|name| name.starts_with("sshd"))
}

/// Whether `pid` is a worker agent serving (`rch-agent-<id> serve`): kept
/// running between builds on purpose, as a shared master is.
pub fn is_worker_agent(pid: i32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|&b| b == 0);
    let program = args.next().unwrap_or_default();
    let name = program.rsplit(|&b| b == b'/').next().unwrap_or_default();
    name.starts_with(b"rch-agent") && args.next() == Some(&b"serve"[..])
}

/// All living descendants of `root`, nearest first.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for pid in all_pids() {
        if let Some(stat) = read_stat(pid) {
            if stat.state != 'Z' {
                children.entry(stat.ppid).or_default().push(pid);
            }
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for &child in children.get(&parent).into_iter().flatten() {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

/// Whether sshd started `pid` for a connection to `port` on 127.0.0.1.
fn came_from_port(pid: i32, port: u16) -> bool {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted = format!(" 127.0.0.1 {port}");
    environ.split(|&b| b == 0).any(|var| {
        var.strip_prefix(b"SSH_CONNECTION=")
            .is_some_and(|value| value.ends_with(wanted.as_bytes()))
    })
}

/// Processes a worker's sessions started, whoever their parent is now.
pub fn strays(port: u16) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me && is_alive(pid) && came_from_port(pid, port))
        .collect()
}

/// Send `signal` to every pid; ones already gone are skipped.
pub fn signal_all(pids: &[i32], signal: Signal) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// The union of several pid lists, sorted and without repeats.
pub fn union(lists: &[&[i32]]) -> Vec<i32> {
    let set: BTreeSet<i32> = lists.iter().flat_map(|l| l.iter().copied()).collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_child_and_its_state() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let me = std::process::id() as i32;
        assert!(descendants(me).contains(&pid));
        assert!(is_alive(pid));
        assert_eq!(command_name(pid).as_deref(), Some("sleep"));
        signal_all(&[pid], Signal::SIGSTOP);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !is_stopped(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(is_stopped(pid));
        signal_all(&[pid], Signal::SIGKILL);
        child.wait().unwrap();
        assert!(!is_alive(pid));
    }

    #[test]
    fn union_sorts_and_dedups() {
        assert_eq!(union(&[&[3, 1], &[1, 2]]), vec![1, 2, 3]);
    }
}
