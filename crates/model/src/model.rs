//! Qwen3-VL for conditional generation: vision tower + text decoder + LM head, with parameters
//! held in one `tch::nn::VarStore` whose paths are the Hugging Face parameter names.

use std::path::Path;

use coordexp_core::Error;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::attention::AttentionLayout;
use crate::config::ModelConfig;
use crate::grads::{Grads, surrogate};
use crate::layers::{Linear, ParamInit};
use crate::text::cache::KvCache;
use crate::text::{DeepStack, TextModel, TextTape};
use crate::vision::preprocess::ImageBatch;
use crate::vision::{VisionOutput, VisionTape, VisionTower};
use crate::weights;

/// The parameter groups (vision tower, merger, language model, coordinate rows): the config's
/// [`Module`], so freezing, learning rates and the VarStore group index all speak of the same
/// four groups. [`param_group`] is the one classifier of parameter names.
pub use coordexp_core::config::schema::Module as ParamGroup;

/// Every group, in VarStore group-index order.
pub const PARAM_GROUPS: [ParamGroup; 4] =
    [ParamGroup::Vision, ParamGroup::Merger, ParamGroup::Language, ParamGroup::CoordRows];

/// The VarStore group index of a group.
pub fn group_index(g: ParamGroup) -> usize {
    match g {
        ParamGroup::Vision => 0,
        ParamGroup::Merger => 1,
        ParamGroup::Language => 2,
        ParamGroup::CoordRows => 3,
    }
}

/// The group of a Hugging Face parameter name, first match wins:
/// 1. **coord_rows**: any segment starting with `coord_offset` (the coordinate-row adapter);
/// 2. **merger**: `model.visual.merger.` or `model.visual.deepstack_merger_list.` (the aligner
///    gets its own rate; the reference folds it into the vision group by accident);
/// 3. **vision**: `model.visual.`;
/// 4. **language**: `model.language_model.` (embedding rows included) or `lm_head.`.
///
/// Any other name is an error: a parameter silently trained at a default rate is how the
/// reference lost its aligner rate.
pub fn param_group(name: &str) -> Result<ParamGroup, Error> {
    if name.split('.').any(|seg| seg.starts_with("coord_offset")) {
        Ok(ParamGroup::CoordRows)
    } else if name.starts_with("model.visual.merger.")
        || name.starts_with("model.visual.deepstack_merger_list.")
    {
        Ok(ParamGroup::Merger)
    } else if name.starts_with("model.visual.") {
        Ok(ParamGroup::Vision)
    } else if name.starts_with("model.language_model.") || name.starts_with("lm_head.") {
        Ok(ParamGroup::Language)
    } else {
        Err(Error::runtime(format!("parameter `{name}` belongs to no parameter group"))
            .hint("parameters use HF Qwen3-VL names (model.visual.*, model.language_model.*, lm_head.*, *coord_offset*); extend coordexp_model::model::param_group for a new module"))
    }
}

/// One forward pass's inputs.
#[derive(Debug)]
pub struct ForwardInput<'a> {
    /// [B, L] int64 token ids (image-pad tokens mark where image features go).
    pub input_ids: &'a Tensor,
    /// [3, B, L] (t, h, w) or [4, B, L] (text, t, h, w) mRoPE position ids; a text row is ignored.
    pub position_ids: &'a Tensor,
    /// Visibility: [`AttentionLayout::packed`] for training packs.
    pub layout: &'a AttentionLayout,
    /// The images whose pad tokens appear in `input_ids`, in order.
    pub images: Option<&'a ImageBatch>,
    /// Replaces the token-embedding lookup ([B, L, hidden]); image features are still written
    /// into the image-pad positions. Channel A feeds soft coordinate embeddings through this.
    pub inputs_embeds: Option<&'a Tensor>,
}

#[derive(Debug)]
pub struct Qwen3VL {
    vs: VarStore,
    config: ModelConfig,
    visual: VisionTower,
    text: TextModel,
    /// `None` when tied: the head is `embed_tokens.weight`.
    lm_head: Option<Linear>,
    /// LoRA/DoRA adapters ([`crate::adapter`]), outside the VarStore.
    pub(crate) adapters: Option<crate::adapter::Attached>,
    /// Whether adapter dropout is active (training passes).
    pub(crate) adapter_training: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Offsets on the coordinate rows ([`crate::coord_offset`]).
    pub(crate) coord_offset: Option<crate::coord_offset::CoordOffset>,
}

