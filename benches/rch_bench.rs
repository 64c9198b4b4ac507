//! rch benchmarks, measured side by side in one run on real loopback sshd
//! workers; they print medians and ratios, never pass/fail.
//!
//! Run: `cargo bench --bench rch_bench` (all but the link cases), or name
//! some of `p1 p1p p6 p7 p3 p4 p4t link link-ws link-noop` after `--`. With
//! `RCH_BENCH_BEFORE=<path to another rch binary>`, P1', P6, P7, P4t (with a
//! team, 4 daemons) and the link cases also time that binary, interleaved
//! with this one (its own daemon, state and cache; the same workers and
//! config): before/after figures from one run. `RCH_BENCH_ROUNDS` sets their rounds (default 9).
//!
//! - P1: warm no-op remote `cargo build` vs the hand-written rsync+ssh script
//!   on the same worker, and vs a local no-op build.
//! - P1', P6, P7 (`sync_cases`): warm no-op, one-file edit in a tree with
//!   5,000 files, no-op with 50,000 files; beside the script with and without
//!   a ControlMaster and local cargo, on a minimal and a slow worker account.
//! - P3: what an open breaker costs a build; time to local fallback when the
//!   whole fleet is dead.
//! - P4: daemon lease+release round trip at 100 workers (p50/p99, leases/s)
//!   and daemon RSS with 1,000 workers and 100k history rows.
//! - P4t: lease+release across 4 daemons at once, each with its own client,
//!   without and with a `[team]` on a real redis-server on loopback (p50/p99,
//!   leases/s over the 4), and one daemon with a team alone; CPU time per
//!   lease (daemons, redis, clients) and Redis calls per lease.
//! - `link` (`link_cases`, only when named: about 15 minutes): a worker on
//!   loopback beside one behind the lab's link proxy (`rch::lab::link`).
//!   `link-ws`: the published `ignore` crate (copied from the cargo registry,
//!   built offline) at 10 ms RTT and 100 Mbit/s: cold build, one-file edit +
//!   build, one-file edit + check. `link-noop`: a warm no-op build of a tiny
//!   crate at 20 ms RTT, no rate limit, and the remote commands it starts.
//!   Both beside local cargo and the rsync+ssh script.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "cases/sync.rs"]
mod sync_cases;

#[path = "cases/link.rs"]
mod link_cases;

use rch::protocol::{AttemptOutcome, JobReport, LeaseRequest, Request, Response};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::TestEnv;

/// Another rch binary to time beside this one (`RCH_BENCH_BEFORE`).
fn before_bin() -> Option<std::path::PathBuf> {
    std::env::var_os("RCH_BENCH_BEFORE")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
}

