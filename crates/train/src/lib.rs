//! coordexp-train: the model-independent half of training.
//!
//! What the trainer loop calls, per concern:
//! - [`objective`]: `Stage1Objective::new(&cfg.objective, CoordIds::new(vocab.first_id()), dev)`,
//!   then per micro-batch `objective.loss(&Supervised { logits, targets, types }, &window)` with
//!   `window = WindowCounts::of(..)` summed over the accumulation window's micro-batches;
//!   backward `loss.total`, add up `loss.terms` and read them with `terms.metrics()` at log time.
//! - [`optim`]: `AdamW::new(named_params, &cfg.optim, &cfg.model.tuning.freeze, max_steps)`,
//!   `zero_grad()` / `step()` per optimizer step (clips, applies the schedule, returns the grad
//!   norm), `save(dir)` / `load(dir)` inside a checkpoint.
//! - [`metrics`]: `MetricsLog` (`metrics.jsonl`) and `EventWriter` (TensorBoard scalars).
//! - [`checkpoint`]: `PendingDir` / `write_dir_atomically` for `checkpoints/step-<N>/`,
//!   `Checkpoints` to list, resume from and prune them; `write_file_atomically` for single files.
//! - [`manifest`]: `RunManifest` and the fingerprint helpers for `manifest.json`.
//! - [`trainer`]: the stage-1 loop (`trainer::train(&loaded, opts)`), its run directory,
//!   periodic evaluation and the shared prediction path (`trainer::predict`) behind
//!   `coordexp infer`.
//! - [`demo`]: `coordexp demo` — synthetic data, a tokenizer for its vocabulary, a CPU-sized
//!   model, training under a time budget.
//!
//! Seeds: every random choice derives its seed from `run.seed` with `coordexp_core::seed`
//! (`epoch_seed`, `sample_seed`, `step_seed`, `eval_seed`, `torch_seed`), so a checkpoint needs
//! no RNG state: call `tch::manual_seed(torch_seed(step_seed(root, step)))` before each step.

pub mod checkpoint;
pub mod demo;
pub mod manifest;
pub mod metrics;
pub mod objective;
pub mod optim;
pub mod trainer;
