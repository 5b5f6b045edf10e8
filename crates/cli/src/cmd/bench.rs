//! `coordexp bench …` — benchmarks.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {}

pub fn run(cmd: BenchCommand) -> crate::CliResult {
    match cmd {}
}
