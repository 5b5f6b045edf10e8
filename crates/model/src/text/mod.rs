//! The language model: token embeddings, the decoder stack with DeepStack injection, final norm.

pub mod cache;
mod layer;

use tch::nn::Path;
use tch::{Device, Tensor};

use crate::attention::AttentionLayout;
use crate::config::TextConfig;
use crate::layers::{Embedding, ParamInit, RmsNorm};
use crate::rope::TextRope;
use cache::KvCache;
use layer::DecoderLayer;

/// Visual features added to the hidden states of the image-pad positions after the first
/// decoder layers (level i after layer i).
#[derive(Debug)]
pub struct DeepStack<'a> {
    /// Flat indices (into B·L) of the image-pad positions, in sequence order.
    pub positions: &'a Tensor,
    /// One [n_positions, hidden] tensor per level.
    pub levels: &'a [Tensor],
}

#[derive(Debug)]
pub struct TextModel {
    pub(crate) embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    rope: TextRope,
    config: TextConfig,
}

impl TextModel {
    /// `embed` is `model.language_model.embed_tokens`' path (its own optimizer group) and
    /// `p` the `model.language_model` path.
    pub fn new(
        p: &Path<'_>,
        embed: &Path<'_>,
        c: &TextConfig,
        init: ParamInit,
        device: Device,
    ) -> Self {
        TextModel {
            embed_tokens: Embedding::new(embed, c.vocab_size, c.hidden_size, init),
            layers: (0..c.num_hidden_layers)
                .map(|i| DecoderLayer::new(&(p / "layers" / i), c, init))
                .collect(),
            norm: RmsNorm::new(&(p / "norm"), c.hidden_size, c.rms_norm_eps),
            rope: TextRope::new(c, device),
            config: c.clone(),
        }
    }

    pub fn embed(&self, ids: &Tensor) -> Tensor {
        self.embed_tokens.forward(ids)
    }

    /// Every linear module of the decoder, in layer order.
    pub(crate) fn linears(&mut self) -> Vec<&mut crate::layers::Linear> {
        self.layers.iter_mut().flat_map(DecoderLayer::linears).collect()
    }

    /// Run the decoder over `embeds` [B, L, hidden] with mRoPE position ids [3, B, L]; returns
    /// the final-normed hidden states [B, L, hidden].
    pub fn forward(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        layout: &AttentionLayout,
        deepstack: Option<&DeepStack<'_>>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor {
        let (cos, sin) = self.rope.cos_sin(positions, embeds.kind());
        let mut h = embeds.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h, &cos, &sin, layout, cache.as_deref_mut().map(|c| (c, i)));
            if let Some(ds) = deepstack
                && let Some(level) = ds.levels.get(i)
            {
                let s = h.size();
                h = h
                    .reshape([-1, s[2]])
                    .index_add(0, ds.positions, &level.to_kind(h.kind()))
                    .reshape(s.as_slice());
            }
        }
        if let Some(c) = cache {
            c.advance(embeds.size()[1]);
        }
        self.norm.forward(&h)
    }

    pub fn config(&self) -> &TextConfig {
        &self.config
    }
}
