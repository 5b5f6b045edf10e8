//! Optimizer steps of any kind: which kind runs next ([`StepPlan`]) and the window machinery
//! every kind shares ([`optimize_window`]).
//!
//! A step kind (stage 1; stage 2's channels A and B) builds the micro-batches of
//! one accumulation window and hands them to [`optimize_window`], which runs them on the CPU
//! workers, stops on a non-finite loss naming the step and the samples, sums the gradients in
//! micro-batch order and takes the optimizer step. Nothing here knows what a micro-batch holds:
//! [`Micro`] is the whole contract.

use crate::objective::LossTerms;
use crate::optim::{AdamW, StepStats};
use coordexp_core::config::schema::{Config, Stage};
use coordexp_core::{Error, Result};
use coordexp_dist::Group;
use coordexp_model::model::Qwen3VL;
use coordexp_rollout::Split;
use coordexp_rollout::inputs::VisionInput;
use tch::{Device, Tensor};

use super::stage2::Stage2Plan;
use super::workers::{self, Micro, Workers};

/// The kinds of optimizer step the trainer can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Teacher-forced SFT on ground-truth answers.
    Stage1,
    /// Stage 2, channel A: teacher forcing on the ground truth with the stage-2 objective.
    ChannelA,
    /// Stage 2, channel B: the model's own rollouts, re-serialised as a clean prefix.
    ChannelB,
}

/// Decides the kind of every optimizer step (a pure function of the step number, so a resumed
/// run makes the same choices).
pub trait StepPlan {
    fn kind(&self, step: u64) -> StepKind;
}

/// Stage 1: every step is a stage-1 step.
pub struct Stage1Plan;

impl StepPlan for Stage1Plan {
    fn kind(&self, _step: u64) -> StepKind {
        StepKind::Stage1
    }
}

/// The step plan of a config's `train.stage`.
pub fn plan_for(cfg: &Config) -> Box<dyn StepPlan> {
    match cfg.train.stage {
        Stage::Stage1 => Box::new(Stage1Plan),
        Stage::Stage2 => Box::new(Stage2Plan { b_ratio: cfg.stage2.schedule.b_ratio }),
    }
}

/// What every step kind uses: the config, the trained model and its optimizer, how to feed
/// images, and the training split (to name samples in errors).
pub struct StepTools<'a> {
    pub cfg: &'a Config,
    pub model: &'a Qwen3VL,
    pub optimizer: &'a mut AdamW,
    pub vision: VisionInput<'a>,
    pub device: Device,
    pub split: &'a Split,
    /// The other ranks of a multi-process run: each rank computes its share of every window
    /// (micro-batch `i` on rank `i mod world`) and the shares are summed before the step.
    pub dist: Option<&'a Group>,
}

/// What one optimizer step did.
pub struct StepOutcome {
    /// The window loss (sum of the micro-batch shares).
    pub loss: f64,
    /// The window's metric terms (one entry per objective the step evaluated).
    pub terms: Vec<LossTerms>,
    pub stats: StepStats,
    pub tokens: u64,
    pub supervised: u64,
    pub samples: u64,
    /// Host-side counters of the step (summed over a log interval).
    pub counters: Vec<(String, f64)>,
    /// False when the step had nothing to train (every sample dropped): it has no loss and
    /// stays out of the interval's averages.
    pub trained: bool,
}

/// The result of [`optimize_window`].
pub struct WindowDone {
    pub loss: f64,
    /// The window's terms (the micro-batches' terms added).
    pub terms: LossTerms,
    pub stats: StepStats,
    /// The window's tokens and samples.
    pub tokens: u64,
    pub samples: u64,
}

impl WindowDone {
    /// The step's outcome: this window's loss, terms and update, and what it trained on
    /// (`supervised` targets).
    pub fn outcome(self, supervised: u64) -> StepOutcome {
        StepOutcome {
            loss: self.loss,
            terms: vec![self.terms],
            stats: self.stats,
            tokens: self.tokens,
            supervised,
            samples: self.samples,
            counters: Vec::new(),
            trained: true,
        }
    }
}

/// One accumulation window: the micro-batches this rank computes and what it knows of all.
///
/// In a multi-process run micro-batch `i` is computed by rank `i mod world`: `micro[i]` is
/// `Some` exactly on that rank (`None` elsewhere), while `counts`, `ids` and `tokens` cover
/// every micro-batch on every rank (the normalisation of a one-process window).
pub struct Window<M: Micro> {
    pub micro: Vec<Option<M>>,
    /// The window's denominators: every micro-batch's counts summed.
    pub counts: M::Counts,
    /// The dataset indices of each micro-batch (named when its loss is not finite).
    pub ids: Vec<Vec<u64>>,
    /// Tokens of every micro-batch.
    pub tokens: u64,
    /// The metric terms the objective reports for these micro-batches (a rank without
    /// micro-batches contributes zeros under these names).
    pub terms: &'static [&'static str],
}

