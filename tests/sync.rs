//! End-to-end: what reaches the worker and what comes back — overlapping
//! builds of one project each get their own tree, sequential builds reuse the
//! warm one (real sshd workers from tests/support).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use support::TestEnv;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A plain directory holding `Makefile` with `recipes` (tabs added).
fn make_project(env: &TestEnv, name: &str, recipes: &str) -> PathBuf {
    let dir = env.path().join("projects").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let makefile: String = recipes
        .lines()
        .map(|l| match l.strip_prefix("  ") {
            Some(cmd) => format!("\t{cmd}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(dir.join("Makefile"), makefile).unwrap();
    dir
}

fn make(env: &TestEnv, dir: &Path, target: &str) -> Output {
    env.rch_in(dir)
        .args(["exec", "--", "make", "-s", target])
        .output()
        .expect("running rch")
}

#[test]
fn overlapping_builds_of_one_project_are_isolated_and_sequential_ones_stay_warm() {
    let env = TestEnv::new(1);
    env.write_config("");
    let gate = env.exchange_dir();
    // `a` writes gen.txt, then waits until `b` (started in the same project
    // meanwhile, with its own push and its own gen.txt) has finished.
    let recipes = format!(
        ".PHONY: a b warm\n\
         a:\n  echo A > gen.txt; touch {g}/a-running; \
         while [ ! -e {g}/b-done ]; do sleep 0.05; done; cat gen.txt\n\
         b:\n  echo B > gen.txt; cat gen.txt; touch {g}/b-done\n\
         warm:\n  mkdir -p target; if [ -e target/stamp ]; then echo warm; else echo cold; fi; touch target/stamp\n",
        g = gate.display()
    );
    let dir = make_project(&env, "overlap", &recipes);
    let a = {
        let mut cmd = env.rch_in(&dir);
        cmd.args(["exec", "--", "make", "-s", "a"]);
        cmd.stdout(std::process::Stdio::piped());
        cmd.stderr(std::process::Stdio::piped());
        cmd.spawn().expect("starting build a")
    };
    assert!(
        support::wait_for(Duration::from_secs(60), || gate.join("a-running").exists()),
        "build a never started"
    );
    let b = make(&env, &dir, "b");
    assert_eq!(b.status.code(), Some(0), "b: {}", stderr(&b));
    assert_eq!(stdout(&b), "B\n");
    let a = a.wait_with_output().unwrap();
    assert_eq!(a.status.code(), Some(0), "a: {}", stderr(&a));
    assert_eq!(stdout(&a), "A\n", "a saw another build's file");
    assert!(stderr(&a).contains("rch: ran on w1"), "{}", stderr(&a));
    assert_eq!(env.circuit("w1").failures, 0);

    // Alone, builds land in the same warm tree, whose excluded target/ stays.
    let first = make(&env, &dir, "warm");
    let second = make(&env, &dir, "warm");
    assert_eq!(
        (stdout(&first).as_str(), stdout(&second).as_str()),
        ("cold\n", "warm\n"),
        "{}{}",
        stderr(&first),
        stderr(&second)
    );
}
