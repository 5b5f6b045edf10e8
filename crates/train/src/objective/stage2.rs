//! The stage-2 objective (`stage2_current.md` §4): `token_ce`, `bbox_geo`, `bbox_size_aux`,
//! `coord_reg` and the duplicate-burst unlikelihood, each with a module weight and the channels
//! it applies to; the loss is Σ module weight × module loss.
//!
//! Inputs are one micro-batch's [`Supervision`] — which hidden rows carry which target, built on
//! the host by the channel (A: the ground truth; B: the clean-prefix target) — and the logits of
//! those rows. Everything is normalised by the **window's** totals ([`Stage2Counts`]): CE by the
//! window's summed CE weights, box terms by its summed group weights, coordinate terms by its
//! summed slot weights, the text gate by its gate positions and the unlikelihood by its terms.
//! So, as in stage 1, the window loss does not depend on how the teacher-forced segments were
//! packed (our rule, DESIGN "Stage 2 decisions" 3; the reference takes per-pack means).
//!
//! Per term (`stage2_current.md` §4.2–§4.6):
//! - expected coordinate `ĉ = Σ_k softmax(z_coord)_k · k/999` (decode temperature 1), target
//!   `bin/999`;
//! - `bbox_geo`: boxes canonicalised (min/max, clamped to [0, 1]); `xyxy`: the mean SmoothL1
//!   (β 1) of the four corners, `center_size`: `center_weight · ½(SL1 cx + SL1 cy) +
//!   size_weight · ½(SL1 log w + SL1 log h)`; CIoU loss `1 − CIoU` whose aspect weight `α` is a
//!   constant in the backward pass (as in the CIoU paper; DESIGN decision 10), NaN → 0;
//! - `bbox_size_aux`: `log_wh_weight · (SL1 log w + SL1 log h) + oversize_penalty_weight ·
//!   (relu(log w − τ_w) + relu(log h − τ_h) + relu(w·h − τ_area))`, w, h ≥ 1e-6;
//! - `coord_reg`: hard CE, soft CE, W1 and gate at the coordinate slots with temperature `T`
//!   (the stage-1 terms), plus the text gate `−log max(1 − p_coord, 1e-6)` at supervised text
//!   positions (not coordinates, not closure), an unweighted mean;
//! - unlikelihood: `−log max(1 − p(token), 1e-6)` at each duplicate-burst target, a mean.

use super::coord::{self, CoordIds, CoordParams, SlotTerms};
use super::terms::LossTerms;
use coordexp_core::config::schema::{BoxParam, Channel, Stage2Objective as Config};
use coordexp_core::{Error, Result};
use serde::Serialize;
use std::ops::{Add, AddAssign};
use tch::{Device, Kind, Tensor};

/// The denominators of a stage-2 window: its micro-batches' totals summed (in micro-batch
/// order, so the sums are deterministic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stage2Counts {
    /// Σ CE weights of the supervised text tokens.
    pub ce_weight: f64,
    /// Σ group weights of the supervised boxes.
    pub box_weight: f64,
    /// Σ weights of the supervised coordinate slots.
    pub slot_weight: f64,
    /// Supervised coordinate slots (the diagnostics' denominator).
    pub slots: u64,
    /// Text-gate positions.
    pub gate_positions: u64,
    /// Unlikelihood terms.
    pub ul_terms: u64,
    /// Supervised text tokens (the CE rows, whatever their weight).
    pub text_tokens: u64,
}

impl Add for Stage2Counts {
    type Output = Stage2Counts;
    fn add(mut self, rhs: Stage2Counts) -> Stage2Counts {
        self += rhs;
        self
    }
}

impl AddAssign for Stage2Counts {
    fn add_assign(&mut self, r: Stage2Counts) {
        self.ce_weight += r.ce_weight;
        self.box_weight += r.box_weight;
        self.slot_weight += r.slot_weight;
        self.slots += r.slots;
        self.gate_positions += r.gate_positions;
        self.ul_terms += r.ul_terms;
        self.text_tokens += r.text_tokens;
    }
}

impl std::iter::Sum for Stage2Counts {
    fn sum<I: Iterator<Item = Stage2Counts>>(iter: I) -> Stage2Counts {
        iter.fold(Stage2Counts::default(), Add::add)
    }
}

