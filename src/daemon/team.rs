//! The shell's side of a team link (`[team]`): carries out the core's
//! [`TeamOp`]s on the team's Redis ([`crate::team`]) and feeds the answers
//! back to the core; follows what the rest of the team does.
//!
//! - Breaker operations run in order on one task, so the release path of a
//!   build never waits for them; successes that queue up behind one in
//!   flight are counted in one call.
//! - A success on a healthy breaker ([`Breaker::is_healthy`]: closed, no
//!   failure in its window) is held back up to [`SUCCESS_BATCH_MS`] and
//!   counted with the others held meanwhile, of every worker, in one call.
//!   The team's breaker counts them as if those builds had ended that much
//!   later; any other operation of this daemon is carried out after them,
//!   so this daemon's own results keep their order.
//! - Shared slots are outside that order: a lease takes its slot in one
//!   round trip before it is granted (never queued behind breaker work,
//!   which would leave slots held by builds that have ended). A slot given
//!   back goes along with this daemon's next slot call, or on its own after
//!   [`RELEASE_BATCH_MS`], whichever comes first: this daemon's next lease
//!   finds it free (its take releases it first, in the same script), the
//!   rest of the team at most that much later. Holding a slot longer never
//!   lets two builds share it.
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
//! [`Breaker::is_healthy`]: crate::breaker::Breaker::is_healthy

use super::fleet::{probe_permit_ttl_ms, TeamOp};
use super::Shared;
use crate::breaker::{BreakerConfig, Outcome, Permit};
use crate::config::Config;
use crate::state::events::EventRecord;
use crate::state::store::HeldLease;
use crate::team::{BreakerOp, BreakerReply, Health, Notice, SuccessBatch, Team, Unavailable};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Longest time a success on a healthy breaker waits to be counted with
/// others (see the module's comment): a busy daemon sends its successes in
/// one script call per this time instead of one per build.
pub const SUCCESS_BATCH_MS: u64 = 50;

/// Successes held back, in the order they came, and when they are due.
#[derive(Default)]
struct HeldSuccesses {
    batches: Vec<SuccessBatch>,
    due: Option<tokio::time::Instant>,
}

impl HeldSuccesses {
    fn add(&mut self, worker: &str, permit: Permit) {
        if let Some(b) = self
            .batches
            .iter_mut()
            .find(|b| b.worker == worker && b.permit == permit)
        {
            b.count += 1;
            return;
        }
        self.batches.push(SuccessBatch {
            worker: worker.to_string(),
            permit,
            count: 1,
        });
        self.due.get_or_insert_with(|| {
            tokio::time::Instant::now() + Duration::from_millis(SUCCESS_BATCH_MS)
        });
    }
}

/// Longest time a slot given back here waits for this daemon's next slot
/// call to go along with (see the module's comment).
pub const RELEASE_BATCH_MS: u64 = 20;

/// Work for the team task, in the order the core produced it.
pub enum Work {
    Op(TeamOp),
    /// One of this daemon's events, for the team's stream.
    Publish(EventRecord),
}

/// The team link of a daemon with `[team]`.
pub struct TeamLink {
    pub team: Arc<Team>,
    pub work: mpsc::UnboundedSender<Work>,
    /// Names this daemon's shared slots: the same across its restarts.
    slot_owner: String,
    /// Shared slots this daemon's leases hold (or will hold again in Redis
    /// once it answers): lease -> (worker, token).
    held: Mutex<HashMap<u64, HeldSlot>>,
    /// Slots given back here, to release in Redis with the next slot call.
    released: Mutex<Vec<HeldSlot>>,
    /// Told when `released` gets its first slot: released alone if no
    /// call takes them along in time.
    release_due: tokio::sync::Notify,
    /// Slots whose release Redis did not answer: given back when it does.
    unreleased: Mutex<Vec<HeldSlot>>,
}

/// A shared slot held by one of this daemon's leases.
type HeldSlot = crate::team::Slot;

/// What became of a lease's shared slot.
pub enum SlotTake {
    /// Held (or no team deciding now: local slots only).
    Held,
    /// Every shared slot of the worker is leased, until this time unless one
    /// is released.
    Full { until_ms: u64 },
}

