//! Transfer-bound benchmark cases (P1', P6, P7): rch beside the rsync+ssh
//! script a user would write (with and without an ssh ControlMaster) and
//! beside local cargo, on a worker with a minimal account and on one whose
//! `~/.bashrc` costs 50 ms (`sleep 0.05`), as many real accounts do.

use super::support::TestEnv;
use super::{before_bin, interleaved, ms, rch_other, sh, stop_other};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Medians of this many interleaved rounds (`RCH_BENCH_ROUNDS`, default 9).
pub fn rounds() -> usize {
    std::env::var("RCH_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(9)
}

/// A lab with two workers: w1 with a minimal account, w2 with a slow `.bashrc`.
fn two_accounts() -> TestEnv {
    let env = TestEnv::new(2);
    env.write_config("");
    let slow = &env.lab.workers()[1];
    std::fs::write(slow.home().join(".bashrc"), "sleep 0.05\n").expect("slow .bashrc");
    env
}

/// The hand-written script: push, build, pull. `mux` adds an ssh ControlMaster.
fn script(env: &TestEnv, worker: usize, dir: &str, mux: bool) -> String {
    let w = &env.lab.workers()[worker];
    let remote = format!("{}/script-{dir}", w.remote_base.display());
    script_on(env, &w.alias, &remote, "build", mux)
}

/// The hand-written script a user would write for `cargo <cargo> -q` on the
/// ssh host `host` (an alias of the lab's ssh config), in `remote`: push,
/// run in a login shell, and for a build the pull of `target/debug` without
/// what only cargo's own bookkeeping needs. `mux` adds an ssh ControlMaster.
pub fn script_on(env: &TestEnv, host: &str, remote: &str, cargo: &str, mux: bool) -> String {
    let ssh = ssh_to(env, host, mux);
    let pull = if cargo == "build" {
        format!(
            " && mkdir -p target/debug \
             && rsync -a -e '{ssh}' --exclude incremental/ --exclude .fingerprint/ --exclude build/ \
                {host}:{remote}/target/debug/ target/debug/"
        )
    } else {
        String::new()
    };
    format!(
        "rsync -a --delete --exclude target/ --exclude .git/ -e '{ssh}' ./ {host}:{remote}/ \
         && {ssh} {host} \"sh -lc 'cd {remote} && cargo {cargo} -q'\"{pull}"
    )
}

/// The script's `ssh` command line (host not included); `mux` adds a
/// ControlMaster, one per host, kept for two minutes.
pub fn ssh_to(env: &TestEnv, host: &str, mux: bool) -> String {
    let cfg = env.lab.ssh_config().display().to_string();
    let control = env.path().join(format!("cm-{host}"));
    if mux {
        format!(
            "ssh -F {cfg} -o ControlMaster=auto -o ControlPath={} -o ControlPersist=120",
            control.display()
        )
    } else {
        format!("ssh -F {cfg}")
    }
}

fn rch_build(env: &TestEnv, dir: &Path, worker: usize) -> Command {
    rch_build_with(env, None, dir, worker)
}

/// `rch exec` of this build, or of the binary `other` (`RCH_BENCH_BEFORE`).
fn rch_build_with(env: &TestEnv, other: Option<&Path>, dir: &Path, worker: usize) -> Command {
    let id = env.lab.workers()[worker].id.clone();
    rch_cargo(env, other, dir, &id, "build")
}

/// `rch exec --worker <worker> -- cargo <cargo> -q` in `dir`, by this rch or
/// by the binary `other` (`RCH_BENCH_BEFORE`).
pub fn rch_cargo(
    env: &TestEnv,
    other: Option<&Path>,
    dir: &Path,
    worker: &str,
    cargo: &str,
) -> Command {
    let mut c = match other {
        Some(bin) => rch_other(env, bin, dir),
        None => env.rch_in(dir),
    };
    c.args(["exec", "--worker", worker, "--", "cargo", cargo, "-q"]);
    c
}

/// A crate of `modules` source files plus `data` small files under `data/`.
pub fn crate_with(root: &Path, modules: usize, data: usize) -> PathBuf {
    let name = root
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('-', "_");
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n"
        ),
    )
    .unwrap();
    let mut main = String::new();
    for i in 0..modules {
        main.push_str(&format!("mod m{i};\n"));
        std::fs::write(
            root.join(format!("src/m{i}.rs")),
            format!("pub fn f() -> usize {{ {i} }}\n"),
        )
        .unwrap();
    }
    main.push_str("fn main() {\n    let mut s = 0;\n");
    for i in 0..modules {
        main.push_str(&format!("    s += m{i}::f();\n"));
    }
    main.push_str("    println!(\"{s}\");\n}\n");
    std::fs::write(root.join("src/main.rs"), main).unwrap();
    for i in 0..data {
        let dir = root.join(format!("data/d{}", i / 500));
        if i % 500 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(dir.join(format!("f{i}.txt")), format!("data file {i}\n")).unwrap();
    }
    root.to_path_buf()
}

/// Copies of one crate, one per contender, so none turns another's no-op into work.
fn copies(env: &TestEnv, name: &str, modules: usize, data: usize, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            crate_with(
                &env.path().join(format!("projects/{name}-{i}")),
                modules,
                data,
            )
        })
        .collect()
}

/// One edit of module 7 (its value changes, so the build really recompiles).
fn edit(dir: &Path, round: usize) {
    std::fs::write(
        dir.join("src/m7.rs"),
        format!("pub fn f() -> usize {{ {} }}\n", 7 + round),
    )
    .unwrap();
}

pub fn row(label: &str, d: Duration) {
    println!("  {label:<34} {:>9}", ms(d));
}

