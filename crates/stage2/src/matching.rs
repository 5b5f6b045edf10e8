//! Hungarian matching of predicted boxes to ground truth on mask IoU.
//!
//! Why this exact procedure: which predictions count as matched decides what the clean prefix
//! supervises, so channel B must agree with the reference pair for pair. The rule is
//! stage2_rollout §3.7, unchanged in stage2_current §2.3 (settings and production values there):
//!
//! 1. Boxes are ordered `(min, max)`; a polygon ground truth is represented by its bounding box
//!    for candidate selection.
//! 2. Per prediction, ground truths are ranked by continuous box IoU (ties by index) and the
//!    first `max(1, candidate_top_k)` kept; if the best IoU is `≤ 0`, the first `k` by squared
//!    centre distance (ties by index) replace them.
//! 3. Each candidate pair is scored by mask IoU ([`crate::mask`]); below `gate` the pair stays
//!    forbidden (cost `10⁶`) and counts one `gating_rejection`; otherwise its cost is
//!    `1 − IoU`.
//! 4. The `(P + G)²` matrix `[[cost, fp_cost], [fn_cost, 0]]` is solved by core's assignment
//!    solver, which returns scipy's pairs, ties included.
//! 5. Prediction `i` is matched to ground truth `c` iff it was assigned column `c < G` with cost
//!    `< 5·10⁵`; otherwise it is a false positive. Missed ground truths are listed ascending.
//!
//! There is no description term: matching is purely geometric (§3.7 notes).

use crate::boxes;
use crate::mask::{self, Rle};
use coordexp_core::assign::{CostMatrix, Goal, solve};
use coordexp_core::norm1000::Bin;
use coordexp_core::record::Geometry;
use serde::{Deserialize, Serialize};

/// The cost of a forbidden pair.
const FORBIDDEN: f64 = 1e6;

/// Matching settings (stage2_current §2.3). `Default` is the production configuration
/// (`base.yaml:132-136`): top-k 5, gate 0.5, resolution 256, fp cost 1.0, fn cost 1.2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchSettings {
    /// Ground-truth candidates kept per prediction (at least 1 is used).
    pub candidate_top_k: usize,
    /// Minimum mask IoU of an allowed pair.
    pub gate: f64,
    /// Side `R` of the virtual mask canvas.
    pub mask_resolution: u32,
    /// Cost of leaving a prediction unmatched.
    pub fp_cost: f64,
    /// Cost of leaving a ground truth unmatched.
    pub fn_cost: f64,
}

impl Default for MatchSettings {
    fn default() -> Self {
        MatchSettings {
            candidate_top_k: 5,
            gate: 0.5,
            mask_resolution: 256,
            fp_cost: 1.0,
            fn_cost: 1.2,
        }
    }
}

/// What matching decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matching {
    /// The settings used (echoed for reports).
    pub settings: MatchSettings,
    /// `[prediction, ground_truth]`, ascending by prediction.
    pub pairs: Vec<[usize; 2]>,
    /// Ground truths left unmatched, ascending.
    #[serde(rename = "fn")]
    pub fn_gt: Vec<usize>,
    /// Predictions left unmatched, ascending.
    pub fp: Vec<usize>,
    /// Candidate pairs whose mask IoU fell below the gate.
    pub gating_rejections: usize,
    /// Σ mask IoU over matched pairs.
    pub matched_maskiou_sum: f64,
    /// Number of matched pairs.
    pub matched_maskiou_count: usize,
}

impl Matching {
    /// The ground truth matched to prediction `pred`, if any.
    pub fn gt_of(&self, pred: usize) -> Option<usize> {
        self.pairs.iter().find(|p| p[0] == pred).map(|p| p[1])
    }

    /// The prediction matched to ground truth `gt`, if any.
    pub fn pred_of(&self, gt: usize) -> Option<usize> {
        self.pairs.iter().find(|p| p[1] == gt).map(|p| p[0])
    }
}

