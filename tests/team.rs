//! A team's daemons sharing one fleet through a real redis-server, with real
//! sshd workers: a circuit opened by one daemon is open for the other at
//! once, team events reach the other daemon's `rch events --follow` with
//! their origin, and a Redis killed mid-run stops no build, then the team
//! converges when it is back; a recovering worker gets one probe from the
//! whole team.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::redis::RedisServer;
use support::TestEnv;

/// A second daemon of the same user and config, with its own socket and state.
struct Other<'a> {
    env: &'a TestEnv,
    dir: PathBuf,
}

impl<'a> Other<'a> {
    fn new(env: &'a TestEnv, name: &str) -> Other<'a> {
        let dir = env.path().join(name);
        for sub in ["state", "cache"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("run"))
            .unwrap();
        Other { env, dir }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("run/rch/rch.sock")
    }

    fn rch(&self, args: &[&str]) -> Command {
        let mut cmd = self.env.rch();
        cmd.env("RCH_SOCKET", self.socket())
            .env("XDG_STATE_HOME", self.dir.join("state"))
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .env("XDG_CACHE_HOME", self.dir.join("cache"))
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.rch(args).output().expect("running rch")
    }
}

impl Drop for Other<'_> {
    fn drop(&mut self) {
        let _ = self
            .rch(&["daemon", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Start this test's own daemon and the other daemons, each on its socket.
fn start_daemons(env: &TestEnv, others: &[Other]) {
    let own = env.rch().args(["daemon", "start"]).status().unwrap();
    assert!(own.success());
    for o in others {
        assert!(o.run(&["daemon", "start"]).status.success());
    }
}

fn status_at(socket: &Path) -> rch::state::report::FleetReport {
    use rch::protocol::{Request, Response};
    support::block_on(async {
        let mut client = rch::client::Client::connect(socket)
            .await
            .expect("daemon up");
        match client.call(Request::Status).await.expect("status") {
            Response::Status(report) => *report,
            other => panic!("unexpected answer {other:?}"),
        }
    })
}

fn circuit_at(socket: &Path, id: &str) -> rch::state::report::CircuitReport {
    status_at(socket)
        .workers
        .into_iter()
        .find(|w| w.id == id)
        .expect("worker")
        .circuit
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn build(cmd: &mut Command) -> (Output, Duration) {
    let t = Instant::now();
    let out = cmd
        .args(["exec", "--", "cargo", "check"])
        .output()
        .expect("rch exec");
    (out, t.elapsed())
}

/// `rch events --follow --json` of a daemon, its lines sent to a channel.
fn follow(mut cmd: Command) -> (std::process::Child, mpsc::Receiver<serde_json::Value>) {
    let mut child = cmd
        .args(["events", "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("rch events --follow");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    (child, rx)
}

fn team_config(redis: &RedisServer) -> String {
    format!(
        "[ssh]\nconnect_timeout_secs = 2\n\n[circuit]\nopen_cooldown_secs = 600\n\n\
         [team]\nredis_url = \"{}\"\nname = \"t\"\ntimeout_ms = 200\n\n\
         [[workers]]\nid = \"w1\"\npriority = 200\n",
        redis.url()
    )
}

/// A daemon's log, for assertion messages.
fn log_of(state: &Path) -> String {
    std::fs::read_to_string(state.join("rch/daemon.log")).unwrap_or_default()
}

#[test]
fn a_circuit_opened_by_one_daemon_is_open_for_the_team_and_redis_down_stops_no_build() {
    let env = TestEnv::new(2);
    let mut redis = RedisServer::start(&env.path().join("redis"));
    env.write_config(&team_config(&redis));
    let b = Other::new(&env, "b");
    start_daemons(&env, std::slice::from_ref(&b));
    let (mut follower, events) = follow(b.rch(&[]));
    let a_log = || log_of(&env.path().join("state"));
    let _pit = env.lab.tarpit("w1").unwrap();

    // Daemon A pays w1's connect timeout three times; the third opens it.
    // Each build is of a project new to the fleet: a project's later builds
    // prefer the worker that built it last (w2 here), not w1.
    let mut first = Duration::ZERO;
    for i in 0..3 {
        let project = env.project(&format!("a{i}"));
        let (out, took) = build(&mut env.rch_in(&project));
        assert!(stderr(&out).contains("rch: ran on w2"), "{}", stderr(&out));
        if i == 0 {
            first = took;
        }
    }
    let opened = Instant::now();
    assert!(
        support::wait_for(Duration::from_secs(1), || env.circuit("w1").state == "open"),
        "A did not open w1: {:?}\nteam breaker: {}\nA's log:\n{}",
        env.circuit("w1"),
        redis.cli(&["GET", "rch:{t}:breaker:w1"]),
        a_log()
    );
    assert!(
        support::wait_for(Duration::from_secs(1), || circuit_at(&b.socket(), "w1")
            .state
            == "open"),
        "daemon B did not see w1 open within 1 s"
    );
    assert!(opened.elapsed() < Duration::from_secs(2));

    // B's build of a project new to it goes to w2 at once, without trying w1.
    let mut cmd = b.rch(&[]);
    cmd.current_dir(env.project("b0"));
    let (out, took) = build(&mut cmd);
    assert!(stderr(&out).contains("rch: ran on w2"), "{}", stderr(&out));
    assert!(took < first, "B paid w1's timeout: {took:?} vs {first:?}");
    let (ca, cb) = (env.circuit("w1"), circuit_at(&b.socket(), "w1"));
    assert_eq!((ca.failures, ca.epoch), (cb.failures, cb.epoch));

    // B's follower heard A's circuit.opened, with where it came from.
    let deadline = Instant::now() + Duration::from_secs(5);
    let heard = std::iter::from_fn(|| {
        events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    })
    .find(|e| e["event"] == "circuit.opened" && e["worker"] == "w1")
    .expect("circuit.opened from A in B's events");
    let origin = heard["origin"].as_str().unwrap_or_default().to_string();
    assert!(origin.contains('@'), "{heard}");
    let _ = follower.kill();
    let _ = follower.wait();
    // B's own history holds only its own events.
    let stored = b.run(&["events", "--json"]);
    assert!(
        !String::from_utf8_lossy(&stored.stdout).contains("\"origin\""),
        "{}",
        support::describe(&stored)
    );

    // The team link shows in status; keys are the team's namespace only.
    let shown = env.rch().args(["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        text.contains(&format!("team: t via {} (connected)", redis.url())),
        "{text}"
    );
    let keys = redis.cli(&["KEYS", "*"]);
    assert!(keys.lines().all(|k| k.starts_with("rch:{t}:")), "{keys}");
    assert!(keys.contains("rch:{t}:events"), "{keys}");

    // Redis dies: builds keep running, each daemon says it decides alone.
    redis.kill();
    for who in [env.rch(), b.rch(&[])] {
        let mut who = who;
        let (out, took) = build(&mut who);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stderr(&out).contains("rch: ran on w2"), "{}", stderr(&out));
        assert!(took < first, "{took:?}");
    }
    let team_json = || {
        let json = env.rch().args(["status", "--json"]).output().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        json["team"].clone()
    };
    assert!(
        support::wait_for(Duration::from_secs(5), || team_json()["connected"] == false),
        "{}",
        team_json()
    );
    let shown =
        String::from_utf8_lossy(&env.rch().args(["status"]).output().unwrap().stdout).into_owned();
    assert!(
        shown.contains("unavailable since") && shown.contains("using local breakers"),
        "{shown}"
    );
    assert_eq!(
        a_log().matches("team redis unavailable").count(),
        1,
        "said once:\n{}",
        a_log()
    );

    // Back, empty: the daemons' state becomes the team's again, and agrees.
    redis.restart();
    assert!(support::wait_for(Duration::from_secs(15), || {
        status_at(&env.socket()).team.is_some_and(|t| t.connected)
            && status_at(&b.socket()).team.is_some_and(|t| t.connected)
    }));
    assert!(
        support::wait_for(Duration::from_secs(5), || {
            let (a, b) = (env.circuit("w1"), circuit_at(&b.socket(), "w1"));
            a.state == "open" && b.state == "open" && a.epoch == b.epoch
        }),
        "{}",
        redis.cli(&["GET", "rch:{t}:breaker:w1"])
    );
    assert!(redis
        .cli(&["GET", "rch:{t}:breaker:w1"])
        .contains("\"open\""));

    // w1 recovers; B's operator probe goes through the team's breaker, the
    // team's prober finishes the recovery, and both daemons see it closed.
    env.lab.revive("w1").unwrap();
    let probed = b.run(&["workers", "probe", "w1"]);
    assert!(probed.status.success(), "{}", support::describe(&probed));
    assert!(
        support::wait_for(Duration::from_secs(20), || {
            env.circuit("w1").state == "closed" && circuit_at(&b.socket(), "w1").state == "closed"
        }),
        "{:?} {:?} {}",
        env.circuit("w1"),
        circuit_at(&b.socket(), "w1"),
        redis.cli(&["GET", "rch:{t}:breaker:w1"])
    );
    assert!(redis
        .cli(&["GET", "rch:{t}:breaker:w1"])
        .contains("\"closed\""));
}

/// Lines of worker `id`'s sshd log that record a login, from byte `from` on.
fn logins_since(env: &TestEnv, id: &str, from: u64) -> usize {
    let worker = env.lab.workers().iter().find(|w| w.id == id).unwrap();
    let log = std::fs::read(worker.log_file()).unwrap_or_default();
    let tail = log.get(from as usize..).unwrap_or_default();
    String::from_utf8_lossy(tail)
        .lines()
        .filter(|l| l.contains("Accepted publickey"))
        .count()
}

fn log_len(env: &TestEnv, id: &str) -> u64 {
    let worker = env.lab.workers().iter().find(|w| w.id == id).unwrap();
    std::fs::metadata(worker.log_file()).map_or(0, |m| m.len())
}

#[test]
fn one_daemon_of_three_probes_a_recovering_worker() {
    let env = TestEnv::new(2);
    let redis = RedisServer::start(&env.path().join("redis"));
    env.write_config(&format!(
        "[ssh]\nconnect_timeout_secs = 2\n\n[circuit]\nopen_cooldown_secs = 2\nsuccess_threshold = 1\n\n\
         [team]\nredis_url = \"{}\"\nname = \"t\"\n\n\
         [[workers]]\nid = \"w1\"\npriority = 200\n",
        redis.url()
    ));
    let others = [Other::new(&env, "b"), Other::new(&env, "c")];
    start_daemons(&env, &others);
    let sockets: Vec<PathBuf> = std::iter::once(env.socket())
        .chain(others.iter().map(Other::socket))
        .collect();
    let all = |state: &str| sockets.iter().all(|s| circuit_at(s, "w1").state == state);

    // w1 dies; A's builds open it for the team.
    env.lab.kill("w1").unwrap();
    for i in 0..3 {
        let project = env.project(&format!("p{i}"));
        let (out, _) = build(&mut env.rch_in(&project));
        assert!(stderr(&out).contains("rch: ran on w2"), "{}", stderr(&out));
    }
    assert!(support::wait_for(Duration::from_secs(2), || all("open")));

    // It comes back before the cooldown ends: one daemon of the three gets
    // the team's probe permit; all three see it closed.
    let mark = log_len(&env, "w1");
    env.lab.revive("w1").unwrap();
    assert!(
        support::wait_for(Duration::from_secs(20), || all("closed")),
        "{}",
        redis.cli(&["GET", "rch:{t}:breaker:w1"])
    );
    assert_eq!(logins_since(&env, "w1", mark), 1, "probe connections to w1");
}

/// A project whose `make job` marks its start in the exchange dir, waits
/// there for its gate, then marks its end.
fn gated_project(env: &TestEnv, name: &str) -> PathBuf {
    let project = env.path().join("projects").join(name);
    std::fs::create_dir_all(&project).unwrap();
    let x = env.exchange_dir();
    let makefile = format!(
        "job:\n\t@touch '{x}/started-{name}'; while [ ! -e '{x}/open-{name}' ]; do sleep 0.1; done; touch '{x}/done-{name}'\n",
        x = x.display()
    );
    std::fs::write(project.join("Makefile"), makefile).unwrap();
    project
}

fn spawn_job(mut cmd: Command) -> std::process::Child {
    cmd.args(["exec", "--", "make", "job"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rch exec")
}

#[test]
fn a_worker_slot_is_held_once_for_the_whole_team() {
    let env = TestEnv::new(2);
    let redis = RedisServer::start(&env.path().join("redis"));
    env.write_config(&format!(
        "[team]\nredis_url = \"{}\"\nname = \"t\"\n\n\
         [[workers]]\nid = \"w1\"\nslots = 1\npriority = 200\n\n\
         [[workers]]\nid = \"w2\"\nslots = 1\n",
        redis.url()
    ));
    std::fs::create_dir_all(env.exchange_dir()).unwrap();
    let b = Other::new(&env, "b");
    start_daemons(&env, std::slice::from_ref(&b));
    let x = env.exchange_dir();
    let exists = |f: &str| x.join(f).exists();

    // A's build holds w1's one slot, team-wide.
    let a = spawn_job(env.rch_in(&gated_project(&env, "ga")));
    assert!(support::wait_for(Duration::from_secs(30), || exists(
        "started-ga"
    )));
    assert_eq!(redis.cli(&["ZCARD", "rch:{t}:slots:w1"]).trim(), "1");

    // B's build goes to w2, not onto w1 beside A's.
    let mut cmd = b.rch(&[]);
    cmd.current_dir(gated_project(&env, "gb"));
    std::fs::write(x.join("open-gb"), "").unwrap();
    let out = cmd.args(["exec", "--", "make", "job"]).output().unwrap();
    assert!(stderr(&out).contains("rch: ran on w2"), "{}", stderr(&out));

    // B's build that wants w1 waits in B's queue until A's ends; the freed
    // slot wakes it (no polling, no waiting for the lease to expire).
    let mut cmd = b.rch(&[]);
    cmd.current_dir(gated_project(&env, "gc"))
        .env("RCH_WORKER", "w1");
    let c = spawn_job(cmd);
    assert!(!support::wait_for(Duration::from_secs(2), || exists(
        "started-gc"
    )));
    std::fs::write(x.join("open-ga"), "").unwrap();
    let freed = Instant::now();
    assert!(support::wait_for(Duration::from_secs(10), || exists(
        "started-gc"
    )));
    assert!(exists("done-ga"), "B's build started before A's ended");
    assert!(freed.elapsed() < Duration::from_secs(10));
    std::fs::write(x.join("open-gc"), "").unwrap();
    let (a, c) = (a.wait_with_output().unwrap(), c.wait_with_output().unwrap());
    assert!(stderr(&a).contains("rch: ran on w1"), "{}", stderr(&a));
    assert!(stderr(&c).contains("rch: ran on w1"), "{}", stderr(&c));
    assert!(support::wait_for(Duration::from_secs(2), || redis
        .cli(&["ZCARD", "rch:{t}:slots:w1"])
        .trim()
        == "0"));
}

#[test]
fn a_released_slot_is_free_for_the_next_lease_at_once_and_a_lease_costs_one_script() {
    use rch::protocol::{AttemptOutcome, LeaseRequest, Request, Response};
    let env = TestEnv::new(1);
    let redis = RedisServer::start(&env.path().join("redis"));
    env.write_config(&format!(
        "[team]\nredis_url = \"{}\"\nname = \"t\"\n\n[[workers]]\nid = \"w1\"\nslots = 1\n",
        redis.url()
    ));
    start_daemons(&env, &[]);
    // Past the daemon's start (its merge, its scripts loaded).
    let socket = env.socket();
    let lease = || LeaseRequest {
        project: "/p".into(),
        command: "make".into(),
        ..Default::default()
    };
    support::block_on(async {
        let mut c = rch::client::Client::connect(&socket).await.unwrap();
        let _ = c.call(Request::Lease(lease())).await.unwrap();
        let outcome = AttemptOutcome::Success { exit_code: 0 };
        c.call(Request::Release { outcome }).await.unwrap();
    });
    let before = redis.command_calls();

    // One worker with one slot, leased and released back to back: the slot
    // a release gave back is free in Redis for the very next lease, even
    // with the team's breaker work behind it.
    const LEASES: u64 = 200;
    let started = std::time::Instant::now();
    support::block_on(async {
        let mut c = rch::client::Client::connect(&socket).await.unwrap();
        for i in 0..LEASES {
            match c.call(Request::Lease(lease())).await.unwrap() {
                Response::Granted { worker, .. } => assert_eq!(worker.id, "w1"),
                other => panic!("lease {i}: {other:?} (the released slot was still held)"),
            }
            let outcome = AttemptOutcome::Success { exit_code: 0 };
            c.call(Request::Release { outcome }).await.unwrap();
        }
    });
    let took = started.elapsed();
    assert!(support::wait_for(Duration::from_secs(5), || redis
        .cli(&["ZCARD", "rch:{t}:slots:w1"])
        .trim()
        == "0"));
    // Every success is counted on the team's breaker (the warm-up's too),
    // held back at most 50 ms on this healthy breaker.
    let counted = || {
        let raw = redis.cli(&["GET", "rch:{t}:breaker:w1"]);
        serde_json::from_str::<serde_json::Value>(raw.trim()).ok()?["consecutive_successes"]
            .as_u64()
    };
    assert!(
        support::wait_for(Duration::from_secs(5), || counted() == Some(LEASES + 1)),
        "successes counted: {:?}",
        counted()
    );

    // What a lease costs in Redis: one script to take the slot, which also
    // gives back the slot of the build before; a slot no take went along
    // with is given back on its own after 20 ms; the results on a healthy
    // breaker are counted together, one script per 50 ms at most; no
    // announcement while nobody waits for a slot.
    let after = redis.command_calls();
    let delta =
        |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    let scripts = delta("evalsha") + delta("eval");
    let ms = took.as_millis() as u64;
    let batches = ms / 50 + ms / 20 + 4;
    assert!(
        (LEASES..=LEASES + batches).contains(&scripts),
        "{scripts} scripts for {LEASES} leases in {took:?}: {after:?}"
    );
    assert_eq!(delta("publish"), 0, "{after:?}");
    assert_eq!(
        delta("exec"),
        0,
        "no transaction beside the scripts: {after:?}"
    );
}

/// A build that counts itself in and out on the worker it runs on (its
/// `$HOME` there; never the client's files), logs its start in the exchange
/// dir, and holds its slot until the gate opens.
const COUNTED_JOB: &str = r#"x=$1
(
  flock 9
  c=$(( $(cat "$HOME/running" 2>/dev/null || echo 0) + 1 ))
  echo "$c" > "$HOME/running"
  if [ "$c" -gt "$(cat "$HOME/peak" 2>/dev/null || echo 0)" ]; then echo "$c" > "$HOME/peak"; fi
  echo "$HOME" >> "$x/starts.log"
) 9>>"$HOME/count.lock"
while [ ! -e "$x/open" ]; do sleep 0.05; done
sleep 0.1
(
  flock 9
  echo $(( $(cat "$HOME/running") - 1 )) > "$HOME/running"
) 9>>"$HOME/count.lock"
"#;

#[test]
fn sixty_four_builds_from_four_daemons_never_put_more_than_four_on_a_worker() {
    const SLOTS: usize = 4;
    const DAEMONS: usize = 4;
    const BUILDS: usize = 64;
    let env = TestEnv::new(4);
    let redis = RedisServer::start(&env.path().join("redis"));
    // A generous Redis timeout: 64 builds on 2 cores must not make the
    // daemons give up on the team (and its slots) for a slow answer.
    let mut config = format!(
        "[daemon]\nqueue_timeout_secs = 300\n\n[circuit]\nopen_cooldown_secs = 600\n\n\
         [team]\nredis_url = \"{}\"\nname = \"t\"\ntimeout_ms = 2000\n",
        redis.url()
    );
    for w in env.lab.workers() {
        config.push_str(&format!(
            "\n[[workers]]\nid = \"{}\"\nslots = {SLOTS}\n",
            w.id
        ));
    }
    env.write_config(&config);
    let x = env.exchange_dir();
    std::fs::create_dir_all(&x).unwrap();
    std::fs::write(x.join("job.sh"), COUNTED_JOB).unwrap();
    let others: Vec<Other> = (1..DAEMONS)
        .map(|i| Other::new(&env, &format!("d{i}")))
        .collect();
    start_daemons(&env, &others);

    // Each daemon gets a quarter of the builds, all at once; every build
    // its own tiny project.
    let clients: Vec<std::process::Child> = (0..BUILDS)
        .map(|n| {
            let project = env.path().join("projects").join(format!("count{n}"));
            std::fs::create_dir_all(&project).unwrap();
            let makefile = format!(
                "job:\n\t@sh '{}' '{}'\n",
                x.join("job.sh").display(),
                x.display()
            );
            std::fs::write(project.join("Makefile"), makefile).unwrap();
            let mut cmd = match n % DAEMONS {
                0 => env.rch(),
                d => others[d - 1].rch(&[]),
            };
            cmd.current_dir(&project)
                .args(["exec", "--", "make", "job"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("rch exec")
        })
        .collect();
    let starts = || {
        std::fs::read_to_string(x.join("starts.log"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let capacity = SLOTS * env.lab.workers().len();
    let homes: Vec<(String, PathBuf)> = env
        .lab
        .workers()
        .iter()
        .map(|w| (w.id.clone(), w.home()))
        .collect();
    let count = |home: &Path, name: &str| -> usize {
        std::fs::read_to_string(home.join(name))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };

    // The team's 16 slots fill, and no build starts beyond them.
    assert!(
        support::wait_for(Duration::from_secs(90), || starts() >= capacity),
        "only {} builds started",
        starts()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        starts(),
        capacity,
        "a build started beyond the team's slots"
    );
    for (id, home) in &homes {
        assert_eq!(
            count(home, "running"),
            SLOTS,
            "{id} runs {} builds",
            count(home, "running")
        );
    }

    // The rest run as slots free up; none ever beside four others.
    std::fs::write(x.join("open"), "").unwrap();
    for (n, child) in clients.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "build {n}\n{}",
            support::describe(&out)
        );
        assert!(
            stderr(&out).contains("rch: ran on w"),
            "build {n}\n{}",
            stderr(&out)
        );
    }
    assert_eq!(starts(), BUILDS);
    for (id, home) in &homes {
        assert_eq!(
            (count(home, "peak"), count(home, "running")),
            (SLOTS, 0),
            "{id}: (peak, running)"
        );
    }
    // Every build gave its team slot back.
    let held = || {
        env.lab
            .workers()
            .iter()
            .map(|w| redis.cli(&["ZCARD", &format!("rch:{{t}}:slots:{}", w.id)]))
            .map(|n| n.trim().parse::<usize>().unwrap_or(usize::MAX))
            .sum::<usize>()
    };
    assert!(
        support::wait_for(Duration::from_secs(2), || held() == 0),
        "{} team slots still held\n{}",
        held(),
        std::iter::once(log_of(&env.path().join("state")))
            .chain(others.iter().map(|o| log_of(&o.dir.join("state"))))
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
}

/// The pid of the daemon listening on `socket`.
fn daemon_pid(socket: &Path) -> i32 {
    use rch::protocol::{Request, Response};
    support::block_on(async {
        let mut client = rch::client::Client::connect(socket)
            .await
            .expect("daemon up");
        match client.call(Request::Ping).await.expect("ping") {
            Response::Hello { pid, .. } => pid as i32,
            other => panic!("unexpected answer {other:?}"),
        }
    })
}

/// `(member, expiry)` of each lease on a worker's shared slots.
fn team_leases(redis: &RedisServer, worker: &str) -> Vec<(String, u64)> {
    let key = format!("rch:{{t}}:slots:{worker}");
    let out = redis.cli(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .filter_map(|c| Some((c.first()?.to_string(), c.get(1)?.parse().ok()?)))
        .collect()
}

#[test]
fn a_lease_restored_after_a_daemon_crash_keeps_its_team_slot_until_its_build_ends() {
    let env = TestEnv::new(1);
    let redis = RedisServer::start(&env.path().join("redis"));
    env.write_config(&format!(
        "[daemon]\nqueue_timeout_secs = 120\n\n\
         [team]\nredis_url = \"{}\"\nname = \"t\"\ntimeout_ms = 2000\n\n\
         [[workers]]\nid = \"w1\"\nslots = 1\n",
        redis.url()
    ));
    std::fs::create_dir_all(env.exchange_dir()).unwrap();
    let x = env.exchange_dir();
    let exists = |f: &str| x.join(f).exists();
    let b = Other::new(&env, "b");
    assert!(b.run(&["daemon", "start"]).status.success());

    // A's build holds w1's one slot, team-wide.
    let a = spawn_job(env.rch_in(&gated_project(&env, "ga")));
    assert!(support::wait_for(Duration::from_secs(30), || exists(
        "started-ga"
    )));
    let held = team_leases(&redis, "w1");
    assert_eq!(held.len(), 1, "{held:?}");

    // A's daemon dies mid-build and starts again: it restores the lease
    // (its client still runs) and holds its team slot under the same name,
    // for another full lease time from now.
    let pid = daemon_pid(&env.socket());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let start = env.rch().args(["daemon", "start"]).output().unwrap();
    assert!(start.status.success(), "{}", support::describe(&start));
    let now_held = team_leases(&redis, "w1");
    assert_eq!(now_held.len(), 1, "{now_held:?}");
    assert_eq!(
        now_held[0].0, held[0].0,
        "the restored lease's slot is the same one"
    );
    assert!(
        now_held[0].1 >= restarted_ms + rch::team::LEASE_TTL_MS - 1_000,
        "not held again at the restart: expires at {}, restarted at {restarted_ms}",
        now_held[0].1
    );

    // B's build for w1 waits while A's restored build runs ...
    let mut cmd = b.rch(&[]);
    cmd.current_dir(gated_project(&env, "gb"))
        .env("RCH_WORKER", "w1");
    let waiting = spawn_job(cmd);
    assert!(!support::wait_for(Duration::from_secs(2), || exists(
        "started-gb"
    )));

    // ... and gets w1 as soon as it ends: the restarted daemon gives back
    // the slot it restored (not left to expire).
    std::fs::write(x.join("open-ga"), "").unwrap();
    assert!(
        support::wait_for(Duration::from_secs(10), || exists("started-gb")),
        "B still waits: {:?}\n{}",
        team_leases(&redis, "w1"),
        log_of(&env.path().join("state"))
    );
    assert!(exists("done-ga"), "B's build started before A's ended");
    std::fs::write(x.join("open-gb"), "").unwrap();
    let (a, waiting) = (
        a.wait_with_output().unwrap(),
        waiting.wait_with_output().unwrap(),
    );
    assert_eq!(a.status.code(), Some(0), "{}", support::describe(&a));
    assert!(
        stderr(&waiting).contains("rch: ran on w1"),
        "{}",
        stderr(&waiting)
    );
}
