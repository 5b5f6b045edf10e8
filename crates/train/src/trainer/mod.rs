//! The trainer: data → encode → deterministic packing → steps of the configured kind →
//! metrics, periodic evaluation and atomic checkpoints.
//!
//! ```text
//! train(loaded, opts)
//!   check the config's features → session (device, model dir, prompts, encoder, pixel budget)
//!   → load + check both splits (images, sizes, budgets) → encode + plan epoch 0
//!   → open the run (run::open: fresh, or a resume whose every check passes before any file is
//!     touched; a finished run returns at once) → model, optimizer, step kinds
//!   → eval at step 0 (the untrained model)
//!   → per step: the step plan names the kind → that kind builds its window and runs it through
//!     step::optimize_window → log / eval / checkpoint
//!   → final checkpoint + evaluation (eval/final)
//! ```
//!
//! Determinism: the packs come from the seeded plan of each epoch ([`epochs`]), libtorch is
//! seeded with `step_seed(root, step)` before every step, and a checkpoint stores the weights,
//! the optimizer moments, the step, the schedule total and the data cursor — so on CPU a resumed
//! run repeats the uninterrupted run's losses exactly.
//!
//! Failure policy: every input problem (missing image, size mismatch, over-budget image,
//! over-long sample, template drift) is reported before the first step, naming the record; a
//! non-finite loss stops the run with the step and the samples of the offending micro-batch.
//! A wall-clock `deadline` (the demo's time budget) re-fits the schedule to the pace of the
//! machine ([`budget`]) and, as a backstop, ends training early; both are reported in the
//! summary and the log, never silent.

mod budget;
mod epochs;
mod evaluate;
mod probe;
mod progress;
mod run;
mod run_dir;
mod stage1;
pub mod stage2;
mod step;
mod workers;

pub use budget::{Clock, SystemClock, TickClock, describe_refit};
pub use epochs::{Cursor, Epochs};
pub use evaluate::{EvalMetrics, Evaluator};
pub use probe::{Probe, probe, probe_plans};
pub use run_dir::{RunDir, TrainerState, find_resume};
pub use stage1::{Stage1Batch, Stage1Step};
pub use step::{StepKind, StepPlan, optimize_window};
pub use workers::{CpuPlan, Micro, MicroLoss, MicroOut, Workers, scalar, sum_in_order};

use crate::metrics::{EventWriter, MetricsLog, Mode};
use crate::objective::stage2::Stage2Objective;
use crate::objective::{CoordIds, Stage1Objective};
use crate::optim::AdamW;
use coordexp_core::config::Loaded;
use coordexp_core::config::schema::{
    Config, Module, RolloutBackend as BackendKind, Stage, TuningMode,
};
use coordexp_core::{Error, Result, seed};
use coordexp_dist::{Backend as DistBackend, Group, Launch};
use coordexp_model::adapter::{AdapterKind, AdapterSpec, Targets};
use coordexp_model::model::Qwen3VL;
use coordexp_rollout::Session;
use coordexp_rollout::backend::{Embedded, RolloutBackend, backend_from_config};
use coordexp_rollout::predict::{Predictor, sampling};
use coordexp_rollout::session::{cores, env_count, required_path};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::Tensor;

use progress::{Bar, Interval};
use run::{Opened, RunInputs};
use stage2::share::{Generation, Generators};
use step::StepTools;

/// Called with every evaluation point as it is measured (the demo prints its AP50 curve).
pub type EvalCallback = Box<dyn FnMut(&EvalPoint)>;

