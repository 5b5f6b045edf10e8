//! Gradients of an accumulation window of any step kind, computed by one or more CPU workers.
//!
//! The micro-batches of a window run at the same time, one worker thread each (worker 0 is the
//! calling thread with the trained model itself), and their gradients are added in micro-batch
//! order.
//!
//! Why replicas instead of one shared model: a tch tensor may move between threads but may not
//! be shared by them. A replica is a second module tree whose parameters alias the trained
//! model's storage (`set_data`), so the optimizer's in-place updates reach every replica
//! without a copy, while each replica has autograd leaves of its own: gradients come back as
//! values (`run_backward`), never racing into a shared `.grad`.
//!
//! Why the worker count never changes a loss: every micro-batch is computed by the same ops
//! whichever worker runs it, and the window gradient is `((g0 + g1) + g2) …` in micro-batch
//! order — the additions that one `.backward()` per micro-batch performs on `.grad`. Tests
//! check that 1 and 2 workers give bit-identical losses.
//!
//! Why workers at all: on a CPU a model this small is a stream of small ops; two intra-op
//! threads split each op and wait for each other, two workers each run whole micro-batches.

use crate::objective::LossTerms;
use crate::optim::AdamW;
use coordexp_core::config::schema::Config;
use coordexp_core::{Error, Result};
use coordexp_model::ParamInit;
use coordexp_model::grads::Grads;
use coordexp_model::model::Qwen3VL;
use serde::Serialize;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// One micro-batch of any step kind: everything a worker needs to compute its share of the
/// window loss. The trainer's window machinery (workers, gradient summation, the non-finite
/// check) knows micro-batches only through this trait.
pub trait Micro: Send {
    /// The per-worker loss state (objective tensors), built once per worker.
    type Objective;
    /// The window's denominators: the micro-batches' counts summed.
    type Counts: Copy + Send + Sync;

    /// Forward pass and this micro-batch's share of the loss of the window counted `window`.
    /// Pieces of the loss too large to keep until the backward pass (chunked logits) may be
    /// backwarded at once into `grads`; the returned total then carries only the rest of the
    /// gradient (its value is still the whole loss).
    fn loss(
        &self,
        model: &Qwen3VL,
        objective: &Self::Objective,
        window: &Self::Counts,
        grads: &mut Grads<'_>,
    ) -> Result<MicroLoss>;
}

/// A micro-batch's differentiable share of the window loss and its metric terms.
pub struct MicroLoss {
    /// Scalar (f32); the sum over a window's micro-batches is the window loss. Its gradient plus
    /// what the micro-batch put into [`Grads`] is the micro-batch's gradient.
    pub total: Tensor,
    pub terms: LossTerms,
}

/// How training uses the CPU: `workers` data-parallel threads, each running libtorch with
/// `threads` intra-op threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CpuPlan {
    pub workers: usize,
    pub threads: usize,
}

impl std::fmt::Display for CpuPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |n: usize| if n == 1 { "" } else { "s" };
        write!(
            f,
            "{} worker{} × {} thread{}",
            self.workers,
            s(self.workers),
            self.threads,
            s(self.threads)
        )
    }
}

/// One micro-batch's loss value, metric terms and gradients (in [`AdamW::params`] order).
pub struct MicroOut {
    pub value: f64,
    pub terms: LossTerms,
    /// Empty when `value` is not finite (nothing is differentiated then).
    pub grads: Vec<Option<Tensor>>,
}

/// A model tree whose parameters alias the trained model's, with its own objective state.
struct Replica<O> {
    model: Qwen3VL,
    objective: O,
    /// Its optimized parameters, in [`AdamW::params`] order.
    params: Vec<Tensor>,
}

/// The workers of a training run: the trained model (worker 0) and `plan.workers − 1` replicas,
/// each with objective state `O`.
pub struct Workers<O> {
    /// The trained model's optimized parameters, in [`AdamW::params`] order.
    params: Vec<Tensor>,
    replicas: Vec<Replica<O>>,
    threads: usize,
}

