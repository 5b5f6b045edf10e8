//! Periodic evaluation: generate on the validation records, score them in memory with the
//! `eval preds` engine, write `eval/<name>/{predictions.jsonl, metrics.json}`.
//!
//! The ground truth is the evaluated prefix of the validation set, indexed once in memory and
//! written once to `eval/gt.jsonl` as an artifact (records unchanged, so `coordexp eval preds
//! --gt eval/gt.jsonl --pred eval/<name>/predictions.jsonl` reproduces the numbers). The
//! predictions file is an artifact too: scoring never reads it back.

use coordexp_core::coordjson::parse_salvage;
use coordexp_core::{Error, Result};
use coordexp_eval::f1::IouThreshold;
use coordexp_eval::preds::{GroundTruth, PredsOptions, evaluate_in_memory, read_value};
use coordexp_rollout::Item;
use coordexp_rollout::predict::{Predictor, prediction_line};
use coordexp_stage2::normalize_desc;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::checkpoint::write_file_atomically;

/// The headline numbers of one evaluation (the full report is in `metrics.json`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EvalMetrics {
    /// COCO bbox AP at IoU 0.50:0.95.
    #[serde(rename = "AP")]
    pub ap: f64,
    /// COCO bbox AP at IoU 0.50.
    #[serde(rename = "AP50")]
    pub ap50: f64,
    /// Category-aware F1 at IoU 0.5.
    #[serde(rename = "f1@0.5")]
    pub f1_05: f64,
    /// Category-aware precision and recall at IoU 0.5.
    #[serde(rename = "precision@0.5")]
    pub precision_05: f64,
    #[serde(rename = "recall@0.5")]
    pub recall_05: f64,
    /// Predicted objects that repeat an earlier object of the same answer (same normalised
    /// description, box IoU ≥ 0.9), over predicted objects.
    pub duplicate_rate: f64,
    /// Answers whose CoordJSON container closed, over evaluated records.
    pub parse_valid_rate: f64,
    /// Answers cut off by `eval.max_new_tokens`, over evaluated records.
    pub hit_max_new_tokens_rate: f64,
    /// Predicted objects per record.
    pub objects_per_record: f64,
    pub records: usize,
    /// Seconds spent generating and scoring.
    pub seconds: f64,
}

impl EvalMetrics {
    /// `(name, value)` pairs for `metrics.jsonl` and TensorBoard.
    pub fn pairs(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("AP", self.ap),
            ("AP50", self.ap50),
            ("f1@0.5", self.f1_05),
            ("precision@0.5", self.precision_05),
            ("recall@0.5", self.recall_05),
            ("duplicate_rate", self.duplicate_rate),
            ("parse_valid_rate", self.parse_valid_rate),
            ("hit_max_new_tokens_rate", self.hit_max_new_tokens_rate),
            ("objects_per_record", self.objects_per_record),
            ("seconds", self.seconds),
        ]
    }
}

/// The share of predicted objects that repeat an earlier object of the same answer: same
/// normalised description (`coordexp_stage2::normalize_desc`) and box IoU ≥ 0.9 (bins; a
/// polygon by its bounding box). What stage 2's duplicate control exists to lower.
pub fn duplicate_rate<'t>(answers: impl Iterator<Item = &'t str>) -> f64 {
    let (mut dups, mut total) = (0u64, 0u64);
    for text in answers {
        let parsed = parse_salvage(text, None);
        let boxes: Vec<(String, [f64; 4])> = parsed
            .objects
            .iter()
            .map(|o| {
                let c: Vec<f64> = o.geometry.coords().iter().map(|b| f64::from(b.get())).collect();
                let (xs, ys): (Vec<f64>, Vec<f64>) =
                    c.chunks_exact(2).map(|p| (p[0], p[1])).unzip();
                let lo = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (normalize_desc(&o.desc), [lo(&xs), lo(&ys), hi(&xs), hi(&ys)])
            })
            .collect();
        for (i, (d, b)) in boxes.iter().enumerate() {
            total += 1;
            if boxes[..i].iter().any(|(e, c)| e == d && box_iou(b, c) >= 0.9) {
                dups += 1;
            }
        }
    }
    if total == 0 { 0.0 } else { dups as f64 / total as f64 }
}

fn box_iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |x: &[f64; 4]| (x[2] - x[0]).max(0.0) * (x[3] - x[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { f64::from(u8::from(a == b)) }
}

/// The evaluation set and where its results go.
pub struct Evaluator<'a> {
    pub items: Vec<&'a Item>,
    /// The validation file (names records in reports).
    source: PathBuf,
    gt: GroundTruth,
    pub thresholds: Vec<IouThreshold>,
}

