//! coordexp-train: objectives, the optimizer, metric sinks, checkpoints and the trainer loop.
//!
//! What the trainer loop calls, per concern:
//! - [`objective`]: `Stage1Objective::new(&cfg.objective, CoordIds::new(vocab.first_id()), dev)`,
//!   then per micro-batch `objective.loss(&positions, &text_logits, &coord_logits, &window)`
//!   with `window` the [`objective::WindowCounts`] summed over the accumulation window's
//!   micro-batches; backward `loss.total`, accumulate `loss.terms` and read them with
//!   `terms.metrics()` at log time.
//! - [`optim`]: `AdamW::new(named_params, &cfg.optim, &cfg.model.tuning.freeze, max_steps)`,
//!   `zero_grad()` / `step()` per optimizer step (clips, applies the schedule, returns the grad
//!   norm), `save(dir)` / `load(dir)` inside a checkpoint.
//! - [`metrics`]: `MetricsLog` (`metrics.jsonl`) and `EventWriter` (TensorBoard scalars).
//! - [`checkpoint`]: `PendingDir` / `write_dir_atomically` for `checkpoints/step-<N>/`,
//!   `Checkpoints` to list, resume from and prune them; `write_file_atomically` for single files.
//! - [`manifest`]: `RunManifest` and the fingerprint helpers for `manifest.json`.
//! - [`trainer`]: `trainer::train(&loaded, opts)` — opening or resuming the run directory, the
//!   step plan and its step kinds over a generic window machinery (CPU workers, gradient
//!   summation), periodic evaluation in memory, checkpoints; `trainer::probe` for time budgets.
//!
//! Sessions, datasets, prediction and rollout backends live in `coordexp-rollout`; this crate
//! drives them.
//!
//! Seeds: every random choice derives its seed from `run.seed` with `coordexp_core::seed`
//! (`epoch_seed`, `sample_seed`, `step_seed`, `eval_seed`, `torch_seed`), so a checkpoint needs
//! no RNG state: call `tch::manual_seed(torch_seed(step_seed(root, step)))` before each step.

pub mod checkpoint;
pub mod manifest;
pub mod metrics;
pub mod objective;
pub mod optim;
pub mod trainer;
