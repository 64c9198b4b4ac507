//! The remote side against real sshd workers on 127.0.0.1: master reuse,
//! failure kinds from real faults, rsync transfer, and remote execution
//! (quoting, exit codes, streams, environment, timeouts, clean-up).

mod support;

use rch::config::{HostKeyPolicy, SshConfig, WorkerConfig};
use rch::lab::Lab;
use rch::remote::{self, FailureKind, Pull, RunReport, RunSpec, Target};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};
use support::TestEnv;

/// One lab of one worker per test, so faults never leak between tests.
struct Fixture {
    env: TestEnv,
}

impl Fixture {
    fn new() -> Fixture {
        isolate_runtime_dir();
        Fixture {
            env: TestEnv::new(1),
        }
    }

    fn lab(&self) -> &Lab {
        &self.env.lab
    }

    fn target(&self) -> Target {
        let w = &self.lab().workers()[0];
        Target {
            worker: WorkerConfig {
                remote_base: w.remote_base.to_string_lossy().into_owned(),
                ..WorkerConfig::new(w.id.clone(), w.alias.clone())
            },
            ssh: SshConfig {
                connect_timeout_secs: 2,
                strict_host_key_checking: HostKeyPolicy::Yes,
                config_file: Some(self.lab().ssh_config()),
            },
            agent: None,
        }
    }

    fn remote_base(&self) -> PathBuf {
        self.lab().workers()[0].remote_base.clone()
    }

    /// A fresh directory on the worker (the worker is this machine).
    fn remote_dir(&self, name: &str) -> String {
        let dir = self.remote_base().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir.to_string_lossy().into_owned()
    }

    async fn connect(&self) -> remote::Connection {
        remote::connect(&self.target()).await.expect("connect")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Close the master from a thread of its own: drop runs inside the
        // test's runtime, which cannot be blocked on.
        let target = self.target();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(remote::disconnect(&target));
        })
        .join();
    }
}

/// The remote functions run inside this process, so its own environment
/// decides where control sockets live: a short directory of the tests' own.
fn isolate_runtime_dir() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rt");
        std::fs::create_dir_all(&dir).unwrap();
        std::env::set_var("XDG_RUNTIME_DIR", dir);
    });
}

fn spec(dir: &str, argv: &[&str]) -> RunSpec {
    RunSpec {
        dir: dir.to_string(),
        argv: argv.iter().map(OsString::from).collect(),
        env: Vec::new(),
        timeout: Duration::from_secs(30),
        tree: None,
        input: None,
        watch: None,
        env_reads: None,
    }
}

/// Runs and captures stdout and stderr.
async fn capture(conn: &remote::Connection, spec: &RunSpec) -> (RunReport, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let report = remote::run_to(conn, spec, &mut out, &mut err).await;
    (
        report,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn exit_code(report: &RunReport) -> i32 {
    match &report.result {
        Ok(code) => *code,
        Err(f) => panic!("run failed: {f}"),
    }
}

fn failure_kind(report: &RunReport) -> FailureKind {
    match &report.result {
        Ok(code) => panic!("expected a failure, got exit code {code}"),
        Err(f) => f.kind,
    }
}

/// A number no other process on the machine has in its command line.
fn unique_sleep_secs() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}",
        100_000 + (nanos % 800_000) + std::process::id() % 1000
    )
}

