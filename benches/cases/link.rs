//! Link cases: builds on a worker reached through the lab's link proxy
//! (`rch::lab::link`, latency each way and a rate per direction) beside the
//! same builds on a worker on loopback, local cargo and the hand-written
//! rsync+ssh script, all interleaved in one run.
//!
//! - `link-ws`: a real third-party crate, `ignore` (ripgrep's directory
//!   walker: a library over a dozen registry crates, regex-automata the
//!   largest), copied from the cargo registry with its dev-dependencies
//!   dropped and its lock file made offline, at 10 ms RTT and 100 Mbit/s:
//!   cold `cargo build` (a fresh copy each round), one-file edit + build,
//!   one-file edit + check.
//! - `link-noop`: a warm no-op `cargo build` of a tiny crate at 20 ms RTT,
//!   no rate limit, and how many remote commands one such build starts;
//!   beside the script with and without a ControlMaster and the script's
//!   ssh command alone over its ControlMaster (no sync: the floor of one
//!   remote command per build).

use super::support::tally::{count_shells_on, shells_since};
use super::support::TestEnv;
use super::sync_cases::{crate_with, rch_cargo, rounds, script_on, ssh_to};
use super::{before_bin, interleaved, ms, sh, stop_other, time};
use rch::lab::link::{LinkProxy, Shape};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The registry crate `link-ws` builds.
const WORKSPACE_CRATE: &str = "ignore";

/// Two lab workers: the first on loopback, the second behind a link proxy.
struct Linked {
    env: TestEnv,
    places: Vec<Place>,
    _proxy: LinkProxy,
}

/// Where a contender builds: a worker and the ssh alias that reaches it.
struct Place {
    label: String,
    worker: String,
    host: String,
    base: PathBuf,
}

fn linked(shape: Shape, label: &str) -> Linked {
    let env = TestEnv::new(2);
    let (near, far) = (&env.lab.workers()[0], &env.lab.workers()[1]);
    let proxy = LinkProxy::start(far.port, shape).expect("link proxy");
    let alias = env.lab.alias_via(&far.id, proxy.port()).expect("alias");
    env.write_config(&format!(
        "[[workers]]\nid = \"{}\"\nhost = \"{alias}\"\n",
        far.id
    ));
    let places = vec![
        Place {
            label: "loopback".into(),
            worker: near.id.clone(),
            host: near.alias.clone(),
            base: near.remote_base.clone(),
        },
        Place {
            label: label.into(),
            worker: far.id.clone(),
            host: alias,
            base: far.remote_base.clone(),
        },
    ];
    Linked {
        env,
        places,
        _proxy: proxy,
    }
}

/// Who runs the build.
#[derive(Clone, PartialEq)]
enum Runner {
    /// `rch exec`, this binary or another one (`RCH_BENCH_BEFORE`).
    Rch(Option<PathBuf>),
    /// The rsync+ssh script, with or without a ControlMaster.
    Script { mux: bool },
    /// Only the script's ssh command over its ControlMaster, in a tree it
    /// pushed before: what one remote command per build costs at the least.
    Ssh,
    /// Cargo here.
    Local,
}

impl Runner {
    fn label(&self) -> &'static str {
        match self {
            Runner::Rch(None) => "rch exec",
            Runner::Rch(Some(_)) => "rch exec, before",
            Runner::Script { mux: true } => "script over a ControlMaster",
            Runner::Script { mux: false } => "script, no ControlMaster",
            Runner::Ssh => "its ssh command alone (no sync)",
            Runner::Local => "local cargo",
        }
    }
}

/// One column of a case: a runner at a place (local builds have none).
struct Contender {
    runner: Runner,
    place: Option<usize>,
}

impl Contender {
    /// `cargo <cargo>` by this contender in its own project copy `dir`.
    fn command(&self, l: &Linked, dir: &Path, cargo: &str) -> Command {
        let place = self.place.map(|p| &l.places[p]);
        match (&self.runner, place) {
            (Runner::Rch(other), Some(p)) => {
                rch_cargo(&l.env, other.as_deref(), dir, &p.worker, cargo)
            }
            (Runner::Script { mux }, Some(p)) => sh(
                &script_on(&l.env, &p.host, &script_dir(p, dir), cargo, *mux),
                dir,
            ),
            (Runner::Ssh, Some(p)) => {
                let ssh = ssh_to(&l.env, &p.host, true);
                let remote = script_dir(p, dir);
                let line = format!(
                    "{ssh} {} \"sh -lc 'cd {remote} && cargo {cargo} -q'\"",
                    p.host
                );
                sh(&line, dir)
            }
            _ => sh(&format!("cargo {cargo} -q"), dir),
        }
    }

