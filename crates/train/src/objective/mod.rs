//! The stage-1 objective: text cross-entropy plus distribution-aware coordinate terms.
//!
//! Input: the logits of the supervised positions of one micro-batch (`[N, V]`, any float dtype;
//! the caller computes logits only there), each position's target id and token type, and the
//! token counts of the whole accumulation window ([`WindowCounts`]). Output: the micro-batch's
//! share of the window loss (backward it, accumulate, step) and its metric terms.
//!
//! ```text
//! loss = text_ce · Σ_text w_type · CE / D_text
//!      + Σ_coord (w_soft · softCE + w_w1 · W1 + w_gate · gate + w_hard · hardCE) / D_coord
//! ```
//!
//! `CE` is the full-vocabulary cross-entropy of a non-coordinate target (raw logits, no
//! temperature); the coordinate terms are described in [`coord`]. With `normalize: per_group`,
//! `D_text` = the window's text tokens and `D_coord` = its coordinate slots (the reference); with
//! `per_token` both are the window's supervised tokens. Because every micro-batch divides its sums
//! by the *window's* counts, summing the micro-batch losses gives exactly the loss of the whole
//! window as one batch, whatever the packing or the split (never a mean of means).
//!
//! Plain full-vocabulary cross-entropy on coordinate tokens is `hard_ce: 1, gate: 1` at
//! temperature 1 (−log p = −log p_coord(b) + (lse_all − lse_coord)).

mod coord;
mod window;

pub use coord::CoordIds;
pub use window::WindowCounts;

use coord::{BINS, CoordParams};
use coordexp_core::config::schema::{LossNorm, Objective};
use coordexp_core::{Error, Result};
use coordexp_text::TokenType;
use tch::{Device, Kind, Tensor};

/// The supervised positions of one micro-batch.
pub struct Supervised<'a> {
    /// `[N, V]` logits predicting each target (already shifted: row i predicts `targets[i]`).
    pub logits: &'a Tensor,
    /// Target token id of each row.
    pub targets: &'a [i64],
    /// Token type of each target; only supervised types (struct/desc/coord/closure) may appear.
    pub types: &'a [TokenType],
}

/// The configured stage-1 objective, ready to evaluate micro-batches.
pub struct Stage1Objective {
    cfg: Objective,
    ids: CoordIds,
    /// Soft-CE target rows per bin (see [`coord::gaussian_targets`]), on the loss device.
    soft_targets: Tensor,
}

/// One micro-batch's share of the window loss.
pub struct Stage1Loss {
    /// Differentiable scalar (f32): backward it; the sum over a window's micro-batches is the
    /// window loss.
    pub total: Tensor,
    /// Window-normalised metric terms; add the micro-batches' terms to get the window's.
    pub terms: LossTerms,
}

/// Names of the values in [`LossTerms`], in order.
///
/// `loss` is the weighted total. The others are means over their own group of the window,
/// whatever `normalize` says, so they compare across runs: `loss/text_ce` is
/// `Σ w_type · CE / text tokens` (before `objective.text_ce`), `loss/{soft_ce,w1,gate,hard_ce}`
/// the unweighted per-slot means, `text_ce/<type>` the unweighted CE mean of each token type,
/// and `coord_diag/*` the per-slot means of the coordinate-vocabulary probability mass, the
/// top-1 bin accuracy and |expected bin − target bin| (in bins).
pub const TERM_NAMES: [&str; 12] = [
    "loss",
    "loss/text_ce",
    "loss/soft_ce",
    "loss/w1",
    "loss/gate",
    "loss/hard_ce",
    "text_ce/struct",
    "text_ce/desc",
    "text_ce/closure",
    "coord_diag/vocab_mass",
    "coord_diag/acc_top1",
    "coord_diag/expected_bin_mae",
];

/// Metric values of a micro-batch or a window, kept on the device (one `[12]` f64 tensor) so
/// that accumulating them costs no host synchronisation; read them once per log step.
pub struct LossTerms {
    values: Tensor,
}

impl LossTerms {
    /// `(name, value)` pairs in [`TERM_NAMES`] order (one device → host copy).
    pub fn metrics(&self) -> Result<Vec<(&'static str, f64)>> {
        let v = Vec::<f64>::try_from(self.values.to_device(Device::Cpu))
            .map_err(|e| Error::runtime(format!("reading loss terms from the device: {e}")))?;
        Ok(TERM_NAMES.into_iter().zip(v).collect())
    }

