//! `rch workers`: list, probe, reset, drain, enable, disable and the history
//! of workers, through the daemon.

use super::{Global, UsageError};
use crate::client::Client;
use crate::paths;
use crate::protocol::{Request, Response, WorkerAction};
use crate::state::report::ProbeResult;
use crate::ui::{self, progress::Spinners, Output};
use clap::{Args, Subcommand};
use serde_json::json;

/// Exit code when a probe failed.
const EXIT_PROBE_FAILED: i32 = 1;

#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// The configured workers and how they stand.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Test workers now (SSH round trip, login shell, writable remote base; it
    /// also learns their tools and toolchains); the result feeds the breaker.
    /// Exits non-zero when a probe fails.
    Probe {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Force circuits closed and clear their counters.
    Reset {
        #[command(flatten)]
        target: Target,
    },
    /// Stop giving the worker new builds; running ones finish.
    Drain {
        /// The worker id (as in `rch workers list`).
        #[arg(value_name = "ID", add = complete_worker_id())]
        id: String,
    },
    /// Give the worker builds again (undoes drain and disable).
    Enable {
        /// The worker id (as in `rch workers list`).
        #[arg(value_name = "ID", add = complete_worker_id())]
        id: String,
    },
    /// Take the worker out of rotation (kept across daemon restarts).
    Disable {
        /// The worker id (as in `rch workers list`).
        #[arg(value_name = "ID", add = complete_worker_id())]
        id: String,
    },
    /// Remove project dirs unused on workers for a while (default 14 days) and,
    /// where `max_disk_gb` is set, the least recently used until under it;
    /// never one a build is using. Reports the space freed per worker.
    #[command(
        after_help = "Examples:\n  rch workers gc --dry-run\n  rch workers gc w1 --older-than 3d"
    )]
    Gc {
        /// The worker id (default: every worker).
        #[arg(value_name = "ID", conflicts_with = "all", add = complete_worker_id())]
        id: Option<String>,
        /// Every configured worker (the default).
        #[arg(long)]
        all: bool,
        /// Remove what has not been used for this long: 14d, 12h, 30m, 90s, 2w.
        #[arg(long, value_name = "DUR", default_value = "14d", value_parser = crate::gc::parse_duration)]
        older_than: u64,
        /// Show what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Recent jobs (with where and why they ran, and their phase timings) and
    /// breaker transitions of a worker, newest jobs first.
    #[command(
        after_help = "Examples:\n  rch workers history w1\n  rch workers history w1 --limit 5 --json"
    )]
    History {
        /// The worker id (as in `rch workers list`).
        #[arg(value_name = "ID", add = complete_worker_id())]
        id: String,
        /// How many jobs and events to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// One worker by id, or every worker.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The worker id (as in `rch workers list`).
    #[arg(
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all",
        add = complete_worker_id()
    )]
    pub id: Option<String>,
    /// Every configured worker.
    #[arg(long)]
    pub all: bool,
}