/// How to run (everything that is not a hyper-parameter; those are in the config).
pub struct TrainOptions {
    /// Continue the run of this checkpoint (or the newest checkpoint of this run directory).
    pub resume: Option<PathBuf>,
    /// Accept a resume whose data, packing plan or config differ from the run's (recorded in
    /// the manifest).
    pub allow_changes: bool,
    /// Recorded in the manifest.
    pub command_line: Vec<String>,
    /// Stop training at this instant (of `clock`) even before `train.max_steps` (then
    /// checkpoint and evaluate as at the end).
    pub deadline: Option<Instant>,
    /// Where the trainer reads the time (tests inject a [`TickClock`]).
    pub clock: Arc<dyn Clock>,
    /// Draw the progress bar (it also needs a terminal).
    pub progress: bool,
    /// Called after every evaluation (the demo prints its curve from it).
    pub on_eval: Option<EvalCallback>,
    /// Data-parallel workers and libtorch threads on CPU (see [`probe`]); `None`:
    /// `COORDEXP_CPU_WORKERS` (default 1) and `COORDEXP_CPU_THREADS` (default every core).
    pub cpu: Option<CpuPlan>,
    /// Where channel-B rollouts come from instead of the configured backend (tests script
    /// rollouts through this; `None`: `rollout.backend`).
    pub backend: Option<Box<dyn RolloutBackend>>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            resume: None,
            allow_changes: false,
            command_line: std::env::args().collect(),
            deadline: None,
            clock: Arc::new(SystemClock),
            progress: true,
            on_eval: None,
            cpu: None,
            backend: None,
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
    /// True when a resumed run had already taken every step: nothing was done or written.
    pub nothing_to_do: bool,
    /// True when the deadline ended training before the schedule's last step.
    pub stopped_at_deadline: bool,
    /// `(planned, final total)` when the deadline re-fitted the schedule.
    pub refitted: Option<(u64, u64)>,
    /// The schedule's total steps at the end (after any re-fit).
    pub total_steps: u64,
    /// The schedule's warmup in steps (a re-fit keeps the planned warmup).
    pub warmup_steps: u64,
    /// Total loss of every step trained in this process, in order.
    pub step_losses: Vec<(u64, f64)>,
    pub evals: Vec<EvalPoint>,
    pub train_seconds: f64,
    pub tokens: u64,
    /// Newest checkpoint.
    pub checkpoint: PathBuf,
}

impl TrainSummary {
    /// A run that is at `state`, nothing trained in this process yet.
    fn at(run_dir: PathBuf, state: &TrainerState, checkpoint: PathBuf) -> TrainSummary {
        TrainSummary {
            run_dir,
            steps: state.step,
            nothing_to_do: false,
            stopped_at_deadline: false,
            refitted: None,
            total_steps: state.total_steps,
            warmup_steps: state.warmup_steps,
            step_losses: Vec::new(),
            evals: Vec::new(),
            train_seconds: state.train_seconds,
            tokens: state.tokens,
            checkpoint,
        }
    }

    /// The final evaluation, when the run has a validation set.
    pub fn final_eval(&self) -> Option<&EvalPoint> {
        self.evals.iter().rev().find(|e| e.name == "final")
    }
}

