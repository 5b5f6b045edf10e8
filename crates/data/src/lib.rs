//! coordexp-data: everything that turns raw datasets into records the trainer can trust.
//!
//! - [`synth`]: the synthetic shapes dataset, the embedded default data.
//!
//! All functions return [`coordexp_core::Error`], located and with a remedy where we know one.

pub mod synth;

pub use synth::{SynthOptions, SynthSummary, generate};
