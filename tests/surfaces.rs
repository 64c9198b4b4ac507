//! Every subcommand, run the way a script runs it: stdout piped.
//!
//! - Piped output is plain: no box drawing and no terminal escape bytes, on
//!   any subcommand (the walk covers every leaf of the command line; a new
//!   subcommand fails here until it is added to [`RUNS`]).
//! - Every status-like command takes `--json` and prints JSON then.

mod support;

use clap::CommandFactory;
use std::collections::BTreeSet;
use support::{describe, TestEnv};

/// Each subcommand (by its path) with the arguments this walk runs it with,
/// in the order they run: they share one environment.
const RUNS: &[(&str, &[&str])] = &[
    ("config show", &["config", "show", "--origin"]),
    ("config validate", &["config", "validate"]),
    ("config init", &["config", "init"]),
    ("config path", &["config", "path"]),
    ("daemon start", &["daemon", "start"]),
    ("daemon status", &["daemon", "status"]),
    ("daemon reload", &["daemon", "reload"]),
    ("exec", &["-v", "exec", "--", "make", "quick"]),
    ("status", &["status"]),
    ("status", &["status", "--circuits", "--workers", "--jobs"]),
    ("top", &["top"]),
    ("workers list", &["workers", "list"]),
    ("workers probe", &["workers", "probe", "--all"]),
    ("workers reset", &["workers", "reset", "w1"]),
    ("workers drain", &["workers", "drain", "w1"]),
    ("workers disable", &["workers", "disable", "w1"]),
    ("workers enable", &["workers", "enable", "w1"]),
    ("workers history", &["workers", "history", "w1"]),
    ("workers gc", &["workers", "gc", "--all", "--dry-run"]),
    ("events", &["events"]),
    ("metrics", &["metrics"]),
    ("diagnose", &["diagnose", "make quick"]),
    ("completions", &["completions", "bash"]),
    ("man", &["man"]),
    ("shell-init", &["shell-init", "bash"]),
    ("wrap install", &["wrap", "install", "--tools", "make"]),
    ("wrap status", &["wrap", "status"]),
    ("wrap uninstall", &["wrap", "uninstall"]),
    ("hook", &["hook"]),
    (
        "hook install",
        &["hook", "install", "--settings", "@/agent.json"],
    ),
    (
        "hook status",
        &["hook", "status", "--settings", "@/agent.json"],
    ),
    (
        "hook uninstall",
        &["hook", "uninstall", "--settings", "@/agent.json"],
    ),
    ("lab up", &["lab", "up", "--workers", "1"]),
    ("lab status", &["lab", "status"]),
    ("lab pause", &["lab", "pause", "w1"]),
    ("lab resume", &["lab", "resume", "w1"]),
    ("lab kill", &["lab", "kill", "w1"]),
    ("lab revive", &["lab", "revive", "w1"]),
    ("lab down", &["lab", "down"]),
    ("daemon logs", &["daemon", "logs"]),
    ("daemon stop", &["daemon", "stop"]),
];

/// Subcommands the walk does not run, and why.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "daemon run",
        "runs in the foreground until stopped (started by `daemon start`)",
    ),
    (
        "daemon install-service",
        "enables a systemd unit of the real user",
    ),
];

/// Status-like commands: each prints one JSON document with `--json`
/// (`events` one object a line).
const JSON: &[&[&str]] = &[
    &["status"],
    &["status", "--circuits"],
    &["status", "--jobs"],
    &["top"],
    &["workers", "list"],
    &["workers", "probe", "w1"],
    &["workers", "history", "w1"],
    &["workers", "gc", "--all", "--dry-run"],
    &["metrics"],
    &["diagnose", "--json", "make quick"],
    &["daemon", "status"],
    &["config", "show"],
    &["config", "path"],
    &["wrap", "status"],
    &["hook", "status", "--settings", "@/agent.json"],
    &["lab", "status"],
];

/// Every leaf of the command line ("workers probe"), plus commands that run
/// on their own and also have subcommands (`hook`).
fn leaves(cmd: &clap::Command, prefix: &str, out: &mut BTreeSet<String>) {
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let path = format!("{prefix}{}", sub.get_name()).trim().to_string();
        if !sub.has_subcommands() || !sub.is_subcommand_required_set() {
            out.insert(path.clone());
        }
        leaves(sub, &format!("{path} "), out);
    }
}