impl Qwen3VL {
    /// Build the architecture with freshly initialised parameters of `kind` on `device`.
    pub fn new(config: &ModelConfig, kind: Kind, device: Device, init: ParamInit) -> Self {
        let mut vs = VarStore::new(device);
        vs.set_kind(kind);
        let root = vs.root();
        let group = |g: ParamGroup| root.set_group(group_index(g));
        let vision_p = group(ParamGroup::Vision) / "model" / "visual";
        let merger_p = group(ParamGroup::Merger) / "model" / "visual";
        let lang_p = group(ParamGroup::Language) / "model" / "language_model";
        let embed_p = group(ParamGroup::Language) / "model" / "language_model" / "embed_tokens";
        let visual = VisionTower::new(&vision_p, &merger_p, &config.vision, init, device);
        let text = TextModel::new(&lang_p, &embed_p, &config.text, init, device);
        let lm_head = (!config.tie_word_embeddings).then(|| {
            let p = group(ParamGroup::Language) / "lm_head";
            Linear::new(&p, config.text.hidden_size, config.text.vocab_size, false, init)
        });
        Qwen3VL {
            vs,
            config: config.clone(),
            visual,
            text,
            lm_head,
            adapters: None,
            adapter_training: Default::default(),
            coord_offset: None,
        }
    }

    /// Load `config.json` and the safetensors weights of a Hugging Face model directory. A
    /// directory holding only a PEFT adapter (a LoRA/DoRA checkpoint) loads as its base
    /// (`base_model_name_or_path`) with the adapter merged in: the same function as base plus
    /// adapter (use [`Qwen3VL::load_adapter`] to keep the adapter trainable).
    pub fn load(dir: &Path, kind: Kind, device: Device) -> Result<Self, Error> {
        if crate::adapter::is_adapter_only(dir) {
            let file = crate::adapter::read_adapter_config(dir)?;
            let base = file.base_dir(dir)?;
            if crate::adapter::is_adapter_only(&base) {
                return Err(Error::input(format!(
                    "the adapter's base {} is itself an adapter directory",
                    base.display()
                ))
                .at(dir.display().to_string())
                .hint("merge the base adapter first (`coordexp model merge`) and point base_model_name_or_path at the merged directory"));
            }
            let mut model = Qwen3VL::load(&base, kind, device)?;
            model.load_adapter(dir)?;
            model.merge_adapters()?;
            if model.coord_offset.is_none() {
                model.load_offsets_of(dir)?;
            }
            return Ok(model);
        }
        let config = ModelConfig::from_file(dir)?;
        let mut model = Qwen3VL::new(&config, kind, device, ParamInit::Zeros);
        weights::load(&model.vs, dir, config.tie_word_embeddings)?;
        model.load_offsets_of(dir)?;
        Ok(model)
    }

    /// Attach the coordinate offsets saved in `dir`, frozen (the trainer turns them on).
    fn load_offsets_of(&mut self, dir: &Path) -> Result<(), Error> {
        if crate::coord_offset::has_offsets(dir) {
            self.load_coord_offsets(dir)?;
            for (_, t, _) in self.coord_offset_parameters() {
                let _ = t.set_requires_grad(false);
            }
        }
        Ok(())
    }

    /// Write `config.json` and the weights (sharded above `max_shard_bytes`) in Hugging Face
    /// layout; transformers and vLLM load the result. Other files in `dir` are left alone. With
    /// adapters or coordinate offsets attached they are written folded into the weights: the
    /// directory computes what this model computes (what a rollout server must load).
    pub fn save(&self, dir: &Path, max_shard_bytes: u64) -> Result<(), Error> {
        let mut replace = self.merged_weights()?;
        let untie = self.fold_offsets(&mut replace)?;
        self.write_dir(dir, max_shard_bytes, &replace, untie)
    }

    /// A training checkpoint's weights: the parameters as they are (no adapter: the trainer
    /// saves adapters apart) and the coordinate offsets apart in `coord_offset.safetensors`,
    /// so that a resume continues from exactly these tensors. [`Qwen3VL::load`] reads it back
    /// computing the same function.
    pub fn save_checkpoint(&self, dir: &Path, max_shard_bytes: u64) -> Result<(), Error> {
        self.write_dir(dir, max_shard_bytes, &std::collections::BTreeMap::new(), false)?;
        if self.coord_offset.is_some() {
            self.save_coord_offsets(dir)?;
        }
        Ok(())
    }

