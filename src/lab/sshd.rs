//! One lab worker's sshd: finding the binary, its config, starting it and
//! waiting until it speaks SSH.
//!
//! The sshd runs as the current user on a high port of 127.0.0.1 with its own
//! host key, authorized_keys and pid file, so no root is needed. It is started
//! without `-D`: it daemonizes, writes its pid file and outlives the process
//! that started it.

use super::isolate::Isolation;
use anyhow::{bail, Context};
use std::collections::BTreeSet;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a started sshd may take to answer with its banner.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// The files of one worker's sshd.
pub struct SshdFiles<'a> {
    pub config: &'a Path,
    /// The login home of the worker's sessions (see [`write_home`]).
    pub home: &'a Path,
    pub host_key: &'a Path,
    pub authorized_keys: &'a Path,
    pub pid_file: &'a Path,
    pub log: &'a Path,
}

/// The port was taken by someone else between choosing it and sshd binding it.
#[derive(Debug, thiserror::Error)]
#[error("port {0} is already in use")]
pub struct PortTaken(pub u16);

const INSTALL_HINT: &str = "install OpenSSH: `sudo apt-get install openssh-server rsync` \
     (Fedora: `sudo dnf install openssh-server rsync`, macOS: `brew install openssh rsync`)";

/// Locate an OpenSSH program on PATH or in the sbin directories (sshd often
/// lives outside a normal user's PATH).
pub fn find_program(name: &str) -> anyhow::Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let sbin_dirs = [
        "/usr/sbin",
        "/usr/local/sbin",
        "/sbin",
        "/opt/homebrew/sbin",
    ];
    path_dirs
        .into_iter()
        .chain(sbin_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        // sshd refuses to re-exec itself unless started by an absolute path.
        .find(|candidate| candidate.is_absolute() && candidate.is_file())
        .with_context(|| format!("`{name}` not found; {INSTALL_HINT}"))
}

/// Quote a path for sshd_config / ssh_config, which split words on blanks and
/// honour double quotes with backslash escapes.
pub fn quote_config_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// Like [`quote_config_path`] for options that also expand `%` tokens.
pub fn quote_token_path(path: &Path) -> String {
    quote_config_path(Path::new(&path.to_string_lossy().replace('%', "%%")))
}

fn render_config(port: u16, files: &SshdFiles, penalties_option: bool) -> String {
    let mut text = format!(
        "# rch lab worker: a throwaway sshd, stopped by `rch lab down`\n\
         Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {host_key}\n\
         PidFile {pid_file}\n\
         AuthorizedKeysFile {authorized_keys}\n\
         UsePAM no\n\
         StrictModes no\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         UseDNS no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         X11Forwarding no\n\
         LoginGraceTime 30\n\
         MaxStartups 100\n\
         MaxSessions 64\n\
         # Local workers gain nothing from a post-quantum key exchange; the\n\
         # classic one keeps each login (and so each test) fast.\n\
         KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org\n\
         # A home of the lab's own: the login shell reads its .profile, not the\n\
         # user's shell start-up files (which may be slow or print).\n\
         SetEnv HOME={home}\n",
        host_key = quote_config_path(files.host_key),
        pid_file = quote_config_path(files.pid_file),
        authorized_keys = quote_token_path(files.authorized_keys),
        home = quote_config_path(files.home),
    );
    if penalties_option {
        // Newer sshd shuts out a source address after failed logins; every lab
        // connection comes from 127.0.0.1 and the lab fails logins on purpose.
        text.push_str("PerSourcePenalties no\n");
    }
    text
}

/// Create a worker's login home: a `.profile` that puts this machine's Rust
/// toolchain (rustup and cargo homes of the current user) on PATH, so builds
/// on the worker find `cargo` the way a real worker's login shell would.
pub fn write_home(home: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(home)?;
    let user_home = directories::BaseDirs::new()
        .map(|b| b.home_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("/"));
    let env_dir = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| user_home.join(default))
    };
    let cargo_home = env_dir("CARGO_HOME", ".cargo");
    let rustup_home = env_dir("RUSTUP_HOME", ".rustup");
    let profile = format!(
        "# rch lab worker login profile\n\
         export CARGO_HOME={cargo}\n\
         export RUSTUP_HOME={rustup}\n\
         export PATH=\"$CARGO_HOME/bin:$PATH\"\n",
        cargo = shell_escape::escape(cargo_home.to_string_lossy()),
        rustup = shell_escape::escape(rustup_home.to_string_lossy()),
    );
    std::fs::write(home.join(".profile"), profile)
        .with_context(|| format!("writing {}", home.join(".profile").display()))?;
    Ok(())
}

