//! `rch lab`.

use super::Global;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum LabCommand {}

pub fn run(cmd: LabCommand, _global: &Global) -> anyhow::Result<i32> {
    match cmd {}
}