/// `bin` run in `dir` with the test environment, but with a daemon, state,
/// cache and ssh masters of its own, so two rch versions never share them.
fn rch_other(env: &TestEnv, bin: &Path, dir: &Path) -> Command {
    let own = env.path().join("other");
    for sub in ["state", "cache", "data"] {
        std::fs::create_dir_all(own.join(sub)).expect("dirs of the other rch");
    }
    let run = own.join("run");
    std::fs::create_dir_all(&run).expect("runtime dir of the other rch");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("0700");
    let mut cmd = Command::new(bin);
    env.apply_env(&mut cmd);
    cmd.env("RCH_SOCKET", run.join("rch/rch.sock"))
        .env("XDG_STATE_HOME", own.join("state"))
        .env("XDG_RUNTIME_DIR", &run)
        .env("XDG_CACHE_HOME", own.join("cache"))
        .env("XDG_DATA_HOME", own.join("data"))
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

/// Stop the other rch's daemon (its `TestEnv` only stops its own).
fn stop_other(env: &TestEnv, bin: &Path) {
    let mut c = rch_other(env, bin, env.path());
    c.args(["daemon", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = c.status();
}

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let named = |name: &str| wanted.iter().any(|w| w == name);
    let run = |name: &str| wanted.is_empty() || named(name);
    if run("p1") {
        p1_warm_noop();
    }
    if run("p1p") {
        sync_cases::p1_prime();
    }
    if run("p6") {
        sync_cases::p6_one_file_edit();
    }
    if run("p7") {
        sync_cases::p7_many_files();
    }
    if run("p3") {
        p3_open_breaker_and_dead_fleet();
    }
    if run("p4") {
        p4_daemon();
    }
    if run("p4t") {
        p4_team();
    }
    // Minutes of cold builds: only when asked for.
    if named("link") || named("link-ws") {
        link_cases::workspace();
    }
    if named("link") || named("link-noop") {
        link_cases::warm_noop();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx]
}

fn time(mut cmd: Command) -> Duration {
    let t = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "benchmark command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// Medians of interleaved rounds, one per contender: `round(r)` prepares
/// round `r` and gives its commands, run in that order. With `warm_up` an
/// extra first round runs uncounted (daemon, ssh masters, caches warm).
fn interleaved(
    rounds: usize,
    warm_up: bool,
    mut round: impl FnMut(usize) -> Vec<Command>,
) -> Vec<Duration> {
    let skip = usize::from(warm_up);
    let mut samples: Vec<Vec<Duration>> = Vec::new();
    for r in 0..rounds + skip {
        for (i, cmd) in round(r).into_iter().enumerate() {
            let took = time(cmd);
            if r >= skip {
                if samples.len() <= i {
                    samples.resize(i + 1, Vec::new());
                }
                samples[i].push(took);
            }
        }
    }
    samples.into_iter().map(median).collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn sh(script: &str, dir: &Path) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script).current_dir(dir);
    c
}

const ROUNDS: usize = 15;

fn p1_warm_noop() {
    println!("== P1: warm no-op `cargo build` on a loopback worker");
    let env = TestEnv::new(1);
    env.write_config("");
    // Each contender builds its own copy, so none overwrites another's
    // artifacts and turns the next no-op into real work.
    let project = env.project("bench-p1");
    let script_project = env.project("bench-p1-script");
    let local_project = env.project("bench-p1-local");
    let w = &env.lab.workers()[0];
    let ssh_cfg = env.lab.ssh_config().display().to_string();
    let script_dir = format!("{}/script-p1", w.remote_base.display());
    // The script a user would write: three ssh connections, no multiplexing.
    let script = format!(
        "rsync -az --delete --exclude target/ --exclude .git/ -e 'ssh -F {cfg}' ./ {host}:{dir}/ \
         && ssh -F {cfg} {host} \"sh -lc 'cd {dir} && cargo build -q'\" \
         && mkdir -p target/debug \
         && rsync -az -e 'ssh -F {cfg}' --exclude incremental/ --exclude .fingerprint/ --exclude build/ \
            {host}:{dir}/target/debug/ target/debug/",
        cfg = ssh_cfg,
        host = w.alias,
        dir = script_dir
    );
    let rch = || {
        let mut c = env.rch();
        c.current_dir(&project)
            .args(["exec", "--", "cargo", "build", "-q"]);
        c
    };
    // Round 0 warms everything: remote target dirs, the master connection, local build.
    let m = interleaved(ROUNDS, true, |_| {
        vec![
            rch(),
            sh(&script, &script_project),
            sh("cargo build -q", &local_project),
        ]
    });
    let (r, s, l) = (m[0], m[1], m[2]);
    println!("  rch exec          {}", ms(r));
    println!("  rsync+ssh script  {}", ms(s));
    println!("  local cargo       {}", ms(l));
    println!(
        "  rch / script = {:.2}x (goal <= 0.35x); rch - local = {} (goal <= +150 ms)",
        r.as_secs_f64() / s.as_secs_f64(),
        ms(r.saturating_sub(l))
    );
}

fn p3_open_breaker_and_dead_fleet() {
    println!("== P3: cost of an open breaker; fallback when the fleet is dead");
    let env = TestEnv::new(2);
    let project = env.project("bench-p3");
    let check = || {
        let mut c = env.rch();
        c.current_dir(&project)
            .args(["exec", "--", "cargo", "check", "-q"]);
        c
    };
    // Fleet of w2 only vs fleet of w1 (breaker open) + w2, alternating.
    let tuning = "[circuit]\nfailure_threshold = 1\nopen_cooldown_secs = 3600\n";
    let w1_first = format!("{tuning}[[workers]]\nid = \"w1\"\npriority = 200\n");
    let w1_disabled = format!("{tuning}[[workers]]\nid = \"w1\"\nenabled = false\n");
    env.write_config(&w1_first);
    env.lab.kill("w1").unwrap();
    time(check()); // opens w1
    let (mut open, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        env.write_config(&w1_first);
        reload(&env, &project);
        open.push(time(check()));
        env.write_config(&w1_disabled);
        reload(&env, &project);
        plain.push(time(check()));
    }
    let (open, plain) = (median(open), median(plain));
    println!(
        "  build with w1 open: {} ; without w1: {} ; open breaker costs {} (goal <= 5 ms)",
        ms(open),
        ms(plain),
        ms(open.saturating_sub(plain))
    );

    // Whole fleet dead: the first build pays one connect timeout, then the
    // open breakers send builds straight to local.
    let env = TestEnv::new(1);
    env.write_config("[ssh]\nconnect_timeout_secs = 1\n[circuit]\nfailure_threshold = 1\nopen_cooldown_secs = 3600\n");
    let project = env.project("bench-p3-dead");
    let check = || {
        let mut c = env.rch();
        c.current_dir(&project)
            .args(["exec", "--", "cargo", "check", "-q"]);
        c
    };
    let _pit = env.lab.tarpit("w1").unwrap();
    let first = time(check());
    let mut fallback = Vec::new();
    let mut local = Vec::new();
    for _ in 0..ROUNDS {
        fallback.push(time(check()));
        local.push(time(sh("cargo check -q", &project)));
    }
    let (fallback, local) = (median(fallback), median(local));
    println!(
        "  dead fleet: first build {} (one 1 s connect timeout); then {} vs local {} = +{} (goal <= 50 ms)",
        ms(first),
        ms(fallback),
        ms(local),
        ms(fallback.saturating_sub(local))
    );
}

fn reload(env: &TestEnv, dir: &Path) {
    let mut c = env.rch();
    c.current_dir(dir).args(["daemon", "reload"]);
    time(c);
}

fn fake_workers(n: usize) -> String {
    (1..=n)
        .map(|i| format!("[[workers]]\nid = \"f{i}\"\nhost = \"f{i}.invalid\"\nslots = 8\n\n"))
        .collect()
}

fn p4_daemon() {
    println!("== P4: daemon lease + release");
    // One real lab worker (a lab needs one) plus fake ones that are never
    // contacted: leases only count slots.
    let env = TestEnv::new(1);
    env.write_config(&fake_workers(99));
    let dir = env.root.path().to_path_buf();
    let mut start = env.rch();
    start.current_dir(&dir).args(["daemon", "start"]);
    time(start);
    let socket = env.socket();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = 5_000;
    let (lat, total) = rt.block_on(async {
        let mut c = rch::client::Client::connect(&socket).await.unwrap();
        let mut lat = Vec::with_capacity(n);
        let t0 = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            let req = LeaseRequest {
                project: format!("/p/{}", i % 50),
                command: "cargo build".into(),
                ..Default::default()
            };
            match c.call(Request::Lease(req)).await.unwrap() {
                Response::Granted { .. } => {}
                other => panic!("{other:?}"),
            }
            let outcome = AttemptOutcome::Success { exit_code: 0 };
            c.call(Request::Release { outcome }).await.unwrap();
            lat.push(t.elapsed());
        }
        (lat, t0.elapsed())
    });
    println!(
        "  100 workers: p50 {} p99 {} (goal p99 <= 2 ms); {:.0} leases/s (goal >= 5k)",
        ms(percentile(lat.clone(), 0.5)),
        ms(percentile(lat, 0.99)),
        n as f64 / total.as_secs_f64()
    );
    let mut stop = env.rch();
    stop.current_dir(&dir).args(["daemon", "stop"]);
    time(stop);

    // 1,000 workers and 100k jobs of history.
    env.write_config(&fake_workers(999));
    {
        let mut store = rch::state::store::Store::open(&env.path().join("state/rch/state.db"))
            .unwrap()
            .store;
        let job = JobReport {
            project: "/p".into(),
            command: "cargo build".into(),
            worker: Some("f1".into()),
            outcome: rch::protocol::JobOutcome::Success,
            exit_code: Some(0),
            ..Default::default()
        };
        store.insert_jobs(1_000, &vec![job; 100_000]).unwrap();
    }
    let mut start = env.rch();
    start.current_dir(&dir).args(["daemon", "start"]);
    time(start);
    rt.block_on(async {
        let mut c = rch::client::Client::connect(&socket).await.unwrap();
        for _ in 0..1000 {
            c.call(Request::Lease(LeaseRequest::default()))
                .await
                .unwrap();
            let outcome = AttemptOutcome::Success { exit_code: 0 };
            c.call(Request::Release { outcome }).await.unwrap();
        }
        c.call(Request::Status).await.unwrap();
        match c.call(Request::Ping).await.unwrap() {
            Response::Hello { pid, .. } => {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
                let rss = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS"))
                    .unwrap_or("VmRSS: ?");
                println!(
                    "  1,000 workers + 100k jobs: daemon {} (goal <= 30 MB)",
                    rss.trim()
                );
            }
            other => panic!("{other:?}"),
        }
    });
    let mut stop = env.rch();
    stop.current_dir(&dir).args(["daemon", "stop"]);
    time(stop);
}

/// Start a daemon of its own (socket, state, runtime and cache dirs under
/// `name`) on the test's config; returns the environment to reach it.
fn own_daemon(
    env: &TestEnv,
    name: &str,
    bin: Option<&Path>,
) -> Vec<(&'static str, std::path::PathBuf)> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = env.path().join(name);
    for sub in ["state", "cache"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.join("run"))
        .unwrap();
    let vars = vec![
        ("RCH_SOCKET", dir.join("run/rch/rch.sock")),
        ("XDG_STATE_HOME", dir.join("state")),
        ("XDG_RUNTIME_DIR", dir.join("run")),
        ("XDG_CACHE_HOME", dir.join("cache")),
    ];
    let mut start = rch_bin(env, bin);
    start.envs(vars.iter().cloned()).args(["daemon", "start"]);
    time(start);
    vars
}

/// `rch` (or the other binary `bin`) with the test environment.
fn rch_bin(env: &TestEnv, bin: Option<&Path>) -> Command {
    match bin {
        Some(bin) => {
            let mut cmd = Command::new(bin);
            env.apply_env(&mut cmd);
            cmd.current_dir(env.path()).stdin(Stdio::null());
            cmd
        }
        None => env.rch(),
    }
}

/// `n` lease+release round trips on the daemon at `socket`, one at a time.
fn lease_loop(socket: &Path, n: usize) -> Vec<Duration> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = rch::client::Client::connect(socket).await.unwrap();
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            let req = LeaseRequest {
                project: format!("/p/{}", i % 50),
                command: "cargo build".into(),
                ..Default::default()
            };
            match c.call(Request::Lease(req)).await.unwrap() {
                Response::Granted { .. } => {}
                other => panic!("{other:?}"),
            }
            let outcome = AttemptOutcome::Success { exit_code: 0 };
            c.call(Request::Release { outcome }).await.unwrap();
            lat.push(t.elapsed());
        }
        lat
    })
}

