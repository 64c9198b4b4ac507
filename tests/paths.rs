//! End-to-end: build trees whose paths matter, on workers that cannot see
//! the client's files. CMake and Meson build dirs configured here (they
//! record this machine's absolute paths) build on a worker at the client's
//! own path; cargo builds sync their path dependencies, return artifacts to
//! cargo's target dir and name the client's paths in their debug info.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{describe, TestEnv};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn rch(env: &TestEnv, dir: &Path, args: &[&str]) -> Output {
    env.rch_in(dir).args(args).output().expect("running rch")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("starting a command");
    assert!(out.status.success(), "{cmd:?}: {}", describe(&out));
    out
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Whether `path` exists as worker `id` sees it outside any build.
fn worker_sees(env: &TestEnv, id: &str, path: &Path) -> bool {
    let quoted = shell_escape::escape(path.to_string_lossy());
    let out = env.ssh(id, &format!("test -e {quoted} && echo yes || echo no"));
    stdout(&out).trim() == "yes"
}

/// The zlib-ng sources that the `libz-sys` crate ships (a real CMake
/// project), from the cargo registry; fetched there first when missing.
fn zlib_ng_sources() -> PathBuf {
    let find = || -> Option<PathBuf> {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                directories::BaseDirs::new()
                    .unwrap()
                    .home_dir()
                    .join(".cargo")
            });
        std::fs::read_dir(home.join("registry/src"))
            .ok()?
            .flatten()
            .map(|index| index.path().join("libz-sys-1.1.33/src/zlib-ng"))
            .find(|dir| dir.join("CMakeLists.txt").is_file())
    };
    if let Some(dir) = find() {
        return dir;
    }
    let manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/third_party/Cargo.toml");
    run(Command::new("cargo")
        .args(["fetch", "--manifest-path"])
        .arg(&manifest));
    find().expect("libz-sys sources in the cargo registry after cargo fetch")
}

