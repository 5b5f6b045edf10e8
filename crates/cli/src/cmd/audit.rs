//! `coordexp audit --config CFG [--model DIR] [--data FILE.jsonl] [--json OUT.json]` — the
//! pipeline map and the CPU checks of a config, its model directory and its data, before a GPU
//! hour is spent. Markdown on stdout; exit 0 when every check passes, 2 naming each failure.

use clap::Args;
use coordexp_audit::{AuditOptions, audit};
use coordexp_core::progress::Progress;
use coordexp_core::{Error, config};
use std::path::PathBuf;

#[derive(Args)]
pub struct AuditArgs {
    /// The run's YAML config.
    #[arg(long)]
    pub config: PathBuf,
    /// Model directory; overrides the config's `model.path`.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A JSONL file to audit instead of the config's `data.train` and `data.val`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(a: AuditArgs, progress: Progress) -> crate::CliResult {
    let loaded = config::load(&a.config)?;
    let report = audit(
        &loaded,
        &AuditOptions {
            model: a.model,
            data: a.data,
            progress: progress.enabled(),
            torch_version: Some(coordexp_model::runtime::TORCH_VERSION.into()),
            ..AuditOptions::default()
        },
    )?;
    print!("{}", report.markdown());
    if let Some(path) = &a.json {
        std::fs::write(path, report.json()?).map_err(|e| Error::io("write", path, &e))?;
    }
    if report.passed() {
        return Ok(());
    }
    Err(Error::many(report.failures())
        .unwrap_or_else(|| Error::input("the audit failed").hint("see the report above")))
}
