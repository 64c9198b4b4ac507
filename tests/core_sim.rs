//! Simulation of the daemon's core ([`rch::daemon::fleet::Fleet`]) with a
//! manual clock: thousands of random interleavings of lease requests,
//! releases with every outcome, clients leaving, probes, operator commands
//! and time passing, with no sockets and no sleeps. After every step it
//! checks the invariants: never more leases than slots, slot counts equal
//! the leases held, queued requests are served first come first served
//! among those the freed worker could take, every queued request is answered
//! exactly once, and breaker transitions follow the specification.

use rch::breaker::{BreakerConfig, State};
use rch::config::{Config, WorkerConfig};
use rch::daemon::fleet::{Decision, Fleet, Output, ProbeJob};
use rch::protocol::{AttemptOutcome, LeaseRequest, WorkerAction};
use rch::remote::FailureKind;
use rch::state::events::Event;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

const T0: u64 = 1_700_000_000_000;
const IDS: [&str; 3] = ["w1", "w2", "w3"];
const QUEUE_TIMEOUT_SECS: u64 = 60;

/// xorshift64*: a small, seeded, reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Waiting {
    order: u64,
    request: LeaseRequest,
}

/// The test's view of the world, built only from the core's answers.
struct World {
    fleet: Fleet,
    now: u64,
    slots: HashMap<String, u32>,
    cfg: BreakerConfig,
    /// lease id -> worker
    leases: BTreeMap<u64, String>,
    waiting: BTreeMap<u64, Waiting>,
    answered: HashSet<u64>,
    probes: Vec<ProbeJob>,
    next_order: u64,
    /// Breaker state as the emitted events tell it, per worker.
    told: HashMap<String, State>,
    opened_at: HashMap<String, u64>,
    operator_probe: HashSet<String>,
    steps: u64,
}

fn config(rng: &mut Rng) -> Config {
    let mut config = Config {
        circuit: BreakerConfig {
            failure_threshold: 3,
            error_rate_threshold: 0.5,
            window_secs: 60,
            window_min_samples: 4,
            open_cooldown_secs: 30,
            success_threshold: 2,
            half_open_max_probes: 1 + rng.below(2) as u32,
        },
        workers: IDS
            .iter()
            .map(|id| WorkerConfig {
                slots: 1 + rng.below(3) as u32,
                priority: 100 + rng.below(2) as i64,
                ..WorkerConfig::new(*id, format!("{id}.invalid"))
            })
            .collect(),
        ..Config::default()
    };
    config.daemon.queue_timeout_secs = QUEUE_TIMEOUT_SECS;
    config
}

impl World {
    fn new(rng: &mut Rng) -> World {
        let config = config(rng);
        let slots = config
            .workers
            .iter()
            .map(|w| (w.id.clone(), w.slots))
            .collect();
        let cfg = config.circuit.clone();
        let mut world = World {
            fleet: Fleet::new(config, HashMap::new(), HashMap::new(), T0),
            now: T0,
            slots,
            cfg,
            leases: BTreeMap::new(),
            waiting: BTreeMap::new(),
            answered: HashSet::new(),
            probes: Vec::new(),
            next_order: 0,
            told: IDS
                .iter()
                .map(|id| (id.to_string(), State::Closed))
                .collect(),
            opened_at: HashMap::new(),
            operator_probe: HashSet::new(),
            steps: 0,
        };
        world.settle();
        world
    }

    fn request(&mut self, rng: &mut Rng) -> LeaseRequest {
        let worker = rng
            .chance(10)
            .then(|| IDS[rng.below(3) as usize].to_string());
        let exclude = if rng.chance(10) {
            vec![IDS[rng.below(3) as usize].to_string()]
        } else {
            Vec::new()
        };
        LeaseRequest {
            project: format!("/p/{}", rng.below(3)),
            command: "cargo build".into(),
            worker,
            exclude,
            ..LeaseRequest::default()
        }
    }

    fn may_use(request: &LeaseRequest, id: &str) -> bool {
        request.worker.as_deref().is_none_or(|w| w == id)
            && !request.exclude.iter().any(|e| e == id)
    }