fn copy_tree(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// "[3/34] Building C object ..." lines of ninja's output.
fn objects_built(out: &Output) -> Vec<String> {
    stdout(out)
        .lines()
        .filter(|l| l.contains("Building C object"))
        .map(str::to_string)
        .collect()
}

#[test]
fn cmake_build_dir_configured_here_builds_on_a_worker_at_the_clients_path() {
    let env = TestEnv::new(1);
    let tree = env.path().join("projects/zlib-ng");
    copy_tree(&zlib_ng_sources(), &tree);
    run(Command::new("cmake")
        .current_dir(&tree)
        .args([
            "-S",
            ".",
            "-B",
            "out",
            "-G",
            "Ninja",
            "-DBUILD_SHARED_LIBS=OFF",
        ])
        .args([
            "-DZLIB_COMPAT=ON",
            "-DZLIB_ENABLE_TESTS=OFF",
            "-DWITH_GTEST=OFF",
        ])
        .args(["-DWITH_OPTIM=OFF", "-DWITH_NATIVE_INSTRUCTIONS=OFF"]));
    assert!(!worker_sees(&env, "w1", &tree.join("CMakeLists.txt")));

    let diagnosis = rch(&env, &tree, &["diagnose", "cmake --build out"]);
    let text = stdout(&diagnosis);
    let recorded = format!(
        "{} records {}",
        tree.join("out/CMakeCache.txt").display(),
        tree.display()
    );
    assert!(text.contains(&recorded), "{text}");
    assert!(text.contains("w1: at the client's path"), "{text}");

    let built = rch(&env, &tree, &["exec", "--", "cmake", "--build", "out"]);
    assert_eq!(built.status.code(), Some(0), "{}", describe(&built));
    assert!(
        stderr(&built).contains("rch: ran on w1"),
        "{}",
        stderr(&built)
    );
    assert!(objects_built(&built).len() > 10, "{}", stdout(&built));
    // The worker built at the client's path inside the build's own mount
    // namespace only: outside it, the path holds nothing of the project.
    assert!(!worker_sees(&env, "w1", &tree.join("CMakeLists.txt")));

    // The library came back and works: link a program against it here and run it.
    write(
        &tree.join("check.c"),
        "#include <string.h>\n#include \"zlib.h\"\n\
         int main(void) { unsigned char z[64], o[64]; uLongf zl = sizeof z, ol = sizeof o;\n\
         if (compress(z, &zl, (const Bytef *)\"hello hello hello\", 17) != Z_OK) return 1;\n\
         if (uncompress(o, &ol, z, zl) != Z_OK || ol != 17) return 2;\n\
         return memcmp(o, \"hello hello hello\", 17) != 0; }\n",
    );
    run(Command::new("cc").current_dir(&tree).args([
        "-I",
        ".",
        "-I",
        "out",
        "check.c",
        "out/libz.a",
        "-o",
        "check",
    ]));
    run(&mut Command::new(tree.join("check")));

    // One edited source: exactly one object is rebuilt, on the worker.
    let source = tree.join("adler32.c");
    let text = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, format!("{text}\n/* edited */\n")).unwrap();
    let rebuilt = rch(&env, &tree, &["exec", "--", "ninja", "-C", "out"]);
    assert_eq!(rebuilt.status.code(), Some(0), "{}", describe(&rebuilt));
    assert!(stderr(&rebuilt).contains("rch: ran on w1"));
    let objects = objects_built(&rebuilt);
    assert_eq!(objects.len(), 1, "{}", stdout(&rebuilt));
    assert!(objects[0].contains("adler32.c"), "{objects:?}");

    // A changed CMakeLists.txt makes ninja re-run CMake on the worker, which
    // checks the cache against the directory it was created in.
    let lists = tree.join("CMakeLists.txt");
    let text = std::fs::read_to_string(&lists).unwrap();
    std::fs::write(&lists, format!("{text}\n# edited\n")).unwrap();
    let reconfigured = rch(&env, &tree, &["exec", "--", "cmake", "--build", "out"]);
    assert_eq!(
        reconfigured.status.code(),
        Some(0),
        "{}",
        describe(&reconfigured)
    );
    assert!(
        stdout(&reconfigured).contains("Re-running CMake"),
        "{}",
        stdout(&reconfigured)
    );
    assert!(stderr(&reconfigured).contains("rch: ran on w1"));

    // A worker that may not mirror paths never gets such a tree: it builds
    // here, and both the build and diagnose say why.
    env.write_config("[[workers]]\nid = \"w1\"\nmirror_paths = false\n");
    let local = rch(&env, &tree, &["exec", "--", "ninja", "-C", "out"]);
    assert_eq!(local.status.code(), Some(0), "{}", describe(&local));
    let line = stderr(&local);
    assert!(line.contains("rch: ran locally:"), "{line}");
    assert!(line.contains("CMakeCache.txt records"), "{line}");
    assert!(line.contains("mirror_paths = false"), "{line}");
    let diagnosis = rch(&env, &tree, &["diagnose", "ninja -C out"]);
    let text = stdout(&diagnosis);
    assert!(text.contains(&recorded), "{text}");
    assert!(text.contains("would run locally"), "{text}");
    let refused = rch(
        &env,
        &tree,
        &["exec", "--require-remote", "--", "ninja", "-C", "out"],
    );
    assert_eq!(refused.status.code(), Some(75), "{}", describe(&refused));
    assert!(stderr(&refused).contains("CMakeCache.txt records"));
}

#[test]
fn meson_build_dir_compiles_through_rch_at_the_clients_path() {
    let env = TestEnv::new(1);
    let tree = env.path().join("projects/greet");
    write(
        &tree.join("meson.build"),
        "project('greet', 'c')\nexecutable('greet', 'main.c', 'greet.c')\n",
    );
    write(&tree.join("greet.h"), "const char *greeting(void);\n");
    write(
        &tree.join("greet.c"),
        "#include \"greet.h\"\nconst char *greeting(void) { return \"hello from meson\"; }\n",
    );
    write(
        &tree.join("main.c"),
        "#include <stdio.h>\n#include \"greet.h\"\nint main(void) { puts(greeting()); return 0; }\n",
    );
    run(Command::new("meson")
        .current_dir(&tree)
        .args(["setup", "builddir"]));
    let built = rch(
        &env,
        &tree,
        &["exec", "--", "meson", "compile", "-C", "builddir"],
    );
    assert_eq!(built.status.code(), Some(0), "{}", describe(&built));
    assert!(
        stderr(&built).contains("rch: ran on w1"),
        "{}",
        stderr(&built)
    );
    let hello = run(&mut Command::new(tree.join("builddir/greet")));
    assert_eq!(stdout(&hello), "hello from meson\n");

    write(
        &tree.join("greet.c"),
        "#include \"greet.h\"\nconst char *greeting(void) { return \"edited\"; }\n",
    );
    let rebuilt = rch(&env, &tree, &["exec", "--", "ninja", "-C", "builddir"]);
    assert_eq!(rebuilt.status.code(), Some(0), "{}", describe(&rebuilt));
    assert!(stderr(&rebuilt).contains("rch: ran on w1"));
    let compiled = stdout(&rebuilt)
        .lines()
        .filter(|l| l.contains("Compiling C object"))
        .count();
    assert_eq!(compiled, 1, "{}", stdout(&rebuilt));
    let hello = run(&mut Command::new(tree.join("builddir/greet")));
    assert_eq!(stdout(&hello), "edited\n");
}

