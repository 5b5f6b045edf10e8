//! One micro-batch: the samples of its packs laid end to end in one row, as model tensors.
//!
//! Why one row: a micro-batch of several packs is the same computation as one longer pack
//! (attention stays inside each sample, positions restart per sample), so no padding is ever
//! needed. Attention runs per segment ([`AttentionLayout::segments`]), which costs Σ lᵢ² rather
//! than L² and needs no mask.
//!
//! Supervision is shifted here: hidden state `t` predicts label `t + 1`. At a sample boundary the
//! next label is the following sample's first (prompt) token, labelled −100, so nothing leaks
//! across samples. Only the supervised rows are projected to logits, split by loss (text rows,
//! coordinate rows), because the output projection is the largest activation of a big vocabulary.

use crate::objective::{Positions, Stage1Objective, WindowCounts};
use coordexp_core::{Error, Result};
use coordexp_model::attention::AttentionLayout;
use coordexp_model::config::VisionConfig;
use coordexp_model::model::{ForwardInput, Qwen3VL};
use coordexp_model::vision::preprocess::{ImageBatch, PixelNorm, patchify_rgb};
use coordexp_text::{EncodedSample, IGNORE_INDEX, PackedBatch};
use tch::{Device, Kind, Tensor};

use super::data::Pixels;

/// The forward inputs of samples laid end to end in one row.
pub struct RowInputs {
    pub input_ids: Tensor,
    /// `[4, 1, L]` (the text row, then the three mRoPE rows).
    pub position_ids: Tensor,
    pub layout: AttentionLayout,
    pub images: Option<ImageBatch>,
}

impl RowInputs {
    /// Assemble `samples` (dataset index, encoded sample, the sample's images) into one row;
    /// also returns the packed token-level vectors (labels, token types) of that row.
    pub fn build(
        samples: &[(u64, &EncodedSample, &[Pixels])],
        vision: &VisionInput<'_>,
        device: Device,
    ) -> Result<(RowInputs, PackedBatch)> {
        if samples.is_empty() {
            return Err(Error::runtime("a micro-batch needs at least one sample"));
        }
        let packed = PackedBatch::assemble(samples.iter().map(|(id, s, _)| (*id, *s)));
        let l = packed.len() as i64;
        let ids: Vec<i64> = packed.input_ids.iter().map(|&i| i64::from(i)).collect();
        let input_ids = Tensor::from_slice(&ids).view([1, l]).to_device(device);
        let rows: Vec<i64> = packed.position_ids.rows.iter().flatten().copied().collect();
        let position_ids = Tensor::from_slice(&rows).view([4, 1, l]).to_device(device);
        let cu: Vec<i64> = packed.cu_seqlens.iter().map(|&c| i64::from(c)).collect();
        let layout = AttentionLayout::segments(&cu, l)?;

        let mut parts = Vec::new();
        for (_, sample, pixels) in samples {
            if pixels.len() != sample.image_grid_thw.len() {
                return Err(Error::runtime(format!(
                    "a sample has {} image(s) but {} grid(s)",
                    pixels.len(),
                    sample.image_grid_thw.len()
                )));
            }
            for p in *pixels {
                parts.push(patchify_rgb(
                    &p.rgb,
                    i64::from(p.width),
                    i64::from(p.height),
                    vision.config,
                    &vision.norm,
                )?);
            }
        }
        let images = ImageBatch::concat(&parts).map(|b| b.to_device(device));
        Ok((RowInputs { input_ids, position_ids, layout, images }, packed))
    }

    /// The model's view of these inputs.
    pub fn forward_input(&self) -> ForwardInput<'_> {
        ForwardInput {
            input_ids: &self.input_ids,
            position_ids: &self.position_ids,
            layout: &self.layout,
            images: self.images.as_ref(),
            inputs_embeds: None,
        }
    }
}

/// The model inputs and loss bookkeeping of one micro-batch.
pub struct MicroBatch {
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

/// What the vision side of a batch needs to patchify pixels.
pub struct VisionInput<'a> {
    pub config: &'a VisionConfig,
    pub norm: PixelNorm,
}

impl MicroBatch {
    /// Assemble `samples` (dataset index, encoded sample, the sample's images) into one row.
    pub fn build(
        samples: &[(u64, &EncodedSample, &[Pixels])],
        objective: &Stage1Objective,
        vision: &VisionInput<'_>,
        device: Device,
    ) -> Result<MicroBatch> {
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
        Ok(MicroBatch {
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

    /// Forward pass and this micro-batch's share of the window loss.
    pub fn loss(
        &self,
        model: &Qwen3VL,
        objective: &Stage1Objective,
        window: &WindowCounts,
    ) -> Result<crate::objective::Stage1Loss> {
        let hidden = model.forward_hidden(&self.inputs.forward_input())?;
        let h = hidden.size().last().copied().unwrap_or(0);
        let flat = hidden.reshape([-1, h]);
        let text = model.logits(&flat.index_select(0, &self.text_at));
        let coord = model.logits(&flat.index_select(0, &self.coord_at));
        objective.loss(&self.positions, &text, &coord, window)
    }
}

/// The scalar value of a loss tensor (one host synchronisation).
pub fn scalar(t: &Tensor) -> Result<f64> {
    t.to_kind(Kind::Double)
        .f_double_value(&[])
        .map_err(|e| Error::runtime(format!("reading the loss: {e}")))
}
