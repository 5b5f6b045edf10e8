//! The coordinate terms: per-slot losses on the 1,000 coordinate logits of a position whose
//! target is a coordinate token (reference `objective_packing.md` §3.2).
//!
//! Per slot, with `z` the sanitised logits over the whole vocabulary, `s = z[coord] / T` and
//! `p = softmax(s)`:
//! - soft CE: `−Σ_k q(k) log p(k)`, `q` a Gaussian (σ) around the target bin, truncated to
//!   `|k − b| ≤ R` and renormalised (one-sided near the edges, no mirroring);
//! - W1: `Σ_i |F_p(i) − F_q(i)| / 999` over the cumulative distributions;
//! - gate: `max(0, logsumexp(z / T) − logsumexp(s))`, the negative log of the probability mass
//!   the model puts on the coordinate vocabulary;
//! - hard CE: `−log softmax(z[coord])(b)`, without temperature.
//!
//! Sanitising maps NaN → 0 and ±inf → ±1e4 and clamps to ±1e4: a single overflowing logit must
//! not turn the whole step into NaN through the softmax, and its gradient is zero.

use coordexp_core::norm1000::NUM_BINS;
use tch::{Device, Kind, Tensor};

/// Number of coordinate bins as a tensor dimension.
pub(crate) const BINS: i64 = NUM_BINS as i64;

/// Bound that sanitised logits are clamped to.
const LOGIT_BOUND: f64 = 1e4;

/// The contiguous vocabulary ids of `<|coord_0|>`…`<|coord_999|>` (verified by
/// `coordexp_text::CoordVocab` at tokenizer load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordIds {
    first: i64,
}

impl CoordIds {
    /// The range starting at `<|coord_0|>`'s id (`CoordVocab::first_id()`).
    pub fn new(first_id: u32) -> CoordIds {
        CoordIds { first: i64::from(first_id) }
    }

    /// Id of `<|coord_0|>`.
    pub fn first(&self) -> i64 {
        self.first
    }

    /// One past the id of `<|coord_999|>`.
    pub fn end(&self) -> i64 {
        self.first + BINS
    }

    /// The bin of `id`, if it is a coordinate token.
    pub fn bin(&self, id: i64) -> Option<i64> {
        (self.first..self.end()).contains(&id).then(|| id - self.first)
    }
}

/// NaN → 0, ±inf → ±1e4, then clamp to ±1e4 (the gradient is zero where a value was replaced or
/// clamped).
///
/// When every value is already finite and within bounds the ops are the identity, gradient
/// included, so the input is returned as is: their backward passes cost more than the whole
/// coordinate loss at a 150k vocabulary. The check is two reductions and one host read.
pub(crate) fn sanitize(logits: &Tensor) -> Tensor {
    // NaN propagates through max/min, so a NaN anywhere fails the comparison.
    let extreme = logits.max().maximum(&-logits.min());
    match extreme.f_double_value(&[]) {
        Ok(m) if m <= LOGIT_BOUND => logits.shallow_clone(),
        _ => sanitize_always(logits),
    }
}

fn sanitize_always(logits: &Tensor) -> Tensor {
    logits
        .nan_to_num(Some(0.0), Some(LOGIT_BOUND), Some(-LOGIT_BOUND))
        .clamp(-LOGIT_BOUND, LOGIT_BOUND)
}

/// The soft-CE targets of every bin: row `b` is the truncated, renormalised Gaussian around `b`.
///
/// Built once (1000 × 1000 f32, 4 MB) so that a batch's targets are one row gather.
pub(crate) fn gaussian_targets(sigma: f64, radius: Option<u32>, device: Device) -> Tensor {
    let n = NUM_BINS;
    let r = radius.map_or(n, |r| r as usize);
    let mut table = vec![0f32; n * n];
    for (b, row) in table.chunks_exact_mut(n).enumerate() {
        let lo = b.saturating_sub(r);
        let hi = (b + r).min(n - 1);
        let weight = |k: usize| {
            let d = (k as f64 - b as f64) / sigma;
            (-0.5 * d * d).exp()
        };
        let total: f64 = (lo..=hi).map(weight).sum();
        for (k, q) in row.iter_mut().enumerate().take(hi + 1).skip(lo) {
            *q = (weight(k) / total) as f32;
        }
    }
    Tensor::from_slice(&table).reshape([BINS, BINS]).to_device(device)
}

