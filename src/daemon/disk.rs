//! The daemon's disk keeper: workers with a `max_disk_gb` are brought under
//! it in the background, least recently used project first, never one a
//! build holds. What to remove is decided by [`crate::gc`]'s pure plan, the
//! same one `rch workers gc` uses; this task only feeds it the daemon's
//! leases and history.

use super::Shared;
use crate::config::WorkerConfig;
use crate::gc;
use std::sync::Arc;

/// How often the daemon checks the workers that have a `max_disk_gb`.
const DISK_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// The daemon's background task: at start and then every
/// [`DISK_CHECK_INTERVAL`], bring each worker with a `max_disk_gb` under
/// it, least recently used project first, never one that is building.
pub async fn enforce_disk_limits(shared: Arc<Shared>) {
    loop {
        let (config, leases, now_ms) = shared.with_fleet(|fleet, now| {
            let leases: Vec<(String, String)> = fleet
                .report(now)
                .leases
                .into_iter()
                .map(|l| (l.worker, l.project))
                .collect();
            (fleet.config().clone(), leases, now)
        });
        let limited: Vec<WorkerConfig> = config
            .workers
            .iter()
            .filter(|w| w.enabled && w.max_disk_gb.is_some())
            .cloned()
            .collect();
        if !limited.is_empty() {
            let history = shared.store().last_use_per_project().unwrap_or_default();
            let usage = gc::usage_by_worker(&history, &leases);
            for (worker, result) in
                gc::collect_all(&limited, &config.ssh, &usage, None, now_ms, false).await
            {
                match result {
                    Ok(done) if !done.removed.is_empty() => tracing::info!(
                        worker = %worker,
                        removed = done.removed.len(),
                        freed_bytes = done.freed_bytes,
                        kept_bytes = done.kept_bytes,
                        "max_disk_gb: removed the least recently used project dirs"
                    ),
                    Ok(_) => {}
                    Err(failure) => {
                        tracing::warn!(worker = %worker, error = %failure, "max_disk_gb: check failed")
                    }
                }
            }
        }
        tokio::time::sleep(DISK_CHECK_INTERVAL).await;
    }
}
