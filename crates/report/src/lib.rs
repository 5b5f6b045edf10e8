//! coordexp-report: `coordexp report RUN_DIR` — one self-contained HTML page to *look* at a run.
//!
//! Why a page and not more numbers: a detection model that writes its answers fails in ways a
//! single AP hides — answers that do not parse, descriptions that map to no category, duplicated
//! boxes, a loss term that diverges, a learning rate that never warmed up. The run directory
//! already holds everything needed to see that (`metrics.jsonl`, `eval/<name>/metrics.json` and
//! `predictions.jsonl`, `eval/gt.jsonl`, the manifest and the resolved config); this crate turns
//! it into one HTML file that can be mailed, archived next to the run, or opened on a machine
//! with no network:
//!
//! - provenance (run name, start time, git commit and dirty flag, device, datasets with sha256
//!   prefixes, command line) and headline cards (last AP, AP50, F1@0.5, parse rate, steps);
//! - evaluation curves and a table with one row per evaluation (AP, AP50, F1@0.5, precision,
//!   recall, parse rate);
//! - per-category AP of the last evaluation, sorted, with bars;
//! - the parse / drop / unmapped counters of the last evaluation;
//! - validation images with ground-truth (solid) and predicted (dashed) boxes, chosen among the
//!   best, median and worst images by per-image F1 ([`overlay`]);
//! - training curves as small multiples, grouped by family (`loss`, `loss/*`, `text_ce/*`,
//!   `coord_diag/*`, optimisation, throughput, other), and stage-2 statistics (`rollout/*`,
//!   `stage2/*`, `stage2_ab/*`, `train/triage/*`, `dup/*`, `strict_drop/*`) when present;
//! - the resolved config.
//!
//! Design rules: pure data (no tensor library); static output — inline SVG for charts and
//! boxes, images as `data:` URIs, a Content-Security-Policy that forbids any fetch, and no
//! script needed (one inline line records script errors into `<html data-js-errors>` so a
//! browser test can assert there are none); everything read from the run directory is
//! user-controlled, so all text is escaped ([`html::esc`]) and every malformed line or missing
//! file becomes a visible note or warning, never a panic. Only a path that is not a run
//! directory at all is an error (an input error, exit code 2).

pub mod base64;
pub mod html;
pub mod overlay;
mod page;
pub mod run;
pub mod svg;

use std::path::{Path, PathBuf};

use coordexp_core::{Error, Result};
use serde::Serialize;

pub use page::STAGE2_PREFIXES;

/// What to put in the report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// Print what is being done to stderr (`--no-progress` turns it off).
    pub progress: bool,
    /// Images per group (best, median, worst) in the image grid; 0 disables the grid.
    pub images_per_group: usize,
    /// An extra directory to look for validation images in, tried first (the images'
    /// paths in `eval/gt.jsonl` are relative to the original validation file's directory,
    /// which the manifest names; this overrides it when the data moved).
    pub images_root: Option<PathBuf>,
    /// Image files larger than this are shrunk and re-encoded instead of embedded as they are.
    pub max_image_bytes: u64,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            progress: true,
            images_per_group: 4,
            images_root: None,
            max_image_bytes: overlay::DEFAULT_MAX_IMAGE_BYTES,
        }
    }
}

/// What a report holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReportSummary {
    /// The file written (empty from [`render_report`]).
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Charts (`<svg class="curve">`) on the page.
    pub curves: usize,
    /// Distinct training metrics plotted (stage-2 metrics excluded).
    pub train_metrics: usize,
    /// Stage-2 metrics plotted.
    pub stage2_metrics: usize,
    /// Rows of the evaluation table.
    pub eval_points: usize,
    /// Rows of the per-category AP table.
    pub categories: usize,
    /// Images drawn with their boxes, and how many of their image files were embedded or not
    /// found.
    pub overlays: usize,
    pub images_embedded: usize,
    pub images_missing: usize,
    /// The warnings shown at the top of the page (malformed lines, missing files, …).
    pub warnings: Vec<String>,
}

/// A rendered page and its summary.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub html: String,
    pub summary: ReportSummary,
}

/// Render the report of `run_dir` in memory.
///
/// Errors: an input error (exit 2) when `run_dir` does not exist, is not a directory, or holds
/// none of `config.resolved.yaml`, `manifest.json`, `metrics.jsonl`. Anything else missing or
/// malformed is shown on the page.
pub fn render_report(run_dir: &Path, opts: &ReportOptions) -> Result<Rendered> {
    let mut run = run::Run::read(run_dir)?;
    let (html, mut summary) = page::build(&mut run, opts);
    summary.bytes = html.len() as u64;
    Ok(Rendered { html, summary })
}

/// Write the report of `run_dir` to `out` (atomically: a temporary file in the same directory,
/// then a rename, so a reader never sees half a page) and say what it holds.
///
/// ```no_run
/// use coordexp_report::{ReportOptions, write_report};
/// let summary = write_report(
///     "runs/demo".as_ref(),
///     "runs/demo/report.html".as_ref(),
///     &ReportOptions { progress: false, ..ReportOptions::default() },
/// )?;
/// println!("{} charts, {} images: {}", summary.curves, summary.overlays, summary.path.display());
/// # Ok::<(), coordexp_core::Error>(())
/// ```
///
/// Errors: those of [`render_report`]; a runtime error when `out` cannot be written.
pub fn write_report(run_dir: &Path, out: &Path, opts: &ReportOptions) -> Result<ReportSummary> {
    let rendered = render_report(run_dir, opts)?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::input(format!(
            "cannot write the report to {}: directory {} does not exist",
            out.display(),
            dir.display()
        ))
        .hint("create the directory or pass another --out"));
    }
    let file_name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if file_name.is_empty() {
        return Err(Error::input(format!("--out {} names no file", out.display())));
    }
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, rendered.html.as_bytes())
        .map_err(|e| Error::io("write", &tmp, &e))
        .and_then(|()| {
            std::fs::rename(&tmp, out).map_err(|e| Error::io("rename into place", out, &e))
        })
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
    if opts.progress {
        eprintln!("report: wrote {} ({})", out.display(), html::bytes(rendered.summary.bytes));
    }
    Ok(ReportSummary { path: out.to_path_buf(), ..rendered.summary })
}
