//! rch's own log lines (tracing) on stderr, filtered by `RCH_LOG`.
//!
//! The daemon always logs (default `info`; its stderr is the daemon log).
//! The client logs only when `RCH_LOG` is set, so a build's terminal stays
//! quiet. Spans print when they close, with their duration: with
//! `RCH_LOG=rch=debug` one build shows lease, connect, push, run, pull and
//! release with the time each took.

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

/// The environment variable holding the filter (`debug`, `rch=debug`, ...).
pub const ENV: &str = "RCH_LOG";

/// Log to stderr with `RCH_LOG`'s filter, else `default`; `None` = log
/// nothing unless `RCH_LOG` is set.
pub fn init(default: Option<&str>) {
    let filter = match (EnvFilter::try_from_env(ENV), default) {
        (Ok(filter), _) => filter,
        (Err(_), Some(level)) => EnvFilter::new(level),
        (Err(_), None) => return,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_span_events(FmtSpan::CLOSE)
        .try_init();
}
