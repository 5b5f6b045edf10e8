//! F1 at IoU thresholds: one operating point, independent of scores.
//!
//! AP with constant scores measures only emission order; F1 at a fixed IoU threshold says
//! directly how many objects a model found and how many it made up. The definition, per image
//! and per threshold `t`:
//!
//! - A pair (prediction, ground truth) is *eligible* when IoU ≥ `t` and, in the category-aware
//!   variant, both map to the same category (an unmapped prediction is eligible for nothing).
//!   The category-agnostic variant ignores descriptions.
//! - A one-to-one assignment maximises the number of eligible pairs and, among those maximum
//!   assignments, the sum of their IoUs. It is solved exactly as a linear sum assignment
//!   ([`coordexp_core::assign`]) with weight `K + IoU` for eligible pairs and `0` otherwise,
//!   where `K = min(#pred, #gt) + 1` makes one more pair worth more than any IoU total; ties are
//!   broken deterministically by the solver.
//! - TP = eligible assigned pairs, FP = predictions − TP, FN = ground truth − TP.
//!
//! Counts are summed over the dataset (micro average) and turned into precision
//! `TP/(TP+FP)`, recall `TP/(TP+FN)` and F1 `2PR/(P+R)`. A ratio with a zero denominator is 1
//! when the answer is perfect and 0 otherwise: no predictions and no ground truth give P = R = 1
//! (an empty image answered with nothing is right), no predictions for existing ground truth
//! give P = 0, and predictions on an image without ground truth give R = 0. F1 is 0 when
//! P + R = 0.
//!
//! IoU is box IoU in pixels ([`PixelBox::iou`]); polygons take part through their bounding
//! boxes.

use std::fmt;

use coordexp_core::assign::{CostMatrix, Goal, solve};
use coordexp_core::geometry::PixelBox;
use coordexp_core::{Error, Result};
use serde::Serialize;

use crate::mapping::CategoryId;

/// An IoU threshold in `(0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct IouThreshold(f64);

impl IouThreshold {
    /// `None` outside `(0, 1]` (a threshold of 0 would make disjoint boxes matches).
    pub fn new(t: f64) -> Option<Self> {
        (t > 0.0 && t <= 1.0).then_some(IouThreshold(t))
    }

    pub fn get(self) -> f64 {
        self.0
    }

    /// Parse a comma-separated list (`"0.3,0.5"`), sorted ascending and deduplicated.
    pub fn parse_list(text: &str) -> Result<Vec<Self>> {
        let mut out = Vec::new();
        for part in text.split(',') {
            let t =
                part.trim().parse::<f64>().ok().and_then(IouThreshold::new).ok_or_else(|| {
                    Error::input(format!("invalid IoU threshold `{}`", part.trim()))
                        .hint("give comma-separated numbers in (0, 1], e.g. --iou 0.3,0.5")
                })?;
            out.push(t);
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.dedup();
        Ok(out)
    }
}

impl fmt::Display for IouThreshold {
    /// The shortest decimal that reads back as the same number, with at least one decimal
    /// (`0.3`, `0.5`, `1.0`): the key used in reports.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.fract() == 0.0 { write!(f, "{:.1}", self.0) } else { write!(f, "{}", self.0) }
    }
}

/// Whether descriptions must agree for a pair to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CategoryRule {
    /// Same mapped category required (unmapped predictions never match).
    SameCategory,
    /// Descriptions ignored.
    Agnostic,
}

/// One object as the matcher sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub bbox: PixelBox,
    pub category: Option<CategoryId>,
}

