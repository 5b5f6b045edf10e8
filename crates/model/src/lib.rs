//! coordexp-model: Qwen3-VL on libtorch (through `tch`), training-capable and numerically equal
//! to Hugging Face transformers (5.17) — parity of logits and gradients is tested live.
//!
//! # Public API
//!
//! - [`config::ModelConfig`]: `config.json` (both the transformers 4.5x and 5.x forms), and the
//!   `tiny` preset.
//! - [`model::Qwen3VL`]: `new` (random init), `load` / `save` (HF safetensors, sharded or not),
//!   `forward` (full logits), `forward_hidden` (final-normed hidden states; pick positions and
//!   call `logits` to save memory on large vocabularies), `embed`, `lm_head_weight`,
//!   `encode_images`, `named_parameters`.
//! - [`model::ForwardInput`]: ids [B, L], mRoPE position ids [3|4, B, L], an
//!   [`attention::AttentionLayout`] (`AttentionLayout::packed(cu_seqlens, L, device)` for
//!   packs), optional images, optional `inputs_embeds` override.
//! - [`vision::preprocess`]: RGB bytes → [`vision::preprocess::ImageBatch`] (patch rows +
//!   `grid_thw`), no resizing.
//! - [`generate`]: KV-cached batched sampling with per-token log-probs.
//! - [`grads`]: gradients accumulated over partial backward passes (a loss cut at a leaf and
//!   backwarded at once, its leaf gradient pushed back through the rest), for memory-bounded
//!   steps.
//! - [`vocab`]: `expand_vocab` and `init_tiny`, the checkpoint-producing operations.
//!
//! # Parameters for the trainer
//!
//! Every parameter lives in the model's `VarStore` under its Hugging Face name and in one of four
//! [`model::ParamGroup`]s (vision tower, merger + DeepStack mergers, language model with its
//! embedding / lm_head rows, coordinate-row offsets), decided by [`model::param_group`] — the
//! one classifier the optimizer and freezing use. The group is also the VarStore group index
//! ([`model::group_index`]). A tied head has no `lm_head.weight` parameter: its rows are the
//! embedding rows.

pub mod adapter;
pub mod attention;
pub mod config;
pub mod coord_offset;
pub mod generate;
pub mod grads;
mod layers;
pub mod model;
pub mod rope;
pub mod runtime;
pub mod text;
pub mod vision;
pub mod vocab;
pub mod weights;

pub use layers::ParamInit;
