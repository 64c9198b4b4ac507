//! Smoke test of the lab itself: real sshd workers answer with strict host
//! key checking, and every fault the lab injects shows up to an ssh client
//! the way it would from a real broken worker.

mod support;

use rch::lab::WorkerHealth;
use std::process::{Command, Output};
use std::time::Duration;
use support::{describe, wait_for, TestEnv};

/// Short enough to keep the test fast, long enough for a loaded machine.
const HANG_TIMEOUT: &str = "ConnectTimeout=2";

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_echo_works(env: &TestEnv, id: &str) {
    let out = env.ssh(id, &format!("echo hello-{id}"));
    assert!(out.status.success(), "{id}: {}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("hello-{id}")
    );
}

fn assert_ssh_fails_with(env: &TestEnv, id: &str, expected: &str) {
    let out = env.ssh_with(id, &["-o", HANG_TIMEOUT], "true");
    assert_eq!(out.status.code(), Some(255), "{id}: {}", describe(&out));
    assert!(
        stderr(&out).contains(expected),
        "{id}: expected `{expected}`: {}",
        describe(&out)
    );
}

#[test]
fn workers_answer_over_strict_ssh() {
    let env = TestEnv::new(2);
    let config = std::fs::read_to_string(env.lab.ssh_config()).unwrap();
    assert!(config.contains("StrictHostKeyChecking yes"));
    for worker in env.lab.workers() {
        assert_eq!(env.lab.health(&worker.id), WorkerHealth::Up);
        assert_echo_works(&env, &worker.id);
        let base = worker.remote_base.display();
        let out = env.ssh(&worker.id, &format!("mkdir -p '{base}/p' && echo ok"));
        assert!(out.status.success(), "{}", describe(&out));
    }
}

#[test]
fn kill_refuses_and_revive_restores() {
    let env = TestEnv::new(2);
    env.lab.kill("w1").unwrap();
    assert_eq!(env.lab.health("w1"), WorkerHealth::Down);
    assert_ssh_fails_with(&env, "w1", "Connection refused");
    assert_echo_works(&env, "w2");
    env.lab.revive("w1").unwrap();
    assert_eq!(env.lab.health("w1"), WorkerHealth::Up);
    assert_echo_works(&env, "w1");
}

#[test]
fn pause_and_tarpit_hang_until_undone() {
    let env = TestEnv::new(2);
    env.lab.pause("w1").unwrap();
    assert_eq!(env.lab.health("w1"), WorkerHealth::Stopped);
    assert_ssh_fails_with(&env, "w1", "timed out");
    env.lab.resume("w1").unwrap();
    assert_echo_works(&env, "w1");

    let tarpit = env.lab.tarpit("w2").unwrap();
    assert_eq!(env.lab.health("w2"), WorkerHealth::Tarpit);
    assert_ssh_fails_with(&env, "w2", "banner exchange");
    drop(tarpit);
    env.lab.revive("w2").unwrap();
    assert_echo_works(&env, "w2");

    // Reviving ends a tarpit whose guard is still held.
    let _held = env.lab.tarpit("w2").unwrap();
    env.lab.revive("w2").unwrap();
    assert_eq!(env.lab.health("w2"), WorkerHealth::Up);
    assert_echo_works(&env, "w2");
}

#[test]
fn key_faults_fail_authentication_and_verification() {
    let env = TestEnv::new(2);
    env.lab.revoke_key("w1").unwrap();
    assert_eq!(env.lab.health("w1"), WorkerHealth::KeyRevoked);
    assert_ssh_fails_with(&env, "w1", "Permission denied");

    env.lab.rotate_host_key("w2").unwrap();
    assert_eq!(env.lab.health("w2"), WorkerHealth::HostKeyChanged);
    assert_ssh_fails_with(&env, "w2", "Host key verification failed");

    for id in ["w1", "w2"] {
        env.lab.heal(id).unwrap();
        assert_eq!(env.lab.health(id), WorkerHealth::Up);
        assert_echo_works(&env, id);
    }
}

