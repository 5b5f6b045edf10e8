//! The stage-1 trainer: data → encode → deterministic packing → forward → loss → backward →
//! optimizer step, with metrics, periodic evaluation and atomic checkpoints.
//!
//! ```text
//! train(loaded, opts)
//!   check the config's features → load + check both splits (images, sizes, budgets)
//!   → encode + plan epoch 0 (errors name the record) → run dir (fresh, or --resume)
//!   → model (frozen modules off) → objective, AdamW → eval at step 0 (the untrained model)
//!   → per step: micro_batch·accumulation packs → window counts → forward/backward each
//!     micro-batch (logits only at supervised rows) → clip + step → log / eval / checkpoint
//!   → final checkpoint + evaluation (eval/final)
//! ```
//!
//! Determinism: the packs come from the seeded plan of each epoch ([`epochs`]), libtorch is
//! seeded with `step_seed(root, step)` before every step, and a checkpoint stores the weights,
//! the optimizer moments, the step and the data cursor — so on CPU a resumed run repeats the
//! uninterrupted run's losses exactly.
//!
//! Failure policy: every input problem (missing image, size mismatch, over-budget image,
//! over-long sample, template drift) is reported before the first step, naming the record; a
//! non-finite loss stops the run with the step and the samples of the offending micro-batch.
//! A wall-clock `deadline` (the demo's time budget) re-fits the schedule to the pace of the
//! machine ([`budget`]) and, as a backstop, ends training early; both are reported in the
//! summary and the log, never silent.

mod batch;
mod budget;
mod data;
mod epochs;
mod evaluate;
mod logits;
pub mod predict;
mod progress;
mod run_dir;
mod workers;

pub use batch::{MicroBatch, VisionInput};
pub use budget::describe_refit;
pub use data::{Item, Pixels, Split};
pub use epochs::{Cursor, Epochs};
pub use evaluate::{EvalMetrics, Evaluator};
pub use logits::{LogitsReport, record_logits};
pub use run_dir::{RunDir, TrainerState, find_resume};
pub use workers::CpuPlan;

use crate::manifest::{
    self, MANIFEST_VERSION, Prompts as ManifestPrompts, RunManifest, Seeds, TCH_VERSION,
    TokenizerFingerprint,
};
use crate::metrics::{EventWriter, MetricsLog, Mode};
use crate::objective::{CoordIds, LossTerms, Stage1Objective, WindowCounts};
use crate::optim::{AdamW, StepStats, groups};
use coordexp_core::config::Loaded;
use coordexp_core::config::schema::{Config, Dtype, Module, TuningMode};
use coordexp_core::prompt::Prompts;
use coordexp_core::{Error, Result, seed};
use coordexp_model::generate::SamplingConfig;
use coordexp_model::model::Qwen3VL;
use coordexp_model::runtime;
use coordexp_model::vision::preprocess::PixelNorm;
use coordexp_text::{Encoder, ModelDir};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind};

use predict::Predictor;
use progress::{Bar, Interval};
use workers::Workers;

/// Called with every evaluation point as it is measured (the demo prints its AP50 curve).
pub type EvalCallback = Box<dyn FnMut(&EvalPoint)>;

/// How to run (everything that is not a hyper-parameter; those are in the config).
pub struct TrainOptions {
    /// Continue the run of this checkpoint (or the newest checkpoint of this run directory).
    pub resume: Option<PathBuf>,
    /// Recorded in the manifest.
    pub command_line: Vec<String>,
    /// Stop training at this instant even before `train.max_steps` (then checkpoint and
    /// evaluate as at the end).
    pub deadline: Option<Instant>,
    /// Draw the progress bar (it also needs a terminal).
    pub progress: bool,
    /// Called after every evaluation (the demo prints its curve from it).
    pub on_eval: Option<EvalCallback>,
    /// Data-parallel workers and libtorch threads on CPU (see [`probe`]); `None`:
    /// `COORDEXP_CPU_WORKERS` (default 1) and `COORDEXP_CPU_THREADS` (default every core).
    pub cpu: Option<CpuPlan>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            resume: None,
            command_line: std::env::args().collect(),
            deadline: None,
            progress: true,
            on_eval: None,
            cpu: None,
        }
    }
}