/// Hyper-parameters of the coordinate terms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CoordParams {
    pub temperature: f64,
}

/// Per-slot values of every coordinate term (each `[Nc]`, differentiable) and the reference's
/// coordinate diagnostics (`objective_packing.md` §3.5, detached): coordinate-vocabulary mass,
/// top-1 and top-5 hits of the raw coordinate logits, the target bin's probability, the margin
/// `max s − s[b]` of the tempered logits, |expected bin − target bin| and `Σ_k p_k·|k − b|`
/// (the W1 distance to a Dirac at the target), both in bins.
pub(crate) struct SlotTerms {
    pub soft_ce: Tensor,
    pub w1: Tensor,
    pub gate: Tensor,
    pub hard_ce: Tensor,
    pub mass: Tensor,
    pub top1: Tensor,
    pub top5: Tensor,
    pub p_gt: Tensor,
    pub margin: Tensor,
    pub bin_abs_err: Tensor,
    pub w1_to_delta: Tensor,
}

/// Compute the coordinate terms for `logits` `[Nc, V]` (f32) whose targets are `bins` `[Nc]`;
/// `soft_targets` is the table of [`gaussian_targets`].
pub(crate) fn slot_terms(
    logits: &Tensor,
    bins: &Tensor,
    soft_targets: &Tensor,
    ids: CoordIds,
    p: CoordParams,
) -> SlotTerms {
    let z = sanitize(logits);
    let coord = z.narrow(1, ids.first(), BINS);
    let scaled = scale(&z, p.temperature);
    let s = scaled.narrow(1, ids.first(), BINS);

    // gate = lse(all) − lse(coord) = −log(coordinate mass). Taken as a difference of two
    // log-sum-exps rather than through a full log-softmax: with an extreme logit elsewhere in the
    // row, log-probabilities near −1e4 lose the f32 precision the coordinate gradient needs.
    let lse_all = scaled.logsumexp([1], false);
    let gate = (lse_all - s.logsumexp([1], false)).clamp_min(0.0);

    let q = soft_targets.index_select(0, bins);
    let log_p = s.log_softmax(1, Kind::Float);
    let soft_ce = -(&q * &log_p).sum_dim_intlist(&[1i64][..], false, Kind::Float);

    let prob = s.softmax(1, Kind::Float);
    let cdf_gap = prob.cumsum(1, Kind::Float) - q.cumsum(1, Kind::Float);
    let w1 = cdf_gap.abs().sum_dim_intlist(&[1i64][..], false, Kind::Float) / (BINS - 1) as f64;

    let hard_ce =
        coord.logsumexp([1], false) - coord.gather(1, &bins.unsqueeze(1), false).squeeze_dim(1);

    let diag = tch::no_grad(|| {
        let at_bin = bins.unsqueeze(1);
        let mass = (-&gate).clamp(-50.0, 50.0).exp();
        let top1 = coord.argmax(1, false).eq_tensor(bins).to_kind(Kind::Float);
        let (_, top) = coord.topk(5.min(BINS), 1, true, true);
        let top5 = top.eq_tensor(&at_bin).any_dim(1, false).to_kind(Kind::Float);
        let p_gt = prob.gather(1, &at_bin, false).squeeze_dim(1);
        let margin = s.amax([1], false) - s.gather(1, &at_bin, false).squeeze_dim(1);
        let k = Tensor::arange(BINS, (Kind::Float, coord.device()));
        let expected = (&prob * &k).sum_dim_intlist(&[1i64][..], false, Kind::Float);
        let target = bins.to_kind(Kind::Float);
        let err = (expected - &target).abs();
        let dist = (k.unsqueeze(0) - target.unsqueeze(1)).abs();
        let w1_to_delta = (&prob * dist).sum_dim_intlist(&[1i64][..], false, Kind::Float);
        [mass, top1, top5, p_gt, margin.detach(), err, w1_to_delta]
    });
    let [mass, top1, top5, p_gt, margin, bin_abs_err, w1_to_delta] = diag;
    SlotTerms {
        soft_ce,
        w1,
        gate,
        hard_ce,
        mass,
        top1,
        top5,
        p_gt,
        margin,
        bin_abs_err,
        w1_to_delta,
    }
}

