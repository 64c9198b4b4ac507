//! End-to-end: what reaches the worker and what comes back — overlapping
//! builds of one project each get their own tree, sequential builds reuse the
//! warm one (real sshd workers from tests/support).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use support::tally::{count_shells, shells_since};
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

#[test]
fn gitignored_paths_stay_home_except_build_inputs_and_rchignore_reincludes() {
    let env = TestEnv::new(1);
    env.write_config("");
    let dir = make_project(
        &env,
        "ignored",
        ".PHONY: ls\nls:\n  find . -type f ! -path './.rch*' | sort\n",
    );
    std::fs::write(dir.join(".gitignore"), "Makefile\ndata/\n*.log\n").unwrap();
    std::fs::write(dir.join(".rchignore"), "!keep.log\n").unwrap();
    for f in ["data/big.bin", "debug.log", "keep.log", "src/a.c"] {
        let path = dir.join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, f).unwrap();
    }
    let out = make(&env, &dir, "ls");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "./.gitignore\n./Makefile\n./keep.log\n./src/a.c\n",
        "{}",
        stderr(&out)
    );

    // Turned off in the project's config: everything but the built-ins goes.
    std::fs::create_dir_all(dir.join(".rch")).unwrap();
    std::fs::write(
        dir.join(".rch/config.toml"),
        "[transfer]\nrespect_gitignore = false\n",
    )
    .unwrap();
    let out = make(&env, &dir, "ls");
    assert_eq!(
        stdout(&out),
        "./.gitignore\n./Makefile\n./data/big.bin\n./debug.log\n./keep.log\n./src/a.c\n",
        "{}",
        stderr(&out)
    );
}

/// A cargo crate whose binary prints `data.txt` (compiled in) and nothing else.
fn data_crate(env: &TestEnv, name: &str) -> PathBuf {
    let dir = env.project(name);
    std::fs::write(
        dir.join("src/main.rs"),
        "fn main() {\n    print!(\"{}\", include_str!(\"../data.txt\"));\n}\n",
    )
    .unwrap();
    std::fs::write(dir.join("data.txt"), "one").unwrap();
    dir
}

fn cargo_build(env: &TestEnv, dir: &Path) -> String {
    let out = env
        .rch_in(dir)
        .args(["exec", "--", "cargo", "build", "-q"])
        .output()
        .expect("running rch");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let bin = dir.join("target/debug").join(name);
    let run = std::process::Command::new(bin)
        .output()
        .expect("the built binary");
    stdout(&run)
}

/// The tree of `dir`'s builds on w1 (slot 0), as a path the worker sees.
fn remote_tree(env: &TestEnv, dir: &Path) -> String {
    let base = env.lab.workers()[0].remote_base.display().to_string();
    rch::remote::build_dir(&base, dir, 0)
}

fn on_worker(env: &TestEnv, cmd: &str) -> bool {
    env.ssh("w1", cmd).status.success()
}

