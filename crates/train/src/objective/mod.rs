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
pub mod stage2;
mod terms;
mod window;

pub use coord::CoordIds;
pub use terms::LossTerms;
pub use window::WindowCounts;

use coord::{BINS, CoordParams};
use coordexp_core::config::schema::{LossNorm, Objective};
use coordexp_core::{Error, Result};
use coordexp_text::TokenType;
use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// The supervised positions of one micro-batch with the logits of all of them, in order (the
/// convenient input when the caller already has them; see [`Stage1Objective::loss`] for the
/// cheaper grouped input).
pub struct Supervised<'a> {
    /// `[N, V]` logits predicting each target (already shifted: row i predicts `targets[i]`).
    pub logits: &'a Tensor,
    /// Target token id of each row.
    pub targets: &'a [i64],
    /// Token type of each target; only supervised types (struct/desc/coord/closure) may appear.
    pub types: &'a [TokenType],
}

/// A micro-batch's supervised positions, validated and split by the loss they receive.
///
/// Why a split: the text rows need full-vocabulary cross-entropy, the coordinate rows the
/// coordinate terms. Computing the two groups' logits separately (gathering the hidden states of
/// [`text_rows`] and of [`coord_rows`] before the output projection) avoids copying `[N, V]`
/// logits around — at a 150k vocabulary that copy costs more than the losses.
///
/// [`text_rows`]: Positions::text_rows
/// [`coord_rows`]: Positions::coord_rows
#[derive(Debug, Clone, Default)]
pub struct Positions {
    text_rows: Vec<i64>,
    text_targets: Vec<i64>,
    /// 0 = struct, 1 = desc, 2 = closure (index into the per-type sums).
    text_kind: Vec<i64>,
    text_weight: Vec<f32>,
    coord_rows: Vec<i64>,
    bins: Vec<i64>,
    /// Largest target id (checked against the vocabulary of the logits).
    max_target: i64,
    counts: WindowCounts,
}

impl Positions {
    /// Indices (into the micro-batch's supervised positions) of the text targets, in the order
    /// the text logits must have.
    pub fn text_rows(&self) -> &[i64] {
        &self.text_rows
    }

    /// Indices of the coordinate targets, in the order the coordinate logits must have.
    pub fn coord_rows(&self) -> &[i64] {
        &self.coord_rows
    }

    /// This micro-batch's token counts (sum them over the window).
    pub fn counts(&self) -> WindowCounts {
        self.counts
    }
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

/// Names of the stage-1 [`LossTerms`], in order.
///
/// (The weighted total is the step's loss; the trainer logs it as `loss`.) The terms are means
/// over their own group of the window, whatever `normalize` says, so they compare across runs:
/// `loss/text_ce` is
/// `Σ w_type · CE / text tokens` (before `objective.text_ce`), `loss/{soft_ce,w1,gate,hard_ce}`
/// the unweighted per-slot means, `text_ce/<type>` the unweighted CE mean of each token type.
/// `coord_diag/*` are the reference's coordinate diagnostics (`objective_packing.md` §3.5) as
/// per-slot means: the coordinate-vocabulary probability mass, top-1 and top-5 accuracy of the
/// raw coordinate logits, the target bin's probability, the margin of the tempered logits,
/// |expected bin − target bin| and the W1 distance to a Dirac at the target (both in bins);
/// `coord_diag/expected_bin_abs_err_p90` is the 90th percentile of |expected − target| per
/// micro-batch (linear interpolation, as `torch.quantile`), averaged over micro-batches.
pub const TERM_NAMES: [&str; 16] = [
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
    "coord_diag/acc_top5",
    "coord_diag/p_gt_mean",
    "coord_diag/margin_mean",
    "coord_diag/expected_bin_mae",
    "coord_diag/w1_to_delta",
    "coord_diag/expected_bin_abs_err_p90",
];

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

    /// The loss of a micro-batch given all its supervised logits in position order.
    pub fn loss_of_rows(
        &self,
        batch: &Supervised<'_>,
        window: &WindowCounts,
    ) -> Result<Stage1Loss> {
        let pos = self.positions(batch.targets, batch.types)?;
        let n = batch.logits.size().first().copied().unwrap_or(0);
        if n != batch.targets.len() as i64 {
            return Err(Error::runtime(format!(
                "{n} logit rows but {} targets",
                batch.targets.len()
            ))
            .hint(MISMATCH_HINT));
        }
        let device = batch.logits.device();
        let take =
            |rows: &[i64]| batch.logits.index(&[Some(Tensor::from_slice(rows).to_device(device))]);
        self.loss(&pos, &take(pos.text_rows()), &take(pos.coord_rows()), window)
    }

