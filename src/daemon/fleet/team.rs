//! The core's side of a team link (`[team]`): while the team's Redis
//! answers, each local breaker mirrors the team's breaker of that worker.
//!
//! The core stays pure: what the team's breaker must do is an
//! [`Output::Team`] ([`TeamOp`]); the shell runs it in Redis and answers with
//! [`Fleet::adopt_team_breaker`], [`Fleet::team_probe_answer`], or, when
//! Redis did not answer, [`Fleet::team_unavailable`], which applies the same
//! operation to the local breaker (fail-open: no outcome is lost). While the
//! link is down the local breakers decide as without a team; the circuits
//! opened meanwhile are reported when it is back ([`Fleet::team_rejoin`]).
//!
//! With the team connected only a closed circuit admits builds: the one
//! half-open probe of the whole team belongs to the daemon that got the
//! team's probe permit ([`TeamOp::Admit`]).

use super::{Fleet, Output, ProbeJob};
use crate::breaker::{Breaker, Outcome, Permit, State, Transition};
use crate::config::Config;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the team's shared breaker of `worker` must do.
#[derive(Debug, Clone, PartialEq)]
pub enum TeamOp {
    /// Count a lease's or a probe's outcome.
    Record {
        worker: String,
        permit: Permit,
        outcome: Outcome,
    },
    /// Give back an unused probe permit.
    Abandon { worker: String, permit: Permit },
    /// A cooldown ended: ask for the team's probe permit (one daemon of the
    /// team gets it; the others hear the result).
    Admit { worker: String },
    /// An operator's reset.
    Reset { worker: String },
    /// The link is back: report a circuit opened here while it was down
    /// (`opened_away`), then take the team's state; a team that lost its
    /// state (Redis restarted empty) takes `local`.
    Merge {
        worker: String,
        local: Box<Breaker>,
        opened_away: Option<(u32, String)>,
    },
}

impl TeamOp {
    pub fn worker(&self) -> &str {
        match self {
            TeamOp::Record { worker, .. }
            | TeamOp::Abandon { worker, .. }
            | TeamOp::Admit { worker }
            | TeamOp::Reset { worker }
            | TeamOp::Merge { worker, .. } => worker,
        }
    }
}

/// What the core knows of the team link.
#[derive(Debug, Default)]
pub(super) struct TeamView {
    /// Whether the team's breakers decide now.
    connected: bool,
    /// Circuits opened here while the link was down: worker -> (failures, reason).
    opened_away: BTreeMap<String, (u32, String)>,
    /// Workers whose probe permit was asked for and not yet answered.
    asking: BTreeSet<String>,
    /// Probes running here on a team permit.
    probing: BTreeSet<String>,
    /// When to ask again for a worker another daemon holds the permit of
    /// (its holder may die: the permit's time to live ends then).
    retry_at: HashMap<String, u64>,
    /// Workers whose shared slots are all leased, until the first lease
    /// expires (unless a release is heard first).
    full_until: HashMap<String, u64>,
}

/// How long a team probe permit lives: past the probe's own time limit, so
/// only a daemon that died while probing loses it.
pub fn probe_permit_ttl_ms(config: &Config) -> u64 {
    (config.ssh.connect_timeout_secs * 2 + 15) * 1000
}

/// How long to wait before asking again when the team says a cooldown has
/// not ended yet (clocks of two machines differ a little).
const OPEN_RETRY_MS: u64 = 1_000;

impl Fleet {
    /// Whether the team's breakers decide now.
    pub fn team_connected(&self) -> bool {
        self.team.as_ref().is_some_and(|t| t.connected)
    }

    /// Follow the configuration: a `[team]` section gives the core a team
    /// view (disconnected until the shell says the link works).
    pub(super) fn configure_team(&mut self) {
        match (self.config.team.link().is_some(), self.team.is_some()) {
            (true, false) => self.team = Some(TeamView::default()),
            (false, true) => self.team = None,
            _ => {}
        }
    }

    /// The link works (at start, or again after an outage): merge every
    /// worker's breaker with the team's, then follow the team.
    pub fn team_rejoin(&mut self, now_ms: u64) {
        let Some(team) = self.team.as_mut() else {
            return;
        };
        team.connected = true;
        team.asking.clear();
        team.retry_at.clear();
        let mut away = std::mem::take(&mut team.opened_away);
        let ids: Vec<String> = self.config.workers.iter().map(|w| w.id.clone()).collect();
        for worker in ids {
            let Some(local) = self.breakers.get(&worker) else {
                continue;
            };
            let op = TeamOp::Merge {
                opened_away: away.remove(&worker),
                local: Box::new(local.clone()),
                worker,
            };
            self.outputs.push_back(Output::Team(op));
        }
        self.probe_check = true;
        self.serve_waiters(now_ms);
    }

