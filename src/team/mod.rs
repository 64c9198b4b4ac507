//! A team's shared fleet: daemons with the same `[team] name` share one
//! breaker per worker, the workers' slots and their events through Redis.
//!
//! - [`url`]: the URL's shape, and the URL as it may be shown (password masked).
//! - [`link`]: the bounded, fail-open connection and its reconnect loop.
//! - [`listen`]: what other daemons did (state changes, freed slots, events).
//!
//! The breaker stays the pure state machine of [`crate::breaker`]: Redis
//! holds its serialized state and a Lua script applies the same transition
//! rules atomically. Slots are leases in a sorted set scored by expiry,
//! renewed while the build runs. Every key is `rch:{name}:...`; the braces
//! are a Redis Cluster hash tag, so one team's keys share a slot and a
//! script may touch several of them.
//!
//! Nothing here decides anything when Redis is unreachable: every call
//! returns [`Unavailable`] and the daemon uses its own breakers and slots.

pub mod link;
pub mod listen;
pub mod url;

use crate::breaker::{Breaker, BreakerConfig, Outcome, Permit, Refusal, Transition};
pub use link::{Health, Unavailable};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// How long a slot lease lives unless renewed; a crashed holder's slot comes
/// back after this, never earlier.
pub const LEASE_TTL_MS: u64 = 30_000;
/// How often a running build's lease is renewed.
pub const LEASE_RENEW_MS: u64 = 10_000;
/// Most team events kept in the stream.
pub const EVENTS_KEPT: usize = 10_000;

/// Environment variable holding the Redis password when the URL has none.
pub const ENV_PASSWORD: &str = "RCH_REDIS_PASSWORD";

/// An operation on a shared breaker (see `breaker.lua`).
#[derive(Debug, Clone)]
pub enum BreakerOp {
    /// Read the state.
    Get,
    /// `Breaker::try_admit`; `token` names a probe permit if one is granted.
    Admit { token: String, permit_ttl_ms: u64 },
    /// `Breaker::probe_now`.
    ProbeNow { token: String, permit_ttl_ms: u64 },
    /// `Breaker::record`.
    Record {
        permit: Permit,
        token: String,
        outcome: Outcome,
    },
    /// `Breaker::abandon`.
    Abandon { permit: Permit, token: String },
    /// `Breaker::tick`.
    Tick,
    /// `Breaker::reset`.
    Reset,
    /// Read the state; when the team has none (Redis restarted empty), this
    /// breaker becomes the team's.
    Seed(Box<Breaker>),
    /// This daemon opened the circuit while the team was out of reach: a
    /// closed team breaker opens; any other team state wins.
    ReportOpen { failures: u32, reason: String },
}

/// Successes of ordinary builds (not probes) of one worker and epoch,
/// counted together: the same as `count` calls of `Breaker::record` with a
/// success, at the time of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessBatch {
    pub worker: String,
    pub permit: Permit,
    pub count: u32,
}

/// What a breaker operation did.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerReply {
    pub breaker: Breaker,
    pub transition: Option<Transition>,
    /// For `Admit` and `ProbeNow`.
    pub admission: Option<Result<Permit, Refusal>>,
}

/// The answer to a shared slot request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAnswer {
    /// Taken; `held` leases on the worker now, this one included.
    Taken { held: u32 },
    /// Every slot is leased; the first lease expires at this time, unless renewed.
    Full { until_ms: u64 },
}

/// A shared slot lease: the worker and the lease's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub worker: String,
    pub token: String,
}

/// An operation of `slots.lua`.
#[derive(Debug, Clone, Copy)]
enum SlotOp {
    Take,
    Restore,
    Renew,
    Release,
    /// Only the releases sent along.
    None,
}

impl SlotOp {
    fn as_str(self) -> &'static str {
        match self {
            SlotOp::Take => "take",
            SlotOp::Restore => "restore",
            SlotOp::Renew => "renew",
            SlotOp::Release => "release",
            SlotOp::None => "none",
        }
    }
}

/// What other daemons of the team did, as heard by this one.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A worker's shared breaker changed state.
    BreakerChanged(String),
    /// A shared slot of a worker was released.
    SlotFreed(String),
    /// A team event from another daemon, with its `origin`.
    Event(serde_json::Value),
    /// Redis answers again after an outage (or this daemon's subscription
    /// was re-established): merge and refresh.
    Resync,
}

