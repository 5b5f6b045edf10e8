//! Subcommands whose implementation has not landed yet. They are listed in `--help` so the tree
//! is stable for scripts and docs, and they fail loudly (exit 1) instead of pretending to work.

use clap::Args;
use coordexp_core::Error;

#[derive(Args)]
pub struct Pending {
    /// Arguments for the future implementation (currently rejected).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

impl Pending {
    pub fn run(self, name: &str, issue: u32) -> crate::CliResult {
        let tracked =
            if issue > 0 { format!(" (tracked in issue {issue})") } else { String::new() };
        Err(Error::runtime(format!(
            "`coordexp {name}` is not implemented in this build yet{tracked}"
        ))
        .hint("see README.md for the subcommands that are available now"))
    }
}