    /// Redis did not answer `op`: decide locally from now on, and apply `op`
    /// to the local breaker so its outcome still counts.
    pub fn team_unavailable(&mut self, now_ms: u64, op: TeamOp) {
        self.team_lost(now_ms);
        if let Some(team) = self.team.as_mut() {
            team.asking.remove(op.worker());
            team.probing.remove(op.worker());
        }
        let cfg = self.config.circuit.clone();
        match op {
            TeamOp::Record {
                worker,
                permit,
                outcome,
            } => {
                if let Some(b) = self.breakers.get_mut(&worker) {
                    let t = b.record(&cfg, now_ms, permit, outcome);
                    self.mark_breaker(&worker);
                    self.note_transition(&worker, t, true, now_ms);
                }
            }
            TeamOp::Abandon { worker, permit } => {
                if let Some(b) = self.breakers.get_mut(&worker) {
                    b.abandon(permit);
                    self.mark_breaker(&worker);
                }
            }
            // Reset was applied here already; an unanswered merge or permit
            // request leaves the local breaker deciding.
            TeamOp::Admit { .. } | TeamOp::Reset { .. } | TeamOp::Merge { .. } => {}
        }
        self.probe_check = true;
        self.serve_waiters(now_ms);
    }

    /// Redis did not answer: decide with the local breakers and slots.
    pub fn team_lost(&mut self, now_ms: u64) {
        let Some(team) = self.team.as_mut() else {
            return;
        };
        team.connected = false;
        let had_full = !team.full_until.is_empty();
        team.full_until.clear();
        if had_full {
            self.selector.reconfigure(self.worker_slots());
            self.serve_waiters(now_ms);
        }
        self.probe_check = true;
    }

    /// The team says every shared slot of the worker of `lease` (just
    /// granted here) is leased, until `until_ms` unless one is released:
    /// take the lease back and count the worker as full here too, so the
    /// request goes to another worker or waits in this daemon's queue.
    pub fn team_slot_full(&mut self, now_ms: u64, lease: u64, until_ms: u64) {
        let Some(worker) = self.leases.get(&lease).map(|l| l.worker.clone()) else {
            return;
        };
        let Some(team) = self.team.as_mut() else {
            return;
        };
        team.full_until.insert(worker, until_ms);
        self.selector.reconfigure(self.worker_slots());
        self.handle_abandon(now_ms, lease);
    }

    /// A shared slot of `id` was released somewhere in the team: waiters
    /// may try it again.
    pub fn team_slot_freed(&mut self, now_ms: u64, id: &str) {
        if self
            .team
            .as_mut()
            .is_some_and(|t| t.full_until.remove(id).is_some())
        {
            self.selector.reconfigure(self.worker_slots());
            self.serve_waiters(now_ms);
        }
    }

    /// Whether the team said every shared slot of `id` is leased.
    pub(super) fn team_full(&self, id: &str) -> bool {
        self.team
            .as_ref()
            .is_some_and(|t| t.full_until.contains_key(id))
    }

    /// Forget "full" marks whose first lease has expired by now (a holder
    /// that died gives its slot back then, never earlier).
    pub(super) fn expire_team_full(&mut self, now_ms: u64) {
        let Some(team) = self.team.as_mut() else {
            return;
        };
        let before = team.full_until.len();
        team.full_until.retain(|_, until| *until > now_ms);
        if team.full_until.len() != before {
            self.selector.reconfigure(self.worker_slots());
        }
    }

    /// The earliest end of a "full" mark.
    pub(super) fn next_team_full_end(&self) -> Option<u64> {
        self.team.as_ref()?.full_until.values().copied().min()
    }

    /// Take the team's state of `id`'s breaker. `transition` is the one this
    /// daemon's operation caused (its event is emitted here; other daemons'
    /// transitions reach the followers from the team's event stream).
    pub fn adopt_team_breaker(
        &mut self,
        now_ms: u64,
        id: &str,
        breaker: Breaker,
        transition: Option<Transition>,
    ) {
        let Some(local) = self.breakers.get_mut(id) else {
            return;
        };
        let same_state = local.state == breaker.state && local.epoch == breaker.epoch;
        let changed = *local != breaker;
        *local = breaker;
        if transition.is_some() || (changed && !same_state) {
            self.mark_breaker(id);
        } else if changed {
            // Only counters moved: saved with the next lazy flush.
            self.lazy_breakers.insert(id.to_string());
        }
        self.note_transition(id, transition, true, now_ms);
        self.serve_waiters(now_ms);
    }

