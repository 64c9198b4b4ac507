//! `rch daemon`.

use super::Global;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {}

pub fn run(cmd: DaemonCommand, _global: &Global) -> anyhow::Result<i32> {
    match cmd {}
}
