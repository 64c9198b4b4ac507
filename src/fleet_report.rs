//! The fleet for operator commands (`rch status`, `rch workers list`,
//! `rch diagnose`): from the running daemon when it answers, else from the
//! saved state ([`crate::state::offline`]). Never starts the daemon.

use crate::client::Client;
use crate::clock::{Clock, SystemClock};
use crate::protocol::{Request, Response};
use crate::state::offline;
use crate::state::report::FleetReport;
use crate::ui::Output;
use crate::{config, paths};
use std::path::Path;
use std::time::Duration;

/// A daemon that does not answer within this long is treated as down.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The fleet from the daemon if it answers, else from the store and config
/// (with a note on stderr when a daemon listens but fails to answer).
pub async fn current_report(out: &Output) -> anyhow::Result<FleetReport> {
    match live_report(&paths::socket_path()).await {
        Ok(Some(report)) => Ok(report),
        Ok(None) => saved_report(),
        Err(why) => {
            out.note(&format!("{why}; showing the persisted state"));
            saved_report()
        }
    }
}

/// Ask a running daemon; `Ok(None)` when none listens.
async fn live_report(socket: &Path) -> Result<Option<FleetReport>, String> {
    let mut client = match Client::connect(socket).await {
        Ok(c) => c,
        // Another user's socket: say so, loudly, and do not talk to it.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(e.to_string()),
        Err(_) => return Ok(None),
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
fn saved_report() -> anyhow::Result<FleetReport> {
    let config = config::load(Path::new("/"))?.config;
    offline::stored_report(&config, &paths::state_db(), SystemClock.now_ms())
}