    /// The team answered a probe permit request: probe with the permit, or
    /// wait for the daemon that holds it.
    pub fn team_probe_answer(
        &mut self,
        now_ms: u64,
        id: &str,
        breaker: Breaker,
        transition: Option<Transition>,
        permit: Option<Permit>,
    ) {
        let ttl = probe_permit_ttl_ms(&self.config);
        let state = breaker.state;
        self.adopt_team_breaker(now_ms, id, breaker, transition);
        let Some(team) = self.team.as_mut() else {
            return;
        };
        team.asking.remove(id);
        match permit {
            Some(permit) if team.connected => {
                team.probing.insert(id.to_string());
                team.retry_at.remove(id);
                self.probing.insert(id.to_string());
                self.outputs.push_back(Output::StartProbe(ProbeJob {
                    worker: id.to_string(),
                    permit,
                }));
            }
            Some(permit) => {
                // The link went down meanwhile: give the permit back.
                self.outputs.push_back(Output::Team(TeamOp::Abandon {
                    worker: id.to_string(),
                    permit,
                }));
            }
            None => {
                let wait = if state == State::HalfOpen {
                    ttl
                } else {
                    OPEN_RETRY_MS
                };
                team.retry_at.insert(id.to_string(), now_ms + wait);
            }
        }
    }

    /// The team granted an operator's probe (`rch workers probe`): run it
    /// on the team's permit.
    pub fn team_probe_now(
        &mut self,
        now_ms: u64,
        id: &str,
        breaker: Breaker,
        transition: Option<Transition>,
        permit: Permit,
    ) -> ProbeJob {
        self.adopt_team_breaker(now_ms, id, breaker, transition);
        if let Some(team) = self.team.as_mut() {
            team.probing.insert(id.to_string());
            team.retry_at.remove(id);
        }
        self.probing.insert(id.to_string());
        ProbeJob {
            worker: id.to_string(),
            permit,
        }
    }

    /// A probe's result (or its abandonment) on a team permit: the team's
    /// breaker counts it. `None`: the probe was local.
    pub(super) fn team_probe_op(
        &mut self,
        id: &str,
        permit: Permit,
        outcome: Option<Outcome>,
    ) -> Option<TeamOp> {
        let team = self.team.as_mut()?;
        if !team.probing.remove(id) {
            return None;
        }
        let worker = id.to_string();
        Some(match outcome {
            Some(outcome) => TeamOp::Record {
                worker,
                permit,
                outcome,
            },
            None => TeamOp::Abandon { worker, permit },
        })
    }

    /// Remember a circuit opened while the team was out of reach.
    pub(super) fn note_opened_away(&mut self, id: &str, t: &Transition) {
        if let (Some(team), Transition::Opened { failures, reason }) = (self.team.as_mut(), t) {
            if !team.connected {
                team.opened_away
                    .insert(id.to_string(), (*failures, reason.clone()));
            }
        }
    }

    /// With the team connected: ask for the probe permit of every worker
    /// whose cooldown ended (or whose half-open probe nobody here runs, once
    /// the holder's permit may have died).
    pub(super) fn ask_team_probes(&mut self, now_ms: u64) {
        let ids: Vec<String> = self.config.workers.iter().map(|w| w.id.clone()).collect();
        for id in ids {
            if !self.is_enabled(&id) {
                continue;
            }
            if self.team_due_at(&id).is_some_and(|t| t <= now_ms) {
                if let Some(team) = self.team.as_mut() {
                    team.asking.insert(id.clone());
                }
                self.outputs
                    .push_back(Output::Team(TeamOp::Admit { worker: id }));
            }
        }
    }

    /// When `id` wants a team probe permit, with the team connected.
    fn team_due_at(&self, id: &str) -> Option<u64> {
        let team = self.team.as_ref()?;
        if team.asking.contains(id) || self.probing.contains(id) {
            return None;
        }
        let b = self.breakers.get(id)?;
        let retry = team.retry_at.get(id).copied().unwrap_or(0);
        match b.state {
            State::Closed => None,
            State::Open => {
                let cooldown = self.config.circuit.open_cooldown_secs * 1000;
                let end = b.opened_at_ms.unwrap_or(b.since_ms) + cooldown;
                Some(end.max(retry))
            }
            State::HalfOpen => Some(retry),
        }
    }

    /// The earliest time a team probe permit is due (team connected).
    pub(super) fn next_team_probe(&self) -> Option<u64> {
        self.config
            .workers
            .iter()
            .filter(|w| self.is_enabled(&w.id))
            .filter_map(|w| self.team_due_at(&w.id))
            .min()
    }
}