/// Write the worker's sshd_config and check it with `sshd -t`, creating the
/// privilege separation directory a root sshd asks for.
pub fn write_config(sshd: &Path, port: u16, files: &SshdFiles) -> anyhow::Result<()> {
    let mut penalties_option = true;
    let mut created_privsep_dir = false;
    loop {
        std::fs::write(files.config, render_config(port, files, penalties_option))
            .with_context(|| format!("writing {}", files.config.display()))?;
        let check = Command::new(sshd)
            .arg("-t")
            .arg("-f")
            .arg(files.config)
            .output()
            .with_context(|| format!("running {}", sshd.display()))?;
        if check.status.success() {
            return Ok(());
        }
        let complaint = String::from_utf8_lossy(&check.stderr).into_owned();
        if penalties_option && complaint.contains("PerSourcePenalties") {
            penalties_option = false;
        } else if let (Some(dir), false) = (missing_privsep_dir(&complaint), created_privsep_dir) {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating sshd's directory {}", dir.display()))?;
            created_privsep_dir = true;
        } else {
            bail!(
                "sshd rejected {}: {}",
                files.config.display(),
                complaint.trim()
            );
        }
    }
}

fn missing_privsep_dir(complaint: &str) -> Option<PathBuf> {
    let (_, rest) = complaint.split_once("Missing privilege separation directory:")?;
    let dir = rest.lines().next()?.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The pid in the worker's pid file, if that process still runs.
pub fn listener_pid(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    super::procs::is_alive(pid).then_some(pid)
}

/// Start the sshd (it daemonizes), confined by `isolation`, and wait until
/// it answers with a banner. Returns the listener's pid.
pub fn start(
    sshd: &Path,
    port: u16,
    files: &SshdFiles,
    isolation: &Isolation,
) -> anyhow::Result<i32> {
    let _ = std::fs::remove_file(files.pid_file);
    let log_start = std::fs::metadata(files.log).map(|m| m.len()).unwrap_or(0);
    let (mut command, _) = isolation.wrap(sshd);
    let status = command
        .arg("-f")
        .arg(files.config)
        .arg("-E")
        .arg(files.log)
        .status()
        .with_context(|| format!("starting {}", sshd.display()))?;
    if !status.success() {
        bail!(
            "sshd failed ({status}): {}",
            log_since(files.log, log_start)
        );
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let log = log_since(files.log, log_start);
        if log.contains("Bind to port") || log.contains("Cannot bind any address") {
            return Err(PortTaken(port).into());
        }
        if let Some(pid) = listener_pid(files.pid_file) {
            if answers_banner(port, Duration::from_millis(500)) {
                return Ok(pid);
            }
        }
        if Instant::now() >= deadline {
            bail!("sshd on port {port} did not answer within {READY_TIMEOUT:?}: {log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_since(log: &Path, offset: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let start = (offset as usize).min(text.len());
    String::from_utf8_lossy(&text[start..]).trim().to_string()
}

fn lab_address(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether something on the port sends an SSH banner within `timeout`.
pub fn answers_banner(port: u16, timeout: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&lab_address(port), timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut start = [0u8; 4];
    stream.read_exact(&mut start).is_ok() && &start == b"SSH-"
}

/// Whether anything accepts connections on the port.
pub fn port_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&lab_address(port), Duration::from_millis(300)).is_ok()
}

/// A port of 127.0.0.1 that is free now and not in `taken`.
pub fn free_port(taken: &BTreeSet<u16>) -> anyhow::Result<u16> {
    for _ in 0..50 {
        let listener = TcpListener::bind(lab_address(0)).context("finding a free port")?;
        let port = listener.local_addr()?.port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    bail!("no free port found on 127.0.0.1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_blanks_quotes_and_tokens() {
        assert_eq!(quote_config_path(Path::new("/a b/c")), "\"/a b/c\"");
        assert_eq!(quote_config_path(Path::new("/a\"b")), "\"/a\\\"b\"");
        assert_eq!(quote_token_path(Path::new("/100%/k")), "\"/100%%/k\"");
    }

    #[test]
    fn reads_the_privsep_complaint() {
        let msg = "Missing privilege separation directory: /run/sshd\n";
        assert_eq!(missing_privsep_dir(msg), Some(PathBuf::from("/run/sshd")));
        assert_eq!(missing_privsep_dir("other"), None);
    }
}
