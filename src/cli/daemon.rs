//! `rch daemon`: run, start, stop and inspect the daemon.

use super::Global;
use crate::client::{self, Client};
use crate::clock::SystemClock;
use crate::daemon::{self, DaemonOptions};
use crate::paths;
use crate::protocol::{Request, Response};
use clap::Subcommand;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit code of `rch daemon status` when no daemon runs (as LSB init scripts do).
const EXIT_NOT_RUNNING: i32 = 3;

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Run the daemon in the foreground (logs to stderr).
    Run,
    /// Start the daemon in the background (reports a running one).
    Start,
    /// Stop the running daemon.
    Stop,
    /// Is the daemon running? Version, pid, uptime, socket (exit 3 when it is not).
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the daemon log.
    Logs {
        /// Lines from the end.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
    },
    /// Re-read the configuration (same as SIGHUP).
    Reload,
    /// Write and enable a systemd user unit for the daemon.
    InstallService,
}

pub fn run(cmd: DaemonCommand, _global: &Global) -> anyhow::Result<i32> {
    match cmd {
        DaemonCommand::Run => run_foreground(),
        DaemonCommand::Start => super::block_on(start()),
        DaemonCommand::Stop => super::block_on(stop()),
        DaemonCommand::Status { json } => super::block_on(status(json)),
        DaemonCommand::Logs { lines } => logs(lines),
        DaemonCommand::Reload => super::block_on(reload()),
        DaemonCommand::InstallService => crate::service::install_service(),
    }
}

fn run_foreground() -> anyhow::Result<i32> {
    init_logging();
    // The daemon serves every project: it reads the user (and lab) layers only.
    let config_source: daemon::ConfigSource = Box::new(|files| Ok(files.load()?));
    let files = crate::config::DaemonFiles::of_this_process();
    // Fail on a bad config before forking off any work.
    config_source(&files)?;
    let opts = DaemonOptions {
        socket: paths::socket_path(),
        db: paths::state_db(),
        clock: Arc::new(SystemClock),
        config: config_source,
        files,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(daemon::run(opts))?;
    Ok(0)
}

fn init_logging() {
    crate::ui::log::init(Some("info"));
}

async fn ping(socket: &Path) -> Option<Response> {
    let mut c = Client::connect(socket).await.ok()?;
    c.call(Request::Ping).await.ok()
}

async fn start() -> anyhow::Result<i32> {
    let socket = paths::socket_path();
    if let Some(Response::Hello { pid, version, .. }) = ping(&socket).await {
        println!(
            "rch daemon already running (pid {pid}, version {version}) on {}",
            socket.display()
        );
        return Ok(0);
    }
    // Surface config errors here, with exit 78, rather than in the log.
    crate::config::load(Path::new("/"))?;
    let mut daemon = client::start_daemon(&socket)?;
    let mut c = client::wait_for_started(&socket, &mut daemon, Duration::from_secs(5)).await?;
    match c.call(Request::Ping).await? {
        Response::Hello { pid, .. } => {
            println!("rch daemon started (pid {pid}) on {}", socket.display());
            Ok(0)
        }
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
}

async fn stop() -> anyhow::Result<i32> {
    let socket = paths::socket_path();
    let Ok(mut c) = Client::connect(&socket).await else {
        println!("rch daemon is not running");
        return Ok(0);
    };
    c.call(Request::Shutdown).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Client::connect(&socket).await.is_ok() {
        if Instant::now() > deadline {
            anyhow::bail!("daemon did not stop within 10s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("rch daemon stopped");
    Ok(0)
}

async fn status(json: bool) -> anyhow::Result<i32> {
    let socket = paths::socket_path();
    let answer = ping(&socket).await;
    if json {
        return status_json(answer, &socket);
    }
    match answer {
        Some(Response::Hello {
            version,
            pid,
            uptime_secs,
            protocol,
        }) => {
            println!("rch daemon running");
            println!("  version   {version} (protocol {protocol})");
            println!("  pid       {pid}");
            println!("  uptime    {uptime_secs}s");
            println!("  socket    {}", socket.display());
            println!("  state     {}", paths::state_db().display());
            println!("  log       {}", paths::daemon_log().display());
            Ok(0)
        }
        _ => {
            println!("rch daemon not running (socket {})", socket.display());
            Ok(EXIT_NOT_RUNNING)
        }
    }
}

/// `{"running": true, "version", "protocol", "pid", "uptime_secs", "socket", "state", "log"}`.
fn status_json(answer: Option<Response>, socket: &Path) -> anyhow::Result<i32> {
    let mut doc = serde_json::json!({
        "running": false,
        "socket": socket.display().to_string(),
        "state": paths::state_db().display().to_string(),
        "log": paths::daemon_log().display().to_string(),
    });
    let running = matches!(answer, Some(Response::Hello { .. }));
    if let Some(Response::Hello {
        version,
        pid,
        uptime_secs,
        protocol,
    }) = answer
    {
        doc["running"] = true.into();
        doc["version"] = version.into();
        doc["protocol"] = protocol.into();
        doc["pid"] = pid.into();
        doc["uptime_secs"] = uptime_secs.into();
    }
    crate::ui::print_json(&doc)?;
    Ok(if running { 0 } else { EXIT_NOT_RUNNING })
}

fn logs(lines: usize) -> anyhow::Result<i32> {
    let path = paths::daemon_log();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("no daemon log yet at {}", path.display());
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let all: Vec<&str> = text.lines().collect();
    for line in &all[all.len().saturating_sub(lines)..] {
        println!("{line}");
    }
    Ok(0)
}

async fn reload() -> anyhow::Result<i32> {
    let socket = paths::socket_path();
    let Ok(mut c) = Client::connect(&socket).await else {
        println!("rch daemon is not running; nothing to reload");
        return Ok(0);
    };
    match c.call(Request::Reload).await? {
        Response::Ok => {
            println!("configuration reloaded");
            Ok(0)
        }
        Response::Error { message, .. } => {
            eprintln!("{}", crate::ui::fleet::config_error_line(&message));
            Ok(crate::EXIT_CONFIG)
        }
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
}
