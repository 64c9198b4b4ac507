//! Keeping the client's files out of a lab worker's sight.
//!
//! A real build machine sees only what rch pushed to it. A lab worker on
//! 127.0.0.1 would see the client's whole filesystem — its project trees, its
//! home — and a build reading a path rch never sent would pass in the lab and
//! fail on every real worker. So each worker's sshd starts in a mount
//! namespace of its own, in which the client's directories ([`Isolation`]'s
//! `hidden`) are covered by empty tmpfs mounts, except the few directories a
//! worker needs to see there: its own lab directory and the toolchain
//! (`visible`), bound back in place from file descriptors opened before the
//! cover went on. Every session sshd forks inherits the namespace.
//!
//! As root the namespace comes from `unshare --mount`. Otherwise an
//! unprivileged user namespace maps the user to root for the mounts and back
//! to itself for sshd; where the system forbids user namespaces the workers
//! share the client's files, and `rch lab status` says so.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a worker must not see, and what it must still see inside that.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// Directories covered by an empty tmpfs in the worker's namespace.
    pub hidden: Vec<PathBuf>,
    /// Directories inside `hidden` that stay visible at their own path.
    pub visible: Vec<PathBuf>,
}

/// How the lab's workers were started, for `rch lab status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Confinement {
    /// Each sshd runs in a mount namespace of its own (root: `unshare -m`).
    MountNamespace,
    /// Each sshd runs in an unprivileged user + mount namespace.
    UserNamespace,
    /// The system allows neither: workers see the client's files.
    Shared { why: String },
}

impl Confinement {
    /// One line for `rch lab status`.
    pub fn describe(&self) -> String {
        match self {
            Confinement::MountNamespace => {
                "workers run in their own mount namespace: the client's files are not visible"
                    .to_string()
            }
            Confinement::UserNamespace => {
                "workers run in their own user and mount namespace: the client's files are not visible"
                    .to_string()
            }
            Confinement::Shared { why } => {
                format!("workers share the client's files ({why}): a build that reads a path rch did not push passes here and fails on a real worker")
            }
        }
    }

    pub fn is_isolated(&self) -> bool {
        !matches!(self, Confinement::Shared { .. })
    }
}

impl Isolation {
    /// The default for a lab: hide the user's home and `extra` directories,
    /// keep the Rust toolchain (rustup and cargo homes) visible.
    pub fn client(extra: &[PathBuf]) -> Isolation {
        let home = directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf());
        let mut hidden: Vec<PathBuf> = home.iter().cloned().collect();
        hidden.extend(extra.iter().cloned());
        Isolation {
            hidden,
            visible: toolchain_dirs(home.as_deref()),
        }
    }

    /// This isolation plus one more visible directory (a worker's own).
    pub fn with_visible(&self, dir: &Path) -> Isolation {
        let mut isolation = self.clone();
        isolation.visible.push(dir.to_path_buf());
        isolation
    }

    /// The shell script that covers `hidden`, rebinds `visible` and then
    /// execs its arguments (sshd). Run as root inside a fresh mount namespace.
    pub fn script(&self) -> String {
        let hidden = outermost(&self.hidden);
        let visible: Vec<&PathBuf> = self
            .visible
            .iter()
            .filter(|v| hidden.iter().any(|h| v.starts_with(h)))
            .filter(|v| v.is_dir())
            .collect();
        let mut script = String::from("set -e\n");
        // Handles on what stays visible, taken before anything is covered.
        for (i, dir) in visible.iter().enumerate() {
            script.push_str(&format!("exec {}<{}\n", 3 + i, quote(dir)));
        }
        for dir in &hidden {
            script.push_str(&format!(
                "mount -t tmpfs -o mode=0755 rch-lab-hidden {}\n",
                quote(dir)
            ));
        }
        for (i, dir) in visible.iter().enumerate() {
            let fd = 3 + i;
            script.push_str(&format!(
                "mkdir -p {dir}\nmount --no-canonicalize --rbind /proc/self/fd/{fd} {dir}\nexec {fd}<&-\n",
                dir = quote(dir)
            ));
        }
        script.push_str("exec \"$@\"\n");
        script
    }

    /// `program args…` wrapped so that it runs confined, and how.
    pub fn wrap(&self, program: &Path) -> (Command, Confinement) {
        let confinement = available_confinement();
        let mut cmd = match &confinement {
            Confinement::MountNamespace => {
                let mut cmd = Command::new("unshare");
                cmd.args(["--mount", "--propagation", "private", "--"]);
                cmd.args(["/bin/sh", "-c", &self.script(), "rch-lab-isolate"]);
                cmd.arg(program);
                cmd
            }
            Confinement::UserNamespace => {
                let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
                let mut cmd = Command::new("unshare");
                cmd.args([
                    "--user",
                    "--map-root-user",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                ]);
                cmd.args(["/bin/sh", "-c", &self.script(), "rch-lab-isolate"]);
                // Back to the user's own uid for sshd, inside a nested
                // namespace that keeps the mounts made above.
                cmd.args(["unshare", "--user"]);
                cmd.arg(format!("--map-user={uid}"));
                cmd.arg(format!("--map-group={gid}"));
                cmd.arg("--");
                cmd.arg(program);
                cmd
            }
            Confinement::Shared { .. } => Command::new(program),
        };
        cmd.stdin(Stdio::null());
        (cmd, confinement)
    }
}

