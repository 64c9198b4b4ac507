//! The fleet as last saved, for operator commands while the daemon is down:
//! the configured workers with the breakers, flags and jobs the store holds,
//! read without writing (the same [`FleetReport`] a running daemon serves,
//! minus what only it knows: slots in use, leases, queue, probe latency).

use super::report::{CircuitReport, DaemonInfo, FleetReport, WorkerReport};
use super::store::{Store, WorkerFlags};
use crate::breaker::Breaker;
use crate::clock::rfc3339;
use crate::config::{Config, WorkerConfig};
use std::path::Path;

/// The fleet from the state database at `db` for the workers of `config`.
/// No database yet means nothing ever ran: every breaker is fresh.
pub fn stored_report(config: &Config, db: &Path, now_ms: u64) -> anyhow::Result<FleetReport> {
    let store = if db.exists() {
        Some(Store::open_readonly(db)?)
    } else {
        None
    };
    let (breakers, flags, recent_jobs) = match &store {
        Some(s) => (
            s.load_breakers()?,
            s.load_flags()?,
            s.recent_jobs(None, super::report::RECENT_JOBS)?,
        ),
        None => Default::default(),
    };
    let workers = config
        .workers
        .iter()
        .map(|w| {
            let last_build_ms = store
                .as_ref()
                .and_then(|s| s.last_build_ms(&w.id).ok().flatten());
            let saved = Saved {
                breaker: breakers.get(&w.id),
                flags: flags.get(&w.id).copied().unwrap_or_default(),
                last_build_ms,
            };
            worker_report(w, saved, config, now_ms)
        })
        .collect();
    Ok(FleetReport {
        daemon: DaemonInfo {
            running: false,
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: None,
            uptime_secs: None,
            config_error: None,
        },
        workers,
        recent_jobs,
        ..Default::default()
    })
}

/// What the store keeps about one worker.
struct Saved<'a> {
    breaker: Option<&'a Breaker>,
    flags: WorkerFlags,
    last_build_ms: Option<u64>,
}

/// A saved breaker as a daemon would resume it: the probes of a daemon that
/// is gone are not in flight any more.
fn idle(saved: Option<&Breaker>) -> Option<Breaker> {
    saved.cloned().map(|mut b| {
        b.probes_in_flight = 0;
        b
    })
}

fn worker_report(w: &WorkerConfig, saved: Saved, config: &Config, now_ms: u64) -> WorkerReport {
    WorkerReport {
        id: w.id.clone(),
        host: w.host.clone(),
        slots: w.slots,
        // No daemon, no leases.
        used: 0,
        priority: w.priority,
        enabled: saved.flags.enabled.unwrap_or(w.enabled),
        draining: saved.flags.draining,
        circuit: CircuitReport::of(idle(saved.breaker).as_ref(), config, now_ms),
        last_build: saved.last_build_ms.map(rfc3339),
        latency_ms: None,
        capabilities: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::JobReport;

    fn two_workers() -> Config {
        let toml =
            "[[workers]]\nid = \"w1\"\nhost = \"h1\"\n[[workers]]\nid = \"w2\"\nhost = \"h2\"\n";
        crate::config::parse_str(toml, Path::new("config.toml")).expect("config parses")
    }

    #[test]
    fn without_a_database_every_worker_is_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let report = stored_report(&two_workers(), &dir.path().join("state.db"), 0).unwrap();
        assert!(!report.daemon.running);
        assert_eq!(report.workers.len(), 2);
        assert!(report.workers.iter().all(|w| w.circuit.state == "closed"
            && w.circuit.since.is_none()
            && w.enabled
            && w.last_build.is_none()));
        assert!(report.recent_jobs.is_empty());
        assert!(!dir.path().join("state.db").exists(), "created a database");
    }

    #[test]
    fn saved_breakers_flags_and_jobs_show() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        {
            let mut store = Store::open(&db).unwrap().store;
            store.save_breaker("w1", &Breaker::new(1_000)).unwrap();
            let off = WorkerFlags {
                enabled: Some(false),
                draining: true,
            };
            store.save_flags("w2", off).unwrap();
            let job = JobReport {
                worker: Some("w1".into()),
                outcome: crate::protocol::JobOutcome::Success,
                ..Default::default()
            };
            store.insert_job(5_000, &job).unwrap();
        }
        let report = stored_report(&two_workers(), &db, 9_000).unwrap();
        let (w1, w2) = (&report.workers[0], &report.workers[1]);
        assert_eq!(w1.circuit.since.as_deref(), Some(rfc3339(1_000).as_str()));
        assert_eq!(w1.last_build.as_deref(), Some(rfc3339(5_000).as_str()));
        assert!(!w2.enabled && w2.draining);
        assert_eq!(report.recent_jobs.len(), 1);
        assert_eq!(report.recent_jobs[0].placement, "w1");
    }
}
