//! The vision tower: patch embedding, interpolated learned positions, 2-D rotary blocks, and the
//! patch merger plus the DeepStack mergers whose outputs enter the text decoder.

mod blocks;
mod merger;
mod positions;
pub mod preprocess;

use tch::nn::Path;
use tch::{Device, Kind, Tensor};

use coordexp_core::Error;

use crate::config::VisionConfig;
use crate::grads::{Grads, surrogate};
use crate::layers::{Embedding, ParamInit};
use crate::rope::VisionRope;
use blocks::VisionBlock;
use merger::PatchMerger;

/// The Conv3d over (C, T, p, p) with stride = kernel: exactly one linear map of each flattened
/// patch row, stored in the Conv3d weight layout [D, C, T, p, p] that checkpoints use.
#[derive(Debug)]
struct PatchEmbed {
    weight: Tensor,
    bias: Tensor,
}

impl PatchEmbed {
    fn new(p: &Path<'_>, c: &VisionConfig, init: ParamInit) -> Self {
        let dims =
            [c.hidden_size, c.in_channels, c.temporal_patch_size, c.patch_size, c.patch_size];
        let w_init = match init {
            ParamInit::Normal { std } => tch::nn::Init::Randn { mean: 0.0, stdev: std },
            ParamInit::Zeros => tch::nn::Init::Const(0.0),
        };
        PatchEmbed {
            weight: p.var("weight", &dims, w_init),
            bias: p.var("bias", &[c.hidden_size], tch::nn::Init::Const(0.0)),
        }
    }

    fn forward(&self, patches: &Tensor) -> Tensor {
        let d = self.weight.size()[0];
        patches.to_kind(self.weight.kind()).linear(&self.weight.reshape([d, -1]), Some(&self.bias))
    }
}

/// What the tower hands to the text decoder.
#[derive(Debug)]
pub struct VisionOutput {
    /// Merged image tokens [Σ tokens, text hidden], one per image-pad token, images in order.
    pub embeds: Tensor,
    /// One tensor like `embeds` per DeepStack level.
    pub deepstack: Vec<Tensor>,
}

#[derive(Debug)]
pub struct VisionTower {
    patch_embed: PatchEmbed,
    pos_embed: Embedding,
    blocks: Vec<VisionBlock>,
    merger: PatchMerger,
    deepstack_mergers: Vec<PatchMerger>,
    rope: VisionRope,
    config: VisionConfig,
}

impl VisionTower {
    /// `p` is `model.visual` in the vision optimizer group, `merger_p` the same path in the
    /// merger group.
    pub fn new(
        p: &Path<'_>,
        merger_p: &Path<'_>,
        c: &VisionConfig,
        init: ParamInit,
        device: Device,
    ) -> Self {
        VisionTower {
            patch_embed: PatchEmbed::new(&(p / "patch_embed" / "proj"), c, init),
            pos_embed: Embedding::new(
                &(p / "pos_embed"),
                c.num_position_embeddings,
                c.hidden_size,
                init,
            ),
            blocks: (0..c.depth).map(|i| VisionBlock::new(&(p / "blocks" / i), c, init)).collect(),
            merger: PatchMerger::new(&(merger_p / "merger"), c, false, init),
            deepstack_mergers: (0..c.deepstack_visual_indexes.len())
                .map(|i| PatchMerger::new(&(merger_p / "deepstack_merger_list" / i), c, true, init))
                .collect(),
            rope: VisionRope::new(c, device),
            config: c.clone(),
        }
    }

    /// Every linear module of the tower: blocks, merger, DeepStack mergers.
    pub(crate) fn linears(&mut self) -> Vec<&mut crate::layers::Linear> {
        let mut v: Vec<_> = self.blocks.iter_mut().flat_map(VisionBlock::linears).collect();
        v.extend(self.merger.linears());
        v.extend(self.deepstack_mergers.iter_mut().flat_map(PatchMerger::linears));
        v
    }

    /// Encode the patches [Σ t·h·w, C·T·p·p] of images with grids `grid_thw` (patch units).
    pub fn forward(&self, patches: &Tensor, grid_thw: &[[i64; 3]]) -> VisionOutput {
        let layout = positions::PatchLayout::new(grid_thw, &self.config);
        let (cos, sin) = self.rope.cos_sin(&layout.rows_cols(patches.device()));
        let h = self.embed(patches, &layout);
        let (h, deepstack) = self.blocks_forward(h, &cos, &sin, &layout, |_| {});
        VisionOutput { embeds: self.merger.forward(&h), deepstack }
    }

    /// The blocks over `h`, each block's input shown to `input` first; the last block's output
    /// and the DeepStack features in block order.
    fn blocks_forward(
        &self,
        mut h: Tensor,
        cos: &Tensor,
        sin: &Tensor,
        layout: &positions::PatchLayout,
        mut input: impl FnMut(&Tensor),
    ) -> (Tensor, Vec<Tensor>) {
        let mut deepstack = Vec::with_capacity(self.deepstack_mergers.len());
        for (i, block) in self.blocks.iter().enumerate() {
            input(&h);
            h = block.forward(&h, cos, sin, &layout.cu_seqlens);
            if let Some(level) = self.level_after(i) {
                deepstack.push(self.deepstack_mergers[level].forward(&h));
            }
        }
        (h, deepstack)
    }