/// P1': warm no-op `cargo build` of a tiny crate.
pub fn p1_prime() {
    println!(
        "== P1': warm no-op `cargo build`, tiny crate (medians of {})",
        rounds()
    );
    let env = two_accounts();
    let before = before_bin();
    for (worker, account) in [(0, "minimal account"), (1, "slow .bashrc (+50 ms)")] {
        let dirs = copies(&env, &format!("p1p-{worker}"), 1, 0, 5);
        let mux = script(&env, worker, &format!("p1p-{worker}-mux"), true);
        let plain = script(&env, worker, &format!("p1p-{worker}-plain"), false);
        let contenders = |dirs: &[PathBuf]| -> Vec<Command> {
            let mut v = vec![
                rch_build(&env, &dirs[0], worker),
                sh(&mux, &dirs[1]),
                sh(&plain, &dirs[2]),
                sh("cargo build -q", &dirs[3]),
            ];
            if let Some(bin) = &before {
                v.push(rch_build_with(&env, Some(bin), &dirs[4], worker));
            }
            v
        };
        let m = interleaved(rounds(), true, |_| contenders(&dirs));
        println!(" {account}:");
        row("rch exec", m[0]);
        if let Some(b) = m.get(4) {
            row("rch exec, before", *b);
        }
        row("script over a ControlMaster", m[1]);
        row("script, no ControlMaster", m[2]);
        row("local cargo", m[3]);
        println!(
            "  rch / script(CM) = {:.2}x (goal <= 0.5x); rch - local = {} (goal <= +30 ms)",
            m[0].as_secs_f64() / m[1].as_secs_f64(),
            ms(m[0].saturating_sub(m[3]))
        );
        if let Some(b) = m.get(4) {
            println!(
                "  before: / script(CM) = {:.2}x; - local = {}",
                b.as_secs_f64() / m[1].as_secs_f64(),
                ms(b.saturating_sub(m[3]))
            );
        }
    }
    if let Some(bin) = &before {
        stop_other(&env, bin);
    }
}

/// P6: one-file edit in a 30-file crate with 5,000 data files.
pub fn p6_one_file_edit() {
    println!(
        "== P6: one-file edit + `cargo build`, 30 files + 5,000 data files (medians of {})",
        rounds()
    );
    let env = two_accounts();
    let before = before_bin();
    for (worker, account) in [(0, "minimal account"), (1, "slow .bashrc (+50 ms)")] {
        let dirs = copies(&env, &format!("p6-{worker}"), 30, 5_000, 4);
        let mux = script(&env, worker, &format!("p6-{worker}-mux"), true);
        let m = interleaved(rounds(), true, |round| {
            for d in &dirs {
                edit(d, round);
            }
            let mut cmds = vec![
                rch_build(&env, &dirs[0], worker),
                sh(&mux, &dirs[1]),
                sh("cargo build -q", &dirs[2]),
            ];
            if let Some(bin) = &before {
                cmds.push(rch_build_with(&env, Some(bin), &dirs[3], worker));
            }
            cmds
        });
        println!(" {account}:");
        row("rch exec", m[0]);
        if let Some(b) = m.get(3) {
            row("rch exec, before", *b);
        }
        row("script over a ControlMaster", m[1]);
        row("local incremental cargo", m[2]);
        println!(
            "  rch / local = {:.2}x (goal <= 2.0x); overhead {}",
            m[0].as_secs_f64() / m[2].as_secs_f64(),
            ms(m[0].saturating_sub(m[2]))
        );
        if let Some(b) = m.get(3) {
            println!(
                "  before: / local = {:.2}x; overhead {}",
                b.as_secs_f64() / m[2].as_secs_f64(),
                ms(b.saturating_sub(m[2]))
            );
        }
    }
    if let Some(bin) = &before {
        stop_other(&env, bin);
    }
}

/// P7: no-op overhead with 50,000 files beside 5,000 (minimal account).
pub fn p7_many_files() {
    println!(
        "== P7: no-op `cargo build` overhead by tree size, minimal account (medians of {})",
        rounds()
    );
    let env = two_accounts();
    let before = before_bin();
    let mut overheads = Vec::new();
    let mut before_overheads = Vec::new();
    for files in [5_000, 50_000] {
        let dirs = copies(&env, &format!("p7-{files}"), 30, files, 3);
        let m = interleaved(rounds(), true, |_| {
            let mut cmds = vec![rch_build(&env, &dirs[0], 0), sh("cargo build -q", &dirs[1])];
            if let Some(bin) = &before {
                cmds.push(rch_build_with(&env, Some(bin), &dirs[2], 0));
            }
            cmds
        });
        let overhead = m[0].saturating_sub(m[1]);
        println!(
            "  {files:>6} files: rch {} local {} overhead {}",
            ms(m[0]),
            ms(m[1]),
            ms(overhead)
        );
        overheads.push(overhead);
        if let Some(b) = m.get(2) {
            let o = b.saturating_sub(m[1]);
            println!("  {files:>6} files: before {} overhead {}", ms(*b), ms(o));
            before_overheads.push(o);
        }
    }
    let ratio = |o: &[Duration]| o[1].as_secs_f64() / o[0].as_secs_f64().max(1e-6);
    println!(
        "  overhead 50k / 5k = {:.2}x (goal <= 2x)",
        ratio(&overheads)
    );
    if before_overheads.len() == 2 {
        println!(
            "  before: overhead 50k / 5k = {:.2}x",
            ratio(&before_overheads)
        );
    }
    if let Some(bin) = &before {
        stop_other(&env, bin);
    }
}
