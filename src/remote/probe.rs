//! The worker probe: can this worker host builds right now? It connects over
//! the shared master, runs a login shell and checks that the remote base
//! directory is creatable and writable; in the same remote command it learns
//! the worker's build tools and toolchains ([`crate::caps`]).

use super::failure::{remote_dir_failure, FailureKind, RemoteFailure};
use super::layout::remote_path;
use super::shell::login_shell_command;
use super::ssh::{connect, session_error};
use super::Target;
use crate::caps::{self, Capabilities};
use std::time::{Duration, Instant};

/// Connect and check the worker; returns the round trip of the check over
/// the master connection, and what it learned.
pub async fn probe(target: &Target) -> Result<(Duration, Capabilities), RemoteFailure> {
    let conn = connect(target).await?;
    let base = remote_path(&target.worker.remote_base);
    let script = format!("{PROBE_SCRIPT}\n{}", caps::PROBE_SCRIPT);
    let command = login_shell_command(&script, &[base.as_str()]);
    let started = Instant::now();
    let output = conn
        .session()
        .raw_command(command)
        .output()
        .await
        .map_err(|e| session_error(&conn, target, e))?;
    let round_trip = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => Ok((
            round_trip,
            caps::parse_probe(&String::from_utf8_lossy(&output.stdout)),
        )),
        Some(PROBE_DIR_FAILED) => Err(remote_dir_failure(
            &target.worker.id,
            &target.worker.remote_base,
            &stderr,
        )),
        _ => Err(RemoteFailure::new(
            FailureKind::Other,
            &target.worker.id,
            format!("probe failed: {}", stderr.trim()),
        )),
    }
}

/// Exit code of [`PROBE_SCRIPT`] when the remote base is not usable.
const PROBE_DIR_FAILED: i32 = 3;

/// Creates the remote base, writes and removes a file in it. `$1` is the base,
/// relative to the home directory unless absolute.
const PROBE_SCRIPT: &str = r#"base=$1
case $base in /*) ;; *) base=$HOME/$base ;; esac
probe_file=$base/.rch-probe-$$
if [ -e "$base" ] && [ ! -d "$base" ]; then
  printf '%s: Not a directory\n' "$base" >&2
  exit 3
fi
if ! err=$( { mkdir -p -- "$base" && : > "$probe_file" && rm -f -- "$probe_file"; } 2>&1 ); then
  printf '%s\n' "$err" >&2
  exit 3
fi"#;
