//! coordexp-text: from a record to the token-level tensors a Qwen3-VL forward pass needs.
//!
//! ```text
//! ModelDir::load ─ tokenizer.json, chat template, config.json, image-processor config
//!     │             + the coordinate-vocabulary contract (vocab)
//! Encoder::encode ─ messages → chat template (minijinja, HF semantics) → tokens
//!     │             → image-pad expansion → labels, token types, mRoPE positions
//! plan ─ best-fit-decreasing packing plan per epoch (checksummed)
//! PackedBatch::assemble ─ the samples of one pack, end to end, with cu_seqlens
//! ```
//!
//! No tensor library here: everything is plain vectors, so the whole pipeline is tested on CPU
//! against transformers, live.

pub mod batch;
pub mod encode;
pub mod messages;
pub mod model_dir;
pub mod mrope;
pub mod plan;
pub mod sample;
pub mod template;
pub mod tokenize;
pub mod vocab;

pub use batch::{PackedBatch, Segment};
pub use encode::{Encoder, Turn};
pub use messages::{Content, Message, Role};
pub use model_dir::{ModelDir, VisionSpec, VisionTokens};
pub use mrope::{GridThw, PositionIds, position_ids};
pub use plan::{PackPlan, PackStats, epoch_seed, plan};
pub use sample::{Answer, EncodedSample, IGNORE_INDEX, TokenType};
pub use template::ChatTemplate;
pub use vocab::CoordVocab;
