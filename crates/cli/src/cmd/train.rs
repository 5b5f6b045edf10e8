//! `coordexp train CONFIG [--resume DIR [--allow-changes]]` — training from a config.

use clap::Args;
use coordexp_core::config;
use coordexp_core::progress::Progress;
use coordexp_train::trainer::{self, TrainOptions};
use std::path::PathBuf;

#[derive(Args)]
#[command(
    after_help = "CPU use (no effect on results): COORDEXP_CPU_WORKERS data-parallel workers, \
each running micro-batches of a window (default 1; useful with train.accumulation >= 2), and \
COORDEXP_CPU_THREADS libtorch threads per worker (default: every core)."
)]
pub struct TrainArgs {
    /// The run's YAML config (every hyper-parameter lives there).
    pub config: PathBuf,
    /// Continue a run: its directory (newest checkpoint) or one checkpoint directory.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Accept resuming with changed data, packing plan or config (recorded in manifest.json).
    #[arg(long, requires = "resume")]
    pub allow_changes: bool,
}

pub fn run(a: TrainArgs, progress: Progress) -> crate::CliResult {
    let loaded = config::load(&a.config)?;
    let summary = trainer::train(
        &loaded,
        TrainOptions {
            resume: a.resume,
            allow_changes: a.allow_changes,
            progress: progress.enabled(),
            ..TrainOptions::default()
        },
    )?;
    println!("run directory: {}", summary.run_dir.display());
    if summary.nothing_to_do {
        println!(
            "nothing to do: the run has taken all {} steps of its schedule (checkpoint {}); nothing was changed",
            summary.total_steps,
            summary.checkpoint.display()
        );
        return Ok(());
    }
    println!(
        "steps: {} ({:.0} s of training, {:.0} tokens/s){}",
        summary.steps,
        summary.train_seconds,
        summary.tokens as f64 / summary.train_seconds.max(1e-9),
        if summary.stopped_at_deadline { ", stopped by the time budget" } else { "" }
    );
    println!("checkpoint: {}", summary.checkpoint.display());
    if let Some(f) = summary.final_eval() {
        let m = &f.metrics;
        println!(
            "final eval ({} records): AP50 {:.3}  AP {:.3}  f1@0.5 {:.3}  parse_valid_rate {:.3}",
            m.records, m.ap50, m.ap, m.f1_05, m.parse_valid_rate
        );
    }
    Ok(())
}
