//! Runs the probes the core asks for: [`Output::StartProbe`] when an open
//! worker's cooldown ends (so recovery never waits for a build to come
//! along), and [`Output::Learn`] to learn a worker's capabilities (at start,
//! for new workers, after a build found a tool missing) without touching its
//! breaker. When to probe is the core's decision; this task only does the
//! ssh work and reports back.
//!
//! [`Output::StartProbe`]: super::fleet::Output::StartProbe
//! [`Output::Learn`]: super::fleet::Output::Learn

use super::fleet::ProbeJob;
use super::server::{probe_target, run_probe, target_of};
use super::Shared;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A probe to run.
pub enum Work {
    /// A breaker probe: its result goes to the breaker.
    Probe(ProbeJob),
    /// Learn capabilities only.
    Learn(String),
}

pub async fn run(shared: Arc<Shared>, mut work: mpsc::UnboundedReceiver<Work>) {
    while let Some(item) = work.recv().await {
        let shared = shared.clone();
        match item {
            Work::Probe(job) => tokio::spawn(async move {
                let result = run_probe(&shared, job).await;
                tracing::info!(worker = %result.worker, ok = result.ok, state = %result.state,
                    error = result.error.as_deref().unwrap_or(""), "probe finished");
            }),
            Work::Learn(id) => tokio::spawn(learn(shared, id)),
        };
    }
}

/// Learn what a worker can build. A worker that cannot be reached is left
/// alone: this is no health check, its breaker hears nothing of it.
async fn learn(shared: Arc<Shared>, id: String) {
    let Some(target) = shared.with_fleet(|f, _| target_of(f, &id)) else {
        return;
    };
    match probe_target(&target).await {
        Ok((_, caps)) => {
            tracing::info!(worker = %id, tools = %caps.summary(), "capabilities learned");
            shared.with_fleet(|f, now| f.learn(&id, caps, now));
        }
        Err(failure) => {
            tracing::debug!(worker = %id, error = %failure, "capabilities not learned")
        }
    }
}