    /// The accumulated value of `name` (one of [`TERM_NAMES`]).
    pub fn get(&self, name: &str) -> Result<f64> {
        let i = TERM_NAMES
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| Error::runtime(format!("no loss term named `{name}`")))?;
        self.values
            .f_double_value(&[i as i64])
            .map_err(|e| Error::runtime(format!("reading loss term `{name}`: {e}")))
    }
}

impl std::ops::Add for LossTerms {
    type Output = LossTerms;
    fn add(self, rhs: LossTerms) -> LossTerms {
        LossTerms { values: self.values + rhs.values }
    }
}

impl std::ops::AddAssign for LossTerms {
    fn add_assign(&mut self, rhs: LossTerms) {
        self.values += rhs.values;
    }
}

/// Host-side split of a micro-batch into text rows and coordinate rows.
#[derive(Default)]
struct Split {
    text_rows: Vec<i64>,
    text_targets: Vec<i64>,
    /// 0 = struct, 1 = desc, 2 = closure (index into the per-type sums).
    text_kind: Vec<i64>,
    text_weight: Vec<f32>,
    coord_rows: Vec<i64>,
    bins: Vec<i64>,
}

const MISMATCH_HINT: &str = "token types must come from the same encoding as the labels (coordexp-text's encoder); this is a bug in batch assembly";

impl Stage1Objective {
    /// Configure the objective; the soft-CE target table is built on `device` (the logits').
    pub fn new(cfg: &Objective, ids: CoordIds, device: Device) -> Stage1Objective {
        let c = &cfg.coord;
        Stage1Objective {
            cfg: cfg.clone(),
            ids,
            soft_targets: coord::gaussian_targets(c.soft_ce.sigma, c.soft_ce.radius, device),
        }
    }

    /// The micro-batch's loss: its sums divided by the `window` counts (see the module docs).
    pub fn loss(&self, batch: &Supervised<'_>, window: &WindowCounts) -> Result<Stage1Loss> {
        let split = self.split(batch)?;
        let micro = WindowCounts::of(batch.types);
        if !window.covers(&micro) {
            return Err(Error::runtime(format!(
                "the micro-batch has more supervised tokens than its window ({micro:?} vs {window:?})"
            ))
            .hint("pass the counts of the whole accumulation window (the sum over its micro-batches)"));
        }
        let logits = batch.logits.to_kind(Kind::Float);
        let device = logits.device();
        let rows = |v: &[i64]| Tensor::from_slice(v).to_device(device);
        let zero = || Tensor::zeros([], (Kind::Float, device));

        let (d_text, d_coord) = match self.cfg.normalize {
            LossNorm::PerGroup => (window.text(), window.coord),
            LossNorm::PerToken => (window.supervised(), window.supervised()),
        };
        let per = |sum: Tensor, count: u64| sum / count.max(1) as f64;

        // Text cross-entropy on raw logits.
        let (text_term, text_mean, type_means) = if split.text_rows.is_empty() {
            (zero(), zero(), Tensor::zeros([3], (Kind::Float, device)))
        } else {
            let z = logits.index_select(0, &rows(&split.text_rows));
            let y = rows(&split.text_targets).unsqueeze(1);
            let ce = z.logsumexp([1], false) - z.gather(1, &y, false).squeeze_dim(1);
            let w = Tensor::from_slice(&split.text_weight).to_device(device);
            let weighted = (&ce * &w).sum(Kind::Float);
            let type_sums = tch::no_grad(|| {
                Tensor::zeros([3], (Kind::Float, device)).scatter_add(
                    0,
                    &rows(&split.text_kind),
                    &ce.detach(),
                )
            });
            let type_counts = Tensor::from_slice(
                &[window.structure, window.desc, window.closure].map(|c| c.max(1) as f32),
            )
            .to_device(device);
            let text_mean = per(weighted.detach(), window.text());
            (per(weighted, d_text) * self.cfg.text_ce, text_mean, type_sums / type_counts)
        };

        // Coordinate terms.
        let c = &self.cfg.coord;
        let (coord_term, coord_means) = if split.coord_rows.is_empty() {
            (zero(), Tensor::zeros([7], (Kind::Float, device)))
        } else {
            let z = logits.index_select(0, &rows(&split.coord_rows));
            let bins = rows(&split.bins);
            let t = coord::slot_terms(
                &z,
                &bins,
                &self.soft_targets,
                self.ids,
                CoordParams { temperature: c.temperature },
            );
            let sum = |x: &Tensor| x.sum(Kind::Float);
            let weighted = sum(&t.soft_ce) * c.soft_ce.weight
                + sum(&t.w1) * c.w1.weight
                + sum(&t.gate) * c.gate.weight
                + sum(&t.hard_ce) * c.hard_ce.weight;
            let means = tch::no_grad(|| {
                Tensor::stack(
                    &[&t.soft_ce, &t.w1, &t.gate, &t.hard_ce, &t.mass, &t.top1, &t.bin_abs_err]
                        .map(|x| sum(&x.detach())),
                    0,
                ) / window.coord.max(1) as f64
            });
            (per(weighted, d_coord), means)
        };

        let total = text_term + coord_term;
        let values = tch::no_grad(|| {
            Tensor::cat(
                &[
                    total.detach().unsqueeze(0),
                    text_mean.unsqueeze(0),
                    coord_means.narrow(0, 0, 4),
                    type_means,
                    coord_means.narrow(0, 4, 3),
                ],
                0,
            )
            .to_kind(Kind::Double)
        });
        Ok(Stage1Loss { total, terms: LossTerms { values } })
    }

