//! Simulation of the real daemon (socket server, fleet, prober, SQLite store)
//! driven by scripted attempt outcomes and a manual clock, checked against
//! the circuit breaker's specification.
//!
//! Workers are fake hosts (`*.invalid`) that an ssh config of the test maps
//! onto 127.0.0.1: `dead*` onto a closed port (a probe fails at once), `hang*`
//! onto a listener that never speaks (a probe holds its half-open permit for
//! the whole connect timeout). So the daemon's own prober, which runs when a
//! cooldown ends, behaves predictably.

use rch::breaker::BreakerConfig;
use rch::client::Client;
use rch::clock::ManualClock;
use rch::config::{Config, SshConfig, WorkerConfig};
use rch::daemon::{self, DaemonOptions};
use rch::protocol::{AttemptOutcome, LeaseRequest, Request, Response};
use rch::remote::FailureKind;
use rch::state::report::CircuitReport;
use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Unix time the simulations start at.
const T0: u64 = 1_700_000_000_000;
/// How long (real time) to wait for the daemon to act on its own.
const SETTLE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- fake hosts

/// Process-wide: the ports the fake hosts map onto. Also points
/// `XDG_RUNTIME_DIR` (read by the daemon's probes for ssh control sockets) at
/// a short temporary directory, removed when the test process exits.
struct Ports {
    closed: u16,
    silent: u16,
}

fn ports() -> &'static Ports {
    static PORTS: OnceLock<Ports> = OnceLock::new();
    PORTS.get_or_init(|| {
        let runtime_dir = tempfile::Builder::new()
            .prefix("rch-sim-")
            .tempdir_in("/tmp")
            .expect("runtime dir")
            .keep();
        std::env::set_var("XDG_RUNTIME_DIR", &runtime_dir);
        RUNTIME_DIR.get_or_init(|| runtime_dir);
        // SAFETY: registers a plain function run once at exit.
        unsafe { libc::atexit(remove_runtime_dir) };
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        Ports {
            closed,
            silent: start_silent_listener(),
        }
    })
}

