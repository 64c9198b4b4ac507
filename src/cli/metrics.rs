//! `rch metrics`: the daemon's counters and gauges as Prometheus text.

use super::Global;
use crate::client::Client;
use crate::paths;
use crate::protocol::{Request, Response};
use crate::ui;
use clap::Args;

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The samples as JSON (`{"metrics": [{"name", "labels", "value"}]}`).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: MetricsArgs, _global: &Global) -> anyhow::Result<i32> {
    super::block_on(async {
        let socket = paths::socket_path();
        // Counters live in the daemon; starting one just to read zeros would mislead.
        let Ok(mut client) = Client::connect(&socket).await else {
            anyhow::bail!(
                "the daemon is not running (on {}): no metrics; `rch daemon start` starts it",
                socket.display()
            );
        };
        match client.call(Request::Metrics).await? {
            Response::Metrics { text } if args.json => {
                ui::print_json(&serde_json::json!({ "metrics": ui::metrics::samples(&text) }))?;
                Ok(0)
            }
            Response::Metrics { text } => {
                print!("{text}");
                Ok(0)
            }
            Response::Error { message, .. } => anyhow::bail!("daemon: {message}"),
            other => anyhow::bail!("unexpected answer from the daemon: {other:?}"),
        }
    })
}