#[test]
fn pushes_follow_every_change_and_skip_only_a_tree_the_worker_still_holds() {
    let env = TestEnv::new(1);
    env.write_config("");
    let dir = data_crate(&env, "pushes");
    std::fs::write(dir.join("extra.txt"), "x").unwrap();
    assert_eq!(cargo_build(&env, &dir), "one");
    let tree = remote_tree(&env, &dir);
    assert!(on_worker(&env, &format!("test -e {tree}/extra.txt")));

    // Same size, mtime put back to the same instant: the content hash sees
    // it. The file is made fresh at a warm build first, so the last walk
    // found it within two seconds of its write and hashed it (a cold first
    // build, starting the daemon and the master, may take longer).
    let data = dir.join("data.txt");
    std::fs::write(&data, "one").unwrap();
    assert_eq!(cargo_build(&env, &dir), "one");
    let mtime = std::fs::metadata(&data).unwrap().modified().unwrap();
    std::fs::write(&data, "two").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&data)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    // A delete propagates. (cargo itself goes by mtime, so the worker's
    // file is what tells.)
    std::fs::remove_file(dir.join("extra.txt")).unwrap();
    cargo_build(&env, &dir);
    assert!(on_worker(&env, &format!("grep -qx two {tree}/data.txt")));
    assert!(on_worker(&env, &format!("test ! -e {tree}/extra.txt")));

    // Unchanged: nothing is pushed (a file planted on the worker stays).
    assert!(on_worker(&env, &format!("touch {tree}/planted")));
    cargo_build(&env, &dir);
    assert!(on_worker(&env, &format!("test -e {tree}/planted")));

    // The worker's tree is not ours any more (cleaned up): pushed in full.
    assert!(on_worker(&env, &format!("rm -rf {tree}")));
    assert_eq!(cargo_build(&env, &dir), "two");
    assert!(on_worker(&env, &format!("grep -qx two {tree}/data.txt")));

    // A worker that cannot unpack a carried edit (its tar fails): the tree
    // counts as stale, is pushed in full, and the build still sees the edit.
    let home = env.lab.workers()[0].home();
    std::fs::create_dir_all(home.join("bin")).unwrap();
    std::fs::write(home.join("bin/tar"), "#!/bin/sh\nexit 2\n").unwrap();
    std::fs::set_permissions(home.join("bin/tar"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let profile = std::fs::read_to_string(home.join(".profile")).unwrap_or_default();
    std::fs::write(
        home.join(".profile"),
        format!("{profile}\nPATH=$HOME/bin:$PATH\n"),
    )
    .unwrap();
    std::fs::write(dir.join("data.txt"), "five").unwrap();
    assert_eq!(cargo_build(&env, &dir), "five");
    assert!(on_worker(&env, &format!("grep -qx five {tree}/data.txt")));
    assert_eq!(env.circuit("w1").failures, 0);
}

#[test]
fn a_warm_build_starts_one_remote_command_and_brings_back_only_what_differs() {
    let env = TestEnv::new(1);
    // Counted on the login-shell path: through the worker agent, a warm
    // build starts none (tests/agent.rs).
    env.write_config("[[workers]]\nid = \"w1\"\nagent = false\n");
    let dir = data_crate(&env, "onetrip");
    assert_eq!(cargo_build(&env, &dir), "one");
    let tally = count_shells(&env);
    let count = || shells_since(&tally, 0);

    // Warm no-op: no push, no env-dep read, no pull: the build's own command.
    let start = count();
    assert_eq!(cargo_build(&env, &dir), "one");
    let commands = std::fs::read_to_string(&tally).unwrap_or_default();
    assert_eq!(
        shells_since(&tally, start),
        1,
        "a no-op's commands: {commands}"
    );

    // The binary gone here: the same build brings it back (and only then pulls).
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::remove_file(dir.join("target/debug").join(&name)).unwrap();
    let start = count();
    assert_eq!(cargo_build(&env, &dir), "one");
    assert_eq!(shells_since(&tally, start), 2, "run + pull");

    // A small edit rides in the run command: run, pull.
    std::fs::write(dir.join("data.txt"), "three").unwrap();
    let start = count();
    assert_eq!(cargo_build(&env, &dir), "three");
    assert_eq!(shells_since(&tally, start), 2, "run (with the edit) + pull");

    // A large one is pushed by rsync first: push, run, pull.
    let big = "x".repeat(600 * 1024);
    std::fs::write(dir.join("data.txt"), format!("four{big}")).unwrap();
    let start = count();
    assert_eq!(cargo_build(&env, &dir), format!("four{big}"));
    assert_eq!(shells_since(&tally, start), 3, "push + run + pull");
    assert_eq!(env.circuit("w1").failures, 0);
}

#[test]
fn deletions_by_the_build_come_back_and_changes_made_here_meanwhile_stay() {
    let env = TestEnv::new(1);
    env.write_config("");
    let gate = env.exchange_dir();
    let recipes = format!(
        "prog: a.o\n  @echo linking; cp a.o prog\n\
         a.o: a.c\n  cp a.c a.o\n\
         .PHONY: clean race odd\n\
         clean:\n  rm -f a.o prog; rm -rf obj\n\
         race:\n  rm -f prog; touch {g}/running; while [ ! -e {g}/go ]; do sleep 0.05; done; echo worker > out.txt\n\
         odd:\n  mkdir -p obj; echo o > obj/x.o; touch \"$$(printf 'new\\nline.txt')\"\n",
        g = gate.display()
    );
    let dir = make_project(&env, "deletions", &recipes);
    std::fs::write(dir.join("a.c"), "int main;\n").unwrap();
    let out = make(&env, &dir, "prog");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dir.join("prog").exists() && dir.join("a.o").exists());

    // `make clean` on the worker is a clean here too: the next make rebuilds.
    let out = make(&env, &dir, "clean");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !dir.join("prog").exists(),
        "prog came back: {}",
        stderr(&out)
    );
    assert!(!dir.join("a.o").exists());
    assert!(dir.join("a.c").exists() && dir.join("Makefile").exists());
    let out = make(&env, &dir, "prog");
    assert_eq!(stdout(&out), "linking\n", "{}", stderr(&out));
    assert!(dir.join("prog").exists());

    // A name the listing cannot carry (a newline): everything still comes
    // back, by the full pull; then a removed directory goes here too.
    let out = make(&env, &dir, "odd");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dir.join("new\nline.txt").exists() && dir.join("obj/x.o").exists());
    // (Gone here, the next push deletes it there.)
    std::fs::remove_file(dir.join("new\nline.txt")).unwrap();
    let out = make(&env, &dir, "clean");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!dir.join("obj").exists(), "an emptied directory stays");
    let out = make(&env, &dir, "prog");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Changed here while the build ran: neither deleted nor overwritten.
    let race = {
        let mut cmd = env.rch_in(&dir);
        cmd.args(["exec", "--", "make", "-s", "race"]);
        cmd.stdout(std::process::Stdio::piped());
        cmd.stderr(std::process::Stdio::piped());
        cmd.spawn().expect("starting the build")
    };
    assert!(
        support::wait_for(Duration::from_secs(60), || gate.join("running").exists()),
        "the build never started"
    );
    std::fs::write(dir.join("prog"), "mine").unwrap();
    std::fs::write(dir.join("out.txt"), "mine").unwrap();
    std::fs::write(gate.join("go"), "").unwrap();
    let race = race.wait_with_output().unwrap();
    assert_eq!(race.status.code(), Some(0), "{}", stderr(&race));
    assert_eq!(std::fs::read_to_string(dir.join("prog")).unwrap(), "mine");
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "mine"
    );
    assert_eq!(env.circuit("w1").failures, 0);
}