fn p4_team() {
    println!("== P4t: lease + release, 4 daemons at once, without and with a team");
    let env = TestEnv::new(1);
    let redis = support::redis::RedisServer::start(&env.path().join("redis"));
    let redis_pid = redis.pid().unwrap_or(0);
    let per_daemon = 1_000;
    // With RCH_BENCH_BEFORE, the other binary's daemons with a team too,
    // right after this one's: before/after in one run.
    let before = before_bin();
    let mut cases: Vec<(bool, usize, Option<&Path>)> =
        vec![(false, 4, None), (true, 4, None), (true, 1, None)];
    if let Some(bin) = before.as_deref() {
        cases.insert(2, (true, 4, Some(bin)));
    }
    for (team, daemons, bin) in cases {
        let mut config = String::new();
        if team {
            config.push_str(&format!(
                "[team]\nredis_url = \"{}\"\nname = \"bench\"\n\n",
                redis.url()
            ));
        }
        config.push_str(&fake_workers(16));
        env.write_config(&config);
        let label = format!(
            "{}{daemons}{}",
            if team { "team" } else { "solo" },
            if bin.is_some() { "-before" } else { "" }
        );
        let vars: Vec<_> = (0..daemons)
            .map(|i| own_daemon(&env, &format!("{label}-{i}"), bin))
            .collect();
        let sockets: Vec<std::path::PathBuf> = vars.iter().map(|v| v[0].1.clone()).collect();
        let pids: Vec<u32> = sockets.iter().map(|s| daemon_pid(s)).collect();
        let calls_before = redis.command_calls();
        let cpu_before = (
            cpu_ms(&pids),
            cpu_ms(&[redis_pid]),
            cpu_ms(&[std::process::id()]),
        );
        let t0 = Instant::now();
        let runs: Vec<_> = sockets
            .into_iter()
            .map(|socket| std::thread::spawn(move || lease_loop(&socket, per_daemon)))
            .collect();
        let lat: Vec<Duration> = runs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let total = t0.elapsed();
        let n = lat.len() as f64;
        let per_lease = |after: f64, before: f64| (after - before) * 1000.0 / n;
        println!(
            "  {} daemon(s), {}{}: p50 {} p99 {}; {:.0} leases/s (goal with a team: p99 <= 3 ms, >= 2k/s over 4)",
            daemons,
            if team { "with a team (redis on loopback)" } else { "without a team" },
            if bin.is_some() { ", RCH_BENCH_BEFORE" } else { "" },
            ms(percentile(lat.clone(), 0.5)),
            ms(percentile(lat.clone(), 0.99)),
            n / total.as_secs_f64()
        );
        println!(
            "    CPU per lease: daemons {:.0} us, redis {:.0} us, clients {:.0} us; load average {}",
            per_lease(cpu_ms(&pids), cpu_before.0),
            per_lease(cpu_ms(&[redis_pid]), cpu_before.1),
            per_lease(cpu_ms(&[std::process::id()]), cpu_before.2),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or("?")
        );
        if team {
            let after = redis.command_calls();
            let per = |name: &str| {
                (after.get(name).copied().unwrap_or(0)
                    - calls_before.get(name).copied().unwrap_or(0)) as f64
                    / n
            };
            println!(
                "    redis per lease: {:.2} script calls (EVALSHA), {:.2} PUBLISH",
                per("evalsha") + per("eval"),
                per("publish"),
            );
        }
        for v in vars {
            let mut stop = rch_bin(&env, bin);
            stop.envs(v).args(["daemon", "stop"]);
            time(stop);
        }
    }
}

/// The pid of the daemon on `socket`.
fn daemon_pid(socket: &Path) -> u32 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = rch::client::Client::connect(socket).await.unwrap();
        match c.call(Request::Ping).await.unwrap() {
            Response::Hello { pid, .. } => pid,
            other => panic!("{other:?}"),
        }
    })
}

/// CPU time (user + system, ms) the processes `pids` have used so far.
fn cpu_ms(pids: &[u32]) -> f64 {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name: state is the 3rd, utime the 14th.
            let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
            Some(ticks * 1000.0 / tick)
        })
        .sum()
}
