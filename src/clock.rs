//! The daemon's source of time.
//!
//! Breakers and the prober read time only through a [`Clock`], given to the
//! daemon when it is built: [`SystemClock`] in production, [`ManualClock`]
//! where a caller wants to move time by hand (simulations of the daemon).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub type SleepFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub trait Clock: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> u64;
    /// Resolve once `now_ms() >= deadline_ms`.
    fn sleep_until(&self, deadline_ms: u64) -> SleepFuture<'_>;
}

/// Wall-clock time (persisted breaker deadlines survive restarts).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn sleep_until(&self, deadline_ms: u64) -> SleepFuture<'_> {
        let wait = deadline_ms.saturating_sub(self.now_ms());
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// Time that moves only when told to.
pub struct ManualClock {
    now: AtomicU64,
    tick: watch::Sender<u64>,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            now: AtomicU64::new(start_ms),
            tick: watch::channel(start_ms).0,
        }
    }

    /// Move time forward and wake every sleeper whose deadline passed.
    pub fn advance(&self, by: Duration) {
        let now =
            self.now.fetch_add(by.as_millis() as u64, Ordering::SeqCst) + by.as_millis() as u64;
        self.tick.send_replace(now);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, deadline_ms: u64) -> SleepFuture<'_> {
        let mut rx = self.tick.subscribe();
        Box::pin(async move {
            while self.now_ms() < deadline_ms {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

/// RFC 3339 text of a unix-millisecond time.
pub fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_advanced() {
        let clock = std::sync::Arc::new(ManualClock::new(1_000));
        let c2 = clock.clone();
        let sleeper = tokio::spawn(async move { c2.sleep_until(31_000).await });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(10));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(20));
        sleeper.await.unwrap();
        assert_eq!(clock.now_ms(), 31_000);
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
