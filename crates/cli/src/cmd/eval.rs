//! `coordexp eval …` — evaluation (owned by the eval layer).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum EvalCommand {}

pub fn run(cmd: EvalCommand) -> crate::CliResult {
    match cmd {}
}
