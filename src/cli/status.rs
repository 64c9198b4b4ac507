//! `rch status`: the fleet from the running daemon, or from the persisted
//! state when the daemon is down (never starting it).

use super::Global;
use crate::client::Client;
use crate::daemon::fleet::circuit_report;
use crate::daemon::report::{DaemonInfo, FleetReport, WorkerReport};
use crate::daemon::store::Store;
use crate::protocol::{Request, Response};
use crate::ui::{self, fleet::Sections, Output};
use crate::{config, paths};
use clap::Args;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Jobs shown when reading the store directly (as many as the daemon shows).
const RECENT_JOBS: usize = 20;
/// A daemon that does not answer within this long is treated as down.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Each worker's circuit breaker: state, failures, error rate, since, retry, last error.
    #[arg(long)]
    pub circuits: bool,
    /// Each worker: host, slots used/total, priority, enabled/draining, last build, latency.
    #[arg(long)]
    pub workers: bool,
    /// Running and queued leases, and the last 20 jobs with where they ran and why.
    #[arg(long)]
    pub jobs: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: StatusArgs, global: &Global) -> anyhow::Result<i32> {
    let out = Output::detect(args.json, global.quiet, global.verbose);
    let sections = Sections {
        circuits: args.circuits,
        workers: args.workers,
        jobs: args.jobs,
    };
    let report = super::block_on(current_report(&out))?;
    if out.json {
        if !report.daemon.running {
            out.note("daemon not running; showing the persisted state");
        }
        ui::print_json(&ui::fleet::status_json(&report, sections))?;
    } else {
        println!("{}", ui::fleet::status_text(&out, &report, sections, now()));
    }
    Ok(0)
}

/// The fleet from the daemon if it answers, else from the store and config.
pub async fn current_report(out: &Output) -> anyhow::Result<FleetReport> {
    match live_report(&paths::socket_path()).await {
        Ok(Some(report)) => Ok(report),
        Ok(None) => stored_report(),
        Err(why) => {
            out.note(&format!("{why}; showing the persisted state"));
            stored_report()
        }
    }
}

/// Ask a running daemon; `Ok(None)` when none listens.
async fn live_report(socket: &Path) -> Result<Option<FleetReport>, String> {
    let Ok(mut client) = Client::connect(socket).await else {
        return Ok(None);
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, client.call(Request::Status)).await {
        Ok(Ok(Response::Status(report))) => Ok(Some(*report)),
        Ok(Ok(Response::Error { message, .. })) => Err(format!("daemon answered: {message}")),
        Ok(Ok(other)) => Err(format!("daemon answered unexpectedly: {other:?}")),
        Ok(Err(e)) => Err(format!("daemon connection failed: {e}")),
        Err(_) => Err(format!(
            "daemon did not answer within {}s",
            ANSWER_TIMEOUT.as_secs()
        )),
    }
}

/// What the store saved last, for the workers of the daemon's configuration
/// (the user layers, as the daemon reads them).
pub fn stored_report() -> anyhow::Result<FleetReport> {
    let config = config::load(Path::new("/"))?.config;
    let db = paths::state_db();
    // No database yet: nothing ever ran, every breaker is fresh.
    let store = if db.exists() {
        Some(Store::open_readonly(&db)?)
    } else {
        None
    };
    let now_ms = now_ms();
    let breakers = match &store {
        Some(s) => s.load_breakers()?,
        None => Default::default(),
    };
    let flags = match &store {
        Some(s) => s.load_flags()?,
        None => Default::default(),
    };
    let workers = config
        .workers
        .iter()
        .map(|w| {
            let f = flags.get(&w.id).copied().unwrap_or_default();
            let last_build = store
                .as_ref()
                .and_then(|s| s.last_build_ms(&w.id).ok().flatten())
                .map(crate::daemon::clock::rfc3339);
            WorkerReport {
                id: w.id.clone(),
                host: w.host.clone(),
                slots: w.slots,
                used: 0,
                priority: w.priority,
                enabled: f.enabled.unwrap_or(w.enabled),
                draining: f.draining,
                circuit: circuit_report(breakers.get(&w.id), &config, now_ms),
                last_build,
                latency_ms: None,
            }
        })
        .collect();
    let recent_jobs = match &store {
        Some(s) => s.recent_jobs(None, RECENT_JOBS)?,
        None => Vec::new(),
    };
    Ok(FleetReport {
        daemon: DaemonInfo {
            running: false,
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: None,
            uptime_secs: None,
        },
        workers,
        recent_jobs,
        ..Default::default()
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The current time, for "ago" columns.
pub fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}
