//! `rch status` and `rch workers list`: the fleet as text (summary line,
//! open-circuit warning with what to run, worker, circuit and job tables)
//! and as JSON.

use super::table::{self, or_dash};
use super::time as t;
use super::Output;
use crate::breaker::State;
use crate::state::report::{CircuitReport, DaemonInfo, FleetReport, JobRow, WorkerReport};
use serde_json::{json, Map, Value};
use std::path::Path;
use time::OffsetDateTime;

/// Which parts of the fleet a `rch status` call asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sections {
    pub circuits: bool,
    pub workers: bool,
    pub jobs: bool,
}

impl Sections {
    /// No section flag given: the overview.
    pub fn is_overview(&self) -> bool {
        !(self.circuits || self.workers || self.jobs)
    }
}

/// `rch daemon: running (version 0.1.0, pid 42, up 2h 5m)`, or why it is not.
pub fn daemon_line(info: &DaemonInfo) -> String {
    if !info.running {
        return "rch daemon: not running (state as last saved; `rch daemon start` starts it, \
                so does the next build)"
            .into();
    }
    let mut parts = vec![format!("version {}", info.version)];
    if let Some(pid) = info.pid {
        parts.push(format!("pid {pid}"));
    }
    if let Some(up) = info.uptime_secs {
        parts.push(format!("up {}", t::duration(up)));
    }
    format!("rch daemon: running ({})", parts.join(", "))
}

/// `team: backend via redis://r:6379/0 (connected)`, or since when it is
/// unavailable and that the daemon decides alone meanwhile.
pub fn team_line(team: &crate::team::TeamReport) -> String {
    let link = match &team.unavailable_since {
        None if team.connected => "(connected)".to_string(),
        Some(since) => format!("unavailable since {since}, using local breakers"),
        None => "unavailable, using local breakers".to_string(),
    };
    format!("team: {} via {} {link}", team.name, team.url)
}

/// The configuration files changed into something the daemon refused.
pub fn config_error_line(error: &str) -> String {
    format!("rch: reload failed, previous configuration kept: {error}")
}

/// `3 workers: 2 closed, 1 open (w1, retry in 12s)`.
pub fn summary_line(workers: &[WorkerReport]) -> String {
    if workers.is_empty() {
        return "0 workers configured: every build runs locally (add [[workers]] to the config)"
            .into();
    }
    let noun = if workers.len() == 1 {
        "worker"
    } else {
        "workers"
    };
    let mut groups = Vec::new();
    for state in [State::Closed, State::HalfOpen, State::Open] {
        let members: Vec<&WorkerReport> = workers
            .iter()
            .filter(|w| w.circuit.state == state)
            .collect();
        if members.is_empty() {
            continue;
        }
        let mut group = format!("{} {state}", members.len());
        if state != State::Closed {
            let who: Vec<String> = members.iter().map(|w| who_and_when(w)).collect();
            group.push_str(&format!(" ({})", who.join("; ")));
        }
        groups.push(group);
    }
    let mut line = format!("{} {noun}: {}", workers.len(), groups.join(", "));
    let off: Vec<String> = workers
        .iter()
        .filter(|w| mode(w) != "enabled")
        .map(|w| format!("{} {}", w.id, mode(w)))
        .collect();
    if !off.is_empty() {
        line.push_str(&format!("; {}", off.join(", ")));
    }
    line
}

/// `w1, retry in 12s` for an open worker, `w2` otherwise.
fn who_and_when(w: &WorkerReport) -> String {
    match (w.circuit.state, w.circuit.retry_in_secs) {
        (State::Open, Some(0)) => format!("{}, retry due", w.id),
        (State::Open, Some(s)) => format!("{}, retry in {}", w.id, t::duration(s)),
        _ => w.id.clone(),
    }
}

/// `enabled`, `draining` or `disabled`.
fn mode(w: &WorkerReport) -> &'static str {
    if !w.enabled {
        "disabled"
    } else if w.draining {
        "draining"
    } else {
        "enabled"
    }
}

