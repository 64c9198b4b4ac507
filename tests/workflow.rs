//! End-to-end: everyday cargo and C workflows through `rch exec` against real
//! sshd workers (tests/support): `cargo run`, colours on a terminal, the
//! transfer progress line, worker disk clean-up and tiny compiles.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::{describe, TestEnv};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `rch exec -- ARGS` in `dir`, with `input` on stdin and `vars` set.
fn exec_with(
    env: &TestEnv,
    dir: &Path,
    args: &[&str],
    input: &str,
    vars: &[(&str, &str)],
) -> Output {
    let mut cmd = env.rch_in(dir);
    cmd.arg("exec")
        .arg("--")
        .args(args)
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running rch");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writing stdin");
    child.wait_with_output().expect("rch output")
}

/// A program that shows what it got: its arguments, a variable only the
/// client has, its directory, one line of stdin; it exits with status 7.
const RUNNER_MAIN: &str = r#"use std::io::BufRead;
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("args={}", args.join(","));
    println!("only_here={}", std::env::var("ONLY_ON_THE_CLIENT").unwrap_or_default());
    println!("cwd={}", std::env::current_dir().unwrap().display());
    println!("pkg={}", std::env::var("CARGO_PKG_NAME").unwrap_or_default());
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    println!("stdin={}", line.trim());
    std::process::exit(7);
}
"#;

#[test]
fn cargo_run_builds_on_the_worker_and_runs_the_program_here() {
    let env = TestEnv::new(1);
    let project = env.project("runner");
    std::fs::write(project.join("src/main.rs"), RUNNER_MAIN).unwrap();
    std::fs::create_dir_all(project.join("examples")).unwrap();
    std::fs::write(
        project.join("examples/demo.rs"),
        "fn main() { println!(\"demo {}\", std::env::args().nth(1).unwrap_or_default()); }\n",
    )
    .unwrap();
    let sub = project.join("src");
    let only_here = [("ONLY_ON_THE_CLIENT", "client-value")];

    let out = exec_with(
        &env,
        &sub,
        &["cargo", "run", "--", "a", "--release"],
        "typed here\n",
        &only_here,
    );
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("args=a,--release"), "{}", describe(&out));
    assert!(
        text.contains("only_here=client-value"),
        "{}",
        describe(&out)
    );
    assert!(
        text.contains(&format!("cwd={}", sub.display())),
        "{}",
        describe(&out)
    );
    assert!(text.contains("pkg=runner"), "{}", describe(&out));
    assert!(text.contains("stdin=typed here"), "{}", describe(&out));
    assert!(
        stderr(&out).contains("rch: built on w1, running locally: target/debug/runner"),
        "{}",
        describe(&out)
    );
    // cargo's own report came back as JSON on the remote stdout, never to the user.
    assert!(!text.contains("compiler-artifact"), "{}", describe(&out));

    // --release --bin, and an example: each built there, run here.
    let out = exec_with(
        &env,
        &project,
        &["cargo", "run", "--release", "--bin", "runner", "x"],
        "\n",
        &only_here,
    );
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    assert!(stdout(&out).contains("args=x"), "{}", describe(&out));
    assert!(
        stderr(&out).contains("rch: built on w1, running locally: target/release/runner"),
        "{}",
        describe(&out)
    );
    let out = exec_with(
        &env,
        &project,
        &["cargo", "run", "--example", "demo", "--", "y"],
        "",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(stdout(&out).contains("demo y"), "{}", describe(&out));
    assert!(
        stderr(&out).contains("rch: built on w1, running locally: target/debug/examples/demo"),
        "{}",
        describe(&out)
    );

    // A compile error is the build's answer: nothing runs.
    std::fs::write(
        project.join("src/main.rs"),
        "fn main() { let x: u8 = \"no\"; }\n",
    )
    .unwrap();
    let out = exec_with(&env, &project, &["cargo", "run"], "", &[]);
    assert_eq!(out.status.code(), Some(101), "{}", describe(&out));
    assert!(
        stderr(&out).contains("mismatched types"),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("rch: ran on w1"),
        "{}",
        describe(&out)
    );
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// A workspace with a bin (and its example and integration test) using a
/// library of the workspace, and a cdylib.
fn artifact_workspace(dir: &Path) {
    let write = |rel: &str, text: &str| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"app\", \"util\", \"plug\"]\nresolver = \"2\"\n",
    );
    let package = |name: &str| {
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n")
    };
    write("util/Cargo.toml", &package("util"));
    write(
        "util/src/lib.rs",
        "pub fn word() -> &'static str { \"util\" }\n",
    );
    write(
        "app/Cargo.toml",
        &format!(
            "{}\n[dependencies]\nutil = {{ path = \"../util\" }}\n",
            package("app")
        ),
    );
    write(
        "app/src/main.rs",
        "fn main() { println!(\"app uses {}\", util::word()); }\n",
    );
    write(
        "app/examples/demo.rs",
        "fn main() { println!(\"demo\"); }\n",
    );
    write("app/tests/it.rs", "#[test]\nfn works() {}\n");
    write(
        "plug/Cargo.toml",
        &format!("{}\n[lib]\ncrate-type = [\"cdylib\"]\n", package("plug")),
    );
    write(
        "plug/src/lib.rs",
        "#[no_mangle]\npub extern \"C\" fn plug() -> i32 { 7 }\n",
    );
}

