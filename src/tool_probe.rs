//! Answers of local tools about themselves (`rustc -vV`, `cc -dumpmachine`),
//! remembered in the cache dir so a warm build does not start them again.
//!
//! Asking rustup's `rustc` proxy for its version costs 20–50 ms, more than
//! everything else a warm remote build does on this machine. An answer is
//! reused only while everything that chooses the binary is unchanged: the
//! environment variables that pick it, the program found on `PATH` (device,
//! inode, size, mtime), the pin files above the project, rustup's settings
//! (overrides, default) and each installed toolchain's binary. Installing,
//! updating or switching a toolchain changes one of them, so a stale answer
//! is never given; a missing or unreadable cache entry only costs the run.

use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment variables that choose which binary answers.
const CHOOSERS: &[&str] = &[
    "PATH",
    "RUSTC",
    "RUSTUP_TOOLCHAIN",
    "RUSTUP_HOME",
    "CARGO_HOME",
    "HOME",
    "CC",
];

/// What decides which binary a probe reaches, hashed into the cache key.
pub struct Key {
    hasher: Sha256,
}

impl Key {
    /// The key of running `program` with `args`.
    fn new(program: &OsStr, args: &[&str]) -> Key {
        let mut key = Key {
            hasher: Sha256::new(),
        };
        key.fact("program", program.as_encoded_bytes());
        for arg in args {
            key.fact("arg", arg.as_bytes());
        }
        for name in CHOOSERS {
            let value = std::env::var_os(name).unwrap_or_default();
            key.fact(name, value.as_encoded_bytes());
        }
        key.file("resolved", on_path(program).as_deref());
        key
    }

    /// A labelled fact; lengths are hashed so facts never run together.
    fn fact(&mut self, label: &str, value: &[u8]) {
        for part in [label.as_bytes(), value] {
            self.hasher.update((part.len() as u64).to_le_bytes());
            self.hasher.update(part);
        }
    }

    /// The identity of a file (followed through symlinks), or its absence.
    pub fn file(&mut self, label: &str, path: Option<&Path>) {
        let stat = path.and_then(|p| std::fs::metadata(p).ok());
        let id = match (path, stat) {
            (Some(p), Some(m)) => format!(
                "{} {} {} {} {}.{}",
                p.display(),
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec()
            ),
            (Some(p), None) => format!("{} absent", p.display()),
            (None, _) => "none".to_string(),
        };
        self.fact(label, id.as_bytes());
    }

    /// The pin files in `cwd` and its parents (rustup reads the nearest).
    pub fn pins(&mut self, cwd: &Path, names: &[&str]) {
        for dir in cwd.ancestors() {
            for name in names {
                let file = dir.join(name);
                if file.exists() {
                    self.file("pin", Some(&file));
                }
            }
        }
    }

    /// rustup's settings and every installed toolchain's `rustc`: an
    /// override, a new default or an updated toolchain changes the answer.
    pub fn rustup(&mut self) {
        let Some(home) = rustup_home() else {
            return;
        };
        self.file("settings", Some(&home.join("settings.toml")));
        let Ok(entries) = std::fs::read_dir(home.join("toolchains")) else {
            return;
        };
        let mut toolchains: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        toolchains.sort();
        for toolchain in toolchains {
            self.file("toolchain", Some(&toolchain.join("bin/rustc")));
        }
    }

    fn file_name(self) -> String {
        let digest = self.hasher.finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Stdout of `program args` run in `cwd` when it succeeds, from the cache
/// when nothing that chooses the binary changed since (`facts` adds what
/// the probe depends on beyond the program and the environment); `None`
/// when the tool is missing or fails (never cached: a tool installed later
/// is found).
pub fn answer(
    program: &OsStr,
    args: &[&str],
    cwd: &Path,
    facts: impl FnOnce(&mut Key),
) -> Option<String> {
    let mut key = Key::new(program, args);
    facts(&mut key);
    let file = crate::paths::cache_dir()
        .join("tool-probes")
        .join(key.file_name());
    if let Ok(text) = std::fs::read_to_string(&file) {
        return Some(text);
    }
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    remember(&file, &text);
    Some(text)
}

/// Written aside and renamed: a concurrent reader sees all or nothing.
fn remember(file: &Path, text: &str) {
    let Some(dir) = file.parent() else {
        return;
    };
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    let saved = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, text))
        .and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = saved {
        tracing::debug!(error = %e, file = %file.display(), "cannot cache a tool's answer");
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Where `program` is found: itself when it names a path, else the first
/// executable of that name on `PATH`.
fn on_path(program: &OsStr) -> Option<PathBuf> {
    let program = Path::new(program);
    if program.components().count() > 1 {
        return Some(program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// `$RUSTUP_HOME`, else `~/.rustup` when it exists.
fn rustup_home() -> Option<PathBuf> {
    match std::env::var_os("RUSTUP_HOME") {
        Some(home) if !home.is_empty() => Some(PathBuf::from(home)),
        _ => Some(crate::paths::home_dir().join(".rustup")).filter(|h| h.is_dir()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(build: impl FnOnce(&mut Key)) -> String {
        let mut key = Key::new(OsStr::new("sh"), &["-c", "x"]);
        build(&mut key);
        key.file_name()
    }

    #[test]
    fn a_changed_pin_or_toolchain_binary_changes_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("rust-toolchain.toml");
        let before = name_of(|k| k.pins(dir.path(), &["rust-toolchain.toml"]));
        assert_eq!(
            before,
            name_of(|k| k.pins(dir.path(), &["rust-toolchain.toml"]))
        );
        std::fs::write(&pin, "[toolchain]\nchannel = \"stable\"\n").unwrap();
        let pinned = name_of(|k| k.pins(dir.path(), &["rust-toolchain.toml"]));
        assert_ne!(before, pinned);
        std::fs::write(&pin, "[toolchain]\nchannel = \"nightly\"\n").unwrap();
        assert_ne!(
            pinned,
            name_of(|k| k.pins(dir.path(), &["rust-toolchain.toml"]))
        );

        let bin = dir.path().join("rustc");
        std::fs::write(&bin, "one").unwrap();
        let first = name_of(|k| k.file("toolchain", Some(&bin)));
        std::fs::remove_file(&bin).unwrap();
        std::fs::write(&bin, "two!").unwrap();
        assert_ne!(first, name_of(|k| k.file("toolchain", Some(&bin))));
    }

    #[test]
    fn programs_are_found_on_path_or_taken_as_given() {
        assert_eq!(
            on_path(OsStr::new("/bin/sh")),
            Some(PathBuf::from("/bin/sh"))
        );
        assert!(on_path(OsStr::new("sh")).is_some_and(|p| p.is_absolute()));
        assert_eq!(on_path(OsStr::new("no-such-tool-anywhere")), None);
    }
}
