//! The fault matrix, end to end on real sshd workers (tests/support): every
//! fault leaves the build with its true output and exit code (run remotely
//! elsewhere or locally), nothing running on the faulty worker, and the
//! breaker transition the design predicts.

mod support;

use rch::protocol::{Request, Response};
use rch::state::report::CircuitReport;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{block_on, describe, wait_for, TestEnv};

/// Long enough that no cooldown ends (and no daemon probe runs) during a test.
const NO_COOLDOWN: &str = "[circuit]\nopen_cooldown_secs = 600\n";

/// How long a failed worker may take to end what it ran for us.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Exit code of the test builds' recipe; make reports it on stderr
/// (`Error 7`) and itself exits [`MAKE_EXIT`].
const BUILD_EXIT: i32 = 7;
/// make's own exit code when a recipe fails.
const MAKE_EXIT: i32 = 2;

// ---------------------------------------------------------------- building blocks

fn daemon_pid(env: &TestEnv) -> i32 {
    let socket = env.socket();
    block_on(async {
        let mut client = rch::client::Client::connect(&socket)
            .await
            .expect("daemon up");
        match client.call(Request::Ping).await.expect("ping") {
            Response::Hello { pid, .. } => pid as i32,
            other => panic!("unexpected answer {other:?}"),
        }
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one `rch: ran ...` line of a run.
fn placement_line(out: &Output) -> String {
    let lines: Vec<String> = stderr(out)
        .lines()
        .filter(|l| l.starts_with("rch: ran") || l.starts_with("rch: could not run"))
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 1, "one placement line\n{}", describe(out));
    lines[0].clone()
}

fn exec(env: &TestEnv, dir: &Path, args: &[&str]) -> Output {
    env.rch_in(dir)
        .arg("exec")
        .arg("--")
        .args(args)
        .output()
        .expect("running rch exec")
}

fn spawn_exec(env: &TestEnv, dir: &Path, args: &[&str]) -> Child {
    env.rch_in(dir)
        .arg("exec")
        .arg("--")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning rch exec")
}

/// A unique word to find a build's processes by.
fn marker(tag: &str) -> String {
    format!("rchfault{tag}{}", std::process::id())
}

/// A make project whose default target prints `out-<marker>` and exits with
/// [`BUILD_EXIT`]; on a worker whose home holds `rch-slow` it first waits
/// until that file is gone, in a shell whose command line carries the
/// marker, so it can be found.
fn make_project(env: &TestEnv, name: &str, marker: &str) -> PathBuf {
    let dir = env.path().join("projects").join(name);
    std::fs::create_dir_all(&dir).expect("project dir");
    let makefile = format!(
        "all:\n\
         \t@echo out-{marker}\n\
         \t@if [ -e \"$$HOME/rch-slow\" ]; then touch \"$$HOME/rch-started\"; while [ -e \"$$HOME/rch-slow\" ]; do sleep 0.2; done; fi; : {marker}\n\
         \t@exit {BUILD_EXIT}\n"
    );
    std::fs::write(dir.join("Makefile"), makefile).expect("Makefile");
    dir
}

/// Make builds on worker `id` slow (see [`make_project`]).
fn make_slow(env: &TestEnv, id: &str) -> PathBuf {
    let home = worker(env, id).home();
    std::fs::write(home.join("rch-slow"), "").expect("slow flag");
    home.join("rch-started")
}

fn worker<'a>(env: &'a TestEnv, id: &str) -> &'a rch::lab::LabWorker {
    env.lab
        .workers()
        .iter()
        .find(|w| w.id == id)
        .expect("lab worker")
}

/// Pids (other than ours) whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

/// Nothing of the build runs anywhere, and nothing runs under our ssh
/// sessions on `id` (an idle shared master connection may stay: it is kept
/// for reuse and exits by itself).
fn assert_nothing_left(env: &TestEnv, id: &str, marker: &str) {
    let clean = wait_for(CLEANUP_TIMEOUT, || {
        processes_with(marker).is_empty() && env.lab.leftover_processes(id).is_empty()
    });
    assert!(
        clean,
        "left running: build {:?}, under sessions on {id} {:?}",
        processes_with(marker),
        env.lab.leftover_processes(id)
    );
}