/// Redis key names of one team.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(name: &str) -> Keys {
        Keys {
            prefix: format!("rch:{{{name}}}"),
        }
    }
    pub fn breaker(&self, worker: &str) -> String {
        format!("{}:breaker:{worker}", self.prefix)
    }
    pub fn probes(&self, worker: &str) -> String {
        format!("{}:probes:{worker}", self.prefix)
    }
    pub fn slots(&self, worker: &str) -> String {
        format!("{}:slots:{worker}", self.prefix)
    }
    /// Set while a daemon waits for a slot of `worker`: the next release
    /// announces itself.
    pub fn waiting(&self, worker: &str) -> String {
        format!("{}:waiting:{worker}", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }
    /// The pub/sub channel of state changes and freed slots.
    pub fn changes(&self) -> String {
        format!("{}:changes", self.prefix)
    }
}

/// This daemon's handle on the team.
pub struct Team {
    name: String,
    shown_url: String,
    /// `user@host:pid`: where this daemon's events come from.
    origin: String,
    keys: Keys,
    link: Arc<link::Link>,
    client: redis::Client,
    breaker_script: redis::Script,
    slots_script: redis::Script,
    notices: broadcast::Sender<Notice>,
}

/// The team link as `rch status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamReport {
    pub name: String,
    /// The URL with any password masked.
    pub url: String,
    pub connected: bool,
    /// RFC 3339, while unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_since: Option<String>,
    pub origin: String,
}

impl Team {
    /// Set up the link to `url` for team `name` (lazily: this never waits
    /// for Redis). Call it inside the daemon's tokio runtime.
    pub fn new(url: &str, name: &str, timeout: Duration) -> anyhow::Result<Arc<Team>> {
        let shown_url = url::masked(url);
        // rediss:// needs a process-wide TLS crypto provider; installing it
        // again (a second team link, a test) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client =
            open_client(url).map_err(|e| anyhow::anyhow!("team redis URL {shown_url}: {e}"))?;
        let link = link::Link::new(client.clone(), timeout)
            .map_err(|e| anyhow::anyhow!("team redis {shown_url}: {e}"))?;
        Ok(Arc::new(Team {
            name: name.to_string(),
            shown_url,
            origin: origin(),
            keys: Keys::new(name),
            link,
            client,
            breaker_script: redis::Script::new(include_str!("breaker.lua")),
            slots_script: redis::Script::new(include_str!("slots.lua")),
            notices: broadcast::channel(1024).0,
        }))
    }

