//! What the shell wrappers cost a command that runs locally, and what
//! classifying a command costs; measured side by side in one run, printed as
//! medians, deltas and ratios (never pass/fail; the budgets are shown next to
//! the figures).
//!
//! Run: `cargo bench --bench wrap_overhead`.
//!
//! - Whole processes, interleaved run by run so that machine noise hits both
//!   sides alike: the real tool called directly vs the same command through
//!   its shim. `cargo --version` takes the cargo shim's shortcut (rch is not
//!   started); `make --version` and `cargo tree` go through `rch exec`, which
//!   classifies them as local and runs them with no daemon contact.
//!   Budget: ≤ 5 ms added (median).
//! - `classify` and `classify_shell` on typical command lines, in-process.
//!   Budget: ≤ 10 µs per call.

use rch::classify;
use std::ffi::OsString;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RCH: &str = env!("CARGO_BIN_EXE_rch");
/// Runs per side of each process comparison.
const PROCESS_RUNS: usize = 60;
/// Calls per classify measurement.
const CLASSIFY_CALLS: u32 = 20_000;
/// The budgets shown next to the figures.
const WRAPPER_BUDGET: Duration = Duration::from_millis(5);
const CLASSIFY_BUDGET: Duration = Duration::from_micros(10);

fn main() {
    let sandbox = tempfile::Builder::new()
        .prefix("rch-bench-wrap-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let env = isolated_env(sandbox.path());
    install_shims(&env);
    let shims = sandbox.path().join("data/rch/shims");
    let plain_path = std::env::var_os("PATH").unwrap_or_default();
    let project = sandbox.path().join("app");
    create_project(&project);

    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        // Process timings swing with machine load; say what it was.
        println!(
            "load average: {}",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!("wrapper overhead: whole process, median of {PROCESS_RUNS} runs each, budget ≤ {WRAPPER_BUDGET:?} added");
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>7}",
        "command (route through the shim)", "direct", "shim", "added", "ratio"
    );
    let cases: [(&str, &[&str], &str); 3] = [
        ("cargo", &["--version"], "shortcut: no rch"),
        ("make", &["--version"], "rch exec, classified local"),
        (
            "cargo",
            &["tree", "--offline"],
            "rch exec, classified local",
        ),
    ];
    for (tool, args, route) in cases {
        let real = rch::wrap::resolve(tool, &plain_path)
            .unwrap_or_else(|| panic!("{tool} is not on PATH"));
        let (direct, shim) = compare(&env, &project, &real, &shims.join(tool), args);
        let label = format!("{tool} {} ({route})", args.join(" "));
        report(&label, direct, shim);
    }
    assert!(
        !sandbox.path().join("run/rch/rch.sock").exists(),
        "a local command reached a daemon"
    );

    println!();
    println!("classify: mean of {CLASSIFY_CALLS} calls, budget ≤ {CLASSIFY_BUDGET:?} per call");
    classify_benchmarks();
}

/// XDG dirs, config and socket of the benchmark's own.
fn isolated_env(root: &Path) -> Vec<(String, OsString)> {
    for dir in ["config", "state", "cache", "data", "run"] {
        std::fs::create_dir_all(root.join(dir)).expect("bench dirs");
    }
    std::fs::write(root.join("config/config.toml"), "").expect("empty config");
    let dir = |name: &str| root.join(name).into_os_string();
    vec![
        ("RCH_CONFIG".into(), dir("config/config.toml")),
        (
            "RCH_SOCKET".into(),
            root.join("run/rch/rch.sock").into_os_string(),
        ),
        ("XDG_CONFIG_HOME".into(), dir("config")),
        ("XDG_STATE_HOME".into(), dir("state")),
        ("XDG_RUNTIME_DIR".into(), dir("run")),
        ("XDG_CACHE_HOME".into(), dir("cache")),
        ("XDG_DATA_HOME".into(), dir("data")),
    ]
}

fn command(env: &[(String, OsString)], program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RCH_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

fn install_shims(env: &[(String, OsString)]) {
    let status = command(env, Path::new(RCH))
        .args(["-q", "wrap", "install", "--tools", "cargo,make"])
        .status()
        .expect("running rch wrap install");
    assert!(status.success(), "rch wrap install failed");
}

fn create_project(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).expect("project dir");
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .expect("Cargo.toml");
    std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").expect("main.rs");
}

/// Median wall time of `real args` and `shim args`, runs interleaved.
fn compare(
    env: &[(String, OsString)],
    cwd: &Path,
    real: &Path,
    shim: &Path,
    args: &[&str],
) -> (Duration, Duration) {
    let time_once = |program: &PathBuf| {
        let start = Instant::now();
        let status = command(env, program)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running the command");
        assert!(status.success(), "{} {args:?} failed", program.display());
        start.elapsed()
    };
    let (real, shim) = (real.to_path_buf(), shim.to_path_buf());
    // Warm the page cache and cargo's own state before measuring.
    for _ in 0..3 {
        time_once(&real);
        time_once(&shim);
    }
    let mut direct = Vec::with_capacity(PROCESS_RUNS);
    let mut wrapped = Vec::with_capacity(PROCESS_RUNS);
    for _ in 0..PROCESS_RUNS {
        direct.push(time_once(&real));
        wrapped.push(time_once(&shim));
    }
    (median(direct), median(wrapped))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(label: &str, direct: Duration, shim: Duration) {
    let added = shim.saturating_sub(direct);
    let ratio = shim.as_secs_f64() / direct.as_secs_f64();
    let verdict = if added <= WRAPPER_BUDGET {
        "within budget"
    } else {
        "OVER BUDGET"
    };
    println!(
        "{label:<44} {:>10} {:>10} {:>10} {ratio:>6.2}x  {verdict}",
        ms(direct),
        ms(shim),
        ms(added)
    );
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn classify_benchmarks() {
    let argvs: [&[&str]; 4] = [
        &["cargo", "build", "--release"],
        &[
            "cargo",
            "+nightly",
            "test",
            "-p",
            "core",
            "--features",
            "a,b",
            "--",
            "--nocapture",
        ],
        &["make", "-j8", "all"],
        &["cargo", "fmt"],
    ];
    for argv in argvs {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let per_call = time_per_call(|| {
            black_box(classify::classify(black_box(&argv)));
        });
        let label = format!("classify {}", display(&argv));
        print_per_call(&label, per_call);
    }
    for line in [
        "cd '/src/my app' && cargo build --release",
        "cargo test --workspace 2>&1 | tail -n 50",
    ] {
        let per_call = time_per_call(|| {
            black_box(classify::classify_shell(black_box(line)));
        });
        print_per_call(&format!("classify_shell {line}"), per_call);
    }
}

fn time_per_call(mut f: impl FnMut()) -> Duration {
    for _ in 0..1_000 {
        f();
    }
    let start = Instant::now();
    for _ in 0..CLASSIFY_CALLS {
        f();
    }
    start.elapsed() / CLASSIFY_CALLS
}

fn print_per_call(label: &str, per_call: Duration) {
    let verdict = if per_call <= CLASSIFY_BUDGET {
        "within budget"
    } else {
        "OVER BUDGET"
    };
    let share = per_call.as_secs_f64() / CLASSIFY_BUDGET.as_secs_f64() * 100.0;
    println!(
        "{label:<66} {:>9.2} µs  ({share:.1}% of budget)  {verdict}",
        per_call.as_secs_f64() * 1e6
    );
}

fn display(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
