//! What a build needs of a worker, found on this machine: the command's
//! program; for cargo, the rustc that would build this project here (pins
//! and `+toolchain` included) and its `--target`; for C and C++ builds, the
//! local C compiler. Selection compares these with each worker's probed
//! capabilities ([`crate::caps::fit`]).

use crate::caps::{Cc, Needs, Rustc};
use crate::classify::Tool;
use crate::tool_probe;
use std::ffi::{OsStr, OsString};
use std::path::Path;

/// Files by which a project pins its Rust toolchain (rustup reads them).
const PIN_FILES: &[&str] = &["rust-toolchain.toml", "rust-toolchain"];

/// The needs of running `argv` (classified as `tool`) in `cwd`.
pub fn needs(argv: &[OsString], cwd: &Path, tool: Tool) -> Needs {
    let mut needs = Needs {
        tool: argv.first().and_then(|p| program_name(p)),
        ..Needs::default()
    };
    match tool {
        Tool::Cargo => {
            let plus = toolchain_override(argv);
            needs.rustc = local_rustc(cwd, plus.as_deref());
            // `RUSTUP_TOOLCHAIN` is this shell's choice, not the project's:
            // the worker does not get it, so it pins nothing there.
            needs.pinned = plus.is_some() || pinned(cwd);
            needs.target = cargo_target(argv)
                .or_else(|| std::env::var("CARGO_BUILD_TARGET").ok())
                .filter(|t| !t.is_empty());
        }
        Tool::Make | Tool::Cmake | Tool::Ninja | Tool::Meson | Tool::Cc => needs.cc = local_cc(cwd),
    }
    needs
}

/// The program's file name (`/usr/bin/make` → `make`).
fn program_name(program: &OsStr) -> Option<String> {
    let name = Path::new(program).file_name()?.to_str()?;
    Some(name.to_string())
}

/// `cargo +nightly build` → `nightly`.
fn toolchain_override(argv: &[OsString]) -> Option<String> {
    let first = argv.get(1)?.to_str()?;
    first.strip_prefix('+').map(str::to_string)
}

/// `--target X` or `--target=X`.
fn cargo_target(argv: &[OsString]) -> Option<String> {
    let mut words = argv.iter().filter_map(|a| a.to_str());
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if word == "--target" {
            return words.next().map(str::to_string);
        }
        if let Some(t) = word.strip_prefix("--target=") {
            return Some(t.to_string());
        }
    }
    None
}

/// Whether `cwd` or a parent has a toolchain pin file.
fn pinned(cwd: &Path) -> bool {
    cwd.ancestors()
        .any(|d| PIN_FILES.iter().any(|f| d.join(f).is_file()))
}

/// `rustc -vV` as cargo would run it here (`RUSTC` honoured); the answer
/// is cached while the toolchain it comes from is unchanged.
fn local_rustc(cwd: &Path, plus: Option<&str>) -> Option<Rustc> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let plus = plus.map(|tc| format!("+{tc}"));
    let args: Vec<&str> = plus.iter().map(String::as_str).chain(["-vV"]).collect();
    let text = tool_probe::answer(&rustc, &args, cwd, |key| {
        key.pins(cwd, PIN_FILES);
        key.rustup();
    })?;
    Rustc::parse_verbose_version(&text)
}

/// The local `cc`: its version and target machine.
fn local_cc(cwd: &Path) -> Option<Cc> {
    let ask = |flag: &str| {
        tool_probe::answer(OsStr::new("cc"), &[flag], cwd, |_| {}).map(|s| s.trim().to_string())
    };
    let machine = ask("-dumpmachine")?;
    let version = ask("-dumpfullversion")
        .or_else(|| ask("-dumpversion"))
        .unwrap_or_default();
    Some(Cc { version, machine })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn targets_and_overrides_are_read_from_the_command() {
        let a = argv(&[
            "cargo",
            "+nightly",
            "build",
            "--target",
            "wasm32-unknown-unknown",
        ]);
        assert_eq!(toolchain_override(&a).as_deref(), Some("nightly"));
        assert_eq!(cargo_target(&a).as_deref(), Some("wasm32-unknown-unknown"));
        let b = argv(&["cargo", "build", "--target=x86_64-unknown-linux-musl"]);
        assert_eq!(toolchain_override(&b), None);
        assert_eq!(
            cargo_target(&b).as_deref(),
            Some("x86_64-unknown-linux-musl")
        );
        let c = argv(&["cargo", "run", "--", "--target", "x"]);
        assert_eq!(cargo_target(&c), None);
        assert_eq!(
            program_name(OsStr::new("/usr/bin/make")).as_deref(),
            Some("make")
        );
    }

    #[test]
    fn pin_files_are_found_upwards() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        assert!(!pinned(&sub));
        std::fs::write(dir.path().join("a/rust-toolchain.toml"), "[toolchain]\n").unwrap();
        assert!(pinned(&sub));
    }
}
