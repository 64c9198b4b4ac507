//! `rch completions SHELL`: shell completion scripts, generated from the
//! argument definitions so they never fall behind.

use super::{Cli, Global};
use clap::{Args, CommandFactory, ValueEnum};

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
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "rch", &mut std::io::stdout());
    Ok(0)
}