/// True-positive, false-positive and false-negative counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.fn_ += other.fn_;
    }

    /// A perfect answer: nothing missed, nothing made up.
    fn is_perfect(&self) -> bool {
        self.fp == 0 && self.fn_ == 0
    }

    fn ratio(&self, denominator_extra: u64) -> f64 {
        match self.tp + denominator_extra {
            0 => f64::from(u8::from(self.is_perfect())),
            d => self.tp as f64 / d as f64,
        }
    }

    pub fn precision(&self) -> f64 {
        self.ratio(self.fp)
    }

    pub fn recall(&self) -> f64 {
        self.ratio(self.fn_)
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 }
    }

    /// Counts with precision, recall and F1, as reported.
    pub fn summary(&self) -> PrF1 {
        PrF1 {
            precision: self.precision(),
            recall: self.recall(),
            f1: self.f1(),
            tp: self.tp,
            fp: self.fp,
            fn_: self.fn_,
        }
    }
}

/// The report shape of one (threshold, variant) cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrF1 {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

/// The IoU matrix of one image, computed once and matched at every threshold and rule.
#[derive(Debug, Clone)]
pub struct ImageMatcher<'a> {
    preds: &'a [Candidate],
    gts: &'a [Candidate],
    /// Row-major `preds × gts`.
    iou: Vec<f64>,
}

impl<'a> ImageMatcher<'a> {
    pub fn new(preds: &'a [Candidate], gts: &'a [Candidate]) -> Self {
        let iou = preds.iter().flat_map(|p| gts.iter().map(|g| p.bbox.iou(&g.bbox))).collect();
        ImageMatcher { preds, gts, iou }
    }

    /// Optimal eligible matches at `threshold` under `rule`: `(pred index, gt index)` pairs.
    pub fn matches(
        &self,
        threshold: IouThreshold,
        rule: CategoryRule,
    ) -> Result<Vec<(usize, usize)>> {
        let (np, ng) = (self.preds.len(), self.gts.len());
        let eligible = |p: usize, g: usize| {
            self.iou[p * ng + g] >= threshold.0
                && match rule {
                    CategoryRule::Agnostic => true,
                    CategoryRule::SameCategory => {
                        self.preds[p].category.is_some()
                            && self.preds[p].category == self.gts[g].category
                    }
                }
        };
        if !(0..np).any(|p| (0..ng).any(|g| eligible(p, g))) {
            return Ok(Vec::new());
        }
        let bonus = (np.min(ng) + 1) as f64;
        // Weights lie in [0, min(np, ng) + 2] (an eligible IoU is a number >= t), so the matrix
        // is always valid; the error path only guards the solver's contract.
        let weights = CostMatrix::from_fn(np, ng, |p, g| {
            if eligible(p, g) { bonus + self.iou[p * ng + g] } else { 0.0 }
        })?;
        Ok(solve(&weights, Goal::Maximize)
            .pairs()
            .iter()
            .copied()
            .filter(|&(p, g)| eligible(p, g))
            .collect())
    }

