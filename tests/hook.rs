//! `rch hook` as the agent runs it: one PreToolUse event on stdin, the answer
//! on stdout, always exit 0; and `rch hook install|uninstall|status` on a
//! real settings file.

mod support;

use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const RCH: &str = env!("CARGO_BIN_EXE_rch");

/// `rch hook` with `stdin`, HOME in `home`, PATH without this rch.
fn hook(home: &Path, stdin: &[u8]) -> Output {
    let mut child = rch(home)
        .arg("hook")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn rch(home: &Path) -> Command {
    let mut cmd = Command::new(RCH);
    support::sandbox::strip_rch_env(&mut cmd);
    cmd.env("HOME", home).env_remove("CLAUDE_CONFIG_DIR");
    cmd
}

fn bash_event(command: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": command, "description": "build it", "timeout": 600000},
    }))
    .unwrap()
}

/// The rewritten tool input, or `None` when the hook stayed silent.
fn updated_input(out: &Output) -> Option<Value> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.is_empty() {
        return None;
    }
    let answer: Value = serde_json::from_slice(&out.stdout).expect("the answer is JSON");
    let specific = &answer["hookSpecificOutput"];
    assert_eq!(specific["hookEventName"], "PreToolUse");
    assert_eq!(specific["permissionDecision"], "allow");
    Some(specific["updatedInput"].clone())
}

/// How the hook names this rch: not on PATH here, so its absolute path.
fn rch_word() -> String {
    let exe = std::fs::canonicalize(RCH).unwrap();
    shlex::try_quote(exe.to_str().unwrap())
        .unwrap()
        .into_owned()
}

#[test]
fn offloadable_commands_are_rewritten_to_rch_exec() {
    let home = tempfile::tempdir().unwrap();
    let rch = rch_word();
    let cases = [
        (
            "cargo build --release",
            format!("{rch} exec -- cargo build --release"),
        ),
        (
            "cargo test -p core",
            format!("{rch} exec -- cargo test -p core"),
        ),
        (
            "cd '/src/my app' && cargo clippy",
            format!("cd '/src/my app' && {rch} exec -- cargo clippy"),
        ),
        ("make -j8", format!("{rch} exec -- make -j8")),
    ];
    for (command, expected) in cases {
        let input = updated_input(&hook(home.path(), &bash_event(command)))
            .unwrap_or_else(|| panic!("{command:?} was not rewritten"));
        assert_eq!(input["command"], expected.as_str(), "{command:?}");
        // Everything else the tool call carried is kept.
        assert_eq!(input["description"], "build it");
        assert_eq!(input["timeout"], 600000);
    }
}

#[test]
fn other_commands_and_tools_are_left_alone() {
    let home = tempfile::tempdir().unwrap();
    for command in [
        "cargo fmt",
        "cargo fmt --check",
        "ls -la",
        "cargo build && rm -rf target",
        "cargo build | tee log",
        "RUSTFLAGS=-g cargo build",
        "cargo build > out.txt",
        "rch exec -- cargo build",
    ] {
        let out = hook(home.path(), &bash_event(command));
        assert_eq!(updated_input(&out), None, "{command:?} was rewritten");
    }
    let read = json!({"tool_name": "Read", "tool_input": {"file_path": "/x/Cargo.toml"}});
    let out = hook(home.path(), read.to_string().as_bytes());
    assert_eq!(updated_input(&out), None);
}

