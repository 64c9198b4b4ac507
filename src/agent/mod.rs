//! The worker agent: a small program (`rch-agent`) rch installs on a worker
//! and keeps running there, so a build starts its commands without a login
//! shell each time.
//!
//! Every ssh command starts the worker account's shell, and with it
//! `~/.bashrc` (nvm, conda, pyenv: often 100–500 ms), once per remote
//! command. The agent is started once through that shell, so it carries the
//! login environment, and then listens on a unix socket in the worker's
//! home. The client reaches that socket through a stream forwarded by its
//! ssh master (no shell, no new ssh process), and asks it to run one
//! command per connection: the build's run script, or an rsync server.
//!
//! - [`wire`]: the request and the frames on a connection (shared by both sides).
//! - [`serve`]: the agent itself: accept, run, stream back, exit when idle.
//! - [`start`]: `rch-agent start`: one agent per account and version, started detached.
//! - [`pipe`]: `rch-agent pipe`: rsync's remote shell on the client, through the agent.
//!
//! Everything here uses the standard library only, so the program rch copies
//! to workers stays small.

pub mod pipe;
pub mod serve;
pub mod start;
pub mod wire;

/// The `rch-agent` program: `start`, `serve` (on the worker) or `pipe` (on
/// the client, as rsync's `-e`). Returns the process's exit code.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    let mut args = args.into_iter().skip(1);
    let verb = args.next();
    let rest: Vec<std::ffi::OsString> = args.collect();
    match verb.as_ref().and_then(|v| v.to_str()) {
        Some("start") => start::main(&rest),
        Some("serve") => serve::main(&rest),
        Some("pipe") => pipe::main(&rest),
        _ => {
            eprintln!("usage: rch-agent start | serve <socket> | pipe <forward socket> <control socket> <host> <command>...");
            2
        }
    }
}