impl<O: Send> Workers<O> {
    /// Workers for `model` as optimized by `optimizer`, each replica with the objective state
    /// `objective(device)` builds. More workers than micro-batches per window would idle, so
    /// their number is capped at the window's micro-batch count.
    pub fn new(
        cfg: &Config,
        model: &Qwen3VL,
        optimizer: &AdamW,
        plan: CpuPlan,
        objective: impl Fn(Device) -> Result<O>,
    ) -> Result<Workers<O>> {
        let params: Vec<Tensor> = optimizer.params().map(|(_, t)| t.shallow_clone()).collect();
        if params.is_empty() {
            return Err(Error::input("every parameter is frozen: nothing to train")
                .at("model.tuning.freeze")
                .hint("leave at least one module out of model.tuning.freeze"));
        }
        let mut count = plan.workers.clamp(1, cfg.train.accumulation_steps().max(1) as usize);
        // Adapter dropout draws from libtorch's one CPU generator: workers would interleave
        // their draws in a different order each run, so a run with dropout trains on one.
        if count > 1 && model.adapter_spec().is_some_and(|s| s.dropout > 0.0) {
            tracing::warn!(
                "adapter dropout > 0: training with 1 worker instead of {count} (reproducible masks)"
            );
            count = 1;
        }
        let sources: HashMap<String, Tensor> =
            model.all_parameters()?.into_iter().map(|(n, t, _)| (n, t)).collect();
        let trainable: Vec<&str> = optimizer.params().map(|(n, _)| n).collect();
        let mut replicas = Vec::with_capacity(count - 1);
        for _ in 1..count {
            let mut replica =
                Qwen3VL::new(model.config(), model.kind(), model.device(), ParamInit::Zeros);
            if let Some(spec) = model.adapter_spec() {
                // Same modules as the model's (their values are aliased below).
                let spec = spec.clone();
                replica.attach_adapters(&spec)?;
            }
            if let Some(o) = model.coord_offset() {
                replica.attach_coord_offsets(o.first_id, o.n, o.head.is_none())?;
            }
            let mut own: HashMap<String, Tensor> = HashMap::new();
            for (name, mut t, _) in replica.all_parameters()? {
                let src = sources.get(&name).ok_or_else(|| {
                    Error::runtime(format!("the model has no parameter `{name}` to replicate"))
                })?;
                tch::no_grad(|| t.set_data(src));
                let _ = t.set_requires_grad(trainable.contains(&name.as_str()));
                own.insert(name, t);
            }
            let params = trainable
                .iter()
                .map(|name| {
                    own.remove(*name).ok_or_else(|| {
                        Error::runtime(format!("the replica has no parameter `{name}`"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            replicas.push(Replica {
                model: replica,
                objective: objective(model.device())?,
                params,
            });
        }
        Ok(Workers { params, replicas, threads: plan.threads.max(1) })
    }

    /// Loss, terms and gradients of every micro-batch of a window, in micro-batch order.
    /// Micro-batch `i` runs on worker `i mod workers`; worker 0 is `model` with `objective`.
    pub fn run<M: Micro<Objective = O>>(
        &mut self,
        micro: Vec<M>,
        window: &M::Counts,
        model: &Qwen3VL,
        objective: &O,
    ) -> Result<Vec<MicroOut>> {
        let n = self.replicas.len() + 1;
        let mut lanes: Vec<Vec<(usize, M)>> = (0..n).map(|_| Vec::new()).collect();
        for (i, mb) in micro.into_iter().enumerate() {
            lanes[i % n].push((i, mb));
        }
        let mut lanes = lanes.into_iter();
        let own = lanes.next().unwrap_or_default();
        let threads = self.threads as i32;
        let window = *window;
        let params = &self.params;
        let mut done = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .replicas
                .iter_mut()
                .zip(lanes)
                .filter(|(_, lane)| !lane.is_empty())
                .map(|(r, lane)| {
                    s.spawn(move || {
                        // The intra-op thread count is per thread (OpenMP), so each worker sets it.
                        tch::set_num_threads(threads);
                        run_lane(lane, &r.model, &r.objective, &r.params, &window)
                    })
                })
                .collect();
            let mut done = run_lane(own, model, objective, params, &window)?;
            for h in handles {
                done.extend(
                    h.join().map_err(|_| Error::runtime("a training worker thread panicked"))??,
                );
            }
            Ok::<_, Error>(done)
        })?;
        done.sort_by_key(|(i, _)| *i);
        Ok(done.into_iter().map(|(_, out)| out).collect())
    }
}

fn run_lane<M: Micro>(
    lane: Vec<(usize, M)>,
    model: &Qwen3VL,
    objective: &M::Objective,
    params: &[Tensor],
    window: &M::Counts,
) -> Result<Vec<(usize, MicroOut)>> {
    lane.into_iter()
        .map(|(i, mb)| Ok((i, grads_of(&mb, model, objective, params, window)?)))
        .collect()
}

/// Forward, this micro-batch's share of the window loss, and its gradients w.r.t. `params`.
fn grads_of<M: Micro>(
    mb: &M,
    model: &Qwen3VL,
    objective: &M::Objective,
    params: &[Tensor],
    window: &M::Counts,
) -> Result<MicroOut> {
    // Adapter dropout is on for training passes only (evaluation and rollouts run without).
    model.set_adapter_training(true);
    let mut early = Grads::new(params);
    let loss = mb.loss(model, objective, window, &mut early);
    model.set_adapter_training(false);
    let loss = loss?;
    let value = scalar(&loss.total)?;
    // A micro-batch with nothing to differentiate (every active term empty) contributes no
    // gradient rather than failing the backward pass.
    let grads = if !value.is_finite() {
        Vec::new()
    } else if !loss.total.requires_grad() {
        early.into_vec()
    } else {
        let rest = Tensor::f_run_backward(&[&loss.total], params, false, false)
            .map_err(|e| Error::runtime(format!("backward pass: {e}")))?;
        early
            .into_vec()
            .into_iter()
            .zip(rest)
            .map(|(e, r)| match (e, r.defined()) {
                (Some(e), true) => Some(e + r),
                (Some(e), false) => Some(e),
                (None, true) => Some(r),
                (None, false) => None,
            })
            .collect()
    };
    Ok(MicroOut { value, terms: loss.terms, grads })
}

/// The window gradient: per parameter, the micro-batch gradients added in order (the sums
/// sequential `.backward()` calls leave in `.grad`).
pub fn sum_in_order(outs: &mut [MicroOut]) -> Vec<Option<Tensor>> {
    let Some(first) = outs.first_mut() else { return Vec::new() };
    let mut total = std::mem::take(&mut first.grads);
    for out in outs.iter_mut().skip(1) {
        for (acc, g) in total.iter_mut().zip(std::mem::take(&mut out.grads)) {
            match (acc.as_mut(), g) {
                (Some(a), Some(g)) => {
                    let _ = a.g_add_(&g);
                }
                (None, Some(g)) => *acc = Some(g),
                (_, None) => {}
            }
        }
    }
    total
}

/// The scalar value of a loss tensor (one host synchronisation).
pub fn scalar(t: &Tensor) -> Result<f64> {
    t.to_kind(Kind::Double)
        .f_double_value(&[])
        .map_err(|e| Error::runtime(format!("reading the loss: {e}")))
}
