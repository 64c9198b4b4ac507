//! The systemd user unit for the daemon (`rch daemon install-service`):
//! write it with the path of this binary, then enable and start it, or say
//! how to when systemd is not there.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unit shipped in `config/rch.service`; its `ExecStart` is rewritten.
const TEMPLATE: &str = include_str!("../config/rch.service");
/// The unit's name for `systemctl --user`.
pub const UNIT_NAME: &str = "rch.service";

/// The unit text with `ExecStart` running `exe daemon run`.
pub fn unit_text(exe: &Path) -> String {
    let exec = format!(
        "ExecStart={} daemon run",
        systemd_quote(&exe.to_string_lossy())
    );
    TEMPLATE
        .lines()
        .map(|line| {
            if line.starts_with("ExecStart=") {
                exec.as_str()
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// systemd splits `ExecStart` on spaces; a path with blanks or quotes is quoted.
fn systemd_quote(path: &str) -> String {
    if path
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        format!("\"{}\"", path.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        path.to_string()
    }
}

/// `$XDG_CONFIG_HOME/systemd/user/rch.service`.
pub fn unit_path() -> PathBuf {
    let config = directories::BaseDirs::new()
        .map(|b| b.config_dir().to_path_buf())
        .unwrap_or_else(|| crate::paths::expand_tilde("~/.config"));
    config.join("systemd/user").join(UNIT_NAME)
}

/// Write the unit file (creating its directory); returns its path.
pub fn write_unit(path: &Path, exe: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, unit_text(exe)).with_context(|| format!("writing {}", path.display()))
}

/// Is a systemd user manager there to talk to?
fn systemd_user_available() -> bool {
    Command::new("systemctl")
        .args(["--user", "show-environment"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .status()
        .with_context(|| format!("running systemctl --user {}", args.join(" ")))?;
    anyhow::ensure!(
        status.success(),
        "systemctl --user {} failed ({status})",
        args.join(" ")
    );
    Ok(())
}

/// `rch daemon install-service`: write the unit, then enable and start it
/// (only enable when a daemon already runs outside systemd). Without systemd,
/// print the unit and the commands instead.
pub fn install_service() -> anyhow::Result<i32> {
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("locating the rch binary")?;
    let path = unit_path();
    write_unit(&path, &exe)?;
    println!("wrote {}", path.display());
    if !systemd_user_available() {
        println!("no systemd user manager here; the unit is:\n");
        print!("{}", unit_text(&exe));
        println!("\nwhere systemd runs, enable it with:");
        println!("  systemctl --user daemon-reload");
        println!("  systemctl --user enable --now {UNIT_NAME}");
        return Ok(0);
    }
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        // The unit passes it on to the daemon, for ssh to find the agent.
        systemctl(&["import-environment", "SSH_AUTH_SOCK"])?;
    }
    systemctl(&["daemon-reload"])?;
    if daemon_running() {
        systemctl(&["enable", UNIT_NAME])?;
        println!(
            "enabled {UNIT_NAME}; a daemon already runs outside systemd, so hand it over with:"
        );
        println!("  rch daemon stop && systemctl --user start {UNIT_NAME}");
    } else {
        systemctl(&["enable", "--now", UNIT_NAME])?;
        println!("enabled and started {UNIT_NAME} (logs: journalctl --user -u rch)");
    }
    Ok(0)
}

/// Whether something answers on the daemon socket.
fn daemon_running() -> bool {
    std::os::unix::net::UnixStream::connect(crate::paths::socket_path()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_runs_this_binary() {
        let text = unit_text(Path::new("/opt/rch/bin/rch"));
        assert!(
            text.contains("\nExecStart=/opt/rch/bin/rch daemon run\n"),
            "{text}"
        );
        assert_eq!(text.matches("ExecStart=").count(), 1);
        assert!(text.contains("[Install]\nWantedBy=default.target"));
    }

    #[test]
    fn paths_with_spaces_are_quoted() {
        let text = unit_text(Path::new("/home/a b/rch"));
        assert!(
            text.contains("ExecStart=\"/home/a b/rch\" daemon run"),
            "{text}"
        );
    }

    #[test]
    fn write_unit_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("systemd/user/rch.service");
        write_unit(&path, Path::new("/usr/local/bin/rch")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/rch daemon run"));
    }
}
