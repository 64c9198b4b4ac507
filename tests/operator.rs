//! Operator surfaces against real sshd workers: `rch status`, `rch workers`,
//! `rch events`, `rch metrics`, `rch diagnose`, `rch completions`.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::Duration;
use support::{describe, wait_for, TestEnv};

/// A quick offloadable build, and a slow one for drain.
const MAKEFILE: &str = "quick:\n\ttrue\nslow:\n\tsleep 4 && echo slow-done\n";

fn setup(workers: usize, extra_config: &str) -> TestEnv {
    let env = TestEnv::new(workers);
    env.write_config(extra_config);
    std::fs::write(env.project_dir.join("Makefile"), MAKEFILE).unwrap();
    env
}

fn rch(env: &TestEnv, args: &[&str]) -> Output {
    env.rch().args(args).output().expect("running rch")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run rch and parse its stdout as one JSON document.
fn json(env: &TestEnv, args: &[&str]) -> Value {
    let out = rch(env, args);
    assert!(out.status.success(), "rch {args:?}: {}", describe(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("rch {args:?}: {e}: {}", describe(&out)))
}

fn circuit(env: &TestEnv, id: &str) -> Value {
    json(env, &["status", "--circuits", "--json"])["circuits"][id].clone()
}

/// `rch exec -- make quick`, checking where it says it ran.
fn build(env: &TestEnv, expect_where: &str) {
    let out = rch(env, &["exec", "--", "make", "quick"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stderr(&out).contains(expect_where),
        "wanted {expect_where:?}: {}",
        describe(&out)
    );
}

/// Kill `id` and run a build so its circuit opens (threshold 1 in these
/// tests); the build itself goes to another worker or runs locally.
fn open_circuit(env: &TestEnv, id: &str) {
    env.lab.kill(id).unwrap();
    build(env, "rch: ran ");
    assert_eq!(circuit(env, id)["state"], "open");
}

fn event_names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["event"].as_str().map(String::from))
        .collect()
}

/// Positions of `wanted` in `names`, in order, each after the previous one.
fn in_order(names: &[String], wanted: &[&str]) -> bool {
    let mut from = 0;
    for w in wanted {
        match names[from..].iter().position(|n| n == w) {
            Some(i) => from += i + 1,
            None => return false,
        }
    }
    true
}

/// w1 fails once and opens; it is tried first (higher priority than w2).
const OPEN_ON_FIRST_FAILURE: &str = "[circuit]\nfailure_threshold = 1\nopen_cooldown_secs = 600\n\n[[workers]]\nid = \"w1\"\npriority = 200\n";

#[test]
fn status_shows_an_open_circuit_live_and_with_the_daemon_stopped() {
    let env = setup(2, OPEN_ON_FIRST_FAILURE);
    open_circuit(&env, "w1");

    let doc = json(&env, &["status", "--circuits", "--json"]);
    let top: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(top, ["circuits"], "{doc}");
    let w1 = &doc["circuits"]["w1"];
    assert_eq!(w1["state"], "open");
    assert_eq!(w1["failures"], 1);
    assert!(
        w1["since"].as_str().is_some_and(|s| s.contains('T')),
        "{w1}"
    );
    let retry = w1["retry_in_secs"].as_u64().expect("retry_in_secs");
    assert!(retry > 0 && retry <= 600, "{w1}");
    assert!(
        w1["last_error"].as_str().is_some_and(|e| e.contains("w1")),
        "{w1}"
    );
    assert_eq!(doc["circuits"]["w2"]["state"], "closed");
    assert_eq!(doc["circuits"]["w2"]["failures"], 0);

    // The plain overview alone tells which, since when, why and what to run.
    let out = rch(&env, &["status"]);
    let text = stdout(&out);
    assert!(text.starts_with("rch daemon: running"), "{text}");
    assert!(
        text.contains("2 workers: 1 closed, 1 open (w1, retry in"),
        "{text}"
    );
    assert!(text.contains("⚠ 1 circuit open"), "{text}");
    assert!(text.contains("w1: open since"), "{text}");
    assert!(text.contains("last error: w1"), "{text}");
    assert!(
        text.contains("rch workers probe w1") && text.contains("rch workers reset w1"),
        "{text}"
    );

    let out = rch(&env, &["status", "--circuits"]);
    let text = stdout(&out);
    assert!(text.starts_with("⚠ 1 circuit open"), "{text}");
    assert!(
        text.contains("LAST ERROR"),
        "piped output is plain columns: {text}"
    );

    let jobs = json(&env, &["status", "--jobs", "--json"]);
    let recent = jobs["recent_jobs"].as_array().unwrap();
    assert_eq!(recent[0]["placement"], "w2", "{jobs}");
    assert!(
        recent[0]["reason"].as_str().unwrap().contains("w1"),
        "{jobs}"
    );

    let stop = rch(&env, &["daemon", "stop"]);
    assert!(stop.status.success(), "{}", describe(&stop));
    let out = rch(&env, &["status", "--circuits", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["circuits"]["w1"]["state"], "open");
    assert_eq!(doc["circuits"]["w1"]["failures"], 1);
    assert!(
        stderr(&out).contains("daemon not running"),
        "{}",
        describe(&out)
    );
    let out = rch(&env, &["status"]);
    assert!(
        stdout(&out).starts_with("rch daemon: not running"),
        "{}",
        describe(&out)
    );
    assert!(
        stdout(&out).contains("⚠ 1 circuit open"),
        "{}",
        describe(&out)
    );
    // Status never starts the daemon.
    assert!(!env.socket().exists(), "status started a daemon");
    assert_eq!(rch(&env, &["daemon", "status"]).status.code(), Some(3));
}

#[test]
fn probe_fails_on_a_dead_worker_and_recovers_a_live_one() {
    let env = setup(1, OPEN_ON_FIRST_FAILURE);
    open_circuit(&env, "w1");

    let out = rch(&env, &["workers", "probe", "w1"]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(stdout(&out).contains("w1: failed"), "{}", describe(&out));
    for line in stdout(&out).lines() {
        support::formats::assert_printed(line);
    }
    assert_eq!(circuit(&env, "w1")["state"], "open");

    env.lab.revive("w1").unwrap();
    let out = rch(&env, &["workers", "probe", "--all", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["results"][0]["ok"], true, "{doc}");
    let state = circuit(&env, "w1")["state"].as_str().unwrap().to_string();
    assert!(state == "half_open" || state == "closed", "{state}");

    let out = rch(&env, &["workers", "probe", "nope"]);
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    assert!(stderr(&out).contains("known: w1"), "{}", describe(&out));
    let out = rch(&env, &["workers", "drain", "nope"]);
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
}

#[test]
fn reset_closes_and_zeroes_and_is_an_event() {
    let env = setup(1, OPEN_ON_FIRST_FAILURE);
    open_circuit(&env, "w1");
    let out = rch(&env, &["workers", "reset", "w1"]);
    assert!(out.status.success(), "{}", describe(&out));
    let w1 = circuit(&env, "w1");
    assert_eq!(w1["state"], "closed", "{w1}");
    assert_eq!(w1["failures"], 0, "{w1}");
    let out = rch(&env, &["events", "--json"]);
    let events: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert!(
        in_order(&event_names(&events), &["circuit.opened", "circuit.reset"]),
        "{events:?}"
    );
    assert!(events.iter().all(|e| e["at"].is_string()));
}

#[test]
fn drain_stops_new_leases_while_the_running_build_finishes() {
    let env = setup(1, "");
    build(&env, "rch: ran on w1");
    let slow: Child = env
        .rch()
        .args(["exec", "--", "make", "slow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let leased = wait_for(Duration::from_secs(30), || {
        let jobs = json(&env, &["status", "--jobs", "--json"]);
        !jobs["leases"].as_array().unwrap().is_empty()
    });
    assert!(leased, "the slow build never took a lease");

    let out = rch(&env, &["workers", "drain", "w1"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("w1: draining"), "{}", describe(&out));
    build(&env, "rch: ran locally");
    let workers = json(&env, &["status", "--workers", "--json"]);
    assert_eq!(workers["workers"][0]["draining"], true, "{workers}");

    let done = slow.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(0), "{}", describe(&done));
    assert!(stdout(&done).contains("slow-done"), "{}", describe(&done));
    assert!(
        stderr(&done).contains("rch: ran on w1"),
        "{}",
        describe(&done)
    );

    let out = rch(&env, &["workers", "enable", "w1"]);
    assert!(out.status.success(), "{}", describe(&out));
    build(&env, "rch: ran on w1");
}

#[test]
fn history_and_events_show_the_transitions_in_order() {
    let env = setup(
        1,
        "[circuit]\nfailure_threshold = 1\nopen_cooldown_secs = 1\nsuccess_threshold = 1\n",
    );
    env.lab.kill("w1").unwrap();
    build(&env, "rch: ran locally");
    env.lab.revive("w1").unwrap();
    let closed = wait_for(Duration::from_secs(30), || {
        circuit(&env, "w1")["state"] == "closed"
    });
    if !closed {
        let logs = rch(&env, &["daemon", "logs", "-n", "60"]);
        let events = rch(&env, &["events"]);
        panic!(
            "w1 never closed by probes\n{}\n{}",
            stdout(&logs),
            stdout(&events)
        );
    }

    let h = json(&env, &["workers", "history", "w1", "--json"]);
    let names = event_names(h["events"].as_array().unwrap());
    assert!(
        in_order(
            &names,
            &["circuit.opened", "circuit.half_open", "circuit.closed"]
        ),
        "{names:?}"
    );
    let text = stdout(&rch(&env, &["workers", "history", "w1"]));
    assert!(text.contains("w1: opened after 1 failures"), "{text}");

    let out = rch(&env, &["events"]);
    let text = stdout(&out);
    let opened = text.find("circuit.opened").expect("opened line");
    let closed = text.rfind("circuit.closed").expect("closed line");
    assert!(opened < closed, "{text}");

    // --follow streams what happens next.
    let mut follow = env
        .rch()
        .args(["events", "--follow", "--json", "-n", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().unwrap()));
    std::thread::sleep(Duration::from_millis(300));
    assert!(rch(&env, &["workers", "reset", "w1"]).status.success());
    let line = lines.next().expect("a live event").unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["event"], "circuit.reset", "{line}");
}

#[test]
fn metrics_count_real_builds() {
    let env = setup(1, "");
    let out = rch(&env, &["metrics"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "no daemon, no metrics: {}",
        describe(&out)
    );
    build(&env, "rch: ran on w1");
    build(&env, "rch: ran on w1");
    let text = stdout(&rch(&env, &["metrics"]));
    assert!(
        text.contains("rch_builds_total{outcome=\"success\",placement=\"remote\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("rch_circuit_state{worker=\"w1\"} 0"),
        "{text}"
    );
    let doc = json(&env, &["metrics", "--json"]);
    let granted = doc["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "rch_leases_total" && m["labels"]["result"] == "granted")
        .expect("leases granted sample");
    assert!(granted["value"].as_f64().unwrap() >= 2.0, "{granted}");
}

#[test]
fn diagnose_explains_without_running_anything() {
    let env = setup(2, OPEN_ON_FIRST_FAILURE);
    open_circuit(&env, "w1");
    let d = json(&env, &["diagnose", "--json", "make quick && touch ran"]);
    assert_eq!(d["offload"], false, "{d}");
    assert_eq!(d["placement"], "local");

    let d = json(&env, &["diagnose", "--json", "make quick"]);
    assert_eq!(d["offload"], true, "{d}");
    assert_eq!(d["enabled"]["value"], "true");
    assert_eq!(d["fallback"]["value"], "local");
    assert_eq!(d["daemon_running"], true);
    assert_eq!(d["placement"], "remote");
    // w2 took the build that opened w1, so it is also the warm worker.
    assert_eq!(
        d["verdict"], "would run on w2 (it last built this project)",
        "{d}"
    );
    assert!(
        d["workers"][0]["why"]
            .as_str()
            .unwrap()
            .starts_with("circuit open"),
        "{d}"
    );

    let out = env
        .rch()
        .env("RCH_DISABLE", "1")
        .args(["diagnose", "cargo build"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("enabled:   false (from env RCH_DISABLE)"),
        "{text}"
    );
    assert!(
        text.contains("verdict:   runs locally: rch is disabled"),
        "{text}"
    );
    assert!(!env.project_dir.join("ran").exists());
    assert!(
        !Path::new(&env.project_dir.join("target")).exists(),
        "diagnose built something"
    );
}

#[test]
fn completions_cover_the_operator_commands() {
    let rch = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rch"))
            .args(args)
            .output()
            .unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let out = rch(&["completions", shell]);
        assert!(out.status.success(), "{}", describe(&out));
        let text = stdout(&out);
        assert!(
            text.contains("RCH_COMPLETE") && text.contains(env!("CARGO_BIN_EXE_rch")),
            "{shell}: {text}"
        );
    }
    // A value the command line does not accept is a usage error: exit 64.
    assert_eq!(rch(&["completions", "tcsh"]).status.code(), Some(64));
    assert_eq!(rch(&["exec"]).status.code(), Some(64));
    assert_eq!(rch(&["no-such-command"]).status.code(), Some(64));
    assert_eq!(rch(&["--help"]).status.code(), Some(0));
}

#[test]
fn metrics_listen_serves_the_same_text_over_http() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = setup(
        1,
        &format!("[daemon]\nmetrics_listen = \"127.0.0.1:{port}\"\n"),
    );
    build(&env, "rch: ran on w1");
    let mut body = String::new();
    let scraped = wait_for(Duration::from_secs(5), || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        body.clear();
        s.read_to_string(&mut body).is_ok() && body.contains("rch_builds_total")
    });
    assert!(scraped, "no metrics over HTTP: {body}");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(
        body.contains("rch_builds_total{outcome=\"success\",placement=\"remote\"} 1"),
        "{body}"
    );
}

#[test]
fn verbose_exec_prints_its_phases_and_the_job_keeps_them() {
    let env = setup(1, "");
    // RCH_LOG reaches the client (stderr) and the daemon this build starts.
    let out = env
        .rch()
        .env("RCH_LOG", "rch=debug")
        .args(["exec", "-v", "--", "make", "quick"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    let phase_line = err
        .lines()
        .find(|l| l.starts_with("rch: lease "))
        .unwrap_or_else(|| panic!("no phase line: {err}"));
    for phase in [
        " · connect ",
        " · snapshot ",
        " · push ",
        " · run ",
        " · pull ",
        " · release ",
    ] {
        assert!(phase_line.contains(phase), "{phase_line}");
    }
    assert!(
        phase_line.ends_with("ms") || phase_line.ends_with('s'),
        "{phase_line}"
    );
    support::formats::assert_printed(phase_line);
    for line in err.lines().filter(|l| l.starts_with("rch: ran")) {
        support::formats::assert_printed(line);
    }
    // The client's trace: each phase a span closed with its duration.
    assert!(
        err.lines()
            .any(|l| l.contains("push") && l.contains("close time.busy")),
        "{err}"
    );

    let jobs = json(&env, &["status", "--jobs", "--json"]);
    let phases: Vec<&str> = jobs["recent_jobs"][0]["phases"]
        .as_array()
        .unwrap_or_else(|| panic!("{jobs}"))
        .iter()
        .filter_map(|p| p["phase"].as_str())
        .collect();
    assert_eq!(
        phases,
        ["lease", "connect", "snapshot", "push", "run", "pull", "release"],
        "{jobs}"
    );
    let history = stdout(&rch(&env, &["workers", "history", "w1"]));
    assert!(
        history.contains("lease ") && history.contains(" · run "),
        "{history}"
    );

    // The daemon's log has the lease it granted and the job with its phases.
    let logs = stdout(&rch(&env, &["daemon", "logs"]));
    assert!(
        logs.contains("granted") && logs.contains("job recorded"),
        "{logs}"
    );
}

#[test]
fn completion_offers_subcommands_and_the_configured_worker_ids() {
    let env = setup(2, "");
    // Through bash's own completion machinery, as a user's Tab would.
    let script = r#"
source <(rch completions bash)
complete_words() {
    COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_TYPE=9
    _clap_complete_rch rch "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf '%s\n' "${COMPREPLY[@]}"
}
echo "== workers"; complete_words rch work
echo "== probe"; complete_words rch workers probe w
echo "== history"; complete_words rch workers history w
echo "== exec"; complete_words rch exec --worker ""
echo "== end"
"#;
    let rch_dir = Path::new(env!("CARGO_BIN_EXE_rch")).parent().unwrap();
    let path = format!(
        "{}:{}",
        rch_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut bash = std::process::Command::new("bash");
    env.apply_env(&mut bash);
    let out = bash
        .args(["-c", script])
        .env("PATH", path)
        .current_dir(&env.project_dir)
        .output()
        .unwrap();
    let text = stdout(&out);
    let section = |name: &str| -> Vec<String> {
        text.split(&format!("== {name}\n"))
            .nth(1)
            .unwrap_or("")
            .split("== ")
            .next()
            .unwrap_or("")
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    assert_eq!(section("workers"), ["workers"], "{}", describe(&out));
    assert_eq!(section("probe"), ["w1", "w2"], "{}", describe(&out));
    assert_eq!(section("history"), ["w1", "w2"], "{}", describe(&out));
    // An empty word: the ids first, then (for a flag's value) nothing else.
    assert_eq!(section("exec"), ["w1", "w2"], "{}", describe(&out));
}

#[test]
fn lab_up_and_down_are_picked_up_by_a_running_daemon() {
    let env = TestEnv::new(1);
    // No RCH_CONFIG and an empty user config: the lab layer is the only one.
    std::fs::write(env.config_file(), "").unwrap();
    let rch = |args: &[&str]| {
        let out = env
            .rch()
            .env_remove("RCH_CONFIG")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        out
    };
    let ids = |out: Output| -> Vec<String> {
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap().to_string())
            .collect()
    };
    rch(&["daemon", "start"]);
    assert!(ids(rch(&["workers", "list", "--json"])).is_empty());
    let up = rch(&["lab", "up", "--workers", "1"]);
    assert!(
        stdout(&up).contains("rch lab: the running daemon reloaded its configuration"),
        "{}",
        describe(&up)
    );
    assert_eq!(ids(rch(&["workers", "list", "--json"])), ["w1"]);
    rch(&["lab", "down"]);
    assert!(ids(rch(&["workers", "list", "--json"])).is_empty());
}
