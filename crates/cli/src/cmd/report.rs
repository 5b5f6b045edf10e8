//! `coordexp report RUN_DIR [--out FILE]` — one self-contained HTML page of a run: curves,
//! evaluation tables, per-category AP, parse and drop counters, stage-2 statistics and
//! validation images with their boxes.

use clap::Args;
use coordexp_core::progress::Progress;
use coordexp_report::{ReportOptions, write_report};
use std::path::PathBuf;

#[derive(Args)]
pub struct ReportArgs {
    /// The run directory (`runs/<name>/`).
    pub run_dir: PathBuf,
    /// Where to write the page (default: RUN_DIR/report.html).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Images per group (best, median, worst) in the image grid; 0 leaves the grid out.
    #[arg(long, default_value_t = 4)]
    pub images: usize,
    /// Look for the validation images here first (when the data moved since the run).
    #[arg(long)]
    pub images_root: Option<PathBuf>,
}

pub fn run(a: ReportArgs, progress: Progress) -> crate::CliResult {
    let out = a.out.unwrap_or_else(|| a.run_dir.join("report.html"));
    let s = write_report(
        &a.run_dir,
        &out,
        &ReportOptions {
            progress: progress.enabled(),
            images_per_group: a.images,
            images_root: a.images_root,
            ..ReportOptions::default()
        },
    )?;
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "report: {} ({} KiB, {} charts, {} evaluations, {} images)",
        s.path.display(),
        s.bytes / 1024,
        s.curves,
        s.eval_points,
        s.overlays
    );
    Ok(())
}