    /// The micro-batch's loss: its sums divided by the `window` counts (see the module docs).
    ///
    /// `text_logits` `[Nt, V]` are the logits of `pos.text_rows()` and `coord_logits` `[Nc, V]`
    /// those of `pos.coord_rows()`, in those orders (any float dtype; upcast to f32 here); an
    /// empty group may be any empty tensor.
    pub fn loss(
        &self,
        pos: &Positions,
        text_logits: &Tensor,
        coord_logits: &Tensor,
        window: &WindowCounts,
    ) -> Result<Stage1Loss> {
        self.check_logits(pos, text_logits, coord_logits)?;
        self.loss_in_pieces(
            pos,
            window,
            Pieces {
                rows: 0,
                text: &mut |_| Ok(text_logits.shallow_clone()),
                coord: &mut |_| Ok(coord_logits.shallow_clone()),
                settle: &mut Ok,
            },
        )
    }

    /// The micro-batch's loss computed group by group in pieces of at most `pieces.rows` rows
    /// (see [`Pieces`]): a piece's logits are asked for, its share of the loss computed and
    /// handed to `settle`, and only the piece's metric sums are kept, so with a `settle` that
    /// backwards at once no more than one piece of `[rows, V]` logits is alive. Every term is a
    /// sum over rows divided by window counts, so the pieces add up to [`Self::loss`]; the 90th
    /// percentile diagnostic is taken over the pieces' detached errors together.
    pub fn loss_in_pieces(
        &self,
        pos: &Positions,
        window: &WindowCounts,
        pieces: Pieces<'_>,
    ) -> Result<Stage1Loss> {
        let micro = pos.counts;
        if !window.covers(&micro) {
            return Err(Error::runtime(format!(
                "the micro-batch has more supervised tokens than its window ({micro:?} vs {window:?})"
            ))
            .hint("pass the counts of the whole accumulation window (the sum over its micro-batches)"));
        }
        let Pieces { rows: piece_rows, text, coord, settle } = pieces;
        let device = self.soft_targets.device();
        let rows = |v: &[i64]| Tensor::from_slice(v).to_device(device);
        let zero = || Tensor::zeros([], (Kind::Float, device));

        // What each term's sum is divided by (see `LossNorm`): the window's counts, or this
        // micro-batch's own counts times the window's micro-batch count (the reference's mean
        // per pack, averaged over the accumulation steps).
        let packs = window.micro_batches.max(1);
        let (d_text, d_coord) = match self.cfg.normalize {
            LossNorm::PerGroup => (window.text(), window.coord),
            LossNorm::PerToken => (window.supervised(), window.supervised()),
            LossNorm::PerPackMean => (micro.text().max(1) * packs, micro.coord.max(1) * packs),
        };
        let per = |sum: Tensor, count: u64| sum / count.max(1) as f64;
        let mut vocab = None;
        let mut total = zero();

        // Text cross-entropy on raw logits.
        let (text_mean, type_means) = if pos.text_rows.is_empty() {
            (zero(), Tensor::zeros([3], (Kind::Float, device)))
        } else {
            let mut weighted_sum = zero();
            let mut type_sums = Tensor::zeros([3], (Kind::Float, device));
            for range in piece_ranges(pos.text_rows.len(), piece_rows) {
                let z = text(range.clone())?;
                self.check_piece("text", &z, range.len(), &mut vocab)?;
                self.check_vocab(pos, vocab)?;
                let z = z.to_kind(Kind::Float);
                let y = rows(&pos.text_targets[range.clone()]).unsqueeze(1);
                let ce = -z.log_softmax(1, Kind::Float).gather(1, &y, false).squeeze_dim(1);
                let w = Tensor::from_slice(&pos.text_weight[range.clone()]).to_device(device);
                let weighted = (&ce * &w).sum(Kind::Float);
                type_sums += tch::no_grad(|| {
                    Tensor::zeros([3], (Kind::Float, device)).scatter_add(
                        0,
                        &rows(&pos.text_kind[range]),
                        &ce.detach(),
                    )
                });
                weighted_sum += weighted.detach();
                total = &total + settle(per(weighted, d_text) * self.cfg.text_ce)?;
            }
            let type_counts = Tensor::from_slice(
                &[window.structure, window.desc, window.closure].map(|c| c.max(1) as f32),
            )
            .to_device(device);
            (per(weighted_sum, window.text()), type_sums / type_counts)
        };

        // Coordinate terms.
        let c = &self.cfg.coord;
        let (coord_means, p90) = if pos.coord_rows.is_empty() {
            (Tensor::zeros([11], (Kind::Float, device)), zero())
        } else {
            let mut slot_sums = Tensor::zeros([11], (Kind::Float, device));
            let mut errors = Vec::new();
            for range in piece_ranges(pos.coord_rows.len(), piece_rows) {
                let z = coord(range.clone())?;
                self.check_piece("coordinate", &z, range.len(), &mut vocab)?;
                self.check_vocab(pos, vocab)?;
                let z = z.to_kind(Kind::Float);
                let bins = rows(&pos.bins[range]);
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
                slot_sums += tch::no_grad(|| {
                    let slots = [
                        &t.soft_ce,
                        &t.w1,
                        &t.gate,
                        &t.hard_ce,
                        &t.mass,
                        &t.top1,
                        &t.top5,
                        &t.p_gt,
                        &t.margin,
                        &t.bin_abs_err,
                        &t.w1_to_delta,
                    ];
                    Tensor::stack(&slots.map(|x| sum(&x.detach())), 0)
                });
                errors.push(t.bin_abs_err.detach());
                total = &total + settle(per(weighted, d_coord))?;
            }
            let p90 = tch::no_grad(|| {
                Tensor::cat(&errors, 0).quantile_scalar(0.9, None, false, "linear") / packs as f64
            });
            // [soft, w1, gate, hard | mass, top1, top5, p_gt, margin, mae, w1_delta]
            (slot_sums / window.coord.max(1) as f64, p90)
        };

        let values = tch::no_grad(|| {
            Tensor::cat(
                &[
                    text_mean.unsqueeze(0),
                    coord_means.narrow(0, 0, 4),
                    type_means,
                    coord_means.narrow(0, 4, 7),
                    p90.unsqueeze(0),
                ],
                0,
            )
            .to_kind(Kind::Double)
        });
        Ok(Stage1Loss { total, terms: LossTerms::new(&TERM_NAMES, values)? })
    }

