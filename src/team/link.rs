//! The connection to the team's Redis, and whether it is usable.
//!
//! Every call is bounded by `team.timeout_ms`. The first failure marks the
//! link down (logged once); from then on calls fail at once, without waiting,
//! so a dead Redis costs a build at most one timeout. A background task
//! reconnects with backoff and, once Redis answers again, announces it so the
//! daemon merges its local state back into the team's.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

/// Redis could not be used for this call: the daemon decides locally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("team redis unavailable")]
pub struct Unavailable;

/// Whether the link works, as `rch status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Connected,
    /// Down since this time (unix ms); the daemon uses its local state.
    Down {
        since_ms: u64,
    },
}

/// First and longest pause between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct Link {
    conn: ConnectionManager,
    timeout: Duration,
    health: Mutex<Health>,
    went_down: Notify,
    /// Told once Redis answers again after being down.
    back: broadcast::Sender<()>,
}

impl Link {
    /// A link that connects lazily: creating it never waits for Redis.
    pub fn new(client: redis::Client, timeout: Duration) -> redis::RedisResult<Arc<Link>> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF_MAX);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Arc::new(Link {
            conn,
            timeout,
            health: Mutex::new(Health::Connected),
            went_down: Notify::new(),
            back: broadcast::channel(16).0,
        }))
    }

    pub fn health(&self) -> Health {
        *self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Subscribe to "Redis answers again".
    pub fn on_back(&self) -> broadcast::Receiver<()> {
        self.back.subscribe()
    }

    /// Run one Redis call, bounded in time. While the link is down the call
    /// is not attempted at all.
    pub async fn call<T, F, Fut>(&self, now_ms: u64, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.health() != Health::Connected {
            return Err(Unavailable);
        }
        match tokio::time::timeout(self.timeout, f(self.conn.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if !is_connection_error(&e) => {
                // Redis answered, but not as expected (a script error, say):
                // this call decides locally, the link stays up.
                tracing::warn!(error = %e, "team redis call failed");
                Err(Unavailable)
            }
            Ok(Err(e)) => {
                self.mark_down(now_ms, &e.to_string());
                Err(Unavailable)
            }
            Err(_) => {
                self.mark_down(
                    now_ms,
                    &format!("no answer within {} ms", self.timeout.as_millis()),
                );
                Err(Unavailable)
            }
        }
    }

    fn mark_down(&self, now_ms: u64, why: &str) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if *health == Health::Connected {
            *health = Health::Down { since_ms: now_ms };
            tracing::warn!(reason = %why, "team redis unavailable; using local breakers and slots until it is back");
            self.went_down.notify_one();
        }
    }

    /// Mark the link down from the start (Redis did not answer the first ping).
    pub fn start_down(&self, now_ms: u64, why: &str) {
        self.mark_down(now_ms, why);
    }

    /// Reconnect with backoff whenever the link goes down; runs forever.
    pub async fn keep_up(self: Arc<Self>) {
        loop {
            if self.health() == Health::Connected {
                self.went_down.notified().await;
            }
            let mut pause = BACKOFF_MIN;
            loop {
                tokio::time::sleep(pause).await;
                if self.ping().await.is_ok() {
                    break;
                }
                pause = (pause * 2).min(BACKOFF_MAX);
            }
            *self.health.lock().unwrap_or_else(|e| e.into_inner()) = Health::Connected;
            tracing::info!("team redis reachable again; merging local state into the team's");
            let _ = self.back.send(());
        }
    }

    /// Does Redis answer a PING within the timeout? If not, why (Redis's
    /// own words, e.g. a wrong password; they never hold the password).
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(self.timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }
}

/// Errors that mean Redis cannot be reached, as opposed to a bad reply.
fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}
