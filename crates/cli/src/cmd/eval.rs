//! `coordexp eval coco` and `coordexp eval preds` (the evaluation layer, `coordexp-eval`).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use coordexp_core::Error;
use coordexp_core::progress::Progress;
use coordexp_eval::coco::{self, IouKind};
use coordexp_eval::f1::IouThreshold;
use coordexp_eval::mapping::Categories;
use coordexp_eval::preds::{self, PredsOptions};

/// How many unmapped descriptions the `eval preds` report lists.
const TOP_UNMAPPED: usize = 20;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// COCO AP/AR of a COCO results file against COCO ground truth (pycocotools-exact numbers
    /// and summary layout).
    Coco(CocoArgs),
    /// Evaluate model predictions (raw CoordJSON text or decoded objects, JSONL) against JSONL
    /// ground truth: COCO AP/AR, F1 at IoU thresholds, parse and mapping statistics.
    Preds(PredsArgs),
}

#[derive(Args)]
pub struct CocoArgs {
    /// Ground truth: a COCO annotation file.
    #[arg(long)]
    gt: PathBuf,
    /// Detections: a COCO results file (array of {image_id, category_id, bbox, score}).
    #[arg(long)]
    dt: PathBuf,
    /// Overlap used for matching.
    #[arg(long, value_enum, default_value = "bbox")]
    iou_type: IouTypeArg,
    /// Also write the 12 statistics and per-category AP as JSON.
    #[arg(long, value_name = "OUT.json")]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum IouTypeArg {
    Bbox,
    Segm,
}

#[derive(Args)]
pub struct PredsArgs {
    /// Ground truth: coordexp JSONL records.
    #[arg(long)]
    gt: PathBuf,
    /// Predictions: JSONL lines {"id"|"image": …, "text": raw output} or {…, "objects": […]}.
    #[arg(long)]
    pred: PathBuf,
    /// Write the full report as JSON.
    #[arg(long, value_name = "OUT.json")]
    json: Option<PathBuf>,
    /// IoU thresholds for F1, comma-separated.
    #[arg(long, default_value = "0.3,0.5")]
    iou: String,
    /// Write the predictions as a COCO results file (image_id = 1-based GT record position).
    #[arg(long, value_name = "OUT.json")]
    coco_results: Option<PathBuf>,
    /// Write per-image TP/FP/FN as JSONL.
    #[arg(long, value_name = "OUT.jsonl")]
    per_image: Option<PathBuf>,
    /// A fixed category list (text, one per line; JSON names; or a COCO file) instead of the
    /// distinct ground-truth descriptions.
    #[arg(long, value_name = "FILE")]
    categories: Option<PathBuf>,
}

pub fn run(cmd: EvalCommand, progress: Progress) -> crate::CliResult {
    match cmd {
        EvalCommand::Coco(a) => run_coco(a, progress),
        EvalCommand::Preds(a) => run_preds(a, progress),
    }
}

fn run_coco(a: CocoArgs, progress: Progress) -> crate::CliResult {
    let kind = match a.iou_type {
        IouTypeArg::Bbox => IouKind::Bbox,
        IouTypeArg::Segm => IouKind::Segm,
    };
    let summary = coco::evaluate_files_with(&a.gt, &a.dt, kind, progress)?;
    println!("{}", summary.summary_lines().join("\n"));
    if let Some(out) = &a.json {
        write_json(out, &summary.to_json())?;
    }
    Ok(())
}

fn run_preds(a: PredsArgs, progress: Progress) -> crate::CliResult {
    let thresholds = IouThreshold::parse_list(&a.iou).map_err(|e| e.at("--iou"))?;
    let categories = match &a.categories {
        Some(p) => Some((Categories::from_file(p)?, p.display().to_string())),
        None => None,
    };
    let opts = PredsOptions { thresholds, categories, top_unmapped: TOP_UNMAPPED };
    let ev = preds::evaluate_with(&a.gt, &a.pred, &opts, progress)?;
    print!("{}", ev.report.render(&ev.coco));
    if let Some(out) = &a.json {
        write_json(out, &ev.report)?;
    }
    if let Some(out) = &a.coco_results {
        write_json(out, &ev.coco_results)?;
    }
    if let Some(out) = &a.per_image {
        let mut text = String::new();
        for row in &ev.per_image {
            text.push_str(&to_json(row, out)?);
            text.push('\n');
        }
        write_file(out, text.as_bytes())?;
    }
    Ok(())
}

fn to_json(value: &impl serde::Serialize, path: &Path) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| {
        Error::runtime(format!("cannot serialise the output for {}: {e}", path.display()))
    })
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> crate::CliResult {
    let text = serde_json::to_string_pretty(value).map_err(|e| {
        Error::runtime(format!("cannot serialise the output for {}: {e}", path.display()))
    })?;
    write_file(path, format!("{text}\n").as_bytes())
}

fn write_file(path: &Path, bytes: &[u8]) -> crate::CliResult {
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| Error::io("write", path, &e))
}
