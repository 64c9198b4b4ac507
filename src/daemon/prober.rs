//! The active prober: when an open worker's cooldown ends, the daemon probes
//! it itself, so recovery never waits for a build to come along. It also
//! learns each worker's capabilities at start, for new workers and after a
//! build found a tool missing. It sleeps until the next cooldown deadline or
//! until the fleet wakes it; it never polls.

use super::Shared;
use crate::remote::Target;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(shared: Arc<Shared>) {
    loop {
        let (jobs, deadline) = shared.with_fleet(|f, now| (f.due_probes(now), f.next_deadline()));
        for target in shared.with_fleet(|f, _| f.due_learning()) {
            tokio::spawn(learn(shared.clone(), target));
        }
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

/// Learn what a worker can build. A worker that cannot be reached is left
/// alone: this is no health check, its breaker hears nothing of it.
async fn learn(shared: Arc<Shared>, target: Target) {
    let limit = Duration::from_secs(target.ssh.connect_timeout_secs * 2 + 10);
    let id = target.worker.id.clone();
    match tokio::time::timeout(limit, crate::remote::probe(&target)).await {
        Ok(Ok((_, caps))) => {
            tracing::info!(worker = %id, tools = %caps.summary(), "capabilities learned");
            shared.with_fleet(|f, now| f.learn(&id, caps, now));
        }
        Ok(Err(failure)) => {
            tracing::debug!(worker = %id, error = %failure, "capabilities not learned")
        }
        Err(_) => tracing::debug!(worker = %id, "capabilities not learned: timed out"),
    }
}
