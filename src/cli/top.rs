//! `rch top`: the live view. Off a terminal it prints one `rch status`
//! snapshot instead.
//!
//! The view follows the daemon's event stream; the fleet report is fetched
//! again on each event and once a second (for elapsed times and countdowns),
//! never more often on a quiet fleet.

use super::status::{self, StatusArgs};
use super::Global;
use crate::client::Client;
use crate::paths;
use crate::protocol::{Request, Response};
use crate::state::report::FleetReport;
use crate::ui::top::{self, Action, Screen, View};
use clap::Args;
use std::io::IsTerminal;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the screen refreshes without events.
const TICK: Duration = Duration::from_secs(1);
/// Stored events shown when the view opens.
const BACKLOG: usize = 50;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Off a terminal: print the snapshot as JSON (as `rch status --json`).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: TopArgs, global: &Global) -> anyhow::Result<i32> {
    if args.json || !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        let snapshot = StatusArgs {
            circuits: false,
            workers: false,
            jobs: false,
            json: args.json,
        };
        return status::run(snapshot, global);
    }
    super::block_on(live())
}

/// What the loop hears besides keys.
enum Heard {
    Event(crate::state::events::EventRecord),
    /// The event stream ended (daemon stopped).
    StreamEnded,
    /// The answer to a reset or probe.
    Done(String),
}

async fn live() -> anyhow::Result<i32> {
    let socket = paths::socket_path();
    let mut requests = Client::connect_or_start(&socket).await?;
    let (tx, mut heard) = mpsc::channel(64);
    tokio::spawn(follow_events(tx.clone()));
    let mut view = View::default();
    view.set_report(fetch(&mut requests).await?);
    let mut screen = Screen::open()?;
    let mut keys = top::keys();
    let mut tick = tokio::time::interval(TICK);
    let mut signals = Signals::new()?;
    loop {
        let now = time::OffsetDateTime::now_utc();
        screen.terminal.draw(|f| top::draw(f, &view, now))?;
        tokio::select! {
            key = keys.recv() => match key.unwrap_or(Action::Quit) {
                Action::Quit => break,
                Action::Redraw => {}
                a @ (Action::Up | Action::Down) => view.select(a),
                a @ (Action::Reset | Action::Probe) => act(&mut view, a, tx.clone()),
            },
            Some(h) = heard.recv() => match h {
                Heard::Event(e) => {
                    view.push_event(e);
                    refresh(&mut view, &mut requests).await;
                }
                Heard::StreamEnded => {
                    view.message = Some("the daemon closed the event stream (stopped?)".into());
                }
                Heard::Done(text) => {
                    view.message = Some(text);
                    refresh(&mut view, &mut requests).await;
                }
            },
            _ = tick.tick() => refresh(&mut view, &mut requests).await,
            _ = signals.any() => break,
        }
    }
    drop(screen);
    Ok(0)
}

async fn fetch(client: &mut Client) -> anyhow::Result<FleetReport> {
    match client.call(Request::Status).await? {
        Response::Status(report) => Ok(*report),
        other => anyhow::bail!("unexpected answer from the daemon: {other:?}"),
    }
}

/// Fetch the report again; a daemon that went away is said on screen.
async fn refresh(view: &mut View, client: &mut Client) {
    match fetch(client).await {
        Ok(report) => view.set_report(report),
        Err(_) => {
            view.report.daemon.running = false;
            match Client::connect(&paths::socket_path()).await {
                Ok(c) => *client = c,
                Err(_) => view.message = Some("daemon not reachable; retrying".into()),
            }
        }
    }
}

/// Stored events first, then live ones, until the daemon closes the stream.
async fn follow_events(tx: mpsc::Sender<Heard>) {
    let Ok(mut client) = Client::connect(&paths::socket_path()).await else {
        let _ = tx.send(Heard::StreamEnded).await;
        return;
    };
    let request = Request::Events {
        follow: true,
        limit: BACKLOG,
    };
    if client.send(request).await.is_ok() {
        while let Ok(Response::Event(e)) = client.recv().await {
            if tx.send(Heard::Event(e)).await.is_err() {
                return;
            }
        }
    }
    let _ = tx.send(Heard::StreamEnded).await;
}

/// Reset or probe the selected worker on a connection of its own, so a
/// slow probe never stalls the view; the answer comes back as a message.
fn act(view: &mut View, action: Action, tx: mpsc::Sender<Heard>) {
    let Some(id) = view.selected_worker().map(String::from) else {
        return;
    };
    let (request, doing) = match action {
        Action::Reset => (
            Request::Reset {
                worker: Some(id.clone()),
            },
            "resetting",
        ),
        _ => (
            Request::Probe {
                worker: Some(id.clone()),
            },
            "probing",
        ),
    };
    view.message = Some(format!("{id}: {doing}…"));
    tokio::spawn(async move {
        let text = match ask(request).await {
            Ok(Response::Ok) => format!("{id}: circuit reset to closed"),
            Ok(Response::Probed { results }) => match results.first() {
                Some(r) if r.ok => format!("{id}: probe ok, circuit {}", r.state),
                Some(r) => format!(
                    "{id}: probe failed: {}; circuit {}",
                    r.error.as_deref().unwrap_or("?"),
                    r.state
                ),
                None => format!("{id}: not probed"),
            },
            Ok(Response::Error { message, .. }) => format!("{id}: {message}"),
            Ok(other) => format!("{id}: unexpected answer {other:?}"),
            Err(e) => format!("{id}: {e:#}"),
        };
        let _ = tx.send(Heard::Done(text)).await;
    });
}

async fn ask(request: Request) -> anyhow::Result<Response> {
    let mut client = Client::connect(&paths::socket_path()).await?;
    Ok(client.call(request).await?)
}

/// SIGINT, SIGTERM and SIGHUP (a closed ssh session) end the view cleanly.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn any(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}