/// `rch exec -- cargo build -q` with rch's debug log: what the built binary
/// prints, and whether the daemon vouched for the tree (`unchanged`) or it
/// was walked (`walked`), from the build's push plan line.
fn cargo_build_watched(env: &TestEnv, dir: &Path) -> (String, String) {
    let out = env
        .rch_in(dir)
        .env("RCH_LOG", "rch=debug")
        .args(["exec", "--", "cargo", "build", "-q"])
        .output()
        .expect("running rch");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = stderr(&out);
    let plan = log
        .lines()
        .find(|l| l.contains("push plan"))
        .unwrap_or_else(|| panic!("no push plan line: {log}"));
    let tree = if plan.contains("tree=\"unchanged\"") {
        "unchanged"
    } else {
        assert!(plan.contains("tree=\"walked\""), "{plan}");
        "walked"
    };
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let run = std::process::Command::new(dir.join("target/debug").join(name))
        .output()
        .expect("the built binary");
    (stdout(&run), tree.to_string())
}

/// No-op builds until the daemon vouches for the tree (the first question
/// starts its watch, the walk after a mark is remembered, the next build
/// is vouched for); each prints `expect`.
fn until_vouched(env: &TestEnv, dir: &Path, expect: &str) {
    for _ in 0..4 {
        let (out, tree) = cargo_build_watched(env, dir);
        assert_eq!(out, expect);
        if tree == "unchanged" {
            return;
        }
    }
    panic!("the daemon never vouched for an unchanged tree");
}