/// What a text target is for the `struct_ce` / `desc_ce` split (closure counts as structure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Struct,
    Desc,
}

/// The supervision of one micro-batch, on the host: every index is a row of the micro-batch's
/// flattened hidden states (the row predicting the next token).
#[derive(Debug, Clone, Default)]
pub struct Supervision {
    pub text_rows: Vec<i64>,
    pub text_targets: Vec<i64>,
    pub text_weights: Vec<f64>,
    pub text_kinds: Vec<TextKind>,
    pub coord_rows: Vec<i64>,
    pub coord_bins: Vec<i64>,
    pub coord_weights: Vec<f64>,
    /// Boxes: the four slot indices (into `coord_*`, x1 y1 x2 y2) and the group weight.
    pub boxes: Vec<([usize; 4], f64)>,
    pub gate_rows: Vec<i64>,
    pub ul_rows: Vec<i64>,
    pub ul_tokens: Vec<i64>,
}

impl Supervision {
    /// This micro-batch's totals (sum them over the window).
    pub fn counts(&self) -> Stage2Counts {
        Stage2Counts {
            ce_weight: self.text_weights.iter().sum(),
            box_weight: self.boxes.iter().map(|(_, w)| w).sum(),
            slot_weight: self.coord_weights.iter().sum(),
            slots: self.coord_rows.len() as u64,
            gate_positions: self.gate_rows.len() as u64,
            ul_terms: self.ul_rows.len() as u64,
            text_tokens: self.text_rows.len() as u64,
        }
    }

    /// The distinct hidden rows whose logits the loss needs, sorted, and for each group the
    /// positions of its rows in that list.
    pub fn rows(&self) -> RowIndex {
        let mut all: Vec<i64> = self
            .text_rows
            .iter()
            .chain(&self.coord_rows)
            .chain(&self.gate_rows)
            .chain(&self.ul_rows)
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        let at = |rows: &[i64]| -> Vec<i64> {
            rows.iter().map(|r| all.binary_search(r).map_or(0, |i| i as i64)).collect()
        };
        RowIndex {
            text: at(&self.text_rows),
            coord: at(&self.coord_rows),
            gate: at(&self.gate_rows),
            ul: at(&self.ul_rows),
            rows: all,
        }
    }
}

/// The rows of a micro-batch's logits and where each group's rows are among them.
#[derive(Debug, Clone, Default)]
pub struct RowIndex {
    /// Flat hidden-state rows, sorted and distinct.
    pub rows: Vec<i64>,
    pub text: Vec<i64>,
    pub coord: Vec<i64>,
    pub gate: Vec<i64>,
    pub ul: Vec<i64>,
}

/// The terms of a channel, by name (`stage2_current.md` §6): `loss/text/*` and `loss/coord/*`
/// for A, `loss/B_rollout_text/*` and `loss/B_coord/*` for B; values are module weight × term
/// weight × raw term, except the unlikelihood, which is its raw mean. `coord_diag/*` (A) and
/// `coord_diag/B/*` (B) are unweighted means over the supervised slots.
pub const A_TERMS: [&str; 17] = [
    "loss/text/struct_ce",
    "loss/text/desc_ce",
    "loss/coord/bbox_smoothl1",
    "loss/coord/bbox_ciou",
    "loss/coord/bbox_log_wh",
    "loss/coord/bbox_oversize",
    "loss/coord/coord_token_ce",
    "loss/coord/coord_soft_ce",
    "loss/coord/coord_w1",
    "loss/coord/coord_gate",
    "loss/coord/text_gate",
    "coord_diag/acc_top5",
    "coord_diag/p_gt_mean",
    "coord_diag/margin_mean",
    "coord_diag/expected_bin_mae",
    "coord_diag/w1_to_delta",
    "coord_diag/coord_vocab_mass_mean",
];

/// The metric terms a channel's loss reports.
pub fn term_names(channel: Channel) -> &'static [&'static str] {
    match channel {
        Channel::A => &A_TERMS,
        Channel::B => &B_TERMS,
    }
}

