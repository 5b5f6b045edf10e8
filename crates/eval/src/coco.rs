//! COCO AP/AR through the `hotcoco` engine, reported in the pycocotools layout.
//!
//! hotcoco reproduces pycocotools' `COCOeval` bit for bit (the parity tests in
//! `tests/coco_parity.rs` check all 12 statistics against the live pycocotools), so this module
//! writes no evaluation logic of its own: it loads inputs, runs the engine with the reference
//! parameters, and turns the result into the 12 named statistics, per-category AP and the
//! 12-line summary that pycocotools prints.

use std::collections::BTreeMap;
use std::path::Path;

use coordexp_core::progress::Progress;
use coordexp_core::{Error, Result};
use hotcoco::params::IouType;
use hotcoco::{Annotation, COCO, COCOeval, Dataset};
use serde_json::{Map, Value};

/// Which overlap the AP is computed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IouKind {
    /// Axis-aligned boxes (`bbox`).
    Bbox,
    /// Polygon / RLE masks (`segmentation`).
    Segm,
}

impl IouKind {
    fn engine(self) -> IouType {
        match self {
            IouKind::Bbox => IouType::Bbox,
            IouKind::Segm => IouType::Segm,
        }
    }
}

/// The 12 statistics of `COCOeval.stats`, in order, under the names the JSON reports use.
pub const STAT_KEYS: [&str; 12] =
    ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"];

/// How pycocotools labels each statistic: (is AP, IoU threshold or `None` for 0.50:0.95, area
/// range, max detections).
const STAT_LABELS: [(bool, Option<f64>, &str, u32); 12] = [
    (true, None, "all", 100),
    (true, Some(0.5), "all", 100),
    (true, Some(0.75), "all", 100),
    (true, None, "small", 100),
    (true, None, "medium", 100),
    (true, None, "large", 100),
    (false, None, "all", 1),
    (false, None, "all", 10),
    (false, None, "all", 100),
    (false, None, "small", 100),
    (false, None, "medium", 100),
    (false, None, "large", 100),
];

/// The outcome of one COCO evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoSummary {
    stats: [f64; 12],
    per_category: BTreeMap<String, f64>,
}

impl CocoSummary {
    /// The 12 statistics in [`STAT_KEYS`] order; `-1` where pycocotools reports "no data"
    /// (e.g. no ground truth in an area range).
    pub fn stats(&self) -> &[f64; 12] {
        &self.stats
    }

    /// One statistic by its [`STAT_KEYS`] name.
    pub fn stat(&self, key: &str) -> Option<f64> {
        STAT_KEYS.iter().position(|k| *k == key).map(|i| self.stats[i])
    }

    /// AP (IoU 0.50:0.95, all areas, 100 detections) of every category that has ground truth,
    /// keyed by category name. Categories without ground truth have no AP and are absent.
    pub fn per_category(&self) -> &BTreeMap<String, f64> {
        &self.per_category
    }

    /// The 12 summary lines, character for character as pycocotools' `summarize()` prints them.
    pub fn summary_lines(&self) -> Vec<String> {
        STAT_LABELS
            .iter()
            .zip(self.stats)
            .map(|(&(ap, iou, area, max_dets), value)| {
                let (title, short) =
                    if ap { ("Average Precision", "(AP)") } else { ("Average Recall", "(AR)") };
                let iou = iou.map_or_else(|| "0.50:0.95".to_string(), |t| format!("{t:0.2}"));
                format!(
                    " {title:<18} {short} @[ IoU={iou:<9} | area={area:>6} | maxDets={max_dets:>3} ] = {value:0.3}"
                )
            })
            .collect()
    }

    /// The statistics as a JSON object keyed by [`STAT_KEYS`].
    pub fn stats_json(&self) -> Map<String, Value> {
        STAT_KEYS.iter().zip(self.stats).map(|(k, v)| (k.to_string(), Value::from(v))).collect()
    }

    /// [`stats_json`](Self::stats_json) plus `"per_category": {name: AP}`: the `eval coco`
    /// output file.
    pub fn to_json(&self) -> Value {
        let mut out = self.stats_json();
        let per_category: Map<String, Value> =
            self.per_category.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect();
        out.insert("per_category".into(), Value::Object(per_category));
        Value::Object(out)
    }
}

