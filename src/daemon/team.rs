//! The shell's side of a team link (`[team]`): carries out the core's
//! [`TeamOp`]s on the team's Redis ([`crate::team`]) and feeds the answers
//! back to the core; follows what the rest of the team does.
//!
//! - Every operation runs in order on one task, so the release path of a
//!   build never waits for Redis.
//! - A shared breaker that another daemon changed is read and adopted
//!   (a pub/sub notice, never polling).
//! - This daemon's events go to the team's capped stream; the other
//!   daemons' events go to this daemon's followers (`rch events --follow`)
//!   with their origin. The local SQLite history keeps this daemon's own.
//! - When Redis does not answer, the core decides with its local breakers
//!   ([`Fleet::team_unavailable`]); when it answers again the core merges
//!   ([`Fleet::team_rejoin`]).
//!
//! [`Fleet::team_unavailable`]: super::fleet::Fleet::team_unavailable
//! [`Fleet::team_rejoin`]: super::fleet::Fleet::team_rejoin

use super::fleet::{probe_permit_ttl_ms, TeamOp};
use super::Shared;
use crate::breaker::BreakerConfig;
use crate::config::Config;
use crate::state::events::EventRecord;
use crate::team::{BreakerOp, BreakerReply, Health, Notice, Team, Unavailable};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Work for the team task, in the order the core produced it.
pub enum Work {
    Op(TeamOp),
    /// One of this daemon's events, for the team's stream.
    Publish(EventRecord),
    /// Give a shared slot back (and wake the team's waiters).
    ReleaseSlot {
        worker: String,
        token: String,
    },
}

/// The team link of a daemon with `[team]`.
pub struct TeamLink {
    pub team: Arc<Team>,
    pub work: mpsc::UnboundedSender<Work>,
    /// Shared slots this daemon's leases hold: lease -> worker.
    held: Mutex<HashMap<u64, String>>,
}

/// What became of a lease's shared slot.
pub enum SlotTake {
    /// Held (or no team deciding now: local slots only).
    Held,
    /// Every shared slot of the worker is leased, until this time unless one
    /// is released.
    Full { until_ms: u64 },
}

/// The team link of a configuration, if it has one (it connects lazily).
pub fn open(config: &Config) -> Option<(TeamLink, mpsc::UnboundedReceiver<Work>)> {
    let (url, name) = config.team.link()?;
    let timeout = Duration::from_millis(config.team.timeout_ms);
    match Team::new(url, name, timeout) {
        Ok(team) => {
            let (work, rx) = mpsc::unbounded_channel();
            let held = Mutex::new(HashMap::new());
            Some((TeamLink { team, work, held }, rx))
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "team link not started; using local breakers");
            None
        }
    }
}

/// Reach the team (bounded by `team.timeout_ms`) and, when it answers, merge
/// before the first build is served; then run the team task until the
/// daemon stops.
pub async fn start(
    shared: Arc<Shared>,
    team: Arc<Team>,
    work: mpsc::UnboundedReceiver<Work>,
) -> tokio::task::JoinHandle<()> {
    let notices = team.notices();
    team.start(shared.now_ms()).await;
    if team.health() == Health::Connected {
        shared.with_fleet(|f, now| f.team_rejoin(now));
    }
    tokio::spawn(renew_slots(shared.clone()));
    tokio::spawn(run(shared, team, work, notices))
}