/// Run the micro-batches of one window on the workers, check every loss is finite, sum the
/// gradients in micro-batch order and take optimizer step `step`.
///
/// In a multi-process run each rank runs its own micro-batches ([`Window`]) and the losses,
/// metric terms and gradients are summed over the ranks (c10d), so every rank takes the same
/// optimizer step. Because every micro-batch's share is divided by the whole window's counts,
/// the sum is the one-process window loss (up to the order of the additions).
pub fn optimize_window<M: Micro>(
    window: Window<M>,
    workers: &mut Workers<M::Objective>,
    objective: &M::Objective,
    tools: &mut StepTools<'_>,
    step: u64,
) -> Result<WindowDone>
where
    M::Objective: Send,
{
    let Window { micro, counts, ids: sample_ids, tokens, terms: names } = window;
    let sample_ids = sample_ids.as_slice();
    let samples = sample_ids.iter().map(|s| s.len() as u64).sum();
    let n = micro.len();
    let (rank, world) = tools.dist.map_or((0, 1), |g| (g.rank(), g.world()));
    let mut mine = Vec::new();
    let mut owned = Vec::new();
    for (i, m) in micro.into_iter().enumerate() {
        match (m, i % world == rank) {
            (Some(m), true) => {
                mine.push(i);
                owned.push(m);
            }
            (None, false) => {}
            (_, ours) => {
                return Err(Error::runtime(format!(
                    "micro-batch {i} of step {step} is {} on rank {rank} of {world}",
                    if ours { "missing" } else { "built" }
                ))
                .hint("a step kind must build exactly the micro-batches i with i mod world == rank (a bug)"));
            }
        }
    }
    let micro = owned;
    let mut outs = workers.run(micro, &counts, tools.model, objective)?;
    let mut values = vec![0.0; n];
    for (&i, out) in mine.iter().zip(&outs) {
        values[i] = out.value;
    }
    if let Some(g) = tools.dist {
        g.sum_f64(&mut values, &format!("loss sum, step {step}"))?;
    }
    for (value, ids) in values.iter().zip(sample_ids) {
        if !value.is_finite() {
            return Err(non_finite(*value, step, ids, tools.split));
        }
    }
    let loss = values.iter().sum();
    let mut grads = workers::sum_in_order(&mut outs);
    let mut outs = outs.into_iter();
    let mut terms = match outs.next() {
        Some(o) => o.terms,
        // A rank without micro-batches in this window (fewer packs than ranks).
        None if tools.dist.is_some() => LossTerms::zeros(names, tools.device),
        None => return Err(Error::runtime("an optimizer step without micro-batches")),
    };
    for o in outs {
        terms.accumulate(&o.terms)?;
    }
    if let Some(g) = tools.dist {
        grads = sum_over_ranks(g, grads, tools.optimizer, step)?;
        g.all_reduce_sum(
            std::slice::from_ref(terms.values()),
            &format!("metric terms, step {step}"),
        )?;
    }
    let stats = tools.optimizer.step_with(grads).map_err(|e| {
        let ids: Vec<u64> = sample_ids.concat();
        e.at(format!("optimizer step {step}, samples {}", describe_samples(&ids, tools.split)))
    })?;
    Ok(WindowDone { loss, terms, stats, tokens, samples })
}

/// The window gradient summed over the ranks. A parameter no micro-batch of any rank reached
/// stays without a gradient, as in a one-process run.
fn sum_over_ranks(
    g: &Group,
    grads: Vec<Option<Tensor>>,
    optimizer: &AdamW,
    step: u64,
) -> Result<Vec<Option<Tensor>>> {
    let params: Vec<&Tensor> = optimizer.params().map(|(_, t)| t).collect();
    let mut reached: Vec<f64> = params
        .iter()
        .enumerate()
        .map(|(i, _)| f64::from(u8::from(grads.get(i).is_some_and(Option::is_some))))
        .collect();
    g.sum_f64(&mut reached, &format!("gradient presence, step {step}"))?;
    let mut grads = grads;
    grads.resize_with(params.len(), || None);
    let dense: Vec<Tensor> =
        grads.into_iter().zip(&params).map(|(g, p)| g.unwrap_or_else(|| p.zeros_like())).collect();
    g.all_reduce_sum(&dense, &format!("gradient all-reduce, step {step}"))?;
    Ok(dense.into_iter().zip(reached).map(|(t, r)| (r > 0.0).then_some(t)).collect())
}

/// `#i (FILE:LINE)` for each dataset index.
pub fn describe_samples(ids: &[u64], split: &Split) -> String {
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