#[test]
fn only_the_artifacts_cargo_reports_for_the_user_come_back() {
    let env = TestEnv::new(1);
    let ws = env.path().join("projects/ws");
    artifact_workspace(&ws);
    let target = ws.join("target/debug");

    let build = [
        "cargo",
        "build",
        "--workspace",
        "--lib",
        "--bins",
        "--examples",
    ];
    let out = exec_with(&env, &ws, &build, "", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("Compiling app"), "{}", describe(&out));
    assert!(
        stderr(&out).contains("rch: ran on w1"),
        "{}",
        describe(&out)
    );
    // The report stayed with rch; the user's stdout is what cargo's would be.
    assert_eq!(stdout(&out), "", "{}", describe(&out));
    for artifact in ["app", "examples/demo", "libplug.so"] {
        assert!(
            target.join(artifact).is_file(),
            "{artifact}: {}",
            describe(&out)
        );
    }
    let app = Command::new(target.join("app")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&app.stdout), "app uses util\n");
    // Libraries only cargo itself links (and its bookkeeping) stay there.
    assert_eq!(
        files_ending(&ws.join("target"), ".rlib"),
        Vec::<String>::new()
    );
    assert!(!target.join(".fingerprint").exists());

    // cargo test --no-run: the test binaries come back, listed as cargo lists them.
    let out = exec_with(
        &env,
        &ws,
        &["cargo", "test", "--no-run", "-p", "app"],
        "",
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let text = stderr(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("  Executable tests/it.rs (target/debug/deps/it-"))
        .unwrap_or_else(|| panic!("no Executable line: {}", describe(&out)));
    assert!(
        text.contains("  Executable unittests src/main.rs (target/debug/deps/app-"),
        "{}",
        describe(&out)
    );
    let binary = line.rsplit_once('(').unwrap().1.trim_end_matches(')');
    let listed = Command::new(ws.join(binary))
        .arg("--list")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("works: test"));

    // The user's own message format: their JSON on stdout, the whole output
    // directory back (the report is theirs, not rch's), said in the debug log.
    let json = ["cargo", "build", "--message-format=json"];
    let out = exec_with(&env, &ws, &json, "", &[("RCH_LOG", "rch=debug")]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).contains("\"compiler-artifact\""),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("bringing back the whole output directory"),
        "{}",
        describe(&out)
    );
    assert!(!files_ending(&target.join("deps"), ".rlib").is_empty());
}