/// Completes worker ids from the configuration of the current directory
/// (user, lab and project layers; no daemon needed).
pub fn complete_worker_id() -> clap_complete::engine::ArgValueCompleter {
    clap_complete::engine::ArgValueCompleter::new(|current: &std::ffi::OsStr| {
        let current = current.to_string_lossy();
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        let ids: Vec<String> = crate::config::load(&cwd)
            .map(|l| {
                l.config
                    .worker_ids()
                    .into_iter()
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        ids.into_iter()
            .filter(|id| id.starts_with(current.as_ref()))
            .map(clap_complete::engine::CompletionCandidate::new)
            .collect()
    })
}

pub fn run(cmd: WorkersCommand, global: &Global) -> anyhow::Result<i32> {
    let detect = |json| Output::detect(json, global.quiet, global.verbose);
    super::block_on(async move {
        match cmd {
            WorkersCommand::List { json } => list(&detect(json)).await,
            WorkersCommand::Probe { target, json } => probe(&detect(json), target.id).await,
            WorkersCommand::Reset { target } => reset(&detect(false), target.id).await,
            WorkersCommand::Drain { id } => set(&detect(false), id, WorkerAction::Drain).await,
            WorkersCommand::Enable { id } => set(&detect(false), id, WorkerAction::Enable).await,
            WorkersCommand::Disable { id } => set(&detect(false), id, WorkerAction::Disable).await,
            WorkersCommand::History { id, limit, json } => history(&detect(json), id, limit).await,
            WorkersCommand::Gc {
                id,
                all: _,
                older_than,
                dry_run,
                json,
            } => gc(&detect(json), id, older_than, dry_run).await,
        }
    })
}

async fn list(out: &Output) -> anyhow::Result<i32> {
    let report = crate::fleet_report::current_report(out).await?;
    if out.json {
        ui::print_json(&json!({ "workers": report.workers }))?;
    } else if report.workers.is_empty() {
        println!("{}", ui::fleet::summary_line(&report.workers));
    } else {
        let now = time::OffsetDateTime::now_utc();
        println!("{}", ui::fleet::workers_table(out, &report.workers, now));
    }
    Ok(0)
}

async fn connect() -> anyhow::Result<Client> {
    Client::connect_or_start(&paths::socket_path()).await
}

/// Turn a daemon error into the CLI's: an unknown worker is a usage error.
fn daemon_error(
    id: Option<&str>,
    message: String,
    known: Vec<String>,
    unknown_worker: bool,
) -> anyhow::Error {
    if unknown_worker || !known.is_empty() {
        let id = id.unwrap_or("?");
        let known = if known.is_empty() {
            "no workers configured".to_string()
        } else {
            format!("known: {}", known.join(", "))
        };
        return UsageError(format!("unknown worker {id:?} ({known})")).into();
    }
    anyhow::anyhow!("daemon: {message}")
}

fn unexpected(answer: Response) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from the daemon: {answer:?}")
}

/// Send one request that is answered with `Ok`.
async fn expect_ok(id: Option<&str>, request: Request) -> anyhow::Result<()> {
    match connect().await?.call(request).await? {
        Response::Ok => Ok(()),
        Response::Error {
            message,
            known_workers,
            unknown_worker,
        } => Err(daemon_error(
            id,
            message,
            known_workers,
            unknown_worker.is_some(),
        )),
        other => Err(unexpected(other)),
    }
}

async fn probe(out: &Output, id: Option<String>) -> anyhow::Result<i32> {
    let ids = match id {
        Some(id) => vec![id],
        None => worker_ids().await?,
    };
    if ids.is_empty() {
        out.note("no workers configured; nothing to probe");
        return Ok(0);
    }
    let spinners = Spinners::start(out, &ids, "probing…");
    // One connection per worker, so each result shows as soon as it is known.
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids.iter().cloned() {
        tasks.spawn(async move {
            let answer = probe_one(&id).await;
            (id, answer)
        });
    }
    let mut results = Vec::new();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (id, answer) = joined?;
        match answer {
            Ok(found) => {
                for r in found {
                    let (mark, line) = probe_line(&r);
                    spinners.finish(&r.worker, mark, &line);
                    results.push(r);
                }
            }
            Err(e) => {
                spinners.clear(&id);
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    results.sort_by_key(|r| ids.iter().position(|i| *i == r.worker));
    if out.json {
        ui::print_json(&json!({ "results": results }))?;
    }
    Ok(if results.iter().all(|r| r.ok) {
        0
    } else {
        EXIT_PROBE_FAILED
    })
}

async fn probe_one(id: &str) -> anyhow::Result<Vec<ProbeResult>> {
    let request = Request::Probe {
        worker: Some(id.to_string()),
    };
    match connect().await?.call(request).await? {
        Response::Probed { results } => Ok(results),
        Response::Error {
            message,
            known_workers,
            unknown_worker,
        } => Err(daemon_error(
            Some(id),
            message,
            known_workers,
            unknown_worker.is_some(),
        )),
        other => Err(unexpected(other)),
    }
}

/// `✓`/`✗` and `ok in 12ms, circuit closed` or `failed: …; circuit open`.
fn probe_line(r: &ProbeResult) -> (&'static str, String) {
    if r.ok {
        let latency = r
            .latency_ms
            .map(|ms| format!(" in {ms}ms"))
            .unwrap_or_default();
        let tools = r
            .capabilities
            .as_ref()
            .map(|c| format!("; {}", c.summary()))
            .unwrap_or_default();
        ("✓", format!("ok{latency}, circuit {}{tools}", r.state))
    } else {
        let error = r.error.as_deref().unwrap_or("probe failed");
        // Daemon messages name the worker; the line already does.
        let error = error
            .strip_prefix(&format!("{}: ", r.worker))
            .unwrap_or(error);
        ("✗", format!("failed: {error}; circuit {}", r.state))
    }
}

/// The ids of the daemon's workers, in config order.
async fn worker_ids() -> anyhow::Result<Vec<String>> {
    match connect().await?.call(Request::Status).await? {
        Response::Status(report) => Ok(report.workers.into_iter().map(|w| w.id).collect()),
        Response::Error {
            message,
            known_workers,
            unknown_worker,
        } => Err(daemon_error(
            None,
            message,
            known_workers,
            unknown_worker.is_some(),
        )),
        other => Err(unexpected(other)),
    }
}

async fn reset(out: &Output, id: Option<String>) -> anyhow::Result<i32> {
    expect_ok(id.as_deref(), Request::Reset { worker: id.clone() }).await?;
    let whom = id.unwrap_or_else(|| "all workers".into());
    if !out.quiet {
        println!("{whom}: circuit reset to closed, failure counters cleared");
    }
    Ok(0)
}

async fn set(out: &Output, id: String, action: WorkerAction) -> anyhow::Result<i32> {
    let request = Request::SetWorker {
        worker: id.clone(),
        action,
    };
    expect_ok(Some(&id), request).await?;
    if !out.quiet {
        println!("{}", set_message(&id, action));
    }
    Ok(0)
}

fn set_message(id: &str, action: WorkerAction) -> String {
    match action {
        WorkerAction::Drain => format!(
            "{id}: draining: no new builds, running ones finish (`rch workers enable {id}` undoes it)"
        ),
        WorkerAction::Enable => format!("{id}: enabled: takes new builds"),
        WorkerAction::Disable => format!(
            "{id}: disabled: no new builds, kept across restarts (`rch workers enable {id}` undoes it)"
        ),
    }
}

async fn gc(
    out: &Output,
    id: Option<String>,
    older_than_secs: u64,
    dry_run: bool,
) -> anyhow::Result<i32> {
    let config = crate::config::load(std::path::Path::new("/"))?.config;
    let workers = match &id {
        Some(id) => match config.worker(id) {
            Some(w) => vec![w.clone()],
            None => {
                return Err(daemon_error(
                    Some(id),
                    String::new(),
                    config.worker_ids().iter().map(|s| s.to_string()).collect(),
                    true,
                ))
            }
        },
        None => config.workers.clone(),
    };
    let report = crate::fleet_report::current_report(out).await?;
    let leases: Vec<(String, String)> = report
        .leases
        .into_iter()
        .map(|l| (l.worker, l.project))
        .collect();
    let usage = crate::gc::usage_by_worker(&crate::gc::saved_history(), &leases);
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
    let older_than = Some(older_than_secs.saturating_mul(1000));
    let results =
        crate::gc::collect_all(&workers, &config.ssh, &usage, older_than, now, dry_run).await;
    let failed = results.iter().any(|(_, r)| r.is_err());
    if out.json {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|(worker, r)| match r {
                Ok(done) => serde_json::to_value(done).unwrap_or_default(),
                Err(f) => json!({ "worker": worker, "error": f.message, "kind": f.kind }),
            })
            .collect();
        ui::print_json(&json!({ "workers": rows }))?;
    } else {
        for (_, result) in &results {
            println!("{}", ui::gc::worker_text(result, out.verbose > 0));
        }
    }
    Ok(if failed { 1 } else { 0 })
}

async fn history(out: &Output, id: String, limit: usize) -> anyhow::Result<i32> {
    let request = Request::History {
        worker: id.clone(),
        limit,
    };
    let h = match connect().await?.call(request).await? {
        Response::History(h) => h,
        Response::Error {
            message,
            known_workers,
            unknown_worker,
        } => {
            return Err(daemon_error(
                Some(&id),
                message,
                known_workers,
                unknown_worker.is_some(),
            ))
        }
        other => return Err(unexpected(other)),
    };
    if out.json {
        ui::print_json(&h)?;
    } else {
        println!(
            "{}",
            ui::history::history_text(out, &h, time::OffsetDateTime::now_utc())
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_worker_is_a_usage_error_naming_known_ids() {
        let e = daemon_error(
            Some("w9"),
            "unknown worker \"w9\"".into(),
            vec!["w1".into(), "w2".into()],
            true,
        );
        let usage = e.downcast_ref::<UsageError>().expect("usage error");
        assert_eq!(usage.0, "unknown worker \"w9\" (known: w1, w2)");
    }

    #[test]
    fn other_errors_stay_plain() {
        let e = daemon_error(Some("w1"), "disk full".into(), vec![], false);
        assert!(e.downcast_ref::<UsageError>().is_none());
    }

    #[test]
    fn probe_lines_say_result_and_state() {
        let ok = ProbeResult {
            worker: "w1".into(),
            ok: true,
            latency_ms: Some(7),
            error: None,
            state: crate::breaker::State::Closed,
            capabilities: None,
        };
        assert_eq!(
            probe_line(&ok),
            ("✓", "ok in 7ms, circuit closed".to_string())
        );
        let bad = ProbeResult {
            worker: "w1".into(),
            ok: false,
            latency_ms: None,
            error: Some("w1: refused".into()),
            state: crate::breaker::State::Open,
            capabilities: None,
        };
        assert_eq!(
            probe_line(&bad),
            ("✗", "failed: refused; circuit open".to_string())
        );
    }
}
