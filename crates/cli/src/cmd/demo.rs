//! `coordexp demo` — the embedded default run.

use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct DemoArgs {
    /// Output directory for the demo's data and reports.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
}

pub fn run(_args: DemoArgs) -> crate::CliResult {
    Ok(())
}