fn processes_matching(pattern: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The process table, for failure messages.
fn process_table() -> String {
    let ps = std::process::Command::new("ps")
        .args(["-eo", "pid,ppid,pgid,sid,stat,args"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&ps.stdout).into_owned()
}

/// Waits until no process matches `pattern`; true if that happened in time.
async fn gone_within(pattern: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if processes_matching(pattern).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn appears_within(pattern: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !processes_matching(pattern).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn hostile_arguments_arrive_verbatim_and_nothing_is_executed() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let dir = fx.remote_dir("hostile");
    let args = [
        "$(touch PWNED)",
        "`touch PWNED`",
        "a  b",
        "it's",
        ";touch PWNED",
        "ü ñ",
        "*",
        "\"quoted\" \\ back",
        "line1\nline2",
        "",
        "$HOME",
        "--",
        "-n",
    ];
    let mut argv = vec!["printf", "[%s]\\n"];
    argv.extend(args);
    let (report, out, _) = capture(&conn, &spec(&dir, &argv)).await;
    assert_eq!(exit_code(&report), 0);
    let expected: String = args.iter().map(|a| format!("[{a}]\n")).collect();
    assert_eq!(out, expected);
    assert!(!Path::new(&dir).join("PWNED").exists());
    assert!(!fx.remote_base().join("PWNED").exists());
}

#[tokio::test]
async fn exit_codes_pass_through() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let dir = fx.remote_dir("codes");
    for (script, code) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 101", 101),
        ("exit 127", 127),
        ("exit 255", 255),
        ("kill -SEGV $$", 128 + 11),
    ] {
        let (report, _, _) = capture(&conn, &spec(&dir, &["sh", "-c", script])).await;
        assert!(report.started);
        assert_eq!(exit_code(&report), code, "{script}");
    }
}

/// A command the worker does not have is the wrapper's own status, not the
/// 127 a command may exit with itself (checked just above).
#[tokio::test]
async fn a_command_not_found_is_a_missing_tool_not_an_exit_code() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let dir = fx.remote_dir("missing");
    let (report, out, err) = capture(&conn, &spec(&dir, &["rch-no-such-tool", "x"])).await;
    assert!(!report.started);
    assert_eq!(failure_kind(&report), FailureKind::MissingTool);
    assert_eq!((out.as_str(), err.as_str()), ("", ""));
    let message = report.result.unwrap_err().message;
    assert!(message.contains("rch-no-such-tool"), "{message}");
}

#[tokio::test]
async fn stdout_and_stderr_stay_separate() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let dir = fx.remote_dir("streams");
    let script = "echo out1; echo err1 >&2; echo out2; echo err2 >&2";
    let (report, out, err) = capture(&conn, &spec(&dir, &["sh", "-c", script])).await;
    assert_eq!(exit_code(&report), 0);
    assert_eq!(out, "out1\nout2\n");
    assert_eq!(err, "err1\nerr2\n");
}

#[tokio::test]
async fn output_is_streamed_while_the_command_runs() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let dir = fx.remote_dir("live");
    let (mut reader, writer) = tokio::io::duplex(1024);
    let spec = spec(&dir, &["sh", "-c", "echo first; sleep 3; echo second"]);
    let started = Instant::now();
    let run = remote::run_to(&conn, &spec, writer, tokio::io::sink());
    let first_line = async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 6];
        reader.read_exact(&mut buf).await.unwrap();
        (started.elapsed(), buf, reader)
    };
    let (report, (elapsed, buf, _reader)) = tokio::join!(run, first_line);
    assert_eq!(&buf, b"first\n");
    assert!(
        elapsed < Duration::from_secs(2),
        "first line took {elapsed:?}"
    );
    assert_eq!(exit_code(&report), 0);
}

#[tokio::test]
async fn environment_is_forwarded_but_never_rch_variables() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let dir = fx.remote_dir("env");
    std::env::set_var("RUSTFLAGS", "-C opt-level=1 $(touch PWNED)");
    std::env::set_var("CARGO_PROFILE_RELEASE_DEBUG", "true");
    std::env::set_var("RCH_WORKER", "w9");
    std::env::set_var("CARGO_TARGET_DIR", "/nowhere");
    let mut run_spec = spec(&dir, &["env"]);
    run_spec.env = rch::envrules::plan(std::env::vars_os(), &Default::default()).forwarded;
    run_spec.env.push(("RCH_QUIET".into(), "1".into()));
    let (report, out, _) = capture(&conn, &run_spec).await;
    assert_eq!(exit_code(&report), 0);
    assert!(out
        .lines()
        .any(|l| l == "RUSTFLAGS=-C opt-level=1 $(touch PWNED)"));
    assert!(out.lines().any(|l| l == "CARGO_PROFILE_RELEASE_DEBUG=true"));
    // None of ours leaks; the script's own marker says it runs under rch.
    let rch_vars: Vec<&str> = out.lines().filter(|l| l.starts_with("RCH_")).collect();
    assert_eq!(rch_vars, ["RCH_INSIDE=1"], "{out}");
    assert!(!out.contains("CARGO_TARGET_DIR"), "{out}");
    assert!(!Path::new(&dir).join("PWNED").exists());
}

