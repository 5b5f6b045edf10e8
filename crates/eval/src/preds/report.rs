//! The `eval preds` report: every counter, the metrics, and the human summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::coco::CocoSummary;
use crate::f1::{Counts, PrF1};

/// How many examples of each problem kind the report lists.
pub const MAX_EXAMPLES: usize = 10;

/// Joining predictions to ground truth.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImageCounts {
    /// Ground-truth records.
    pub gt: u64,
    /// Ground-truth records with a prediction line.
    pub with_prediction: u64,
    /// Ground-truth records without one: scored with no predictions (every object a miss).
    pub without_prediction: u64,
    /// Up to [`MAX_EXAMPLES`] of them, as `FILE:LINE`.
    pub without_prediction_examples: Vec<String>,
    /// Prediction lines whose id / image is not in the ground truth: not scored.
    pub unknown: u64,
    /// Up to [`MAX_EXAMPLES`] of them, as `FILE:LINE (id …|image …)`.
    pub unknown_examples: Vec<String>,
    /// Ground-truth records with several images (joined by id, or by their first image).
    pub multi_image_records: u64,
    /// Ground-truth objects and kept predicted objects.
    pub gt_objects: u64,
    pub pred_objects: u64,
}

/// Reading predictions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ParseCounts {
    /// Non-blank prediction lines, and blank ones (skipped).
    pub lines: u64,
    pub blank_lines: u64,
    /// Lines that could not be read at all (bad JSON, no identity, no payload): not scored.
    pub invalid_lines: u64,
    /// Up to [`MAX_EXAMPLES`] of them, as `FILE:LINE: why`.
    pub invalid_examples: Vec<String>,
    /// Joined lines with raw text, and with decoded objects.
    pub text: u64,
    pub objects_form: u64,
    /// Text answers whose container closed, ended early (truncated), or was not found.
    pub valid: u64,
    pub truncated: u64,
    pub no_container: u64,
    /// Objects kept, and objects dropped per reason (salvage reasons, `incomplete_tail`, and
    /// `object_*` reasons of the objects form).
    pub objects_kept: u64,
    pub objects_dropped: BTreeMap<String, u64>,
    /// Kept predicted boxes with zero area (e.g. `x2 <= x1`): scored, never matched.
    pub degenerate_boxes: u64,
    /// Joined lines whose stated width/height differ from the ground truth's (the ground-truth
    /// size is used).
    pub size_mismatch: u64,
    /// Lines whose `object_scores` were not used: not a `text` line, or not one score per kept
    /// object (their objects score 1.0).
    pub object_scores_ignored: u64,
}

/// Description → category mapping.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UnmappedReport {
    /// Where the categories came from (`gt_descs` or the file) and how many there are.
    pub categories_source: String,
    pub categories: u64,
    /// Predicted objects mapped per rule.
    pub mapped_exact: u64,
    pub mapped_normalized: u64,
    pub mapped_synonym: u64,
    /// Predicted objects that mapped to no category: excluded from AP and never a TP in the
    /// category-aware F1 (they still count in the category-agnostic F1).
    pub total: u64,
    pub distinct: u64,
    /// The most frequent unmapped descriptions.
    pub top: Vec<DescCount>,
    /// Ground-truth objects whose description maps to no category of a fixed list: excluded
    /// from AP, misses in the category-aware F1.
    pub gt_unmapped: u64,
    pub gt_unmapped_top: Vec<DescCount>,
    /// Normalised lookup keys claimed by several categories (the first listed wins).
    pub collisions: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DescCount {
    pub desc: String,
    pub count: u64,
}

/// Where prediction scores come from: AP with constant scores depends only on emission order
/// and duplicates, so the report must say which case it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ScoreSource {
    /// No prediction carried a score; all were ranked at 1.0.
    #[serde(rename = "constant_1.0")]
    Constant,
    /// Every prediction carried its own score.
    #[serde(rename = "predicted")]
    Predicted,
    /// Some did, the rest were ranked at 1.0.
    #[serde(rename = "mixed")]
    Mixed,
}

impl ScoreSource {
    pub fn from_counts(with_score: u64, without_score: u64) -> Self {
        match (with_score, without_score) {
            (0, _) => ScoreSource::Constant,
            (_, 0) => ScoreSource::Predicted,
            _ => ScoreSource::Mixed,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ScoreSource::Constant => {
                "constant 1.0 (no prediction has a score: AP reflects emission order and duplicates only)"
            }
            ScoreSource::Predicted => "predicted (every prediction has a score)",
            ScoreSource::Mixed => "mixed (predictions without a score ranked at 1.0)",
        }
    }
}