async fn run(
    shared: Arc<Shared>,
    team: Arc<Team>,
    mut work: mpsc::UnboundedReceiver<Work>,
    mut notices: broadcast::Receiver<Notice>,
) {
    loop {
        tokio::select! {
            item = work.recv() => match item {
                Some(Work::Op(op)) => carry_out(&shared, &team, op).await,
                Some(Work::Publish(event)) => publish(&shared, &team, &event).await,
                Some(Work::ReleaseSlot { worker, token }) => {
                    let _ = team.release_slot(&worker, &token, shared.now_ms()).await;
                }
                None => return,
            },
            notice = notices.recv() => match notice {
                Ok(Notice::BreakerChanged(worker)) => refresh(&shared, &team, &worker).await,
                Ok(Notice::SlotFreed(worker)) => {
                    shared.with_fleet(|f, now| f.team_slot_freed(now, &worker));
                }
                Ok(Notice::Event(event)) => forward(&shared, event),
                Ok(Notice::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if team.health() == Health::Connected {
                        shared.with_fleet(|f, now| f.team_rejoin(now));
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// The name of this daemon's probe permit for `worker`.
fn token(team: &Team, worker: &str) -> String {
    format!("{}/{worker}", team.origin())
}

async fn breaker(
    shared: &Shared,
    team: &Team,
    worker: &str,
    cfg: &BreakerConfig,
    op: BreakerOp,
) -> Result<BreakerReply, Unavailable> {
    team.breaker(worker, cfg, op, shared.now_ms()).await
}

/// Run one of the core's operations on the team's breaker; answer the core.
async fn carry_out(shared: &Shared, team: &Team, op: TeamOp) {
    let (cfg, ttl) =
        shared.with_fleet(|f, _| (f.config().circuit.clone(), probe_permit_ttl_ms(f.config())));
    let worker = op.worker().to_string();
    let answer = match &op {
        TeamOp::Record {
            permit, outcome, ..
        } => {
            let call = BreakerOp::Record {
                permit: *permit,
                token: token(team, &worker),
                outcome: outcome.clone(),
            };
            breaker(shared, team, &worker, &cfg, call).await
        }
        TeamOp::Abandon { permit, .. } => {
            let call = BreakerOp::Abandon {
                permit: *permit,
                token: token(team, &worker),
            };
            breaker(shared, team, &worker, &cfg, call).await
        }
        TeamOp::Admit { .. } => {
            let call = BreakerOp::Admit {
                token: token(team, &worker),
                permit_ttl_ms: ttl,
            };
            breaker(shared, team, &worker, &cfg, call).await
        }
        TeamOp::Reset { .. } => breaker(shared, team, &worker, &cfg, BreakerOp::Reset).await,
        TeamOp::Merge {
            local, opened_away, ..
        } => merge(shared, team, &worker, &cfg, local, opened_away.clone()).await,
    };
    match answer {
        Ok(reply) => shared.with_fleet(|f, now| match op {
            TeamOp::Admit { .. } => {
                let permit = reply.admission.and_then(Result::ok);
                f.team_probe_answer(now, &worker, reply.breaker, reply.transition, permit)
            }
            _ => f.adopt_team_breaker(now, &worker, reply.breaker, reply.transition),
        }),
        Err(Unavailable) => shared.with_fleet(|f, now| f.team_unavailable(now, op)),
    }
}

/// Report a circuit opened here while away, then take the team's state (a
/// team without state for this worker takes ours).
async fn merge(
    shared: &Shared,
    team: &Team,
    worker: &str,
    cfg: &BreakerConfig,
    local: &crate::breaker::Breaker,
    opened_away: Option<(u32, String)>,
) -> Result<BreakerReply, Unavailable> {
    let seeded = breaker(
        shared,
        team,
        worker,
        cfg,
        BreakerOp::Seed(Box::new(local.clone())),
    )
    .await?;
    let Some((failures, reason)) = opened_away else {
        return Ok(BreakerReply {
            transition: None,
            ..seeded
        });
    };
    tracing::info!(worker = %worker, "reporting a circuit opened while the team was unreachable");
    let mut reported = breaker(
        shared,
        team,
        worker,
        cfg,
        BreakerOp::ReportOpen { failures, reason },
    )
    .await?;
    // The event of this opening was emitted when it happened here.
    reported.transition = None;
    Ok(reported)
}

/// Another daemon changed `worker`'s shared breaker: take its state.
async fn refresh(shared: &Shared, team: &Team, worker: &str) {
    let (known, cfg) = shared.with_fleet(|f, _| {
        (
            f.team_connected() && f.known(worker).is_ok(),
            f.config().circuit.clone(),
        )
    });
    if !known {
        return;
    }
    if let Ok(reply) = breaker(shared, team, worker, &cfg, BreakerOp::Get).await {
        shared.with_fleet(|f, now| f.adopt_team_breaker(now, worker, reply.breaker, None));
    }
}

async fn publish(shared: &Shared, team: &Team, event: &EventRecord) {
    let Ok(value) = serde_json::to_value(event) else {
        return;
    };
    let _ = team.publish_event(&value, shared.now_ms()).await;
}

/// Another daemon's event, to this daemon's followers (not stored here).
fn forward(shared: &Shared, event: serde_json::Value) {
    match serde_json::from_value::<EventRecord>(event) {
        Ok(record) => {
            let _ = shared.events.send(record);
        }
        Err(e) => tracing::debug!(error = %e, "unreadable team event skipped"),
    }
}

/// An operator's probe of `worker` (`rch workers probe`), through the team's
/// breaker: an open worker skips its cooldown there, and the result counts
/// for the team. `None` when the team does not decide now (probe locally).
pub async fn probe_now(
    shared: &Shared,
    worker: &str,
) -> Option<Result<super::fleet::ProbeJob, String>> {
    let link = shared.team.as_ref()?;
    let (cfg, ttl) = shared.with_fleet(|f, _| {
        (f.team_connected() && f.known(worker).is_ok())
            .then(|| (f.config().circuit.clone(), probe_permit_ttl_ms(f.config())))
    })?;
    let call = BreakerOp::ProbeNow {
        token: token(&link.team, worker),
        permit_ttl_ms: ttl,
    };
    let reply = match breaker(shared, &link.team, worker, &cfg, call).await {
        Ok(reply) => reply,
        Err(Unavailable) => {
            shared.with_fleet(|f, now| {
                f.team_unavailable(
                    now,
                    TeamOp::Admit {
                        worker: worker.to_string(),
                    },
                )
            });
            return None;
        }
    };
    Some(shared.with_fleet(|f, now| match reply.admission {
        Some(Ok(permit)) => {
            Ok(f.team_probe_now(now, worker, reply.breaker, reply.transition, permit))
        }
        Some(Err(refusal)) => {
            f.adopt_team_breaker(now, worker, reply.breaker, reply.transition);
            Err(refusal.reason)
        }
        None => Err("no answer from the team".into()),
    }))
}

/// The name of a lease's shared slot.
fn slot_token(team: &Team, lease: u64) -> String {
    format!("{}/lease-{lease}", team.origin())
}

/// Take the shared slot of a lease just granted here (bounded by
/// `team.timeout_ms`; Redis unreachable: local slots only).
pub async fn take_slot(shared: &Shared, grant: &super::fleet::Grant) -> SlotTake {
    let Some(link) = shared.team.as_ref() else {
        return SlotTake::Held;
    };
    if !shared.with_fleet(|f, _| f.team_connected()) {
        return SlotTake::Held;
    }
    let worker = &grant.worker.id;
    let token = slot_token(&link.team, grant.lease);
    let taken = link
        .team
        .acquire_slot(worker, grant.worker.slots, &token, shared.now_ms())
        .await;
    match taken {
        Ok(crate::team::SlotAnswer::Taken { .. }) => {
            held(link).insert(grant.lease, worker.clone());
            SlotTake::Held
        }
        Ok(crate::team::SlotAnswer::Full { until_ms }) => SlotTake::Full { until_ms },
        Err(Unavailable) => {
            shared.with_fleet(|f, now| f.team_lost(now));
            SlotTake::Held
        }
    }
}

/// A lease ended here: give its shared slot back, if it holds one.
pub fn release_slot(shared: &Shared, lease: u64) {
    let Some(link) = shared.team.as_ref() else {
        return;
    };
    if let Some(worker) = held(link).remove(&lease) {
        let token = slot_token(&link.team, lease);
        let _ = link.work.send(Work::ReleaseSlot { worker, token });
    }
}

fn held(link: &TeamLink) -> std::sync::MutexGuard<'_, HashMap<u64, String>> {
    link.held.lock().unwrap_or_else(|e| e.into_inner())
}

/// Renew the shared slots of running builds, so only a crashed daemon's
/// slots expire.
async fn renew_slots(shared: Arc<Shared>) {
    let Some(link) = shared.team.as_ref() else {
        return;
    };
    let every = Duration::from_millis(crate::team::LEASE_RENEW_MS);
    loop {
        tokio::time::sleep(every).await;
        let leases: Vec<(u64, String)> = held(link).iter().map(|(l, w)| (*l, w.clone())).collect();
        for (lease, worker) in leases {
            let token = slot_token(&link.team, lease);
            let _ = link.team.renew_slot(&worker, &token, shared.now_ms()).await;
        }
    }
}