    /// One random input.
    fn step(&mut self, rng: &mut Rng) {
        self.steps += 1;
        match rng.below(100) {
            0..=34 => {
                let request = self.request(rng);
                match self.fleet.handle_lease(self.now, request.clone()) {
                    Decision::Granted(g) => {
                        self.check_grant(&g.worker.id, None);
                        assert!(self.leases.insert(g.lease, g.worker.id).is_none());
                    }
                    Decision::Refused(reason) => assert!(!reason.is_empty()),
                    Decision::Queued { waiter, position } => {
                        assert_eq!(position, self.waiting.len() + 1, "queued at the back");
                        let order = self.next_order;
                        self.next_order += 1;
                        self.waiting.insert(waiter, Waiting { order, request });
                    }
                }
            }
            35..=64 => {
                if let Some(lease) = self.pick_lease(rng) {
                    let worker = self.leases.remove(&lease).unwrap();
                    let outcome = match rng.below(10) {
                        0..=5 => AttemptOutcome::Success { exit_code: 0 },
                        6..=8 => AttemptOutcome::Failure {
                            kind: FailureKind::ConnectRefused,
                            message: format!("{worker}: refused"),
                        },
                        _ => AttemptOutcome::Unknown,
                    };
                    self.fleet.handle_release(self.now, lease, &outcome);
                }
            }
            65..=69 => {
                if let Some(lease) = self.pick_lease(rng) {
                    self.leases.remove(&lease);
                    self.fleet.handle_abandon(self.now, lease);
                }
            }
            70..=73 => {
                let keys: Vec<u64> = self.waiting.keys().copied().collect();
                if !keys.is_empty() {
                    let waiter = keys[rng.below(keys.len() as u64) as usize];
                    self.waiting.remove(&waiter);
                    self.fleet.cancel_wait(waiter);
                }
            }
            74..=89 => {
                let by = match rng.below(10) {
                    0 => 31_000,
                    1 => 61_000,
                    _ => rng.below(5_000),
                };
                self.now += by;
            }
            90..=95 => {
                if !self.probes.is_empty() {
                    let job = self
                        .probes
                        .remove(rng.below(self.probes.len() as u64) as usize);
                    let result = if rng.chance(60) {
                        Ok(5)
                    } else {
                        Err(format!("{}: probe failed", job.worker))
                    };
                    self.fleet.finish_probe(&job, result, self.now);
                }
            }
            96 => {
                let id = IDS[rng.below(3) as usize];
                self.fleet.reset(Some(id), self.now).unwrap();
                self.told.insert(id.to_string(), State::Closed);
            }
            97 => {
                let id = IDS[rng.below(3) as usize];
                let action = [
                    WorkerAction::Drain,
                    WorkerAction::Enable,
                    WorkerAction::Disable,
                ][rng.below(3) as usize];
                self.fleet.set_worker(id, action, self.now).unwrap();
            }
            _ => {
                let id = IDS[rng.below(3) as usize];
                self.operator_probe.insert(id.to_string());
                if let Ok(job) = self.fleet.probe_now(id, self.now) {
                    self.probes.push(job);
                }
            }
        }
        self.settle();
    }

    fn pick_lease(&self, rng: &mut Rng) -> Option<u64> {
        let keys: Vec<u64> = self.leases.keys().copied().collect();
        (!keys.is_empty()).then(|| keys[rng.below(keys.len() as u64) as usize])
    }

    /// What the shell does after each input: run due timeouts, carry out
    /// every output; then check the invariants.
    fn settle(&mut self) {
        if self.fleet.poll_timeout().is_some_and(|t| t <= self.now) {
            self.fleet.handle_timeout(self.now);
        }
        while let Some(output) = self.fleet.poll_output() {
            match output {
                Output::Grant { waiter, grant } => {
                    self.check_grant(&grant.worker.id, Some(waiter));
                    self.answer(waiter);
                    assert!(self.leases.insert(grant.lease, grant.worker.id).is_none());
                }
                Output::Refuse { waiter, reason } => {
                    assert!(!reason.is_empty());
                    self.answer(waiter);
                }
                Output::StartProbe(job) => self.probes.push(job),
                // Capabilities stay unknown: every worker fits every build.
                Output::Learn { .. } => {}
                Output::Persist(_) => {}
                Output::Emit(record) => self.check_event(&record.event),
                Output::Team(_) => {}
            }
        }
        self.check_invariants();
    }

