//! `rch man`: the manual page, generated from the argument definitions
//! (clap_mangen) so it never falls behind the binary.

use super::{Cli, Global};
use clap::{Args, CommandFactory};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write rch.1 and one page per subcommand (rch-exec.1, ...) into this directory
    /// instead of printing rch.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(args: ManArgs, _global: &Global) -> anyhow::Result<i32> {
    let command = Cli::command();
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(command, &dir)?;
        }
        None => clap_mangen::Man::new(command).render(&mut std::io::stdout())?,
    }
    Ok(0)
}