#[tokio::test]
async fn timeout_kills_the_remote_process_group() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let dir = fx.remote_dir("timeout");
    let secs = unique_sleep_secs();
    // A child in the background and one in the foreground: both must die.
    let script = format!("sleep {secs} & sleep {secs}; wait");
    let mut run_spec = spec(&dir, &["sh", "-c", &script]);
    run_spec.timeout = Duration::from_secs(2);
    let pattern = format!("sleep {secs}");
    let started = Instant::now();
    let report = remote::run(&conn, &run_spec).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(failure_kind(&report), FailureKind::Timeout);
    assert!(report.started);
    assert!(
        gone_within(&pattern, Duration::from_secs(6)).await,
        "left behind: {}",
        process_table()
    );
}

#[tokio::test]
async fn term_ignoring_commands_are_killed_too() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let dir = fx.remote_dir("stubborn");
    let secs = unique_sleep_secs();
    let script = format!("trap '' TERM; sleep {secs}; sleep {secs}");
    let mut run_spec = spec(&dir, &["sh", "-c", &script]);
    run_spec.timeout = Duration::from_secs(1);
    let pattern = format!("sleep {secs}");
    let report = remote::run(&conn, &run_spec).await;
    assert_eq!(failure_kind(&report), FailureKind::Timeout);
    assert!(
        gone_within(&pattern, Duration::from_secs(8)).await,
        "left behind: {}",
        process_table()
    );
}

/// Drops a run of a two-process command as soon as `started_pattern`
/// matches a process, and checks that nothing of it is left.
async fn drop_run_when(started_pattern: impl Fn(&str) -> String) {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let dir = fx.remote_dir("dropped");
    let secs = unique_sleep_secs();
    let script = format!("sleep {secs} & sleep {secs}; wait");
    let run_spec = spec(&dir, &["sh", "-c", &script]);
    let pattern = format!("sleep {secs}");
    let started = started_pattern(&secs);
    tokio::select! {
        _ = remote::run(&conn, &run_spec) => panic!("the command should still run"),
        running = appears_within(&started, Duration::from_secs(10)) => assert!(running),
    }
    assert!(
        gone_within(&pattern, Duration::from_secs(6)).await,
        "left behind: {}",
        process_table()
    );
}

#[tokio::test]
async fn dropping_the_run_future_kills_the_remote_group() {
    drop_run_when(|secs| format!("^sleep {secs}$")).await;
}

#[tokio::test]
async fn dropping_the_run_future_at_once_kills_the_remote_group() {
    // Matches the remote script itself, before the command has started.
    drop_run_when(|secs| format!("sleep {secs}")).await;
}

#[tokio::test]
async fn normal_end_leaves_no_watcher_behind() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let dir = fx.remote_dir("clean");
    let marker = format!("rch-clean-{}", unique_sleep_secs());
    let (report, _, _) = capture(&conn, &spec(&dir, &["true", &marker])).await;
    assert_eq!(exit_code(&report), 0);
    assert!(gone_within(&marker, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn missing_remote_dir_is_a_remote_dir_failure_before_start() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let missing = fx.remote_base().join("no-such-dir");
    let (report, _, err) = capture(&conn, &spec(&missing.to_string_lossy(), &["true"])).await;
    assert!(!report.started);
    assert_eq!(failure_kind(&report), FailureKind::RemoteDir);
    assert!(err.is_empty(), "{err}");
}

/// A project with files every exclude rule should catch.
fn sample_project(root: &Path) {
    let files = [
        "src/main.rs",
        "Cargo.toml",
        "target/debug/app",
        ".git/HEAD",
        "node_modules/x/index.js",
        ".env",
        ".env.local",
        "server.pem",
        "id.key",
        "secrets/token.txt",
        "big.iso",
        "docs/readme.md",
    ];
    for f in files {
        let path = root.join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, f).unwrap();
    }
    std::fs::write(root.join(".rchignore"), "# local only\n*.iso\n").unwrap();
}

