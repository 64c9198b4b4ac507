//! `rch lab`: start, inspect, break and remove throwaway local sshd workers.

use super::{Global, UsageError};
use crate::lab::{AlreadyUp, Isolation, Lab, NoLab, UnknownWorker};
use crate::paths;
use crate::protocol::{Request, Response};
use crate::ui::{self, table, Output};
use clap::Subcommand;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Start local sshd workers on 127.0.0.1 and the rch config layer that uses them.
    Up {
        /// How many workers to start.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=32))]
        workers: u16,
    },
    /// Stop every worker and remove the lab.
    Down,
    /// Show each worker's port and health.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Kill a worker's sshd and its sessions: connections are refused.
    Kill {
        /// Worker id (w1, w2, ...).
        id: String,
    },
    /// Start a killed worker again on its port (also resumes a paused one).
    Revive {
        /// Worker id (w1, w2, ...).
        id: String,
    },
    /// Freeze a worker's sshd with SIGSTOP: connections hang until resumed.
    Pause {
        /// Worker id (w1, w2, ...).
        id: String,
    },
    /// Resume a paused worker.
    Resume {
        /// Worker id (w1, w2, ...).
        id: String,
    },
}

pub fn run(cmd: LabCommand, global: &Global) -> anyhow::Result<i32> {
    let root = paths::lab_dir();
    let result = match cmd {
        LabCommand::Up { workers } => up(&root, workers.into(), global),
        LabCommand::Down => down(&root),
        LabCommand::Status { json } => status(&root, &Output::detect(json, global.quiet, 0)),
        LabCommand::Kill { id } => fault(&root, &id, "killed", |lab| lab.kill(&id)),
        LabCommand::Revive { id } => fault(&root, &id, "revived", |lab| lab.revive(&id)),
        LabCommand::Pause { id } => fault(&root, &id, "paused", |lab| lab.pause(&id)),
        LabCommand::Resume { id } => fault(&root, &id, "resumed", |lab| lab.resume(&id)),
    };
    result.map_err(usage_for_unknown_worker)
}

/// An unknown worker id is a mistake in the command line: exit 64.
fn usage_for_unknown_worker(err: anyhow::Error) -> anyhow::Error {
    match err.downcast::<UnknownWorker>() {
        Ok(unknown) => UsageError(unknown.to_string()).into(),
        Err(other) => other,
    }
}

fn up(root: &std::path::Path, workers: usize, global: &Global) -> anyhow::Result<i32> {
    // Workers must not see the user's home nor the directory the lab was
    // started from (typically the project about to be built).
    let cwd: Vec<std::path::PathBuf> = std::env::current_dir().into_iter().collect();
    let lab = match Lab::up(root, workers, Isolation::client(&cwd)) {
        Ok(lab) => lab,
        Err(err) if err.is::<AlreadyUp>() => {
            println!("rch lab: already up in {}", root.display());
            let lab = Lab::open(root)?;
            println!("{}", workers_table(&lab, &Output::detect(false, false, 0)));
            return Ok(0);
        }
        Err(err) => return Err(err),
    };
    println!(
        "rch lab: {} worker(s) up in {}",
        lab.workers().len(),
        root.display()
    );
    println!("{}", workers_table(&lab, &Output::detect(false, false, 0)));
    println!("{}", lab.confinement().describe());
    reload_running_daemon();
    if !global.quiet {
        print_next_steps(&lab);
    }
    Ok(0)
}

/// A running daemon read the lab's config layer (or its absence) when it
/// started: make it read its configuration again, so the lab is in use now.
fn reload_running_daemon() {
    let answer = super::block_on(async {
        let mut client = crate::client::Client::connect(&paths::socket_path())
            .await
            .ok()?;
        client.call(Request::Reload).await.ok()
    });
    match answer {
        Some(Response::Ok) => println!("rch lab: the running daemon reloaded its configuration"),
        Some(Response::Error { message, .. }) => {
            eprintln!("rch: the running daemon kept its previous configuration: {message}")
        }
        _ => {}
    }
}

fn print_next_steps(lab: &Lab) {
    let first = &lab.workers()[0];
    println!(
        "rch now uses these workers (config layer {}). Try:",
        lab.rch_config().display()
    );
    println!("  rch exec -- cargo build        # runs on a lab worker");
    println!(
        "  rch lab kill {}                # a worker dies; builds go elsewhere",
        first.id
    );
    println!("  rch status --circuits          # the breaker opens after repeated failures");
    println!("  rch lab revive {}", first.id);
    println!("  rch lab down                   # stop the workers, remove the lab");
    println!(
        "Log in by hand: ssh -F {} {}",
        lab.ssh_config().display(),
        first.alias
    );
}

fn down(root: &std::path::Path) -> anyhow::Result<i32> {
    match Lab::open(root) {
        Ok(lab) => {
            lab.down()?;
            println!("rch lab: down, {} removed", root.display());
            reload_running_daemon();
        }
        Err(err) if err.is::<NoLab>() => println!("rch lab: no lab is up"),
        Err(err) => return Err(err),
    }
    Ok(0)
}

fn status(root: &std::path::Path, out: &Output) -> anyhow::Result<i32> {
    match Lab::open(root) {
        Ok(lab) if out.json => {
            ui::print_json(&status_json(root, Some(&lab)))?;
            Ok(0)
        }
        Ok(lab) => {
            println!("rch lab in {}", root.display());
            println!("{}", workers_table(&lab, out));
            println!("{}", lab.confinement().describe());
            Ok(0)
        }
        Err(err) if err.is::<NoLab>() => {
            if out.json {
                ui::print_json(&status_json(root, None))?;
            } else {
                println!("rch lab: no lab is up (start one with `rch lab up`)");
            }
            Ok(1)
        }
        Err(err) => Err(err),
    }
}

/// `{"up": true, "dir": …, "workers": [{"id", "ssh_host", "port", "health", "remote_base"}]}`.
fn status_json(root: &std::path::Path, lab: Option<&Lab>) -> serde_json::Value {
    let workers: Vec<_> = lab
        .map(|lab| {
            lab.workers()
                .iter()
                .map(|w| {
                    json!({
                        "id": w.id,
                        "ssh_host": w.alias,
                        "port": w.port,
                        "health": lab.health(&w.id).to_string(),
                        "remote_base": w.remote_base.display().to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let confinement = lab.map(|lab| lab.confinement().describe().to_string());
    json!({
        "up": lab.is_some(),
        "dir": root.display().to_string(),
        "confinement": confinement,
        "workers": workers,
    })
}

/// Open the lab, inject one fault (or undo it) and show the worker's health.
fn fault(
    root: &std::path::Path,
    id: &str,
    done: &str,
    action: impl FnOnce(&Lab) -> anyhow::Result<()>,
) -> anyhow::Result<i32> {
    let lab = Lab::open(root)?;
    action(&lab)?;
    println!("rch lab: {id} {done}; now {}", lab.health(id));
    Ok(0)
}

/// Bordered on a terminal, plain columns when piped.
fn workers_table(lab: &Lab, out: &Output) -> String {
    let mut tbl = table::new(
        out,
        &["worker", "ssh host", "port", "health", "remote base"],
    );
    for worker in lab.workers() {
        tbl.add_row([
            worker.id.clone(),
            worker.alias.clone(),
            worker.port.to_string(),
            lab.health(&worker.id).to_string(),
            worker.remote_base.display().to_string(),
        ]);
    }
    table::render(&tbl)
}
