//! Output for operator commands: which mode to print in (JSON, a table on a
//! terminal, plain columns when piped), and the renderers of each surface.
//!
//! Renderers are pure: they take data and the time "now" and return text, so
//! every surface can be checked without a terminal or a daemon.

pub mod diagnose;
pub mod events;
pub mod fleet;
pub mod gc;
pub mod history;
pub mod log;
pub mod metrics;
pub mod progress;
pub mod table;
pub mod time;
pub mod top;

use std::io::IsTerminal;

/// How a command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// `--json`: machine-readable output only on stdout.
    pub json: bool,
    /// stdout is a terminal: draw tables with borders and show spinners.
    pub tty: bool,
    /// Colour is allowed: a terminal, and `NO_COLOR` is not set.
    pub color: bool,
    /// `-q`/`RCH_QUIET=1`: no notes or hints on stderr.
    pub quiet: bool,
    /// `-v`: more detail.
    pub verbose: u8,
}

impl Output {
    /// Decide the mode from the flags and the process environment.
    pub fn detect(json: bool, quiet: bool, verbose: u8) -> Output {
        let tty = std::io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let env_quiet = std::env::var("RCH_QUIET").is_ok_and(|v| !v.is_empty() && v != "0");
        Output {
            json,
            tty,
            color: tty && !no_color && !json,
            quiet: quiet || env_quiet,
            verbose,
        }
    }

    /// Plain text, no terminal, no colour: what a pipe gets (tests).
    #[cfg(test)]
    pub fn plain() -> Output {
        Output {
            json: false,
            tty: false,
            color: false,
            quiet: false,
            verbose: 0,
        }
    }

    /// A note for the operator on stderr (suppressed by `-q`).
    pub fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("rch: {text}");
        }
    }
}

/// Print a value as one pretty JSON document on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