/// Which confinement this system allows, tried for real once per process.
pub fn available_confinement() -> Confinement {
    static FOUND: std::sync::OnceLock<Confinement> = std::sync::OnceLock::new();
    FOUND.get_or_init(detect).clone()
}

fn detect() -> Confinement {
    if nix::unistd::geteuid().is_root() {
        if runs(&["--mount", "--propagation", "private", "--", "true"]) {
            return Confinement::MountNamespace;
        }
        return Confinement::Shared {
            why: "`unshare --mount` failed".to_string(),
        };
    }
    let uid = nix::unistd::getuid();
    let nested = format!("--map-user={uid}");
    if runs(&[
        "--user",
        "--map-root-user",
        "--mount",
        "--",
        "unshare",
        "--user",
        &nested,
        "--",
        "true",
    ]) {
        return Confinement::UserNamespace;
    }
    Confinement::Shared {
        why: "unprivileged user namespaces are not allowed here".to_string(),
    }
}

fn runs(args: &[&str]) -> bool {
    Command::new("unshare")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The cargo and rustup homes (`CARGO_HOME`/`RUSTUP_HOME`, else under home).
pub fn toolchain_dirs(home: Option<&Path>) -> Vec<PathBuf> {
    let dir = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.map(|h| h.join(default)))
    };
    [dir("CARGO_HOME", ".cargo"), dir("RUSTUP_HOME", ".rustup")]
        .into_iter()
        .flatten()
        .collect()
}

/// The hidden directories that are not inside another hidden one (covering
/// the outer one covers them already), existing ones only.
fn outermost(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let existing: Vec<&PathBuf> = dirs.iter().filter(|d| d.is_dir()).collect();
    let mut outer: Vec<PathBuf> = Vec::new();
    for dir in &existing {
        let inside_other = existing
            .iter()
            .any(|other| other != dir && dir.starts_with(other.as_path()));
        if !inside_other && !outer.contains(dir) {
            outer.push((*dir).clone());
        }
    }
    outer
}

fn quote(path: &Path) -> String {
    shell_escape::escape(path.to_string_lossy()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_hidden_dirs_are_covered_once() {
        let tmp = tempfile::tempdir().unwrap();
        let outer = tmp.path().join("a");
        let inner = outer.join("b");
        std::fs::create_dir_all(&inner).unwrap();
        let got = outermost(&[inner.clone(), outer.clone(), tmp.path().join("missing")]);
        assert_eq!(got, vec![outer]);
    }

    #[test]
    fn script_keeps_visible_dirs_inside_hidden_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let hidden = tmp.path().join("home");
        let keep = hidden.join(".cargo");
        let elsewhere = tmp.path().join("other");
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        let isolation = Isolation {
            hidden: vec![hidden.clone()],
            visible: vec![keep.clone(), elsewhere],
        };
        let script = isolation.script();
        assert!(script.contains(&format!("exec 3<{}", keep.display())));
        assert!(script.contains(&format!("rch-lab-hidden {}", hidden.display())));
        assert!(script.contains("/proc/self/fd/3"));
        assert!(!script.contains("other"), "{script}");
        assert!(script.ends_with("exec \"$@\"\n"));
    }
}
