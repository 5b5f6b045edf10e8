//! coordexp-data: everything that turns raw datasets into records the trainer can trust.
//!
//! - [`synth`]: the synthetic shapes dataset, the embedded default data.
//! - [`resize`]: the smart-resize size rule and offline image materialisation.
//! - [`images`]: image existence / true-size / grid / budget checks for `data validate --images`.
//! - [`convert`]: COCO / LVIS-style instances JSON → pixel JSONL, with skip counters.
//! - [`stats`]: dataset statistics and the tokens-per-sample estimate.
//! - [`order`]: the canonical (top-left first) object order of every record written here.
//!
//! All functions return [`coordexp_core::Error`], located and with a remedy where we know one.

pub mod convert;
pub mod images;
pub mod order;
pub mod resize;
pub mod stats;
pub mod synth;
mod write;

pub use synth::{SynthOptions, SynthSummary, generate};