    /// Validate a micro-batch's targets and token types and split its positions by loss.
    pub fn positions(&self, targets: &[i64], types: &[TokenType]) -> Result<Positions> {
        if targets.len() != types.len() {
            return Err(Error::runtime(format!(
                "{} targets but {} token types",
                targets.len(),
                types.len()
            ))
            .hint(MISMATCH_HINT));
        }
        let w = &self.cfg.token_weights;
        let mut s = Positions { counts: WindowCounts::of(types), ..Positions::default() };
        for (i, (&target, &ty)) in targets.iter().zip(types).enumerate() {
            let at = || format!("supervised position {i}");
            if target < 0 {
                return Err(Error::runtime(format!("target id {target} is negative"))
                    .at(at())
                    .hint("unsupervised positions (label -100) are not passed to the objective"));
            }
            s.max_target = s.max_target.max(target);
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

    /// The grouped logits have the shapes `pos` asks for and cover every target and the
    /// coordinate ids.
    fn check_logits(&self, pos: &Positions, text: &Tensor, coord: &Tensor) -> Result<()> {
        let mut vocab = None;
        self.check_piece("text", text, pos.text_rows.len(), &mut vocab)?;
        self.check_piece("coordinate", coord, pos.coord_rows.len(), &mut vocab)?;
        self.check_vocab(pos, vocab)
    }

    /// `t` is `[rows, V]` (or, for an empty group, any empty tensor) with the vocabulary of the
    /// pieces seen before (recorded in `vocab`).
    fn check_piece(
        &self,
        what: &str,
        t: &Tensor,
        rows: usize,
        vocab: &mut Option<i64>,
    ) -> Result<()> {
        match t.size()[..] {
            _ if rows == 0 && t.numel() == 0 => Ok(()),
            [n, v] if n == rows as i64 => {
                if rows > 0 && vocab.is_some_and(|u| u != v) {
                    return Err(Error::runtime(format!(
                        "the text and coordinate logits have different vocabularies ({vocab:?} vs {v})"
                    )));
                }
                if rows > 0 {
                    *vocab = Some(v);
                }
                Ok(())
            }
            ref size => Err(Error::runtime(format!(
                "the {what} logits have shape {size:?}, expected [{rows}, vocab]"
            ))
            .hint("compute the logits of Positions::text_rows() and coord_rows(), in that order")),
        }
    }

    /// The vocabulary `vocab` covers every target and the coordinate ids.
    fn check_vocab(&self, pos: &Positions, vocab: Option<i64>) -> Result<()> {
        let Some(vocab) = vocab else { return Ok(()) };
        if (!pos.coord_rows.is_empty() && vocab < self.ids.end()) || pos.max_target >= vocab {
            return Err(Error::runtime(format!(
                "the logits cover {vocab} ids but targets reach id {} and the coordinate tokens end at id {}",
                pos.max_target,
                self.ids.end() - 1
            ))
            .hint("the model's vocabulary must include every target and the 1000 coordinate tokens (expand it)"));
        }
        Ok(())
    }
}

/// Where [`Stage1Objective::loss_in_pieces`] gets each piece's logits and what it does with
/// each piece's loss.
pub struct Pieces<'a> {
    /// Rows per piece; 0 = one piece per group.
    pub rows: usize,
    /// The logits `[n, V]` of `Positions::text_rows()[range]`.
    pub text: &'a mut dyn FnMut(Range<usize>) -> Result<Tensor>,
    /// The logits `[n, V]` of `Positions::coord_rows()[range]`.
    pub coord: &'a mut dyn FnMut(Range<usize>) -> Result<Tensor>,
    /// Takes a piece's differentiable loss and returns what the total keeps of it: the piece
    /// itself, or its detached value once it has been backwarded.
    pub settle: &'a mut dyn FnMut(Tensor) -> Result<Tensor>,
}

/// `0..n` in consecutive ranges of at most `rows` (all of it when `rows` is 0).
fn piece_ranges(n: usize, rows: usize) -> impl Iterator<Item = Range<usize>> {
    let step = if rows == 0 { n.max(1) } else { rows };
    (0..n).step_by(step).map(move |s| s..(s + step).min(n))
}

#[cfg(test)]
mod tests;
