//! The diagnosis behind `rch diagnose`: whether a command would be
//! offloaded, which settings decide it, and where it would go right now, by
//! the same selection rules the daemon uses. Pure: the classification, the
//! loaded configuration and the fleet's report in, a [`Diagnosis`] out.

use crate::build_files::Layout;
use crate::caps::Needs;
use crate::classify::{Decision, Offload};
use crate::config::{Fallback, Loaded};
use crate::select::{self, Pick, Selector, WorkerSlots};
use crate::state::report::{FleetReport, WorkerReport};
use crate::ui;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A setting that decides placement, with where its value came from.
#[derive(Debug, Serialize)]
pub struct Setting {
    pub value: String,
    pub origin: String,
}

/// One worker's answer to this command right now.
#[derive(Debug, Serialize)]
pub struct WorkerVerdict {
    pub worker: String,
    pub admits: bool,
    pub why: String,
}

/// A variable kept from the worker: its name (never its value) and why.
#[derive(Debug, Serialize)]
pub struct EnvWithheld {
    pub name: String,
    pub why: crate::envrules::Withheld,
}

/// What the fleet decides with, gathered by the caller (it takes IO).
pub struct FleetView {
    pub report: FleetReport,
    /// The root of the project the build would belong to.
    pub project: PathBuf,
    /// What the build needs of a worker.
    pub needs: Needs,
    /// Which variables the worker would get.
    pub env: crate::envrules::EnvPlan,
}