/// Channel B's terms (see [`A_TERMS`]), plus the raw unlikelihood mean.
pub const B_TERMS: [&str; 18] = [
    "loss/B_rollout_text/struct_ce",
    "loss/B_rollout_text/desc_ce",
    "loss/B_coord/bbox_smoothl1",
    "loss/B_coord/bbox_ciou",
    "loss/B_coord/bbox_log_wh",
    "loss/B_coord/bbox_oversize",
    "loss/B_coord/coord_token_ce",
    "loss/B_coord/coord_soft_ce",
    "loss/B_coord/coord_w1",
    "loss/B_coord/coord_gate",
    "loss/B_coord/text_gate",
    "coord_diag/B/acc_top5",
    "coord_diag/B/p_gt_mean",
    "coord_diag/B/margin_mean",
    "coord_diag/B/expected_bin_mae",
    "coord_diag/B/w1_to_delta",
    "coord_diag/B/coord_vocab_mass_mean",
    "loss/B_rollout_text/duplicate_burst_unlikelihood",
];

/// A micro-batch's share of the window loss.
pub struct Stage2Loss {
    pub total: Tensor,
    pub terms: LossTerms,
}

/// The configured stage-2 objective.
pub struct Stage2Objective {
    cfg: Config,
    ids: CoordIds,
    soft_targets: Tensor,
}

/// SmoothL1 with β = 1, elementwise.
fn smooth_l1(pred: &Tensor, target: &Tensor) -> Tensor {
    let d = (pred - target).abs();
    (&d * &d * 0.5).where_self(&d.lt(1.0), &(&d - 0.5))
}

/// `1 − CIoU` of boxes `[G, 4]` (x1 y1 x2 y2 in [0, 1]) against `gt` `[G, 4]`, with the aspect
/// weight α held constant (detached); NaN and ±inf become 0.
fn ciou_loss(pred: &Tensor, gt: &Tensor) -> Tensor {
    let eps = 1e-7;
    let col = |t: &Tensor, i: i64| t.select(1, i);
    let (px1, py1, px2, py2) = (col(pred, 0), col(pred, 1), col(pred, 2), col(pred, 3));
    let (gx1, gy1, gx2, gy2) = (col(gt, 0), col(gt, 1), col(gt, 2), col(gt, 3));
    let (pw, ph) = (&px2 - &px1, &py2 - &py1);
    let (gw, gh) = (&gx2 - &gx1, &gy2 - &gy1);
    let iw = (px2.minimum(&gx2) - px1.maximum(&gx1)).clamp_min(0.0);
    let ih = (py2.minimum(&gy2) - py1.maximum(&gy1)).clamp_min(0.0);
    let inter = &iw * &ih;
    let union = &pw * &ph + &gw * &gh - &inter + eps;
    let iou = &inter / &union;
    let cw = px2.maximum(&gx2) - px1.minimum(&gx1);
    let ch = py2.maximum(&gy2) - py1.minimum(&gy1);
    let c2 = &cw * &cw + &ch * &ch + eps;
    let dx = (&px1 + &px2 - &gx1 - &gx2) * 0.5;
    let dy = (&py1 + &py2 - &gy1 - &gy2) * 0.5;
    let rho2 = &dx * &dx + &dy * &dy;
    let four_over_pi2 = 4.0 / (std::f64::consts::PI * std::f64::consts::PI);
    let atan_gt = (&gw / (&gh + eps)).atan();
    let atan_pred = (&pw / (&ph + eps)).atan();
    let v = (atan_gt - atan_pred).square() * four_over_pi2;
    let alpha = tch::no_grad(|| &v / ((-&iou + 1.0) + &v + eps));
    let ciou = &iou - rho2 / c2 - alpha.detach() * &v;
    (-ciou + 1.0).nan_to_num(0.0, 0.0, 0.0)
}

impl Stage2Objective {
    pub fn new(cfg: &Config, ids: CoordIds, device: Device) -> Stage2Objective {
        let c = &cfg.coord_reg;
        Stage2Objective {
            cfg: cfg.clone(),
            ids,
            soft_targets: coord::gaussian_targets(c.target_sigma, c.target_truncate, device),
        }
    }