    fn answer(&mut self, waiter: u64) {
        assert!(
            self.answered.insert(waiter),
            "waiter {waiter} answered twice"
        );
        assert!(
            self.waiting.remove(&waiter).is_some(),
            "answer for waiter {waiter} that is not waiting"
        );
    }

    /// A grant on `id`: the breaker let it through, and no older waiter that
    /// could take `id` is passed over.
    fn check_grant(&self, id: &str, waiter: Option<u64>) {
        let state = self.fleet.state_of(id).unwrap();
        assert_ne!(state, State::Open, "{id}: granted while open");
        let order = waiter.map_or(u64::MAX, |w| self.waiting[&w].order);
        for (other, w) in &self.waiting {
            if Some(*other) != waiter && w.order < order {
                assert!(
                    !Self::may_use(&w.request, id),
                    "step {}: waiter {:?} served on {id} before older waiter {other}",
                    self.steps,
                    waiter
                );
            }
        }
    }

    /// Transitions as events tell them must follow the breaker's diagram.
    fn check_event(&mut self, kind: &Event) {
        let (id, to) = match kind {
            Event::CircuitOpened {
                worker,
                failure_count,
                threshold,
                ..
            } => {
                let from = self.told[worker];
                assert_ne!(from, State::Open, "{worker}: opened twice");
                if from == State::Closed && *failure_count < *threshold {
                    // Opened by the error rate over the window.
                }
                self.opened_at.insert(worker.clone(), self.now);
                (worker, State::Open)
            }
            Event::CircuitHalfOpen { worker, .. } => {
                assert_eq!(
                    self.told[worker],
                    State::Open,
                    "{worker}: half-open not from open"
                );
                let cooled =
                    self.now >= self.opened_at[worker] + self.cfg.open_cooldown_secs * 1000;
                assert!(
                    cooled || self.operator_probe.contains(worker),
                    "{worker}: half-open before the cooldown ended"
                );
                (worker, State::HalfOpen)
            }
            Event::CircuitClosed { worker, .. } => {
                assert_eq!(
                    self.told[worker],
                    State::HalfOpen,
                    "{worker}: closed not from half-open"
                );
                (worker, State::Closed)
            }
            Event::CircuitReset { worker } => (worker, State::Closed),
            _ => return,
        };
        self.told.insert(id.clone(), to);
    }

    fn check_invariants(&mut self) {
        let mut total = 0;
        for id in IDS {
            let held = self.leases.values().filter(|w| *w == id).count();
            assert!(
                held as u32 <= self.slots[id],
                "{id}: {held} leases on {} slots",
                self.slots[id]
            );
            assert_eq!(self.fleet.used(id) as usize, held, "{id}: slot count");
            assert_eq!(self.fleet.leases_on(id), held, "{id}: leases");
            let state = self.fleet.state_of(id).unwrap();
            assert_eq!(state, self.told[id], "{id}: state differs from its events");
            if state == State::HalfOpen {
                let b = self.fleet.breaker(id).unwrap();
                assert!(
                    b.probes_in_flight <= self.cfg.half_open_max_probes,
                    "{id}: probes"
                );
            }
            if state == State::Closed {
                let b = self.fleet.breaker(id).unwrap();
                assert!(
                    b.consecutive_failures < self.cfg.failure_threshold,
                    "{id}: closed at threshold"
                );
            }
            total += held;
        }
        assert_eq!(self.fleet.lease_count(), total);
        assert_eq!(self.fleet.queue_len(), self.waiting.len(), "queue length");
        // Once an operator probe's half-open period is over, its exemption ends.
        for id in IDS {
            if self.told[id] != State::HalfOpen {
                self.operator_probe.remove(id);
            }
        }
    }
}