    /// The directory this contender's build of `dir` uses on its worker.
    fn remote_dir(&self, l: &Linked, dir: &Path) -> Option<PathBuf> {
        let place = &l.places[self.place?];
        match self.runner {
            Runner::Rch(_) => Some(PathBuf::from(rch::remote::layout::remote_project_dir(
                &place.base.to_string_lossy(),
                dir,
            ))),
            Runner::Script { .. } | Runner::Ssh => Some(PathBuf::from(script_dir(place, dir))),
            Runner::Local => None,
        }
    }
}

fn script_dir(place: &Place, dir: &Path) -> String {
    let name = dir.file_name().unwrap().to_string_lossy();
    format!("{}/script-{name}", place.base.display())
}

/// Each runner at each place (local once), in the order they run each round.
fn contenders(runners: &[Runner], places: usize) -> Vec<Contender> {
    let mut all = Vec::new();
    for runner in runners {
        for place in 0..places {
            all.push(Contender {
                runner: runner.clone(),
                place: Some(place),
            });
        }
    }
    all.push(Contender {
        runner: Runner::Local,
        place: None,
    });
    all
}

/// The median of `runner` at `place` among the contenders' medians.
fn find(
    cs: &[Contender],
    m: &[Duration],
    runner: &Runner,
    place: Option<usize>,
) -> Option<Duration> {
    cs.iter()
        .position(|c| &c.runner == runner && (c.runner == Runner::Local || c.place == place))
        .map(|i| m[i])
}

fn secs(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        ms(d)
    }
}