/// Train as `loaded` describes.
pub fn train(loaded: &Loaded, mut opts: TrainOptions) -> Result<TrainSummary> {
    let cfg = &loaded.config;
    check_supported(cfg)?;
    let plan = step::plan_for(cfg);
    // A torchrun launch: join the other ranks first, so that a broken launch fails at once.
    let launch = Launch::from_env()?;
    if let Some(l) = &launch {
        check_distributable(cfg, l, &opts)?;
    }
    // A rank on GPUs takes the GPU of its local rank and joins an NCCL group; on CPU, Gloo.
    let rank_device = launch.as_ref().map(|l| match cfg.model.device.as_str() {
        "cpu" => (tch::Device::Cpu, DistBackend::Gloo),
        _ => (tch::Device::Cuda(l.local_rank), DistBackend::Nccl(l.local_rank)),
    });
    let group = match (&launch, rank_device) {
        (Some(l), Some((_, backend))) => Some(Group::connect(
            l,
            Duration::from_secs_f64(cfg.train.collective_timeout_s),
            backend,
        )?),
        _ => None,
    };
    let dist = group.as_ref();
    let lead = dist.is_none_or(|g| g.rank() == 0);
    let cpu = match &launch {
        Some(l) if opts.cpu.is_none() => rank_cpu_plan(cfg, l)?,
        _ => cpu_plan(cfg, opts.cpu)?,
    };
    // Input: everything is checked before any model is loaded.
    let session = match rank_device {
        Some((device, _)) => Session::open_on(cfg, None, Some(cpu.threads), device)?,
        None => Session::open(cfg, None, Some(cpu.threads))?,
    };
    let train_path = required_path(&cfg.data.train, "data.train", "a JSONL file")?;
    let train_split = session.load_split("train", &train_path, cfg.data.train_limit)?;
    let val_split = match &cfg.data.val {
        Some(p) => Some(session.load_split("val", p, cfg.data.val_limit)?),
        None => None,
    };
    let mut epochs = Epochs::new(&train_split, &session.encoder, cfg)?;

    let inputs = RunInputs {
        loaded,
        session: &session,
        train: &train_split,
        val: val_split.as_ref(),
        epochs: &epochs,
        cpu,
        command_line: &opts.command_line,
    };
    // Rank 0 opens the run (creates it, or checks and prepares the resume) and tells the
    // others where to start; only rank 0 writes the run directory.
    let opened = if lead {
        match run::open(&inputs, opts.resume.as_deref(), opts.allow_changes) {
            Ok(o) => Some(o),
            Err(e) => {
                if let Some(g) = dist {
                    // Tell the other ranks before stopping; they stop with the same reason.
                    let _ = run::Start::shared(g, Err(e.to_string()));
                }
                return Err(e);
            }
        }
    } else {
        None
    };
    let start = run::Start::of(opened.as_ref());
    let start = match dist {
        Some(g) => run::Start::shared(g, Ok(start))?,
        None => start.ok_or_else(|| Error::runtime("the run was not opened"))?,
    };
    if start.finished {
        return Ok(TrainSummary {
            nothing_to_do: true,
            ..TrainSummary::at(start.dir, &start.state, start.weights)
        });
    }
    let mut sinks = match opened {
        Some(Opened::Ready(r)) => Some(Sinks { metrics: r.metrics, events: r.events }),
        _ => None,
    };
    let run = RunDir { root: start.dir.clone() };
    let (mut state, weights, resumed) = (start.state, start.weights, start.resumed);
    let resolved_yaml = loaded.resolved_yaml();

    // Model, optimizer, step kinds.
    let model = load_trained_model(cfg, &session, &weights, resumed)?;
    let mut optimizer = build_optimizer(cfg, &model, state.total_steps)?;
    if let Some(g) = dist {
        // Every rank loaded the same files; rank 0's trained tensors make sure of it.
        let trained: Vec<Tensor> = optimizer.params().map(|(_, t)| t.shallow_clone()).collect();
        tch::no_grad(|| g.broadcast(&trained, 0, "initial weights from rank 0"))?;
    }
    if resumed {
        optimizer.load(&weights)?;
        // The checkpoint's schedule: a re-fitted total keeps the warmup of the planned one.
        optimizer.restore_schedule(state.total_steps, state.warmup_steps);
    }
    state.warmup_steps = optimizer.schedule().warmup_steps;
    if optimizer.steps() != state.step {
        return Err(Error::input(format!(
            "the checkpoint's optimizer has taken {} steps but its trainer state says {}",
            optimizer.steps(),
            state.step
        ))
        .at(weights.display().to_string())
        .hint("the checkpoint is inconsistent; resume from another one"));
    }
    let coord = coord_ids(&session);
    let given = match opts.backend.take() {
        Some(b) => Some(b),
        None => http_backend(cfg, &session, &run.root)?,
    };
    let mut kinds = StepKinds::new(cfg, &session, &model, &optimizer, cpu, coord, given)?;

    let evaluator = match &val_split {
        Some(v) => {
            let n = cfg.eval.limit.unwrap_or(v.len()).min(v.len());
            Some(Evaluator::new(
                v.items.iter().take(n).collect(),
                &v.path,
                &run.eval_root(),
                &cfg.eval.iou,
            )?)
        }
        None => None,
    };
    let mut eval_ctx = EvalContext {
        cfg,
        session: &session,
        evaluator: evaluator.as_ref(),
        eval_root: run.eval_root(),
        on_eval: opts.on_eval.take(),
    };
    let mut summary = TrainSummary::at(run.root.clone(), &state, weights.clone());
    if state.step == 0 && cfg.train.eval_every > 0 {
        let point = eval_ctx.evaluate_on_lead("step-0", &state, &model, sinks.as_mut(), dist)?;
        summary.evals.extend(point);
    }

    // The loop.
    let clock = opts.clock.clone();
    let mut max_steps = state.total_steps;
    let bar = Bar::new(max_steps, state.step, opts.progress && lead);
    let mut interval = Interval::new(clock.now());
    let budget = opts.deadline.map(|d| budget::Budget::new(d, clock.now(), state.step));
    let mut last_saved = None;
    // Channel-B steps so far (a pure function of the plan, so a resumed run counts them too).
    let mut b_steps =
        (1..=state.step).filter(|&s| plan.kind(s) == StepKind::ChannelB).count() as u64;
    let mut tools = StepTools {
        cfg,
        model: &model,
        optimizer: &mut optimizer,
        vision: session.vision(&model),
        device: session.device,
        split: &train_split,
        dist,
    };
    while state.step < max_steps {
        if opts.deadline.is_some_and(|d| clock.now() >= d) {
            summary.stopped_at_deadline = true;
            bar.println(&format!(
                "time budget reached: stopping at step {} of {max_steps}",
                state.step
            ));
            break;
        }
        let started = clock.now();
        let step = state.step + 1;
        let lr = tools.optimizer.next_lr(Module::Language).unwrap_or(0.0);
        tch::manual_seed(seed::torch_seed(seed::step_seed(cfg.run.seed, step)));
        let kind = plan.kind(step);
        let out = kinds.run(kind, &mut tools, &mut epochs, &session, step, &mut state.cursor)?;
        b_steps += u64::from(kind == StepKind::ChannelB);
        let (tokens, samples, total) = (out.tokens, out.samples, out.loss);
        state.step = step;
        state.tokens += tokens;
        state.samples += samples;
        let now = clock.now();
        let secs = now.saturating_duration_since(started).as_secs_f64();
        state.train_seconds += secs;
        summary.step_losses.push((step, total));
        interval.add(out, lr)?;
        bar.step(total, lr, tokens as f64 / secs.max(1e-9));
        if let Some(fit) = budget.as_ref().and_then(|b| b.refit(now, step, max_steps)) {
            let planned = summary.refitted.map_or(max_steps, |(p, _)| p);
            bar.println(&budget::describe_refit(planned, fit));
            tools.optimizer.refit_schedule(fit);
            bar.set_total(fit);
            max_steps = fit;
            summary.refitted = Some((planned, fit));
        }
        state.total_steps = max_steps;

        let last = step == max_steps;
        if step.is_multiple_of(cfg.train.log_every.max(1)) || last {
            let epoch = state.cursor.epoch as f64
                + state.cursor.pack as f64 / epochs.packs_in_epoch().max(1) as f64;
            let mut values = interval.take(epoch, clock.now())?;
            if cfg.train.stage == Stage::Stage2 {
                values.push(("stage2_ab/b_ratio_realized".into(), b_steps as f64 / step as f64));
            }
            if let Some(sinks) = sinks.as_mut() {
                log_train(sinks, step, state.train_seconds, &values)?;
            }
            if bar.is_hidden() && lead {
                let get = |k: &str| values.iter().find(|(n, _)| n == k).map_or(0.0, |(_, v)| *v);
                bar.println(&format!(
                    "step {step}/{max_steps} loss {:.4} lr {lr:.2e} {:.0} tok/s",
                    get("loss"),
                    get("tokens_per_s")
                ));
            }
        }
        if cfg.train.save_every > 0 && step.is_multiple_of(cfg.train.save_every) && !last {
            let saver =
                Saver { run: &run, model: &model, session: &session, resolved: &resolved_yaml };
            summary.checkpoint = saver.save_on_lead(tools.optimizer, &state, cfg, dist)?;
            last_saved = Some(step);
        }
        if cfg.train.eval_every > 0 && step.is_multiple_of(cfg.train.eval_every) && !last {
            let name = format!("step-{step}");
            let point = eval_ctx.evaluate_on_lead(&name, &state, &model, sinks.as_mut(), dist)?;
            summary.evals.extend(point);
        }
    }
    bar.finish();
    if !interval.is_empty() {
        let values = interval.take(state.cursor.epoch as f64, clock.now())?;
        if let Some(sinks) = sinks.as_mut() {
            log_train(sinks, state.step, state.train_seconds, &values)?;
        }
    }
    if last_saved != Some(state.step) && state.step > 0 {
        let saver = Saver { run: &run, model: &model, session: &session, resolved: &resolved_yaml };
        summary.checkpoint = saver.save_on_lead(tools.optimizer, &state, cfg, dist)?;
    }
    let point = eval_ctx.evaluate_on_lead("final", &state, &model, sinks.as_mut(), dist)?;
    summary.evals.extend(point);
    if let Some(sinks) = sinks.as_mut() {
        sinks.events.flush()?;
    }
    summary.steps = state.step;
    summary.total_steps = state.total_steps;
    summary.train_seconds = state.train_seconds;
    summary.tokens = state.tokens;
    Ok(summary)
}