#[test]
fn random_interleavings_keep_the_invariants() {
    let started = Instant::now();
    let mut steps = 0;
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut world = World::new(&mut rng);
        for _ in 0..1_000 {
            world.step(&mut rng);
        }
        // Time runs out for everyone still queued: each gets its answer.
        world.now += QUEUE_TIMEOUT_SECS * 1000 + 1;
        world.settle();
        assert!(world.waiting.is_empty(), "seed {seed}: unanswered waiters");
        steps += world.steps;
    }
    assert!(steps >= 10_000, "{steps} steps");
    assert!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn queue_timeout_runs_on_the_given_time() {
    let mut rng = Rng(7);
    let mut config = config(&mut rng);
    for w in &mut config.workers {
        w.slots = 1;
    }
    let mut fleet = Fleet::new(config, HashMap::new(), HashMap::new(), T0);
    fleet.handle_timeout(T0);
    let request = |w: &str| LeaseRequest {
        project: "/p".into(),
        command: "make".into(),
        worker: Some(w.into()),
        exclude: Vec::new(),
        ..LeaseRequest::default()
    };
    assert!(matches!(
        fleet.handle_lease(T0, request("w1")),
        Decision::Granted(_)
    ));
    let Decision::Queued {
        waiter,
        position: 1,
    } = fleet.handle_lease(T0, request("w1"))
    else {
        panic!("not queued");
    };
    let deadline = T0 + QUEUE_TIMEOUT_SECS * 1000;
    while fleet.poll_output().is_some() {}
    assert_eq!(fleet.poll_timeout(), Some(deadline));
    fleet.handle_timeout(deadline - 1);
    assert!(fleet.poll_output().is_none(), "nothing before the deadline");
    fleet.handle_timeout(deadline);
    match fleet.poll_output() {
        Some(Output::Refuse { waiter: w, reason }) => {
            assert_eq!(w, waiter);
            assert_eq!(reason, "all workers busy for 60s (queue timeout)");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fleet.queue_len(), 0);
}

#[test]
fn restored_leases_hold_their_slots_until_abandoned_and_are_saved_while_held() {
    use rch::daemon::fleet::Persist;
    use rch::state::store::{HeldLease, Holder};
    let mut rng = Rng(11);
    let mut config = config(&mut rng);
    for w in &mut config.workers {
        w.slots = 1;
    }
    let mut fleet = Fleet::new(config, HashMap::new(), HashMap::new(), T0);
    let held = |worker: &str| HeldLease {
        worker: worker.into(),
        project: "/p".into(),
        command: "make".into(),
        since_ms: T0 - 5,
        holder: Holder { pid: 42, start: 7 },
    };
    // One on a known worker, one on a worker no longer configured.
    let restored = fleet.restore(vec![(9, held("w1")), (10, held("gone"))]);
    assert_eq!(restored, vec![9]);
    let ended: Vec<u64> = std::iter::from_fn(|| fleet.poll_output())
        .filter_map(|o| match o {
            Output::Persist(Persist::LeaseEnded { lease }) => Some(lease),
            _ => None,
        })
        .collect();
    assert_eq!(ended, vec![10]);
    let request = LeaseRequest {
        project: "/q".into(),
        command: "make".into(),
        worker: Some("w1".into()),
        ..LeaseRequest::default()
    };
    let Decision::Queued { waiter, .. } = fleet.handle_lease(T0, request.clone()) else {
        panic!("the restored lease holds w1's only slot");
    };
    fleet.handle_abandon(T0 + 1, 9);
    let outputs: Vec<Output> = std::iter::from_fn(|| fleet.poll_output()).collect();
    assert!(outputs
        .iter()
        .any(|o| matches!(o, Output::Persist(Persist::LeaseEnded { lease: 9 }))));
    let grant = outputs
        .iter()
        .find_map(|o| match o {
            Output::Grant { waiter: w, grant } if *w == waiter => Some(grant.clone()),
            _ => None,
        })
        .expect("the waiter gets w1");
    assert!(grant.lease > 10, "new ids follow the restored ones");
    fleet.hold(grant.lease, Holder { pid: 43, start: 8 });
    assert!(matches!(
        fleet.poll_output(),
        Some(Output::Persist(Persist::Lease { lease, .. })) if lease == grant.lease
    ));
}