#[test]
fn a_large_first_push_names_its_largest_dirs_and_piped_output_gets_no_progress() {
    let env = TestEnv::new(1);
    let project = env.project("bulky");
    std::fs::create_dir_all(project.join("data")).unwrap();
    // Sparse here; rsync still sends every byte.
    let big = std::fs::File::create(project.join("data/big.bin")).unwrap();
    big.set_len(105_000_000).unwrap();
    std::fs::create_dir_all(project.join("assets")).unwrap();
    std::fs::write(project.join("assets/logo.svg"), "x".repeat(2000)).unwrap();

    let out = exec_with(&env, &project, &["cargo", "build"], "", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stderr(&out);
    let line = text
        .lines()
        .find(|l| {
            l.starts_with(
                "rch: first push to w1 is 105.0 MB; largest: data/ 105.0 MB, assets/ 2.0 kB, src/",
            )
        })
        .unwrap_or_else(|| panic!("no first-push line: {}", describe(&out)));
    support::formats::assert_printed(line);
    // Piped: no progress line, not even one cleared with \r.
    assert!(!text.contains('\r'), "{text:?}");

    let out = exec_with(&env, &project, &["cargo", "build"], "", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!stderr(&out).contains("first push"), "{}", describe(&out));
}

const ESC: &str = "\x1b[";

#[test]
fn a_terminal_gets_colour_from_remote_builds_and_a_pipe_does_not() {
    let env = TestEnv::new(1);
    let project = env.project("colour");
    // The build script reports what cargo on the worker was told.
    std::fs::write(
        project.join("build.rs"),
        r#"fn main() {
    let var = |n: &str| std::env::var(n).unwrap_or_default();
    println!("cargo:warning=progress={}/{}", var("CARGO_TERM_PROGRESS_WHEN"), var("CARGO_TERM_PROGRESS_WIDTH"));
}
"#,
    )
    .unwrap();
    let source = |n: u32| format!("fn main() {{ let unused{n} = 1; }}\n");
    std::fs::write(project.join("src/main.rs"), source(1)).unwrap();
    let line = format!("stty cols 97; {} exec -- cargo build", support::rch_bin());
    let out = env.on_terminal(&project, &line);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(text.contains("rch: ran on w1"), "{}", describe(&out));
    assert!(text.contains(ESC), "no colour on a terminal: {text:?}");
    assert!(text.contains("progress=always/97"), "{text:?}");

    // The test binaries of `cargo test --no-run` are listed as cargo lists
    // them on a terminal (rch prints these lines: cargo's report has them).
    let line = format!("{} exec -- cargo test --no-run", support::rch_bin());
    let out = env.on_terminal(&project, &line);
    assert!(
        stdout(&out).contains(
            "\x1b[1m\x1b[92m  Executable\x1b[0m unittests src/main.rs (target/debug/deps/colour-"
        ),
        "{}",
        describe(&out)
    );

    // Piped: plain, as local cargo would be.
    std::fs::write(project.join("src/main.rs"), source(2)).unwrap();
    let out = exec_with(&env, &project, &["cargo", "build"], "", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("progress=/"), "{}", describe(&out));
    assert!(!stderr(&out).contains(ESC), "{}", describe(&out));

    // NO_COLOR on a terminal: plain too.
    std::fs::write(project.join("src/main.rs"), source(3)).unwrap();
    let line = format!("NO_COLOR=1 {} exec -- cargo build", support::rch_bin());
    let out = env.on_terminal(&project, &line);
    assert!(stdout(&out).contains("unused3"), "{}", describe(&out));
    assert!(!stdout(&out).contains(ESC), "{}", describe(&out));

    // A C compile on a worker colours its diagnostics for a terminal.
    let unused = "int f(void) { int unused; return 0; }\n";
    std::fs::write(project.join("a.c"), unused).unwrap();
    std::fs::write(project.join("b.c"), "int g(void) { return 1; }\n").unwrap();
    let line = format!("{} exec -- gcc -Wall -c a.c b.c", support::rch_bin());
    let out = env.on_terminal(&project, &line);
    let text = stdout(&out);
    assert!(text.contains("rch: ran on w1"), "{}", describe(&out));
    assert!(text.contains("unused"), "{text:?}");
    assert!(text.contains(ESC), "no colour from gcc: {text:?}");
    assert!(project.join("a.o").is_file());
}