/// The run's metric files (held by rank 0 only in a multi-process run).
struct Sinks {
    metrics: MetricsLog,
    events: EventWriter,
}

fn log_train(sinks: &mut Sinks, step: u64, seconds: f64, values: &[(String, f64)]) -> Result<()> {
    let pairs: Vec<(&str, f64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    sinks.metrics.write(Mode::Train, step, seconds, &pairs)?;
    sinks.events.scalars(Mode::Train.as_str(), step, &pairs)?;
    sinks.events.flush()
}

/// What writing a checkpoint needs.
struct Saver<'a> {
    run: &'a RunDir,
    model: &'a Qwen3VL,
    session: &'a Session,
    resolved: &'a str,
}

impl Saver<'_> {
    /// Rank 0 writes the checkpoint; the other ranks wait for it (bounded by the group's
    /// timeout). Returns the checkpoint's directory.
    fn save_on_lead(
        &self,
        optimizer: &AdamW,
        state: &TrainerState,
        cfg: &Config,
        dist: Option<&Group>,
    ) -> Result<PathBuf> {
        let path = if dist.is_none_or(|g| g.rank() == 0) {
            self.run.save_checkpoint(
                self.model,
                optimizer,
                &self.session.model_src,
                self.resolved,
                state,
                cfg.train.keep_last,
            )?
        } else {
            self.run.checkpoint_path(state.step)
        };
        if let Some(g) = dist {
            g.barrier(&format!("rank 0 writing checkpoint step-{}", state.step))?;
        }
        Ok(path)
    }
}