/// One evaluation: where (`step-<N>` or `final`), when, and its headline metrics.
#[derive(Debug, Clone, Serialize)]
pub struct EvalPoint {
    pub name: String,
    pub step: u64,
    /// Training seconds before this evaluation (evaluation time excluded).
    pub train_seconds: f64,
    pub metrics: EvalMetrics,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    /// Optimizer steps completed (including steps before a resume).
    pub steps: u64,
    /// True when the deadline ended training before the schedule's last step.
    pub stopped_at_deadline: bool,
    /// `(planned, final total)` when the deadline re-fitted the schedule.
    pub refitted: Option<(u64, u64)>,
    /// Total loss of every step trained in this process, in order.
    pub step_losses: Vec<(u64, f64)>,
    pub evals: Vec<EvalPoint>,
    pub train_seconds: f64,
    pub tokens: u64,
    /// Newest checkpoint.
    pub checkpoint: PathBuf,
}

impl TrainSummary {
    /// The final evaluation, when the run has a validation set.
    pub fn final_eval(&self) -> Option<&EvalPoint> {
        self.evals.iter().rev().find(|e| e.name == "final")
    }
}

/// Train stage 1 as `loaded` describes.
pub fn train(loaded: &Loaded, mut opts: TrainOptions) -> Result<TrainSummary> {
    let cfg = &loaded.config;
    check_supported(cfg)?;
    let (device, cpu) = configure_device(cfg, opts.cpu)?;
    // Input: everything is checked before any model is loaded.
    let Inputs { model_src, model_dir, prompts, encoder, train: train_split, max_pixels } =
        Inputs::load(cfg)?;
    let val_split = match &cfg.data.val {
        Some(p) => Some(Split::load("val", p, cfg.data.val_limit, max_pixels)?),
        None => None,
    };
    let mut epochs = Epochs::new(&train_split, &encoder, cfg)?;

    // Run directory: fresh, or the one being resumed.
    let resolved_yaml = loaded.resolved_yaml();
    let (run, mut state, weights_dir) = match &opts.resume {
        None => {
            let root = cfg.run.output_dir.join(&cfg.run.name);
            (RunDir::create(&root, &resolved_yaml)?, TrainerState::start(), model_src.clone())
        }
        Some(dir) => {
            let (root, ckpt, state) = find_resume(dir)?;
            let stored = std::fs::read_to_string(root.join(run_dir::RESOLVED_CONFIG))
                .map_err(|e| Error::io("read", &root.join(run_dir::RESOLVED_CONFIG), &e))?;
            if stored != resolved_yaml {
                tracing::warn!(
                    "the config differs from the one {} was started with; the resumed run follows the new one",
                    root.display()
                );
            }
            tracing::info!("resuming {} from step {}", root.display(), state.step);
            (RunDir { root }, state, ckpt)
        }
    };

    // Model, objective, optimizer.
    let (model, objective, mut optimizer) = build_model(cfg, &weights_dir, &model_dir, device)?;
    let mut max_steps = cfg.train.max_steps;
    let (mut metrics, mut events) = if opts.resume.is_some() {
        optimizer.load(&weights_dir)?;
        let (log, dropped) = MetricsLog::resume(&run.root.join(run_dir::METRICS), state.step)?;
        if dropped > 0 {
            tracing::info!("dropped {dropped} metrics records written after step {}", state.step);
        }
        (log, EventWriter::create(&run.root)?)
    } else {
        write_manifest(
            cfg,
            &run,
            &model_dir,
            &prompts,
            (&train_split, &val_split),
            &epochs,
            &opts,
            cpu,
        )?;
        (MetricsLog::create(&run.root.join(run_dir::METRICS))?, EventWriter::create(&run.root)?)
    };
    if optimizer.steps() != state.step {
        return Err(Error::input(format!(
            "the checkpoint's optimizer has taken {} steps but its trainer state says {}",
            optimizer.steps(),
            state.step
        ))
        .at(weights_dir.display().to_string())
        .hint("the checkpoint is inconsistent; resume from another one"));
    }

    let mut workers = Workers::new(cfg, &model, &optimizer, coord_ids(&model_dir), cpu)?;
    let vision_cfg = model.config().vision.clone();
    let norm = PixelNorm::from_model_dir(&model_src)?;
    let vision = || VisionInput { config: &vision_cfg, norm };
    let evaluator = match &val_split {
        Some(v) => {
            let n = cfg.eval.limit.unwrap_or(v.len()).min(v.len());
            Some(Evaluator::new(v.items.iter().take(n).collect(), &run.eval_root(), &cfg.eval.iou)?)
        }
        None => None,
    };
    let mut summary = TrainSummary {
        run_dir: run.root.clone(),
        steps: state.step,
        stopped_at_deadline: false,
        refitted: None,
        step_losses: Vec::new(),
        evals: Vec::new(),
        train_seconds: state.train_seconds,
        tokens: state.tokens,
        checkpoint: weights_dir.clone(),
    };
    let mut evaluate_now = |name: String,
                            state: &TrainerState,
                            model: &Qwen3VL,
                            metrics: &mut MetricsLog,
                            events: &mut EventWriter,
                            summary: &mut TrainSummary|
     -> Result<()> {
        let Some(ev) = &evaluator else { return Ok(()) };
        let predictor = Predictor {
            model,
            encoder: &encoder,
            vision: vision(),
            sampling: sampling(cfg, &encoder, state.step)?,
            batch_size: cfg.rollout.decode_batch_size.max(1) as usize,
        };
        let extra = serde_json::json!({"step": state.step, "train_seconds": state.train_seconds});
        let m = ev.run(&predictor, &run.eval_root().join(&name), extra)?;
        metrics.write(Mode::Eval, state.step, state.train_seconds, &m.pairs())?;
        events.scalars(Mode::Eval.as_str(), state.step, &m.pairs())?;
        events.flush()?;
        tracing::info!(
            "eval {name}: AP50 {:.3} AP {:.3} f1@0.5 {:.3} parse_valid_rate {:.3} ({:.1} s)",
            m.ap50,
            m.ap,
            m.f1_05,
            m.parse_valid_rate,
            m.seconds
        );
        let point =
            EvalPoint { name, step: state.step, train_seconds: state.train_seconds, metrics: m };
        if let Some(cb) = opts.on_eval.as_mut() {
            cb(&point);
        }
        summary.evals.push(point);
        Ok(())
    };
    if state.step == 0 && cfg.train.eval_every > 0 {
        evaluate_now("step-0".into(), &state, &model, &mut metrics, &mut events, &mut summary)?;
    }

    // The loop.
    let bar = Bar::new(max_steps, state.step, opts.progress);
    let mut interval = Interval::new();
    let budget = opts.deadline.map(|d| budget::Budget::new(d, Instant::now(), state.step));
    let mut last_saved = None;
    let mut ctx = StepContext {
        cfg,
        split: &train_split,
        epochs: &mut epochs,
        model: &model,
        objective: &objective,
        optimizer: &mut optimizer,
        workers: &mut workers,
        vision: vision(),
        device,
    };
    while state.step < max_steps {
        if opts.deadline.is_some_and(|d| Instant::now() >= d) {
            summary.stopped_at_deadline = true;
            bar.println(&format!(
                "time budget reached: stopping at step {} of {max_steps}",
                state.step
            ));
            break;
        }
        let started = Instant::now();
        let step = state.step + 1;
        let lr = ctx.optimizer.next_lr(Module::Language).unwrap_or(0.0);
        let out = ctx.run_step(step, &mut state.cursor)?;
        let (tokens, samples, total) = (out.tokens, out.samples, out.loss);
        state.step = step;
        state.tokens += tokens;
        state.samples += samples;
        let secs = started.elapsed().as_secs_f64();
        state.train_seconds += secs;
        summary.step_losses.push((step, total));
        interval.add(out.terms, &out.stats, lr, tokens, out.supervised, samples);
        bar.step(total, lr, tokens as f64 / secs.max(1e-9));
        if let Some(fit) = budget.as_ref().and_then(|b| b.refit(Instant::now(), step, max_steps)) {
            let planned = summary.refitted.map_or(max_steps, |(p, _)| p);
            bar.println(&budget::describe_refit(planned, fit));
            ctx.optimizer.refit_schedule(fit);
            bar.set_total(fit);
            max_steps = fit;
            summary.refitted = Some((planned, fit));
        }

        let last = step == max_steps;
        if step.is_multiple_of(cfg.train.log_every.max(1)) || last {
            let epoch = state.cursor.epoch as f64
                + state.cursor.pack as f64 / ctx.epochs.packs_in_epoch().max(1) as f64;
            let values = interval.take(epoch)?;
            metrics.write(Mode::Train, step, state.train_seconds, &values)?;
            events.scalars(Mode::Train.as_str(), step, &values)?;
            events.flush()?;
            if bar.is_hidden() {
                let get = |k: &str| values.iter().find(|(n, _)| *n == k).map_or(0.0, |(_, v)| *v);
                bar.println(&format!(
                    "step {step}/{max_steps} loss {:.4} lr {lr:.2e} {:.0} tok/s",
                    get("loss"),
                    get("tokens_per_s")
                ));
            }
        }
        if cfg.train.save_every > 0 && step.is_multiple_of(cfg.train.save_every) && !last {
            let dir = run.save_checkpoint(
                ctx.model,
                ctx.optimizer,
                &model_src,
                &resolved_yaml,
                &state,
                cfg.train.keep_last,
            )?;
            last_saved = Some(step);
            summary.checkpoint = dir;
        }
        if cfg.train.eval_every > 0 && step.is_multiple_of(cfg.train.eval_every) && !last {
            evaluate_now(
                format!("step-{step}"),
                &state,
                ctx.model,
                &mut metrics,
                &mut events,
                &mut summary,
            )?;
        }
    }
    bar.finish();
    if !interval.is_empty() {
        let values = interval.take(state.cursor.epoch as f64)?;
        metrics.write(Mode::Train, state.step, state.train_seconds, &values)?;
        events.scalars(Mode::Train.as_str(), state.step, &values)?;
    }
    if last_saved != Some(state.step) && state.step > 0 {
        summary.checkpoint = run.save_checkpoint(
            ctx.model,
            ctx.optimizer,
            &model_src,
            &resolved_yaml,
            &state,
            cfg.train.keep_last,
        )?;
    }
    evaluate_now("final".into(), &state, &model, &mut metrics, &mut events, &mut summary)?;
    events.flush()?;
    summary.steps = state.step;
    summary.train_seconds = state.train_seconds;
    summary.tokens = state.tokens;
    Ok(summary)
}