/// Match predicted boxes `preds` (in rollout order) to ground truth `gts` (in record order).
pub fn hungarian(preds: &[[Bin; 4]], gts: &[Geometry<Bin>], settings: &MatchSettings) -> Matching {
    let (p, g) = (preds.len(), gts.len());
    let mut out = Matching {
        settings: settings.clone(),
        pairs: Vec::new(),
        fn_gt: (0..g).collect(),
        fp: (0..p).collect(),
        gating_rejections: 0,
        matched_maskiou_sum: 0.0,
        matched_maskiou_count: 0,
    };
    if p == 0 || g == 0 {
        return out;
    }
    let k = settings.candidate_top_k.max(1);
    let pred_boxes: Vec<[f64; 4]> = preds.iter().map(boxes::xyxy).collect();
    let gt_boxes: Vec<[f64; 4]> = gts.iter().map(boxes::extent).collect();

    let r = settings.mask_resolution;
    let mut gt_masks: Vec<Option<Option<Rle>>> = vec![None; g];
    let mut cost = vec![FORBIDDEN; p * g];
    for (i, pb) in pred_boxes.iter().enumerate() {
        let pred_mask = mask::rasterize(&Geometry::BBox(preds[i]), r);
        for j in candidates(pb, &gt_boxes, k) {
            let gt_mask = gt_masks[j].get_or_insert_with(|| mask::rasterize(&gts[j], r));
            let iou = match (&pred_mask, &*gt_mask) {
                (Some(a), Some(b)) => mask::rle_iou(a, b),
                _ => 0.0,
            };
            if iou < settings.gate {
                out.gating_rejections += 1;
                continue;
            }
            cost[i * g + j] = 1.0 - iou;
        }
    }

    let n = p + g;
    let square = CostMatrix::from_fn(n, n, |row, col| match (row < p, col < g) {
        (true, true) => cost[row * g + col],
        (true, false) => settings.fp_cost,
        (false, true) => settings.fn_cost,
        (false, false) => 0.0,
    });
    // Only non-finite or absurd fp/fn costs fail here (rejected by `Settings::check`): then
    // nothing is matched.
    let Ok(square) = square else { return out };
    let mut matched_gt = vec![false; g];
    let mut fp = Vec::new();
    let assigned = solve(&square, Goal::Minimize);
    for i in 0..p {
        let col = assigned.pairs().iter().find(|pair| pair.0 == i).map(|pair| pair.1);
        match col {
            Some(c) if c < g && cost[i * g + c] < FORBIDDEN * 0.5 => {
                out.pairs.push([i, c]);
                matched_gt[c] = true;
                out.matched_maskiou_sum += (1.0 - cost[i * g + c]).clamp(0.0, 1.0);
                out.matched_maskiou_count += 1;
            }
            _ => fp.push(i),
        }
    }
    out.fp = fp;
    out.fn_gt = (0..g).filter(|&j| !matched_gt[j]).collect();
    out
}

/// Step 2 of the module docs: the candidate ground truths of one prediction.
fn candidates(pb: &[f64; 4], gt_boxes: &[[f64; 4]], k: usize) -> Vec<usize> {
    let mut by_iou: Vec<(f64, usize)> =
        gt_boxes.iter().enumerate().map(|(j, gb)| (boxes::iou(pb, gb), j)).collect();
    by_iou.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    if by_iou.first().is_some_and(|best| best.0 <= 0.0) {
        let (pcx, pcy) = boxes::center(pb);
        let mut by_dist: Vec<(f64, usize)> = gt_boxes
            .iter()
            .enumerate()
            .map(|(j, gb)| {
                let (gcx, gcy) = boxes::center(gb);
                ((pcx - gcx).powi(2) + (pcy - gcy).powi(2), j)
            })
            .collect();
        by_dist.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        return by_dist.into_iter().take(k).map(|(_, j)| j).collect();
    }
    by_iou.into_iter().take(k).map(|(_, j)| j).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(c: [u16; 4]) -> [Bin; 4] {
        c.map(|k| Bin::new(k).unwrap())
    }

    fn g(c: [u16; 4]) -> Geometry<Bin> {
        Geometry::BBox(b(c))
    }

    #[test]
    fn no_predictions_means_every_ground_truth_is_missed() {
        let m = hungarian(&[], &[g([1, 1, 5, 5]), g([7, 7, 9, 9])], &MatchSettings::default());
        assert_eq!(m.fn_gt, vec![0, 1]);
        assert!(m.pairs.is_empty() && m.fp.is_empty());
    }

    #[test]
    fn no_ground_truth_means_every_prediction_is_a_false_positive() {
        let m = hungarian(&[b([1, 1, 5, 5])], &[], &MatchSettings::default());
        assert_eq!(m.fp, vec![0]);
        assert!(m.pairs.is_empty() && m.fn_gt.is_empty());
    }

    #[test]
    fn overlapping_boxes_match_and_far_ones_are_gated() {
        let preds = [b([100, 100, 300, 300]), b([600, 600, 700, 700])];
        let gts = [g([110, 100, 300, 310]), g([100, 600, 200, 700])];
        let m = hungarian(&preds, &gts, &MatchSettings::default());
        assert_eq!(m.pairs, vec![[0, 0]]);
        assert_eq!(m.fp, vec![1]);
        assert_eq!(m.fn_gt, vec![1]);
        assert!(m.gating_rejections >= 1);
        assert_eq!(m.matched_maskiou_count, 1);
        assert!(m.matched_maskiou_sum > 0.8 && m.matched_maskiou_sum <= 1.0);
        assert_eq!(m.gt_of(0), Some(0));
        assert_eq!(m.pred_of(0), Some(0));
    }

    #[test]
    fn disjoint_predictions_fall_back_to_the_nearest_centres() {
        let preds = [b([0, 0, 10, 10])];
        let gts = [g([500, 500, 600, 600]), g([20, 20, 30, 30]), g([900, 0, 999, 10])];
        assert_eq!(
            candidates(&boxes::xyxy(&preds[0]), &gts.map(|x| boxes::extent(&x)), 2),
            vec![1, 0]
        );
    }

    #[test]
    fn duplicate_predictions_match_one_ground_truth_the_others_are_false_positives() {
        let preds = [b([100, 100, 300, 300]); 3];
        let m = hungarian(&preds, &[g([100, 100, 300, 300])], &MatchSettings::default());
        assert_eq!(m.pairs.len(), 1);
        assert_eq!(m.fp.len(), 2);
    }
}
