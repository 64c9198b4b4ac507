//! Command classification, table-driven: each row is a command and the
//! verdict rch must reach for it.

use std::ffi::OsString;
use std::time::Instant;

use rch::classify::{classify, classify_shell, split_leading_cd, Artifacts, Decision, Kind, Tool};

/// The expected verdict of a row.
#[derive(Debug)]
enum Want {
    Offload(Tool, Kind, Option<&'static str>),
    Tree(Tool, Kind),
    Local,
}
use Want::{Local, Offload, Tree};

fn argv(command: &str) -> Vec<OsString> {
    command.split_whitespace().map(OsString::from).collect()
}

fn check(command: &str, decision: Decision, want: &Want) {
    let expected = match want {
        Local => {
            if let Decision::Local(reason) = &decision {
                assert!(!reason.is_empty(), "{command:?}: empty reason");
                return;
            }
            None
        }
        Offload(tool, kind, dir) => Some(Decision::Offload(rch::classify::Offload {
            tool: *tool,
            kind: *kind,
            artifacts: match dir {
                Some(dir) => Artifacts::CargoTarget {
                    dir: dir.to_string(),
                },
                None => Artifacts::None,
            },
        })),
        Tree(tool, kind) => Some(Decision::Offload(rch::classify::Offload {
            tool: *tool,
            kind: *kind,
            artifacts: Artifacts::Tree,
        })),
    };
    assert_eq!(
        Some(&decision),
        expected.as_ref(),
        "{command:?}: expected {want:?}"
    );
}

const CARGO: &[(&str, Want)] = &[
    // cargo run: built on a worker, run here; the program's arguments do not count.
    (
        "cargo run",
        Offload(Tool::Cargo, Kind::Run, Some("target/debug")),
    ),
    (
        "cargo r --release -- --target x --profile y",
        Offload(Tool::Cargo, Kind::Run, Some("target/release")),
    ),
    (
        "cargo run --bin app input.txt --release",
        Offload(Tool::Cargo, Kind::Run, Some("target/debug")),
    ),
    // Offloadable subcommands and their kinds.
    (
        "cargo build",
        Offload(Tool::Cargo, Kind::Build, Some("target/debug")),
    ),
    (
        "cargo b",
        Offload(Tool::Cargo, Kind::Build, Some("target/debug")),
    ),
    ("cargo check", Offload(Tool::Cargo, Kind::Check, None)),
    (
        "cargo c --all-targets",
        Offload(Tool::Cargo, Kind::Check, None),
    ),
    (
        "cargo clippy --all-targets -- -D warnings",
        Offload(Tool::Cargo, Kind::Check, None),
    ),
    ("cargo test", Offload(Tool::Cargo, Kind::Test, None)),
    ("cargo t -p foo", Offload(Tool::Cargo, Kind::Test, None)),
    (
        "cargo test -- --nocapture",
        Offload(Tool::Cargo, Kind::Test, None),
    ),
    (
        "cargo test -- --help",
        Offload(Tool::Cargo, Kind::Test, None),
    ),
    ("cargo bench", Offload(Tool::Cargo, Kind::Bench, None)),
    ("cargo doc --no-deps", Offload(Tool::Cargo, Kind::Doc, None)),
    ("cargo nextest run", Offload(Tool::Cargo, Kind::Test, None)),
    (
        "cargo nextest run --workspace",
        Offload(Tool::Cargo, Kind::Test, None),
    ),
    // argv[0] as a path, toolchains and global flags.
    (
        "/usr/bin/cargo build",
        Offload(Tool::Cargo, Kind::Build, Some("target/debug")),
    ),
    (
        "/home/u/.cargo/bin/cargo test",
        Offload(Tool::Cargo, Kind::Test, None),
    ),
    (
        "cargo +nightly build",
        Offload(Tool::Cargo, Kind::Build, Some("target/debug")),
    ),
    (
        "cargo +1.80.0 check",
        Offload(Tool::Cargo, Kind::Check, None),
    ),
    (
        "cargo -q build",
        Offload(Tool::Cargo, Kind::Build, Some("target/debug")),
    ),
    (
        "cargo --locked --offline test",
        Offload(Tool::Cargo, Kind::Test, None),
    ),
    (
        "cargo -vv --frozen build",
        Offload(Tool::Cargo, Kind::Build, Some("target/debug")),
    ),
    (
        "cargo --color always build",
        Offload(Tool::Cargo, Kind::Build, Some("target/debug")),
    ),
    (
        "cargo --color=never test",
        Offload(Tool::Cargo, Kind::Test, None),
    ),
    (
        "cargo --config net.offline=true build",
        Offload(Tool::Cargo, Kind::Build, Some("target/debug")),
    ),
    (
        "cargo -Z unstable-options check",
        Offload(Tool::Cargo, Kind::Check, None),
    ),
    (
        "cargo -Zunstable-options check",
        Offload(Tool::Cargo, Kind::Check, None),
    ),
    (
        "cargo +nightly -q --locked build --release",
        Offload(Tool::Cargo, Kind::Build, Some("target/release")),
    ),
    // Artifact directories of cargo build.
    (
        "cargo build --release",
        Offload(Tool::Cargo, Kind::Build, Some("target/release")),
    ),
    (
        "cargo build -r",
        Offload(Tool::Cargo, Kind::Build, Some("target/release")),
    ),
    (
        "cargo build --profile dev",
        Offload(Tool::Cargo, Kind::Build, Some("target/debug")),
    ),
    (
        "cargo build --profile test",
        Offload(Tool::Cargo, Kind::Build, Some("target/debug")),
    ),
    (
        "cargo build --profile release",
        Offload(Tool::Cargo, Kind::Build, Some("target/release")),
    ),
    (
        "cargo build --profile bench",
        Offload(Tool::Cargo, Kind::Build, Some("target/release")),
    ),
    (
        "cargo build --profile dist",
        Offload(Tool::Cargo, Kind::Build, Some("target/dist")),
    ),
    (
        "cargo build --profile=dist",
        Offload(Tool::Cargo, Kind::Build, Some("target/dist")),
    ),
    (
        "cargo build --target x86_64-unknown-linux-gnu",
        Offload(
            Tool::Cargo,
            Kind::Build,
            Some("target/x86_64-unknown-linux-gnu/debug"),
        ),
    ),
    (
        "cargo build --release --target=aarch64-unknown-linux-musl",
        Offload(
            Tool::Cargo,
            Kind::Build,
            Some("target/aarch64-unknown-linux-musl/release"),
        ),
    ),
    (
        "cargo build --target specs/my-board.json",
        Offload(Tool::Cargo, Kind::Build, Some("target/my-board/debug")),
    ),
    (
        "cargo build --target a-b-c --target d-e-f",
        Offload(Tool::Cargo, Kind::Build, Some("target")),
    ),
    (
        "cargo build --target-dir out",
        Offload(Tool::Cargo, Kind::Build, Some("out/debug")),
    ),
    (
        "cargo build --release --target-dir=./out/",
        Offload(Tool::Cargo, Kind::Build, Some("out/release")),
    ),
    (
        "cargo build --target-dir build/t --profile ci --target x86_64-unknown-linux-gnu",
        Offload(
            Tool::Cargo,
            Kind::Build,
            Some("build/t/x86_64-unknown-linux-gnu/ci"),
        ),
    ),
    (
        "cargo test --release",
        Offload(Tool::Cargo, Kind::Test, None),
    ),
    // --no-run: the test binaries are the artifacts (a bench builds with `bench`).
    (
        "cargo test --no-run",
        Offload(Tool::Cargo, Kind::Test, Some("target/debug")),
    ),
    (
        "cargo bench --no-run",
        Offload(Tool::Cargo, Kind::Bench, Some("target/release")),
    ),
    (
        "cargo test -- --no-run",
        Offload(Tool::Cargo, Kind::Test, None),
    ),
    (
        "cargo nextest run --no-run",
        Offload(Tool::Cargo, Kind::Test, None),
    ),
    (
        "cargo build --manifest-path sub/Cargo.toml",
        Offload(Tool::Cargo, Kind::Build, Some("target/debug")),
    ),
    (
        "cargo build -p foo --features a,b --jobs 4",
        Offload(Tool::Cargo, Kind::Build, Some("target/debug")),
    ),
    // Never offloaded.
    ("cargo", Local),
    ("cargo +nightly", Local),
    ("cargo -q", Local),
    ("cargo install ripgrep", Local),
    ("cargo run --message-format json", Local),
    ("cargo run --unknown-flag", Local),
    ("cargo run --help", Local),
    ("cargo clean", Local),
    ("cargo fmt", Local),
    ("cargo publish", Local),
    ("cargo new foo", Local),
    ("cargo init", Local),
    ("cargo add serde", Local),
    ("cargo update", Local),
    ("cargo fix", Local),
    ("cargo tree", Local),
    ("cargo frobnicate", Local),
    ("cargo nextest", Local),
    ("cargo nextest list", Local),
    ("cargo --help", Local),
    ("cargo -h", Local),
    ("cargo --version", Local),
    ("cargo -V", Local),
    ("cargo --list", Local),
    ("cargo --explain E0308", Local),
    ("cargo build --help", Local),
    ("cargo test -h", Local),
    ("cargo clippy --fix", Local),
    ("cargo doc --open", Local),
    ("cargo -C sub build", Local),
    ("cargo --bogus build", Local),
    ("cargo build --target-dir /tmp/t", Local),
    ("cargo build --target-dir ../t", Local),
    ("cargo build --target-dir=~/t", Local),
    ("cargo test --target-dir /tmp/t", Local),
    ("cargo build --manifest-path ../other/Cargo.toml", Local),
];

const MAKE_CMAKE_NINJA: &[(&str, Want)] = &[
    ("make", Tree(Tool::Make, Kind::Build)),
    ("make -j8", Tree(Tool::Make, Kind::Build)),
    ("make -j 8 all", Tree(Tool::Make, Kind::Build)),
    ("make test V=1", Tree(Tool::Make, Kind::Build)),
    ("/usr/bin/make -C src", Tree(Tool::Make, Kind::Build)),
    ("gmake -f Makefile.linux", Tree(Tool::Make, Kind::Build)),
    ("make -C install", Tree(Tool::Make, Kind::Build)),
    ("make -f -", Local),
    ("make -f-", Local),
    ("make --file=-", Local),
    ("make --makefile -", Local),
    ("make -sf -", Local),
    ("make install", Local),
    ("make all uninstall", Local),
    ("make --help", Local),
    ("make -v", Local),
    ("make --version", Local),
    ("make -C /etc", Local),
    ("make -C..", Local),
    ("make --directory=../x", Local),
    ("cmake --build build", Tree(Tool::Cmake, Kind::Build)),
    (
        "cmake --build build --config Release -j 4",
        Tree(Tool::Cmake, Kind::Build),
    ),
    ("cmake --build --preset ci", Tree(Tool::Cmake, Kind::Build)),
    ("cmake --build build -- -k", Tree(Tool::Cmake, Kind::Build)),
    ("cmake ..", Local),
    ("cmake -S . -B build", Local),
    ("cmake", Local),
    ("cmake --build", Local),
    ("cmake --build /abs/build", Local),
    ("cmake --build build --target install", Local),
    ("cmake --install build", Local),
    ("cmake --version", Local),
    ("ninja", Tree(Tool::Ninja, Kind::Build)),
    ("ninja -C build", Tree(Tool::Ninja, Kind::Build)),
    ("ninja -j 4 all", Tree(Tool::Ninja, Kind::Build)),
    ("ninja-build -C out", Tree(Tool::Ninja, Kind::Build)),
    ("ninja -t clean", Local),
    ("ninja -tgraph", Local),
    ("ninja --version", Local),
    ("ninja -h", Local),
    ("ninja install", Local),
    ("ninja -C /tmp/b", Local),
    ("meson compile", Tree(Tool::Meson, Kind::Build)),
    ("meson compile -C builddir", Tree(Tool::Meson, Kind::Build)),
    (
        "meson compile -C builddir -j 2 mylib",
        Tree(Tool::Meson, Kind::Build),
    ),
    ("meson setup builddir", Local),
    ("meson test -C builddir", Local),
    ("meson install -C builddir", Local),
    ("meson compile -C /tmp/b", Local),
    ("meson --version", Local),
];

const COMPILERS: &[(&str, Want)] = &[
    ("cc -c main.c", Tree(Tool::Cc, Kind::Compile)),
    ("cc main.c -o main", Tree(Tool::Cc, Kind::Compile)),
    (
        "gcc -O2 -Wall -I/usr/include/foo -o app a.c b.c -lm",
        Tree(Tool::Cc, Kind::Compile),
    ),
    ("g++ -std=c++17 -c x.cpp", Tree(Tool::Cc, Kind::Compile)),
    ("clang -c -x c foo.txt", Tree(Tool::Cc, Kind::Compile)),
    (
        "clang++ -o out main.o util.o",
        Tree(Tool::Cc, Kind::Compile),
    ),
    ("c++ main.cc", Tree(Tool::Cc, Kind::Compile)),
    ("gcc-13 -c x.c", Tree(Tool::Cc, Kind::Compile)),
    ("clang-17 -c x.c", Tree(Tool::Cc, Kind::Compile)),
    ("clang++-17 -c x.cc", Tree(Tool::Cc, Kind::Compile)),
    ("/usr/bin/gcc -c x.c", Tree(Tool::Cc, Kind::Compile)),
    ("gcc -E x.c -o -", Tree(Tool::Cc, Kind::Compile)),
    (
        "gcc -MF deps.d -MT x.o -c x.c",
        Tree(Tool::Cc, Kind::Compile),
    ),
    (
        "gcc -include config.h -isystem /opt/inc -c x.c",
        Tree(Tool::Cc, Kind::Compile),
    ),
    ("gcc @args.rsp", Tree(Tool::Cc, Kind::Compile)),
    ("cc", Local),
    ("cc -", Local),
    ("gcc -x c -", Local),
    ("gcc -c -o x.o -", Local),
    ("gcc --version", Local),
    ("gcc -v", Local),
    ("clang --help", Local),
    ("gcc -dumpversion", Local),
    ("gcc -dumpmachine", Local),
    ("gcc -print-file-name=libc.so", Local),
    ("clang --print-resource-dir", Local),
    ("gcc -### -c x.c", Local),
    ("gcc -o /tmp/app main.c", Local),
    ("gcc -c /etc/x.c", Local),
    ("gcc -c ../x.c", Local),
    ("x86_64-linux-gnu-gcc -c x.c", Local),
    ("gcc-latest -c x.c", Local),
];

const OTHERS: &[(&str, Want)] = &[
    ("ls -la", Local),
    ("rustc main.rs", Local),
    ("bash -c make", Local),
    ("env make", Local),
    ("sudo make", Local),
    ("python3 setup.py build", Local),
];

fn run_table(table: &[(&str, Want)]) {
    for (command, want) in table {
        check(command, classify(&argv(command)), want);
        // The same words given as a shell command line classify the same.
        check(command, classify_shell(command), want);
    }
}

#[test]
fn cargo_commands() {
    run_table(CARGO);
}

#[test]
fn make_cmake_and_ninja_commands() {
    run_table(MAKE_CMAKE_NINJA);
}

#[test]
fn compiler_commands() {
    run_table(COMPILERS);
}

#[test]
fn other_commands_run_locally() {
    run_table(OTHERS);
}

#[test]
fn empty_command_is_local() {
    assert!(matches!(classify(&[]), Decision::Local(_)));
    assert!(matches!(classify_shell(""), Decision::Local(_)));
    assert!(matches!(classify_shell("   "), Decision::Local(_)));
}

#[test]
fn reasons_name_the_command() {
    assert_eq!(
        classify(&argv("cargo fmt")),
        Decision::Local("cargo fmt is not offloadable".into())
    );
    assert_eq!(
        classify(&argv("cargo install x")),
        Decision::Local("cargo install is not offloadable".into())
    );
    assert_eq!(
        classify(&argv("ls")),
        Decision::Local("ls is not a build command".into())
    );
}

#[cfg(unix)]
#[test]
fn non_utf8_arguments_run_locally() {
    use std::os::unix::ffi::OsStringExt;
    let bad = OsString::from_vec(vec![b'a', 0xff, b'.', b'c']);
    let argv = vec![OsString::from("cc"), OsString::from("-c"), bad.clone()];
    assert!(matches!(classify(&argv), Decision::Local(_)));
    let argv = vec![bad, OsString::from("build")];
    assert!(matches!(classify(&argv), Decision::Local(_)));
}

#[test]
fn arguments_with_spaces_survive_shell_quoting() {
    let decision = classify_shell("cargo build --target-dir 'my target' --features \"a b\"");
    check(
        "quoted",
        decision,
        &Offload(Tool::Cargo, Kind::Build, Some("my target/debug")),
    );
}

const SHELL: &[(&str, Want)] = &[
    (
        "cd crates/foo && cargo build",
        Offload(Tool::Cargo, Kind::Build, Some("target/debug")),
    ),
    (
        "cd 'my dir' && cargo test",
        Offload(Tool::Cargo, Kind::Test, None),
    ),
    ("  cd sub  &&  make -j4", Tree(Tool::Make, Kind::Build)),
    (
        "cargo build # a comment; with | operators",
        Offload(Tool::Cargo, Kind::Build, Some("target/debug")),
    ),
    (
        "cargo test -- 'a|b' \"c;d\"",
        Offload(Tool::Cargo, Kind::Test, None),
    ),
    (
        "cargo test -- 'literal $HOME'",
        Offload(Tool::Cargo, Kind::Test, None),
    ),
    (
        "cargo test -- a\\;b",
        Offload(Tool::Cargo, Kind::Test, None),
    ),
    (
        "cargo test -- cost$",
        Offload(Tool::Cargo, Kind::Test, None),
    ),
    (
        "cargo build \\\n  --release",
        Offload(Tool::Cargo, Kind::Build, Some("target/release")),
    ),
    ("cargo build | tee log", Local),
    ("cargo build 2>&1", Local),
    ("cargo build > log", Local),
    ("cargo build &> log", Local),
    ("cargo test < input", Local),
    ("cargo build; cargo test", Local),
    ("cargo build\ncargo test", Local),
    ("cargo build && cargo test", Local),
    ("cargo build || true", Local),
    ("cargo build &", Local),
    ("(cargo build)", Local),
    ("cargo build --target $TARGET", Local),
    ("cargo build --target \"${TARGET}\"", Local),
    ("cargo build --target $(uname -m)", Local),
    ("cargo build --target `uname -m`", Local),
    ("cd a && cd b && cargo build", Local),
    ("cd $HOME/x && cargo build", Local),
    ("cd && cargo build", Local),
    ("cd a && cargo fmt", Local),
    ("cd a; cargo build", Local),
    ("RUSTFLAGS=-Dwarnings cargo build", Local),
    ("cargo build 'unbalanced", Local),
    ("time cargo build", Local),
];

#[test]
fn shell_command_lines() {
    for (line, want) in SHELL {
        check(line, classify_shell(line), want);
    }
}

#[test]
fn leading_cd_is_split_off() {
    assert_eq!(
        split_leading_cd("cd crates/foo && cargo build"),
        (Some("crates/foo".to_string()), "cargo build")
    );
    assert_eq!(
        split_leading_cd("cd \"a b\"&&make"),
        (Some("a b".to_string()), "make")
    );
    assert_eq!(split_leading_cd("cargo build"), (None, "cargo build"));
    assert_eq!(split_leading_cd("cd a b && make"), (None, "cd a b && make"));
    assert_eq!(split_leading_cd("cd a; make"), (None, "cd a; make"));
    assert_eq!(split_leading_cd("cdrom && make"), (None, "cdrom && make"));
    assert_eq!(
        split_leading_cd("cd x && cargo build && cargo test"),
        (Some("x".to_string()), "cargo build && cargo test")
    );
}

#[test]
fn classification_is_fast() {
    // The budget is 10 µs per command in an optimised build; the bound here
    // is looser so an unoptimised test build on a busy machine still passes.
    let commands: Vec<Vec<OsString>> = [
        "cargo +nightly -q --locked build --release --target x86_64-unknown-linux-gnu -p foo",
        "gcc -O2 -Wall -I/usr/include/foo -o app a.c b.c -lm",
        "make -j8 all",
        "cargo run",
    ]
    .iter()
    .map(|c| argv(c))
    .collect();
    let rounds = 2_000;
    let start = Instant::now();
    for _ in 0..rounds {
        for command in &commands {
            std::hint::black_box(classify(std::hint::black_box(command)));
        }
    }
    let per_command = start.elapsed() / (rounds * commands.len() as u32);
    assert!(
        per_command.as_micros() < 100,
        "classification took {per_command:?} per command"
    );
}