/// What training reads before any model exists: the model directory's text side, the prompts,
/// the encoder and the checked training split.
struct Inputs {
    model_src: PathBuf,
    model_dir: ModelDir,
    prompts: Prompts,
    encoder: Encoder,
    train: Split,
    /// The pixel budget images are checked against (config and model limits).
    max_pixels: u64,
}

impl Inputs {
    fn load(cfg: &Config) -> Result<Inputs> {
        let model_src =
            required_path(&cfg.model.path, "model.path", "a Qwen3-VL model directory (HF layout)")?;
        let train_path = required_path(&cfg.data.train, "data.train", "a JSONL file")?;
        let model_dir = ModelDir::load(&model_src)?;
        let prompts = Prompts::resolve(&cfg.prompt)?;
        let encoder = Encoder::new(model_dir.clone(), prompts.clone(), &cfg.template)?;
        let max_pixels = cfg.template.max_pixels.min(model_dir.vision().max_pixels);
        let train = Split::load("train", &train_path, cfg.data.train_limit, max_pixels)?;
        Ok(Inputs { model_src, model_dir, prompts, encoder, train, max_pixels })
    }
}

/// The model (frozen modules without gradients), the objective and the optimizer.
fn build_model(
    cfg: &Config,
    weights: &Path,
    model_dir: &ModelDir,
    device: Device,
) -> Result<(Qwen3VL, Stage1Objective, AdamW)> {
    let model = Qwen3VL::load(weights, kind_of(cfg.model.dtype), device)?;
    let frozen = &cfg.model.tuning.freeze;
    let mut params = Vec::new();
    for (name, t, _) in model.named_parameters() {
        if frozen.contains(&groups::module_of(&name)?) {
            let _ = t.set_requires_grad(false);
        }
        params.push((name, t));
    }
    let objective = Stage1Objective::new(&cfg.objective, coord_ids(model_dir), device);
    let optimizer = AdamW::new(params, &cfg.optim, frozen, cfg.train.max_steps)?;
    Ok((model, objective, optimizer))
}