/// Periodic evaluation: decode the validation prefix with `eval.decoding`, score it in memory,
/// log and report it.
struct EvalContext<'a> {
    cfg: &'a Config,
    session: &'a Session,
    evaluator: Option<&'a Evaluator<'a>>,
    eval_root: PathBuf,
    on_eval: Option<EvalCallback>,
}

impl EvalContext<'_> {
    /// Rank 0 evaluates; the other ranks wait for it (bounded by the group's timeout).
    fn evaluate_on_lead(
        &mut self,
        name: &str,
        state: &TrainerState,
        model: &Qwen3VL,
        sinks: Option<&mut Sinks>,
        dist: Option<&Group>,
    ) -> Result<Option<EvalPoint>> {
        let point = match sinks {
            Some(s) => self.evaluate(name, state, model, &mut s.metrics, &mut s.events)?,
            None => None,
        };
        if let Some(g) = dist {
            g.barrier(&format!("rank 0 evaluating {name}"))?;
        }
        Ok(point)
    }

    /// Evaluate `model` as `eval/<name>`; `None` without a validation set.
    fn evaluate(
        &mut self,
        name: &str,
        state: &TrainerState,
        model: &Qwen3VL,
        metrics: &mut MetricsLog,
        events: &mut EventWriter,
    ) -> Result<Option<EvalPoint>> {
        let Some(ev) = self.evaluator else { return Ok(None) };
        let cfg = self.cfg;
        let predictor = Predictor {
            model,
            encoder: &self.session.encoder,
            vision: self.session.vision(model),
            sampling: sampling(
                &cfg.eval.decoding,
                cfg.eval.max_new_tokens,
                self.session.stop_ids()?,
            ),
            batch_size: cfg.eval.batch_size.max(1) as usize,
            seed: seed::eval_seed(cfg.run.seed, state.step),
        };
        let extra = serde_json::json!({"step": state.step, "train_seconds": state.train_seconds});
        let m = ev.run(&predictor, &self.eval_root.join(name), extra)?;
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
        let point = EvalPoint {
            name: name.to_string(),
            step: state.step,
            train_seconds: state.train_seconds,
            metrics: m,
        };
        if let Some(cb) = self.on_eval.as_mut() {
            cb(&point);
        }
        Ok(Some(point))
    }
}

/// The state of every step kind the plan can ask for (only the configured stage's).
enum StepKinds<'m> {
    Stage1(Stage1Step),
    Stage2 { step: Box<stage2::Stage2Step>, backend: Backend<'m> },
}

/// Channel B's rollout source: the embedded engine on the trained weights, or one given (an
/// HTTP backend, a test's script) with the weight version it was last synced to.
enum Backend<'m> {
    Embedded(Embedded<'m>),
    Given { backend: Box<dyn RolloutBackend>, synced: Option<u64> },
}

/// A stage-2 run's HTTP rollout backend (`rollout.backend: openai | swift`), syncing weights
/// through `rollout.sync_dir` (default `<run>/rollout_sync`); `None` for the embedded engine.
fn http_backend(
    cfg: &Config,
    session: &Session,
    run_root: &std::path::Path,
) -> Result<Option<Box<dyn RolloutBackend>>> {
    if cfg.train.stage != Stage::Stage2 || cfg.rollout.backend == BackendKind::Embedded {
        return Ok(None);
    }
    let sync_dir = cfg.rollout.sync_dir.clone().unwrap_or_else(|| run_root.join("rollout_sync"));
    let backend = backend_from_config(cfg, &session.encoder, Some(&sync_dir))?;
    Ok(Some(Box::new(backend)))
}

