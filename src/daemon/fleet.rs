//! The daemon's core: a synchronous, IO-free state machine that owns the
//! breakers, the one wait queue (the selector's), slots, leases and the
//! operator's flags.
//!
//! Inputs are `handle_*` calls that take the current time; outputs are typed
//! values the caller drains with [`Fleet::poll_output`] ([`Output::Grant`],
//! [`Output::Refuse`] for queued requests, [`Output::StartProbe`],
//! [`Output::Persist`], [`Output::Emit`]) and the next deadline with
//! [`Fleet::poll_timeout`], at which the caller calls
//! [`Fleet::handle_timeout`] (cooldowns ending, queue timeouts, lazy
//! persistence). There is no clock, channel, task or socket in here: the
//! server (`daemon/mod.rs`, `server.rs`, `prober.rs`) is the IO shell that
//! carries the outputs out, and a simulation drives this type directly.

use super::metrics::{Metrics, Placement};
use crate::breaker::{Breaker, Outcome, Permit, State, Transition};
use crate::caps::Capabilities;
use crate::clock::rfc3339;
use crate::config::{Config, WorkerConfig};
use crate::protocol::{AttemptOutcome, JobReport, LeaseRequest, WorkerAction};
use crate::select::{self, Pick, Selector, WorkerSlots};
use crate::state::events::{Event, EventRecord};
use crate::state::report::{CircuitReport, FleetReport, LeaseReport, QueuedReport, WorkerReport};
use crate::state::store::{HeldLease, Holder, WorkerFlags};
use std::collections::{BTreeSet, HashMap, VecDeque};

mod team;
pub use team::{probe_permit_ttl_ms, TeamOp};

/// How often breakers changed only by routine successes are written.
pub const LAZY_PERSIST_MS: u64 = 2_000;

/// Names one queued lease request; the shell maps it to its reply handle.
pub type WaiterId = u64;

/// A slot on a worker, held until released or abandoned.
#[derive(Debug, Clone)]
pub struct Grant {
    pub lease: u64,
    pub worker: WorkerConfig,
    pub epoch: u64,
    pub why: GrantWhy,
    /// When it was granted (unix ms), as saved with the lease.
    pub since_ms: u64,
}

/// Why the core chose the worker it granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantWhy {
    /// Its target dir is warm: it built this project last.
    LastBuilt,
    /// No warm worker free: the best free one by priority, then free slots.
    ByPriority,
}

impl GrantWhy {
    /// The words sent to the client.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantWhy::LastBuilt => "last built this project",
            GrantWhy::ByPriority => "free slot, by priority",
        }
    }
}

/// What [`Fleet::handle_lease`] decided at once.
#[derive(Debug)]
pub enum Decision {
    Granted(Grant),
    /// No worker for this request: run locally, because of the reason.
    Refused(String),
    /// Waiting in the queue; the answer comes later as an [`Output`].
    Queued {
        waiter: WaiterId,
        position: usize,
    },
}

/// Something the shell must carry out.
#[derive(Debug, Clone)]
pub enum Output {
    /// A queued request got its slot.
    Grant { waiter: WaiterId, grant: Grant },
    /// A queued request will get none (its queue time is up, or no worker
    /// can serve it any more).
    Refuse { waiter: WaiterId, reason: String },
    /// Probe this worker and report with [`Fleet::finish_probe`].
    StartProbe(ProbeJob),
    /// Learn what this worker can build (a probe that leaves its breaker
    /// alone) and report with [`Fleet::learn`].
    Learn { worker: String },
    /// Save this state (the store executes it).
    Persist(Persist),
    /// Store and stream this event.
    Emit(EventRecord),
    /// Carry this out on the team's shared breaker (with `[team]`), then
    /// answer with the team's state, or [`Fleet::team_unavailable`].
    Team(TeamOp),
}

/// State to save, as a snapshot: executing it twice is harmless.
#[derive(Debug, Clone)]
pub enum Persist {
    Breaker {
        worker: String,
        breaker: Breaker,
    },
    Flags {
        worker: String,
        flags: WorkerFlags,
    },
    /// A lease with a known holder is taken (saved until it ends, so that a
    /// daemon restarted meanwhile keeps its slot taken).
    Lease {
        lease: u64,
        held: HeldLease,
    },
    /// That lease ended.
    LeaseEnded {
        lease: u64,
    },
}

