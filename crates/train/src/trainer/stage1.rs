//! The stage-1 step: packs from the epoch stream → micro-batches → the window machinery.
//!
//! A micro-batch is the samples of its packs laid end to end in one row ([`RowInputs`]).
//! Supervision is shifted here: hidden state `t` predicts label `t + 1`. At a sample boundary the
//! next label is the following sample's first (prompt) token, labelled −100, so nothing leaks
//! across samples. Only the supervised rows are projected to logits, split by loss (text rows,
//! coordinate rows), because the output projection is the largest activation of a big vocabulary.

use crate::objective::{Pieces, Positions, Stage1Objective, TERM_NAMES, WindowCounts};
use coordexp_core::{Error, Result};
use coordexp_model::grads::{Grads, surrogate};
use coordexp_model::model::Qwen3VL;
use coordexp_rollout::inputs::{RowInputs, VisionInput};
use coordexp_rollout::{Pixels, Split};
use coordexp_text::{EncodedSample, IGNORE_INDEX};
use std::cell::RefCell;
use std::ops::Range;
use tch::{Device, Tensor};

use super::epochs::{Cursor, Epochs};
use super::step::{StepOutcome, StepTools, Window, optimize_window};
use super::workers::{Micro, MicroLoss, Workers};

/// The model inputs and loss bookkeeping of one stage-1 micro-batch.
pub struct Stage1Batch {
    inputs: RowInputs,
    positions: Positions,
    /// Flat hidden-state indices of the text targets and of the coordinate targets.
    text_at: Tensor,
    coord_at: Tensor,
    /// Logit rows per piece of the loss (`train.logit_chunk_rows`); 0 = all at once.
    chunk_rows: usize,
    /// Recompute activations layer by layer in the backward pass
    /// (`train.gradient_checkpointing`).
    recompute: bool,
}

impl Stage1Batch {
    /// Assemble `samples` (dataset index, encoded sample, the sample's images) into one row.
    pub fn build(
        samples: &[(u64, &EncodedSample, &[Pixels])],
        objective: &Stage1Objective,
        vision: &VisionInput<'_>,
        device: Device,
    ) -> Result<Stage1Batch> {
        let (inputs, packed) = RowInputs::build(samples, vision, device)?;
        // Hidden state t predicts label t + 1.
        let mut at = Vec::new();
        let mut targets = Vec::new();
        let mut types = Vec::new();
        for t in 0..packed.len().saturating_sub(1) {
            let label = packed.labels[t + 1];
            if label != IGNORE_INDEX {
                at.push(t as i64);
                targets.push(label);
                types.push(packed.token_types[t + 1]);
            }
        }
        let positions = objective.positions(&targets, &types)?;
        let pick = |rows: &[i64]| {
            let flat: Vec<i64> = rows.iter().map(|&r| at[r as usize]).collect();
            Tensor::from_slice(&flat).to_device(device)
        };
        let text_at = pick(positions.text_rows());
        let coord_at = pick(positions.coord_rows());
        Ok(Stage1Batch { inputs, positions, text_at, coord_at, chunk_rows: 0, recompute: false })
    }

    /// Compute the loss over logits of at most `rows` rows at a time, each piece backwarded at
    /// once (0 = all rows in one piece, backwarded with the rest of the graph).
    pub fn chunked(mut self, rows: usize) -> Stage1Batch {
        self.chunk_rows = rows;
        self
    }

    /// Keep only each decoder layer's and vision block's input in the forward pass and
    /// recompute the rest during the backward pass.
    pub fn recomputed(mut self, on: bool) -> Stage1Batch {
        self.recompute = on;
        self
    }

    /// The loss on final hidden states `hidden` (see [`Self::chunked`]).
    fn head_loss(
        &self,
        model: &Qwen3VL,
        objective: &Stage1Objective,
        window: &WindowCounts,
        hidden: &Tensor,
        grads: &mut Grads<'_>,
    ) -> Result<MicroLoss> {
        let h = hidden.size().last().copied().unwrap_or(0);
        let flat = hidden.reshape([-1, h]);
        let h_text = flat.index_select(0, &self.text_at);
        let h_coord = flat.index_select(0, &self.coord_at);
        if self.chunk_rows == 0 {
            let (text, coord) = (model.logits(&h_text), model.logits(&h_coord));
            let loss = objective.loss(&self.positions, &text, &coord, window)?;
            return Ok(MicroLoss { total: loss.total, terms: loss.terms });
        }
        // Each piece's logits hang off a leaf cut from the hidden states: the piece is
        // backwarded as soon as its loss exists (its logits die with it), and the leaves'
        // gradients go through the decoder afterwards in one pass.
        let leaves = RefCell::new(Vec::<(bool, Tensor)>::new());
        let cut = |source: &Tensor, is_text: bool, r: Range<usize>| {
            let leaf =
                source.narrow(0, r.start as i64, r.len() as i64).detach().set_requires_grad(true);
            let logits = model.logits(&leaf);
            leaves.borrow_mut().push((is_text, leaf));
            Ok(logits)
        };
        let (mut text_grads, mut coord_grads) = (Vec::new(), Vec::new());
        let loss = objective.loss_in_pieces(
            &self.positions,
            window,
            Pieces {
                rows: self.chunk_rows,
                text: &mut |r| cut(&h_text, true, r),
                coord: &mut |r| cut(&h_coord, false, r),
                settle: &mut |piece| {
                    let leaves = leaves.borrow();
                    let Some((is_text, leaf)) = leaves.last() else {
                        return Err(Error::runtime("a loss piece without logits"));
                    };
                    let g = grads.backward(&piece, &[leaf])?.remove(0);
                    if *is_text {
                        text_grads.push(g)
                    } else {
                        coord_grads.push(g)
                    }
                    Ok(piece.detach())
                },
            },
        )?;
        let mut outputs = Vec::new();
        let (gt, gc);
        if !text_grads.is_empty() {
            gt = Tensor::cat(&text_grads, 0);
            outputs.push((&h_text, &gt));
        }
        if !coord_grads.is_empty() {
            gc = Tensor::cat(&coord_grads, 0);
            outputs.push((&h_coord, &gc));
        }
        let total = match surrogate(&outputs) {
            Some(rest) => rest + loss.total,
            None => loss.total,
        };
        Ok(MicroLoss { total, terms: loss.terms })
    }

