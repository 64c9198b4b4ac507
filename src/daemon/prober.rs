//! The active prober: when an open worker's cooldown ends, the daemon probes
//! it itself, so recovery never waits for a build to come along. It sleeps
//! until the next cooldown deadline or until a breaker changes; it never polls.

use super::Shared;
use std::sync::Arc;

pub async fn run(shared: Arc<Shared>) {
    loop {
        let (jobs, deadline) = shared.with_fleet(|f, now| (f.due_probes(now), f.next_deadline()));
        for job in jobs {
            let shared = shared.clone();
            tokio::spawn(async move {
                let result = super::server::run_probe(&shared, job).await;
                tracing::info!(worker = %result.worker, ok = result.ok, state = %result.state,
                    error = result.error.as_deref().unwrap_or(""), "probe finished");
                shared.prober_wake.notify_one();
            });
        }
        let wake = shared.prober_wake.notified();
        match deadline {
            Some(at) => {
                tokio::select! {
                    _ = shared.clock.sleep_until(at) => {}
                    _ = wake => {}
                }
            }
            None => wake.await,
        }
    }
}
