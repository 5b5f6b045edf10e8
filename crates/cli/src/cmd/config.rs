//! `coordexp config check FILE` and `coordexp config show FILE`.

use clap::Subcommand;
use coordexp_core::config;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a config (extends chain, unknown keys, types, cross-field coherence); exit 0 or 2.
    Check {
        /// The YAML config file.
        file: PathBuf,
    },
    /// Print the fully resolved config, each value annotated with the file:line it came from.
    Show {
        /// The YAML config file.
        file: PathBuf,
        /// Print plain YAML without provenance comments.
        #[arg(long)]
        plain: bool,
    },
}

pub fn run(cmd: ConfigCommand) -> crate::CliResult {
    match cmd {
        ConfigCommand::Check { file } => {
            config::load(&file)?;
            println!("ok: {} is a valid coordexp config", file.display());
            Ok(())
        }
        ConfigCommand::Show { file, plain } => {
            let loaded = config::load(&file)?;
            print!("{}", if plain { loaded.resolved_yaml() } else { loaded.show() });
            Ok(())
        }
    }
}