/// The block printed above the tables when circuits are open: which, since
/// when, why, and the commands that act on them.
pub fn open_warning(workers: &[WorkerReport], now: OffsetDateTime) -> Option<String> {
    let open: Vec<&WorkerReport> = workers
        .iter()
        .filter(|w| w.circuit.state == State::Open)
        .collect();
    if open.is_empty() {
        return None;
    }
    let plural = if open.len() == 1 {
        "circuit"
    } else {
        "circuits"
    };
    let mut out = format!(
        "⚠ {} {plural} open: builds skip {}\n",
        open.len(),
        ids(&open)
    );
    for w in &open {
        out.push_str(&format!("  {}: {}\n", w.id, open_detail(&w.circuit, now)));
        if let Some(err) = &w.circuit.last_error {
            out.push_str(&format!("      last error: {err}\n"));
        }
    }
    let first = &open[0].id;
    let target = if open.len() == 1 {
        first.clone()
    } else {
        "--all".into()
    };
    out.push_str("  what to do:\n");
    out.push_str(&format!(
        "    rch workers probe {target}    test now; success moves it to half_open, then closed\n"
    ));
    out.push_str(&format!(
        "    rch workers reset {target}    force closed once the worker is fixed\n"
    ));
    out.push_str(&format!(
        "    rch workers history {first}  its recent builds and transitions"
    ));
    Some(out)
}