/// `x / t`, skipping the copy when `t` is exactly 1 (dividing by 1.0 is exact anyway).
fn scale(x: &Tensor, t: f64) -> Tensor {
    if t == 1.0 { x.shallow_clone() } else { x / t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_rows_are_normalised_truncated_and_one_sided_at_the_edges() {
        let t = gaussian_targets(1.5, Some(8), Device::Cpu);
        let sums =
            Vec::<f32>::try_from(t.sum_dim_intlist(&[1i64][..], false, Kind::Float)).unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
        let row = |b: i64| Vec::<f32>::try_from(t.get(b)).unwrap();
        let mid = row(500);
        assert_eq!(mid.iter().filter(|v| **v > 0.0).count(), 17, "|d| <= 8 inclusive");
        assert_eq!(mid[492], mid[508]);
        assert_eq!(mid[491], 0.0);
        let edge = row(0);
        assert_eq!(edge.iter().filter(|v| **v > 0.0).count(), 9, "no mirroring at bin 0");
        assert!(edge[0] > mid[500], "renormalised over the one-sided support");
        assert_eq!(row(999).iter().filter(|v| **v > 0.0).count(), 9);
    }

    #[test]
    fn sanitize_bounds_non_finite_logits() {
        let x = Tensor::from_slice(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 2e4, -3.0]);
        let y = Vec::<f32>::try_from(sanitize(&x)).unwrap();
        assert_eq!(y, vec![0.0, 1e4, -1e4, 1e4, -3.0]);
    }

    #[test]
    fn the_fast_path_for_clean_logits_matches_sanitising_in_value_and_gradient() {
        let x = (Tensor::randn([3, 7], (Kind::Float, Device::Cpu)) * 100.0).set_requires_grad(true);
        let y = x.detach().set_requires_grad(true);
        let w = Tensor::randn([3, 7], (Kind::Float, Device::Cpu));
        (sanitize(&x) * &w).sum(Kind::Float).backward();
        (sanitize_always(&y) * &w).sum(Kind::Float).backward();
        assert_eq!(
            Vec::<f32>::try_from(x.grad().flatten(0, -1)).unwrap(),
            Vec::<f32>::try_from(y.grad().flatten(0, -1)).unwrap()
        );
        // One out-of-range value sends the whole tensor through the sanitising ops.
        let z = Tensor::from_slice(&[1.0f32, -2e4]).set_requires_grad(true);
        sanitize(&z).sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(z.grad()).unwrap(), vec![1.0, 0.0]);
    }

    #[test]
    fn coord_ids_map_ids_to_bins() {
        let ids = CoordIds::new(100);
        assert_eq!(ids.bin(100), Some(0));
        assert_eq!(ids.bin(1099), Some(999));
        assert_eq!(ids.bin(1100), None);
        assert_eq!(ids.bin(99), None);
    }

    #[test]
    fn w1_of_a_two_bin_shift_between_near_diracs_is_two_over_999() {
        // Huge coordinate logit at bin 10, target bin 12 with a tiny sigma (q is a Dirac).
        let ids = CoordIds::new(0);
        let mut row = vec![-1e3f32; 1000];
        row[10] = 1e3;
        let logits = Tensor::from_slice(&row).reshape([1, 1000]);
        let bins = Tensor::from_slice(&[12i64]);
        let targets = gaussian_targets(1e-3, Some(0), Device::Cpu);
        let t = slot_terms(&logits, &bins, &targets, ids, CoordParams { temperature: 1.0 });
        assert!((t.w1.double_value(&[0]) - 2.0 / 999.0).abs() < 1e-7);
        assert_eq!(t.gate.double_value(&[0]), 0.0, "the whole vocabulary is coordinates");
        assert_eq!(t.top1.double_value(&[0]), 0.0);
        assert!((t.bin_abs_err.double_value(&[0]) - 2.0).abs() < 1e-4);
    }
}