    fn write_dir(
        &self,
        dir: &Path,
        max_shard_bytes: u64,
        replace: &std::collections::BTreeMap<String, Tensor>,
        untie: bool,
    ) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, &e))?;
        let mut cfg = self.config.to_json();
        cfg["dtype"] = serde_json::json!(weights::hf_dtype_name(self.kind()));
        if untie {
            cfg["tie_word_embeddings"] = serde_json::json!(false);
            if let Some(t) = cfg.get_mut("text_config").and_then(|t| t.as_object_mut()) {
                t.insert("tie_word_embeddings".into(), serde_json::json!(false));
            }
        }
        weights::write_json(&dir.join("config.json"), &cfg)?;
        // A stale offsets file would re-apply offsets that are folded in now.
        let _ = std::fs::remove_file(dir.join(crate::coord_offset::OFFSETS_FILE));
        weights::save(&self.vs, dir, max_shard_bytes, replace)
    }

    /// Every linear module (adapter targets), vision tower first, then the decoder, then an
    /// untied head.
    pub(crate) fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v = self.visual.linears();
        v.extend(self.text.linears());
        v.extend(self.lm_head.as_mut());
        v
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The parameters' dtype.
    pub fn kind(&self) -> Kind {
        self.text.embed_tokens.weight.kind()
    }

    /// Cast every parameter to `kind` in place (e.g. load in f32, train in bf16).
    pub fn set_kind(&mut self, kind: Kind) {
        self.vs.set_kind(kind);
    }

    /// The parameter store; paths are HF names and groups are [`group_index`].
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// Every parameter with its HF name and group ([`param_group`]), sorted by name.
    pub fn named_parameters(&self) -> Result<Vec<(String, Tensor, ParamGroup)>, Error> {
        let mut out = self
            .vs
            .variables()
            .into_iter()
            .map(|(name, t)| {
                let g = param_group(&name)?;
                Ok((name, t, g))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// [`Qwen3VL::named_parameters`] followed by the adapter tensors
    /// ([`Qwen3VL::adapter_parameters`], less the saved modules' parameters, which are named
    /// parameters already): every tensor a training step may update, once.
    pub fn all_parameters(&self) -> Result<Vec<(String, Tensor, ParamGroup)>, Error> {
        let mut all = self.named_parameters()?;
        let saved: Vec<&String> =
            self.adapters.iter().flat_map(|a| &a.saved).map(|s| &s.0).collect();
        all.extend(self.adapter_parameters()?.into_iter().filter(|p| !saved.contains(&&p.0)));
        all.extend(self.coord_offset_parameters());
        Ok(all)
    }

    /// Token embeddings [.., hidden] of `ids` (differentiable w.r.t. the embedding table).
    pub fn embed(&self, ids: &Tensor) -> Tensor {
        let e = self.text.embed(ids);
        match &self.coord_offset {
            Some(o) => o.embed(ids, e),
            None => e,
        }
    }

    /// The output projection [vocab, hidden] (the embedding table when tied).
    pub fn lm_head_weight(&self) -> &Tensor {
        match &self.lm_head {
            Some(l) => &l.weight,
            None => &self.text.embed_tokens.weight,
        }
    }

    /// Logits [.., vocab] of final hidden states [.., hidden]; select positions first to save
    /// memory on 150k vocabularies.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        let l = hidden.linear::<Tensor>(self.lm_head_weight(), None);
        match &self.coord_offset {
            Some(o) => o.logits(hidden, l),
            None => l,
        }
    }

    /// Logits [N, vocab] at `positions` (int64 flat indices into B·L) of hidden [B, L, hidden]:
    /// only the supervised rows are projected, which is what keeps 150k-vocabulary training in
    /// memory.
    pub fn logits_at(&self, hidden: &Tensor, positions: &Tensor) -> Tensor {
        let h = hidden.size().last().copied().unwrap_or(0);
        self.logits(&hidden.reshape([-1, h]).index_select(0, &positions.to_device(hidden.device())))
    }

    /// Run the vision tower on a batch of images.
    pub fn encode_images(&self, images: &ImageBatch) -> Result<VisionOutput, Error> {
        self.check_images(images)?;
        Ok(self.visual.forward(&images.patches.to_device(self.device()), &images.grid_thw))
    }

    /// Final-normed hidden states [B, L, hidden].
    pub fn forward_hidden(&self, input: &ForwardInput<'_>) -> Result<Tensor, Error> {
        self.forward_inner(input, None)
    }

    /// Full-vocabulary logits [B, L, vocab].
    pub fn forward(&self, input: &ForwardInput<'_>) -> Result<Tensor, Error> {
        Ok(self.logits(&self.forward_hidden(input)?))
    }

    pub(crate) fn forward_inner(
        &self,
        input: &ForwardInput<'_>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor, Error> {
        let first_call = cache.as_ref().is_none_or(|c| c.is_empty());
        let e = self.embed_inputs(input, first_call, |images| self.encode_images(images))?;
        let deepstack = e
            .vision
            .as_ref()
            .map(|v| DeepStack { positions: &e.image_positions, levels: &v.deepstack });
        Ok(self.text.forward(&e.embeds, &e.positions, input.layout, deepstack.as_ref(), cache))
    }

    /// The checked inputs of a forward pass: the embeddings with the image features in place,
    /// the rotary position rows, the image-pad positions and the tower's output.
    fn embed_inputs(
        &self,
        input: &ForwardInput<'_>,
        images_required: bool,
        encode: impl FnOnce(&ImageBatch) -> Result<VisionOutput, Error>,
    ) -> Result<Embedded, Error> {
        let (b, l) = self.check_ids(input.input_ids)?;
        let positions = self.check_positions(input.position_ids, b, l)?;
        let ids = input.input_ids.to_device(self.device());
        let mut embeds = match input.inputs_embeds {
            Some(e) => {
                let want = [b, l, self.config.text.hidden_size];
                if e.size() != want {
                    return Err(Error::input(format!(
                        "inputs_embeds has shape {:?}, expected {want:?}",
                        e.size()
                    )));
                }
                e.to_kind(self.kind())
            }
            None => self.embed(&ids),
        };
        let image_positions =
            ids.view([-1]).eq(self.config.image_token_id).nonzero().squeeze_dim(1);
        let n_pad = image_positions.size()[0];
        let vision = match input.images {
            Some(images) => {
                let expected: i64 =
                    images.grid_thw.iter().map(|&g| self.config.merged_tokens(g)).sum();
                if expected != n_pad {
                    return Err(Error::input(format!(
                        "the ids hold {n_pad} image-pad tokens but the images give {expected} \
                         features (grids {:?})",
                        images.grid_thw
                    ))
                    .hint("each image needs t·h·w / merge² image-pad tokens in the prompt"));
                }
                let out = encode(images)?;
                let h = self.config.text.hidden_size;
                embeds = embeds
                    .reshape([-1, h])
                    .index_copy(0, &image_positions, &out.embeds.to_kind(embeds.kind()))
                    .reshape([b, l, h]);
                Some(out)
            }
            None if n_pad > 0 && images_required => {
                return Err(Error::input(format!(
                    "the ids hold {n_pad} image-pad tokens but no images were given"
                )));
            }
            None => None,
        };
        Ok(Embedded { embeds, positions, image_positions, vision })
    }

    /// Final-normed hidden states [B, L, hidden] from a forward pass that keeps only each
    /// decoder layer's and vision block's input (activation recompute,
    /// `train.gradient_checkpointing`). Backward the loss into `tape.leaf()` with
    /// [`Grads::backward`], then call [`Qwen3VL::backward_recomputed`] with that gradient:
    /// the two together put the loss's parameter gradients into the same [`Grads`].
    pub fn forward_hidden_recomputable(
        &self,
        input: &ForwardInput<'_>,
    ) -> Result<(Tensor, Recompute), Error> {
        let mut vision_tape = None;
        let e = self.embed_inputs(input, true, |images| {
            self.check_images(images)?;
            let patches = images.patches.to_device(self.device());
            let (out, tape) = self.visual.forward_recomputable(&patches, &images.grid_thw);
            vision_tape = Some(tape);
            Ok(out)
        })?;
        let deepstack = e
            .vision
            .as_ref()
            .map(|v| DeepStack { positions: &e.image_positions, levels: &v.deepstack });
        let (hidden, text) = self.text.forward_recomputable(
            &e.embeds,
            &e.positions,
            input.layout,
            deepstack.as_ref(),
        );
        let levels = e.vision.as_ref().map_or(0, |v| v.deepstack.len());
        Ok((
            hidden,
            Recompute {
                text,
                embeds: e.embeds,
                image_positions: e.image_positions,
                vision: vision_tape.map(|t| (t, levels)),
            },
        ))
    }

    /// The rest of the backward pass of [`Qwen3VL::forward_hidden_recomputable`]: `g_leaf`
    /// is the gradient of the loss w.r.t. `tape.leaf()`; decoder layers, the embeddings and
    /// the vision tower are recomputed piece by piece and backwarded into `grads`.
    pub fn backward_recomputed(
        &self,
        tape: Recompute,
        input: &ForwardInput<'_>,
        g_leaf: Tensor,
        grads: &mut Grads<'_>,
    ) -> Result<(), Error> {
        let Recompute { text, embeds, image_positions, vision } = tape;
        let levels = vision.as_ref().map(|(_, n)| (&image_positions, *n));
        let (g_embeds, g_levels) =
            self.text.backward_recomputed(text, g_leaf, input.layout, levels, grads)?;
        // The embeddings (with the image features copied in) still carry the graph of the
        // token lookup: an index, not an activation.
        if embeds.requires_grad()
            && let Some(piece) = surrogate(&[(&embeds, &g_embeds)])
        {
            grads.backward(&piece, &[])?;
        }
        if let Some((tape, _)) = vision {
            let h = self.config.text.hidden_size;
            let g_image = g_embeds.reshape([-1, h]).index_select(0, &image_positions);
            self.visual.backward_recomputed(tape, &g_image, &g_levels, grads)?;
        }
        Ok(())
    }

    fn check_ids(&self, ids: &Tensor) -> Result<(i64, i64), Error> {
        let size = ids.size();
        if size.len() != 2 || ids.kind() != Kind::Int64 || size[1] == 0 {
            return Err(Error::input(format!(
                "input_ids must be a non-empty int64 [B, L] tensor, got {:?} {:?}",
                ids.kind(),
                size
            )));
        }
        let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
        if lo < 0 || hi >= self.config.text.vocab_size {
            return Err(Error::input(format!(
                "token ids span [{lo}, {hi}] but the vocabulary has {} entries",
                self.config.text.vocab_size
            ))
            .hint("the tokenizer and the checkpoint disagree; expand the model's vocabulary"));
        }
        Ok((size[0], size[1]))
    }

    fn check_positions(&self, pos: &Tensor, b: i64, l: i64) -> Result<Tensor, Error> {
        let size = pos.size();
        let ok = size.len() == 3 && (size[0] == 3 || size[0] == 4) && size[1] == b && size[2] == l;
        if !ok {
            return Err(Error::input(format!(
                "position_ids must be [3 or 4, {b}, {l}], got {size:?}"
            )));
        }
        // Row 0 of the 4-row form is the text position, which RoPE never reads.
        let rows = if size[0] == 4 { pos.narrow(0, 1, 3) } else { pos.shallow_clone() };
        Ok(rows.to_device(self.device()))
    }

    fn check_images(&self, images: &ImageBatch) -> Result<(), Error> {
        let v = &self.config.vision;
        let row = v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size;
        let m = v.spatial_merge_size;
        if let Some(g) = images
            .grid_thw
            .iter()
            .find(|g| g.iter().any(|&x| x <= 0) || g[1] % m != 0 || g[2] % m != 0)
        {
            return Err(Error::input(format!(
                "image grid {g:?} is not positive with h and w multiples of {m}"
            )));
        }
        let rows: i64 = images.grid_thw.iter().map(|g| g[0] * g[1] * g[2]).sum();
        if images.patches.size() != [rows, row] {
            return Err(Error::input(format!(
                "pixel patches have shape {:?}, the grids {:?} need [{rows}, {row}]",
                images.patches.size(),
                images.grid_thw
            )));
        }
        Ok(())
    }
}

/// The checked inputs of one forward pass (see `Qwen3VL::embed_inputs`).
struct Embedded {
    embeds: Tensor,
    positions: Tensor,
    image_positions: Tensor,
    vision: Option<VisionOutput>,
}

/// What a recomputable forward pass keeps for its backward pass: layer and block inputs, not
/// activations (see [`Qwen3VL::forward_hidden_recomputable`]).
pub struct Recompute {
    text: TextTape,
    /// The decoder's input, with the graph of the token lookup only.
    embeds: Tensor,
    image_positions: Tensor,
    /// The tower's tape and its DeepStack level count.
    vision: Option<(VisionTape, usize)>,
}

impl Recompute {
    /// The leaf the final norm was applied to: the loss's first backward pass ends here.
    pub fn leaf(&self) -> &Tensor {
        self.text.last()
    }
}