fn is_box_drawing(c: char) -> bool {
    ('\u{2500}'..='\u{257f}').contains(&c)
}

fn args_in(env: &TestEnv, args: &[&str]) -> Vec<String> {
    let root = env.path().display().to_string();
    args.iter().map(|a| a.replace('@', &root)).collect()
}

#[test]
fn every_subcommand_prints_plain_text_when_piped_and_status_commands_speak_json() {
    let mut all = BTreeSet::new();
    leaves(&rch::cli::Cli::command(), "", &mut all);
    let covered: BTreeSet<String> = RUNS
        .iter()
        .map(|(p, _)| p.to_string())
        .chain(NOT_RUN.iter().map(|(p, _)| p.to_string()))
        .collect();
    let missing: Vec<&String> = all.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "subcommands the walk does not cover: {missing:?}"
    );

    let env = TestEnv::new(1);
    std::fs::write(env.project_dir.join("Makefile"), "quick:\n\ttrue\n").unwrap();
    let mut failures = Vec::new();
    for (path, args) in RUNS {
        let out = env.rch().args(args_in(&env, args)).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains('\u{1b}') || text.chars().any(is_box_drawing) {
            failures.push(format!("{path} ({args:?}) drew for a terminal:\n{text}"));
        }
        if out.status.code().is_none_or(|c| c == 64 || c == 101) {
            failures.push(format!("{path} ({args:?}) failed: {}", describe(&out)));
        }
        if *path == "lab up" {
            // The lab is up: every status-like command now has something to show.
            for json_args in JSON {
                let mut with = args_in(&env, json_args);
                if !with.iter().any(|a| a == "--json") {
                    with.push("--json".into());
                }
                let out = env.rch().args(&with).output().unwrap();
                if serde_json::from_slice::<serde_json::Value>(&out.stdout).is_err() {
                    failures.push(format!("{with:?} is not JSON: {}", describe(&out)));
                }
            }
            let out = env.rch().args(["events", "--json"]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            for line in text.lines() {
                if serde_json::from_str::<serde_json::Value>(line).is_err() {
                    failures.push(format!("events --json line is not JSON: {line}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Environment variables `rch --help` explains (those of docs/configuration.md).
const HELP_ENV: &[&str] = &[
    "RCH_CONFIG",
    "RCH_SOCKET",
    "RCH_LOG",
    "RCH_QUIET",
    "RCH_VERBOSE",
    "RCH_DISABLE",
    "RCH_REQUIRE_REMOTE",
    "RCH_WORKER",
];

fn rch_stdout(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rch"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_teaches_and_the_manual_is_generated_from_it() {
    let top = rch_stdout(&["--help"]);
    for part in [
        "Examples:",
        "rch exec -- cargo build",
        "Environment:",
        "Exit status:",
        "75",
        "78",
        "64",
    ] {
        assert!(top.contains(part), "rch --help lacks {part:?}:\n{top}");
    }
    for var in HELP_ENV {
        assert!(top.contains(var), "rch --help lacks {var}");
    }
    let exec = rch_stdout(&["exec", "--help"]);
    for part in [
        "Examples:",
        "--worker w1",
        "Environment:",
        "RCH_WORKER",
        "Exit status:",
        "128+N",
    ] {
        assert!(
            exec.contains(part),
            "rch exec --help lacks {part:?}:\n{exec}"
        );
    }
    let history = rch_stdout(&["workers", "history", "--help"]);
    assert!(history.contains("<ID>  The worker id"), "{history}");

    let man = rch_stdout(&["man"]);
    assert!(man.contains(".TH rch 1"), "{man}");
    assert!(
        man.contains("Exit status:") && man.contains("RCH_REQUIRE_REMOTE"),
        "{man}"
    );
    let dir = tempfile::tempdir().unwrap();
    rch_stdout(&["man", "--dir", &dir.path().display().to_string()]);
    for page in ["rch.1", "rch-exec.1", "rch-workers-history.1", "rch-top.1"] {
        assert!(dir.path().join(page).is_file(), "{page} not written");
    }
}
