//! coordexp-rollout: everything between a model directory and generated answers.
//!
//! - [`session`]: the one setup sequence (device → model directory → prompts → encoder → pixel
//!   budget → pixel normalisation, then weights with the configured dtype) that every command
//!   and the trainer open.
//! - [`split`]: datasets checked against the record contract and the pixel budget, kept in
//!   memory with their pixels, encoded as training samples.
//! - [`inputs`]: encoded samples laid end to end in one row of model inputs (training,
//!   `model logits`).
//! - [`predict`]: batched generation on records, the raw text and per-object confidences, the
//!   one conversion from a config decoding section to sampler settings.
//! - [`backend`]: the [`backend::RolloutBackend`] trait (requests → rollouts with token ids,
//!   log-probs, stop reason and weight version; typed, retry-aware errors) and its embedded
//!   implementation, and the HTTP backends (`openai`, `swift`) with weight sync.
//! - [`serve`]: `coordexp serve`, an HTTP rollout server speaking the OpenAI and ms-swift
//!   protocols with the learner's own encoder.
//! - [`infer`] and [`logits`]: `coordexp infer` and `coordexp model logits`.
//!
//! Nothing here knows about a training step: the trainer drives sessions, predictors and
//! backends; they never call back into it.

pub mod backend;
pub mod infer;
pub mod inputs;
pub mod logits;
pub mod predict;
pub mod serve;
pub mod session;
pub mod split;

pub use session::Session;
pub use split::{Item, Pixels, Split};
