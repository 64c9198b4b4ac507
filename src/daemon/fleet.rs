//! The daemon's view of the fleet: one breaker per worker, slot accounting,
//! the wait queue, the leases in flight and what the operator changed.
//!
//! Every method is synchronous and takes the current time; the server holds
//! the fleet behind one mutex and, after each call, takes the side effects
//! (events to emit, breakers and flags to persist) with [`Fleet::take_effects`].

use super::clock::rfc3339;
use super::events::{Event, EventKind};
use super::metrics::Metrics;
use super::report::{CircuitReport, FleetReport, LeaseReport, QueuedReport, WorkerReport};
use super::store::WorkerFlags;
use crate::breaker::{Breaker, Outcome, Permit, State, Transition};
use crate::caps::Capabilities;
use crate::config::{Config, WorkerConfig};
use crate::protocol::{AttemptOutcome, LeaseRequest, WorkerAction};
use crate::remote::Target;
use crate::select::{self, Pick, Selector, WorkerSlots};
use std::collections::{BTreeSet, HashMap};
use tokio::sync::oneshot;

/// How often breakers changed only by routine successes are written.
pub const LAZY_PERSIST_MS: u64 = 2_000;

/// The daemon's answer to a lease request, once there is one.
#[derive(Debug)]
pub enum Answer {
    Granted(Grant),
    Local(String),
}

#[derive(Debug, Clone)]
pub struct Grant {
    pub lease: u64,
    pub worker: WorkerConfig,
    pub epoch: u64,
    pub why: String,
}

/// What `lease` could decide right away.
pub enum LeaseStart {
    Now(Answer),
    Queued {
        waiter: u64,
        position: usize,
        rx: oneshot::Receiver<Answer>,
    },
}

/// A probe the caller must run, then report with [`Fleet::finish_probe`].
#[derive(Debug, Clone)]
pub struct ProbeJob {
    pub worker: String,
    pub permit: Permit,
    pub target: Target,
}

/// Side effects of fleet calls, for the server to carry out.
#[derive(Debug, Default)]
pub struct Effects {
    pub events: Vec<Event>,
    pub breakers: BTreeSet<String>,
    pub flags: BTreeSet<String>,
    /// Workers whose capabilities should be learned again (the prober does it).
    pub learn: bool,
}

/// An id the fleet does not know, with the ids it does.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown worker {id:?} (known: {})", known.join(", "))]
pub struct UnknownWorker {
    pub id: String,
    pub known: Vec<String>,
}

struct ActiveLease {
    worker: String,
    permit: Permit,
    project: String,
    command: String,
    since_ms: u64,
}

struct Waiter {
    request: LeaseRequest,
    tx: oneshot::Sender<Answer>,
    since_ms: u64,
}

pub struct Fleet {
    config: Config,
    breakers: HashMap<String, Breaker>,
    flags: HashMap<String, WorkerFlags>,
    selector: Selector,
    leases: HashMap<u64, ActiveLease>,
    waiters: HashMap<u64, Waiter>,
    /// Workers with a probe running (at most one each).
    probing: BTreeSet<String>,
    latency_ms: HashMap<String, u64>,
    last_build_ms: HashMap<String, u64>,
    /// What each worker's last probe found, and tools builds found missing.
    caps: HashMap<String, Capabilities>,
    /// Workers whose capabilities are to be learned (never yet, or stale).
    to_learn: BTreeSet<String>,
    next_id: u64,
    effects: Effects,
    /// Breakers changed only by routine successes, persisted lazily.
    lazy_breakers: BTreeSet<String>,
    last_lazy_flush_ms: u64,
    /// The ssh agent of the latest client that had one; probes use it.
    agent: Option<std::path::PathBuf>,
    pub metrics: Metrics,
}