/// Everything `rch diagnose` found out.
#[derive(Debug, Serialize)]
pub struct Diagnosis {
    pub command: String,
    pub offload: bool,
    /// The tool and kind when offloadable, else why it stays local.
    pub classification: String,
    pub enabled: Setting,
    pub fallback: Setting,
    pub requested_worker: Option<Setting>,
    pub daemon_running: Option<bool>,
    /// What a worker must have for this command (tools, toolchains).
    pub needs: Option<Needs>,
    /// Names of the variables the worker would get (never their values).
    pub env_forwarded: Vec<String>,
    /// Names of the variables kept here, each with why.
    pub env_withheld: Vec<EnvWithheld>,
    pub workers: Vec<WorkerVerdict>,
    /// `remote`, `queue`, `local` or `fail`.
    pub placement: String,
    /// One line: where it would run now and why.
    pub verdict: String,
    /// The build's paths: the synced root, where artifacts return, build
    /// files recording absolute paths and how each worker treats them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// Diagnose `command`. `fleet` is asked only when the fleet decides (the
/// command is offloadable and rch is enabled): see [`FleetView`].
pub fn diagnose(
    command: &str,
    decision: &Decision,
    loaded: &Loaded,
    fleet: impl FnOnce(&Offload) -> anyhow::Result<FleetView>,
) -> anyhow::Result<Diagnosis> {
    let mut d = settings(command, decision, loaded);
    match (decision, loaded.config.general.enabled) {
        (Decision::Local(why), _) => conclude(&mut d, "local", format!("runs locally: {why}")),
        (Decision::Offload(_), false) => {
            let why = format!(
                "runs locally: rch is disabled (general.enabled from {})",
                d.enabled.origin
            );
            conclude(&mut d, "local", why);
        }
        (Decision::Offload(offload), true) => {
            let view = fleet(offload)?;
            d.env_forwarded = view.env.forwarded.iter().map(|(k, _)| k.clone()).collect();
            d.env_withheld = view
                .env
                .withheld
                .iter()
                .map(|(name, why)| EnvWithheld {
                    name: name.clone(),
                    why: *why,
                })
                .collect();
            place(&mut d, &view.report, loaded, &view.project, view.needs);
        }
    }
    Ok(d)
}

fn settings(command: &str, decision: &Decision, loaded: &Loaded) -> Diagnosis {
    let general = &loaded.config.general;
    let fallback = match general.fallback {
        Fallback::Local => "local",
        Fallback::Never => "never",
    };
    Diagnosis {
        command: command.to_string(),
        offload: decision.is_offload(),
        classification: match decision {
            Decision::Offload(o) => describe_offload(o),
            Decision::Local(why) => why.clone(),
        },
        enabled: Setting {
            value: general.enabled.to_string(),
            origin: loaded.origin("general.enabled").to_string(),
        },
        fallback: Setting {
            value: fallback.into(),
            origin: loaded.origin("general.fallback").to_string(),
        },
        requested_worker: loaded.requested_worker.as_ref().map(|w| Setting {
            value: w.clone(),
            origin: loaded.origin("requested_worker").to_string(),
        }),
        daemon_running: None,
        needs: None,
        env_forwarded: Vec::new(),
        env_withheld: Vec::new(),
        workers: Vec::new(),
        placement: String::new(),
        verdict: String::new(),
        paths: Vec::new(),
    }
}

/// Add what the build's file layout decides: its paths, and a local
/// verdict when the layout keeps the build here (a dependency that cannot
/// be synced, a path no worker may mirror).
pub fn with_layout(d: &mut Diagnosis, layout: &Result<Layout, String>, loaded: &Loaded) {
    let workers = &loaded.config.workers;
    let why = match layout {
        Ok(layout) => {
            d.paths = crate::build_files::describe(layout, workers);
            layout.unplaceable(workers)
        }
        Err(why) => Some(why.clone()),
    };
    if let Some(why) = why {
        if d.offload && loaded.config.general.enabled {
            conclude(d, "local", format!("would run locally: {why}"));
        }
    }
}

fn describe_offload(o: &Offload) -> String {
    format!("{} {}", o.tool.as_str(), o.kind.as_str())
}

fn conclude(d: &mut Diagnosis, placement: &str, verdict: String) {
    d.placement = placement.into();
    d.verdict = verdict;
}

/// Where the daemon would put it now, by the same selection rules it uses.
fn place(d: &mut Diagnosis, report: &FleetReport, loaded: &Loaded, project: &Path, needs: Needs) {
    d.daemon_running = Some(report.daemon.running);
    let project = project.to_string_lossy().into_owned();
    let selector = selector_for(report, loaded, &project);
    let request = select::LeaseRequest {
        project: project.clone(),
        worker: loaded.requested_worker.clone(),
        exclude: Vec::new(),
        needs: needs.clone(),
    };
    d.needs = Some(needs);
    let admits = |id: &str| {
        report
            .workers
            .iter()
            .any(|w| w.id == id && breaker_admits(w))
    };
    d.workers = report
        .workers
        .iter()
        .map(|w| worker_verdict(w, &request, &selector, &admits))
        .collect();
    let fallback_never = loaded.config.general.fallback == Fallback::Never;
    match selector.pick(&request, &admits) {
        Pick::Worker(id) => {
            let why = if selector.last_builder(&project) == Some(id.as_str()) {
                "it last built this project"
            } else {
                "free slot, by priority"
            };
            conclude(d, "remote", format!("would run on {id} ({why})"));
        }
        Pick::Wait => conclude(
            d,
            "queue",
            format!(
                "would wait for a free slot (up to {}s), then {}",
                loaded.config.daemon.queue_timeout_secs,
                if fallback_never {
                    "exit 75"
                } else {
                    "run locally"
                }
            ),
        ),
        Pick::Unavailable(whys) => {
            let unfit: Vec<(String, crate::caps::Unfit)> = whys
                .iter()
                .filter_map(|(id, why)| match why {
                    select::Why::Unfit(u) => Some((id.clone(), u.clone())),
                    _ => None,
                })
                .collect();
            let mut reasons: Vec<String> = d
                .workers
                .iter()
                .filter(|w| !unfit.iter().any(|(id, _)| *id == w.worker))
                .map(|w| format!("{} {}", w.worker, w.why))
                .collect();
            if let Some(line) = crate::caps::no_worker_line(&unfit) {
                reasons.insert(0, line);
            }
            let why = if reasons.is_empty() {
                "no workers configured".to_string()
            } else {
                reasons.join(", ")
            };
            if fallback_never {
                conclude(
                    d,
                    "fail",
                    format!("would fail with exit 75 (fallback = never): {why}"),
                );
            } else {
                conclude(d, "local", format!("would run locally: {why}"));
            }
        }
    }
}

/// Slots in use and the last worker of each project, as the report shows them.
fn selector_for(report: &FleetReport, loaded: &Loaded, project: &str) -> Selector {
    let mut selector = Selector::new(
        report
            .workers
            .iter()
            .map(|w| WorkerSlots {
                id: w.id.clone(),
                slots: w.slots,
                priority: w.priority,
                enabled: w.enabled,
                draining: w.draining,
                policy: loaded
                    .config
                    .worker(&w.id)
                    .map(|c| loaded.config.policy(c))
                    .unwrap_or_default(),
                caps: w.capabilities.clone(),
            })
            .collect(),
    );
    for w in &report.workers {
        for _ in 0..w.used {
            selector.acquire(&w.id);
        }
    }
    let warm = report
        .recent_jobs
        .iter()
        .find(|j| j.project == project && j.placement != "local");
    if let Some(job) = warm {
        selector.record_build(project, &job.placement);
    }
    selector
}

/// Would the breaker let a build through: the daemon's own admission
/// ([`crate::breaker::Breaker::can_admit`]) as its report carries it, so a
/// half-open worker whose probe is in flight is refused here as there.
fn breaker_admits(w: &WorkerReport) -> bool {
    w.circuit.admits
}

fn worker_verdict(
    w: &WorkerReport,
    request: &select::LeaseRequest,
    selector: &Selector,
    admits: &dyn Fn(&str) -> bool,
) -> WorkerVerdict {
    let single = select::LeaseRequest {
        worker: Some(w.id.clone()),
        ..request.clone()
    };
    let requested_elsewhere = request.worker.as_deref().is_some_and(|r| r != w.id);
    let (ok, why) = if requested_elsewhere {
        (false, "not requested".to_string())
    } else {
        match selector.pick(&single, admits) {
            Pick::Worker(_) => (
                true,
                format!(
                    "admits ({}/{} slots used, circuit {})",
                    w.used, w.slots, w.circuit.state
                ),
            ),
            Pick::Wait => (false, format!("busy ({}/{} slots used)", w.used, w.slots)),
            Pick::Unavailable(whys) => {
                let mine = whys
                    .iter()
                    .find(|(id, _)| *id == w.id)
                    .map(|(_, why)| why.clone());
                (false, refusal(w, mine))
            }
        }
    };
    WorkerVerdict {
        worker: w.id.clone(),
        admits: ok,
        why,
    }
}

fn refusal(w: &WorkerReport, why: Option<select::Why>) -> String {
    match why {
        Some(select::Why::Refused) if w.circuit.state == crate::breaker::State::HalfOpen => {
            "half-open (probe in flight)".into()
        }
        Some(select::Why::Refused) => match w.circuit.retry_in_secs {
            Some(s) => format!("circuit open (retry in {})", ui::time::duration(s)),
            None => "circuit open".into(),
        },
        Some(select::Why::Unfit(unfit)) => unfit.detail(),
        Some(why) => why.as_str().to_string(),
        None => "unavailable".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify;
    use crate::config;
    use crate::state::report::CircuitReport;

    fn worker(id: &str, state: &str, used: u32, priority: i64) -> WorkerReport {
        WorkerReport {
            id: id.into(),
            host: "h".into(),
            slots: 2,
            used,
            priority,
            enabled: true,
            draining: false,
            circuit: CircuitReport {
                state: serde_json::from_value(serde_json::json!(state)).unwrap(),
                failures: 0,
                since: None,
                retry_in_secs: (state == "open").then_some(9),
                last_error: None,
                error_rate: None,
                epoch: 0,
                admits: state != "open",
            },
            last_build: None,
            latency_ms: None,
            capabilities: None,
        }
    }

    /// Defaults only: an empty user config, no project.
    fn loaded() -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "").unwrap();
        let env = [("RCH_CONFIG".to_string(), file.display().to_string())].into();
        config::load_with(&config::Sources::from_env_map(env, dir.path())).expect("defaults load")
    }