    /// The micro-batch's share of the window loss of `channel`. `logits` `[R, V]` are the
    /// logits of `index.rows`, in that order.
    pub fn loss(
        &self,
        channel: Channel,
        sup: &Supervision,
        index: &RowIndex,
        logits: &Tensor,
        window: &Stage2Counts,
    ) -> Result<Stage2Loss> {
        let device = logits.device();
        let v = logits.size().last().copied().unwrap_or(0);
        if !sup.coord_rows.is_empty() && v < self.ids.end() {
            return Err(Error::runtime(format!(
                "the logits cover {v} ids but the coordinate tokens end at id {}",
                self.ids.end() - 1
            ))
            .hint("the model's vocabulary must include the 1000 coordinate tokens (expand it)"));
        }
        let on = |channels: &[Channel]| channels.contains(&channel);
        let cfg = &self.cfg;
        let z = logits.to_kind(Kind::Float);
        let long = |x: &[i64]| Tensor::from_slice(x).to_device(device);
        let float = |x: &[f64]| Tensor::from_slice(x).to_kind(Kind::Float).to_device(device);
        let zero = || Tensor::zeros([], (Kind::Float, device));
        let per = |sum: Tensor, d: f64| if d > 0.0 { sum / d } else { sum * 0.0 };

        // token_ce: Σ w·ce / Σ_window w, split into structure (closure included) and desc.
        let (struct_ce, desc_ce) = if sup.text_rows.is_empty() {
            (zero(), zero())
        } else {
            let zt = z.index_select(0, &long(&index.text));
            let y = long(&sup.text_targets).unsqueeze(1);
            let ce = -zt.log_softmax(1, Kind::Float).gather(1, &y, false).squeeze_dim(1);
            let w = float(&sup.text_weights);
            let is_desc: Vec<f64> =
                sup.text_kinds.iter().map(|k| f64::from(u8::from(*k == TextKind::Desc))).collect();
            let d = float(&is_desc);
            let wce = &ce * &w;
            let desc = (&wce * &d).sum(Kind::Float);
            let strc = (&wce * (-&d + 1.0)).sum(Kind::Float);
            (per(strc, window.ce_weight), per(desc, window.ce_weight))
        };

        // Coordinate slots: the expected coordinate (decode T = 1) and the coord_reg terms.
        let zc = if sup.coord_rows.is_empty() {
            None
        } else {
            Some(z.index_select(0, &long(&index.coord)))
        };
        let slot_w = float(&sup.coord_weights);
        let (mut sl1, mut ciou, mut log_wh, mut oversize) = (zero(), zero(), zero(), zero());
        let mut reg = [zero(), zero(), zero(), zero()];
        let mut diag = Tensor::zeros([6], (Kind::Float, device));
        if let Some(zc) = &zc {
            let bins = long(&sup.coord_bins);
            let coord_logits = coord::sanitize(zc).narrow(1, self.ids.first(), coord::BINS);
            let p = coord_logits.softmax(1, Kind::Float);
            let k = Tensor::arange(coord::BINS, (Kind::Float, device)) / 999.0;
            let expected = (&p * &k).sum_dim_intlist(&[1i64][..], false, Kind::Float);
            let target = bins.to_kind(Kind::Float) / 999.0;
            if !sup.boxes.is_empty() {
                let slots: Vec<i64> =
                    sup.boxes.iter().flat_map(|(s, _)| s.iter().map(|&i| i as i64)).collect();
                let g = sup.boxes.len() as i64;
                let pick = long(&slots);
                let raw = expected.index_select(0, &pick).view([g, 4]);
                let gt = target.index_select(0, &pick).view([g, 4]);
                let col = |t: &Tensor, i: i64| t.select(1, i);
                // Canonical boxes: min/max of each axis, clamped to the image.
                let x1 = col(&raw, 0).minimum(&col(&raw, 2)).clamp(0.0, 1.0);
                let x2 = col(&raw, 0).maximum(&col(&raw, 2)).clamp(0.0, 1.0);
                let y1 = col(&raw, 1).minimum(&col(&raw, 3)).clamp(0.0, 1.0);
                let y2 = col(&raw, 1).maximum(&col(&raw, 3)).clamp(0.0, 1.0);
                let pred = Tensor::stack(&[&x1, &y1, &x2, &y2], 1);
                let gw = float(&sup.boxes.iter().map(|(_, w)| *w).collect::<Vec<_>>());
                let (pw, ph) = ((&x2 - &x1).clamp_min(1e-6), (&y2 - &y1).clamp_min(1e-6));
                let tw = (col(&gt, 2) - col(&gt, 0)).clamp_min(1e-6);
                let th = (col(&gt, 3) - col(&gt, 1)).clamp_min(1e-6);
                let geo = &cfg.bbox_geo;
                let sl1_box = match geo.parameterization {
                    BoxParam::Xyxy => {
                        smooth_l1(&pred, &gt).mean_dim(&[1i64][..], false, Kind::Float)
                    }
                    BoxParam::CenterSize => {
                        let c = |a: &Tensor, b: &Tensor| (a + b) * 0.5;
                        let center = (smooth_l1(&c(&x1, &x2), &c(&col(&gt, 0), &col(&gt, 2)))
                            + smooth_l1(&c(&y1, &y2), &c(&col(&gt, 1), &col(&gt, 3))))
                            * 0.5;
                        let size = (smooth_l1(&pw.log(), &tw.log())
                            + smooth_l1(&ph.log(), &th.log()))
                            * 0.5;
                        center * geo.center_weight + size * geo.size_weight
                    }
                };
                let weighted = |x: &Tensor| per((x * &gw).sum(Kind::Float), window.box_weight);
                sl1 = weighted(&sl1_box);
                ciou = weighted(&ciou_loss(&pred, &gt));
                let aux = &cfg.bbox_size_aux;
                log_wh =
                    weighted(&(smooth_l1(&pw.log(), &tw.log()) + smooth_l1(&ph.log(), &th.log())));
                let mut over = vec![Tensor::zeros([g], (Kind::Float, device))];
                if let Some(t) = aux.oversize_log_w_threshold {
                    over.push((pw.log() - t).relu());
                }
                if let Some(t) = aux.oversize_log_h_threshold {
                    over.push((ph.log() - t).relu());
                }
                if let Some(t) = aux.oversize_area_threshold {
                    over.push(((&pw * &ph) - t).relu());
                }
                let over = Tensor::stack(&over, 0).sum_dim_intlist(&[0i64][..], false, Kind::Float);
                oversize = weighted(&over);
            }
            let t: SlotTerms = coord::slot_terms(
                zc,
                &bins,
                &self.soft_targets,
                self.ids,
                CoordParams { temperature: cfg.coord_reg.temperature },
            );
            let weighted = |x: &Tensor| per((x * &slot_w).sum(Kind::Float), window.slot_weight);
            reg = [weighted(&t.hard_ce), weighted(&t.soft_ce), weighted(&t.w1), weighted(&t.gate)];
            diag = tch::no_grad(|| {
                let sum = |x: &Tensor| x.detach().sum(Kind::Float);
                Tensor::stack(
                    &[&t.top5, &t.p_gt, &t.margin, &t.bin_abs_err, &t.w1_to_delta, &t.mass]
                        .map(sum),
                    0,
                ) / window.slots.max(1) as f64
            });
        }

        // Text gate: −log max(1 − p_coord, 1e-6) at the gate rows (temperature T).
        let text_gate = if sup.gate_rows.is_empty() {
            zero()
        } else {
            let zg =
                coord::sanitize(&z.index_select(0, &long(&index.gate))) / cfg.coord_reg.temperature;
            let lse_all = zg.logsumexp([1], false);
            let lse_coord = zg.narrow(1, self.ids.first(), coord::BINS).logsumexp([1], false);
            let p_coord = (lse_coord - lse_all).exp();
            let term = -(-p_coord + 1.0).clamp_min(1e-6).log();
            per(term.sum(Kind::Float), window.gate_positions as f64)
        };

        // Duplicate-burst unlikelihood: −log max(1 − p(token), 1e-6), a mean over terms.
        let ul = if sup.ul_rows.is_empty() {
            zero()
        } else {
            let zu = z.index_select(0, &long(&index.ul));
            let p = zu
                .log_softmax(1, Kind::Float)
                .gather(1, &long(&sup.ul_tokens).unsqueeze(1), false)
                .squeeze_dim(1)
                .exp();
            let term = -(-p + 1.0).clamp_min(1e-6).log();
            per(term.sum(Kind::Float), window.ul_terms as f64)
        };

        // Module weights; a module off for this channel contributes nothing.
        let module = |w: f64, channels: &[Channel]| if on(channels) { w } else { 0.0 };
        let w_ce = module(cfg.token_ce.weight, &cfg.token_ce.channels);
        let w_geo = module(cfg.bbox_geo.weight, &cfg.bbox_geo.channels);
        let w_aux = module(cfg.bbox_size_aux.weight, &cfg.bbox_size_aux.channels);
        let w_reg = module(cfg.coord_reg.weight, &cfg.coord_reg.channels);
        let w_ul = module(cfg.duplicate_ul.weight, &cfg.duplicate_ul.channels);
        let c = &cfg.coord_reg;
        let parts: [(Tensor, f64); 11] = [
            (struct_ce, w_ce),
            (desc_ce, w_ce),
            (sl1, w_geo * cfg.bbox_geo.smoothl1_weight),
            (ciou, w_geo * cfg.bbox_geo.ciou_weight),
            (log_wh, w_aux * cfg.bbox_size_aux.log_wh_weight),
            (oversize, w_aux * cfg.bbox_size_aux.oversize_penalty_weight),
            (reg[0].shallow_clone(), w_reg * c.coord_ce_weight),
            (reg[1].shallow_clone(), w_reg * c.soft_ce_weight),
            (reg[2].shallow_clone(), w_reg * c.w1_weight),
            (reg[3].shallow_clone(), w_reg * c.coord_gate_weight),
            (text_gate, w_reg * c.text_gate_weight),
        ];
        // A zero-weight term adds nothing (not even 0 × NaN).
        let mut summands: Vec<Tensor> = vec![zero()];
        let mut shown = Vec::with_capacity(parts.len() + 1);
        for (term, w) in &parts {
            if *w != 0.0 {
                summands.push(term * *w);
            }
            shown.push(tch::no_grad(|| term.detach() * *w));
        }
        if w_ul != 0.0 {
            summands.push(&ul * w_ul);
        }
        let total = Tensor::stack(&summands, 0).sum(Kind::Float);
        let names = term_names(channel);
        let mut values: Vec<Tensor> = shown.into_iter().map(|t| t.unsqueeze(0)).collect();
        values.push(diag);
        if channel == Channel::B {
            values.push(ul.detach().unsqueeze(0));
        }
        let values = Tensor::cat(&values, 0).to_kind(Kind::Double);
        Ok(Stage2Loss { total, terms: LossTerms::new(names, values)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_l1_is_half_square_inside_one_and_linear_outside() {
        let p = Tensor::from_slice(&[0.5f32, 3.0, -2.0]);
        let t = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let v = Vec::<f32>::try_from(smooth_l1(&p, &t)).unwrap();
        assert_eq!(v, vec![0.125, 2.5, 1.5]);
    }

    #[test]
    fn ciou_loss_is_zero_for_equal_boxes_and_grows_with_distance() {
        let a = Tensor::from_slice(&[0.1f32, 0.1, 0.5, 0.6]).view([1, 4]);
        let near = Tensor::from_slice(&[0.12f32, 0.1, 0.52, 0.6]).view([1, 4]);
        let far = Tensor::from_slice(&[0.6f32, 0.6, 0.9, 0.9]).view([1, 4]);
        let l = |b: &Tensor| ciou_loss(b, &a).double_value(&[0]);
        assert!(l(&a).abs() < 1e-5, "{}", l(&a));
        assert!(l(&near) > 0.0 && l(&near) < l(&far));
        // Disjoint boxes: 1 − IoU(=0) + ρ²/c² > 1.
        assert!(l(&far) > 1.0);
    }

    #[test]
    fn window_counts_add_up_and_the_row_index_points_into_distinct_sorted_rows() {
        let sup = Supervision {
            text_rows: vec![5, 1],
            text_targets: vec![3, 4],
            text_weights: vec![1.0, 0.5],
            text_kinds: vec![TextKind::Struct, TextKind::Desc],
            coord_rows: vec![2, 3, 4, 6],
            coord_bins: vec![1, 2, 3, 4],
            coord_weights: vec![1.0; 4],
            boxes: vec![([0, 1, 2, 3], 2.0)],
            gate_rows: vec![5],
            ul_rows: vec![1],
            ul_tokens: vec![9],
        };
        let c = sup.counts();
        assert_eq!((c.ce_weight, c.box_weight, c.slot_weight, c.slots), (1.5, 2.0, 4.0, 4));
        assert_eq!((c + c).ce_weight, 3.0);
        let idx = sup.rows();
        assert_eq!(idx.rows, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(idx.text, vec![4, 0]);
        assert_eq!(idx.coord, vec![1, 2, 3, 5]);
        assert_eq!((idx.gate.clone(), idx.ul.clone()), (vec![4], vec![0]));
    }
}