impl<'a> Evaluator<'a> {
    /// Index the ground truth of `items` (read from `source`) and write it to
    /// `eval_root/gt.jsonl` (kept if it exists: a resumed run evaluates the same records).
    pub fn new(
        items: Vec<&'a Item>,
        source: &Path,
        eval_root: &Path,
        iou: &[f64],
    ) -> Result<Evaluator<'a>> {
        let mut thresholds = iou
            .iter()
            .map(|&t| {
                IouThreshold::new(t).ok_or_else(|| {
                    Error::input(format!("IoU threshold {t} is not in (0, 1]")).at("eval.iou")
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let half = IouThreshold::new(0.5).ok_or_else(|| Error::runtime("IoU 0.5 is invalid"))?;
        if !thresholds.contains(&half) {
            thresholds.push(half);
        }
        thresholds.sort_by(|a, b| a.get().total_cmp(&b.get()));
        let gt = GroundTruth::from_records(source, items.iter().map(|i| Ok((i.line, &i.record))))?;
        std::fs::create_dir_all(eval_root).map_err(|e| Error::io("create", eval_root, &e))?;
        let gt_path = eval_root.join("gt.jsonl");
        if !gt_path.exists() {
            let mut text = String::new();
            for item in &items {
                text.push_str(&item.record.to_json_line());
                text.push('\n');
            }
            write_file_atomically(&gt_path, text.as_bytes())?;
        }
        Ok(Evaluator { items, source: source.to_path_buf(), gt, thresholds })
    }

    /// Predict, score and write `dir/{predictions.jsonl, metrics.json}`; `extra` fields (step,
    /// elapsed time) are added to `metrics.json`.
    pub fn run(
        &self,
        predictor: &Predictor<'_>,
        dir: &Path,
        extra: serde_json::Value,
    ) -> Result<EvalMetrics> {
        let start = Instant::now();
        let predictions = predictor.predict(&self.items)?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, &e))?;
        let pred_path = dir.join("predictions.jsonl");
        let mut buf = String::new();
        let mut lines = Vec::with_capacity(predictions.len());
        for (item, p) in self.items.iter().zip(&predictions) {
            let value = prediction_line(&item.record, p);
            buf.push_str(&value.to_string());
            buf.push('\n');
            lines.push(read_value(value).map_err(|why| {
                Error::runtime(format!("the prediction of line {} is unusable: {why}", item.line))
            })?);
        }
        write_file_atomically(&pred_path, buf.as_bytes())?;
        let opts = PredsOptions {
            thresholds: self.thresholds.clone(),
            categories: None,
            top_unmapped: 10,
        };
        let evaluation = evaluate_in_memory(&self.gt, &self.source, &pred_path, lines, &opts)?;
        let report = &evaluation.report;
        let n = self.items.len().max(1) as f64;
        let stat = |k: &str| evaluation.coco.stat(k).unwrap_or(0.0).max(0.0);
        let metrics = EvalMetrics {
            ap: stat("AP"),
            ap50: stat("AP50"),
            f1_05: report.f1.get("0.5").map_or(0.0, |f| f.f1),
            precision_05: report.f1.get("0.5").map_or(0.0, |f| f.precision),
            recall_05: report.f1.get("0.5").map_or(0.0, |f| f.recall),
            duplicate_rate: duplicate_rate(predictions.iter().map(|p| p.text.as_str())),
            parse_valid_rate: report.parse.valid as f64 / n,
            hit_max_new_tokens_rate: predictions.iter().filter(|p| p.hit_max_new_tokens).count()
                as f64
                / n,
            objects_per_record: report.parse.objects_kept as f64 / n,
            records: self.items.len(),
            seconds: start.elapsed().as_secs_f64(),
        };
        let mut doc = serde_json::to_value(metrics)
            .map_err(|e| Error::runtime(format!("cannot encode metrics: {e}")))?;
        if let (Some(obj), serde_json::Value::Object(more)) = (doc.as_object_mut(), extra) {
            obj.extend(more);
        }
        doc["report"] = serde_json::to_value(report)
            .map_err(|e| Error::runtime(format!("cannot encode the report: {e}")))?;
        let mut text = serde_json::to_string_pretty(&doc)
            .map_err(|e| Error::runtime(format!("cannot encode metrics: {e}")))?;
        text.push('\n');
        write_file_atomically(&dir.join("metrics.json"), text.as_bytes())?;
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_object_counts_once_as_a_duplicate_and_a_different_one_not_at_all() {
        let o = |d: &str, b: [u16; 4]| {
            format!(
                "{{\"desc\": \"{d}\", \"bbox_2d\": [<|coord_{}|>, <|coord_{}|>, <|coord_{}|>, <|coord_{}|>]}}",
                b[0], b[1], b[2], b[3]
            )
        };
        let answer = format!(
            "{{\"objects\": [{}, {}, {}, {}]}}",
            o("red circle", [10, 10, 100, 100]),
            o("Red  circle", [11, 10, 100, 100]),
            o("red circle", [500, 500, 600, 600]),
            o("blue square", [10, 10, 100, 100])
        );
        assert_eq!(duplicate_rate([answer.as_str()].into_iter()), 0.25);
        assert_eq!(duplicate_rate(["garbage"].into_iter()), 0.0);
    }
}