/// The tensor kind of the configured `model.dtype`.
fn kind_of(dtype: Dtype) -> Kind {
    match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::Bf16 => Kind::BFloat16,
    }
}

fn coord_ids(model_dir: &ModelDir) -> CoordIds {
    CoordIds::new(model_dir.vocab().first_id())
}

/// What one optimizer step did.
struct StepOutcome {
    /// The window loss (sum of the micro-batch shares).
    loss: f64,
    terms: LossTerms,
    stats: StepStats,
    tokens: u64,
    supervised: u64,
    samples: u64,
}

/// Everything an optimizer step touches.
struct StepContext<'a, 'e> {
    cfg: &'a Config,
    split: &'a Split,
    epochs: &'a mut Epochs<'e>,
    model: &'a Qwen3VL,
    objective: &'a Stage1Objective,
    optimizer: &'a mut AdamW,
    workers: &'a mut Workers,
    vision: VisionInput<'a>,
    device: Device,
}

impl StepContext<'_, '_> {
    /// Optimizer step `step` (1-based) on the packs from `cursor`: seed, assemble the window,
    /// forward/backward each micro-batch against the window's counts, clip and update.
    fn run_step(&mut self, step: u64, cursor: &mut Cursor) -> Result<StepOutcome> {
        let cfg = self.cfg;
        tch::manual_seed(seed::torch_seed(seed::step_seed(cfg.run.seed, step)));
        let accumulation = cfg.train.accumulation_steps().max(1);
        let packs_per_micro = cfg.train.micro_batch.max(1);
        let mut micro = Vec::with_capacity(accumulation as usize);
        for _ in 0..accumulation {
            let mut samples = Vec::new();
            for _ in 0..packs_per_micro {
                samples.extend(self.epochs.take(cursor)?);
            }
            let parts: Vec<_> = samples
                .iter()
                .map(|(i, s)| (*i, s, self.split.items[*i as usize].pixels.as_slice()))
                .collect();
            micro.push(MicroBatch::build(&parts, self.objective, &self.vision, self.device)?);
        }
        let window: WindowCounts = micro.iter().map(MicroBatch::counts).sum();
        let ids: Vec<Vec<u64>> = micro.iter().map(|m| m.sample_ids.clone()).collect();
        let tokens = micro.iter().map(|m| m.tokens as u64).sum();
        let mut outs = self.workers.run(micro, &window, self.model, self.objective)?;
        let mut total = 0.0;
        for (out, ids) in outs.iter().zip(&ids) {
            if !out.value.is_finite() {
                return Err(non_finite(out.value, step, ids, self.split));
            }
            total += out.value;
        }
        let grads = workers::sum_in_order(&mut outs);
        let stats = self.optimizer.step_with(grads).map_err(|e| {
            let ids: Vec<u64> = ids.concat();
            e.at(format!("optimizer step {step}, samples {}", describe_samples(&ids, self.split)))
        })?;
        let terms = outs
            .into_iter()
            .map(|o| o.terms)
            .reduce(|a, b| a + b)
            .ok_or_else(|| Error::runtime("an optimizer step without micro-batches"))?;
        Ok(StepOutcome {
            loss: total,
            terms,
            stats,
            tokens,
            supervised: window.supervised(),
            samples: ids.iter().map(|s| s.len() as u64).sum(),
        })
    }
}

