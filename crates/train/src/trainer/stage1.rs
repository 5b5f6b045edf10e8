//! The stage-1 step: packs from the epoch stream → micro-batches → the window machinery.
//!
//! A micro-batch is the samples of its packs laid end to end in one row ([`RowInputs`]).
//! Supervision is shifted here: hidden state `t` predicts label `t + 1`. At a sample boundary the
//! next label is the following sample's first (prompt) token, labelled −100, so nothing leaks
//! across samples. Only the supervised rows are projected to logits, split by loss (text rows,
//! coordinate rows), because the output projection is the largest activation of a big vocabulary.

use crate::objective::{Positions, Stage1Objective, WindowCounts};
use coordexp_core::Result;
use coordexp_model::model::Qwen3VL;
use coordexp_rollout::inputs::{RowInputs, VisionInput};
use coordexp_rollout::{Pixels, Split};
use coordexp_text::{EncodedSample, IGNORE_INDEX};
use tch::{Device, Tensor};

use super::epochs::{Cursor, Epochs};
use super::step::{StepOutcome, StepTools, optimize_window};
use super::workers::{Micro, MicroLoss, Workers};

/// The model inputs and loss bookkeeping of one stage-1 micro-batch.
pub struct Stage1Batch {
    inputs: RowInputs,
    positions: Positions,
    /// Flat hidden-state indices of the text targets and of the coordinate targets.
    text_at: Tensor,
    coord_at: Tensor,
    /// Dataset indices of the samples, in row order (named in NaN reports).
    pub sample_ids: Vec<u64>,
    /// Tokens in the row (image tokens included).
    pub tokens: usize,
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
        Ok(Stage1Batch {
            inputs,
            positions,
            text_at,
            coord_at,
            sample_ids: samples.iter().map(|(id, _, _)| *id).collect(),
            tokens: packed.len(),
        })
    }

    /// Supervised token counts of this micro-batch (sum them over the accumulation window).
    pub fn counts(&self) -> WindowCounts {
        self.positions.counts()
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
    ) -> Result<MicroLoss> {
        let hidden = model.forward_hidden(&self.inputs.forward_input())?;
        let h = hidden.size().last().copied().unwrap_or(0);
        let flat = hidden.reshape([-1, h]);
        let text = model.logits(&flat.index_select(0, &self.text_at));
        let coord = model.logits(&flat.index_select(0, &self.coord_at));
        let loss = objective.loss(&self.positions, &text, &coord, window)?;
        Ok(MicroLoss { total: loss.total, terms: loss.terms })
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
        let mut micro = Vec::with_capacity(accumulation as usize);
        for _ in 0..accumulation {
            let mut samples = Vec::new();
            for _ in 0..packs_per_micro {
                samples.extend(epochs.take(cursor)?);
            }
            let parts: Vec<_> = samples
                .iter()
                .map(|(i, s)| (*i, s, split.items[*i as usize].pixels.as_slice()))
                .collect();
            micro.push(Stage1Batch::build(&parts, &self.objective, &tools.vision, tools.device)?);
        }
        let window: WindowCounts = micro.iter().map(Stage1Batch::counts).sum();
        let ids: Vec<Vec<u64>> = micro.iter().map(|m| m.sample_ids.clone()).collect();
        let tokens = micro.iter().map(|m| m.tokens as u64).sum();
        let done =
            optimize_window(micro, &window, &mut self.workers, &self.objective, tools, step, &ids)?;
        Ok(done.outcome(tokens, window.supervised(), &ids))
    }
}
