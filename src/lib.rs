//! rch routes build commands to remote build workers over SSH.
//!
//! The crate is one library plus the `rch` binary (`src/main.rs`), which only
//! parses arguments and dispatches into [`cli`]. The map of the crate:
//!
//! - [`cli`]: one file per subcommand; glue between arguments and the modules below.
//! - [`config`]: layered configuration (defaults < user < lab < project < env < flags) and validation.
//! - [`paths`]: where rch keeps its config, state, socket and SSH control sockets (XDG).
//! - [`breaker`]: the per-worker circuit breaker; a pure state machine, time passed in.
//! - [`select`]: worker choice, slot accounting and the FIFO wait queue; pure.
//! - [`caps`]: worker capabilities (tools, toolchains), what a build needs, whether they fit; pure.
//! - [`classify`]: which commands can be offloaded, and their kind.
//! - [`protocol`]: the messages between the CLI and the daemon, framing and version.
//! - [`client`]: the CLI side of the daemon socket (connect, auto-start, requests).
//! - [`needs`]: what a build needs of a worker, found on this machine (local rustc, cc, target).
//! - [`tool_probe`]: local tools' answers about themselves (`rustc -vV`), cached while the toolchain is unchanged.
//! - [`envcheck`]: what a cargo build read from its environment vs what the worker had; pure.
//! - [`envrules`]: which environment variables a remote build gets (forward/withhold rules); pure.
//! - [`build_files`]: where a build's files are, here and on a worker (synced root, mirrored path, target dirs).
//! - [`cargo_layout`]: cargo's path-dependency closure and target directory on this machine.
//! - [`recorded`]: build files (CMake, Meson, autotools) that record this machine's absolute paths.
//! - [`build`]: the path of one build: lease, sync, run, return, release, fail over.
//! - [`phases`]: where a build's time went: its phases, timed and traced.
//! - [`interrupt`]: SIGINT/SIGTERM/SIGHUP during a build, and the exit code a shell reports.
//! - [`cargo_report`]: cargo's JSON report of a remote build: kept off the terminal, read for the artifacts, the program, the test binaries.
//! - [`cargo_run`]: `cargo run` built on a worker and run here (arguments split, program found in cargo's report).
//! - [`colours`]: what a remote build needs to colour its output as on this terminal.
//! - [`cost`]: the cost rule that keeps tiny compiles (configure probes) local; pure.
//! - [`gc`]: worker disk clean-up (`rch workers gc`, `max_disk_gb`, `cargo clean` on workers).
//! - [`daemon`]: the daemon: its sans-IO fleet core, and the socket server, timer and prober around it.
//! - [`state`]: the fleet's state as daemon and client read it: events, reports, the SQLite store, the offline view.
//! - [`random`]: unpredictable names and secrets (nonces, tokens) from the system's random source.
//! - [`clock`]: time as the daemon sees it (system or manual), RFC 3339 stamps.
//! - [`agent`]: the worker agent (`rch-agent`): runs a build's remote commands without a login shell each time.
//! - [`remote`]: SSH master connections, where builds live on workers, rsync transfer, remote execution.
//! - [`tree`]: the project tree as it is pushed: ignore rules, snapshots and what changed.
//! - [`tree_marks`]: a build's question to the daemon's tree watch, and the mark kept beside its remembered push.
//! - [`team`]: a team's shared fleet: breakers, slots and events through Redis.
//! - [`lab`]: throwaway local sshd workers for trying rch and for its tests.
//! - [`diagnose`]: why a command would run where it would (`rch diagnose`); pure.
//! - [`fleet_report`]: the fleet for operator commands: the daemon's report, else the saved state.
//! - [`ui`]: tables, progress and output modes.
//! - [`service`]: the systemd user unit for the daemon.
//! - [`wrap`]: shell wrappers (shims) that send build tools through `rch exec`.
//! - [`hook`]: the coding-agent PreToolUse hook and its settings entry.
//!
//! Modules the binary, the tests or the benchmarks use are public; the rest are private to the crate.

pub mod agent;
pub mod breaker;
mod build;
mod build_files;
pub mod caps;
mod cargo_layout;
mod cargo_report;
mod cargo_run;
pub mod classify;
pub mod cli;
pub mod client;
pub mod clock;
mod colours;
pub mod config;
mod cost;
pub mod daemon;
mod diagnose;
mod envcheck;
pub mod envrules;
mod fleet_report;
mod gc;
mod hook;
mod interrupt;
pub mod lab;
pub mod needs;
mod paths;
mod phases;
pub mod protocol;
mod random;
mod recorded;
pub mod remote;
pub mod select;
mod service;
pub mod state;
pub mod team;
mod tool_probe;
mod tree;
mod tree_marks;
mod ui;
pub mod wrap;

/// Exit code when a command could run nowhere it was allowed to (EX_TEMPFAIL).
pub const EXIT_UNAVAILABLE: i32 = 75;
/// Exit code for a configuration error (EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;
/// Exit code for a usage error (EX_USAGE).
pub const EXIT_USAGE: i32 = 64;
