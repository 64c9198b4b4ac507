//! `rch top` on a real terminal: tmux runs it at 80×24 while a worker dies,
//! its circuit opens, and the keys reset and probe; `q` and Ctrl-C give the
//! terminal back (normal screen, cooked mode).

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;
use support::{describe, wait_for, TestEnv};

/// w1 opens on its first failure and is tried first.
const CONFIG: &str = "[circuit]\nfailure_threshold = 1\nopen_cooldown_secs = 600\n\n[[workers]]\nid = \"w1\"\npriority = 200\n";

struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    /// Wait until the screen shows every one of `wanted`.
    fn wait_for(&self, wanted: &[&str]) -> String {
        let seen = wait_for(Duration::from_secs(20), || {
            let screen = self.screen();
            wanted.iter().all(|w| screen.contains(w))
        });
        let screen = self.screen();
        assert!(seen, "waited for {wanted:?}; the screen:\n{screen}");
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn rch(env: &TestEnv, args: &[&str]) -> Output {
    env.rch().args(args).output().expect("running rch")
}

/// `VAR='value' ...` for a shell line: the test's isolated environment.
fn env_prefix(env: &TestEnv) -> String {
    env.env_vars()
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn top_follows_a_failing_worker_and_its_keys_act_then_gives_the_terminal_back() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed for this test (.ci/run installs it)");
    }
    let env = TestEnv::new(2);
    env.write_config(CONFIG);
    std::fs::write(
        env.project_dir.join("Makefile"),
        "quick:\n\ttrue\nslow:\n\tsleep 3\n",
    )
    .unwrap();
    let start = rch(&env, &["daemon", "start"]);
    assert!(start.status.success(), "{}", describe(&start));

    let tmux = Tmux {
        socket: env.path().join("tmux.sock"),
    };
    let rch_bin = env!("CARGO_BIN_EXE_rch");
    // Twice: once left with `q`, once with Ctrl-C; after each, the shell
    // reports the exit code and whether the terminal is back in cooked mode.
    let script = format!(
        "cd '{dir}' && export {vars} && {rch_bin} top; echo \"first=$?\"; stty -a | grep -o -- '-\\?icanon' | head -1; read next; \
         {rch_bin} top; echo \"second=$?\"; stty -a | grep -o -- '-\\?icanon' | head -1; sleep 600",
        dir = env.project_dir.display(),
        vars = env_prefix(&env),
    );
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-x",
        "80",
        "-y",
        "24",
        "-s",
        "top",
        "sh",
        "-c",
        &script,
    ]);
    assert!(started.status.success(), "{}", describe(&started));
    tmux.wait_for(&["rch top", "✓ all healthy", "w1", "w2", "no builds running"]);

    // A build in flight shows in the builds panel while it runs.
    let mut slow = env
        .rch()
        .args(["exec", "--", "make", "slow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let screen = tmux.wait_for(&["make slow", "running 1"]);
    println!("rch top at 80x24, a build running:\n{screen}");
    assert!(slow.wait().unwrap().success());
    tmux.wait_for(&["no builds running", "running 0"]);

    // w1 dies; a build finds out and its circuit opens: the view follows.
    env.lab.kill("w1").unwrap();
    let build = rch(&env, &["exec", "--", "make", "quick"]);
    assert!(build.status.success(), "{}", describe(&build));
    let screen = tmux.wait_for(&[
        "⚠ 1 circuit open (w1)",
        "⊘ open, retry in",
        "circuit.opened",
        "build.fallback",
    ]);
    println!("rch top at 80x24, w1's circuit open:\n{screen}");
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "{screen}");

    // w1 is selected (first row): revive it and reset its circuit with `r`.
    env.lab.revive("w1").unwrap();
    tmux.keys(&["r"]);
    tmux.wait_for(&[
        "w1: circuit reset to closed",
        "✓ all healthy",
        "circuit.reset",
    ]);
    // Down to w2 and probe it with `p`.
    tmux.keys(&["Down"]);
    tmux.wait_for(&["▶w2"]);
    tmux.keys(&["p"]);
    tmux.wait_for(&["w2: probe ok, circuit closed"]);

    tmux.keys(&["q"]);
    let screen = tmux.wait_for(&["first=0", "icanon"]);
    assert!(
        screen.contains("\nicanon"),
        "cooked mode after q:\n{screen}"
    );
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["rch top", "w2"]);
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_for(&["second=0", "icanon\n"]);
    assert!(
        !screen.contains("-icanon"),
        "cooked mode after Ctrl-C:\n{screen}"
    );
    let alt = tmux.run(&["display-message", "-p", "-t", "top", "#{alternate_on}"]);
    assert_eq!(String::from_utf8_lossy(&alt.stdout).trim(), "0");
}
