//! Shell wrappers end to end: real bash, zsh and fish sourcing
//! `rch shell-init`, shims calling the real rch, a lab sshd worker for the
//! builds that leave the machine.

mod support;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::{describe, TestEnv};

const RCH: &str = env!("CARGO_BIN_EXE_rch");

/// An isolated rch environment without workers: for everything that must
/// stay local, where a lab would only cost time.
struct Sandbox {
    root: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let root = tempfile::Builder::new()
            .prefix("rch-w-")
            .tempdir_in("/tmp")
            .unwrap();
        for dir in ["config", "state", "cache", "data", "run", "bin"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        std::fs::set_permissions(
            root.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::write(root.path().join("config/config.toml"), "").unwrap();
        let sandbox = Sandbox { root };
        create_project(&sandbox.project());
        sandbox
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    fn project(&self) -> PathBuf {
        self.path().join("app")
    }

    fn socket(&self) -> PathBuf {
        self.path().join("run/rch/rch.sock")
    }

    fn env_vars(&self) -> Vec<(&'static str, OsString)> {
        let dir = |name: &str| self.path().join(name).into_os_string();
        vec![
            ("RCH_CONFIG", dir("config/config.toml")),
            ("RCH_SOCKET", self.socket().into_os_string()),
            ("XDG_CONFIG_HOME", dir("config")),
            ("XDG_STATE_HOME", dir("state")),
            ("XDG_RUNTIME_DIR", dir("run")),
            ("XDG_CACHE_HOME", dir("cache")),
            ("XDG_DATA_HOME", dir("data")),
        ]
    }

    fn apply_env(&self, cmd: &mut Command) {
        clear_rch_env(cmd);
        cmd.envs(self.env_vars());
    }

    fn shims(&self) -> PathBuf {
        self.path().join("data/rch/shims")
    }

    /// Nothing of a daemon: no socket was made, no daemon log written.
    fn assert_no_daemon_contact(&self, context: &str) {
        assert!(
            !self.socket().exists(),
            "{context}: a daemon socket appeared"
        );
        let log = self.path().join("state/rch/daemon.log");
        assert!(!log.exists(), "{context}: a daemon log appeared");
    }

    fn rch(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(RCH);
        self.apply_env(&mut cmd);
        cmd.args(args)
            .current_dir(self.project())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn install(&self, extra: &[&str]) {
        let mut args = vec!["wrap", "install"];
        args.extend_from_slice(extra);
        let out = self.rch(&args);
        assert!(out.status.success(), "wrap install: {}", describe(&out));
    }

    /// Run `script` in `shell` inside the project, or `None` when the shell
    /// is not installed here.
    fn shell(&self, shell: Shell, script: &str, extra_env: &[(&str, &str)]) -> Option<Output> {
        let mut cmd = shell.command(script)?;
        self.apply_env(&mut cmd);
        cmd.envs(extra_env.iter().copied())
            .current_dir(self.project())
            .stdin(Stdio::null());
        Some(cmd.output().unwrap())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Only a failing test could have started one; stop it either way.
        let mut cmd = Command::new(RCH);
        self.apply_env(&mut cmd);
        let _ = cmd
            .args(["daemon", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Inherited `RCH_*` variables would change what is tested.
fn clear_rch_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("RCH_") {
            cmd.env_remove(name.as_ref());
        }
    }
}

fn create_project(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/main.rs"),
        "fn main() {\n    println!(\"hello from app\");\n}\n",
    )
    .unwrap();
}

#[derive(Debug, Clone, Copy)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    fn name(self) -> &'static str {
        match self {
            Shell::Bash => "bash",
            Shell::Zsh => "zsh",
            Shell::Fish => "fish",
        }
    }

    /// The shell without its user startup files, running `script`.
    fn command(self, script: &str) -> Option<Command> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        rch::wrap::resolve(self.name(), &path)?;
        let mut cmd = Command::new(self.name());
        match self {
            Shell::Bash => cmd.args(["--norc", "--noprofile", "-c", script]),
            Shell::Zsh => cmd.args(["-f", "-c", script]),
            Shell::Fish => cmd.args(["--no-config", "-c", script]),
        };
        Some(cmd)
    }

    /// The line that loads rch's shell setup.
    fn init_line(self) -> String {
        let rch = shlex::try_quote(RCH).unwrap();
        match self {
            Shell::Bash | Shell::Zsh => format!("eval \"$({rch} shell-init {})\"", self.name()),
            Shell::Fish => format!("{rch} shell-init fish | source"),
        }
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The lines of rch's own on stderr (`rch: ...`).
fn rch_lines(out: &Output) -> Vec<String> {
    text(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("rch: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn shell_init_puts_the_shims_first_once_in_every_shell() {
    let sandbox = Sandbox::new();
    sandbox.install(&[]);
    let shims = sandbox.shims();
    let shims = shims.to_str().unwrap();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let init = shell.init_line();
        let print_path = match shell {
            Shell::Fish => "string join : $PATH",
            _ => "echo \"$PATH\"",
        };
        // The shims dir already sits in the middle of PATH: it moves first.
        let script = format!("{init}\n{init}\n{print_path}\ncommand -v cargo");
        let start = format!("/usr/bin:{shims}:{}", std::env::var("PATH").unwrap());
        let Some(out) = sandbox.shell(shell, &script, &[("PATH", &start)]) else {
            eprintln!("{} not installed: skipped", shell.name());
            continue;
        };
        assert!(out.status.success(), "{}: {}", shell.name(), describe(&out));
        let stdout = text(&out.stdout);
        let mut lines = stdout.lines();
        let path = lines.next().unwrap_or_default();
        let entries: Vec<&str> = path.split(':').collect();
        assert_eq!(
            entries[0],
            shims,
            "{}: shims not first in {path}",
            shell.name()
        );
        let count = entries.iter().filter(|e| **e == shims).count();
        assert_eq!(count, 1, "{}: shims {count} times in {path}", shell.name());
        assert_eq!(
            lines.next(),
            Some(format!("{shims}/cargo").as_str()),
            "{}: cargo is not the shim",
            shell.name()
        );
    }
}

#[test]
fn local_cargo_commands_never_reach_a_daemon() {
    let sandbox = Sandbox::new();
    sandbox.install(&[]);
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        // fmt: skipped by the shim itself; tree: decided by `rch exec`,
        // which classifies before any config or daemon.
        let init = shell.init_line();
        let script = format!("{init}\ncargo fmt\ncargo fmt --version\ncargo tree --offline");
        let Some(out) = sandbox.shell(shell, &script, &[]) else {
            continue;
        };
        assert!(out.status.success(), "{}: {}", shell.name(), describe(&out));
        assert!(text(&out.stdout).contains("rustfmt"), "{}", describe(&out));
        // Not a build: silent by default (configure scripts make such calls by the hundred).
        assert!(
            rch_lines(&out).is_empty(),
            "{}: {}",
            shell.name(),
            describe(&out)
        );
        sandbox.assert_no_daemon_contact(shell.name());
    }
    // Asked for: the reason.
    let script = format!("{}\ncargo tree --offline", Shell::Bash.init_line());
    let out = sandbox
        .shell(Shell::Bash, &script, &[("RCH_VERBOSE", "1")])
        .unwrap();
    assert_eq!(
        rch_lines(&out),
        vec!["rch: ran locally: cargo tree is not offloadable".to_string()],
        "{}",
        describe(&out)
    );
}

#[test]
fn rch_disable_and_inside_run_the_real_tool_directly() {
    let sandbox = Sandbox::new();
    sandbox.install(&[]);
    let init = Shell::Bash.init_line();
    let script = format!("{init}\ncargo build -q && ls target/debug/app");
    for var in [
        ("RCH_DISABLE", "1"),
        ("RCH_DISABLE", "yes"),
        ("RCH_INSIDE", "1"),
    ] {
        let out = sandbox.shell(Shell::Bash, &script, &[var]).unwrap();
        assert!(out.status.success(), "{var:?}: {}", describe(&out));
        assert!(
            rch_lines(&out).is_empty(),
            "{var:?} went through rch: {}",
            describe(&out)
        );
        sandbox.assert_no_daemon_contact(&format!("{var:?}"));
    }
}

#[test]
fn a_project_with_rch_disabled_builds_locally_without_the_daemon() {
    let sandbox = Sandbox::new();
    sandbox.install(&[]);
    let project_config = sandbox.project().join(".rch");
    std::fs::create_dir_all(&project_config).unwrap();
    std::fs::write(
        project_config.join("config.toml"),
        "[general]\nenabled = false\n",
    )
    .unwrap();
    let script = format!("{}\ncargo build -q", Shell::Bash.init_line());
    let out = sandbox.shell(Shell::Bash, &script, &[]).unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let lines = rch_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    assert!(
        lines[0].starts_with("rch: ran locally: rch disabled"),
        "{lines:?}"
    );
    sandbox.assert_no_daemon_contact("enabled = false");
}

#[test]
fn wrappers_survive_a_missing_rch() {
    let sandbox = Sandbox::new();
    // Shims baked with a copy of rch that then disappears.
    let copy = sandbox.path().join("bin/rch");
    std::fs::copy(RCH, &copy).unwrap();
    let mut cmd = Command::new(&copy);
    sandbox.apply_env(&mut cmd);
    let out = cmd
        .args(["wrap", "install", "--tools", "make,cargo"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    std::fs::remove_file(&copy).unwrap();

    // Gone for good: no other rch on PATH either (an installed one would be
    // found, as it should).
    let shims = sandbox.shims();
    let path = format!("{}:{}", shims.display(), path_without_rch());
    let out = sandbox
        .shell(
            Shell::Bash,
            "make --version && cargo build -q",
            &[("PATH", &path)],
        )
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(text(&out.stdout).contains("GNU Make"), "{}", describe(&out));
    assert!(sandbox.project().join("target/debug/app").exists());
    sandbox.assert_no_daemon_contact("missing rch");
}

/// This process's PATH without the directories that hold an `rch`.
fn path_without_rch() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept: Vec<_> = std::env::split_paths(&path)
        .filter(|dir| !dir.join("rch").exists())
        .collect();
    std::env::join_paths(kept).unwrap().into_string().unwrap()
}

#[test]
fn a_tool_missing_from_path_is_reported_not_looped() {
    let sandbox = Sandbox::new();
    sandbox.install(&["--tools", "no-such-tool-xyz"]);
    let path = format!("{}:/usr/bin:/bin", sandbox.shims().display());
    let out = sandbox
        .shell(Shell::Bash, "no-such-tool-xyz", &[("PATH", &path)])
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("not found on PATH"),
        "{}",
        describe(&out)
    );
}

#[test]
fn bad_tool_names_are_usage_errors() {
    let sandbox = Sandbox::new();
    for bad in ["../evil", "a b", "rch"] {
        let out = sandbox.rch(&["wrap", "install", "--tools", bad]);
        assert_eq!(out.status.code(), Some(64), "{bad}: {}", describe(&out));
    }
    assert!(!sandbox.shims().join("evil").exists());
}

#[test]
fn status_reports_tools_path_position_and_real_tools() {
    let sandbox = Sandbox::new();
    sandbox.install(&["--tools", "cargo,make"]);
    let mut cmd = Command::new(RCH);
    sandbox.apply_env(&mut cmd);
    let path = format!(
        "{}:{}",
        sandbox.shims().display(),
        std::env::var("PATH").unwrap()
    );
    let out = cmd
        .args(["wrap", "status", "--json"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["first_on_path"], true);
    let tools = status["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["tool"].as_str().unwrap()).collect();
    assert_eq!(names, ["cargo", "make"]);
    let cargo = &tools[0];
    assert_eq!(cargo["active"], true);
    let real = cargo["real"].as_str().unwrap();
    assert!(real.ends_with("/cargo") && !real.starts_with(sandbox.shims().to_str().unwrap()));

    let table = sandbox.rch(&["wrap", "status"]);
    assert!(
        text(&table.stdout).contains("not on PATH"),
        "{}",
        describe(&table)
    );
}

#[test]
fn uninstall_restores_plain_path_resolution() {
    let sandbox = Sandbox::new();
    sandbox.install(&[]);
    let mine = sandbox.shims().join("mine");
    std::fs::write(&mine, "#!/bin/sh\n").unwrap();
    let script = format!("{}\ncommand -v cargo", Shell::Bash.init_line());
    let before = sandbox.shell(Shell::Bash, &script, &[]).unwrap();
    assert!(text(&before.stdout).starts_with(sandbox.shims().to_str().unwrap()));

    let out = sandbox.rch(&["wrap", "uninstall"]);
    assert!(out.status.success(), "{}", describe(&out));
    let after = sandbox.shell(Shell::Bash, &script, &[]).unwrap();
    let plain = Command::new("bash")
        .args(["--norc", "-c", "command -v cargo"])
        .output()
        .unwrap();
    assert_eq!(text(&after.stdout), text(&plain.stdout));
    assert!(mine.exists(), "uninstall removed a file rch did not write");
}

/// A script standing in for a build tool, to see which copy ran.
fn write_probe_tool(dir: &Path) {
    let tool = dir.join("probe-tool");
    std::fs::write(
        &tool,
        "#!/bin/sh\necho \"real probe-tool inside=${RCH_INSIDE-}\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn builds_go_to_a_worker_and_shims_there_do_not_recurse() {
    let env = TestEnv::new(1);
    let worker = env.lab.workers()[0].id.clone();
    let shell = |script: &str| {
        let mut cmd = Shell::Bash.command(script).unwrap();
        env.apply_env(&mut cmd);
        cmd.current_dir(&env.project_dir).stdin(Stdio::null());
        cmd.output().unwrap()
    };
    let bin = env.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    write_probe_tool(&bin);
    let mut install = env.rch();
    let out = install
        .args(["wrap", "install", "--tools", "cargo,make,probe-tool"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let init = Shell::Bash.init_line();

    // cargo build through the shim: built on the worker, artifacts back here.
    let out = shell(&format!("{init}\ncargo build"));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        rch_lines(&out),
        vec![format!("rch: ran on {worker}")],
        "{}",
        describe(&out)
    );
    let package = std::fs::read_to_string(env.project_dir.join("Cargo.toml")).unwrap();
    let name = package
        .lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap();
    assert!(env.project_dir.join("target/debug").join(name).exists());

    // make through the shim goes to the worker; there, the recipe finds
    // shims of the worker's own first on PATH (in the one directory both
    // sides see), and they run the real tool (RCH_INSIDE).
    let worker_bin = env.exchange_dir().join("bin");
    let worker_shims = env.exchange_dir().join("shims");
    std::fs::create_dir_all(&worker_bin).unwrap();
    std::fs::create_dir_all(&worker_shims).unwrap();
    write_probe_tool(&worker_bin);
    let shim =
        rch::wrap::shim_script("probe-tool", Path::new("/usr/bin/rch"), &worker_shims).unwrap();
    let shim_path = worker_shims.join("probe-tool");
    std::fs::write(&shim_path, shim).unwrap();
    std::fs::set_permissions(&shim_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let makefile = format!(
        "all:\n\tPATH='{}:{}':\"$$PATH\" probe-tool\n",
        worker_shims.display(),
        worker_bin.display()
    );
    std::fs::write(env.project_dir.join("Makefile"), makefile).unwrap();
    let out = shell(&format!("{init}\nmake"));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stdout).contains("real probe-tool inside=1"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        rch_lines(&out),
        vec![format!("rch: ran on {worker}")],
        "{}",
        describe(&out)
    );
}