/// The build printed its own output and ended with its own code.
fn assert_true_result(out: &Output, marker: &str) {
    assert_eq!(out.status.code(), Some(MAKE_EXIT), "{}", describe(out));
    assert!(
        stderr(out).contains(&format!("Error {BUILD_EXIT}")),
        "{}",
        describe(out)
    );
    assert!(
        stdout(out).contains(&format!("out-{marker}")),
        "{}",
        describe(out)
    );
}

fn assert_state(c: &CircuitReport, state: &str, failures: u32) {
    assert_eq!(
        (c.state.as_str(), c.failures),
        (state, failures),
        "circuit {c:?}"
    );
}

/// w1 preferred over w2 (the lab gives both the same priority).
fn prefer_w1(extra: &str) -> String {
    format!("{extra}\n[[workers]]\nid = \"w1\"\npriority = 200\n")
}

// ---------------------------------------------------------------- connect-time faults

#[test]
fn refused_worker_counts_a_failure_and_the_build_runs_on_the_next() {
    let env = TestEnv::new(2);
    env.write_config(&prefer_w1(
        "[circuit]\nfailure_threshold = 2\nopen_cooldown_secs = 600\n",
    ));
    let mark = marker("refused");
    env.lab.kill("w1").unwrap();
    let first = make_project(&env, "refused1", &mark);
    let out = exec(&env, &first, &["make"]);
    assert_true_result(&out, &mark);
    assert_eq!(placement_line(&out), "rch: ran on w2");
    assert_state(&env.circuit("w1"), "closed", 1);
    // A fresh project prefers w1 again: the second refusal opens its circuit.
    let second = make_project(&env, "refused2", &mark);
    let out = exec(&env, &second, &["make"]);
    assert_true_result(&out, &mark);
    let c = env.circuit("w1");
    assert_state(&c, "open", 2);
    assert!(
        c.last_error.as_deref().unwrap_or("").contains("refused"),
        "{c:?}"
    );
    assert_nothing_left(&env, "w1", &mark);
}

#[test]
fn tarpit_costs_one_short_connect_timeout_then_runs_locally() {
    let env = TestEnv::new(1);
    env.write_config(&format!("{NO_COOLDOWN}\n[ssh]\nconnect_timeout_secs = 1\n"));
    let mark = marker("tarpit");
    let project = make_project(&env, "tarpit", &mark);
    let _pit = env.lab.tarpit("w1").unwrap();
    let started = Instant::now();
    let out = exec(&env, &project, &["make"]);
    let took = started.elapsed();
    assert_true_result(&out, &mark);
    let line = placement_line(&out);
    assert!(line.starts_with("rch: ran locally: w1: "), "{line}");
    assert!(line.contains("timed out"), "{line}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert_state(&env.circuit("w1"), "closed", 1);
    assert_nothing_left(&env, "w1", &mark);
}

/// sshd log lines of connections that failed to authenticate.
fn auth_failures(env: &TestEnv, id: &str) -> usize {
    let log = std::fs::read_to_string(worker(env, id).log_file()).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("authenticating user"))
        .count()
}

