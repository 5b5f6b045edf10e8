//! `coordexp config …`

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ConfigCommand {}

pub fn run(cmd: ConfigCommand) -> crate::CliResult {
    match cmd {}
}