/// Evaluate a COCO detection results file against a COCO ground-truth file.
pub fn evaluate_files(gt: &Path, dt: &Path, kind: IouKind) -> Result<CocoSummary> {
    evaluate_files_with(gt, dt, kind, Progress::OFF)
}

/// [`evaluate_files`], showing `progress` over its three phases (the engine has no finer
/// hook): ground truth loaded, detections loaded, evaluated.
pub fn evaluate_files_with(
    gt: &Path,
    dt: &Path,
    kind: IouKind,
    progress: Progress,
) -> Result<CocoSummary> {
    let task = progress.task("eval coco", Some(3), "phases");
    let coco_gt = COCO::new(gt).map_err(|e| engine_error(e, "load the ground truth", gt))?;
    task.inc(1);
    let coco_dt = coco_gt.load_res(dt).map_err(|e| engine_error(e, "load the detections", dt))?;
    task.inc(1);
    let out = run(coco_gt, coco_dt, kind);
    task.inc(1);
    task.finish();
    out
}

/// Evaluate in-memory detections against an in-memory ground-truth dataset (the `eval preds`
/// path, which builds both from JSONL records).
pub fn evaluate_datasets(
    gt: Dataset,
    detections: Vec<Annotation>,
    kind: IouKind,
) -> Result<CocoSummary> {
    let coco_gt = COCO::from_dataset(gt);
    let coco_dt = coco_gt.load_res_anns(detections).map_err(|e| {
        Error::runtime(format!("the COCO engine rejected the converted detections: {e}"))
    })?;
    run(coco_gt, coco_dt, kind)
}

/// Non-fatal load problems (e.g. detections for image ids absent from the ground truth) are
/// printed to stderr by the engine as it loads.
fn run(coco_gt: COCO, coco_dt: COCO, kind: IouKind) -> Result<CocoSummary> {
    let mut ev = COCOeval::new(coco_gt, coco_dt, kind.engine());
    ev.evaluate().map_err(|e| Error::input(format!("COCO evaluation failed: {e}")))?;
    ev.accumulate();
    // `summarize_lines` computes the statistics (and prints nothing); we render our own lines.
    ev.summarize_lines();
    let stats: [f64; 12] = ev
        .stats()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::runtime("the COCO engine did not produce the 12 statistics"))?;
    let per_category = ev
        .results(true)
        .map_err(|e| Error::runtime(format!("cannot collect per-category AP: {e}")))?
        .per_class
        .unwrap_or_default();
    Ok(CocoSummary { stats, per_category })
}

/// Classify an engine failure on `path`: unreadable or malformed files are the user's to fix.
fn engine_error(e: hotcoco::Error, action: &str, path: &Path) -> Error {
    match e {
        hotcoco::Error::Io(io) => Error::io(action, path, &io),
        hotcoco::Error::Json(json) => Error::input(format!("cannot {action}: invalid COCO JSON: {json}"))
            .at(format!("{}:{}:{}", path.display(), json.line(), json.column()))
            .hint("the file must be COCO JSON (ground truth: an object with images/annotations/categories; detections: an array of {image_id, category_id, bbox, score})"),
        other => Error::input(format!("cannot {action}: {other}")).at(path.display().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(stats: [f64; 12]) -> CocoSummary {
        CocoSummary { stats, per_category: BTreeMap::new() }
    }

    #[test]
    fn summary_lines_use_the_pycocotools_layout() {
        let s = summary([0.5, 0.25, 0.125, -1.0, 0.0, 1.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
        let lines = s.summary_lines();
        assert_eq!(
            lines[0],
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.500"
        );
        assert_eq!(
            lines[1],
            " Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ] = 0.250"
        );
        assert_eq!(
            lines[3],
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = -1.000"
        );
        assert_eq!(
            lines[6],
            " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = 0.100"
        );
        assert_eq!(
            lines[10],
            " Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ] = 0.500"
        );
    }

    #[test]
    fn json_has_the_twelve_keys_and_per_category() {
        let mut s = summary([0.0; 12]);
        s.per_category.insert("cat".into(), 0.5);
        let v = s.to_json();
        for k in STAT_KEYS {
            assert_eq!(v[k], 0.0, "{k}");
        }
        assert_eq!(v["per_category"]["cat"], 0.5);
        assert_eq!(s.stat("AR100"), Some(0.0));
        assert_eq!(s.stat("nope"), None);
    }
}