/// The measured speed of a config on this machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    /// The fastest plan tried.
    pub cpu: CpuPlan,
    pub steps_per_minute: f64,
    /// Steps per minute of every plan tried, in order.
    pub tried: Vec<(CpuPlan, f64)>,
}

/// Measure optimizer steps per minute of this config on this machine with one thread, with one
/// worker using every core, and — when a window has several micro-batches — with one worker per
/// core: `steps` steps each on a throwaway copy of the model and the real training data (the
/// first step of each, a warm-up, is not timed). Nothing is written.
///
/// Why measure: on a machine shared with other jobs an intra-op thread that loses its core
/// stalls every op of a small model, and one thread can be several times faster than two; on
/// an idle machine workers beat intra-op threads for small models.
pub fn probe(loaded: &Loaded, steps: u64) -> Result<Probe> {
    let cfg = &loaded.config;
    check_supported(cfg)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let one = CpuPlan { workers: 1, threads: 1 };
    let (device, _) = configure_device(cfg, Some(one))?;
    let Inputs { model_src, model_dir, encoder, train: split, .. } = Inputs::load(cfg)?;
    let mut epochs = Epochs::new(&split, &encoder, cfg)?;
    let (model, objective, mut optimizer) = build_model(cfg, &model_src, &model_dir, device)?;
    let vision_cfg = model.config().vision.clone();
    let norm = PixelNorm::from_model_dir(&model_src)?;
    let mut plans = vec![one];
    if cores > 1 {
        plans.push(CpuPlan { workers: 1, threads: cores });
        if cfg.train.accumulation_steps() > 1 {
            plans.push(CpuPlan { workers: cores, threads: 1 });
        }
    }
    let mut cursor = Cursor::default();
    let mut step = 0;
    let mut tried = Vec::new();
    for plan in plans {
        tch::set_num_threads(plan.threads as i32);
        let mut workers = Workers::new(cfg, &model, &optimizer, coord_ids(&model_dir), plan)?;
        let mut ctx = StepContext {
            cfg,
            split: &split,
            epochs: &mut epochs,
            model: &model,
            objective: &objective,
            optimizer: &mut optimizer,
            workers: &mut workers,
            vision: VisionInput { config: &vision_cfg, norm },
            device,
        };
        step += 1;
        ctx.run_step(step, &mut cursor)?;
        let start = Instant::now();
        for _ in 1..steps.max(2) {
            step += 1;
            ctx.run_step(step, &mut cursor)?;
        }
        let per_step = start.elapsed().as_secs_f64() / (steps.max(2) - 1) as f64;
        tried.push((plan, 60.0 / per_step.max(1e-9)));
    }
    let (cpu, steps_per_minute) =
        tried.iter().copied().fold((one, 0.0), |best, t| if t.1 > best.1 { t } else { best });
    Ok(Probe { cpu, steps_per_minute, tried })
}