/// The whole `eval preds` report (`--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredsReport {
    pub images: ImageCounts,
    /// The 12 COCO statistics (same keys as `eval coco`) and `per_category`.
    pub coco: Value,
    /// Category-aware F1 per IoU threshold.
    pub f1: BTreeMap<String, PrF1>,
    /// Category-agnostic F1 per IoU threshold.
    pub f1_agnostic: BTreeMap<String, PrF1>,
    pub parse: ParseCounts,
    pub unmapped: UnmappedReport,
    pub score_source: ScoreSource,
    pub predictions_with_score: u64,
    pub predictions_without_score: u64,
}

/// What a ground-truth image's prediction looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerStatus {
    /// Text whose CoordJSON container closed.
    Valid,
    /// Text that ended inside the container.
    Truncated,
    /// Text without a CoordJSON container.
    NoContainer,
    /// Decoded objects (the `objects` form).
    Objects,
    /// No prediction line for this image.
    Missing,
}

/// One `--per-image` line: per-image TP/FP/FN for error analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerImage {
    /// 1-based line of the record in the ground-truth file.
    pub gt_line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub image: String,
    /// Line of the joined prediction, if any.
    pub pred_line: Option<usize>,
    pub status: AnswerStatus,
    pub gt: u64,
    pub pred: u64,
    pub dropped: u64,
    pub unmapped: u64,
    pub f1: BTreeMap<String, Counts>,
    pub f1_agnostic: BTreeMap<String, Counts>,
}

impl PredsReport {
    /// The human summary printed on stdout.
    pub fn render(&self, coco: &CocoSummary) -> String {
        let mut s = String::new();
        let i = &self.images;
        let p = &self.parse;
        let u = &self.unmapped;
        let _ = writeln!(
            s,
            "images       {} ground truth, {} with a prediction, {} without (scored as misses), {} unknown prediction lines",
            i.gt, i.with_prediction, i.without_prediction, i.unknown
        );
        let _ = writeln!(
            s,
            "predictions  {} lines ({} invalid, {} blank); text: {} valid, {} truncated, {} no container; objects form: {}",
            p.lines,
            p.invalid_lines,
            p.blank_lines,
            p.valid,
            p.truncated,
            p.no_container,
            p.objects_form
        );
        let dropped: u64 = p.objects_dropped.values().sum();
        let reasons = p
            .objects_dropped
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            s,
            "objects      {} ground truth, {} predicted kept, {} dropped{}",
            i.gt_objects,
            p.objects_kept,
            dropped,
            if reasons.is_empty() { String::new() } else { format!(" ({reasons})") }
        );
        let top = u
            .top
            .iter()
            .take(5)
            .map(|d| format!("{:?} {}", d.desc, d.count))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            s,
            "categories   {} from {}; predictions mapped exact {}, normalized {}, synonym {}; unmapped {}{}",
            u.categories,
            u.categories_source,
            u.mapped_exact,
            u.mapped_normalized,
            u.mapped_synonym,
            u.total,
            if top.is_empty() { String::new() } else { format!(" (top: {top})") }
        );
        if u.gt_unmapped > 0 {
            let _ = writeln!(
                s,
                "             {} ground-truth objects map to no category",
                u.gt_unmapped
            );
        }
        let _ = writeln!(s, "scores       {}", self.score_source.describe());
        if p.object_scores_ignored > 0 {
            let _ = writeln!(
                s,
                "             object_scores ignored on {} lines (not one per kept object)",
                p.object_scores_ignored
            );
        }
        let _ = writeln!(s, "COCO bbox AP");
        for line in coco.summary_lines() {
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(
            s,
            "F1 (one-to-one, IoU >= t)  {:>6} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8}",
            "IoU", "P", "R", "F1", "TP", "FP", "FN"
        );
        for (name, table) in
            [("category-aware", &self.f1), ("category-agnostic", &self.f1_agnostic)]
        {
            for (t, c) in table {
                let _ = writeln!(
                    s,
                    "  {name:<24} {t:>6} {:>7.4} {:>7.4} {:>7.4} {:>8} {:>8} {:>8}",
                    c.precision, c.recall, c.f1, c.tp, c.fp, c.fn_
                );
            }
        }
        s
    }
}
