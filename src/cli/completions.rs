//! `rch completions SHELL`: the shell's registration of rch's dynamic
//! completions. Each completion request runs `rch` itself (with
//! `RCH_COMPLETE=<shell>`), which answers from the argument definitions —
//! so completions never fall behind the binary — and from the configuration
//! for worker ids.

use super::Global;
use clap::{Args, ValueEnum};
use clap_complete::env::EnvCompleter;

/// The variable that turns an `rch` run into a completion request.
pub const COMPLETE_VAR: &str = "RCH_COMPLETE";

/// The shells rch prints completions for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: Shell,
}

pub fn run(args: CompletionsArgs, _global: &Global) -> anyhow::Result<i32> {
    let shell: &dyn EnvCompleter = match args.shell {
        Shell::Bash => &clap_complete::env::Bash,
        Shell::Zsh => &clap_complete::env::Zsh,
        Shell::Fish => &clap_complete::env::Fish,
    };
    // The script calls this very binary back, wherever it is installed.
    let completer = std::env::current_exe()?.display().to_string();
    shell.write_registration(
        COMPLETE_VAR,
        "rch",
        "rch",
        &completer,
        &mut std::io::stdout(),
    )?;
    Ok(0)
}