/// The configured device and, on CPU, how training uses it: `plan`, else
/// `COORDEXP_CPU_WORKERS` (default 1) and `COORDEXP_CPU_THREADS` (default every core). A
/// machine shared with other jobs runs small models faster with fewer threads than cores: an
/// intra-op thread that loses its core stalls every op.
fn configure_device(cfg: &Config, plan: Option<CpuPlan>) -> Result<(Device, CpuPlan)> {
    let device = runtime::parse_device(&cfg.model.device).ok_or_else(|| {
        Error::input(format!("unknown device `{}`", cfg.model.device))
            .at("model.device")
            .hint("use cpu, cuda or cuda:N")
    })?;
    if device != Device::Cpu {
        return Ok((device, CpuPlan { workers: 1, threads: 1 }));
    }
    let plan = match plan {
        Some(p) => CpuPlan { workers: p.workers.max(1), threads: p.threads.max(1) },
        None => CpuPlan {
            workers: env_count("COORDEXP_CPU_WORKERS")?.unwrap_or(1),
            threads: match env_count("COORDEXP_CPU_THREADS")? {
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
        },
    };
    tch::set_num_threads(plan.threads as i32);
    Ok((device, plan))
}

/// A positive count from the environment variable `name`, if it is set.
fn env_count(name: &str) -> Result<Option<usize>> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(v) => v.parse::<usize>().ok().filter(|n| *n > 0).map(Some).ok_or_else(|| {
            Error::input(format!("{name}={v} is not a positive integer"))
                .hint(format!("unset {name} to use the default"))
        }),
    }
}

fn required_path(p: &Option<PathBuf>, key: &str, what: &str) -> Result<PathBuf> {
    p.clone().ok_or_else(|| {
        Error::input(format!("{key} is not set")).at(key).hint(format!("point {key} at {what}"))
    })
}

