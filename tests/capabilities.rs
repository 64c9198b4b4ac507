//! A fleet that is not uniform, on real sshd workers: one worker without a
//! Rust toolchain (its view of the rustup and cargo homes is empty), one whose
//! `rustc` reports another release (a shim first on its PATH), and a healthy
//! one. Builds go only where they can run with the client's toolchain; a
//! missing tool is a routing fact, never the build's exit code, never a
//! breaker charge.

mod support;

use rch::lab::LabToolchain;
use std::process::Output;
use std::time::Duration;
use support::{describe, TestEnv};

const WAIT: Duration = Duration::from_secs(30);

fn run(env: &TestEnv, args: &[&str]) -> Output {
    env.rch().args(args).output().expect("running rch")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Start the daemon and wait until it learned every worker's capabilities.
fn start_and_learn(env: &TestEnv) {
    let o = run(env, &["daemon", "start"]);
    assert!(o.status.success(), "{}", describe(&o));
    wait_learned(env);
}

/// Wait until the daemon knows every worker's capabilities.
fn wait_learned(env: &TestEnv) {
    let learned = support::wait_for(WAIT, || {
        env.fleet()
            .workers
            .iter()
            .all(|w| w.capabilities.as_ref().is_some_and(|c| c.probed))
    });
    assert!(learned, "capabilities learned: {:?}", env.fleet().workers);
}

fn has_cargo(env: &TestEnv, id: &str) -> Option<bool> {
    let fleet = env.fleet();
    let w = fleet.workers.iter().find(|w| w.id == id)?;
    let caps = w.capabilities.as_ref()?;
    caps.probed.then(|| !caps.lacks("cargo"))
}

#[test]
fn a_worker_without_the_tool_is_skipped_and_its_breaker_untouched() {
    let mut env = TestEnv::new(2);
    env.write_config(
        "[[workers]]\nid = \"w1\"\npriority = 200\n\n[[workers]]\nid = \"w2\"\npriority = 100\n",
    );
    start_and_learn(&env);
    assert_eq!(has_cargo(&env, "w1"), Some(true));

    // The toolchain vanishes after the probe: only the build finds out.
    env.lab
        .set_toolchain("w1", LabToolchain::Hidden)
        .expect("hiding w1's toolchain");
    let o = run(&env, &["exec", "--", "cargo", "build"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        stderr(&o).contains("rch: ran on w2"),
        "{}\n{:#?}",
        describe(&o),
        env.fleet().workers
    );
    assert!(!stderr(&o).contains("127"), "{}", describe(&o));
    let c = env.circuit("w1");
    assert_eq!((c.state.as_str(), c.failures), ("closed", 0));

    // The daemon remembers and probes again; the next build goes straight to w2.
    assert!(support::wait_for(WAIT, || has_cargo(&env, "w1") == Some(false)));
    let o = run(&env, &["-v", "exec", "--", "cargo", "build"]);
    assert!(
        stderr(&o).contains("rch: ran on w2"),
        "{}\n{:#?}",
        describe(&o),
        env.fleet().workers
    );
    let d = run(&env, &["diagnose", "cargo build"]);
    let text = stdout(&d);
    assert!(
        text.contains("w1") && text.contains("has no cargo"),
        "{text}"
    );

    // It still takes builds it can do (a project nobody built yet).
    let made = env.project("made");
    std::fs::write(made.join("Makefile"), "all:\n\t@echo made-here\n").unwrap();
    let o = env
        .rch_in(&made)
        .args(["exec", "--", "make"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(stderr(&o).contains("rch: ran on w1"), "{}", describe(&o));
    assert!(stdout(&o).contains("made-here"), "{}", describe(&o));

    // Probe output names the tools; a required tool it lacks fails the probe.
    let p = run(&env, &["workers", "probe", "w1"]);
    assert!(p.status.success(), "{}", describe(&p));
    assert!(
        stdout(&p).contains("make") || stderr(&p).contains("make"),
        "{}",
        describe(&p)
    );
    env.write_config(
        "[[workers]]\nid = \"w1\"\npriority = 200\ntools = [\"cargo\", \"make\"]\n\n[[workers]]\nid = \"w2\"\n",
    );
    let r = run(&env, &["daemon", "reload"]);
    assert!(r.status.success(), "{}", describe(&r));
    let p = run(&env, &["workers", "probe", "w1", "--json"]);
    assert!(!p.status.success(), "{}", describe(&p));
    let json: serde_json::Value = serde_json::from_slice(&p.stdout).expect("probe json");
    let result = &json["results"][0];
    assert_eq!(result["ok"], false, "{json}");
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("missing tool: cargo"),
        "{json}"
    );
    assert!(
        result["capabilities"]["tools"]["make"].is_string(),
        "{json}"
    );
    assert_eq!(env.circuit("w1").state, "closed");

    let list = run(&env, &["workers", "list", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&list.stdout).expect("list json");
    let w2 = &json["workers"][1];
    assert!(
        w2["capabilities"]["rustc"]["commit_hash"].is_string(),
        "{json}"
    );
}

#[test]
fn cargo_builds_go_only_to_the_clients_rustc() {
    let mut env = TestEnv::new(2);
    env.lab
        .set_toolchain(
            "w1",
            LabToolchain::Reports {
                release: "1.80.0".into(),
            },
        )
        .expect("shimming w1's rustc");
    env.write_config(
        "[[workers]]\nid = \"w1\"\npriority = 200\n\n[[workers]]\nid = \"w2\"\npriority = 100\n",
    );
    start_and_learn(&env);

    let o = run(&env, &["exec", "--", "cargo", "build"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        stderr(&o).contains("rch: ran on w2"),
        "{}\n{:#?}",
        describe(&o),
        env.fleet().workers
    );

    let local = rch::needs::needs(
        &["cargo".into(), "build".into()],
        &env.project_dir,
        rch::classify::Tool::Cargo,
    );
    let release = local.rustc.expect("a local rustc").release;
    let o = run(&env, &["exec", "--worker", "w1", "--", "cargo", "build"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let line = format!("rch: ran locally: no worker has rustc {release} (w1 has 1.80.0)");
    assert!(stderr(&o).contains(&line), "want {line}\n{}", describe(&o));

    let d = run(&env, &["diagnose", "cargo build"]);
    let text = stdout(&d);
    assert!(text.contains("has rustc 1.80.0"), "{text}");
    assert!(text.contains("would run on w2"), "{text}");

    // `toolchain = "any"` on w1 lets it build with what it has.
    env.write_config(
        "[[workers]]\nid = \"w1\"\npriority = 200\ntoolchain = \"any\"\n\n[[workers]]\nid = \"w2\"\n",
    );
    let r = run(&env, &["daemon", "reload"]);
    assert!(r.status.success(), "{}", describe(&r));
    wait_learned(&env);
    let fresh = env.project("fresh");
    let o = env
        .rch_in(&fresh)
        .args(["exec", "--", "cargo", "build"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(stderr(&o).contains("rch: ran on w1"), "{}", describe(&o));
    for id in ["w1", "w2"] {
        assert_eq!(env.circuit(id).failures, 0, "{id}");
    }
}
