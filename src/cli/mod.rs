//! The command line: argument definitions and one file per subcommand.
//!
//! Each subcommand file is glue: it turns arguments into calls on the library
//! modules and their results into output and an exit code.

use clap::{Args, Parser, Subcommand};

pub mod completions;
pub mod config;
pub mod daemon;
pub mod diagnose;
pub mod events;
pub mod exec;
pub mod hook;
pub mod lab;
pub mod man;
pub mod metrics;
pub mod shell_init;
pub mod status;
pub mod top;
pub mod workers;
pub mod wrap;

/// Examples, environment and exit codes of `rch --help` (and the man page).
const AFTER_HELP: &str = "\
Examples:
  rch lab up                          two throwaway local workers to try rch
  rch exec -- cargo build --release   build on a worker (locally when none can)
  rch exec -v -- cargo test           ... and say where the time went
  rch status                          daemon, circuits, workers at a glance
  rch top                             the same, live (q quits, r resets, p probes)
  rch diagnose \"cargo test\"           would it be offloaded, where would it go now?
  rch workers history w1              a worker's recent builds and transitions
  rch wrap install                    send plain `cargo build`, `make`, ... through rch

Environment:
  RCH_CONFIG            the user config file (default ~/.config/rch/config.toml)
  RCH_SOCKET            the daemon socket (default $XDG_RUNTIME_DIR/rch/rch.sock)
  RCH_LOG               log filter of rch's own log lines on stderr (e.g. rch=debug)
  RCH_QUIET=1           no line of rch's own (as -q)
  RCH_VERBOSE=1         more detail (as -v)
  RCH_DISABLE=1         run everything locally
  RCH_REQUIRE_REMOTE=1  exit 75 rather than build locally when no worker can
  RCH_WORKER=ID         build only on this worker

Exit status:
  rch exec: the command's own (128+N when it died by signal N)
  0    success
  64   usage error (unknown command, flag or worker id)
  75   the build could run nowhere it was allowed to (fail-closed)
  78   configuration error (names file, line and key)

Docs: README.md and docs/ in the source tree; `rch man` prints this manual.";

/// Route build commands to remote build workers over SSH.
#[derive(Debug, Parser)]
#[command(
    name = "rch",
    version,
    about,
    propagate_version = true,
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Print nothing of rch's own (the command's output still flows); also RCH_QUIET=1.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a build command on a remote worker (or locally when it cannot be offloaded).
    Exec(exec::ExecArgs),
    /// Show, check and create configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Control the rch daemon.
    #[command(subcommand)]
    Daemon(daemon::DaemonCommand),
    /// Throwaway local sshd workers for trying rch.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// The fleet at a glance: daemon, circuits, workers, jobs.
    Status(status::StatusArgs),
    /// Live view of circuits, workers, builds and events (q quits, r resets, p probes).
    Top(top::TopArgs),
    /// List, probe, reset, drain, enable, disable workers; their history.
    #[command(subcommand)]
    Workers(workers::WorkersCommand),
    /// Breaker transitions and fallbacks, stored and live.
    Events(events::EventsArgs),
    /// The daemon's counters and gauges (Prometheus text).
    Metrics(metrics::MetricsArgs),
    /// Would a command be offloaded, and where would it go now? Does not run it.
    Diagnose(diagnose::DiagnoseArgs),
    /// Print shell completions.
    Completions(completions::CompletionsArgs),
    /// Print the manual page (roff), or write one page per command into a directory.
    Man(man::ManArgs),
    /// Wrap build tools so they go through rch without typing `rch exec`.
    #[command(subcommand)]
    Wrap(wrap::WrapCommand),
    /// Print the shell lines that put the wrappers first on PATH, and completions.
    ShellInit(shell_init::ShellInitArgs),
    /// The coding-agent hook (PreToolUse on stdin), and its install/uninstall/status.
    Hook(hook::HookArgs),
}

/// A usage error: exit 64 with this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Run the parsed command and return the process exit code.
pub fn dispatch(cli: Cli) -> i32 {
    if !matches!(cli.command, Command::Daemon(daemon::DaemonCommand::Run)) {
        restore_default_sigpipe();
        crate::ui::log::init(None);
    }
    let global = cli.global;
    let result = match cli.command {
        Command::Exec(args) => exec::run(args, &global),
        Command::Config(cmd) => config::run(cmd, &global),
        Command::Daemon(cmd) => daemon::run(cmd, &global),
        Command::Lab(cmd) => lab::run(cmd, &global),
        Command::Status(args) => status::run(args, &global),
        Command::Top(args) => top::run(args, &global),
        Command::Workers(cmd) => workers::run(cmd, &global),
        Command::Events(args) => events::run(args, &global),
        Command::Metrics(args) => metrics::run(args, &global),
        Command::Diagnose(args) => diagnose::run(args, &global),
        Command::Completions(args) => completions::run(args, &global),
        Command::Man(args) => man::run(args, &global),
        Command::Wrap(cmd) => wrap::run(cmd, &global),
        Command::ShellInit(args) => shell_init::run(args, &global),
        Command::Hook(args) => hook::run(args, &global),
    };
    match result {
        Ok(code) => code,
        Err(err) => report(err),
    }
}

/// Let a closed pipe end the process quietly (`rch status | head`), as it
/// does for other command-line tools. Rust ignores SIGPIPE by default, which
/// turns such a pipe into a panic on the next print. The daemon keeps the
/// default of Rust: a client hanging up must never kill it.
fn restore_default_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_DFL has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A command line clap could not take: print clap's message; exit 64 (usage
/// error) — or 0 when it was `--help`/`--version`, which clap reports the same way.
pub fn parse_failure(err: clap::Error) -> i32 {
    let _ = err.print();
    if err.use_stderr() {
        crate::EXIT_USAGE
    } else {
        0
    }
}

/// Print an error as one line on stderr and choose its exit code.
fn report(err: anyhow::Error) -> i32 {
    if let Some(e) = err.downcast_ref::<crate::config::ConfigError>() {
        eprintln!("rch: config error: {e}");
        return crate::EXIT_CONFIG;
    }
    if let Some(e) = err.downcast_ref::<UsageError>() {
        eprintln!("rch: {e}");
        return crate::EXIT_USAGE;
    }
    eprintln!("rch: {err:#}");
    1
}

/// Run a future to completion on a fresh single-threaded runtime.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(fut)
}
