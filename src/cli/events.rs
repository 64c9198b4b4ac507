//! `rch events`: the stored events, and with `--follow` the live ones.

use super::Global;
use crate::client::Client;
use crate::paths;
use crate::protocol::{Request, Response, WireError};
use crate::state::events::EventRecord;
use crate::state::store::Store;
use crate::ui::{self, Output};
use clap::Args;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep streaming new events as the daemon emits them.
    #[arg(short, long)]
    pub follow: bool,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// How many stored events to show first.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub limit: usize,
}

pub fn run(args: EventsArgs, global: &Global) -> anyhow::Result<i32> {
    let out = Output::detect(args.json, global.quiet, global.verbose);
    super::block_on(events(&out, args.follow, args.limit))
}

async fn events(out: &Output, follow: bool, limit: usize) -> anyhow::Result<i32> {
    let socket = paths::socket_path();
    let mut client = if follow {
        Client::connect_or_start(&socket).await?
    } else {
        match Client::connect(&socket).await {
            Ok(c) => c,
            // Stored events do not need a daemon.
            Err(_) => return stored(out, limit),
        }
    };
    client.send(Request::Events { follow, limit }).await?;
    loop {
        match client.recv().await {
            Ok(Response::Event(e)) => print_event(out, &e),
            Ok(Response::Ok) => return Ok(0),
            Ok(Response::Error { message, .. }) => anyhow::bail!("daemon: {message}"),
            Ok(other) => anyhow::bail!("unexpected answer from the daemon: {other:?}"),
            Err(WireError::Closed) => {
                out.note("the daemon closed the stream (stopped?)");
                return Ok(0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn stored(out: &Output, limit: usize) -> anyhow::Result<i32> {
    let db = paths::state_db();
    if !db.exists() {
        out.note("no events recorded yet");
        return Ok(0);
    }
    for e in Store::open_readonly(&db)?.events(None, limit)? {
        print_event(out, &e);
    }
    Ok(0)
}

fn print_event(out: &Output, e: &EventRecord) {
    if out.json {
        println!("{}", e.to_json_line());
    } else {
        println!("{}", ui::events::event_line(e));
    }
}