    /// Supervised token counts of this micro-batch (sum them over the accumulation window).
    pub fn counts(&self) -> WindowCounts {
        self.positions.counts()
    }

    /// The counts [`Stage1Batch::build`] would give `samples`, without building anything (the
    /// micro-batches another rank computes): the token types of the supervised labels of the
    /// row, the row's first position excepted (no hidden state predicts it).
    pub fn count(samples: &[(u64, &EncodedSample, &[Pixels])]) -> WindowCounts {
        let types: Vec<_> = samples
            .iter()
            .flat_map(|(_, s, _)| s.labels.iter().zip(&s.token_types))
            .skip(1)
            .filter(|(label, _)| **label != IGNORE_INDEX)
            .map(|(_, t)| *t)
            .collect();
        WindowCounts::of(&types)
    }
}

impl Micro for Stage1Batch {
    type Objective = Stage1Objective;
    type Counts = WindowCounts;

    fn loss(
        &self,
        model: &Qwen3VL,
        objective: &Stage1Objective,
        window: &WindowCounts,
        grads: &mut Grads<'_>,
    ) -> Result<MicroLoss> {
        let input = self.inputs.forward_input();
        if !self.recompute {
            let hidden = model.forward_hidden(&input)?;
            return self.head_loss(model, objective, window, &hidden, grads);
        }
        let (hidden, tape) = model.forward_hidden_recomputable(&input)?;
        let loss = self.head_loss(model, objective, window, &hidden, grads)?;
        if !loss.total.requires_grad() {
            return Ok(loss);
        }
        let g = grads.backward(&loss.total, &[tape.leaf()])?.remove(0);
        model.backward_recomputed(tape, &input, g, grads)?;
        Ok(MicroLoss { total: loss.total.detach(), terms: loss.terms })
    }
}

/// The stage-1 step kind: its objective and workers.
pub struct Stage1Step {
    pub objective: Stage1Objective,
    pub workers: Workers<Stage1Objective>,
}

impl Stage1Step {
    /// Optimizer step `step` on the packs from `cursor`: `micro_batch` packs per micro-batch,
    /// `accumulation` micro-batches per window.
    pub fn run(
        &mut self,
        tools: &mut StepTools<'_>,
        epochs: &mut Epochs<'_>,
        split: &Split,
        step: u64,
        cursor: &mut Cursor,
    ) -> Result<StepOutcome> {
        let cfg = tools.cfg;
        let accumulation = cfg.train.accumulation_steps().max(1);
        let packs_per_micro = cfg.train.micro_batch.max(1);
        // Every rank walks the whole window (the same packs, the same counts); it builds only
        // the micro-batches it computes (`k mod world == rank`) and counts the others.
        let (rank, world) = tools.dist.map_or((0, 1), |g| (g.rank(), g.world()));
        let mut w = Window {
            micro: Vec::with_capacity(accumulation as usize),
            counts: WindowCounts::default(),
            ids: Vec::with_capacity(accumulation as usize),
            tokens: 0,
            terms: &TERM_NAMES,
        };
        for k in 0..accumulation as usize {
            let mut samples = Vec::new();
            for _ in 0..packs_per_micro {
                samples.extend(epochs.take(cursor)?);
            }
            let parts: Vec<_> = samples
                .iter()
                .map(|(i, s)| (*i, s, split.items[*i as usize].pixels.as_slice()))
                .collect();
            w.ids.push(samples.iter().map(|(i, _)| *i).collect());
            w.tokens += samples.iter().map(|(_, s)| s.len() as u64).sum::<u64>();
            if k % world != rank {
                w.counts += Stage1Batch::count(&parts);
                w.micro.push(None);
                continue;
            }
            let chunk_rows = cfg.train.logit_chunk_rows as usize;
            let batch = Stage1Batch::build(&parts, &self.objective, &tools.vision, tools.device)?
                .chunked(chunk_rows)
                .recomputed(cfg.train.gradient_checkpointing);
            w.counts += batch.counts();
            w.micro.push(Some(batch));
        }
        let supervised = w.counts.supervised();
        let done = optimize_window(w, &mut self.workers, &self.objective, tools, step)?;
        Ok(done.outcome(supervised))
    }
}
