//! End-to-end: `rch exec` against real sshd workers (tests/support).

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::TestEnv;

fn rch_in(env: &TestEnv, dir: &Path, args: &[&str]) -> Output {
    env.rch()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running rch")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn circuit(env: &TestEnv, id: &str) -> (String, u32) {
    let c = env.circuit(id);
    (c.state.to_string(), c.failures)
}

fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    assert!(
        support::wait_for(timeout, f),
        "timed out waiting for {what}"
    );
}

const TWO_WORKERS_W1_PREFERRED: &str = r#"
[circuit]
failure_threshold = 3
open_cooldown_secs = 600
"#;

/// The lab config lists w1, w2 at equal priority; make w1 preferred.
fn prefer_w1(env: &TestEnv, extra: &str) {
    env.write_config(&format!(
        "{extra}\n[[workers]]\nid = \"w1\"\npriority = 200\n"
    ));
}

#[test]
fn remote_cargo_build_returns_a_runnable_binary_and_compile_errors_are_the_builds_own() {
    let env = TestEnv::new(1);
    env.write_config("");
    let project = env.project("hello");
    let out = rch_in(&env, &project, &["exec", "--", "cargo", "build"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("rch: ran on w1"), "{}", stderr(&out));
    let bin = project.join("target/debug/hello");
    let run = Command::new(&bin).output().expect("artifact came back");
    assert!(run.status.success());

    std::fs::write(
        project.join("src/main.rs"),
        "fn main() { let x: u32 = \"no\"; }\n",
    )
    .unwrap();
    let out = rch_in(&env, &project, &["exec", "--", "cargo", "build"]);
    assert_eq!(out.status.code(), Some(101), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("mismatched types"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("rch: ran on w1"));
    assert_eq!(circuit(&env, "w1"), ("closed".to_string(), 0));
}

#[test]
fn dead_preferred_worker_fails_over_and_opens_on_the_third_failure() {
    let env = TestEnv::new(2);
    prefer_w1(&env, TWO_WORKERS_W1_PREFERRED);
    env.lab.kill("w1").unwrap();
    // A project that built on w2 prefers it next time (warm target dir), so
    // each build is a fresh project that prefers w1 by priority.
    for i in 1..=3 {
        let project = env.project(&format!("failover{i}"));
        let out = rch_in(&env, &project, &["exec", "--", "cargo", "check"]);
        assert_eq!(out.status.code(), Some(0), "build {i}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("rch: ran on w2"),
            "build {i}: {}",
            stderr(&out)
        );
        let (state, failures) = circuit(&env, "w1");
        if i < 3 {
            assert_eq!((state.as_str(), failures), ("closed", i));
        } else {
            assert_eq!(state, "open");
        }
    }
    // Now w1 is skipped without a connection attempt.
    let project = env.project("failover4");
    let out = rch_in(&env, &project, &["exec", "--", "cargo", "check"]);
    assert!(stderr(&out).contains("rch: ran on w2"));
    assert_eq!(circuit(&env, "w1").0, "open");
}

#[test]
fn all_workers_down_runs_locally_or_exits_75_when_remote_is_required() {
    let env = TestEnv::new(1);
    env.write_config("");
    let project = env.project("alldown");
    env.lab.kill("w1").unwrap();
    let out = rch_in(&env, &project, &["exec", "--", "cargo", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rch: ran locally:"),
        "{}",
        stderr(&out)
    );

    let out = rch_in(
        &env,
        &project,
        &["exec", "--require-remote", "--", "cargo", "check"],
    );
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("rch:")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("could not run remotely"), "{err}");
    for line in err.lines().filter(|l| l.starts_with("rch:")) {
        support::formats::assert_printed(line);
    }

    let out = env
        .rch()
        .current_dir(&project)
        .env("RCH_REQUIRE_REMOTE", "1")
        .args(["exec", "--", "cargo", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
}

#[test]
fn tarpit_costs_one_connect_timeout_then_is_skipped() {
    let env = TestEnv::new(2);
    prefer_w1(
        &env,
        "[ssh]\nconnect_timeout_secs = 2\n\n[circuit]\nfailure_threshold = 1\nopen_cooldown_secs = 600\n",
    );
    let project = env.project("tarpit");
    let _pit = env.lab.tarpit("w1").unwrap();
    let t = Instant::now();
    let out = rch_in(&env, &project, &["exec", "--", "cargo", "check"]);
    let first = t.elapsed();
    assert!(stderr(&out).contains("rch: ran on w2"), "{}", stderr(&out));
    assert!(first >= Duration::from_secs(2), "{first:?}");
    let t = Instant::now();
    let out = rch_in(&env, &project, &["exec", "--", "cargo", "check"]);
    assert!(stderr(&out).contains("rch: ran on w2"));
    assert!(t.elapsed() < first, "second build paid the timeout again");
    assert_eq!(circuit(&env, "w1").0, "open");
}

#[test]
fn open_breaker_and_history_survive_a_daemon_restart() {
    let env = TestEnv::new(1);
    env.write_config("[circuit]\nfailure_threshold = 1\nopen_cooldown_secs = 600\n");
    let project = env.project("persist");
    env.lab.kill("w1").unwrap();
    let out = rch_in(&env, &project, &["exec", "--", "cargo", "check"]);
    assert!(stderr(&out).contains("ran locally"), "{}", stderr(&out));
    assert_eq!(circuit(&env, "w1").0, "open");
    let jobs_before = env.fleet().recent_jobs.len();
    assert!(jobs_before >= 1);

    let stop = rch_in(&env, &project, &["daemon", "stop"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    let start = rch_in(&env, &project, &["daemon", "start"]);
    assert!(start.status.success(), "{}", stderr(&start));
    assert_eq!(circuit(&env, "w1").0, "open");
    assert_eq!(env.fleet().recent_jobs.len(), jobs_before);
}

#[test]
fn after_cooldown_the_daemon_probes_and_two_successes_close() {
    let env = TestEnv::new(1);
    env.write_config(
        "[circuit]\nfailure_threshold = 1\nopen_cooldown_secs = 2\nsuccess_threshold = 2\n",
    );
    let project = env.project("recover");
    env.lab.kill("w1").unwrap();
    let out = rch_in(&env, &project, &["exec", "--", "cargo", "check"]);
    assert!(stderr(&out).contains("ran locally"), "{}", stderr(&out));
    // The daemon's own probe fails while w1 is still down and reopens it.
    env.lab.revive("w1").unwrap();
    wait_for(
        "w1 to close by probes alone",
        Duration::from_secs(30),
        || circuit(&env, "w1").0 == "closed",
    );
    let events = rch_in(&env, &project, &["events", "--json"]);
    let text = String::from_utf8_lossy(&events.stdout).into_owned();
    if events.status.success() {
        let half = text.find("circuit.half_open").expect("half_open event");
        let closed = text.rfind("circuit.closed").expect("closed event");
        assert!(half < closed, "{text}");
    }
}

#[test]
fn hostile_arguments_arrive_verbatim_and_nothing_runs_on_the_worker() {
    let env = TestEnv::new(1);
    // One small C file would stay local by the cost rule; this test is about the trip.
    env.write_config("[cost]\nlocal_compile_max_bytes = 0\n");
    let project = env.project("hostile  'quoted' ünï");
    std::fs::write(
        project.join("show.c"),
        "#include <stdio.h>\nint main(void) { puts(MSG); return 0; }\n",
    )
    .unwrap();
    let payload =
        "$(touch PWNED1) `touch PWNED2` ; touch PWNED3 ;  two  spaces 'single' \\\"dq\\\"";
    let define = format!("-DMSG=\"{payload}\"");
    let out = rch_in(
        &env,
        &project,
        &["exec", "--", "cc", &define, "show.c", "-o", "show"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("rch: ran on w1"), "{}", stderr(&out));
    let shown = Command::new(project.join("show"))
        .output()
        .expect("artifact came back");
    let expected = payload.replace("\\\"", "\"");
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim_end(), expected);
    let base = env.lab.workers()[0].remote_base.display().to_string();
    let found = env.ssh(
        "w1",
        &format!("find '{base}' -name 'PWNED*' 2>/dev/null; ls ~ | grep PWNED || true"),
    );
    assert_eq!(
        String::from_utf8_lossy(&found.stdout).trim(),
        "",
        "something ran on the worker"
    );
    assert!(!project.join("PWNED1").exists());
}

#[test]
fn killing_a_client_mid_build_leaves_nothing_running_on_the_worker() {
    let env = TestEnv::new(1);
    env.write_config("");
    let project = env.project("killed");
    let marker = format!("rchmarker{}", std::process::id());
    std::fs::write(
        project.join("Makefile"),
        format!("all:\n\tsleep 300 && echo {marker}\nquick:\n\ttrue\n"),
    )
    .unwrap();
    let mut child = env
        .rch()
        .current_dir(&project)
        .args(["exec", "--", "make"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = || {
        // `[r]` keeps the pattern from matching the shell that runs pgrep.
        let o = env.ssh("w1", &format!("pgrep -f '[r]{}' || true", &marker[1..]));
        !String::from_utf8_lossy(&o.stdout).trim().is_empty()
    };
    wait_for(
        "the build to start on the worker",
        Duration::from_secs(30),
        running,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for(
        "the remote build to be killed",
        Duration::from_secs(15),
        || !running(),
    );
    // Its slot came back: the next build gets the worker.
    let out = rch_in(&env, &project, &["exec", "--", "make", "quick"]);
    assert!(stderr(&out).contains("rch: ran on w1"), "{}", stderr(&out));
}

#[test]
fn a_project_keeps_its_warm_worker_across_a_daemon_restart() {
    let env = TestEnv::new(2);
    prefer_w1(&env, "[circuit]\nfailure_threshold = 5\n");
    let project = env.project("warm");
    env.lab.kill("w1").unwrap();
    let out = rch_in(&env, &project, &["exec", "--", "cargo", "check"]);
    assert!(stderr(&out).contains("rch: ran on w2"), "{}", stderr(&out));
    env.lab.revive("w1").unwrap();
    for cmd in [["daemon", "stop"], ["daemon", "start"]] {
        let out = rch_in(&env, &project, &cmd);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // w1 is preferred by priority and healthy again, but w2 has the warm
    // target dir of this project.
    let out = rch_in(&env, &project, &["exec", "--", "cargo", "check"]);
    assert!(stderr(&out).contains("rch: ran on w2"), "{}", stderr(&out));
    let other = env.project("cold");
    let out = rch_in(&env, &other, &["exec", "--", "cargo", "check"]);
    assert!(stderr(&out).contains("rch: ran on w1"), "{}", stderr(&out));
}

#[test]
fn a_socket_dir_that_cannot_be_created_fails_fast_with_its_cause() {
    let env = TestEnv::new(1);
    let project = env.project("nosock");
    // A regular file where the socket's directory should be: even root cannot create it.
    let blocker = env.path().join("blocker");
    std::fs::write(&blocker, "").unwrap();
    let socket = blocker.join("rch/rch.sock");
    let started = Instant::now();
    let out = env
        .rch_in(&project)
        .env("RCH_SOCKET", &socket)
        .args(["exec", "--", "cargo", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("rch:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with(
            "rch: ran locally: daemon unavailable: cannot create the socket directory"
        ) && lines[0].contains("Not a directory"),
        "{err}"
    );
}
