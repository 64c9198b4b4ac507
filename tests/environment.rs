//! The remote build gets the client's environment by rule, on a real sshd
//! worker: what builds read arrives (a build-time `option_env!`,
//! `CARGO_ENCODED_RUSTFLAGS`, `CC` for make), machine-local and
//! secret-looking variables stay here unless `env.forward` names them, and
//! secret values reach neither the worker nor any log.

mod support;

use std::process::Output;
use support::{describe, TestEnv};

const SECRETS: [(&str, &str); 3] = [
    ("AWS_SECRET_ACCESS_KEY", "aws-value-5d1c9e"),
    ("GITHUB_TOKEN", "ghp-value-77ab31"),
    ("DB_PASSWORD", "pw-value-0c44f2"),
];

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn with_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env("CC", "gcc")
        .env("BUILD_STAMP", "stamp-42")
        .env("RCH_LOG", "debug");
    for (k, v) in SECRETS {
        cmd.env(k, v);
    }
    cmd
}

#[test]
fn builds_see_what_they_read_and_never_a_secret() {
    let env = TestEnv::new(1);
    let made = env.project("made");
    std::fs::write(
        made.join("Makefile"),
        "all:\n\t@echo compiler=$(CC)\n\t@env | sort\n",
    )
    .unwrap();

    let o = with_env(&mut env.rch_in(&made))
        .args(["-v", "exec", "--", "make"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let remote = out(&o);
    assert!(remote.contains("compiler=gcc"), "{remote}");
    assert!(remote.contains("BUILD_STAMP=stamp-42"), "{remote}");
    let withheld = err(&o);
    assert!(
        withheld.contains("AWS_SECRET_ACCESS_KEY (secret-looking)"),
        "{withheld}"
    );
    assert!(withheld.contains("HOME (machine-local)"), "{withheld}");

    let d = with_env(&mut env.rch_in(&made))
        .args(["diagnose", "make"])
        .output()
        .unwrap();
    let text = out(&d);
    assert!(text.contains("GITHUB_TOKEN (secret-looking)"), "{text}");
    assert!(text.contains("BUILD_STAMP"), "{text}");

    // Neither the worker, nor the client's output, nor the daemon's log ever
    // holds a secret's value.
    let daemon_log =
        std::fs::read_to_string(env.path().join("state/rch/daemon.log")).unwrap_or_default();
    assert!(!daemon_log.is_empty(), "the daemon logs to its file");
    for (name, value) in SECRETS {
        assert!(!remote.contains(value), "{name} reached the worker");
        assert!(!err(&o).contains(value), "{name} in the client's log");
        assert!(!text.contains(value), "{name} in diagnose");
        assert!(!daemon_log.contains(value), "{name} in the daemon's log");
    }

    // Named in env.forward, a secret-looking variable goes.
    env.write_config("[env]\nforward = [\"GITHUB_TOKEN\"]\nwithhold = [\"BUILD_*\"]\n");
    let o = with_env(&mut env.rch_in(&made))
        .args(["exec", "--", "make"])
        .output()
        .unwrap();
    assert!(
        out(&o).contains("GITHUB_TOKEN=ghp-value-77ab31"),
        "{}",
        describe(&o)
    );
    assert!(!out(&o).contains("BUILD_STAMP"), "{}", describe(&o));
    assert!(!out(&o).contains("aws-value-5d1c9e"), "{}", describe(&o));
}

#[test]
fn a_build_time_variable_and_encoded_rustflags_reach_the_compiler() {
    let env = TestEnv::new(1);
    let project = env.project("stamped");
    std::fs::write(
        project.join("src/main.rs"),
        "fn main() {\n    println!(\"stamp={:?} cfg={} v={}\", option_env!(\"BUILD_STAMP\"), cfg!(stamped), env!(\"CARGO_PKG_VERSION_MAJOR\"));\n}\n",
    )
    .unwrap();
    // What cargo itself sets for the crate (`env!("CARGO_PKG_…")`) is read
    // too, and is no reason to run the build again here.
    let o = env
        .rch_in(&project)
        .env("BUILD_STAMP", "stamp-42")
        .env("CARGO_ENCODED_RUSTFLAGS", "--cfg\u{1f}stamped")
        .args(["exec", "--", "cargo", "build"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(err(&o).contains("rch: ran on w1"), "{}", describe(&o));
    let binary = project.join("target/debug/stamped");
    let run = std::process::Command::new(&binary).output().unwrap();
    assert_eq!(
        out(&run).trim(),
        "stamp=Some(\"stamp-42\") cfg=true v=0",
        "{}",
        describe(&run)
    );
}

/// A variable the build read that the worker did not get (here withheld by
/// config) is never silently absent: the build runs locally and says why, or
/// exits 75 with `on_mismatch = "fail"`.
#[test]
fn a_build_that_read_a_withheld_variable_is_not_handed_back() {
    let env = TestEnv::new(1);
    let project = env.project("withheld");
    std::fs::write(
        project.join("src/main.rs"),
        "fn main() {\n    println!(\"stamp={:?}\", option_env!(\"BUILD_STAMP\"));\n}\n",
    )
    .unwrap();
    env.write_config("[env]\nwithhold = [\"BUILD_*\"]\n");
    let build = || {
        env.rch_in(&project)
            .env("BUILD_STAMP", "stamp-42")
            .args(["exec", "--", "cargo", "build"])
            .output()
            .unwrap()
    };
    let o = build();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        err(&o).contains("rch: ran locally: the build read BUILD_STAMP"),
        "{}",
        describe(&o)
    );
    let run = std::process::Command::new(project.join("target/debug/withheld"))
        .output()
        .unwrap();
    assert_eq!(out(&run).trim(), "stamp=Some(\"stamp-42\")");

    env.write_config("[env]\nwithhold = [\"BUILD_*\"]\non_mismatch = \"fail\"\n");
    let o = build();
    assert_eq!(o.status.code(), Some(75), "{}", describe(&o));
    assert!(err(&o).contains("BUILD_STAMP"), "{}", describe(&o));
    assert_eq!(env.circuit("w1").failures, 0);
}