#[test]
fn a_watched_tree_is_walked_after_any_change_and_after_a_gap_in_the_watch() {
    let env = TestEnv::new(1);
    env.write_config("");
    let dir = data_crate(&env, "watched");
    assert_eq!(cargo_build(&env, &dir), "one");
    until_vouched(&env, &dir, "one");

    // An edit right after a vouched no-op: walked, pushed, built.
    std::fs::write(dir.join("data.txt"), "two").unwrap();
    assert_eq!(
        cargo_build_watched(&env, &dir),
        ("two".to_string(), "walked".to_string())
    );

    // A directory made after the watch started is watched too, however
    // deep: a file written into it later is walked and pushed.
    std::fs::create_dir_all(dir.join("new/deep/er")).unwrap();
    until_vouched(&env, &dir, "two");
    std::fs::write(dir.join("new/deep/er/f.txt"), "f").unwrap();
    let (_, tree) = cargo_build_watched(&env, &dir);
    assert_eq!(tree, "walked");
    let remote = remote_tree(&env, &dir);
    assert!(on_worker(
        &env,
        &format!("grep -qx f {remote}/new/deep/er/f.txt")
    ));

    // A change the output dir sees is none of the tree's: still vouched for.
    until_vouched(&env, &dir, "two");
    std::fs::write(dir.join("target/scratch"), "x").unwrap();
    assert_eq!(cargo_build_watched(&env, &dir).1, "unchanged");

    // Edited while no daemon watched: the restarted daemon cannot vouch for
    // the old mark, the tree is walked and the edit built.
    let stopped = env.rch().args(["daemon", "stop"]).output().unwrap();
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    std::fs::write(dir.join("data.txt"), "six").unwrap();
    assert_eq!(
        cargo_build_watched(&env, &dir),
        ("six".to_string(), "walked".to_string())
    );
    until_vouched(&env, &dir, "six");
}

#[test]
fn make_builds_that_change_their_tree_stay_warm_and_a_file_deleted_here_meanwhile_still_goes() {
    let env = TestEnv::new(1);
    // Counted on the login-shell path: a push is one more remote command.
    env.write_config("[[workers]]\nid = \"w1\"\nagent = false\n");
    let gate = env.exchange_dir();
    let recipes = format!(
        "out.txt: in.txt\n  cp in.txt out.txt\n\
         .PHONY: wait\n\
         wait:\n  touch {g}/running; while [ ! -e {g}/go ]; do sleep 0.05; done\n",
        g = gate.display()
    );
    let dir = make_project(&env, "warmmake", &recipes);
    std::fs::write(dir.join("in.txt"), "one\n").unwrap();
    std::fs::write(dir.join("extra.txt"), "x\n").unwrap();
    let out = make(&env, &dir, "out.txt");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "one\n"
    );
    let tree = remote_tree(&env, &dir);
    let tally = count_shells(&env);

    // The build made out.txt and it came back: nothing is pushed again.
    let out = make(&env, &dir, "out.txt");
    assert!(stderr(&out).contains("ran on w1"), "{}", stderr(&out));
    assert_eq!(shells_since(&tally, 0), 1, "the run only");
    std::fs::write(dir.join("in.txt"), "two\n").unwrap();
    let out = make(&env, &dir, "out.txt");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "two\n"
    );
    assert_eq!(
        shells_since(&tally, 1),
        2,
        "the run (carrying the edit) and the pull"
    );

    // A file deleted here while a build runs is deleted on the worker too.
    let waiting = {
        let mut cmd = env.rch_in(&dir);
        cmd.args(["exec", "--", "make", "-s", "wait"]);
        cmd.spawn().unwrap()
    };
    while !gate.join("running").exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::remove_file(dir.join("extra.txt")).unwrap();
    std::fs::write(gate.join("go"), "").unwrap();
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = make(&env, &dir, "out.txt");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(on_worker(&env, &format!("test ! -e {tree}/extra.txt")));
    assert!(on_worker(&env, &format!("grep -qx two {tree}/out.txt")));
    assert_eq!(env.circuit("w1").failures, 0);
}