/// Features the config may name that this trainer does not implement yet: refused up front.
fn check_supported(cfg: &Config) -> Result<()> {
    if cfg.model.tuning.mode != TuningMode::Full {
        return Err(Error::input(format!(
            "model.tuning.mode {:?} is not implemented by the stage-1 trainer",
            cfg.model.tuning.mode
        ))
        .at("model.tuning.mode")
        .hint("use `full` (freeze modules with model.tuning.freeze)"));
    }
    if cfg.model.coord_offsets.enabled {
        return Err(Error::input("model.coord_offsets is not implemented by the stage-1 trainer")
            .at("model.coord_offsets.enabled")
            .hint("set it to false; the coordinate rows train with the language model"));
    }
    if cfg.train.max_steps == 0 {
        return Err(Error::input("train.max_steps is 0: nothing to train")
            .at("train.max_steps")
            .hint("set a positive number of optimizer steps"));
    }
    Ok(())
}

/// Decoding for evaluation and `coordexp infer`: `rollout.decoding` (greedy by default) up to
/// `eval.max_new_tokens`, seeded per step (the seed matters only when sampling).
fn sampling(cfg: &Config, encoder: &Encoder, step: u64) -> Result<SamplingConfig> {
    let d = &cfg.rollout.decoding;
    Ok(SamplingConfig {
        temperature: d.temperature,
        top_p: d.top_p,
        top_k: usize::try_from(d.top_k).unwrap_or(0),
        repetition_penalty: d.repetition_penalty,
        max_new_tokens: cfg.eval.max_new_tokens,
        stop_ids: Predictor::stop_ids(encoder)?,
        seed: seed::eval_seed(cfg.run.seed, step),
    })
}

fn describe_samples(ids: &[u64], split: &Split) -> String {
    ids.iter()
        .map(|&i| format!("#{i} ({})", split.location(i as usize)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn non_finite(value: f64, step: u64, sample_ids: &[u64], split: &Split) -> Error {
    Error::runtime(format!(
        "the loss is {value} at optimizer step {step}; samples of the micro-batch: {}",
        describe_samples(sample_ids, split)
    ))
    .hint("lower the learning rates or check those records; resume from the last checkpoint with --resume")
}

#[allow(clippy::too_many_arguments)]
fn write_manifest(
    cfg: &Config,
    run: &RunDir,
    model_dir: &ModelDir,
    prompts: &Prompts,
    (train, val): (&Split, &Option<Split>),
    epochs: &Epochs<'_>,
    opts: &TrainOptions,
    cpu: CpuPlan,
) -> Result<()> {
    let mut datasets = vec![manifest::fingerprint_jsonl("train", &train.path)?];
    if let Some(v) = val {
        datasets.push(manifest::fingerprint_jsonl("val", &v.path)?);
    }
    let tokenizer_path = model_dir.root().join("tokenizer.json");
    let vocab = model_dir.vocab();
    let m = RunManifest {
        schema_version: MANIFEST_VERSION,
        coordexp_version: env!("CARGO_PKG_VERSION").into(),
        git: manifest::git_state(Path::new(".")),
        rustc: manifest::rustc_version(),
        tch_version: TCH_VERSION.into(),
        torch_version: runtime::TORCH_VERSION.into(),
        device: device_description(&cfg.model.device, cpu),
        seeds: Seeds::new(cfg.run.seed),
        datasets,
        tokenizer: TokenizerFingerprint {
            sha256: manifest::sha256_file(&tokenizer_path)?,
            path: tokenizer_path,
            coord_first_id: *vocab.range().start(),
            coord_last_id: *vocab.range().end(),
        },
        prompts: ManifestPrompts { system: prompts.system.clone(), user: prompts.user.clone() },
        packing_plan_checksum: epochs.first_plan_checksum().into(),
        command_line: opts.command_line.clone(),
        started_at: manifest::utc_now(),
    };
    m.write(&run.root.join(run_dir::MANIFEST))
}

fn device_description(device: &str, cpu: CpuPlan) -> String {
    let info = runtime::info();
    if device == "cpu" {
        format!("cpu ({cpu})")
    } else {
        format!("{device} ({} CUDA devices visible)", info.cuda_devices)
    }
}

#[cfg(test)]
mod tests;