/// The team link of a configuration, if it has one (it connects lazily).
/// `socket` is the daemon's: one daemon at a time listens there, so it names
/// this daemon's slots across restarts.
pub fn open(
    config: &Config,
    socket: &std::path::Path,
) -> Option<(TeamLink, mpsc::UnboundedReceiver<Work>)> {
    let (url, name) = config.team.link()?;
    let timeout = Duration::from_millis(config.team.timeout_ms);
    match Team::new(url, name, timeout) {
        Ok(team) => {
            let (work, rx) = mpsc::unbounded_channel();
            let slot_owner = slot_owner(&team, socket);
            Some((
                TeamLink {
                    team,
                    work,
                    slot_owner,
                    held: Mutex::new(HashMap::new()),
                    released: Mutex::new(Vec::new()),
                    release_due: tokio::sync::Notify::new(),
                    unreleased: Mutex::new(Vec::new()),
                },
                rx,
            ))
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
        retake_slots(&shared).await;
    }
    tokio::spawn(renew_slots(shared.clone()));
    tokio::spawn(release_in_time(shared.clone()));
    tokio::spawn(run(shared, team, work, notices))
}

async fn run(
    shared: Arc<Shared>,
    team: Arc<Team>,
    mut work: mpsc::UnboundedReceiver<Work>,
    mut notices: broadcast::Receiver<Notice>,
) {
    // Work taken from the queue while gathering successes, not yet done.
    let mut next: Option<Work> = None;
    let mut held = HeldSuccesses::default();
    loop {
        if let Some(item) = next.take() {
            next = carry_out_work(&shared, &team, item, &mut work, &mut held).await;
            continue;
        }
        let due = held.due;
        tokio::select! {
            item = work.recv() => match item {
                Some(item) => next = carry_out_work(&shared, &team, item, &mut work, &mut held).await,
                None => {
                    count_held(&shared, &team, &mut held).await;
                    return;
                }
            },
            () = sleep_until(due), if due.is_some() => count_held(&shared, &team, &mut held).await,
            notice = notices.recv() => match notice {
                Ok(Notice::BreakerChanged(worker)) => refresh(&shared, &team, &worker).await,
                Ok(Notice::SlotFreed(worker)) => {
                    shared.with_fleet(|f, now| f.team_slot_freed(now, &worker));
                }
                Ok(Notice::Event(event)) => forward(&shared, event),
                Ok(Notice::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if team.health() == Health::Connected {
                        shared.with_fleet(|f, now| f.team_rejoin(now));
                        let shared = shared.clone();
                        tokio::spawn(async move { retake_slots(&shared).await });
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// The end of `due` (never, without one: that branch is disabled then).
async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Carry out one item of work; returns the item taken from the queue
/// after it, if any, for the caller to do next.
async fn carry_out_work(
    shared: &Shared,
    team: &Team,
    item: Work,
    work: &mut mpsc::UnboundedReceiver<Work>,
    held: &mut HeldSuccesses,
) -> Option<Work> {
    if let Work::Op(op) = &item {
        if let Some((worker, permit)) = ordinary_success(op) {
            if is_healthy(shared, worker) {
                held.add(worker, permit);
                return None;
            }
        }
        // Every other operation comes after the successes held before it.
        count_held(shared, team, held).await;
    }
    match item {
        Work::Op(op) => match ordinary_success(&op) {
            Some((worker, permit)) => {
                let (count, next) = gather_successes(work, worker, permit);
                if count > 1 {
                    record_successes(shared, team, op, count).await;
                } else {
                    carry_out(shared, team, op).await;
                }
                next
            }
            None => {
                carry_out(shared, team, op).await;
                None
            }
        },
        Work::Publish(event) => {
            publish(shared, team, &event).await;
            None
        }
    }
}

/// The worker and permit of a lease's success that is not a probe: such
/// results of one worker and epoch may be counted together.
fn ordinary_success(op: &TeamOp) -> Option<(&str, Permit)> {
    match op {
        TeamOp::Record {
            worker,
            permit,
            outcome: Outcome::Success,
        } if !permit.probe => Some((worker, *permit)),
        _ => None,
    }
}

/// Take from the queue the successes of `worker` in `permit`'s epoch that
/// follow (builds that ended while earlier work was in flight): how many in
/// all, with the first other item.
fn gather_successes(
    work: &mut mpsc::UnboundedReceiver<Work>,
    worker: &str,
    permit: Permit,
) -> (u32, Option<Work>) {
    let mut count = 1;
    while let Ok(item) = work.try_recv() {
        match &item {
            Work::Op(op) if ordinary_success(op) == Some((worker, permit)) => count += 1,
            _ => return (count, Some(item)),
        }
    }
    (count, None)
}

/// Count `count` successes like `op` on the team's breaker in one call.
async fn record_successes(shared: &Shared, team: &Team, op: TeamOp, count: u32) {
    let TeamOp::Record { worker, permit, .. } = op else {
        return;
    };
    let batch = SuccessBatch {
        worker,
        permit,
        count,
    };
    count_successes(shared, team, vec![batch]).await;
}

/// Whether `worker`'s breaker (the team's, as last heard) is healthy now.
fn is_healthy(shared: &Shared, worker: &str) -> bool {
    shared.with_fleet(|f, now| {
        f.breaker(worker)
            .is_some_and(|b| b.is_healthy(&f.config().circuit, now))
    })
}

/// Count the successes held back, if any, in one call.
async fn count_held(shared: &Shared, team: &Team, held: &mut HeldSuccesses) {
    held.due = None;
    let batches = std::mem::take(&mut held.batches);
    if !batches.is_empty() {
        count_successes(shared, team, batches).await;
    }
}

/// Count batches of successes on the team's breakers in one call and adopt
/// the answers; Redis unavailable: each success counts locally.
async fn count_successes(shared: &Shared, team: &Team, batches: Vec<SuccessBatch>) {
    let cfg = shared.with_fleet(|f, _| f.config().circuit.clone());
    match team.record_successes(&cfg, &batches, shared.now_ms()).await {
        Ok(replies) => shared.with_fleet(|f, now| {
            for (batch, reply) in batches.iter().zip(replies) {
                f.adopt_team_breaker(now, &batch.worker, reply.breaker, reply.transition);
            }
        }),
        Err(Unavailable) => shared.with_fleet(|f, now| {
            for batch in batches {
                let op = TeamOp::Record {
                    worker: batch.worker,
                    permit: batch.permit,
                    outcome: Outcome::Success,
                };
                for _ in 0..batch.count {
                    f.team_unavailable(now, op.clone());
                }
            }
        }),
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

/// What names this daemon's shared slots: its user and host, and its
/// socket (hashed: one daemon listens there at a time), so a restarted
/// daemon names the slots of the builds it restores as before.
fn slot_owner(team: &Team, socket: &std::path::Path) -> String {
    let user_host = team
        .origin()
        .rsplit_once(':')
        .map_or(team.origin(), |(uh, _)| uh);
    format!(
        "{user_host}/{:016x}",
        fnv1a(socket.as_os_str().as_encoded_bytes())
    )
}

/// FNV-1a: a hash that stays the same across builds of rch.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The name of a lease's shared slot: its owner, id and grant time (ids
/// start again after a restart; a new lease never renews an old one).
fn slot_token(link: &TeamLink, lease: u64, since_ms: u64) -> String {
    format!("{}/lease-{lease}-{since_ms}", link.slot_owner)
}

/// Take the shared slot of a lease just granted here (one round trip,
/// bounded by `team.timeout_ms`). Redis unreachable: local slots decide, and
/// the build's slot is taken in Redis when it answers again.
pub async fn take_slot(shared: &Shared, grant: &super::fleet::Grant) -> SlotTake {
    let Some(link) = shared.team.as_ref() else {
        return SlotTake::Held;
    };
    let slot = HeldSlot {
        worker: grant.worker.id.clone(),
        token: slot_token(link, grant.lease, grant.since_ms),
    };
    let released = std::mem::take(&mut *released(link));
    let taken = if shared.with_fleet(|f, _| f.team_connected()) {
        let now = shared.now_ms();
        let slots = grant.worker.slots;
        link.team
            .acquire_slot(&slot.worker, slots, &slot.token, &released, now)
            .await
    } else {
        Err(Unavailable)
    };
    if taken.is_err() {
        unreleased(link).extend(released);
    }
    match taken {
        Ok(crate::team::SlotAnswer::Full { until_ms }) => SlotTake::Full { until_ms },
        Ok(crate::team::SlotAnswer::Taken { .. }) => {
            held(link).insert(grant.lease, slot);
            SlotTake::Held
        }
        Err(Unavailable) => {
            held(link).insert(grant.lease, slot);
            shared.with_fleet(|f, now| f.team_lost(now));
            SlotTake::Held
        }
    }
}

/// A lease ended here: give its shared slot back, if it holds one, with
/// this daemon's next slot call (its next take finds it free) or on its
/// own within [`RELEASE_BATCH_MS`]. Never waits for Redis.
pub fn release_slot(shared: &Shared, lease: u64) {
    let Some(link) = shared.team.as_ref() else {
        return;
    };
    let removed = held(link).remove(&lease);
    let Some(slot) = removed else {
        return;
    };
    let mut released = released(link);
    released.push(slot);
    if released.len() == 1 {
        link.release_due.notify_one();
    }
}

/// Release in Redis, in one call, the slots no take went along with in
/// time; runs until the daemon stops.
async fn release_in_time(shared: Arc<Shared>) {
    let Some(link) = shared.team.as_ref() else {
        return;
    };
    loop {
        link.release_due.notified().await;
        tokio::time::sleep(Duration::from_millis(RELEASE_BATCH_MS)).await;
        send_released(&shared).await;
    }
}

/// Release in Redis now the slots given back here and not yet sent (also
/// when the daemon stops). Redis unavailable: sent when it answers again.
pub async fn send_released(shared: &Shared) {
    let Some(link) = shared.team.as_ref() else {
        return;
    };
    let slots = std::mem::take(&mut *released(link));
    if slots.is_empty() {
        return;
    }
    let sent = if shared.with_fleet(|f, _| f.team_connected()) {
        link.team.release_slots(&slots, shared.now_ms()).await
    } else {
        Err(Unavailable)
    };
    if sent.is_err() {
        unreleased(link).extend(slots);
    }
}

/// Release one shared slot in Redis; `false` when Redis did not take it.
async fn give_back(shared: &Shared, link: &TeamLink, slot: &HeldSlot) -> bool {
    let now = shared.now_ms();
    link.team
        .release_slot(&slot.worker, &slot.token, now)
        .await
        .is_ok()
}

/// Leases restored at start (their builds still run): their shared slots
/// are this daemon's to renew and give back, under the names the previous
/// daemon gave them.
pub fn restore(shared: &Shared, leases: &[(u64, HeldLease)]) {
    let Some(link) = shared.team.as_ref() else {
        return;
    };
    let mut held = held(link);
    for (lease, saved) in leases {
        let slot = HeldSlot {
            worker: saved.worker.clone(),
            token: slot_token(link, *lease, saved.since_ms),
        };
        held.insert(*lease, slot);
    }
}

/// Bring Redis up to date with this daemon's builds: after a restart (the
/// previous daemon's slots may have expired meanwhile) and whenever Redis
/// answers again (it may have lost them, or missed releases). Releases Redis
/// missed are sent first; then every running build's slot is held, whatever
/// the count (the builds run already). A build that ended meanwhile gets
/// its slot released again.
async fn retake_slots(shared: &Shared) {
    let Some(link) = shared.team.as_ref() else {
        return;
    };
    let missed = std::mem::take(&mut *unreleased(link));
    for (i, slot) in missed.iter().enumerate() {
        if !give_back(shared, link, slot).await {
            unreleased(link).extend(missed[i..].iter().cloned());
            return;
        }
    }
    let slots: Vec<(u64, HeldSlot)> = held(link).iter().map(|(l, s)| (*l, s.clone())).collect();
    for (lease, slot) in slots {
        let now = shared.now_ms();
        if link
            .team
            .restore_slot(&slot.worker, &slot.token, now)
            .await
            .is_err()
        {
            return;
        }
        if !held(link).contains_key(&lease) {
            let _ = link.team.release_slot(&slot.worker, &slot.token, now).await;
        }
    }
}

fn released(link: &TeamLink) -> std::sync::MutexGuard<'_, Vec<HeldSlot>> {
    link.released.lock().unwrap_or_else(|e| e.into_inner())
}

fn unreleased(link: &TeamLink) -> std::sync::MutexGuard<'_, Vec<HeldSlot>> {
    link.unreleased.lock().unwrap_or_else(|e| e.into_inner())
}

fn held(link: &TeamLink) -> std::sync::MutexGuard<'_, HashMap<u64, HeldSlot>> {
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
        let slots: Vec<HeldSlot> = held(link).values().cloned().collect();
        for slot in slots {
            let now = shared.now_ms();
            let _ = link.team.renew_slot(&slot.worker, &slot.token, now).await;
        }
    }
}