#[test]
fn wrong_key_is_one_attempt_per_build_with_a_clear_reason() {
    let env = TestEnv::new(1);
    env.write_config("[circuit]\nfailure_threshold = 2\nopen_cooldown_secs = 600\n");
    let mark = marker("wrongkey");
    let project = make_project(&env, "wrongkey", &mark);
    env.lab.revoke_key("w1").unwrap();
    // The daemon tries once at start to learn the worker's tools (no breaker
    // effect); count the builds' attempts after that one.
    let start = env.rch_in(&project).args(["daemon", "start"]).output();
    assert!(start.expect("rch daemon start").status.success());
    assert_eq!(
        wait_attempts(&env, 1),
        1,
        "one attempt to learn capabilities"
    );
    assert_state(&env.circuit("w1"), "closed", 0);

    let out = exec(&env, &project, &["make"]);
    assert_true_result(&out, &mark);
    let line = placement_line(&out);
    assert!(line.starts_with("rch: ran locally: w1: "), "{line}");
    let lower = line.to_lowercase();
    assert!(
        lower.contains("auth") || lower.contains("permission denied"),
        "{line}"
    );
    let after_one = wait_attempts(&env, 2);
    assert_eq!(after_one, 2, "one login attempt for one build");
    assert_state(&env.circuit("w1"), "closed", 1);

    let out = exec(&env, &project, &["make"]);
    assert_true_result(&out, &mark);
    assert_eq!(wait_attempts(&env, 3), 3, "one login attempt per build");
    assert_state(&env.circuit("w1"), "open", 2);

    // Open: the next build does not even try.
    let out = exec(&env, &project, &["make"]);
    assert_true_result(&out, &mark);
    assert!(placement_line(&out).contains("circuit open on w1"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(auth_failures(&env, "w1"), 3, "no attempt while open");
    assert_nothing_left(&env, "w1", &mark);
}

/// Wait until the worker logged `want` failed logins (sshd logs asynchronously);
/// returns what it logged.
fn wait_attempts(env: &TestEnv, want: usize) -> usize {
    wait_for(Duration::from_secs(3), || auth_failures(env, "w1") >= want);
    // A little longer, so that a retry would show up too.
    std::thread::sleep(Duration::from_millis(300));
    auth_failures(env, "w1")
}

#[test]
fn changed_host_key_is_refused_and_never_learned() {
    let env = TestEnv::new(1);
    env.write_config(NO_COOLDOWN);
    let mark = marker("hostkey");
    let project = make_project(&env, "hostkey", &mark);
    let known_hosts = env.lab.known_hosts();
    let before = std::fs::read(&known_hosts).unwrap();
    env.lab.rotate_host_key("w1").unwrap();

    for policy in ["yes", "accept-new"] {
        env.write_config(&format!(
            "{NO_COOLDOWN}\n[ssh]\nstrict_host_key_checking = \"{policy}\"\n"
        ));
        let out = exec(&env, &project, &["make"]);
        assert_true_result(&out, &mark);
        let line = placement_line(&out);
        assert!(
            line.starts_with("rch: ran locally: w1: "),
            "{policy}: {line}"
        );
        assert!(line.to_lowercase().contains("host key"), "{policy}: {line}");
        assert_eq!(
            std::fs::read(&known_hosts).unwrap(),
            before,
            "{policy}: known_hosts changed"
        );
        assert_nothing_left(&env, "w1", &mark);
    }
    // Each refusal counted once.
    assert_state(&env.circuit("w1"), "closed", 2);
}

#[test]
fn unusable_remote_base_is_an_infrastructure_failure() {
    let env = TestEnv::new(1);
    env.write_config("[circuit]\nfailure_threshold = 1\nopen_cooldown_secs = 600\n");
    let mark = marker("base");
    let project = make_project(&env, "base", &mark);
    env.lab.break_remote_base("w1").unwrap();
    let out = exec(&env, &project, &["make"]);
    assert_true_result(&out, &mark);
    let line = placement_line(&out);
    assert!(line.starts_with("rch: ran locally: w1: "), "{line}");
    assert!(line.contains("not writable"), "{line}");
    let c = env.circuit("w1");
    assert_state(&c, "open", 1);
    assert_nothing_left(&env, "w1", &mark);
}

// ---------------------------------------------------------------- faults during the build

/// Spawn a build that is slow on w1 and wait until it sleeps there.
fn start_slow_build(env: &TestEnv, project: &Path) -> Child {
    let started = make_slow(env, "w1");
    let child = spawn_exec(env, project, &["make"]);
    assert!(
        wait_for(Duration::from_secs(20), || started.exists()),
        "the build never started on w1"
    );
    child
}

/// Wait for a child within `limit`; kill it and fail if it hangs.
fn finish_within(mut child: Child, limit: Duration) -> Output {
    let done = wait_for(limit, || matches!(child.try_wait(), Ok(Some(_))));
    if !done {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("rch exec output");
    assert!(done, "rch exec hung for {limit:?}\n{}", describe(&out));
    out
}

#[test]
fn connection_lost_mid_build_reruns_elsewhere_with_a_banner() {
    let env = TestEnv::new(2);
    env.write_config(&prefer_w1(NO_COOLDOWN));
    let mark = marker("lost");
    let project = make_project(&env, "lost", &mark);
    let child = start_slow_build(&env, &project);
    env.lab.kill_sessions("w1").unwrap();
    let out = finish_within(child, Duration::from_secs(40));
    assert_true_result(&out, &mark);
    assert!(
        stderr(&out).contains("re-running the build elsewhere"),
        "{}",
        describe(&out)
    );
    assert_eq!(placement_line(&out), "rch: ran on w2");
    let c = env.circuit("w1");
    assert_state(&c, "closed", 1);
    assert_nothing_left(&env, "w1", &mark);
}

#[test]
fn build_timeout_kills_the_remote_process_group_and_counts_as_failure() {
    let env = TestEnv::new(1);
    env.write_config(&format!(
        "{NO_COOLDOWN}\n[general]\nbuild_timeout_secs = 2\n"
    ));
    let mark = marker("timeout");
    let project = make_project(&env, "timeout", &mark);
    make_slow(&env, "w1");
    let started = Instant::now();
    let out = finish_within(
        spawn_exec(&env, &project, &["make"]),
        Duration::from_secs(30),
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_true_result(&out, &mark);
    let err = stderr(&out);
    assert!(err.contains("timed out after 2s"), "{err}");
    assert!(placement_line(&out).starts_with("rch: ran locally: w1: "));
    assert_state(&env.circuit("w1"), "closed", 1);
    assert_nothing_left(&env, "w1", &mark);
}

#[test]
fn stopped_worker_costs_one_connect_timeout() {
    let env = TestEnv::new(1);
    env.write_config(&format!("{NO_COOLDOWN}\n[ssh]\nconnect_timeout_secs = 1\n"));
    let mark = marker("paused");
    let project = make_project(&env, "paused", &mark);
    env.lab.pause("w1").unwrap();
    let started = Instant::now();
    let out = finish_within(
        spawn_exec(&env, &project, &["make"]),
        Duration::from_secs(20),
    );
    let took = started.elapsed();
    assert_true_result(&out, &mark);
    assert!(placement_line(&out).starts_with("rch: ran locally: w1: "));
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert_state(&env.circuit("w1"), "closed", 1);
    env.lab.resume("w1").unwrap();
    assert_nothing_left(&env, "w1", &mark);
}

#[test]
fn worker_stopped_mid_build_is_given_up_on_by_keepalives() {
    let env = TestEnv::new(1);
    env.write_config(NO_COOLDOWN);
    let mark = marker("pausedmid");
    let project = make_project(&env, "pausedmid", &mark);
    let child = start_slow_build(&env, &project);
    let paused = Instant::now();
    env.lab.pause("w1").unwrap();
    // ServerAliveInterval 5 x 3 unanswered: given up within about 20 s.
    let out = finish_within(child, Duration::from_secs(35));
    let took = paused.elapsed();
    assert!(took < Duration::from_secs(30), "gave up after {took:?}");
    assert_true_result(&out, &mark);
    assert!(
        stderr(&out).contains("re-running the build elsewhere"),
        "{}",
        describe(&out)
    );
    assert!(placement_line(&out).starts_with("rch: ran locally: w1: "));
    assert_state(&env.circuit("w1"), "closed", 1);
    env.lab.resume("w1").unwrap();
    assert_nothing_left(&env, "w1", &mark);
}

#[test]
fn daemon_killed_mid_build_the_client_finishes_and_breakers_survive() {
    let env = TestEnv::new(2);
    env.write_config(
        "[circuit]\nfailure_threshold = 1\nopen_cooldown_secs = 600\n\n\
         [[workers]]\nid = \"w2\"\npriority = 200\n",
    );
    let mark = marker("daemon");
    // w2 (preferred) is dead: one build opens its circuit and runs on w1.
    env.lab.kill("w2").unwrap();
    let warmup = make_project(&env, "daemon-warmup", &mark);
    let out = exec(&env, &warmup, &["make"]);
    assert_true_result(&out, &mark);
    assert_eq!(placement_line(&out), "rch: ran on w1");
    let before = env.circuit("w2");
    assert_state(&before, "open", 1);

    let project = make_project(&env, "daemon", &mark);
    let child = start_slow_build(&env, &project);
    let pid = daemon_pid(&env);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Let the build finish: it no longer needs the daemon.
    std::fs::remove_file(worker(&env, "w1").home().join("rch-slow")).unwrap();
    let out = finish_within(child, Duration::from_secs(30));
    assert_true_result(&out, &mark);
    assert_eq!(placement_line(&out), "rch: ran on w1");

    let start = env.rch().args(["daemon", "start"]).output().unwrap();
    assert!(start.status.success(), "{}", describe(&start));
    assert_ne!(daemon_pid(&env), pid);
    let after = env.circuit("w2");
    assert_state(&after, "open", 1);
    assert_eq!(after.epoch, before.epoch);
    assert_eq!(after.since, before.since);
    assert!(after.retry_in_secs.unwrap_or(0) > 500, "{after:?}");
}

#[test]
fn a_daemon_killed_mid_build_keeps_the_slot_taken_until_that_build_ends() {
    use std::io::{BufRead, BufReader, Read};
    let env = TestEnv::new(1);
    env.write_config("[[workers]]\nid = \"w1\"\nslots = 1\n");
    let running = env.exchange_dir().join("running");
    let gate = env.exchange_dir().join("gate");
    let dir = env.path().join("projects").join("held");
    std::fs::create_dir_all(&dir).unwrap();
    let makefile = format!(
        "hold:\n\t@touch {running}; while [ ! -e {gate} ]; do sleep 0.1; done; rm {running}; echo hold-done\n\
         next:\n\t@if [ -e {running} ]; then echo OVERLAP; fi; echo next-done\n",
        running = running.display(),
        gate = gate.display()
    );
    std::fs::write(dir.join("Makefile"), makefile).unwrap();
    let first = spawn_exec(&env, &dir, &["make", "hold"]);
    assert!(
        wait_for(Duration::from_secs(30), || running.exists()),
        "the first build never started"
    );
    let pid = daemon_pid(&env);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    // The next build starts a new daemon, which knows the only slot is taken.
    let mut second = spawn_exec(&env, &dir, &["make", "next"]);
    let mut lines = BufReader::new(second.stderr.take().unwrap()).lines();
    let first_line = lines.next().unwrap().unwrap();
    assert!(first_line.contains("waiting in queue"), "{first_line}");
    assert_ne!(daemon_pid(&env), pid);
    let jobs = env.fleet();
    assert_eq!(jobs.leases.len(), 1, "{:?}", jobs.leases);
    assert_eq!(jobs.leases[0].command, "make hold");

    // The first build ends: its slot goes to the waiting one.
    std::fs::write(&gate, "").unwrap();
    let out = finish_within(first, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "hold-done\n");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = second.wait().unwrap();
    let mut printed = String::new();
    second
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{rest:?}");
    assert_eq!(printed, "next-done\n", "{rest:?}");
    assert!(rest.iter().any(|l| l == "rch: ran on w1"), "{rest:?}");
}

// ---------------------------------------------------------------- local faults

#[test]
fn corrupt_config_exits_78_with_one_line_naming_file_line_and_key() {
    let env = TestEnv::new(1);
    let mark = marker("config");
    let project = make_project(&env, "config", &mark);
    let file = env.config_file();
    let cases = [
        ("[circuit]\nfailure_treshold = 3\n", "2", "failure_treshold"),
        (
            "[general]\nenabled = true\n\n[[workers]]\nid = \"w1\"\nhost = \"h\"\nslots = \"many\"\n",
            "7",
            "slots",
        ),
        ("[ssh]\nconnect_timeout_secs = = 5\n", "2", ""),
    ];
    for (text, line, key) in cases {
        std::fs::write(&file, text).unwrap();
        for args in [&["exec", "--", "make"][..], &["daemon", "start"][..]] {
            let out = env.rch_in(&project).args(args).output().unwrap();
            assert_eq!(out.status.code(), Some(78), "{args:?}\n{}", describe(&out));
            let err = stderr(&out);
            assert_eq!(err.lines().count(), 1, "{err}");
            let located = format!("{}:{line}", file.display());
            assert!(err.contains(&located), "{err} lacks {located}");
            assert!(err.contains(key), "{err} lacks {key}");
            assert!(!stdout(&out).contains(&mark), "the build must not run");
        }
    }
}

#[test]
fn bad_config_on_reload_keeps_the_running_daemon_and_its_config() {
    let env = TestEnv::new(1);
    env.write_config("");
    let start = env.rch().args(["daemon", "start"]).output().unwrap();
    assert!(start.status.success(), "{}", describe(&start));
    std::fs::write(env.config_file(), "[daemon]\nqueue_timeout = 5\n").unwrap();
    let out = env.rch().args(["daemon", "reload"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(stderr(&out).contains("queue_timeout"), "{}", describe(&out));
    assert_eq!(env.fleet().workers.len(), 1, "previous config kept");
}

#[test]
fn config_edits_reach_a_running_daemon_before_the_next_lease() {
    let env = TestEnv::new(2);
    let mark = marker("follow");
    let project = make_project(&env, "follow", &mark);
    let ran_on = |extra: &[(&str, &Path)], want: &str| {
        let mut cmd = env.rch_in(&project);
        cmd.args(["exec", "--", "make"]);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_true_result(&out, &mark);
        assert_eq!(placement_line(&out), format!("rch: ran on {want}"));
    };
    env.write_config("[[workers]]\nid = \"w1\"\nenabled = false\n");
    ran_on(&[], "w2");
    // Edited under the running daemon: the next build sees it.
    env.write_config("[[workers]]\nid = \"w2\"\nenabled = false\n");
    ran_on(&[], "w1");
    // Another file through RCH_CONFIG, then back.
    let other = env.path().join("config/other.toml");
    env.write_config("[[workers]]\nid = \"w1\"\nenabled = false\n");
    std::fs::copy(env.config_file(), &other).unwrap();
    env.write_config("[[workers]]\nid = \"w2\"\nenabled = false\n");
    ran_on(&[("RCH_CONFIG", &other)], "w2");
    ran_on(&[], "w1");
    // An invalid edit: the daemon keeps what it has and status says why.
    std::fs::write(env.config_file(), "[daemon]\nqueue_timeout = 5\n").unwrap();
    let status = env.rch().arg("status").output().unwrap();
    let text = stdout(&status);
    assert!(
        text.lines().any(
            |l| l.starts_with("rch: reload failed, previous configuration kept: ")
                && l.contains("config.toml:2")
                && l.contains("queue_timeout")
        ),
        "{}",
        describe(&status)
    );
    let fleet = env.fleet();
    assert_eq!(fleet.workers.len(), 2);
    assert!(fleet.daemon.config_error.is_some());
    assert!(!fleet.workers.iter().find(|w| w.id == "w2").unwrap().enabled);
}

#[test]
fn corrupt_state_database_is_moved_aside_and_the_daemon_runs() {
    let env = TestEnv::new(1);
    env.write_config("");
    let state = env.path().join("state/rch");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("state.db"),
        b"SQLite format 3\0 but then only garbage follows".repeat(100),
    )
    .unwrap();
    let start = env.rch().args(["daemon", "start"]).output().unwrap();
    assert!(start.status.success(), "{}", describe(&start));
    let status = env.rch().args(["status", "--json"]).output().unwrap();
    assert!(status.status.success(), "{}", describe(&status));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert!(json.is_object(), "{json}");
    let aside: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("state.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "moved aside once: {aside:?}");
    // The fresh database records builds.
    let mark = marker("db");
    let project = make_project(&env, "db", &mark);
    let out = exec(&env, &project, &["make"]);
    assert_true_result(&out, &mark);
    assert_eq!(placement_line(&out), "rch: ran on w1");
    assert_eq!(env.fleet().recent_jobs.len(), 1);
}

/// `rch daemon status` as user `nobody` against our socket.
fn status_as_nobody(env: &TestEnv) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_rch"))
        .args(["daemon", "status"]);
    env.apply_env(&mut cmd);
    cmd.current_dir("/").stdin(Stdio::null());
    cmd.output().expect("running setpriv")
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn another_user_cannot_use_the_socket() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: running a client as another user needs root");
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    }
    let env = TestEnv::new(1);
    env.write_config("");
    let start = env.rch().args(["daemon", "start"]).output().unwrap();
    assert!(start.status.success(), "{}", describe(&start));
    let socket = env.socket();
    let dir = socket.parent().unwrap().to_path_buf();
    assert_eq!(mode(&dir), 0o700, "socket dir mode");
    assert_eq!(mode(&socket), 0o600, "socket mode");

    // Permissions alone keep the other user out.
    let out = status_as_nobody(&env);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(stdout(&out).contains("not running"), "{}", describe(&out));

    // With the path opened up, the daemon's peer check still refuses.
    let opened = [
        env.path().to_path_buf(),
        env.path().join("run"),
        dir.clone(),
    ];
    let modes: Vec<u32> = opened.iter().map(|p| mode(p)).collect();
    for p in &opened {
        set_mode(p, 0o711);
    }
    set_mode(&socket, 0o666);
    let out = status_as_nobody(&env);
    for (p, m) in opened.iter().zip(modes) {
        set_mode(p, m);
    }
    set_mode(&socket, 0o600);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    // The other user's client refuses a socket that is not its own before it
    // connects (the daemon's own peer check stays as a second line).
    let log = env.rch().args(["daemon", "logs"]).output().unwrap();
    assert!(
        !stdout(&log).contains("refused a connection from another user"),
        "the other user's client connected to the daemon: {}",
        describe(&log)
    );
    // The owner is still served.
    assert_eq!(env.fleet().workers.len(), 1);
}

#[test]
fn cargo_build_in_a_hostile_project_path() {
    let env = TestEnv::new(1);
    env.write_config("");
    let project = env.project("it's \"q\" ünï $(touch PWNED1) `touch PWNED2` ; x");
    let out = exec(&env, &project, &["cargo", "build"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(placement_line(&out), "rch: ran on w1");
    let package = support_package_name(&project);
    let bin = project.join("target/debug").join(&package);
    let run = Command::new(&bin).output().expect("artifact came back");
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        format!("hello from {package}")
    );
    let base = worker(&env, "w1").remote_base.clone();
    let home = worker(&env, "w1").home();
    for dir in [base, home, project.clone()] {
        let found = Command::new("find")
            .arg(&dir)
            .args(["-name", "PWNED*"])
            .output()
            .unwrap();
        assert_eq!(stdout(&found).trim(), "", "something ran in {dir:?}");
    }
}

/// The package name tests/support gives a project directory.
fn support_package_name(dir: &Path) -> String {
    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    toml.lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("package name")
        .to_string()
}