    /// Validate the micro-batch and split it into text and coordinate rows.
    fn split(&self, batch: &Supervised<'_>) -> Result<Split> {
        let size = batch.logits.size();
        let (n, vocab) = match size[..] {
            [n, v] => (n, v),
            _ => {
                return Err(Error::runtime(format!(
                    "stage-1 logits must be [positions, vocab], got {size:?}"
                ))
                .hint("gather the logits of the supervised positions into one 2-D tensor"));
            }
        };
        if batch.targets.len() as i64 != n || batch.types.len() as i64 != n {
            return Err(Error::runtime(format!(
                "{n} logit rows but {} targets and {} token types",
                batch.targets.len(),
                batch.types.len()
            ))
            .hint(MISMATCH_HINT));
        }
        if vocab < self.ids.end() {
            return Err(Error::runtime(format!(
                "the logits cover {vocab} ids but the coordinate tokens end at id {}",
                self.ids.end() - 1
            ))
            .hint("the model's vocabulary must include the 1000 coordinate tokens (expand it)"));
        }
        let w = &self.cfg.token_weights;
        let mut s = Split::default();
        for (i, (&target, &ty)) in batch.targets.iter().zip(batch.types).enumerate() {
            let at = || format!("supervised position {i}");
            if !(0..vocab).contains(&target) {
                return Err(Error::runtime(format!(
                    "target id {target} is outside the vocabulary (0..{vocab})"
                ))
                .at(at())
                .hint(MISMATCH_HINT));
            }
            let bin = self.ids.bin(target);
            let (kind, weight) = match (ty, bin) {
                (TokenType::Coord, Some(b)) => {
                    s.coord_rows.push(i as i64);
                    s.bins.push(b);
                    continue;
                }
                (TokenType::Struct, None) => (0, w.structure),
                (TokenType::Desc, None) => (1, w.desc),
                (TokenType::Closure, None) => (2, w.closure),
                (TokenType::Prompt | TokenType::Image, _) => {
                    return Err(Error::runtime(format!(
                        "token type {ty:?} is never supervised but has target {target}"
                    ))
                    .at(at())
                    .hint(MISMATCH_HINT));
                }
                (TokenType::Coord, None) => {
                    return Err(Error::runtime(format!(
                        "token type coord but target {target} is not a coordinate id ({}..{})",
                        self.ids.first(),
                        self.ids.end()
                    ))
                    .at(at())
                    .hint(MISMATCH_HINT));
                }
                (_, Some(b)) => {
                    return Err(Error::runtime(format!(
                        "token type {ty:?} but target {target} is the coordinate token of bin {b}"
                    ))
                    .at(at())
                    .hint(MISMATCH_HINT));
                }
            };
            s.text_rows.push(i as i64);
            s.text_targets.push(target);
            s.text_kind.push(kind);
            s.text_weight.push(weight as f32);
        }
        debug_assert!(s.bins.iter().all(|b| (0..BINS).contains(b)));
        Ok(s)
    }
}

#[cfg(test)]
mod tests;