/// The newest copy of registry crate `name` in the cargo registry's sources.
fn registry_crate(name: &str) -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| directories::BaseDirs::new().map(|b| b.home_dir().join(".cargo")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(cargo_home.join("registry/src"))
        .ok()?
        .flatten()
        .flat_map(|index| {
            std::fs::read_dir(index.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|p| {
            let file = p.file_name().unwrap_or_default().to_string_lossy();
            file.strip_prefix(name)
                .and_then(|v| v.strip_prefix('-'))
                .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        })
        .collect();
    found.sort();
    found.pop()
}

/// A buildable copy of the registry crate at `source` in `dest`: without
/// dev-dependencies (not all are in the registry) and with a lock file made
/// from the registry alone, so that every build here and on the workers
/// works offline.
fn prepare(source: &Path, dest: &Path) -> PathBuf {
    copy_tree(source, dest);
    let manifest = dest.join("Cargo.toml");
    let mut toml: toml::Table = std::fs::read_to_string(&manifest)
        .expect("manifest")
        .parse()
        .expect("a valid manifest");
    toml.remove("dev-dependencies");
    if let Some(toml::Value::Table(targets)) = toml.get_mut("target") {
        for (_, target) in targets.iter_mut() {
            if let toml::Value::Table(t) = target {
                t.remove("dev-dependencies");
            }
        }
    }
    std::fs::write(&manifest, toml.to_string()).expect("manifest");
    let mut lock = Command::new("cargo");
    lock.args(["generate-lockfile", "--offline", "-q"])
        .current_dir(dest);
    time(lock);
    dest.to_path_buf()
}

fn copy_tree(from: &Path, to: &Path) {
    let mut cp = Command::new("cp");
    cp.arg("-a").arg(from).arg(to);
    time(cp);
}

/// Bytes under `dir`.
fn size_of(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => size_of(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// One edit of the crate's `src/lib.rs`: a constant whose value changes.
fn edit(dir: &Path, original: &str, round: usize) {
    std::fs::write(
        dir.join("src/lib.rs"),
        format!("{original}\n/// Changed by each benchmark round.\n#[doc(hidden)]\npub const BENCH_EDIT: usize = {round};\n"),
    )
    .expect("edit");
}

/// The runners every case has: rch (and the other binary), the script over a ControlMaster.
fn runners(before: &Option<PathBuf>, plain_script: bool) -> Vec<Runner> {
    let mut v = vec![Runner::Rch(None)];
    if let Some(bin) = before {
        v.push(Runner::Rch(Some(bin.clone())));
    }
    v.push(Runner::Script { mux: true });
    if plain_script {
        v.push(Runner::Script { mux: false });
    }
    v
}

/// `link-ws`: a real crate at 10 ms RTT and 100 Mbit/s, beside loopback.
pub fn workspace() {
    let Some(source) = registry_crate(WORKSPACE_CRATE) else {
        println!("== link-ws: skipped: no `{WORKSPACE_CRATE}` crate in the cargo registry");
        return;
    };
    let cold_rounds = (rounds() / 3).max(1);
    let name = source.file_name().unwrap().to_string_lossy().into_owned();
    println!(
        "== link-ws: `{name}` from the cargo registry; worker on loopback and at 10 ms RTT, 100 Mbit/s \
         (medians of {cold_rounds} cold, {} edit rounds)",
        rounds()
    );
    let l = linked(Shape::new(10, 100), "10 ms, 100 Mbit/s");
    let before = before_bin();
    let runners = runners(&before, false);
    let cs = contenders(&runners, l.places.len());
    let projects = l.env.path().join("projects");
    let pristine = prepare(&source, &projects.join("ws-pristine"));
    let original = std::fs::read_to_string(pristine.join("src/lib.rs")).expect("lib.rs");

    // Cold: a fresh copy per contender and round; the last round's stay for the edits.
    let mut dirs: Vec<PathBuf> = Vec::new();
    let cold = interleaved(cold_rounds, false, |round| {
        for (c, dir) in cs.iter().zip(&dirs) {
            if let Some(remote) = c.remote_dir(&l, dir) {
                let _ = std::fs::remove_dir_all(remote);
            }
            let _ = std::fs::remove_dir_all(dir);
        }
        dirs = (0..cs.len())
            .map(|i| {
                let dir = projects.join(format!("ws-{round}-{i}"));
                copy_tree(&pristine, &dir);
                dir
            })
            .collect();
        cs.iter()
            .zip(&dirs)
            .map(|(c, d)| c.command(&l, d, "build"))
            .collect()
    });
    let local_dir = &dirs[cs.len() - 1];
    let crates = std::fs::read_dir(local_dir.join("target/debug/deps"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".rlib") || name.ends_with(".so")
        })
        .count();
    let target_mb = size_of(&local_dir.join("target/debug")) as f64 / 1e6;
    let build = edited(&l, &cs, &dirs, &original, "build");
    let check = edited(&l, &cs, &dirs, &original, "check");

    println!(
        "  {crates} crates compiled; a local target/debug of {target_mb:.0} MB after a cold build"
    );
    print!("  {:<20} {:<18}", "case", "worker");
    for r in &runners {
        print!(" {:>12}", short(r));
    }
    println!(" {:>10} {:>10}  goal", "local", "rch/local");
    let goals: [(&str, &[Duration], Goal); 3] = [
        ("cold cargo build", &cold, Goal::Ratio(1.15)),
        ("edit + cargo build", &build, Goal::Ratio(1.5)),
        (
            "edit + cargo check",
            &check,
            Goal::Plus(Duration::from_millis(150)),
        ),
    ];
    for (case, m, goal) in goals {
        let local = find(&cs, m, &Runner::Local, None).unwrap();
        for (p, place) in l.places.iter().enumerate() {
            let first = if p == 0 { case } else { "" };
            print!("  {first:<20} {:<18}", place.label);
            for r in &runners {
                print!(" {:>12}", secs(find(&cs, m, r, Some(p)).unwrap()));
            }
            let rch = find(&cs, m, &Runner::Rch(None), Some(p)).unwrap();
            println!(
                " {:>10} {:>9.2}x  {}",
                secs(local),
                rch.as_secs_f64() / local.as_secs_f64(),
                goal.judge(rch, local)
            );
        }
    }
    if let Some(bin) = &before {
        stop_other(&l.env, bin);
    }
}

/// Medians of one-file edits followed by `cargo <cargo>`, each contender
/// in its copy of `dirs`; round 0 warms up (the first check builds the
/// dependencies' metadata).
fn edited(
    l: &Linked,
    cs: &[Contender],
    dirs: &[PathBuf],
    original: &str,
    cargo: &str,
) -> Vec<Duration> {
    interleaved(rounds(), true, |round| {
        for d in dirs {
            edit(d, original, round);
        }
        cs.iter()
            .zip(dirs)
            .map(|(c, d)| c.command(l, d, cargo))
            .collect()
    })
}

/// A goal against local cargo.
enum Goal {
    /// At most this many times local.
    Ratio(f64),
    /// At most local plus this.
    Plus(Duration),
}

impl Goal {
    fn judge(&self, rch: Duration, local: Duration) -> String {
        let (met, text) = match self {
            Goal::Ratio(r) => (
                rch.as_secs_f64() <= r * local.as_secs_f64(),
                format!("<= {r}x local"),
            ),
            Goal::Plus(d) => (
                rch <= local + *d,
                format!(
                    "<= local + {} (now +{})",
                    ms(*d),
                    ms(rch.saturating_sub(local))
                ),
            ),
        };
        format!("{text}: {}", if met { "met" } else { "missed" })
    }
}

fn short(r: &Runner) -> &'static str {
    match r {
        Runner::Rch(None) => "rch",
        Runner::Rch(Some(_)) => "before",
        Runner::Script { mux: true } => "script(CM)",
        Runner::Script { mux: false } => "script",
        Runner::Ssh => "ssh",
        Runner::Local => "local",
    }
}

/// `link-noop`: a warm no-op build of a tiny crate at 20 ms RTT, beside loopback.
pub fn warm_noop() {
    println!(
        "== link-noop: warm no-op `cargo build`, tiny crate; worker on loopback and at 20 ms RTT, \
         no rate limit (medians of {})",
        rounds()
    );
    let rtt = Duration::from_millis(20);
    let l = linked(Shape::new(20, 0), "20 ms RTT");
    let tallies: Vec<PathBuf> = (0..l.places.len())
        .map(|p| count_shells_on(&l.env, p))
        .collect();
    let before = before_bin();
    let mut runners = runners(&before, true);
    runners.push(Runner::Ssh);
    let cs = contenders(&runners, l.places.len());
    let dirs: Vec<PathBuf> = (0..cs.len())
        .map(|i| crate_with(&l.env.path().join(format!("projects/noop-{i}")), 1, 0))
        .collect();
    // The ssh-alone contenders build in a tree the script pushed.
    for (c, d) in cs.iter().zip(&dirs) {
        if let (Runner::Ssh, Some(p)) = (&c.runner, c.place) {
            let place = &l.places[p];
            time(sh(
                &script_on(&l.env, &place.host, &script_dir(place, d), "build", true),
                d,
            ));
        }
    }
    let m = interleaved(rounds(), true, |_| {
        cs.iter()
            .zip(&dirs)
            .map(|(c, d)| c.command(&l, d, "build"))
            .collect()
    });
    // One more no-op of each rch, alone, to count what it starts remotely.
    let commands: Vec<Option<usize>> = cs
        .iter()
        .zip(&dirs)
        .map(|(c, d)| match (&c.runner, c.place) {
            (Runner::Rch(_), Some(p)) => {
                let start = shells_since(&tallies[p], 0);
                time(c.command(&l, d, "build"));
                Some(shells_since(&tallies[p], start))
            }
            _ => None,
        })
        .collect();

    print!("  {:<30}", "");
    for place in &l.places {
        print!(" {:>18}", place.label);
    }
    println!();
    for r in &runners {
        print!("  {:<30}", r.label());
        for p in 0..l.places.len() {
            let i = cs
                .iter()
                .position(|c| &c.runner == r && c.place == Some(p))
                .unwrap();
            let count = commands[i]
                .map(|n| format!(" ({n} cmd)"))
                .unwrap_or_default();
            print!(" {:>18}", format!("{}{count}", ms(m[i])));
        }
        println!();
    }
    let local = find(&cs, &m, &Runner::Local, None).unwrap();
    println!("  {:<30} {:>18}", "local cargo", ms(local));
    let far = l.places.len() - 1;
    let at = |r: &Runner, p: usize| find(&cs, &m, r, Some(p)).unwrap();
    for r in runners.iter().filter(|r| matches!(r, Runner::Rch(_))) {
        let (rch, script) = (at(r, far), at(&Runner::Script { mux: true }, far));
        let over = rch.saturating_sub(local);
        println!(
            "  {} at 20 ms: local + {} = {:.1} round trips (goal <= 3: {}); {:.2}x the script over a ControlMaster (goal <= 0.5x: {})",
            r.label(),
            ms(over),
            over.as_secs_f64() / rtt.as_secs_f64(),
            if over <= rtt * 3 { "met" } else { "missed" },
            rch.as_secs_f64() / script.as_secs_f64(),
            if rch.as_secs_f64() <= 0.5 * script.as_secs_f64() { "met" } else { "missed" },
        );
        let beyond = |p| ms(at(r, p).saturating_sub(at(&Runner::Ssh, p)));
        println!(
            "    beyond one ssh command over a ControlMaster: {} on loopback, {} at 20 ms",
            beyond(0),
            beyond(far)
        );
    }
    if let Some(bin) = &before {
        stop_other(&l.env, bin);
    }
}