#[test]
fn tiny_compiles_and_configure_probes_stay_local_as_diagnose_says() {
    let env = TestEnv::new(1);
    let project = env.project("probe");
    std::fs::write(project.join("conftest.c"), "int main(void) { return 3; }\n").unwrap();
    let probe = ["gcc", "-o", "conftest", "conftest.c"];
    let verbose = [("RCH_VERBOSE", "1")];
    let out = exec_with(&env, &project, &probe, "", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stderr(&out), "", "a probe stays local without a word");
    let out = exec_with(&env, &project, &probe, "", &verbose);
    assert!(
        stderr(&out).contains("rch: ran locally: tiny compile: conftest.c matches the probe pattern \"conftest*\" (cost.local_compile_patterns)"),
        "{}",
        describe(&out)
    );
    let run = Command::new(project.join("conftest")).status().unwrap();
    assert_eq!(run.code(), Some(3));

    let diagnose = env
        .rch_in(&project)
        .args(["diagnose", "gcc -o conftest conftest.c"])
        .output()
        .unwrap();
    assert!(
        stdout(&diagnose).contains("cost.local_compile_patterns"),
        "{}",
        describe(&diagnose)
    );

    // A small file of another name: the size rule, then the rule switched off.
    std::fs::write(project.join("small.c"), "int main(void) { return 0; }\n").unwrap();
    let out = exec_with(
        &env,
        &project,
        &["gcc", "-o", "small", "small.c"],
        "",
        &verbose,
    );
    assert!(
        stderr(&out).contains("(cost.local_compile_max_bytes = 16384)"),
        "{}",
        describe(&out)
    );
    env.write_config("[cost]\nlocal_compile_max_bytes = 0\nlocal_compile_patterns = []\n");
    let out = exec_with(
        &env,
        &project,
        &["gcc", "-o", "conftest", "conftest.c"],
        "",
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("rch: ran on w1"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        Command::new(project.join("conftest"))
            .status()
            .unwrap()
            .code(),
        Some(3)
    );
}

/// The names under worker `id`'s remote base.
fn remote_dirs(env: &TestEnv, id: &str) -> Vec<String> {
    let worker = env
        .lab
        .workers()
        .iter()
        .find(|w| w.id == id)
        .unwrap()
        .clone();
    let out = env.ssh(id, &format!("ls -1 {}", worker.remote_base.display()));
    stdout(&out).lines().map(str::to_string).collect()
}

/// The project dir named for `project` among `dirs`, if there.
fn home_of<'a>(dirs: &'a [String], project: &str) -> Option<&'a String> {
    dirs.iter().find(|d| {
        d.strip_prefix(project)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|hash| hash.len() == 12)
    })
}

fn rch_ok(env: &TestEnv, dir: &Path, args: &[&str]) -> Output {
    let out = env.rch_in(dir).args(args).output().expect("running rch");
    assert!(out.status.success(), "rch {args:?}: {}", describe(&out));
    out
}