    /// Check the link once (bounded) and start the background tasks:
    /// reconnecting, and listening to the rest of the team.
    pub async fn start(self: &Arc<Self>, now_ms: u64) {
        match self.link.ping().await {
            Ok(()) => {
                tracing::info!(team = %self.name, url = %self.shown_url, "team redis connected")
            }
            Err(why) => self.link.start_down(now_ms, &why),
        }
        tokio::spawn(self.link.clone().keep_up());
        tokio::spawn(listen::changes(self.clone()));
        tokio::spawn(listen::events(self.clone()));
        let mut back = self.link.on_back();
        let notices = self.notices.clone();
        tokio::spawn(async move {
            while back.recv().await.is_ok() {
                let _ = notices.send(Notice::Resync);
            }
        });
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn health(&self) -> Health {
        self.link.health()
    }

    /// Hear what the rest of the team does.
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    pub(crate) fn notify(&self, notice: Notice) {
        let _ = self.notices.send(notice);
    }

    pub fn report(&self, rfc3339: impl Fn(u64) -> String) -> TeamReport {
        let health = self.health();
        TeamReport {
            name: self.name.clone(),
            url: self.shown_url.clone(),
            connected: health == Health::Connected,
            unavailable_since: match health {
                Health::Down { since_ms } => Some(rfc3339(since_ms)),
                Health::Connected => None,
            },
            origin: self.origin.clone(),
        }
    }

    /// Apply one operation to `worker`'s shared breaker, atomically.
    pub async fn breaker(
        &self,
        worker: &str,
        cfg: &BreakerConfig,
        op: BreakerOp,
        now_ms: u64,
    ) -> Result<BreakerReply, Unavailable> {
        let (name, args) = op_args(&op);
        let cfg_json = serde_json::to_string(cfg).unwrap_or_default();
        let script = &self.breaker_script;
        let keys = (self.keys.breaker(worker), self.keys.probes(worker));
        let channel = self.keys.changes();
        let message = format!("breaker:{worker}");
        let raw: String = self
            .link
            .call(now_ms, |mut conn| async move {
                script
                    .key(&keys.0)
                    .key(&keys.1)
                    .arg(name)
                    .arg(now_ms)
                    .arg(cfg_json)
                    .arg(args.to_string())
                    .arg(channel)
                    .arg(message)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        parse_reply(&raw).map_err(|e| {
            tracing::warn!(error = %e, "unreadable breaker reply from team redis");
            Unavailable
        })
    }

    /// Count batches of successes, of one or several workers, in one call
    /// (one round trip, one script run): the replies in the batches' order.
    pub async fn record_successes(
        &self,
        cfg: &BreakerConfig,
        batches: &[SuccessBatch],
        now_ms: u64,
    ) -> Result<Vec<BreakerReply>, Unavailable> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let cfg_json = serde_json::to_string(cfg).unwrap_or_default();
        let args: Vec<serde_json::Value> = batches
            .iter()
            .map(|b| {
                serde_json::json!({
                    "permit": b.permit,
                    "count": b.count,
                    "message": format!("breaker:{}", b.worker),
                })
            })
            .collect();
        let args = serde_json::Value::Array(args).to_string();
        let mut invocation = self.breaker_script.prepare_invoke();
        for b in batches {
            invocation
                .key(self.keys.breaker(&b.worker))
                .key(self.keys.probes(&b.worker));
        }
        invocation
            .arg("record_successes")
            .arg(now_ms)
            .arg(cfg_json)
            .arg(args)
            .arg(self.keys.changes())
            .arg("");
        let invocation = &invocation;
        let raw: String = self
            .link
            .call(now_ms, |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        let parsed = serde_json::from_str::<Vec<RawReply>>(&raw).and_then(|replies| {
            replies
                .into_iter()
                .map(reply_from)
                .collect::<serde_json::Result<Vec<_>>>()
        });
        match parsed {
            Ok(replies) if replies.len() == batches.len() => Ok(replies),
            Ok(_) => {
                tracing::warn!("team redis answered a batch of successes with the wrong count");
                Err(Unavailable)
            }
            Err(e) => {
                tracing::warn!(error = %e, "unreadable breaker reply from team redis");
                Err(Unavailable)
            }
        }
    }

    /// Take a slot of `worker` (which has `slots`) as a lease named `token`,
    /// after giving back the slots `released` (in the same call).
    pub async fn acquire_slot(
        &self,
        worker: &str,
        slots: u32,
        token: &str,
        released: &[Slot],
        now_ms: u64,
    ) -> Result<SlotAnswer, Unavailable> {
        let (taken, n) = self
            .slots(SlotOp::Take, worker, slots, token, released, now_ms)
            .await?;
        Ok(if taken == 1 {
            SlotAnswer::Taken { held: n as u32 }
        } else {
            SlotAnswer::Full { until_ms: n }
        })
    }

    /// Hold a slot of `worker` for a build that already runs (restored
    /// after a daemon restart, or re-taken after Redis lost its leases),
    /// whatever the count: it cannot be stopped now, and no one else may
    /// take its slot meanwhile.
    pub async fn restore_slot(
        &self,
        worker: &str,
        token: &str,
        now_ms: u64,
    ) -> Result<(), Unavailable> {
        self.slots(SlotOp::Restore, worker, 0, token, &[], now_ms)
            .await
            .map(drop)
    }

    /// Push a held lease's expiry out by another [`LEASE_TTL_MS`].
    pub async fn renew_slot(
        &self,
        worker: &str,
        token: &str,
        now_ms: u64,
    ) -> Result<(), Unavailable> {
        self.slots(SlotOp::Renew, worker, 0, token, &[], now_ms)
            .await
            .map(drop)
    }

    /// Give a slot back; the team hears of it only if a daemon was refused
    /// a slot of this worker meanwhile.
    pub async fn release_slot(
        &self,
        worker: &str,
        token: &str,
        now_ms: u64,
    ) -> Result<(), Unavailable> {
        self.slots(SlotOp::Release, worker, 0, token, &[], now_ms)
            .await
            .map(drop)
    }

    /// Give several slots back in one call; the team hears of each only if
    /// a daemon was refused a slot of its worker meanwhile.
    pub async fn release_slots(&self, released: &[Slot], now_ms: u64) -> Result<(), Unavailable> {
        let Some(first) = released.first() else {
            return Ok(());
        };
        // The first pair of keys names the first release's worker (a call
        // declares the keys it touches); the operation itself does nothing.
        self.slots(SlotOp::None, &first.worker, 0, "", released, now_ms)
            .await
            .map(drop)
    }

    /// One call of `slots.lua`, releasing `released` first: a single round
    /// trip (EVALSHA).
    async fn slots(
        &self,
        op: SlotOp,
        worker: &str,
        slots: u32,
        token: &str,
        released: &[Slot],
        now_ms: u64,
    ) -> Result<(u64, u64), Unavailable> {
        let mut invocation = self.slots_script.prepare_invoke();
        invocation
            .key(self.keys.slots(worker))
            .key(self.keys.waiting(worker))
            .arg(op.as_str())
            .arg(now_ms)
            .arg(token)
            .arg(LEASE_TTL_MS)
            .arg(slots)
            .arg(self.keys.changes())
            .arg(format!("slot:{worker}"));
        for slot in released {
            invocation
                .key(self.keys.slots(&slot.worker))
                .key(self.keys.waiting(&slot.worker))
                .arg(&slot.token)
                .arg(format!("slot:{}", slot.worker));
        }
        let invocation = &invocation;
        self.link
            .call(now_ms, |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await
    }

    /// Add one of this daemon's events to the team's stream (capped).
    pub async fn publish_event(
        &self,
        event: &serde_json::Value,
        now_ms: u64,
    ) -> Result<(), Unavailable> {
        let key = self.keys.events();
        let origin = self.origin.clone();
        let body = event.to_string();
        self.link
            .call(now_ms, |mut conn| async move {
                redis::cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(EVENTS_KEPT)
                    .arg("*")
                    .arg("origin")
                    .arg(origin)
                    .arg("event")
                    .arg(body)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
    }
}

/// The Redis client for `url`, with the password from [`ENV_PASSWORD`] when
/// the URL carries none.
fn open_client(url: &str) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let mut info = url.into_connection_info()?;
    if !url::has_password(url) {
        if let Ok(password) = std::env::var(ENV_PASSWORD) {
            if !password.is_empty() {
                let settings = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(settings);
            }
        }
    }
    redis::Client::open(info)
}

/// `user@host:pid` of this daemon.
fn origin() -> String {
    let uid = nix::unistd::getuid();
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| Some(nix::unistd::User::from_uid(uid).ok()??.name))
        .unwrap_or_else(|| uid.to_string());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}:{}", std::process::id())
}

fn op_args(op: &BreakerOp) -> (&'static str, serde_json::Value) {
    use serde_json::json;
    let outcome_json = |o: &Outcome| match o {
        Outcome::Success => json!({"ok": true}),
        Outcome::Failure(reason) => json!({"ok": false, "reason": reason}),
    };
    match op {
        BreakerOp::Get => ("get", json!({})),
        BreakerOp::Admit {
            token,
            permit_ttl_ms,
        } => (
            "admit",
            json!({"token": token, "permit_ttl_ms": permit_ttl_ms}),
        ),
        BreakerOp::ProbeNow {
            token,
            permit_ttl_ms,
        } => (
            "probe_now",
            json!({"token": token, "permit_ttl_ms": permit_ttl_ms}),
        ),
        BreakerOp::Record {
            permit,
            token,
            outcome,
        } => (
            "record",
            json!({"permit": permit, "token": token, "outcome": outcome_json(outcome)}),
        ),
        BreakerOp::Abandon { permit, token } => {
            ("abandon", json!({"permit": permit, "token": token}))
        }
        BreakerOp::Tick => ("tick", json!({})),
        BreakerOp::Seed(breaker) => ("seed", json!({ "breaker": breaker })),
        BreakerOp::Reset => ("reset", json!({})),
        BreakerOp::ReportOpen { failures, reason } => (
            "report_open",
            json!({"failures": failures, "reason": reason}),
        ),
    }
}

#[derive(Deserialize)]
struct RawReply {
    breaker: serde_json::Value,
    #[serde(default)]
    transition: Option<Transition>,
    #[serde(default)]
    permit: Option<Permit>,
    #[serde(default)]
    refusal: Option<Refusal>,
}

/// Read the script's JSON. Lua's JSON encoder writes an empty list as `{}`,
/// so an empty result window is put back into shape first.
pub fn parse_reply(raw: &str) -> serde_json::Result<BreakerReply> {
    reply_from(serde_json::from_str(raw)?)
}

fn reply_from(mut reply: RawReply) -> serde_json::Result<BreakerReply> {
    let breaker = decode_breaker(&mut reply.breaker)?;
    let admission = match (reply.permit, reply.refusal) {
        (Some(p), _) => Some(Ok(p)),
        (None, Some(r)) => Some(Err(r)),
        (None, None) => None,
    };
    Ok(BreakerReply {
        breaker,
        transition: reply.transition,
        admission,
    })
}

/// A breaker from the script's JSON form.
pub fn decode_breaker(value: &mut serde_json::Value) -> serde_json::Result<Breaker> {
    if let Some(window) = value.get_mut("window") {
        if window.as_object().is_some_and(|o| o.is_empty()) {
            *window = serde_json::Value::Array(Vec::new());
        }
    }
    serde_json::from_value(value.take())
}