/// A repository without a root manifest: `app` depends on `../shared`.
fn monorepo(env: &TestEnv) -> PathBuf {
    let repo = env.path().join("projects/mono");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    write(
        &repo.join("app/Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nshared = { path = \"../shared\" }\n\n\
         [profile.fast]\ninherits = \"release\"\n",
    );
    write(
        &repo.join("app/src/main.rs"),
        "fn main() { println!(\"{}\", shared::greeting()); }\n",
    );
    write(
        &repo.join("shared/Cargo.toml"),
        "[package]\nname = \"shared\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write(
        &repo.join("shared/src/lib.rs"),
        "#[inline(never)]\npub fn greeting() -> String { format!(\"shared says hi from {}\", file!()) }\n",
    );
    repo
}

fn host_triple() -> String {
    let out = run(Command::new("rustc").arg("-vV"));
    stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("host triple")
        .to_string()
}

#[test]
fn cargo_path_dependencies_are_synced_and_artifacts_land_where_cargo_puts_them() {
    let env = TestEnv::new(1);
    let repo = monorepo(&env);
    let app = repo.join("app");
    let diagnosis = rch(&env, &app, &["diagnose", "cargo build"]);
    let text = stdout(&diagnosis);
    assert!(
        text.contains(&format!("synced root: {}", repo.display())),
        "{text}"
    );

    // CARGO_TARGET_DIR: the binary comes back there, not to ./target.
    let target = env.path().join("projects/tdir");
    let built = env
        .rch_in(&app)
        .env("CARGO_TARGET_DIR", &target)
        .args(["exec", "--", "cargo", "build"])
        .output()
        .unwrap();
    assert_eq!(built.status.code(), Some(0), "{}", describe(&built));
    assert!(
        stderr(&built).contains("rch: ran on w1"),
        "{}",
        stderr(&built)
    );
    assert!(!app.join("target").exists(), "artifacts went to ./target");
    let bin = target.join("debug/app");
    let hello = run(&mut Command::new(&bin));
    // file!() and the debug info name the client's paths, not the worker's.
    let shared_src = repo.join("shared/src/lib.rs");
    assert_eq!(
        stdout(&hello),
        format!("shared says hi from {}\n", shared_src.display())
    );
    let dwarf = run(Command::new("readelf").arg("--debug-dump=info").arg(&bin));
    let dwarf = stdout(&dwarf);
    assert!(
        dwarf.contains(&shared_src.display().to_string()),
        "client path not in DWARF"
    );
    let remote_base = env.lab.workers()[0].remote_base.display().to_string();
    assert!(
        !dwarf.contains(&remote_base),
        "the worker's path is in the DWARF"
    );
    let rebuilt = env
        .rch_in(&app)
        .env("CARGO_TARGET_DIR", &target)
        .args(["exec", "--", "cargo", "build"])
        .output()
        .unwrap();
    assert!(
        !stderr(&rebuilt).contains("Compiling"),
        "the remapped build is not warm: {}",
        stderr(&rebuilt)
    );

    // build.target-dir from .cargo/config.toml, a custom profile, a --target
    // triple and --target-dir.
    write(
        &app.join(".cargo/config.toml"),
        "[build]\ntarget-dir = \"cfg-out\"\n",
    );
    let built = rch(
        &env,
        &app,
        &["exec", "--", "cargo", "build", "--profile", "fast"],
    );
    assert_eq!(built.status.code(), Some(0), "{}", describe(&built));
    run(&mut Command::new(app.join("cfg-out/fast/app")));
    let triple = host_triple();
    let built = rch(
        &env,
        &app,
        &[
            "exec",
            "--",
            "cargo",
            "build",
            "--target",
            &triple,
            "--target-dir",
            "td",
        ],
    );
    assert_eq!(built.status.code(), Some(0), "{}", describe(&built));
    run(&mut Command::new(
        app.join("td").join(&triple).join("debug/app"),
    ));

    // A path dependency outside the repository: the build runs here, and
    // diagnose says why.
    write(
        &app.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nshared = { path = \"../shared\" }\nfar = { path = \"../../far\" }\n",
    );
    write(
        &env.path().join("projects/far/Cargo.toml"),
        "[package]\nname = \"far\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write(&env.path().join("projects/far/src/lib.rs"), "");
    let local = rch(&env, &app, &["exec", "--", "cargo", "build"]);
    assert_eq!(local.status.code(), Some(0), "{}", describe(&local));
    assert!(
        stderr(&local).contains("rch: ran locally: cannot sync the cargo project: path dependency"),
        "{}",
        stderr(&local)
    );
    assert!(stderr(&local).contains("outside the repository"));
    let diagnosis = rch(&env, &app, &["diagnose", "cargo build"]);
    let text = stdout(&diagnosis);
    assert!(
        text.contains("would run locally: cannot sync the cargo project"),
        "{text}"
    );
}

#[test]
fn a_local_cargo_build_right_after_a_mirrored_remote_one_rebuilds_nothing() {
    let env = TestEnv::new(1);
    env.write_config("[[workers]]\nid = \"w1\"\nmirror_paths = true\n");
    let repo = monorepo(&env);
    let app = repo.join("app");
    let built = rch(&env, &app, &["exec", "--", "cargo", "build"]);
    assert_eq!(built.status.code(), Some(0), "{}", describe(&built));
    assert!(
        stderr(&built).contains("rch: ran on w1"),
        "{}",
        stderr(&built)
    );
    let started = std::time::Instant::now();
    let local = run(Command::new("cargo")
        .current_dir(&app)
        .args(["build", "-v"])
        .env_remove("CARGO_TARGET_DIR"));
    let elapsed = started.elapsed();
    let log = stderr(&local);
    assert!(!log.contains("Compiling"), "local cargo rebuilt: {log}");
    assert!(log.contains("Fresh app"), "{log}");
    eprintln!("local cargo build after a mirrored remote one: {elapsed:?}");
}

/// The autotools project of `tests/fixtures/autotools` as a checkout at
/// `dir` (a git repository whose `.gitignore` leaves out what autoreconf
/// generates), bootstrapped there with `autoreconf -i`.
fn autotools_checkout(dir: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/autotools");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    copy_tree(&fixture, dir);
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    run(Command::new("autoreconf").arg("-i").current_dir(dir));
}

/// The compiler lines of a make run (automake's verbose rules): one per object.
fn compiled(out: &Output) -> Vec<String> {
    stdout(out)
        .lines()
        .filter(|l| l.contains(" -c -o "))
        .map(str::to_string)
        .collect()
}

/// Whether a make run re-ran any of the autotools (automake's rebuild rules
/// fire when a generated file looks older than what it is made from; make
/// echoes their commands on stdout).
fn reran_autotools(out: &Output) -> bool {
    let text = stdout(out);
    [
        "aclocal",
        "automake",
        "autoconf",
        "autoheader",
        "config.status",
    ]
    .iter()
    .any(|tool| text.contains(tool))
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn autotools_tree_configured_out_of_tree_here_builds_on_a_worker_at_the_clients_path() {
    let env = TestEnv::new(1);
    let top = env.path().join("projects/greet");
    let src = top.join("src");
    let build = top.join("build");
    autotools_checkout(&src);
    std::fs::create_dir_all(&build).unwrap();
    run(Command::new("../src/configure").current_dir(&build));
    let generated = mtime(&src.join("Makefile.in"));

    // The build dir records the client's paths (config.status, the
    // Makefile's `missing` and abs_srcdir): the tree builds at the client's
    // path, and its sources next to it are synced with it.
    let diagnosis = rch(&env, &build, &["diagnose", "make"]);
    let text = stdout(&diagnosis);
    assert!(
        text.contains(&format!("synced root: {}\n", top.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{} records {}",
            build.join("config.status").display(),
            build.display()
        )),
        "{text}"
    );
    assert!(text.contains("w1: at the client's path"), "{text}");

    let built = rch(&env, &build, &["exec", "--", "make"]);
    assert_eq!(built.status.code(), Some(0), "{}", describe(&built));
    assert!(
        stderr(&built).contains("rch: ran on w1"),
        "{}",
        stderr(&built)
    );
    assert_eq!(compiled(&built).len(), 2, "{}", stdout(&built));
    assert!(!reran_autotools(&built), "{}", describe(&built));
    assert!(!worker_sees(&env, "w1", &src.join("configure.ac")));
    assert_eq!(mtime(&src.join("Makefile.in")), generated);
    let hello = run(&mut Command::new(build.join("greet")));
    assert_eq!(stdout(&hello), "hello world from greet 1.0\n");

    // The test suite runs on the worker too.
    let checked = rch(&env, &build, &["exec", "--", "make", "check"]);
    assert_eq!(checked.status.code(), Some(0), "{}", describe(&checked));
    assert!(stderr(&checked).contains("rch: ran on w1"));
    assert!(
        stdout(&checked).contains("PASS: greet_test"),
        "{}",
        stdout(&checked)
    );
    assert!(!reran_autotools(&checked), "{}", describe(&checked));

    // One edited source: exactly one object is rebuilt, on the worker, and
    // the relinked program comes back.
    let source = src.join("greet.c");
    let text = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, text.replace("hello %s", "hi %s")).unwrap();
    let rebuilt = rch(&env, &build, &["exec", "--", "make"]);
    assert_eq!(rebuilt.status.code(), Some(0), "{}", describe(&rebuilt));
    assert!(stderr(&rebuilt).contains("rch: ran on w1"));
    let objects = compiled(&rebuilt);
    assert_eq!(objects.len(), 1, "{}", stdout(&rebuilt));
    assert!(objects[0].contains("greet.c"), "{objects:?}");
    assert!(!reran_autotools(&rebuilt), "{}", describe(&rebuilt));
    let hi = run(&mut Command::new(build.join("greet")));
    assert_eq!(stdout(&hi), "hi world from greet 1.0\n");

    // An edited Makefile.am: automake and config.status re-run on the
    // worker, at the paths the Makefile records, and what they regenerate
    // comes back.
    let am = src.join("Makefile.am");
    let text = std::fs::read_to_string(&am).unwrap();
    std::fs::write(&am, format!("{text}\n# edited\n")).unwrap();
    let regenerated = rch(&env, &build, &["exec", "--", "make"]);
    assert_eq!(
        regenerated.status.code(),
        Some(0),
        "{}",
        describe(&regenerated)
    );
    assert!(stderr(&regenerated).contains("rch: ran on w1"));
    assert!(reran_autotools(&regenerated), "{}", stdout(&regenerated));
    let makefile_in = std::fs::read_to_string(src.join("Makefile.in")).unwrap();
    assert!(
        makefile_in.contains("# edited"),
        "Makefile.in did not come back"
    );

    // A worker that may not mirror paths never gets the tree: it builds
    // here, says why, and finds the remote build's outputs up to date.
    env.write_config("[[workers]]\nid = \"w1\"\nmirror_paths = false\n");
    let diagnosis = rch(&env, &build, &["diagnose", "make"]);
    let text = stdout(&diagnosis);
    assert!(text.contains("config.status records"), "{text}");
    assert!(text.contains(": it builds only at that path"), "{text}");
    assert!(
        text.contains("w1: refuses (mirror_paths = false)"),
        "{text}"
    );
    assert!(text.contains("would run locally"), "{text}");
    let local = rch(&env, &build, &["exec", "--", "make"]);
    assert_eq!(local.status.code(), Some(0), "{}", describe(&local));
    let line = stderr(&local);
    assert!(line.contains("rch: ran locally:"), "{line}");
    assert!(line.contains("config.status records"), "{line}");
    assert!(line.contains("mirror_paths = false"), "{line}");
    assert!(compiled(&local).is_empty(), "{}", stdout(&local));
    assert!(!reran_autotools(&local), "{}", describe(&local));
}