#[test]
fn workers_gc_frees_unused_dirs_but_never_one_in_use_and_cargo_clean_reaches_workers() {
    let env = TestEnv::new(1);
    for name in ["old", "other"] {
        rch_ok(&env, &env.project(name), &["exec", "--", "cargo", "build"]);
    }
    let dirs = remote_dirs(&env, "w1");
    assert!(
        home_of(&dirs, "old").is_some() && home_of(&dirs, "other").is_some(),
        "{dirs:?}"
    );

    // Nothing is 14 days old yet; a dry run at 0s lists both and removes nothing.
    let out = rch_ok(&env, &env.project_dir, &["workers", "gc"]);
    assert!(
        stdout(&out).contains("w1: nothing to remove (2 kept"),
        "{}",
        describe(&out)
    );
    let out = rch_ok(
        &env,
        &env.project_dir,
        &["workers", "gc", "--all", "--older-than", "0s", "--dry-run"],
    );
    assert!(
        stdout(&out).contains("w1: would free"),
        "{}",
        describe(&out)
    );
    assert_eq!(remote_dirs(&env, "w1"), dirs);

    // A build held at a gate in its build script is in use: gc spares it.
    let busy = env.project("busy");
    let gate = env.exchange_dir().join("go");
    std::fs::write(
        busy.join("build.rs"),
        format!(
            "fn main() {{\n    let gate = std::path::Path::new({gate:?});\n    for _ in 0..1200 {{\n        if gate.exists() {{ return; }}\n        std::thread::sleep(std::time::Duration::from_millis(50));\n    }}\n}}\n"
        ),
    )
    .unwrap();
    let mut build = env.rch_in(&busy);
    build
        .args(["exec", "--", "cargo", "build"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = build.spawn().unwrap();
    assert!(
        support::wait_for(std::time::Duration::from_secs(60), || !env
            .fleet()
            .leases
            .is_empty()),
        "the gated build never got its lease"
    );
    assert!(
        support::wait_for(std::time::Duration::from_secs(60), || home_of(
            &remote_dirs(&env, "w1"),
            "busy"
        )
        .is_some()),
        "the gated build never reached w1"
    );
    let out = rch_ok(
        &env,
        &env.project_dir,
        &["workers", "gc", "w1", "--older-than", "0s", "--json"],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["workers"][0]["removed"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert!(
        report["workers"][0]["freed_bytes"].as_u64().unwrap() > 0,
        "{report}"
    );
    let left = remote_dirs(&env, "w1");
    assert!(home_of(&left, "busy").is_some(), "{left:?}");
    assert!(
        home_of(&left, "old").is_none() && home_of(&left, "other").is_none(),
        "{left:?}"
    );
    std::fs::write(&gate, "").unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", describe(&done));

    // cargo clean: here, and the project's target/ on the worker that built it.
    let base = env.lab.workers()[0].remote_base.clone();
    let target_on_w1 = |project: &str| {
        let home = home_of(&remote_dirs(&env, "w1"), project).cloned().unwrap();
        env.ssh("w1", &format!("test -d {}/{home}/target", base.display()))
            .status
            .success()
    };
    assert!(target_on_w1("busy"));
    let out = exec_with(&env, &busy, &["cargo", "clean"], "", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("rch: removed target/ on w1"),
        "{}",
        describe(&out)
    );
    assert!(!busy.join("target").exists());
    assert!(!target_on_w1("busy"));
}

#[test]
fn the_daemon_keeps_a_worker_under_max_disk_gb_least_recently_used_first() {
    let env = TestEnv::new(1);
    for name in ["first", "second"] {
        rch_ok(&env, &env.project(name), &["exec", "--", "cargo", "build"]);
    }
    let out = rch_ok(
        &env,
        &env.project_dir,
        &["workers", "gc", "--older-than", "0s", "--dry-run", "--json"],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sizes: Vec<u64> = report["workers"][0]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes.len(), 2, "{report}");
    // Room for one project and a half: the older must go, the newer stays.
    let limit_gb = (sizes[0].max(sizes[1]) + sizes[0].min(sizes[1]) / 2) as f64 / 1e9;
    rch_ok(&env, &env.project_dir, &["daemon", "stop"]);
    env.write_config(&format!(
        "[[workers]]\nid = \"w1\"\nmax_disk_gb = {limit_gb}\n"
    ));
    rch_ok(&env, &env.project_dir, &["daemon", "start"]);
    assert!(
        support::wait_for(std::time::Duration::from_secs(60), || home_of(
            &remote_dirs(&env, "w1"),
            "first"
        )
        .is_none()),
        "the daemon did not enforce max_disk_gb: {:?}",
        remote_dirs(&env, "w1")
    );
    assert!(home_of(&remote_dirs(&env, "w1"), "second").is_some());
}
