//! `rch config`.

use super::Global;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {}

pub fn run(cmd: ConfigCommand, _global: &Global) -> anyhow::Result<i32> {
    match cmd {}
}
