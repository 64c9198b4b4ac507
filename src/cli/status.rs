//! `rch status`: the fleet from the running daemon, or from the persisted
//! state when the daemon is down (never starting it).

use super::Global;
use crate::fleet_report::current_report;
use crate::ui::{self, fleet::Sections, Output};
use clap::Args;

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
        let now = time::OffsetDateTime::now_utc();
        println!("{}", ui::fleet::status_text(&out, &report, sections, now));
    }
    Ok(0)
}
