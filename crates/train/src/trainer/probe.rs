//! Measuring how fast a config trains on this machine, for the demo's time budget.
//!
//! Why measure: on a machine shared with other jobs an intra-op thread that loses its core
//! stalls every op of a small model, and one thread can be several times faster than two; on
//! an idle machine workers beat intra-op threads for small models.

use coordexp_core::config::Loaded;
use coordexp_core::{Result, seed};
use coordexp_rollout::Session;
use coordexp_rollout::session::{cores, required_path};
use serde::Serialize;
use std::time::Instant;

use super::epochs::{Cursor, Epochs};
use super::step::{StepTools, plan_for};
use super::workers::CpuPlan;
use super::{StepKinds, build_optimizer, check_supported, coord_ids, load_trained_model};

/// The measured speed of a config on this machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    /// The fastest plan tried.
    pub cpu: CpuPlan,
    pub steps_per_minute: f64,
    /// Steps per minute of every plan tried, in order.
    pub tried: Vec<(CpuPlan, f64)>,
}

/// Measure optimizer steps per minute of this config with one thread, with one worker using
/// every core, and — when a window has several micro-batches — with one worker per core:
/// `steps` steps of the config's own plan each (stage 2 alternates its channels, rollouts
/// included) on a throwaway copy of the model and the real training data (the first step of
/// each, a warm-up, is not timed). Nothing is written.
pub fn probe(loaded: &Loaded, steps: u64) -> Result<Probe> {
    let cores = cores();
    let one = CpuPlan { workers: 1, threads: 1 };
    let mut plans = vec![one];
    if cores > 1 {
        plans.push(CpuPlan { workers: 1, threads: cores });
        if loaded.config.train.accumulation_steps() > 1 {
            plans.push(CpuPlan { workers: cores, threads: 1 });
        }
    }
    probe_plans(loaded, steps, &plans)
}

/// [`probe`] with the CPU plans to try given (e.g. only the one another probe chose).
pub fn probe_plans(loaded: &Loaded, steps: u64, plans: &[CpuPlan]) -> Result<Probe> {
    let cfg = &loaded.config;
    check_supported(cfg)?;
    let one = CpuPlan { workers: 1, threads: 1 };
    let session = Session::open(cfg, None, Some(1))?;
    let train = required_path(&cfg.data.train, "data.train", "a JSONL file")?;
    let split = session.load_split("train", &train, cfg.data.train_limit)?;
    let mut epochs = Epochs::new(&split, &session.encoder, cfg)?;
    let model = load_trained_model(cfg, &session, &session.model_src, false)?;
    let mut optimizer = build_optimizer(cfg, &model, cfg.train.max_steps)?;
    let coord = coord_ids(&session);
    let step_plan = plan_for(cfg);
    let mut cursor = Cursor::default();
    let mut step = 0;
    let mut tried = Vec::new();
    for &plan in plans {
        tch::set_num_threads(plan.threads as i32);
        let mut kinds = StepKinds::new(cfg, &session, &model, &optimizer, plan, coord, None)?;
        let mut tools = StepTools {
            cfg,
            model: &model,
            optimizer: &mut optimizer,
            vision: session.vision(&model),
            device: session.device,
            split: &split,
            dist: None,
        };
        let mut one_step = |step: u64| {
            tch::manual_seed(seed::torch_seed(seed::step_seed(cfg.run.seed, step)));
            let kind = step_plan.kind(step);
            kinds.run(kind, &mut tools, &mut epochs, &session, step, &mut cursor).map(|_| ())
        };
        step += 1;
        one_step(step)?;
        let start = Instant::now();
        for _ in 1..steps.max(2) {
            step += 1;
            one_step(step)?;
        }
        let per_step = start.elapsed().as_secs_f64() / (steps.max(2) - 1) as f64;
        tried.push((plan, 60.0 / per_step.max(1e-9)));
    }
    let (cpu, steps_per_minute) =
        tried.iter().copied().fold((one, 0.0), |best, t| if t.1 > best.1 { t } else { best });
    Ok(Probe { cpu, steps_per_minute, tried })
}