impl<'m> StepKinds<'m> {
    fn new(
        cfg: &Config,
        session: &'m Session,
        model: &'m Qwen3VL,
        optimizer: &AdamW,
        cpu: CpuPlan,
        coord: CoordIds,
        given: Option<Box<dyn RolloutBackend>>,
    ) -> Result<StepKinds<'m>> {
        Ok(match cfg.train.stage {
            Stage::Stage1 => StepKinds::Stage1(Stage1Step {
                objective: Stage1Objective::new(&cfg.objective, coord, session.device),
                workers: Workers::new(cfg, model, optimizer, cpu, |d| {
                    Ok(Stage1Objective::new(&cfg.objective, coord, d))
                })?,
            }),
            Stage::Stage2 => {
                let objective = |d| Stage2Objective::new(&cfg.stage2.objective, coord, d);
                StepKinds::Stage2 {
                    step: Box::new(stage2::Stage2Step {
                        objective: objective(session.device),
                        workers: Workers::new(cfg, model, optimizer, cpu, |d| Ok(objective(d)))?,
                        coord,
                    }),
                    backend: match given {
                        Some(backend) => Backend::Given { backend, synced: None },
                        None => Backend::Embedded(Embedded {
                            model,
                            encoder: &session.encoder,
                            vision: session.vision(model),
                            stop_ids: session.stop_ids()?,
                            batch_size: cfg.rollout.decode_batch_size.max(1) as usize,
                            weight_version: 0,
                        }),
                    },
                }
            }
        })
    }

    /// Run optimizer step `step` of `kind`.
    fn run(
        &mut self,
        kind: StepKind,
        tools: &mut StepTools<'_>,
        epochs: &mut Epochs<'_>,
        session: &Session,
        step: u64,
        cursor: &mut Cursor,
    ) -> Result<step::StepOutcome> {
        match (self, kind) {
            (StepKinds::Stage1(s), StepKind::Stage1) => {
                let split = tools.split;
                s.run(tools, epochs, split, step, cursor)
            }
            (StepKinds::Stage2 { step: s, .. }, StepKind::ChannelA) => {
                s.run_a(tools, &session.encoder, epochs, step, cursor)
            }
            (StepKinds::Stage2 { step: s, backend }, StepKind::ChannelB) => {
                // Rollouts come from the weights of the last step (version = steps taken).
                let version = step - 1;
                let mut sync_counters = Vec::new();
                let dist = tools.dist;
                let lead = dist.is_none_or(|g| g.rank() == 0);
                let mut generation = match backend {
                    Backend::Embedded(e) => {
                        // The engine shares the trained weights (every rank's are the same).
                        e.weight_version = version;
                        Generation {
                            backend: e,
                            generators: Generators::EveryRank,
                            dist,
                            failed: None,
                        }
                    }
                    Backend::Given { backend, synced } => {
                        // Servers hold their own copy: bring it up to date before the first
                        // rollout of every B step that follows training (a resumed run's
                        // servers start from whatever they loaded, so the first B step syncs).
                        // Rank 0 alone syncs and calls them; its sync failure stops every
                        // rank at the rollout gather (`Generation::failed`).
                        let mut failed = None;
                        if lead && *synced != Some(version) {
                            let started = Instant::now();
                            match backend.sync_weights(tools.model, version) {
                                Ok(report) => {
                                    *synced = Some(version);
                                    if let Some(r) = report {
                                        let total = started.elapsed().as_secs_f64();
                                        sync_counters.extend([
                                            ("time/weight_sync_s".to_string(), total),
                                            ("rollout/weight_syncs".to_string(), 1.0),
                                            ("time/weight_save_s".to_string(), r.save_s),
                                            ("time/weight_reload_s".to_string(), r.reload_s),
                                        ]);
                                    }
                                }
                                Err(e) => {
                                    failed = Some(Error::from(e).or_hint(
                                        "the rollout servers could not load the learner's weights; \
                                         rolling out from stale weights would change the objective",
                                    ));
                                }
                            }
                        }
                        let backend = backend.as_mut();
                        Generation { backend, generators: Generators::Lead, dist, failed }
                    }
                };
                let mut out =
                    s.run_b(tools, &session.encoder, &mut generation, epochs, step, cursor)?;
                out.counters.extend(sync_counters);
                Ok(out)
            }
            (_, kind) => Err(Error::runtime(format!(
                "the step plan asked for a {kind:?} step that this run's stage has no state for"
            ))),
        }
    }
}