/// A probe the shell must run, then report with [`Fleet::finish_probe`].
#[derive(Debug, Clone)]
pub struct ProbeJob {
    pub worker: String,
    pub permit: Permit,
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
    /// The client process holding it, when the shell told ([`Fleet::hold`]).
    holder: Option<Holder>,
}

/// What the core remembers of a queued request; its place in line is kept
/// by the selector's queue alone.
struct Waiting {
    request: LeaseRequest,
    since_ms: u64,
    deadline_ms: u64,
}

impl ActiveLease {
    fn held(&self, holder: Holder) -> HeldLease {
        HeldLease {
            worker: self.worker.clone(),
            project: self.project.clone(),
            command: self.command.clone(),
            since_ms: self.since_ms,
            holder,
        }
    }
}

pub struct Fleet {
    config: Config,
    breakers: HashMap<String, Breaker>,
    flags: HashMap<String, WorkerFlags>,
    selector: Selector,
    leases: HashMap<u64, ActiveLease>,
    waiting: HashMap<WaiterId, Waiting>,
    /// Workers with a probe running (at most one each).
    probing: BTreeSet<String>,
    latency_ms: HashMap<String, u64>,
    last_build_ms: HashMap<String, u64>,
    /// What each worker's last probe found, and tools builds found missing.
    caps: HashMap<String, Capabilities>,
    /// Workers whose capabilities are to be learned (never yet, or stale).
    to_learn: BTreeSet<String>,
    next_id: u64,
    outputs: VecDeque<Output>,
    /// Breakers and flags to persist with the next outputs.
    dirty_breakers: BTreeSet<String>,
    dirty_flags: BTreeSet<String>,
    /// Breakers changed only by routine successes, persisted lazily.
    lazy_breakers: BTreeSet<String>,
    last_lazy_flush_ms: u64,
    /// The ssh agent of the latest client that had one; probes use it.
    agent: Option<std::path::PathBuf>,
    /// A breaker changed: look for due probes at once.
    probe_check: bool,
    pub metrics: Metrics,
    /// The team link as the core sees it; `None` without `[team]`.
    team: Option<team::TeamView>,
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
            waiting: HashMap::new(),
            probing: BTreeSet::new(),
            latency_ms: HashMap::new(),
            last_build_ms: HashMap::new(),
            caps: HashMap::new(),
            to_learn: BTreeSet::new(),
            next_id: 1,
            outputs: VecDeque::new(),
            dirty_breakers: BTreeSet::new(),
            dirty_flags: BTreeSet::new(),
            lazy_breakers: BTreeSet::new(),
            last_lazy_flush_ms: now_ms,
            agent: None,
            probe_check: true,
            metrics: Metrics::default(),
            team: None,
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
            }
        }
        self.config = config;
        self.configure_team();
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
                    // Every shared slot is leased by the team: none here either.
                    slots: if self.team_full(&w.id) { 0 } else { w.slots },
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

    /// Hand out the workers whose capabilities are to be learned now
    /// (without touching their breakers); each once.
    fn start_learning(&mut self) {
        for id in std::mem::take(&mut self.to_learn) {
            if self.is_enabled(&id) && self.config.worker(&id).is_some() {
                self.outputs.push_back(Output::Learn { worker: id });
            }
        }
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

    /// Ask for a slot: granted now, queued, or refused (local) with a reason.
    /// A queued request is answered later by [`Output::Grant`] or
    /// [`Output::Refuse`], at the latest when `queue_timeout_secs` are up.
    pub fn handle_lease(&mut self, now_ms: u64, request: LeaseRequest) -> Decision {
        if request.ssh_auth_sock.is_some() {
            self.agent.clone_from(&request.ssh_auth_sock);
        }
        // Time may have made a worker admissible: older waiters go first.
        self.serve_waiters(now_ms);
        let sel_req = selection_request(&request);
        let pick = {
            let (breakers, cfg) = (&self.breakers, &self.config.circuit);
            let team = self.team_connected();
            self.selector
                .pick(&sel_req, &|id| admits(breakers, cfg, id, now_ms, team))
        };
        match pick {
            Pick::Worker(id) => {
                if !self.selector.acquire(&id) {
                    return Decision::Refused(format!("{id} refused the lease"));
                }
                match self.grant_acquired(&id, &request, now_ms) {
                    Some(grant) => Decision::Granted(grant),
                    None => Decision::Refused(format!("{id} refused the lease")),
                }
            }
            Pick::Unavailable(whys) => {
                let reason = self.explain(&whys, &request, now_ms);
                self.metrics.local_decisions += 1;
                Decision::Refused(reason)
            }
            Pick::Wait => {
                let waiter = self.next_id();
                let position = self.selector.enqueue(waiter, sel_req);
                let timeout_ms = self.config.daemon.queue_timeout_secs * 1000;
                self.waiting.insert(
                    waiter,
                    Waiting {
                        request,
                        since_ms: now_ms,
                        deadline_ms: now_ms + timeout_ms,
                    },
                );
                self.emit(
                    Event::LeaseQueued {
                        reason: "all admissible workers are busy".into(),
                        position,
                    },
                    now_ms,
                );
                Decision::Queued { waiter, position }
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Take the breaker permit for a slot already acquired on `id`; on a
    /// refusal the slot is given back.
    fn grant_acquired(&mut self, id: &str, request: &LeaseRequest, now_ms: u64) -> Option<Grant> {
        let admitted = match self.breakers.get_mut(id) {
            Some(breaker) if self.config.worker(id).is_some() => {
                Some(breaker.try_admit(&self.config.circuit, now_ms))
            }
            _ => None,
        };
        let permit = admitted.and_then(|(admission, transition)| {
            self.note_transition(id, transition, false, now_ms);
            admission.ok()
        });
        let Some(permit) = permit else {
            self.selector.release(id);
            return None;
        };
        let worker = self.config.worker(id)?.clone();
        let why = if self.selector.last_builder(&request.project) == Some(id) {
            GrantWhy::LastBuilt
        } else {
            GrantWhy::ByPriority
        };
        let lease = self.next_id();
        self.leases.insert(
            lease,
            ActiveLease {
                worker: id.to_string(),
                permit,
                project: request.project.clone(),
                command: request.command.clone(),
                since_ms: now_ms,
                holder: None,
            },
        );
        self.metrics.leases_granted += 1;
        Some(Grant {
            lease,
            epoch: permit.epoch,
            worker,
            why,
            since_ms: now_ms,
        })
    }

    /// The process holding `lease` (the client on the other end of its
    /// connection): the lease is saved until it ends.
    pub fn hold(&mut self, lease: u64, holder: Holder) {
        let Some(active) = self.leases.get_mut(&lease) else {
            return;
        };
        active.holder = Some(holder);
        let held = active.held(holder);
        self.outputs
            .push_back(Output::Persist(Persist::Lease { lease, held }));
    }

    /// Leases a previous daemon granted whose holders still run (the shell
    /// checked): they keep their slots, under their ids, until released or
    /// abandoned like any other. Returns the ids taken back; a lease on a
    /// worker no longer configured, or beyond its slots, is dropped.
    pub fn restore(&mut self, leases: Vec<(u64, HeldLease)>) -> Vec<u64> {
        let mut restored = Vec::new();
        for (lease, held) in leases {
            self.next_id = self.next_id.max(lease + 1);
            let epoch = self.breakers.get(&held.worker).map(|b| b.epoch);
            let taken = match epoch {
                Some(epoch) if self.config.worker(&held.worker).is_some() => {
                    self.selector.acquire(&held.worker).then_some(epoch)
                }
                _ => None,
            };
            let Some(epoch) = taken else {
                self.outputs
                    .push_back(Output::Persist(Persist::LeaseEnded { lease }));
                continue;
            };
            self.leases.insert(
                lease,
                ActiveLease {
                    worker: held.worker,
                    // Not a probe: its end, whatever it is, tells the breaker nothing.
                    permit: Permit {
                        epoch,
                        probe: false,
                    },
                    project: held.project,
                    command: held.command,
                    since_ms: held.since_ms,
                    holder: Some(held.holder),
                },
            );
            restored.push(lease);
        }
        restored
    }

    /// A queued request gave up (its client left).
    pub fn cancel_wait(&mut self, waiter: WaiterId) {
        self.selector.cancel(waiter);
        self.waiting.remove(&waiter);
    }

    /// End a lease with what happened on the worker.
    pub fn handle_release(&mut self, now_ms: u64, lease: u64, outcome: &AttemptOutcome) {
        let Some(active) = self.leases.remove(&lease) else {
            return;
        };
        if active.holder.is_some() {
            self.outputs
                .push_back(Output::Persist(Persist::LeaseEnded { lease }));
        }
        let id = active.worker.clone();
        let counted = match outcome {
            AttemptOutcome::Success { .. } => Some(Outcome::Success),
            AttemptOutcome::Failure { kind, message } if kind.is_worker_fault() => {
                Some(Outcome::Failure(message.clone()))
            }
            _ => None,
        };
        if let Some(outcome) = counted.filter(|_| self.team_connected()) {
            // The team's breaker counts it; its answer is adopted.
            self.outputs.push_back(Output::Team(TeamOp::Record {
                worker: id.clone(),
                permit: active.permit,
                outcome,
            }));
        } else if let Some(breaker) = self.breakers.get_mut(&id) {
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
                self.mark_breaker(&id);
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
            }
        }
        self.metrics
            .observe_lease_secs(now_ms.saturating_sub(active.since_ms) as f64 / 1000.0);
        self.selector.release(&id);
        self.serve_waiters(now_ms);
    }

    /// The client vanished: free the slot, no breaker effect.
    pub fn handle_abandon(&mut self, now_ms: u64, lease: u64) {
        self.handle_release(now_ms, lease, &AttemptOutcome::Unknown);
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
                b.reset(now_ms);
                self.mark_breaker(id);
            }
            if self.team_connected() {
                let worker = id.clone();
                self.outputs
                    .push_back(Output::Team(TeamOp::Reset { worker }));
            }
            self.emit(Event::CircuitReset { worker: id.clone() }, now_ms);
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
        self.dirty_flags.insert(id.to_string());
        self.probe_check = true;
        self.selector.reconfigure(self.worker_slots());
        self.emit(
            Event::WorkerChanged {
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

    /// Time has come to `now_ms`: expire queued requests whose queue time is
    /// up, move breakers whose cooldown elapsed to HALF_OPEN, hand out probes
    /// for half-open workers nobody is probing, and persist lazy breakers.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.expire_waiters(now_ms);
        self.expire_team_full(now_ms);
        self.start_learning();
        if self.probe_check || self.cooldown_due(now_ms) {
            self.probe_check = false;
            self.start_due_probes(now_ms);
        }
        if !self.lazy_breakers.is_empty() && now_ms >= self.last_lazy_flush_ms + LAZY_PERSIST_MS {
            self.flush_lazy(now_ms);
        }
        self.serve_waiters(now_ms);
    }

    /// The next time [`Fleet::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.probe_check || !self.to_learn.is_empty() {
            return Some(0);
        }
        let queue = self.waiting.values().map(|w| w.deadline_ms).min();
        let lazy =
            (!self.lazy_breakers.is_empty()).then_some(self.last_lazy_flush_ms + LAZY_PERSIST_MS);
        [
            queue,
            lazy,
            self.next_probe_due(),
            self.next_team_full_end(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn expire_waiters(&mut self, now_ms: u64) {
        let mut expired: Vec<(u64, WaiterId)> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline_ms <= now_ms)
            .map(|(id, w)| (w.since_ms, *id))
            .collect();
        expired.sort();
        for (_, waiter) in expired {
            if let Some(w) = self.waiting.remove(&waiter) {
                self.selector.cancel(waiter);
                let secs = w.deadline_ms.saturating_sub(w.since_ms) / 1000;
                self.outputs.push_back(Output::Refuse {
                    waiter,
                    reason: format!("all workers busy for {secs}s (queue timeout)"),
                });
            }
        }
    }

    fn cooldown_due(&self, now_ms: u64) -> bool {
        self.next_probe_due().is_some_and(|t| t <= now_ms)
    }

    /// When the next probe is due: a cooldown's end, or with the team
    /// connected, the next time a team probe permit is to be asked for.
    fn next_probe_due(&self) -> Option<u64> {
        if self.team_connected() {
            self.next_team_probe()
        } else {
            self.next_cooldown_end()
        }
    }

    fn start_due_probes(&mut self, now_ms: u64) {
        if self.team_connected() {
            // The team's permit decides which daemon probes.
            self.ask_team_probes(now_ms);
            self.probe_check = false;
            return;
        }
        let ids: Vec<String> = self.config.workers.iter().map(|w| w.id.clone()).collect();
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
                    self.outputs.push_back(Output::StartProbe(job));
                }
            }
        }
        // Transitions made here need no second look.
        self.probe_check = false;
    }

    /// Probe one worker now (operator asked): an OPEN worker skips its cooldown.
    pub fn probe_now(&mut self, id: &str, now_ms: u64) -> Result<ProbeJob, String> {
        self.known(id).map_err(|e| e.to_string())?;
        self.start_probe(id, true, now_ms)
    }

    fn start_probe(&mut self, id: &str, now: bool, now_ms: u64) -> Result<ProbeJob, String> {
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
        })
    }

    /// The ssh agent probes should authenticate with (the latest client's).
    pub fn agent(&self) -> Option<&std::path::Path> {
        self.agent.as_deref()
    }

    /// A probe that failed on this machine (not the worker's fault): it ends
    /// without touching the breaker.
    pub fn abandon_probe(&mut self, job: &ProbeJob, now_ms: u64) {
        self.probing.remove(&job.worker);
        if let Some(op) = self.team_probe_op(&job.worker, job.permit, None) {
            self.outputs.push_back(Output::Team(op));
        } else if let Some(b) = self.breakers.get_mut(&job.worker) {
            b.abandon(job.permit);
        }
        self.metrics.probes += 1;
        self.probe_check = true;
        self.serve_waiters(now_ms);
    }

    /// Feed a probe's result to the breaker.
    pub fn finish_probe(&mut self, job: &ProbeJob, result: Result<u64, String>, now_ms: u64) {
        self.probing.remove(&job.worker);
        let outcome = match &result {
            Ok(latency) => {
                self.latency_ms.insert(job.worker.clone(), *latency);
                Outcome::Success
            }
            Err(msg) => Outcome::Failure(msg.clone()),
        };
        let outcome = match self.team_probe_op(&job.worker, job.permit, Some(outcome.clone())) {
            Some(op) => {
                self.outputs.push_back(Output::Team(op));
                None
            }
            None => Some(outcome),
        };
        if let (Some(outcome), Some(b)) = (outcome, self.breakers.get_mut(&job.worker)) {
            let t = b.record(&self.config.circuit, now_ms, job.permit, outcome);
            self.mark_breaker(&job.worker);
            self.note_transition(&job.worker, t, true, now_ms);
        }
        self.metrics.probes += 1;
        self.serve_waiters(now_ms);
    }

    /// The earliest end of a cooldown of an enabled worker.
    fn next_cooldown_end(&self) -> Option<u64> {
        let cooldown = self.config.circuit.open_cooldown_secs * 1000;
        self.config
            .workers
            .iter()
            .filter(|w| self.is_enabled(&w.id))
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

    /// Give freed slots to waiting requests, oldest first; one at a time, so
    /// each sees the permits the ones before it took.
    fn serve_waiters(&mut self, now_ms: u64) {
        while !self.waiting.is_empty() {
            let served = {
                let (breakers, cfg) = (&self.breakers, &self.config.circuit);
                let team = self.team_connected();
                self.selector
                    .serve_next(&|id| admits(breakers, cfg, id, now_ms, team))
            };
            let Some((waiter, pick)) = served else {
                return;
            };
            if !self.answer_waiter(waiter, pick, now_ms) {
                // Put back without a grant: the next pass would pick it again.
                return;
            }
        }
    }

    /// Turn the selector's pick for a waiter into an output; the selector
    /// has already taken the slot of a `Pick::Worker`.
    /// Returns false when the waiter went back into the queue.
    fn answer_waiter(&mut self, waiter: WaiterId, pick: Pick, now_ms: u64) -> bool {
        let Some(w) = self.waiting.remove(&waiter) else {
            if let Pick::Worker(id) = pick {
                self.selector.release(&id);
            }
            return true;
        };
        let output = match pick {
            Pick::Worker(id) => match self.grant_acquired(&id, &w.request, now_ms) {
                Some(grant) => Output::Grant { waiter, grant },
                None => {
                    self.selector.enqueue(waiter, selection_request(&w.request));
                    self.waiting.insert(waiter, w);
                    return false;
                }
            },
            Pick::Unavailable(whys) => Output::Refuse {
                waiter,
                reason: self.explain(&whys, &w.request, now_ms),
            },
            Pick::Wait => {
                self.selector.enqueue(waiter, selection_request(&w.request));
                self.waiting.insert(waiter, w);
                return false;
            }
        };
        self.outputs.push_back(output);
        true
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
        self.mark_breaker(id);
        self.note_opened_away(id, &t);
        let cfg = &self.config.circuit;
        let kind = match t {
            Transition::Opened { failures, reason } => Event::CircuitOpened {
                worker: id.to_string(),
                failure_count: failures,
                threshold: cfg.failure_threshold,
                cooldown_seconds: cfg.open_cooldown_secs,
                reason,
            },
            Transition::HalfOpened => Event::CircuitHalfOpen {
                worker: id.to_string(),
                probe,
            },
            Transition::Closed { recovery_ms } => Event::CircuitClosed {
                worker: id.to_string(),
                recovery_time_seconds: recovery_ms / 1000,
            },
            Transition::Reset => return,
        };
        self.emit(kind, now_ms);
    }

    fn emit(&mut self, event: Event, now_ms: u64) {
        self.metrics.observe(&event);
        self.outputs
            .push_back(Output::Emit(EventRecord::new(event, now_ms)));
    }

    /// A breaker changed in a way worth saving at once (and worth a look
    /// for due probes).
    fn mark_breaker(&mut self, id: &str) {
        self.lazy_breakers.remove(id);
        self.dirty_breakers.insert(id.to_string());
        self.probe_check = true;
    }

    /// The next thing the shell must do, if any. Persist outputs for state
    /// changed since the last call come after the other outputs.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(output) = self.outputs.pop_front() {
            return Some(output);
        }
        if let Some(worker) = self.dirty_breakers.pop_first() {
            if let Some(breaker) = self.breakers.get(&worker) {
                let breaker = breaker.clone();
                return Some(Output::Persist(Persist::Breaker { worker, breaker }));
            }
            return self.poll_output();
        }
        let worker = self.dirty_flags.pop_first()?;
        let flags = self.flags(&worker);
        Some(Output::Persist(Persist::Flags { worker, flags }))
    }

    /// Persist every lazily changed breaker with the next outputs (shutdown).
    pub fn flush_lazy(&mut self, now_ms: u64) {
        self.dirty_breakers.append(&mut self.lazy_breakers);
        self.last_lazy_flush_ms = now_ms;
    }

    /// A finished job: count it and emit a `build.fallback` event for each
    /// worker it left.
    pub fn handle_job(&mut self, now_ms: u64, job: &JobReport) {
        let to = job.worker.clone().unwrap_or_else(|| "local".into());
        let placement = if job.worker.is_some() {
            Placement::Remote
        } else {
            Placement::Local
        };
        self.metrics.count_build(job.outcome, placement);
        for (i, fo) in job.failovers.iter().enumerate() {
            let next = job
                .failovers
                .get(i + 1)
                .map(|n| n.worker.clone())
                .unwrap_or_else(|| to.clone());
            self.emit(
                Event::BuildFallback {
                    worker: fo.worker.clone(),
                    reason: fo.reason.clone(),
                    to: next,
                    kind: fo.kind,
                },
                now_ms,
            );
        }
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
                    circuit: CircuitReport::of(self.breakers.get(&w.id), &self.config, now_ms),
                    last_build: self.last_build_ms.get(&w.id).map(|t| rfc3339(*t)),
                    latency_ms: self.latency(&w.id),
                    capabilities: self.caps.get(&w.id).cloned(),
                }
            })
            .collect();
        let mut leases: Vec<_> = self.leases.values().collect();
        leases.sort_by_key(|l| l.since_ms);
        let mut queue: Vec<_> = self.waiting.values().collect();
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
        self.selector.queue_len()
    }

    /// Leases held now.
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// Leases held now on `id`.
    pub fn leases_on(&self, id: &str) -> usize {
        self.leases.values().filter(|l| l.worker == id).count()
    }

    pub fn used(&self, id: &str) -> u32 {
        self.selector.used(id)
    }
}

/// Whether `id`'s breaker lets a build through. With the team's breakers
/// deciding, only a closed circuit does: the team's one half-open probe is
/// the prober's, on the team's permit.
fn admits(
    breakers: &HashMap<String, Breaker>,
    cfg: &crate::breaker::BreakerConfig,
    id: &str,
    now_ms: u64,
    team: bool,
) -> bool {
    breakers.get(id).is_some_and(|b| {
        if team {
            b.state == State::Closed
        } else {
            b.can_admit(cfg, now_ms)
        }
    })
}

fn selection_request(r: &LeaseRequest) -> select::LeaseRequest {
    select::LeaseRequest {
        project: r.project.clone(),
        worker: r.worker.clone(),
        exclude: r.exclude.clone(),
        needs: r.needs.clone(),
    }
}