#[test]
fn malformed_input_fails_open() {
    let home = tempfile::tempdir().unwrap();
    let inputs: [&[u8]; 7] = [
        b"",
        b"not json",
        b"{\"tool_name\": \"Bash\"",
        b"[]",
        b"{\"tool_name\": \"Bash\", \"tool_input\": \"cargo build\"}",
        b"{\"tool_name\": \"Bash\", \"tool_input\": {\"command\": null}}",
        b"\xff\xfe\x00garbage",
    ];
    for input in inputs {
        let out = hook(home.path(), input);
        assert_eq!(
            updated_input(&out),
            None,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn rch_disable_leaves_builds_as_typed() {
    let home = tempfile::tempdir().unwrap();
    let mut child = rch(home.path())
        .arg("hook")
        .env("RCH_DISABLE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&bash_event("cargo build"))
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(updated_input(&out), None);
}

fn settings_file(home: &Path) -> PathBuf {
    home.join(".claude/settings.json")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn run_ok(home: &Path, args: &[&str]) -> String {
    let out = rch(home).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn install_and_uninstall_keep_every_other_setting() {
    let home = tempfile::tempdir().unwrap();
    let file = settings_file(home.path());
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let original = json!({
        "model": "opus",
        "permissions": {"allow": ["Bash(cargo build:*)"], "deny": []},
        "hooks": {
            "PreToolUse": [
                {"matcher": "Bash", "hooks": [{"type": "command", "command": "~/guard.sh"}]}
            ],
            "PostToolUse": [
                {"matcher": "Edit", "hooks": [{"type": "command", "command": "fmt.sh"}]}
            ]
        },
        "env": {"FOO": "bar"}
    });
    let original_text = serde_json::to_string_pretty(&original).unwrap();
    std::fs::write(&file, &original_text).unwrap();

    run_ok(home.path(), &["hook", "install"]);
    let installed = read_json(&file);
    let backup = home.path().join(".claude/settings.json.bak");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original_text);
    for key in ["model", "permissions", "env"] {
        assert_eq!(installed[key], original[key], "{key} changed");
    }
    assert_eq!(
        installed["hooks"]["PostToolUse"],
        original["hooks"]["PostToolUse"]
    );
    let groups = installed["hooks"]["PreToolUse"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0], original["hooks"]["PreToolUse"][0]);
    assert_eq!(groups[1]["matcher"], "Bash");
    let command = groups[1]["hooks"][0]["command"].as_str().unwrap();
    assert_eq!(command, format!("{} hook", rch_word()));
    // The key order of the user's file survives.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.find("\"model\"") < text.find("\"permissions\""));
    assert!(text.find("\"hooks\"") < text.find("\"env\""));

    // Installing again changes nothing.
    let again = run_ok(home.path(), &["hook", "install"]);
    assert!(again.contains("already"), "{again}");
    assert_eq!(read_json(&file), installed);
    assert!(run_ok(home.path(), &["hook", "status"]).contains("registered in"));

    run_ok(home.path(), &["hook", "uninstall"]);
    assert_eq!(read_json(&file), original);
    assert!(run_ok(home.path(), &["hook", "status"]).contains("not registered"));
}

#[test]
fn install_creates_missing_settings_and_refuses_broken_ones() {
    let home = tempfile::tempdir().unwrap();
    let file = settings_file(home.path());
    run_ok(home.path(), &["hook", "install"]);
    let settings = read_json(&file);
    assert_eq!(settings["hooks"]["PreToolUse"][0]["matcher"], "Bash");
    run_ok(home.path(), &["hook", "uninstall"]);
    assert_eq!(read_json(&file), json!({}));

    std::fs::write(&file, "{ broken").unwrap();
    let out = rch(home.path()).args(["hook", "install"]).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "{ broken");
}

#[test]
fn settings_flag_names_another_file() {
    let home = tempfile::tempdir().unwrap();
    let project = home.path().join("proj/.claude/settings.local.json");
    let arg = project.to_str().unwrap();
    run_ok(home.path(), &["hook", "install", "--settings", arg]);
    assert!(project.exists());
    assert!(!settings_file(home.path()).exists());
    run_ok(home.path(), &["hook", "uninstall", "--settings", arg]);
}

#[test]
fn rch_on_path_is_named_plainly() {
    let home = tempfile::tempdir().unwrap();
    let exe = std::fs::canonicalize(RCH).unwrap();
    let path = format!(
        "{}:{}",
        exe.parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    let mut child = rch(home.path())
        .arg("hook")
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&bash_event("cargo check"))
        .unwrap();
    let input = updated_input(&child.wait_with_output().unwrap()).unwrap();
    assert_eq!(input["command"], "rch exec -- cargo check");
}
