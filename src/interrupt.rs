//! The user's interrupts during a build: SIGINT, SIGTERM and SIGHUP are caught
//! from the build's first step, so that no phase (lease wait, push, run, pull)
//! can mistake one for a fault, and end it with the code a shell reports.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The signals that end a build, caught for as long as this value lives
/// (and, as with any handler tokio installs, for the rest of the process).
pub struct Interrupts {
    int: Option<Signal>,
    term: Option<Signal>,
    hup: Option<Signal>,
}

impl Interrupts {
    /// Start catching. A signal that cannot be caught keeps its default action.
    pub fn catch() -> Interrupts {
        Interrupts {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// Resolves with the number of the next signal that arrives.
    pub async fn next(&mut self) -> i32 {
        tokio::select! {
            Some(()) = recv(&mut self.int) => libc::SIGINT,
            Some(()) = recv(&mut self.term) => libc::SIGTERM,
            Some(()) = recv(&mut self.hup) => libc::SIGHUP,
        }
    }
}

async fn recv(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The exit code of a build ended by `signal`, as a shell reports it.
pub fn exit_code(signal: i32) -> i32 {
    128 + signal
}

/// The signal's usual name, for the one line rch prints.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