#[tokio::test]
async fn push_honours_excludes_rchignore_and_delete() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let project = tempfile::tempdir().unwrap();
    sample_project(project.path());
    let remote_dir = remote::remote_project_dir(&fx.target().worker.remote_base, project.path());
    let extra = vec!["secrets/".to_string()];
    remote::push(&conn, project.path(), &remote_dir, &extra)
        .await
        .expect("push");
    let remote = PathBuf::from(&remote_dir);
    for present in ["src/main.rs", "Cargo.toml", "docs/readme.md", ".rchignore"] {
        assert!(remote.join(present).exists(), "{present} missing");
    }
    for absent in [
        "target",
        ".git",
        "node_modules",
        ".env",
        ".env.local",
        "server.pem",
        "id.key",
        "secrets",
        "big.iso",
    ] {
        assert!(!remote.join(absent).exists(), "{absent} was sent");
    }

    // A build output on the worker survives the next push; a file deleted
    // locally disappears remotely.
    std::fs::create_dir_all(remote.join("target/release")).unwrap();
    std::fs::write(remote.join("target/release/app"), "bin").unwrap();
    std::fs::remove_file(project.path().join("docs/readme.md")).unwrap();
    remote::push(&conn, project.path(), &remote_dir, &extra)
        .await
        .expect("second push");
    assert!(!remote.join("docs/readme.md").exists());
    assert!(remote.join("target/release/app").exists());
}

#[tokio::test]
async fn push_creates_a_home_relative_remote_dir() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("a.txt"), "a").unwrap();
    let unique = format!("rch-test-{}", unique_sleep_secs());
    let remote_dir = remote::remote_project_dir(&format!("~/.cache/{unique}"), project.path());
    assert!(remote_dir.starts_with(&format!(".cache/{unique}/")));
    remote::push(&conn, project.path(), &remote_dir, &[])
        .await
        .expect("push");
    // Relative to where the worker's ssh commands start (its login home),
    // checked and cleaned up on the worker: the client's home is untouched.
    let file = shell_escape::escape(format!("{remote_dir}/a.txt").into()).into_owned();
    let check = fx.env.ssh("w1", &format!("test -f {file}"));
    let _ = fx.env.ssh("w1", &format!("rm -rf .cache/{unique}"));
    assert!(check.status.success(), "{file} missing on the worker");
}

#[tokio::test]
async fn pull_dir_brings_artifacts_without_build_byproducts() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let project = tempfile::tempdir().unwrap();
    let remote_dir = fx.remote_dir("pull");
    let remote = PathBuf::from(&remote_dir);
    for f in [
        "target/release/app",
        "target/release/deps/libx.rlib",
        "target/release/deps/app.d",
        "target/release/incremental/x/y",
        "target/release/.fingerprint/app/hash",
        "target/release/build/x/out",
        "target/debug/other",
    ] {
        let p = remote.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, f).unwrap();
    }
    let local_keep = project.path().join("target/release/keep-me");
    std::fs::create_dir_all(local_keep.parent().unwrap()).unwrap();
    std::fs::write(&local_keep, "local").unwrap();

    let what = Pull::Dir {
        from: "target/release".into(),
        to: project.path().join("target/release"),
        complete: false,
    };
    remote::pull(&conn, project.path(), &remote_dir, &what, &[])
        .await
        .expect("pull");
    let local = project.path().join("target/release");
    assert!(local.join("app").exists());
    assert!(local.join("deps/libx.rlib").exists());
    assert!(local_keep.exists(), "pull must not delete local files");
    for absent in ["deps/app.d", "incremental", ".fingerprint", "build"] {
        assert!(!local.join(absent).exists(), "{absent} came back");
    }
    assert!(!project.path().join("target/debug").exists());

    let missing = Pull::Dir {
        from: "target/none".into(),
        to: project.path().join("target/none"),
        complete: false,
    };
    remote::pull(&conn, project.path(), &remote_dir, &missing, &[])
        .await
        .expect("a missing artifact dir is nothing to pull");
}