/// The model a run trains: the base weights (the model directory, or for full tuning the
/// checkpoint), with the adapters of `model.tuning` attached — a resumed run's from its
/// checkpoint, else `adapter.init_from`, else fresh ones from the run's adapter seed.
fn load_trained_model(
    cfg: &Config,
    session: &Session,
    weights: &std::path::Path,
    resumed: bool,
) -> Result<Qwen3VL> {
    let mut model = match adapter_spec(cfg) {
        None => session.load_model(weights)?,
        Some(spec) => load_adapters(cfg, session, &spec, weights, resumed)?,
    };
    // Coordinate offsets: a full-tuning checkpoint's were attached by `load_model`; an adapter
    // checkpoint keeps them beside the adapter; else the base's own (frozen unless enabled).
    let c = &cfg.model.coord_offsets;
    if c.enabled {
        if resumed && model.adapter_spec().is_some() && model.coord_offset().is_none() {
            model.load_coord_offsets(weights)?;
        }
        if model.coord_offset().is_none() {
            model.attach_coord_offsets(coord_ids(session).first(), COORD_BINS, c.tie_head)?;
        } else if model.coord_offset().is_some_and(|o| o.head.is_none() != c.tie_head) {
            return Err(Error::input(format!(
                "the model's coordinate offsets have tie_head {} but the config says {}",
                !c.tie_head, c.tie_head
            ))
            .at("model.coord_offsets.tie_head")
            .hint("keep tie_head as the offsets were trained"));
        }
        for (_, t, _) in model.coord_offset_parameters() {
            let _ = t.set_requires_grad(true);
        }
    }
    Ok(model)
}

/// The base model with the adapters of `model.tuning`: a resumed run's from its checkpoint
/// (which holds the adapter only; the base is the configured model), else
/// `adapter.init_from`, else fresh ones from the run's adapter seed.
fn load_adapters(
    cfg: &Config,
    session: &Session,
    spec: &AdapterSpec,
    weights: &std::path::Path,
    resumed: bool,
) -> Result<Qwen3VL> {
    let mut model = session.load_model(&session.model_src)?;
    let from = if resumed {
        Some(weights.to_path_buf())
    } else {
        cfg.model.tuning.adapter.init_from.clone()
    };
    match from {
        Some(dir) => {
            let file = model.load_adapter(&dir)?;
            if file.spec.modules_to_save != spec.modules_to_save {
                return Err(Error::input(format!(
                    "{} saves the modules {:?} in full but model.tuning.adapter.modules_to_save is {:?}",
                    dir.display(),
                    file.spec.modules_to_save,
                    spec.modules_to_save
                ))
                .at("model.tuning.adapter.modules_to_save")
                .hint("set modules_to_save as the adapter was trained (a module missing from the file would silently stay frozen)"));
            }
            if file.spec.kind != spec.kind {
                return Err(Error::input(format!(
                    "{} holds a {:?} adapter but model.tuning.mode is {:?}",
                    dir.display(),
                    file.spec.kind,
                    cfg.model.tuning.mode
                ))
                .at("model.tuning.mode")
                .hint("set the mode the adapter was trained with"));
            }
        }
        None => {
            tch::manual_seed(seed::torch_seed(seed::adapter_seed(cfg.run.seed)));
            let modules = model.attach_adapters(spec)?;
            tracing::info!(
                "{:?} adapters (r {}, alpha {}) on {} linear modules",
                spec.kind,
                spec.r,
                spec.alpha,
                modules.len()
            );
        }
    }
    Ok(model)
}

/// The adapters `model.tuning` asks for (`None` for full tuning).
pub fn adapter_spec(cfg: &Config) -> Option<AdapterSpec> {
    let t = &cfg.model.tuning;
    let kind = match t.mode {
        TuningMode::Full => return None,
        TuningMode::Lora => AdapterKind::Lora,
        TuningMode::Dora => AdapterKind::Dora,
    };
    let a = &t.adapter;
    let targets = if a.target_modules.iter().any(|m| m == "all-linear") {
        Targets::AllLinear
    } else {
        Targets::Modules(a.target_modules.clone())
    };
    Some(AdapterSpec {
        kind,
        r: i64::from(a.r),
        alpha: a.alpha,
        dropout: a.dropout,
        targets,
        skip: t.freeze.clone(),
        modules_to_save: a.modules_to_save.clone(),
    })
}

/// The optimizer over the model's trainable parameters: the adapters when attached (every base
/// parameter is frozen), else every parameter outside the frozen modules; plus the coordinate
/// offsets when `model.coord_offsets` is on (which freezes the embedding and head rows).
fn build_optimizer(cfg: &Config, model: &Qwen3VL, total_steps: u64) -> Result<AdamW> {
    let offsets = model.coord_offset_parameters().into_iter().filter(|(_, t, _)| t.requires_grad());
    let offsets: Vec<(String, Tensor)> = offsets.map(|(n, t, _)| (n, t)).collect();
    if model.adapter_spec().is_some() {
        let params = model.adapter_parameters()?.into_iter().map(|(n, t, _)| (n, t));
        return AdamW::new(params.chain(offsets), &cfg.optim, &[], total_steps);
    }
    let frozen = &cfg.model.tuning.freeze;
    let mut params = Vec::new();
    for (name, t, group) in model.named_parameters()? {
        if frozen.contains(&group) {
            let _ = t.set_requires_grad(false);
        } else if !t.requires_grad() {
            // Frozen by the coordinate-offset adapter (embedding and head rows).
            continue;
        }
        params.push((name, t));
    }
    AdamW::new(params.into_iter().chain(offsets), &cfg.optim, frozen, total_steps)
}

