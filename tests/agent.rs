//! The worker agent end to end, on lab workers that cannot see this
//! machine's files: warm builds start no login shell on the worker, output
//! and exit codes pass through it, an agent that went away or a changed
//! login profile cost one shell and nothing else, and `agent = false` (or a
//! worker of another system) keeps the login-shell path.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use support::tally::{count_shells, shells_since};
use support::TestEnv;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A project whose `show` prints a file and `$MARK` from the worker's
/// environment, and whose `fail` exits 3 after a line on each stream.
fn project(env: &TestEnv) -> PathBuf {
    let dir = env.path().join("projects").join("agent");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Makefile"),
        "show: in.txt\n\t@cat in.txt; echo \"mark=$$MARK\"; cp in.txt out.txt\n\
         fail:\n\t@echo to-stdout; echo to-stderr >&2; exit 3\n",
    )
    .unwrap();
    std::fs::write(dir.join("in.txt"), "one\n").unwrap();
    dir
}

fn make(env: &TestEnv, dir: &Path, target: &str) -> Output {
    env.rch_in(dir)
        .args(["exec", "--", "make", "-s", target])
        .output()
        .expect("running rch")
}

/// Appends `line` to the worker account's `~/.profile` (under `home`).
fn add_to_profile(home: &Path, line: &str) {
    let profile = std::fs::read_to_string(home.join(".profile")).unwrap_or_default();
    std::fs::write(home.join(".profile"), format!("{profile}\n{line}\n")).unwrap();
}

/// The worker's agent processes (`rch-agent-<id> serve`).
fn agents(env: &TestEnv) -> Vec<i32> {
    let home = env.lab.workers()[0].home();
    let wanted = format!("{}/.cache/rch/agent/rch-agent-", home.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with(&wanted))
        })
        .collect()
}

#[test]
fn warm_builds_start_no_login_shell_and_everything_passes_through_the_agent() {
    let env = TestEnv::new(1);
    env.write_config("");
    let dir = project(&env);
    let tally = count_shells(&env);

    let out = make(&env, &dir, "show");
    assert_eq!(stdout(&out), "one\nmark=\n", "{}", stderr(&out));
    assert!(stderr(&out).contains("ran on w1"), "{}", stderr(&out));
    let setup = shells_since(&tally, 0);
    assert!(
        (1..=2).contains(&setup),
        "the first build starts the agent (and installs it): {setup} shells"
    );
    assert_eq!(agents(&env).len(), 1, "one agent serves the worker");

    // A no-op, an edit carried in the run, a failing target: no shell.
    for (content, expect) in [("one\n", "one\n"), ("two\n", "two\n")] {
        std::fs::write(dir.join("in.txt"), content).unwrap();
        let out = make(&env, &dir, "show");
        assert_eq!(stdout(&out), format!("{expect}mark=\n"), "{}", stderr(&out));
        assert_eq!(
            std::fs::read_to_string(dir.join("out.txt")).unwrap(),
            expect
        );
    }
    let out = make(&env, &dir, "fail");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stdout(&out), "to-stdout\n");
    assert!(stderr(&out).contains("to-stderr\n"), "{}", stderr(&out));
    // A push too large to carry goes by rsync, which runs through the agent.
    std::fs::write(dir.join("in.txt"), "x".repeat(700 * 1024)).unwrap();
    let out = make(&env, &dir, "show");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(dir.join("out.txt")).unwrap().len(),
        700 * 1024
    );
    let commands = std::fs::read_to_string(&tally).unwrap_or_default();
    assert_eq!(shells_since(&tally, setup), 0, "shells started: {commands}");
    assert_eq!(env.circuit("w1").failures, 0);
}

#[test]
fn an_agent_that_went_away_or_a_changed_login_profile_is_started_again_and_the_build_never_notices()
{
    let env = TestEnv::new(1);
    env.write_config("");
    let dir = project(&env);
    for _ in 0..2 {
        let out = make(&env, &dir, "show");
        assert!(stderr(&out).contains("ran on w1"), "{}", stderr(&out));
    }
    let first = agents(&env);
    assert_eq!(first.len(), 1);
    let tally = count_shells(&env);

    // The agent killed between builds: the next build starts it again.
    for pid in &first {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let out = make(&env, &dir, "show");
    assert_eq!(stdout(&out), "one\nmark=\n", "{}", stderr(&out));
    assert!(stderr(&out).contains("ran on w1"), "{}", stderr(&out));
    let commands = std::fs::read_to_string(&tally).unwrap_or_default();
    assert_eq!(
        shells_since(&tally, 0),
        1,
        "one shell starts the agent again: {commands}"
    );
    let second = agents(&env);
    assert_eq!(second.len(), 1);
    assert_ne!(first, second);

    // A login profile edited on the worker: the next build sees it.
    let home = env.lab.workers()[0].home();
    add_to_profile(&home, "MARK=profiled; export MARK");
    let out = make(&env, &dir, "show");
    assert_eq!(stdout(&out), "one\nmark=profiled\n", "{}", stderr(&out));
    // The old agent refuses the run and makes way: one shell, a new agent.
    assert_eq!(shells_since(&tally, 0), 2, "one more, for a new agent");
    let out = make(&env, &dir, "show");
    assert_eq!(stdout(&out), "one\nmark=profiled\n", "{}", stderr(&out));
    assert_eq!(shells_since(&tally, 0), 2);
    assert_eq!(env.circuit("w1").failures, 0);
}

#[test]
fn agent_false_or_a_worker_of_another_system_keeps_the_login_shell_path() {
    let env = TestEnv::new(1);
    env.write_config("[[workers]]\nid = \"w1\"\nagent = false\n");
    let dir = project(&env);
    let tally = count_shells(&env);
    for _ in 0..2 {
        let out = make(&env, &dir, "show");
        assert_eq!(stdout(&out), "one\nmark=\n", "{}", stderr(&out));
    }
    assert!(shells_since(&tally, 0) >= 2, "each build starts a shell");
    assert!(agents(&env).is_empty());

    // A worker whose `uname` names another system gets no agent; the
    // refusal is remembered, so the next build costs only its own shell.
    env.write_config("");
    let home = env.lab.workers()[0].home();
    std::fs::create_dir_all(home.join("bin")).unwrap();
    let uname = home.join("bin/uname");
    std::fs::write(
        &uname,
        "#!/bin/sh\ncase $1 in -s) echo Plan9 ;; *) echo mips ;; esac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&uname, std::fs::Permissions::from_mode(0o755)).unwrap();
    add_to_profile(&home, "PATH=$HOME/bin:$PATH");
    let out = make(&env, &dir, "show");
    assert_eq!(stdout(&out), "one\nmark=\n", "{}", stderr(&out));
    let before = shells_since(&tally, 0);
    let out = make(&env, &dir, "fail");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(shells_since(&tally, before), 1, "the build's own run only");
    assert!(agents(&env).is_empty());
    assert_eq!(env.circuit("w1").failures, 0);
}