#[tokio::test]
async fn pull_tree_brings_newer_files_back() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("Makefile"), "all:").unwrap();
    let remote_dir = remote::remote_project_dir(&fx.target().worker.remote_base, project.path());
    remote::push(&conn, project.path(), &remote_dir, &[])
        .await
        .expect("push");
    let remote = PathBuf::from(&remote_dir);
    std::fs::write(remote.join("out.o"), "object").unwrap();
    std::fs::write(remote.join(".env"), "secret").unwrap();
    remote::pull(&conn, project.path(), &remote_dir, &Pull::Tree, &[])
        .await
        .expect("pull");
    assert_eq!(
        std::fs::read_to_string(project.path().join("out.o")).unwrap(),
        "object"
    );
    assert!(!project.path().join(".env").exists());
}

#[tokio::test]
async fn unwritable_remote_base_is_a_remote_dir_failure() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    fx.lab().break_remote_base("w1").unwrap();
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("a.txt"), "a").unwrap();
    let remote_dir = remote::remote_project_dir(&fx.target().worker.remote_base, project.path());
    let failure = remote::push(&conn, project.path(), &remote_dir, &[])
        .await
        .expect_err("push into a broken base");
    assert_eq!(failure.kind, FailureKind::RemoteDir, "{failure}");
    assert!(failure.message.starts_with("w1: remote dir "), "{failure}");
    assert!(!failure.message.contains('\n'));

    let probe = remote::probe(&fx.target()).await.expect_err("probe");
    assert_eq!(probe.kind, FailureKind::RemoteDir, "{probe}");
    assert!(probe.message.ends_with("Not a directory"), "{probe}");

    let (report, _, _) = capture(&conn, &spec(&remote_dir, &["true"])).await;
    assert!(!report.started);
    assert_eq!(failure_kind(&report), FailureKind::RemoteDir);
}

#[tokio::test]
async fn probe_reports_a_round_trip() {
    let fx = Fixture::new();
    let began = std::time::Instant::now();
    let (rtt, caps) = remote::probe(&fx.target()).await.expect("probe");
    // The round trip is measured, and is part of the probe's own time (no
    // absolute bound: a loaded machine makes every round trip slow).
    assert!(rtt > Duration::ZERO && rtt <= began.elapsed(), "{rtt:?}");
    assert!(caps.probed && caps.tools.contains_key("cargo"), "{caps:?}");
    assert!(caps.rustc.is_some(), "{caps:?}");
}

#[tokio::test]
async fn killed_sshd_is_connect_refused() {
    let fx = Fixture::new();
    fx.lab().kill("w1").unwrap();
    let failure = remote::connect(&fx.target()).await.expect_err("refused");
    assert_eq!(failure.kind, FailureKind::ConnectRefused, "{failure}");
    assert!(
        failure.message.starts_with("w1: ssh connect refused"),
        "{failure}"
    );
}

