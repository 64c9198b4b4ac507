//! `rch exec`: run one command on a worker, or locally when it cannot be offloaded.

use super::{Global, UsageError};
use crate::build::{self, ExecRequest};
use crate::classify::{self, Decision};
use crate::config::{self, Overrides};
use clap::Args;
use std::ffi::OsString;

/// Examples, environment and exit codes of `rch exec --help`.
const AFTER_HELP: &str = "\
Examples:
  rch exec -- cargo build --release     on a worker; artifacts come back to target/
  rch exec -v -- cargo test             ... then one line of phase timings:
                                        rch: lease 0.6ms · connect 0.7ms · push 161ms · run 91ms · pull 119ms · release 3ms
  rch exec --worker w1 -- make -j8      only on w1 (locally if it cannot)
  rch exec --require-remote -- cargo check
                                        exit 75 rather than build locally
  rch exec -- cargo --version           not a build: runs here at once, silently

Every build prints one line on stderr saying where it ran and why:
  rch: ran on w1
  rch: ran locally: circuit open on w1 (retry in 30s)

Environment:
  RCH_WORKER=ID         as --worker
  RCH_REQUIRE_REMOTE=1  as --require-remote
  RCH_DISABLE=1         run locally, as if rch were not there
  RCH_QUIET=1           no `rch:` line (as -q)
  RCH_VERBOSE=1         phase timings, and why a non-build ran locally (as -v)
  RCH_LOG=rch=debug     trace the build's phases as spans on stderr

Exit status:
  the command's own exit code (128+N when it died by signal N, 130 on Ctrl-C)
  75   no worker could take it and local runs are not allowed
  78   configuration error
  64   usage error (e.g. an unknown --worker id)";

#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct ExecArgs {
    /// Run on this worker only (also RCH_WORKER).
    #[arg(long, value_name = "ID", add = super::workers::complete_worker_id())]
    pub worker: Option<String>,
    /// Fail (exit 75) instead of running locally when no worker can take it (also RCH_REQUIRE_REMOTE=1).
    #[arg(long)]
    pub require_remote: bool,
    /// Run locally without asking the daemon.
    #[arg(long, conflicts_with_all = ["worker", "require_remote"])]
    pub local: bool,
    /// The command and its arguments, passed verbatim.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

/// `-v` or `RCH_VERBOSE=1`: also say why a command that is not a build ran here.
fn verbose(global: &Global) -> bool {
    global.verbose > 0 || config::env_flag("RCH_VERBOSE")
}

/// A whole `cargo clean`: here first, then the project's `target/` on the
/// workers that built it (they would otherwise keep it until `workers gc`).
fn clean_everywhere(req: &ExecRequest) -> anyhow::Result<i32> {
    let code = build::run_local(&req.argv, &req.cwd);
    if code != 0 {
        return Ok(code);
    }
    let loaded = config::load(&req.cwd)?;
    if !loaded.config.general.enabled || loaded.config.workers.is_empty() {
        return Ok(0);
    }
    let cargo = classify::Offload {
        tool: classify::Tool::Cargo,
        kind: classify::Kind::Build,
        artifacts: classify::Artifacts::None,
    };
    let root = build::project_root(&loaded, &req.cwd, &cargo);
    let out = crate::ui::Output::detect(false, req.quiet, 0);
    let gc = crate::gc::clean_after_cargo_clean(&loaded.config, &root, &out);
    let (cleaned, busy) = super::block_on(gc)?;
    if !req.quiet {
        for line in crate::ui::gc::clean_lines(&cleaned, &busy) {
            eprintln!("{line}");
        }
    }
    Ok(0)
}

pub fn run(args: ExecArgs, global: &Global) -> anyhow::Result<i32> {
    let cwd = std::env::current_dir()?;
    let mut req = ExecRequest {
        argv: args.command,
        cwd,
        quiet: global.quiet || config::env_flag("RCH_QUIET"),
        verbose: verbose(global),
    };
    if args.local {
        return Ok(build::local_now(&req, "--local"));
    }
    // Classify before reading any config: a command that stays local never
    // pays for (or fails on) anything else.
    let offload = match classify::classify(&req.argv) {
        Decision::Offload(o) => o,
        Decision::Local(_) if crate::gc::is_whole_cargo_clean(&req.argv) => {
            return clean_everywhere(&req);
        }
        Decision::Local(why) => {
            // Not a build: configure scripts call `cc --version` and friends by
            // the hundred, so the line saying so is shown only on request.
            req.quiet |= !req.verbose;
            return Ok(build::local_now(&req, &why));
        }
    };
    let mut loaded = config::load(&req.cwd)?;
    loaded.apply(&Overrides {
        require_remote: args.require_remote,
        local: false,
        worker: args.worker,
        quiet: global.quiet,
    });
    req.quiet |= loaded.quiet;
    let sources = crate::cost::source_sizes(&offload, &req.argv, &req.cwd);
    if let Some(why) = crate::cost::keep_local(&offload, &sources, &loaded.config.cost) {
        // Probes come by the hundred too: said only on request, as above.
        req.quiet |= !req.verbose;
        return Ok(build::local_now(&req, &why));
    }
    if let Some(id) = &loaded.requested_worker {
        if loaded.config.worker(id).is_none() {
            let known = loaded.config.worker_ids().join(", ");
            return Err(UsageError(format!("unknown worker {id:?} (known: {known})")).into());
        }
    }
    Ok(super::block_on(build::execute(&loaded, &req, offload)))
}