fn ids(workers: &[&WorkerReport]) -> String {
    workers
        .iter()
        .map(|w| w.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `open since … (5m ago), 3 consecutive failures, retry in 12s`.
fn open_detail(c: &CircuitReport, now: OffsetDateTime) -> String {
    let mut parts = Vec::new();
    match &c.since {
        Some(s) => parts.push(format!("open since {}", t::since(s, now))),
        None => parts.push("open".into()),
    }
    parts.push(format!("{} consecutive failures", c.failures));
    parts.push(retry_text(c));
    parts.join(", ")
}

fn retry_text(c: &CircuitReport) -> String {
    match c.retry_in_secs {
        Some(0) => "retry due (the daemon probes it when running)".into(),
        Some(s) => format!("retry in {}", t::duration(s)),
        None => "retry time unknown".into(),
    }
}

/// The worker table: where each worker stands and how it is doing.
pub fn workers_table(out: &Output, workers: &[WorkerReport], now: OffsetDateTime) -> String {
    let mut tbl = table::new(
        out,
        &[
            "worker",
            "host",
            "state",
            "slots",
            "priority",
            "mode",
            "last build",
            "latency",
            "tools",
        ],
    );
    for w in workers {
        tbl.add_row(vec![
            comfy_table::Cell::new(&w.id),
            comfy_table::Cell::new(&w.host),
            table::state_cell(out, w.circuit.state),
            comfy_table::Cell::new(format!("{}/{}", w.used, w.slots)),
            comfy_table::Cell::new(w.priority),
            comfy_table::Cell::new(mode(w)),
            comfy_table::Cell::new(or_dash(w.last_build.as_deref().map(|s| t::ago(s, now)))),
            comfy_table::Cell::new(or_dash(w.latency_ms.map(|ms| format!("{ms}ms")))),
            comfy_table::Cell::new(tools(w)),
        ]);
    }
    table::render(&tbl)
}

/// What the worker's last probe found, or "not probed yet".
fn tools(w: &WorkerReport) -> String {
    match &w.capabilities {
        Some(caps) if caps.probed => caps.summary(),
        Some(caps) => format!(
            "not probed yet; lacks {}",
            caps.missing.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
        None => "not probed yet".to_string(),
    }
}

/// The circuit table of `rch status --circuits`.
pub fn circuits_table(out: &Output, workers: &[WorkerReport], now: OffsetDateTime) -> String {
    let mut tbl = table::new(
        out,
        &[
            "worker",
            "state",
            "failures",
            "error rate",
            "since",
            "retry in",
            "last error",
        ],
    );
    for w in workers {
        let c = &w.circuit;
        let retry = match (c.state, c.retry_in_secs) {
            (State::Open, Some(0)) => "due".to_string(),
            (State::Open, Some(s)) => t::duration(s),
            _ => "-".to_string(),
        };
        tbl.add_row(vec![
            comfy_table::Cell::new(&w.id),
            table::state_cell(out, c.state),
            comfy_table::Cell::new(c.failures),
            comfy_table::Cell::new(or_dash(c.error_rate.map(|r| format!("{:.0}%", r * 100.0)))),
            comfy_table::Cell::new(or_dash(c.since.as_deref().map(|s| t::ago(s, now)))),
            comfy_table::Cell::new(retry),
            comfy_table::Cell::new(or_dash(c.last_error.clone())),
        ]);
    }
    table::render(&tbl)
}

/// Running leases, the queue and the recent jobs of `rch status --jobs`.
pub fn jobs_view(out: &Output, report: &FleetReport, now: OffsetDateTime) -> String {
    let mut parts = Vec::new();
    if report.leases.is_empty() {
        parts.push("running: none".to_string());
    } else {
        let mut tbl = table::new(out, &["worker", "command", "project", "running for"]);
        for l in &report.leases {
            tbl.add_row(vec![
                l.worker.clone(),
                l.command.clone(),
                project_name(&l.project),
                elapsed(&l.since, now),
            ]);
        }
        parts.push(format!(
            "running: {}\n{}",
            report.leases.len(),
            table::render(&tbl)
        ));
    }
    if report.queue.is_empty() {
        parts.push("queued: none".to_string());
    } else {
        let mut tbl = table::new(out, &["position", "command", "project", "waiting for"]);
        for q in &report.queue {
            tbl.add_row(vec![
                q.position.to_string(),
                q.command.clone(),
                project_name(&q.project),
                elapsed(&q.since, now),
            ]);
        }
        parts.push(format!(
            "queued: {}\n{}",
            report.queue.len(),
            table::render(&tbl)
        ));
    }
    if report.recent_jobs.is_empty() {
        parts.push("recent jobs: none yet".to_string());
    } else {
        parts.push(format!(
            "recent jobs (newest first):\n{}",
            jobs_table(out, &report.recent_jobs, now)
        ));
    }
    parts.join("\n\n")
}

/// A job table: when, what, where it ran and why, how it ended.
pub fn jobs_table(out: &Output, jobs: &[JobRow], now: OffsetDateTime) -> String {
    let mut tbl = table::new(
        out,
        &[
            "when", "command", "project", "where", "outcome", "exit", "why", "took", "phases",
        ],
    );
    for j in jobs {
        let took = j.queue_ms + j.sync_ms + j.run_ms + j.return_ms;
        tbl.add_row(vec![
            t::ago(&j.at, now),
            j.command.clone(),
            project_name(&j.project),
            j.placement.clone(),
            j.outcome.to_string(),
            or_dash(j.exit_code.map(|c| c.to_string())),
            or_dash(Some(j.reason.clone())),
            format!("{:.1}s", took as f64 / 1000.0),
            or_dash(Some(j.phases.to_string())),
        ]);
    }
    table::render(&tbl)
}

fn elapsed(stamp: &str, now: OffsetDateTime) -> String {
    match t::parse(stamp) {
        Some(at) => t::duration((now - at).whole_seconds().max(0) as u64),
        None => stamp.to_string(),
    }
}

/// The last component of a project path: enough to recognise it in a table.
fn project_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

/// The whole plain-text `rch status` for the chosen sections; `-v` on the
/// overview adds the circuit table and the jobs.
pub fn status_text(
    out: &Output,
    report: &FleetReport,
    sections: Sections,
    now: OffsetDateTime,
) -> String {
    let overview = sections.is_overview();
    let detailed = overview && out.verbose > 0;
    let mut blocks = Vec::new();
    if overview {
        let team = report.team.as_ref().map(team_line);
        blocks.push(
            [
                Some(daemon_line(&report.daemon)),
                team,
                Some(summary_line(&report.workers)),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("\n"),
        );
    } else if !report.daemon.running {
        blocks.push(daemon_line(&report.daemon));
    }
    if let Some(error) = &report.daemon.config_error {
        blocks.push(config_error_line(error));
    }
    if overview || sections.circuits {
        if let Some(w) = open_warning(&report.workers, now) {
            blocks.push(w);
        }
    }
    if sections.circuits || detailed {
        blocks.push(circuits_table(out, &report.workers, now));
    }
    if (overview || sections.workers) && !report.workers.is_empty() {
        blocks.push(workers_table(out, &report.workers, now));
    }
    if sections.jobs || detailed {
        blocks.push(jobs_view(out, report, now));
    }
    blocks.join("\n\n")
}

/// `{"circuits": {"w1": {"state": "open", "failures": 3, ...}}}`.
pub fn circuits_json(workers: &[WorkerReport]) -> Value {
    let map: Map<String, Value> = workers
        .iter()
        .map(|w| {
            (
                w.id.clone(),
                serde_json::to_value(&w.circuit).unwrap_or(Value::Null),
            )
        })
        .collect();
    Value::Object(map)
}

/// The JSON of `rch status`: exactly the keys of the sections asked for; the
/// overview carries the daemon, the summary, the workers and the circuits.
pub fn status_json(report: &FleetReport, sections: Sections) -> Value {
    let mut root = Map::new();
    if sections.is_overview() {
        root.insert("daemon".into(), json!(report.daemon));
        if let Some(team) = &report.team {
            root.insert("team".into(), json!(team));
        }
        root.insert("summary".into(), json!(summary_line(&report.workers)));
        root.insert("workers".into(), json!(report.workers));
        root.insert("circuits".into(), circuits_json(&report.workers));
    }
    if sections.circuits {
        root.insert("circuits".into(), circuits_json(&report.workers));
    }
    if sections.workers {
        root.insert("workers".into(), json!(report.workers));
    }
    if sections.jobs {
        root.insert("leases".into(), json!(report.leases));
        root.insert("queue".into(), json!(report.queue));
        root.insert("recent_jobs".into(), json!(report.recent_jobs));
    }
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(state: &str, failures: u32, retry: Option<u64>, err: Option<&str>) -> CircuitReport {
        CircuitReport {
            state: serde_json::from_value(json!(state)).unwrap(),
            failures,
            since: Some("2024-05-01T12:00:00Z".into()),
            retry_in_secs: retry,
            last_error: err.map(String::from),
            error_rate: None,
            epoch: 1,
            admits: state != "open",
        }
    }

    fn worker(id: &str, c: CircuitReport) -> WorkerReport {
        WorkerReport {
            id: id.into(),
            host: format!("{id}.example.com"),
            slots: 4,
            used: 1,
            priority: 100,
            enabled: true,
            draining: false,
            circuit: c,
            last_build: Some("2024-05-01T12:04:00Z".into()),
            latency_ms: Some(12),
            capabilities: None,
        }
    }

    fn now() -> OffsetDateTime {
        t::parse("2024-05-01T12:05:00Z").unwrap()
    }

    fn fleet() -> Vec<WorkerReport> {
        vec![
            worker(
                "w1",
                circuit("open", 3, Some(12), Some("w1: connection refused")),
            ),
            worker("w2", circuit("closed", 0, None, None)),
            worker("w3", circuit("closed", 0, None, None)),
        ]
    }

    #[test]
    fn summary_names_open_workers_and_retry() {
        assert_eq!(
            summary_line(&fleet()),
            "3 workers: 2 closed, 1 open (w1, retry in 12s)"
        );
    }

    #[test]
    fn summary_mentions_drained_and_disabled() {
        let mut ws = fleet();
        ws[1].draining = true;
        ws[2].enabled = false;
        assert_eq!(
            summary_line(&ws),
            "3 workers: 2 closed, 1 open (w1, retry in 12s); w2 draining, w3 disabled"
        );
    }

    #[test]
    fn summary_of_empty_fleet_says_local() {
        assert!(summary_line(&[]).starts_with("0 workers configured"));
    }

    #[test]
    fn warning_says_which_since_why_and_what_to_run() {
        let w = open_warning(&fleet(), now()).unwrap();
        assert!(w.starts_with("⚠ 1 circuit open"), "{w}");
        assert!(w.contains("w1: open since 2024-05-01 12:00:00Z (5m ago), 3 consecutive failures, retry in 12s"), "{w}");
        assert!(w.contains("last error: w1: connection refused"), "{w}");
        assert!(w.contains("rch workers probe w1"), "{w}");
        assert!(w.contains("rch workers reset w1"), "{w}");
    }

    #[test]
    fn no_warning_when_all_closed() {
        assert!(open_warning(&fleet()[1..], now()).is_none());
    }

    #[test]
    fn circuits_table_has_a_row_per_worker() {
        let text = circuits_table(&Output::plain(), &fleet(), now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].contains("LAST ERROR"));
        assert!(lines[1].contains("w1") && lines[1].contains("open") && lines[1].contains("12s"));
        assert!(lines[1].contains("w1: connection refused"));
    }

    #[test]
    fn workers_table_shows_slots_mode_and_latency() {
        let text = workers_table(&Output::plain(), &fleet(), now());
        assert!(text.contains("1/4"), "{text}");
        assert!(
            text.contains("enabled") && text.contains("12ms") && text.contains("1m ago"),
            "{text}"
        );
    }

    #[test]
    fn circuits_json_is_keyed_by_worker() {
        let report = FleetReport {
            workers: fleet(),
            ..Default::default()
        };
        let v = status_json(
            &report,
            Sections {
                circuits: true,
                ..Default::default()
            },
        );
        assert_eq!(v.as_object().unwrap().len(), 1);
        assert_eq!(v["circuits"]["w1"]["state"], "open");
        assert_eq!(v["circuits"]["w1"]["failures"], 3);
        assert_eq!(v["circuits"]["w1"]["retry_in_secs"], 12);
        assert_eq!(v["circuits"]["w1"]["last_error"], "w1: connection refused");
        assert_eq!(v["circuits"]["w2"]["state"], "closed");
    }

    #[test]
    fn overview_text_when_daemon_down() {
        let report = FleetReport {
            workers: fleet(),
            ..Default::default()
        };
        let text = status_text(&Output::plain(), &report, Sections::default(), now());
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("rch daemon: not running"), "{text}");
        assert!(text.contains("3 workers: 2 closed, 1 open (w1, retry in 12s)"));
        assert!(text.contains("⚠ 1 circuit open"));
        assert!(text.contains("w3.example.com"));
    }

    #[test]
    fn verbose_overview_adds_circuits_and_jobs() {
        let report = FleetReport {
            workers: fleet(),
            ..Default::default()
        };
        let out = Output {
            verbose: 1,
            ..Output::plain()
        };
        let text = status_text(&out, &report, Sections::default(), now());
        assert!(
            text.contains("LAST ERROR") && text.contains("recent jobs: none yet"),
            "{text}"
        );
        let plain = status_text(&Output::plain(), &report, Sections::default(), now());
        assert!(!plain.contains("LAST ERROR"), "{plain}");
    }

    #[test]
    fn jobs_view_lists_where_and_why() {
        let report = FleetReport {
            recent_jobs: vec![JobRow {
                id: 1,
                at: "2024-05-01T12:04:00Z".into(),
                project: "/home/u/proj".into(),
                command: "cargo build".into(),
                placement: "local".into(),
                outcome: crate::protocol::JobOutcome::Local,
                exit_code: Some(0),
                reason: "circuit open on w1".into(),
                queue_ms: 0,
                sync_ms: 0,
                run_ms: 1500,
                return_ms: 0,
                phases: crate::phases::Phases(vec![crate::phases::PhaseTime {
                    phase: crate::phases::Phase::Run,
                    us: 1_500_000,
                }]),
            }],
            ..Default::default()
        };
        let text = jobs_view(&Output::plain(), &report, now());
        assert!(
            text.contains("running: none") && text.contains("queued: none"),
            "{text}"
        );
        assert!(
            text.contains("circuit open on w1")
                && text.contains("proj")
                && text.contains("1.5s")
                && text.contains("run 1500ms"),
            "{text}"
        );
    }
}