    fn diagnose(workers: Vec<WorkerReport>) -> Diagnosis {
        let report = FleetReport {
            workers,
            ..Default::default()
        };
        let decision = classify::classify_shell("cargo build");
        let l = loaded();
        let mut d = settings("cargo build", &decision, &l);
        place(&mut d, &report, &l, Path::new("/p"), Needs::default());
        d
    }

    #[test]
    fn picks_the_admitting_worker_with_highest_priority() {
        let d = diagnose(vec![
            worker("w1", "open", 0, 200),
            worker("w2", "closed", 0, 100),
            worker("w3", "closed", 0, 50),
        ]);
        assert_eq!(d.placement, "remote");
        assert_eq!(d.verdict, "would run on w2 (free slot, by priority)");
        assert_eq!(d.workers[0].why, "circuit open (retry in 9s)");
        assert!(d.workers[1].admits);
    }

    #[test]
    fn a_half_open_worker_with_its_probe_in_flight_does_not_admit() {
        let mut probing = worker("w1", "half_open", 0, 200);
        probing.circuit.admits = false;
        let d = diagnose(vec![probing, worker("w2", "closed", 0, 100)]);
        assert_eq!(d.verdict, "would run on w2 (free slot, by priority)");
        assert!(!d.workers[0].admits);
        assert_eq!(d.workers[0].why, "half-open (probe in flight)");
        let d = diagnose(vec![worker("w1", "half_open", 0, 200)]);
        assert!(d.workers[0].admits, "a free probe permit admits");
    }

    #[test]
    fn full_workers_mean_queue_and_open_ones_mean_local() {
        assert_eq!(
            diagnose(vec![worker("w1", "closed", 2, 1)]).placement,
            "queue"
        );
        let d = diagnose(vec![worker("w1", "open", 0, 1)]);
        assert_eq!(d.placement, "local");
        assert_eq!(
            d.verdict,
            "would run locally: w1 circuit open (retry in 9s)"
        );
    }
}
