//! The language model: token embeddings, the decoder stack with DeepStack injection, final norm.

pub mod cache;
mod layer;

use tch::nn::Path;
use tch::{Device, Tensor};

use coordexp_core::Error;

use crate::attention::AttentionLayout;
use crate::config::TextConfig;
use crate::grads::{Grads, surrogate};
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

impl DeepStack<'_> {
    /// `h` [B, L, hidden] with level `i` added at the image-pad positions (as is when there is
    /// no level `i`).
    fn inject(&self, h: Tensor, i: usize) -> Tensor {
        let Some(level) = self.levels.get(i) else { return h };
        let s = h.size();
        h.reshape([-1, s[2]])
            .index_add(0, self.positions, &level.to_kind(h.kind()))
            .reshape(s.as_slice())
    }
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
            if let Some(ds) = deepstack {
                h = ds.inject(h, i);
            }
        }
        if let Some(c) = cache {
            c.advance(embeds.size()[1]);
        }
        self.norm.forward(&h)
    }

    /// [`Self::forward`] keeping no activations: only each layer's input is stored (in the
    /// returned [`TextTape`]); the final hidden states hang off a leaf that stands for the last
    /// layer's output. [`Self::backward_recomputed`] recomputes one layer at a time.
    pub(crate) fn forward_recomputable(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        layout: &AttentionLayout,
        deepstack: Option<&DeepStack<'_>>,
    ) -> (Tensor, TextTape) {
        let (cos, sin) = self.rope.cos_sin(positions, embeds.kind());
        let mut inputs = Vec::with_capacity(self.layers.len());
        let last = tch::no_grad(|| {
            let mut h = embeds.detach();
            for (i, layer) in self.layers.iter().enumerate() {
                inputs.push(h.shallow_clone());
                h = layer.forward(&h, &cos, &sin, layout, None);
                if let Some(ds) = deepstack {
                    h = ds.inject(h, i);
                }
            }
            h
        });
        let last = last.set_requires_grad(true);
        let hidden = self.norm.forward(&last);
        (hidden, TextTape { inputs, cos, sin, last })
    }

    /// The backward pass of [`Self::forward_recomputable`] given `g_last`, the gradient of the
    /// loss w.r.t. the tape's last leaf: each layer is run again from its stored input, last
    /// layer first, and backwarded at once into `grads`. Returns the gradient w.r.t. the
    /// embeddings and, per DeepStack level, w.r.t. the level's features (at `deepstack`).
    pub(crate) fn backward_recomputed(
        &self,
        tape: TextTape,
        g_last: Tensor,
        layout: &AttentionLayout,
        deepstack: Option<(&Tensor, usize)>,
        grads: &mut Grads<'_>,
    ) -> Result<(Tensor, Vec<Tensor>), Error> {
        let TextTape { inputs, cos, sin, .. } = tape;
        let mut g = g_last;
        let mut levels = Vec::new();
        for (i, (layer, x)) in self.layers.iter().zip(inputs).enumerate().rev() {
            if let Some((positions, n)) = deepstack
                && i < n
            {
                let h = *g.size().last().unwrap_or(&0);
                levels.push(g.reshape([-1, h]).index_select(0, positions));
            }
            let leaf = x.set_requires_grad(true);
            let y = layer.forward(&leaf, &cos, &sin, layout, None);
            let Some(piece) = surrogate(&[(&y, &g)]) else { continue };
            g = grads.backward(&piece, &[&leaf])?.remove(0);
        }
        levels.reverse();
        Ok((g, levels))
    }

    pub fn config(&self) -> &TextConfig {
        &self.config
    }
}

/// What [`TextModel::forward_recomputable`] keeps: each layer's input, the rotary tables, and
/// the leaf standing for the last layer's output.
pub struct TextTape {
    inputs: Vec<Tensor>,
    cos: Tensor,
    sin: Tensor,
    last: Tensor,
}

impl TextTape {
    /// The leaf the final norm was applied to: backward the loss into it first.
    pub fn last(&self) -> &Tensor {
        &self.last
    }
}
