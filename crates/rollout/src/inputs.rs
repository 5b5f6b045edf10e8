//! The forward inputs of encoded samples laid end to end in one row.
//!
//! Why one row: several samples in one row are the same computation as one longer sample
//! (attention stays inside each sample, positions restart per sample), so no padding is ever
//! needed. Attention runs per segment ([`AttentionLayout::segments`]), which costs Σ lᵢ² rather
//! than L² and needs no mask. Training micro-batches, `model logits` and the audit all build their
//! inputs here, so they feed the model identically.

use coordexp_core::{Error, Result};
use coordexp_model::attention::AttentionLayout;
use coordexp_model::config::VisionConfig;
use coordexp_model::model::ForwardInput;
use coordexp_model::vision::preprocess::{ImageBatch, PixelNorm, patchify_rgb};
use coordexp_text::{EncodedSample, PackedBatch};
use tch::{Device, Tensor};

use crate::split::Pixels;

/// What the vision side of a batch needs to patchify pixels.
pub struct VisionInput<'a> {
    pub config: &'a VisionConfig,
    pub norm: PixelNorm,
}

impl VisionInput<'_> {
    /// The patch rows of each image, in order (no resizing: sizes were checked at load).
    pub fn patchify(&self, pixels: &[Pixels]) -> Result<Vec<ImageBatch>> {
        pixels
            .iter()
            .map(|p| {
                patchify_rgb(
                    &p.rgb,
                    i64::from(p.width),
                    i64::from(p.height),
                    self.config,
                    &self.norm,
                )
            })
            .collect()
    }
}

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
            parts.extend(vision.patchify(pixels)?);
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