/// Coordinate bins (`<|coord_0|>` … `<|coord_999|>`).
const COORD_BINS: i64 = 1000;

fn coord_ids(session: &Session) -> CoordIds {
    CoordIds::new(session.model_dir.vocab().first_id())
}

/// How training uses the CPU: `plan`, else `COORDEXP_CPU_WORKERS` (default 1) and
/// `COORDEXP_CPU_THREADS` (default every core). A machine shared with other jobs runs small
/// models faster with fewer threads than cores: an intra-op thread that loses its core stalls
/// every op. On CUDA: one worker, one thread.
fn cpu_plan(cfg: &Config, plan: Option<CpuPlan>) -> Result<CpuPlan> {
    if cfg.model.device != "cpu" {
        return Ok(CpuPlan { workers: 1, threads: 1 });
    }
    Ok(match plan {
        Some(p) => CpuPlan { workers: p.workers.max(1), threads: p.threads.max(1) },
        None => CpuPlan {
            workers: env_count("COORDEXP_CPU_WORKERS")?.unwrap_or(1),
            threads: env_count("COORDEXP_CPU_THREADS")?.unwrap_or_else(cores),
        },
    })
}

/// A multi-process launch this trainer can run: on CPU (Gloo) or one GPU per rank (NCCL),
/// accumulation windows that split evenly over the ranks (channel B's packs, whose number the
/// rollouts decide, need not: a rank without one contributes zeros), no wall-clock deadline
/// (each rank's clock would re-fit the schedule differently).
fn check_distributable(cfg: &Config, launch: &Launch, opts: &TrainOptions) -> Result<()> {
    let world = launch.world as u32;
    match cfg.model.device.as_str() {
        "cpu" => {}
        "cuda" if coordexp_dist::nccl_available() => {}
        "cuda" => {
            return Err(Error::input(format!(
                "multi-process training (WORLD_SIZE={world}) on GPUs needs NCCL, and this coordexp was built without it"
            ))
            .at("model.device")
            .hint("build against a CUDA torch wheel with the CUDA headers of scripts/requirements-extra.txt (scripts/setup.sh installs them), or set model.device: cpu"));
        }
        other => {
            return Err(Error::input(format!(
                "multi-process training (WORLD_SIZE={world}) puts each rank on the GPU of its LOCAL_RANK; model.device is {other}"
            ))
            .at("model.device")
            .hint("set model.device: cuda (one GPU per rank) or cpu; choose the GPUs with CUDA_VISIBLE_DEVICES"));
        }
    }
    let window = cfg.train.accumulation_steps().max(1);
    if !window.is_multiple_of(world) {
        return Err(Error::input(format!(
            "a window of {window} micro-batches does not split over WORLD_SIZE={world} ranks"
        ))
        .at("train.accumulation")
        .hint("set train.accumulation (or train.effective_batch_size / train.micro_batch) to a multiple of the number of processes"));
    }
    if opts.deadline.is_some() {
        return Err(Error::input(
            "a time budget (deadline) cannot be shared by several processes: each would re-fit the schedule to its own clock",
        )
        .hint("give the multi-process run train.max_steps instead"));
    }
    Ok(())
}

/// A rank's CPU plan: one worker, the cores of this machine shared by its ranks
/// (`COORDEXP_CPU_THREADS` overrides).
fn rank_cpu_plan(cfg: &Config, launch: &Launch) -> Result<CpuPlan> {
    if cfg.model.device != "cpu" {
        return Ok(CpuPlan { workers: 1, threads: 1 });
    }
    let local = match std::env::var("LOCAL_WORLD_SIZE") {
        Ok(v) => v.trim().parse::<usize>().unwrap_or(launch.world),
        Err(_) => launch.world,
    };
    Ok(CpuPlan {
        workers: 1,
        threads: env_count("COORDEXP_CPU_THREADS")?
            .unwrap_or_else(|| (cores() / local.max(1)).max(1)),
    })
}

/// Features the config may name that this trainer does not implement yet: refused up front.
fn check_supported(cfg: &Config) -> Result<()> {
    if cfg.train.max_steps == 0 {
        return Err(Error::input("train.max_steps is 0: nothing to train")
            .at("train.max_steps")
            .hint("set a positive number of optimizer steps"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_stage2;
