//! `rch-agent start`: make sure this version's agent serves this account,
//! and print its socket's path (`ready <path>`).
//!
//! One agent per account and version: its socket and lock are named by the
//! version id in the program's own name (`rch-agent-<id>`, as rch installs
//! it). A lock held by a serving agent tells a second `start` to use that
//! one. The agent runs detached from the ssh session that started it, in a
//! process group of its own, with no terminal and null stdio.

use std::ffi::OsString;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Unix socket paths hold at most 108 bytes; keep a margin.
const MAX_SOCKET_PATH: usize = 100;
/// How long `start` waits for a new agent to listen.
const READY_WITHIN: Duration = Duration::from_secs(5);

pub fn main(_args: &[OsString]) -> i32 {
    match start() {
        Ok(socket) => {
            println!("ready {}", socket.display());
            0
        }
        Err(why) => {
            println!("failed {why}");
            1
        }
    }
}

fn start() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or("HOME is not set")?;
    let socket = socket_path(&home, &version_id(&exe))?;
    if answers(&socket) {
        return Ok(socket);
    }
    if lock_for(&socket).is_some() {
        // Nobody serves: start the agent (it takes the lock itself; a
        // racing `start` that also spawned one sees its twin exit at once).
        Command::new(&exe)
            .arg("serve")
            .arg(&socket)
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the agent: {e}"))?;
    }
    let deadline = Instant::now() + READY_WITHIN;
    while Instant::now() < deadline {
        if answers(&socket) {
            return Ok(socket);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(format!("the agent did not listen on {}", socket.display()))
}

/// The id in the program's name `rch-agent-<id>`; `dev` for any other name.
fn version_id(exe: &Path) -> String {
    exe.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("rch-agent-"))
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or("dev")
        .to_string()
}

/// `~/.cache/rch/agent/<id>.sock`, or under a private directory in /tmp
/// when the home is too deep for a socket path.
fn socket_path(home: &Path, id: &str) -> Result<PathBuf, String> {
    let dir = home.join(".cache/rch/agent");
    let name = format!("{id}.sock");
    if dir.as_os_str().len() + 1 + name.len() <= MAX_SOCKET_PATH {
        private_dir(&dir)?;
        return Ok(dir.join(name));
    }
    let uid = fs::metadata(home)
        .map_err(|e| format!("{}: {e}", home.display()))?
        .uid();
    let dir = PathBuf::from(format!("/tmp/rch-agent-{uid}"));
    private_dir(&dir)?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    home.hash(&mut hasher);
    Ok(dir.join(format!("{:08x}-{name}", hasher.finish() as u32)))
}

/// A directory only this account can enter: made 0700, and refused when
/// it belongs to someone else (a socket there could be anyone's).
fn private_dir(dir: &Path) -> Result<(), String> {
    let _ = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    let meta = fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let me = fs::metadata(std::env::var_os("HOME").unwrap_or_default())
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if !meta.is_dir() || meta.uid() != me {
        return Err(format!("{} is not this account's directory", dir.display()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

fn answers(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// The serving agent's lock on `<socket>.lock`; `None` while another holds it.
pub fn lock_for(socket: &Path) -> Option<File> {
    let mut path = socket.as_os_str().to_owned();
    path.push(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(path))
        .ok()?;
    file.try_lock().ok()?;
    Some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_installed_name() {
        assert_eq!(
            version_id(Path::new("/h/.cache/rch/agent/rch-agent-0a1b2c")),
            "0a1b2c"
        );
        assert_eq!(version_id(Path::new("/x/target/debug/rch-agent")), "dev");
        assert_eq!(version_id(Path::new("/x/rch-agent-../y")), "dev");
    }

    #[test]
    fn a_deep_home_puts_the_socket_in_a_private_tmp_dir() {
        let shallow = tempfile::tempdir().unwrap();
        let path = socket_path(shallow.path(), "abc").unwrap();
        assert!(path.starts_with(shallow.path().join(".cache/rch/agent")));
        let deep = shallow.path().join("d".repeat(90));
        fs::create_dir_all(&deep).unwrap();
        let path = socket_path(&deep, "abc").unwrap();
        assert!(
            path.to_string_lossy().starts_with("/tmp/rch-agent-"),
            "{}",
            path.display()
        );
        assert!(path.as_os_str().len() <= MAX_SOCKET_PATH);
    }
}