#[test]
fn broken_remote_base_refuses_directories() {
    let env = TestEnv::new(1);
    let base = env.lab.workers()[0].remote_base.display().to_string();
    env.lab.break_remote_base("w1").unwrap();
    assert_eq!(env.lab.health("w1"), WorkerHealth::BaseBroken);
    let out = env.ssh("w1", &format!("mkdir -p '{base}/project'"));
    assert!(!out.status.success(), "{}", describe(&out));
    env.lab.heal("w1").unwrap();
    let out = env.ssh("w1", &format!("mkdir -p '{base}/project'"));
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn lost_sessions_and_their_leftovers_are_tracked() {
    let env = TestEnv::new(1);
    let mut client = env.ssh_command("w1", &[], "sleep 30").spawn().unwrap();
    let lab = &env.lab;
    let running_sleep = || {
        lab.session_processes("w1").into_iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
    };
    assert!(wait_for(Duration::from_secs(10), running_sleep));

    env.lab.kill_sessions("w1").unwrap();
    let status = wait_for(Duration::from_secs(5), || {
        matches!(client.try_wait(), Ok(Some(_)))
    });
    assert!(status, "the ssh client outlived its connection");
    assert_eq!(client.wait().unwrap().code(), Some(255));
    assert_eq!(env.lab.health("w1"), WorkerHealth::Up);
    // The remote command lost its connection but runs on: still counted.
    assert!(running_sleep());

    env.lab.kill("w1").unwrap();
    assert!(wait_for(Duration::from_secs(3), || env
        .lab
        .session_processes("w1")
        .is_empty()));
}

#[test]
fn test_env_merges_config_and_makes_projects() {
    let env = TestEnv::new(2);
    env.write_config("[circuit]\nfailure_threshold = 1\n\n[[workers]]\nid = \"w2\"\nslots = 1\n");
    let text = std::fs::read_to_string(env.config_file()).unwrap();
    let config: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(config["circuit"]["failure_threshold"].as_integer(), Some(1));
    let workers = config["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    assert_eq!(workers[1]["slots"].as_integer(), Some(1));
    assert_eq!(workers[0]["slots"].as_integer(), Some(4));
    assert_eq!(
        config["ssh"]["strict_host_key_checking"].as_str(),
        Some("yes")
    );

    let odd = env.project("my app ünï");
    let manifest = std::fs::read_to_string(odd.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"my_app__n_\""), "{manifest}");
    assert!(env.socket().as_os_str().len() < 100);
}

/// `rch lab` drives a lab in the XDG state dir across separate processes.
#[test]
fn lab_command_round_trip() {
    let home = tempfile::Builder::new()
        .prefix("rch-t-")
        .tempdir_in("/tmp")
        .unwrap();
    let rch = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_rch"))
            .args(args)
            .env("XDG_STATE_HOME", home.path())
            .env_remove("RCH_CONFIG")
            .output()
            .unwrap()
    };
    let stdout = |out: &Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let lab_dir = home.path().join("rch/lab");

    let up = rch(&["lab", "up", "--workers", "1"]);
    assert!(up.status.success(), "{}", describe(&up));
    assert!(stdout(&up).contains("rch exec -- cargo build"));
    assert!(lab_dir.join("config.toml").exists());

    let again = rch(&["lab", "up"]);
    assert!(
        stdout(&again).contains("already up"),
        "{}",
        describe(&again)
    );

    let killed = rch(&["lab", "kill", "w1"]);
    assert!(
        stdout(&killed).contains("now down"),
        "{}",
        describe(&killed)
    );
    let status = rch(&["lab", "status"]);
    assert!(stdout(&status).contains("down"), "{}", describe(&status));

    let paused = rch(&["lab", "pause", "w1"]);
    assert_eq!(paused.status.code(), Some(1), "{}", describe(&paused));
    let revived = rch(&["lab", "revive", "w1"]);
    assert!(
        stdout(&revived).contains("now up"),
        "{}",
        describe(&revived)
    );
    assert!(stdout(&rch(&["lab", "pause", "w1"])).contains("now stopped"));
    assert!(stdout(&rch(&["lab", "resume", "w1"])).contains("now up"));

    assert_eq!(rch(&["lab", "kill", "w9"]).status.code(), Some(64));

    let down = rch(&["lab", "down"]);
    assert!(down.status.success(), "{}", describe(&down));
    assert!(!lab_dir.exists());
    assert_eq!(rch(&["lab", "status"]).status.code(), Some(1));
}