    /// TP/FP/FN at `threshold` under `rule`.
    pub fn counts(&self, threshold: IouThreshold, rule: CategoryRule) -> Result<Counts> {
        let tp = self.matches(threshold, rule)?.len() as u64;
        Ok(Counts { tp, fp: self.preds.len() as u64 - tp, fn_: self.gts.len() as u64 - tp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Categories;

    fn cat(id: &str) -> Option<CategoryId> {
        Categories::from_names(["a", "b"]).id(id)
    }

    fn cand(x1: f64, y1: f64, x2: f64, y2: f64, c: &str) -> Candidate {
        Candidate { bbox: PixelBox::new(x1, y1, x2, y2), category: cat(c) }
    }

    fn t(x: f64) -> IouThreshold {
        IouThreshold::new(x).unwrap()
    }

    #[test]
    fn thresholds_parse_sorted_unique_and_print_as_keys() {
        let v = IouThreshold::parse_list("0.5, 0.3,0.5").unwrap();
        assert_eq!(v.iter().map(ToString::to_string).collect::<Vec<_>>(), ["0.3", "0.5"]);
        assert_eq!(t(1.0).to_string(), "1.0");
        for bad in ["0", "1.5", "x", "", "nan"] {
            assert!(IouThreshold::parse_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_image_is_perfect_and_empty_answer_scores_zero() {
        let none = Counts::default();
        assert_eq!((none.precision(), none.recall(), none.f1()), (1.0, 1.0, 1.0));
        let missed = Counts { tp: 0, fp: 0, fn_: 3 };
        assert_eq!((missed.precision(), missed.recall(), missed.f1()), (0.0, 0.0, 0.0));
        let made_up = Counts { tp: 0, fp: 2, fn_: 0 };
        assert_eq!((made_up.precision(), made_up.recall(), made_up.f1()), (0.0, 0.0, 0.0));
        let some = Counts { tp: 2, fp: 2, fn_: 0 };
        assert_eq!((some.precision(), some.recall()), (0.5, 1.0));
        assert!((some.f1() - 2.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn assignment_maximises_the_number_of_matches_not_the_best_iou() {
        // Greedy by IoU would give p0 to g0 (IoU 1) and leave p1 unmatched (its IoU with g1 is
        // 1/3); the optimal assignment pairs p0-g1 and p1-g0 for two matches.
        let gts = [cand(0., 0., 10., 10., "a"), cand(1., 0., 11., 10., "a")];
        let preds = [cand(0., 0., 10., 10., "a"), cand(-4., 0., 6., 10., "a")];
        let m = ImageMatcher::new(&preds, &gts);
        let pairs = m.matches(t(0.35), CategoryRule::SameCategory).unwrap();
        assert_eq!(pairs, vec![(0, 1), (1, 0)]);
        assert_eq!(
            m.counts(t(0.35), CategoryRule::SameCategory).unwrap(),
            Counts { tp: 2, fp: 0, fn_: 0 }
        );
    }

    #[test]
    fn among_maximum_matchings_the_larger_iou_total_wins() {
        let gts = [cand(0., 0., 10., 10., "a")];
        let preds = [cand(2., 0., 12., 10., "a"), cand(0., 0., 10., 10., "a")];
        let m = ImageMatcher::new(&preds, &gts);
        assert_eq!(m.matches(t(0.5), CategoryRule::SameCategory).unwrap(), vec![(1, 0)]);
    }

    #[test]
    fn categories_must_agree_unless_agnostic() {
        let gts = [cand(0., 0., 10., 10., "a")];
        let preds = [cand(0., 0., 10., 10., "b"), cand(0., 0., 10., 10., "unmapped")];
        let m = ImageMatcher::new(&preds, &gts);
        assert_eq!(
            m.counts(t(0.5), CategoryRule::SameCategory).unwrap(),
            Counts { tp: 0, fp: 2, fn_: 1 }
        );
        assert_eq!(
            m.counts(t(0.5), CategoryRule::Agnostic).unwrap(),
            Counts { tp: 1, fp: 1, fn_: 0 }
        );
    }

    #[test]
    fn pairs_below_the_threshold_are_never_counted() {
        let gts = [cand(0., 0., 10., 10., "a")];
        let preds = [cand(5., 0., 15., 10., "a")]; // IoU 1/3
        let m = ImageMatcher::new(&preds, &gts);
        assert_eq!(m.counts(t(0.3), CategoryRule::SameCategory).unwrap().tp, 1);
        assert_eq!(m.counts(t(0.5), CategoryRule::SameCategory).unwrap().tp, 0);
    }

    #[test]
    fn images_without_predictions_or_ground_truth_count_correctly() {
        let gts = [cand(0., 0., 10., 10., "a")];
        let m = ImageMatcher::new(&[], &gts);
        assert_eq!(
            m.counts(t(0.5), CategoryRule::Agnostic).unwrap(),
            Counts { tp: 0, fp: 0, fn_: 1 }
        );
        let preds = [cand(0., 0., 10., 10., "a")];
        let m = ImageMatcher::new(&preds, &[]);
        assert_eq!(
            m.counts(t(0.5), CategoryRule::Agnostic).unwrap(),
            Counts { tp: 0, fp: 1, fn_: 0 }
        );
    }
}