/// The directory [`ports`] made; the test harness ends with `exit`, which
/// never drops statics, so it is removed by an exit handler.
static RUNTIME_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_runtime_dir() {
    if let Some(dir) = RUNTIME_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The ssh config mapping the fake hosts onto [`ports`].
fn ssh_config_text() -> String {
    let Ports { closed, silent } = ports();
    format!(
        "Host dead*.invalid\n  HostName 127.0.0.1\n  Port {closed}\n  BatchMode yes\n\n\
         Host hang*.invalid\n  HostName 127.0.0.1\n  Port {silent}\n  BatchMode yes\n"
    )
}

/// A listener that accepts connections and never sends a byte; connections
/// stay open as long as the test process lives.
fn start_silent_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

// ---------------------------------------------------------------- the simulated daemon

struct Sim {
    rt: Runtime,
    root: tempfile::TempDir,
    clock: Arc<ManualClock>,
    config: Config,
    daemon: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A config with these workers (id, host) and breaker settings; ssh through
/// the fake hosts' config, with a connect timeout long enough that a probe
/// of a `hang` host outlasts the test.
fn config(workers: &[(&str, &str)], circuit: BreakerConfig, ssh_config: PathBuf) -> Config {
    Config {
        circuit,
        ssh: SshConfig {
            connect_timeout_secs: 60,
            config_file: Some(ssh_config),
            ..SshConfig::default()
        },
        workers: workers
            .iter()
            .map(|(id, host)| WorkerConfig::new(*id, *host))
            .collect(),
        ..Config::default()
    }
}

impl Sim {
    /// A daemon with these workers (id, fake host) and breaker settings.
    fn start(workers: &[(&str, &str)], circuit: BreakerConfig) -> Sim {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let root = tempfile::Builder::new()
            .prefix("rch-sim-")
            .tempdir_in("/tmp")
            .unwrap();
        let ssh_config = root.path().join("ssh_config");
        std::fs::write(&ssh_config, ssh_config_text()).unwrap();
        let mut sim = Sim {
            rt,
            root,
            clock: Arc::new(ManualClock::new(T0)),
            config: config(workers, circuit, ssh_config),
            daemon: None,
        };
        sim.boot();
        sim
    }

    fn socket(&self) -> PathBuf {
        self.root.path().join("run/rch.sock")
    }

    fn db(&self) -> PathBuf {
        self.root.path().join("state/state.db")
    }

    /// Start the daemon on this sim's socket and database.
    fn boot(&mut self) {
        let config = self.config.clone();
        let opts = DaemonOptions {
            socket: self.socket(),
            db: self.db(),
            clock: self.clock.clone(),
            config: Box::new(move |_| Ok(config.clone())),
            files: Default::default(),
        };
        self.daemon = Some(self.rt.spawn(daemon::run(opts)));
        let socket = self.socket();
        self.rt
            .block_on(rch::client::wait_for_daemon(
                &socket,
                Duration::from_secs(5),
            ))
            .expect("daemon up");
    }

    /// Shut the daemon down and wait until it is gone.
    fn stop(&mut self) {
        assert!(matches!(self.call(Request::Shutdown), Response::Ok));
        let handle = self.daemon.take().expect("daemon running");
        self.rt
            .block_on(async { tokio::time::timeout(SETTLE, handle).await })
            .expect("daemon stops")
            .expect("daemon task")
            .expect("daemon result");
    }

    /// Start afresh on the same database, with a new clock at `now_ms`.
    fn restart_at(&mut self, now_ms: u64) {
        self.stop();
        self.clock = Arc::new(ManualClock::new(now_ms));
        self.boot();
    }

    fn connect(&self) -> Client {
        let socket = self.socket();
        self.rt.block_on(Client::connect(&socket)).expect("connect")
    }

    fn call(&self, request: Request) -> Response {
        let mut client = self.connect();
        self.call_on(&mut client, request)
    }

    fn call_on(&self, client: &mut Client, request: Request) -> Response {
        self.rt.block_on(client.call(request)).expect("answer")
    }

    /// Ask for `worker`; the connection holds the lease if one is granted.
    fn lease(&self, worker: &str) -> (Client, Response) {
        let mut client = self.connect();
        let request = Request::Lease(LeaseRequest {
            project: "/sim/project".into(),
            command: "cargo build".into(),
            worker: Some(worker.into()),
            exclude: Vec::new(),
            ..Default::default()
        });
        let answer = self.call_on(&mut client, request);
        (client, answer)
    }

    /// A granted lease's epoch; panics on any other answer.
    fn granted(&self, worker: &str) -> (Client, u64) {
        match self.lease(worker) {
            (client, Response::Granted { epoch, .. }) => (client, epoch),
            (_, other) => panic!("{worker}: expected a grant, got {other:?}"),
        }
    }

    /// The reason a lease of `worker` is refused (the build would run locally).
    fn refused(&self, worker: &str) -> String {
        match self.lease(worker) {
            (_, Response::Local { reason }) => reason,
            (_, other) => panic!("{worker}: expected a refusal, got {other:?}"),
        }
    }

    fn release(&self, mut client: Client, outcome: AttemptOutcome) {
        let answer = self.call_on(&mut client, Request::Release { outcome });
        assert!(matches!(answer, Response::Ok), "{answer:?}");
    }

    /// One whole attempt on `worker`: lease, then release with `outcome`.
    fn attempt(&self, worker: &str, outcome: AttemptOutcome) {
        let (client, _) = self.granted(worker);
        self.release(client, outcome);
    }

    fn circuit(&self, id: &str) -> CircuitReport {
        match self.call(Request::Status) {
            Response::Status(report) => {
                report
                    .workers
                    .into_iter()
                    .find(|w| w.id == id)
                    .expect("worker in status")
                    .circuit
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }

    /// Stored events, oldest first.
    fn events(&self) -> Vec<Value> {
        let mut client = self.connect();
        self.rt.block_on(async {
            client
                .send(Request::Events {
                    follow: false,
                    limit: 1000,
                })
                .await
                .unwrap();
            let mut events = Vec::new();
            loop {
                match client.recv().await.unwrap() {
                    Response::Event(e) => events.push(serde_json::to_value(e).unwrap()),
                    Response::Ok => return events,
                    other => panic!("unexpected answer {other:?}"),
                }
            }
        })
    }

    /// Names of the stored events about `worker`.
    fn event_names(&self, worker: &str) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e["worker"] == worker)
            .map(|e| e["event"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Wait (real time) until the daemon has stored `count` events named `name` for `worker`.
    fn wait_events(&self, worker: &str, name: &str, count: usize) {
        let deadline = std::time::Instant::now() + SETTLE;
        loop {
            let seen = self
                .event_names(worker)
                .iter()
                .filter(|n| *n == name)
                .count();
            if seen >= count {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{worker}: {seen} of {count} {name} events; have {:?}",
                self.event_names(worker)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    fn now(&self) -> u64 {
        use rch::clock::Clock;
        self.clock.now_ms()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let socket = self.socket();
            self.rt.block_on(async {
                if let Ok(mut client) = Client::connect(&socket).await {
                    let _ = client.call(Request::Shutdown).await;
                }
            });
        }
    }
}

fn failure() -> AttemptOutcome {
    AttemptOutcome::Failure {
        kind: FailureKind::ConnectRefused,
        message: "w: ssh connect refused".into(),
    }
}

fn success() -> AttemptOutcome {
    AttemptOutcome::Success { exit_code: 0 }
}

fn assert_circuit(c: &CircuitReport, state: &str, failures: u32, epoch: u64) {
    assert_eq!(
        (c.state.as_str(), c.failures, c.epoch),
        (state, failures, epoch),
        "{c:?}"
    );
}

fn rfc3339(ms: u64) -> Option<String> {
    Some(rch::clock::rfc3339(ms))
}

/// Consecutive failures only: the error-rate rule never has enough samples.
fn consecutive_only(failure_threshold: u32, open_cooldown_secs: u64) -> BreakerConfig {
    BreakerConfig {
        failure_threshold,
        open_cooldown_secs,
        window_min_samples: 1000,
        ..BreakerConfig::default()
    }
}

// ---------------------------------------------------------------- the specification

#[test]
fn opens_at_exactly_the_threshold_and_stays_open_for_the_cooldown() {
    let sim = Sim::start(&[("w1", "dead-1.invalid")], consecutive_only(3, 30));
    for n in 1..=2 {
        sim.attempt("w1", failure());
        assert_circuit(&sim.circuit("w1"), "closed", n, 0);
    }
    sim.advance(5);
    sim.attempt("w1", failure());
    let opened_at = sim.now();
    let c = sim.circuit("w1");
    assert_circuit(&c, "open", 3, 1);
    assert_eq!(c.since, rfc3339(opened_at));
    assert_eq!(c.retry_in_secs, Some(30));
    let opened: Vec<Value> = sim
        .events()
        .into_iter()
        .filter(|e| e["event"] == "circuit.opened")
        .collect();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["failure_count"], 3);
    assert_eq!(opened[0]["threshold"], 3);
    assert_eq!(opened[0]["cooldown_seconds"], 30);

    // Refused for the whole cooldown, with the time left.
    assert!(sim
        .refused("w1")
        .contains("circuit open on w1 (retry in 30s)"));
    sim.advance(29);
    assert!(sim.refused("w1").contains("retry in 1s"));
    assert_eq!(sim.circuit("w1").retry_in_secs, Some(1));
    assert_eq!(sim.event_names("w1"), ["circuit.opened"]);

    // The cooldown ends: the daemon probes on its own; the dead host fails
    // the probe and the circuit opens again, its cooldown restarted.
    sim.advance(1);
    sim.wait_events("w1", "circuit.opened", 2);
    assert_eq!(
        sim.event_names("w1"),
        ["circuit.opened", "circuit.half_open", "circuit.opened"]
    );
    let half_open = sim
        .events()
        .into_iter()
        .find(|e| e["event"] == "circuit.half_open")
        .unwrap();
    assert_eq!(half_open["probe"], true);
    let c = sim.circuit("w1");
    assert_circuit(&c, "open", 4, 3);
    assert_eq!(c.since, rfc3339(opened_at + 30_000));
    assert_eq!(c.retry_in_secs, Some(30));
}

#[test]
fn error_rate_over_the_window_opens_without_consecutive_failures() {
    let circuit = BreakerConfig {
        failure_threshold: 10,
        error_rate_threshold: 0.5,
        window_secs: 60,
        window_min_samples: 4,
        open_cooldown_secs: 600,
        ..BreakerConfig::default()
    };
    let sim = Sim::start(
        &[("w1", "dead-1.invalid"), ("w2", "dead-2.invalid")],
        circuit,
    );
    // S F S: a third fails, but three samples are too few.
    sim.attempt("w1", success());
    sim.attempt("w1", failure());
    sim.attempt("w1", success());
    let c = sim.circuit("w1");
    assert_circuit(&c, "closed", 0, 0);
    assert_eq!(c.error_rate, Some(1.0 / 3.0));
    // S F S F: half of four, never two in a row.
    sim.attempt("w1", failure());
    assert_circuit(&sim.circuit("w1"), "open", 1, 1);

    // Results older than the window no longer count.
    sim.attempt("w2", failure());
    sim.attempt("w2", failure());
    sim.attempt("w2", success());
    sim.advance(60);
    sim.attempt("w2", failure());
    let c = sim.circuit("w2");
    assert_circuit(&c, "closed", 1, 0);
    assert_eq!(c.error_rate, Some(1.0));
}

#[test]
fn half_open_admits_one_request_and_the_daemons_probe_is_it() {
    let sim = Sim::start(&[("w1", "hang-1.invalid")], consecutive_only(1, 30));
    sim.attempt("w1", failure());
    assert_eq!(sim.circuit("w1").state, "open");
    sim.advance(30);
    sim.wait_events("w1", "circuit.half_open", 1);
    assert_eq!(sim.circuit("w1").state, "half_open");
    // The probe (hanging on a silent host) holds the one permit.
    let reason = sim.refused("w1");
    assert!(
        reason.contains("w1 half-open (probe in flight)"),
        "{reason}"
    );
}

#[test]
fn half_open_admits_up_to_its_probes_and_closes_after_enough_successes() {
    let circuit = BreakerConfig {
        half_open_max_probes: 2,
        success_threshold: 2,
        ..consecutive_only(1, 30)
    };
    let sim = Sim::start(&[("w1", "hang-1.invalid")], circuit);
    sim.attempt("w1", failure());
    let opened_at = sim.now();
    sim.advance(30);
    sim.wait_events("w1", "circuit.half_open", 1);
    let half_epoch = sim.circuit("w1").epoch;
    assert_eq!(half_epoch, 2);

    // The daemon's probe holds one permit; one build may take the other.
    let (first, epoch) = sim.granted("w1");
    assert_eq!(epoch, half_epoch);
    assert!(sim.refused("w1").contains("half-open"));
    sim.release(first, success());
    let c = sim.circuit("w1");
    assert_circuit(&c, "half_open", 0, half_epoch);

    // Its permit is free again; a second success closes the circuit.
    sim.advance(4);
    let (second, _) = sim.granted("w1");
    sim.release(second, success());
    let c = sim.circuit("w1");
    assert_circuit(&c, "closed", 0, half_epoch + 1);
    let closed = sim
        .events()
        .into_iter()
        .find(|e| e["event"] == "circuit.closed")
        .expect("circuit.closed event");
    assert_eq!(
        closed["recovery_time_seconds"],
        (sim.now() - opened_at) / 1000
    );
    // Closed admits everyone again.
    let (_a, _) = sim.granted("w1");
    let (_b, _) = sim.granted("w1");
}

#[test]
fn results_from_an_earlier_epoch_change_nothing() {
    let sim = Sim::start(&[("w1", "dead-1.invalid")], consecutive_only(2, 600));
    // Two slow builds leased while the circuit is closed...
    let (slow_ok, epoch) = sim.granted("w1");
    let (slow_failing, _) = sim.granted("w1");
    assert_eq!(epoch, 0);
    // ...then the circuit opens under them.
    sim.attempt("w1", failure());
    sim.attempt("w1", failure());
    let opened = sim.circuit("w1");
    assert_circuit(&opened, "open", 2, 1);

    sim.advance(10);
    sim.release(slow_ok, success());
    sim.release(slow_failing, failure());
    let c = sim.circuit("w1");
    assert_circuit(&c, "open", 2, 1);
    assert_eq!(c.since, opened.since, "cooldown not restarted");
    assert_eq!(c.retry_in_secs, Some(590));
    assert_eq!(sim.event_names("w1"), ["circuit.opened"]);
}

#[test]
fn reset_forces_closed_and_clears_the_counters() {
    let sim = Sim::start(
        &[("w1", "dead-1.invalid"), ("w2", "dead-2.invalid")],
        consecutive_only(2, 600),
    );
    sim.attempt("w1", failure());
    sim.attempt("w1", failure());
    sim.attempt("w2", failure());
    assert_eq!(sim.circuit("w1").state, "open");

    let answer = sim.call(Request::Reset {
        worker: Some("w1".into()),
    });
    assert!(matches!(answer, Response::Ok), "{answer:?}");
    let c = sim.circuit("w1");
    assert_circuit(&c, "closed", 0, 2);
    assert_eq!(c.last_error, None);
    assert_eq!(sim.event_names("w1"), ["circuit.opened", "circuit.reset"]);
    // Counting starts over: one failure does not reopen it.
    sim.attempt("w1", failure());
    assert_eq!(sim.circuit("w1").state, "closed");
    // Other workers are untouched.
    assert_circuit(&sim.circuit("w2"), "closed", 1, 0);

    match sim.call(Request::Reset {
        worker: Some("w9".into()),
    }) {
        Response::Error { known_workers, .. } => assert_eq!(known_workers, ["w1", "w2"]),
        other => panic!("unexpected answer {other:?}"),
    }
    let answer = sim.call(Request::Reset { worker: None });
    assert!(matches!(answer, Response::Ok));
    assert_circuit(&sim.circuit("w2"), "closed", 0, 1);
}

#[test]
fn breaker_state_survives_a_restart_on_the_same_database() {
    let mut sim = Sim::start(
        &[("w1", "dead-1.invalid"), ("w2", "dead-2.invalid")],
        consecutive_only(2, 600),
    );
    sim.attempt("w1", failure());
    sim.attempt("w1", failure());
    sim.attempt("w2", failure());
    let w1 = sim.circuit("w1");
    assert_circuit(&w1, "open", 2, 1);

    sim.restart_at(T0 + 100_000);
    let after = sim.circuit("w1");
    assert_circuit(&after, "open", 2, 1);
    assert_eq!(after.since, w1.since);
    assert_eq!(after.last_error, w1.last_error);
    assert_eq!(
        after.retry_in_secs,
        Some(500),
        "cooldown runs on across restarts"
    );
    // w2's one failure was remembered: one more opens it.
    assert_circuit(&sim.circuit("w2"), "closed", 1, 0);
    sim.attempt("w2", failure());
    assert_circuit(&sim.circuit("w2"), "open", 2, 1);
    // The history of events survived too.
    assert_eq!(sim.event_names("w1"), ["circuit.opened"]);
}

#[test]
fn an_abandoned_lease_frees_its_slot_without_touching_the_breaker() {
    let sim = Sim::start(&[("w1", "dead-1.invalid")], consecutive_only(1, 600));
    let (client, _) = sim.granted("w1");
    drop(client);
    // The connection's end is noticed asynchronously.
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let answer = match sim.call(Request::Status) {
            Response::Status(r) => r.workers[0].used,
            other => panic!("{other:?}"),
        };
        if answer == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot still used");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_circuit(&sim.circuit("w1"), "closed", 0, 0);
}