    /// Patch embedding plus the interpolated learned positions.
    fn embed(&self, patches: &Tensor, layout: &positions::PatchLayout) -> Tensor {
        let h = self.patch_embed.forward(patches);
        let (idx, w) = layout.interpolation(patches.device());
        let pos = (self.pos_embed.forward(&idx) * w.unsqueeze(-1)).sum_dim_intlist(
            1,
            false,
            None::<Kind>,
        );
        &h + pos.to_kind(h.kind())
    }

    /// How many blocks before block `i` feed a DeepStack level.
    fn blocks_tapped_before(&self, i: usize) -> usize {
        (0..i).filter(|&b| self.level_after(b).is_some()).count()
    }

    /// The DeepStack level fed by block `i`'s output, if any.
    fn level_after(&self, i: usize) -> Option<usize> {
        self.config.deepstack_visual_indexes.iter().position(|&d| d == i as i64)
    }

    /// [`Self::forward`] keeping no activations, only each block's input (and the last block's
    /// output) in the returned tape; the outputs carry no graph.
    pub(crate) fn forward_recomputable(
        &self,
        patches: &Tensor,
        grid_thw: &[[i64; 3]],
    ) -> (VisionOutput, VisionTape) {
        let layout = positions::PatchLayout::new(grid_thw, &self.config);
        let (cos, sin) = self.rope.cos_sin(&layout.rows_cols(patches.device()));
        tch::no_grad(|| {
            let h = self.embed(patches, &layout);
            let mut inputs = Vec::with_capacity(self.blocks.len());
            let (h, deepstack) =
                self.blocks_forward(h, &cos, &sin, &layout, |x| inputs.push(x.shallow_clone()));
            let out = VisionOutput { embeds: self.merger.forward(&h), deepstack };
            let tape =
                VisionTape { patches: patches.shallow_clone(), layout, cos, sin, inputs, last: h };
            (out, tape)
        })
    }

    /// The backward pass of [`Self::forward_recomputable`] given the gradients w.r.t. the
    /// merged embeddings and each DeepStack level: the merger, then each block from its
    /// stored input (last first), then the patch embedding, each backwarded into `grads` at
    /// once. Nothing is done for pieces without trainable parameters upstream.
    pub(crate) fn backward_recomputed(
        &self,
        tape: VisionTape,
        g_embeds: &Tensor,
        g_levels: &[Tensor],
        grads: &mut Grads<'_>,
    ) -> Result<(), Error> {
        let VisionTape { patches, layout, cos, sin, inputs, last } = tape;
        let leaf = last.set_requires_grad(true);
        let out = self.merger.forward(&leaf);
        let Some(piece) = surrogate(&[(&out, g_embeds)]) else { return Ok(()) };
        let mut g = grads.backward(&piece, &[&leaf])?.remove(0);
        // Blocks below the lowest trainable one only pass gradients down to nothing: with a
        // frozen tower (DeepStack mergers trained) the pass ends at the lowest DeepStack level.
        let patch_trainable = self.patch_embed.weight.requires_grad()
            || self.patch_embed.bias.requires_grad()
            || self.pos_embed.weight.requires_grad();
        let lowest = if patch_trainable {
            Some(0)
        } else {
            let block = self.blocks.iter().position(VisionBlock::trainable);
            let level = self.config.deepstack_visual_indexes.iter().map(|&d| d as usize).min();
            block.into_iter().chain(level).min()
        };
        let Some(lowest) = lowest else { return Ok(()) };
        for (i, (block, x)) in self.blocks.iter().zip(inputs).enumerate().rev() {
            if i < lowest {
                break;
            }
            let leaf = x.set_requires_grad(true);
            let y = block.forward(&leaf, &cos, &sin, &layout.cu_seqlens);
            let mut outputs = vec![(y.shallow_clone(), g.shallow_clone())];
            // The features were produced in block order: the gradient of block i's level is
            // the one at its ordinal among the tapped blocks.
            let ordinal = self.blocks_tapped_before(i);
            if let Some(level) = self.level_after(i)
                && let Some(gl) = g_levels.get(ordinal)
            {
                outputs.push((self.deepstack_mergers[level].forward(&y), gl.shallow_clone()));
            }
            let pairs: Vec<_> = outputs.iter().map(|(o, g)| (o, g)).collect();
            let Some(piece) = surrogate(&pairs) else { continue };
            g = grads.backward(&piece, &[&leaf])?.remove(0);
        }
        if patch_trainable {
            let h0 = self.embed(&patches, &layout);
            if let Some(piece) = surrogate(&[(&h0, &g)]) {
                grads.backward(&piece, &[])?;
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &VisionConfig {
        &self.config
    }
}

/// What [`VisionTower::forward_recomputable`] keeps: the patches, each block's input and the
/// last block's output.
pub struct VisionTape {
    patches: Tensor,
    layout: positions::PatchLayout,
    cos: Tensor,
    sin: Tensor,
    inputs: Vec<Tensor>,
    last: Tensor,
}