#[tokio::test]
async fn tarpit_is_a_connect_timeout_within_the_limit() {
    let fx = Fixture::new();
    let _tarpit = fx.lab().tarpit("w1").unwrap();
    let started = Instant::now();
    let failure = remote::connect(&fx.target()).await.expect_err("timeout");
    let elapsed = started.elapsed();
    assert_eq!(failure.kind, FailureKind::ConnectTimeout, "{failure}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test]
async fn revoked_key_is_an_auth_failure() {
    let fx = Fixture::new();
    fx.lab().revoke_key("w1").unwrap();
    let failure = remote::connect(&fx.target()).await.expect_err("auth");
    assert_eq!(failure.kind, FailureKind::Auth, "{failure}");
}

#[tokio::test]
async fn rotated_host_key_is_never_accepted() {
    let fx = Fixture::new();
    fx.lab().rotate_host_key("w1").unwrap();
    let failure = remote::connect(&fx.target()).await.expect_err("host key");
    assert_eq!(failure.kind, FailureKind::HostKey, "{failure}");

    // Not even with accept-new: a changed key is not a new one.
    let mut target = fx.target();
    target.ssh.strict_host_key_checking = HostKeyPolicy::AcceptNew;
    let failure = remote::connect(&target).await.expect_err("host key");
    assert_eq!(failure.kind, FailureKind::HostKey, "{failure}");
}

#[tokio::test]
async fn second_connect_reuses_the_master() {
    let fx = Fixture::new();
    let first = fx.connect().await;
    let started = Instant::now();
    let second = fx.connect().await;
    let elapsed = started.elapsed();
    assert_eq!(first.control_path(), second.control_path());
    assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");
    drop(first);
    drop(second);
    // Dropping connections leaves the shared master up for the next process.
    let third = fx.connect().await;
    assert!(third.control_path().exists());
}

#[tokio::test]
async fn disconnect_closes_the_master_and_connect_starts_afresh() {
    let fx = Fixture::new();
    let first = fx.connect().await;
    let old_path = first.control_path().to_path_buf();
    remote::disconnect(&fx.target()).await;
    assert!(!old_path.exists());
    let second = fx.connect().await;
    assert_ne!(second.control_path(), old_path);
    let (report, out, _) = capture(&second, &spec("/", &["echo", "ok"])).await;
    assert_eq!(exit_code(&report), 0);
    assert_eq!(out, "ok\n");
}

#[tokio::test]
async fn killed_sessions_mid_run_are_a_lost_connection() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let dir = fx.remote_dir("lost");
    let secs = unique_sleep_secs();
    let script = format!("sleep {secs}");
    let pattern = format!("sleep {secs}");
    let run_spec = spec(&dir, &["sh", "-c", &script]);
    let kill = async {
        assert!(appears_within(&format!("^{pattern}$"), Duration::from_secs(10)).await);
        fx.lab().kill_sessions("w1").unwrap();
    };
    let (report, ()) = tokio::join!(remote::run(&conn, &run_spec), kill);
    assert!(report.started);
    assert_eq!(failure_kind(&report), FailureKind::ConnectionLost);
    assert!(
        gone_within(&pattern, Duration::from_secs(6)).await,
        "left behind: {}",
        process_table()
    );
}

#[tokio::test]
async fn paused_worker_mid_run_is_noticed_as_a_lost_connection() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let dir = fx.remote_dir("paused");
    let secs = unique_sleep_secs();
    let run_spec = spec(&dir, &["sleep", &secs]);
    let pause = async {
        assert!(appears_within(&format!("^sleep {secs}$"), Duration::from_secs(10)).await);
        fx.lab().pause("w1").unwrap();
        Instant::now()
    };
    let (report, paused_at) = tokio::join!(remote::run(&conn, &run_spec), pause);
    let noticed_after = paused_at.elapsed();
    fx.lab().resume("w1").unwrap();
    assert_eq!(failure_kind(&report), FailureKind::ConnectionLost);
    assert!(
        noticed_after < Duration::from_secs(25),
        "noticed after {noticed_after:?}"
    );
}

#[tokio::test]
async fn killed_ssh_client_is_reported_as_killed() {
    let fx = Fixture::new();
    let conn = fx.connect().await;
    let dir = fx.remote_dir("client-killed");
    let secs = unique_sleep_secs();
    let run_spec = spec(&dir, &["sleep", &secs]);
    let kill_client = async {
        assert!(appears_within(&format!("^sleep {secs}$"), Duration::from_secs(10)).await);
        // The local ssh client of this run: a child of this process.
        let out = std::process::Command::new("pgrep")
            .args([
                "-P",
                &std::process::id().to_string(),
                "-f",
                &format!("sleep {secs}"),
            ])
            .output()
            .unwrap();
        let pids = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!pids.trim().is_empty(), "no ssh client found");
        for pid in pids.lines() {
            std::process::Command::new("kill")
                .args(["-KILL", pid])
                .status()
                .unwrap();
        }
    };
    let (report, ()) = tokio::join!(remote::run(&conn, &run_spec), kill_client);
    assert!(report.started);
    assert_eq!(failure_kind(&report), FailureKind::Killed);
    let pattern = format!("sleep {secs}");
    assert!(
        gone_within(&pattern, Duration::from_secs(6)).await,
        "left behind: {}",
        process_table()
    );
}
