//! Metric sinks: `metrics.jsonl` (the machine-readable record) and TensorBoard event files (the
//! curves), fed the same `(name, value)` pairs at each log step.

mod jsonl;
pub mod memory;
mod tensorboard;

pub use jsonl::{MetricsLog, MetricsResume, Mode, SCHEMA_VERSION};
pub use tensorboard::{EventWriter, Truncation, event_files, scalar_steps};