impl Fleet {
    pub fn new(
        config: Config,
        mut breakers: HashMap<String, Breaker>,
        flags: HashMap<String, WorkerFlags>,
        now_ms: u64,
    ) -> Fleet {
        for b in breakers.values_mut() {
            // Permits of a previous daemon died with its connections.
            b.probes_in_flight = 0;
        }
        let mut fleet = Fleet {
            selector: Selector::new(Vec::new()),
            config: Config::default(),
            breakers,
            flags,
            leases: HashMap::new(),
            waiters: HashMap::new(),
            probing: BTreeSet::new(),
            latency_ms: HashMap::new(),
            last_build_ms: HashMap::new(),
            caps: HashMap::new(),
            to_learn: BTreeSet::new(),
            next_id: 1,
            effects: Effects::default(),
            lazy_breakers: BTreeSet::new(),
            last_lazy_flush_ms: now_ms,
            agent: None,
            metrics: Metrics::default(),
        };
        fleet.reconfigure(config, now_ms);
        fleet
    }

    /// Apply a (re)loaded configuration; leases and breakers of workers that
    /// remain are kept.
    pub fn reconfigure(&mut self, config: Config, now_ms: u64) {
        for w in &config.workers {
            self.breakers
                .entry(w.id.clone())
                .or_insert_with(|| Breaker::new(now_ms));
            if self.config.worker(&w.id) != Some(w) {
                self.caps.remove(&w.id);
                self.to_learn.insert(w.id.clone());
                self.effects.learn = true;
            }
        }
        self.config = config;
        self.selector.reconfigure(self.worker_slots());
        self.serve_waiters(now_ms);
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Restore which worker last built `project` (from the store at start).
    pub fn remember_builder(&mut self, project: &str, worker: &str) {
        self.selector.record_build(project, worker);
    }

    pub fn last_build(&mut self, worker: &str, at_ms: u64) {
        self.last_build_ms.insert(worker.to_string(), at_ms);
    }

    fn worker_slots(&self) -> Vec<WorkerSlots> {
        self.config
            .workers
            .iter()
            .map(|w| {
                let flags = self.flags.get(&w.id).copied().unwrap_or_default();
                WorkerSlots {
                    id: w.id.clone(),
                    slots: w.slots,
                    priority: w.priority,
                    enabled: self.is_enabled(&w.id),
                    draining: flags.draining,
                    policy: self.config.policy(w),
                    caps: self.caps.get(&w.id).cloned(),
                }
            })
            .collect()
    }

    /// A probe found what `id` can build.
    pub fn learn(&mut self, id: &str, caps: Capabilities, now_ms: u64) {
        self.caps.insert(id.to_string(), caps);
        self.selector
            .set_capabilities(id, self.caps.get(id).cloned());
        self.serve_waiters(now_ms);
    }

    /// Workers whose capabilities the prober should learn now (without
    /// touching their breakers); each is handed out once.
    pub fn due_learning(&mut self) -> Vec<Target> {
        let ids = std::mem::take(&mut self.to_learn);
        ids.into_iter()
            .filter(|id| self.is_enabled(id))
            .filter_map(|id| {
                Some(Target {
                    worker: self.config.worker(&id)?.clone(),
                    ssh: self.config.ssh.clone(),
                    agent: self.agent.clone(),
                })
            })
            .collect()
    }

    /// What `id` is known to be able to build, if it was probed.
    pub fn capabilities(&self, id: &str) -> Option<&Capabilities> {
        self.caps.get(id)
    }

    /// `Ok` when `id` is a configured worker.
    pub fn known(&self, id: &str) -> Result<(), UnknownWorker> {
        if self.config.worker(id).is_some() {
            Ok(())
        } else {
            Err(UnknownWorker {
                id: id.to_string(),
                known: self.config.workers.iter().map(|w| w.id.clone()).collect(),
            })
        }
    }

    /// Ask for a slot: granted now, queued, or local with a reason.
    pub fn lease(&mut self, request: LeaseRequest, now_ms: u64) -> LeaseStart {
        if request.ssh_auth_sock.is_some() {
            self.agent.clone_from(&request.ssh_auth_sock);
        }
        let sel_req = selection_request(&request);
        let pick = {
            let (breakers, cfg) = (&self.breakers, &self.config.circuit);
            self.selector
                .pick(&sel_req, &|id| admits(breakers, cfg, id, now_ms))
        };
        match pick {
            Pick::Worker(id) => match self.grant(&id, &request, now_ms) {
                Some(grant) => LeaseStart::Now(Answer::Granted(grant)),
                None => LeaseStart::Now(Answer::Local(format!("{id} refused the lease"))),
            },
            Pick::Unavailable(whys) => {
                let reason = self.explain(&whys, &request, now_ms);
                self.metrics.local_decisions += 1;
                LeaseStart::Now(Answer::Local(reason))
            }
            Pick::Wait => {
                let waiter = self.next_id();
                let position = self.selector.enqueue(waiter, sel_req);
                let (tx, rx) = oneshot::channel();
                self.waiters.insert(
                    waiter,
                    Waiter {
                        request,
                        tx,
                        since_ms: now_ms,
                    },
                );
                self.emit(
                    EventKind::LeaseQueued {
                        reason: "all admissible workers are busy".into(),
                        position,
                    },
                    now_ms,
                );
                LeaseStart::Queued {
                    waiter,
                    position,
                    rx,
                }
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Take the breaker permit and the slot (already chosen as free).
    fn grant(&mut self, id: &str, request: &LeaseRequest, now_ms: u64) -> Option<Grant> {
        let worker = self.config.worker(id)?.clone();
        let breaker = self.breakers.get_mut(id)?;
        let (admission, transition) = breaker.try_admit(&self.config.circuit, now_ms);
        self.note_transition(id, transition, false, now_ms);
        let permit = admission.ok()?;
        if !self.selector.acquire(id) {
            if let Some(b) = self.breakers.get_mut(id) {
                b.abandon(permit);
            }
            return None;
        }
        let why = self.why_chosen(id, &request.project);
        let lease = self.next_id();
        self.leases.insert(
            lease,
            ActiveLease {
                worker: id.to_string(),
                permit,
                project: request.project.clone(),
                command: request.command.clone(),
                since_ms: now_ms,
            },
        );
        self.metrics.leases_granted += 1;
        Some(Grant {
            lease,
            epoch: permit.epoch,
            worker,
            why,
        })
    }

    fn why_chosen(&self, id: &str, project: &str) -> String {
        if self.selector.last_builder(project) == Some(id) {
            "last built this project".into()
        } else {
            "free slot, by priority".into()
        }
    }

    /// A queued request gave up (timeout, or its client left).
    pub fn cancel_wait(&mut self, waiter: u64) {
        self.selector.cancel(waiter);
        self.waiters.remove(&waiter);
    }

    /// End a lease with what happened on the worker.
    pub fn release(&mut self, lease: u64, outcome: &AttemptOutcome, now_ms: u64) {
        let Some(active) = self.leases.remove(&lease) else {
            return;
        };
        let id = active.worker.clone();
        if let Some(breaker) = self.breakers.get_mut(&id) {
            let cfg = &self.config.circuit;
            // A success on a healthy closed breaker only adds a window sample:
            // persist it lazily, not on the path of every release.
            let routine = matches!(outcome, AttemptOutcome::Success { .. })
                && breaker.state == State::Closed
                && breaker.consecutive_failures == 0;
            let transition = match outcome {
                AttemptOutcome::Success { .. } => {
                    breaker.record(cfg, now_ms, active.permit, Outcome::Success)
                }
                AttemptOutcome::Failure { kind, message } if kind.is_worker_fault() => breaker
                    .record(
                        cfg,
                        now_ms,
                        active.permit,
                        Outcome::Failure(message.clone()),
                    ),
                // Only worker faults touch a breaker.
                AttemptOutcome::Failure { .. }
                | AttemptOutcome::Unknown
                | AttemptOutcome::MissingTool { .. } => {
                    breaker.abandon(active.permit);
                    None
                }
            };
            if routine && transition.is_none() {
                self.lazy_breakers.insert(id.clone());
            } else {
                self.effects.breakers.insert(id.clone());
            }
            self.note_transition(&id, transition, false, now_ms);
        }
        match outcome {
            AttemptOutcome::Success { .. } => {
                self.selector.record_build(&active.project, &id);
                self.last_build_ms.insert(id.clone(), now_ms);
                self.metrics.attempts_ok += 1;
            }
            AttemptOutcome::Failure { .. } => self.metrics.attempts_failed += 1,
            AttemptOutcome::Unknown => self.metrics.attempts_unknown += 1,
            AttemptOutcome::MissingTool { tool } => {
                self.metrics.attempts_unknown += 1;
                let caps = self.caps.entry(id.clone()).or_default();
                caps.note_missing(tool);
                self.selector.set_capabilities(&id, Some(caps.clone()));
                self.to_learn.insert(id.clone());
                self.effects.learn = true;
            }
        }
        self.metrics
            .observe_lease_secs(now_ms.saturating_sub(active.since_ms) as f64 / 1000.0);
        self.selector.release(&id);
        self.serve_waiters(now_ms);
    }

    /// The client vanished: free the slot, no breaker effect.
    pub fn abandon(&mut self, lease: u64, now_ms: u64) {
        self.release(lease, &AttemptOutcome::Unknown, now_ms);
    }

    /// Force breakers CLOSED; `None` = every worker. Returns the ids reset.
    pub fn reset(
        &mut self,
        worker: Option<&str>,
        now_ms: u64,
    ) -> Result<Vec<String>, UnknownWorker> {
        let ids = self.targets(worker)?;
        for id in &ids {
            if let Some(b) = self.breakers.get_mut(id) {
                let t = b.reset(now_ms);
                self.effects.breakers.insert(id.clone());
                if t.is_some() {
                    self.metrics.count_transition("reset");
                }
            }
            self.emit(EventKind::CircuitReset { worker: id.clone() }, now_ms);
        }
        self.serve_waiters(now_ms);
        Ok(ids)
    }

    /// The ids an operator command is about: `id`, or every worker for `None`.
    pub fn targets(&self, worker: Option<&str>) -> Result<Vec<String>, UnknownWorker> {
        match worker {
            Some(id) => self.known(id).map(|_| vec![id.to_string()]),
            None => Ok(self.config.workers.iter().map(|w| w.id.clone()).collect()),
        }
    }

    /// Drain, enable or disable a worker (persisted).
    pub fn set_worker(
        &mut self,
        id: &str,
        action: WorkerAction,
        now_ms: u64,
    ) -> Result<(), UnknownWorker> {
        self.known(id)?;
        let flags = self.flags.entry(id.to_string()).or_default();
        match action {
            WorkerAction::Drain => flags.draining = true,
            WorkerAction::Enable => {
                flags.enabled = Some(true);
                flags.draining = false;
            }
            WorkerAction::Disable => flags.enabled = Some(false),
        }
        self.effects.flags.insert(id.to_string());
        self.selector.reconfigure(self.worker_slots());
        let action = format!("{action:?}").to_lowercase();
        self.emit(
            EventKind::WorkerChanged {
                worker: id.to_string(),
                action,
            },
            now_ms,
        );
        self.serve_waiters(now_ms);
        Ok(())
    }

    fn is_enabled(&self, id: &str) -> bool {
        let configured = self.config.worker(id).is_some_and(|w| w.enabled);
        self.flags(id).enabled.unwrap_or(configured)
    }

    pub fn flags(&self, id: &str) -> WorkerFlags {
        self.flags.get(id).copied().unwrap_or_default()
    }

    /// Move breakers whose cooldown elapsed to HALF_OPEN and hand out probes
    /// for half-open workers nobody is probing.
    pub fn due_probes(&mut self, now_ms: u64) -> Vec<ProbeJob> {
        let ids: Vec<String> = self.config.workers.iter().map(|w| w.id.clone()).collect();
        let mut jobs = Vec::new();
        for id in ids {
            if !self.is_enabled(&id) {
                // The operator took it out of service: no probes either.
                continue;
            }
            let Some(b) = self.breakers.get_mut(&id) else {
                continue;
            };
            let t = b.tick(&self.config.circuit, now_ms);
            let half_open = b.state == State::HalfOpen;
            self.note_transition(&id, t, true, now_ms);
            if half_open && !self.probing.contains(&id) {
                if let Ok(job) = self.start_probe(&id, false, now_ms) {
                    jobs.push(job);
                }
            }
        }
        jobs
    }

    /// Probe one worker now (operator asked): an OPEN worker skips its cooldown.
    pub fn probe_now(&mut self, id: &str, now_ms: u64) -> Result<ProbeJob, String> {
        self.known(id).map_err(|e| e.to_string())?;
        self.start_probe(id, true, now_ms)
    }

    fn start_probe(&mut self, id: &str, now: bool, now_ms: u64) -> Result<ProbeJob, String> {
        let target = Target {
            worker: self.config.worker(id).ok_or("unknown worker")?.clone(),
            ssh: self.config.ssh.clone(),
            agent: self.agent.clone(),
        };
        let b = self.breakers.get_mut(id).ok_or("no breaker")?;
        let (admission, t) = if now {
            b.probe_now(&self.config.circuit, now_ms)
        } else {
            b.try_admit(&self.config.circuit, now_ms)
        };
        self.note_transition(id, t, true, now_ms);
        let permit = admission.map_err(|r| r.reason)?;
        self.probing.insert(id.to_string());
        Ok(ProbeJob {
            worker: id.to_string(),
            permit,
            target,
        })
    }

    /// Feed a probe's result to the breaker.
    /// A probe that failed on this machine (not the worker's fault): it ends
    /// without touching the breaker.
    pub fn abandon_probe(&mut self, job: &ProbeJob, now_ms: u64) {
        self.probing.remove(&job.worker);
        if let Some(b) = self.breakers.get_mut(&job.worker) {
            b.abandon(job.permit);
        }
        self.metrics.probes += 1;
        self.serve_waiters(now_ms);
    }

    pub fn finish_probe(&mut self, job: &ProbeJob, result: Result<u64, String>, now_ms: u64) {
        self.probing.remove(&job.worker);
        let outcome = match &result {
            Ok(latency) => {
                self.latency_ms.insert(job.worker.clone(), *latency);
                Outcome::Success
            }
            Err(msg) => Outcome::Failure(msg.clone()),
        };
        if let Some(b) = self.breakers.get_mut(&job.worker) {
            let t = b.record(&self.config.circuit, now_ms, job.permit, outcome);
            self.effects.breakers.insert(job.worker.clone());
            self.note_transition(&job.worker, t, true, now_ms);
        }
        self.metrics.probes += 1;
        self.serve_waiters(now_ms);
    }

    /// When the prober should look again: the earliest end of a cooldown.
    pub fn next_deadline(&self) -> Option<u64> {
        let cooldown = self.config.circuit.open_cooldown_secs * 1000;
        self.config
            .workers
            .iter()
            .filter_map(|w| self.breakers.get(&w.id))
            .filter(|b| b.state == State::Open)
            .filter_map(|b| b.opened_at_ms.map(|t| t + cooldown))
            .min()
    }

    /// Whether a probe of `id` is running now.
    pub fn probe_in_flight(&self, id: &str) -> bool {
        self.probing.contains(id)
    }

    /// Round trip of the last successful probe of `id`.
    pub fn latency(&self, id: &str) -> Option<u64> {
        self.latency_ms.get(id).copied()
    }

    pub fn state_of(&self, id: &str) -> Option<State> {
        self.breakers.get(id).map(|b| b.state)
    }

    /// Give freed slots to waiting requests, oldest first.
    fn serve_waiters(&mut self, now_ms: u64) {
        loop {
            if self.waiters.is_empty() {
                return;
            }
            let served = {
                let (breakers, cfg) = (&self.breakers, &self.config.circuit);
                self.selector
                    .serve_waiters(&|id| admits(breakers, cfg, id, now_ms))
            };
            if served.is_empty() {
                return;
            }
            for (waiter, pick) in served {
                self.answer_waiter(waiter, pick, now_ms);
            }
        }
    }

    fn answer_waiter(&mut self, waiter: u64, pick: Pick, now_ms: u64) {
        let Some(w) = self.waiters.remove(&waiter) else {
            if let Pick::Worker(id) = pick {
                self.selector.release(&id);
            }
            return;
        };
        let answer = match pick {
            Pick::Worker(id) => {
                // The selector already took the slot; give it back so `grant`
                // takes it together with the breaker permit.
                self.selector.release(&id);
                match self.grant(&id, &w.request, now_ms) {
                    Some(g) => Answer::Granted(g),
                    None => {
                        let position = self.selector.enqueue(waiter, selection_request(&w.request));
                        tracing::debug!(waiter, position, "requeued: permit refused");
                        self.waiters.insert(waiter, w);
                        return;
                    }
                }
            }
            Pick::Unavailable(whys) => Answer::Local(self.explain(&whys, &w.request, now_ms)),
            Pick::Wait => {
                self.selector.enqueue(waiter, selection_request(&w.request));
                self.waiters.insert(waiter, w);
                return;
            }
        };
        if let Err(Answer::Granted(g)) = w.tx.send(answer) {
            // The client left while waiting: return what it was given.
            self.abandon(g.lease, now_ms);
        }
    }

    /// One line saying why no worker can take a request.
    fn explain(
        &self,
        whys: &[(String, select::Why)],
        request: &LeaseRequest,
        now_ms: u64,
    ) -> String {
        if self.config.workers.is_empty() {
            return "no workers configured".into();
        }
        if let Some(w) = &request.worker {
            if self.config.worker(w).is_none() {
                return format!("requested worker {w} is not configured");
            }
        }
        let shown = whys
            .iter()
            .filter(|(_, why)| !matches!(why, select::Why::NotRequested | select::Why::Excluded));
        let unfit: Vec<(String, crate::caps::Unfit)> = shown
            .clone()
            .filter_map(|(id, why)| match why {
                select::Why::Unfit(u) => Some((id.clone(), u.clone())),
                _ => None,
            })
            .collect();
        let mut parts: Vec<String> = shown
            .filter(|(_, why)| !matches!(why, select::Why::Unfit(_)))
            .map(|(id, why)| self.describe(id, why, now_ms))
            .collect();
        if let Some(line) = crate::caps::no_worker_line(&unfit) {
            parts.insert(0, line);
        }
        if parts.is_empty() {
            "no other worker available".into()
        } else {
            parts.join(", ")
        }
    }

    fn describe(&self, id: &str, why: &select::Why, now_ms: u64) -> String {
        use select::Why;
        match why {
            Why::Disabled => format!("{id} disabled"),
            Why::Draining => format!("{id} draining"),
            Why::Excluded => format!("{id} failed"),
            Why::NotRequested => format!("{id} not requested"),
            Why::Busy => format!("{id} busy"),
            Why::Unfit(unfit) => unfit.describe(id),
            Why::Refused => match self.breakers.get(id) {
                Some(b) if b.state == State::HalfOpen => {
                    format!("{id} half-open (probe in flight)")
                }
                Some(b) => match b.retry_in_ms(&self.config.circuit, now_ms) {
                    Some(ms) => format!("circuit open on {id} (retry in {}s)", ms.div_ceil(1000)),
                    None => format!("circuit open on {id}"),
                },
                None => format!("{id} unavailable"),
            },
        }
    }

    fn note_transition(&mut self, id: &str, t: Option<Transition>, probe: bool, now_ms: u64) {
        let Some(t) = t else { return };
        self.effects.breakers.insert(id.to_string());
        let cfg = &self.config.circuit;
        let kind = match t {
            Transition::Opened { failures, reason } => {
                self.metrics.count_transition("opened");
                EventKind::CircuitOpened {
                    worker: id.to_string(),
                    failure_count: failures,
                    threshold: cfg.failure_threshold,
                    cooldown_seconds: cfg.open_cooldown_secs,
                    reason,
                }
            }
            Transition::HalfOpened => {
                self.metrics.count_transition("half_opened");
                EventKind::CircuitHalfOpen {
                    worker: id.to_string(),
                    probe,
                }
            }
            Transition::Closed { recovery_ms } => {
                self.metrics.count_transition("closed");
                EventKind::CircuitClosed {
                    worker: id.to_string(),
                    recovery_time_seconds: recovery_ms / 1000,
                }
            }
            Transition::Reset => return,
        };
        self.emit(kind, now_ms);
    }

    pub fn emit(&mut self, kind: EventKind, now_ms: u64) {
        self.effects.events.push(Event::new(kind, now_ms));
    }

    /// The side effects gathered since the last call; breakers changed only
    /// by routine successes are included at most every [`LAZY_PERSIST_MS`].
    pub fn take_effects(&mut self, now_ms: u64) -> Effects {
        if now_ms.saturating_sub(self.last_lazy_flush_ms) >= LAZY_PERSIST_MS {
            self.flush_lazy(now_ms);
        }
        std::mem::take(&mut self.effects)
    }

    /// Persist every lazily changed breaker with the next effects (shutdown).
    pub fn flush_lazy(&mut self, now_ms: u64) {
        self.effects.breakers.append(&mut self.lazy_breakers);
        self.last_lazy_flush_ms = now_ms;
    }

    pub fn breaker(&self, id: &str) -> Option<&Breaker> {
        self.breakers.get(id)
    }

    /// The live part of `rch status` (the caller adds recent jobs).
    pub fn report(&self, now_ms: u64) -> FleetReport {
        let workers = self
            .config
            .workers
            .iter()
            .map(|w| {
                let flags = self.flags(&w.id);
                WorkerReport {
                    id: w.id.clone(),
                    host: w.host.clone(),
                    slots: w.slots,
                    used: self.selector.used(&w.id),
                    priority: w.priority,
                    enabled: self.is_enabled(&w.id),
                    draining: flags.draining,
                    circuit: circuit_report(self.breakers.get(&w.id), &self.config, now_ms),
                    last_build: self.last_build_ms.get(&w.id).map(|t| rfc3339(*t)),
                    latency_ms: self.latency(&w.id),
                    capabilities: self.caps.get(&w.id).cloned(),
                }
            })
            .collect();
        let mut leases: Vec<_> = self.leases.values().collect();
        leases.sort_by_key(|l| l.since_ms);
        let mut queue: Vec<_> = self.waiters.values().collect();
        queue.sort_by_key(|w| w.since_ms);
        FleetReport {
            workers,
            leases: leases
                .into_iter()
                .map(|l| LeaseReport {
                    worker: l.worker.clone(),
                    project: l.project.clone(),
                    command: l.command.clone(),
                    since: rfc3339(l.since_ms),
                    phase: None,
                })
                .collect(),
            queue: queue
                .into_iter()
                .enumerate()
                .map(|(i, w)| QueuedReport {
                    position: i + 1,
                    project: w.request.project.clone(),
                    command: w.request.command.clone(),
                    since: rfc3339(w.since_ms),
                })
                .collect(),
            ..Default::default()
        }
    }

    pub fn queue_len(&self) -> usize {
        self.waiters.len()
    }

    pub fn used(&self, id: &str) -> u32 {
        self.selector.used(id)
    }
}

fn admits(
    breakers: &HashMap<String, Breaker>,
    cfg: &crate::breaker::BreakerConfig,
    id: &str,
    now_ms: u64,
) -> bool {
    breakers.get(id).is_some_and(|b| b.can_admit(cfg, now_ms))
}

fn selection_request(r: &LeaseRequest) -> select::LeaseRequest {
    select::LeaseRequest {
        project: r.project.clone(),
        worker: r.worker.clone(),
        exclude: r.exclude.clone(),
        needs: r.needs.clone(),
    }
}

/// A breaker as `rch status --circuits` shows it.
pub fn circuit_report(b: Option<&Breaker>, config: &Config, now_ms: u64) -> CircuitReport {
    let Some(b) = b else {
        return CircuitReport {
            state: State::Closed.as_str().into(),
            failures: 0,
            since: None,
            retry_in_secs: None,
            last_error: None,
            error_rate: None,
            epoch: 0,
        };
    };
    let cfg = &config.circuit;
    CircuitReport {
        state: b.state.as_str().into(),
        failures: b.consecutive_failures,
        since: Some(rfc3339(b.since_ms)),
        retry_in_secs: if b.state == State::Open {
            b.retry_in_ms(cfg, now_ms).map(|ms| ms.div_ceil(1000))
        } else {
            None
        },
        last_error: b.last_error.clone(),
        error_rate: b.error_rate(cfg, now_ms),
        epoch: b.epoch,
    }
}
