//! `coordexp data …` — dataset tools (owned by the data layer).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum DataCommand {}

pub fn run(cmd: DataCommand) -> crate::CliResult {
    match cmd {}
}
