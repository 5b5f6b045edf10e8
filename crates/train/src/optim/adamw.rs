//! AdamW over parameter groups, with global gradient-norm clipping and resumable state.
//!
//! The update is torch's `AdamW` (single-tensor path, no amsgrad), op for op, so that runs can be
//! compared with the Python peers: for each parameter with a gradient,
//!
//! ```text
//! θ ← θ · (1 − lr·wd);  m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²
//! θ ← θ − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
//! ```
//!
//! with `lr` = the group's base rate × the schedule factor. Clipping follows
//! `torch.nn.utils.clip_grad_norm_`: the global 2-norm over all gradients, every gradient scaled
//! by `min(1, clip / (norm + 1e-6))`.
//!
//! Low-precision parameters (bf16, f16) are trained through f32 master weights: the moments and
//! a master copy live in f32, the update is applied to the master with the gradient cast to f32,
//! and the parameter is the master rounded to its dtype after every step. Why: a bf16 weight
//! cannot absorb an update smaller than 2⁻⁸ of itself, so small learning rates would silently
//! stop training. The masters are saved with the moments, so a resume continues exactly.

use super::groups::{GroupKey, group_of};
use super::schedule::LrSchedule;
use coordexp_core::config::schema::{Module, Optim};
use coordexp_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// File names of the optimizer state inside a checkpoint directory.
pub const STATE_TENSORS: &str = "optimizer.safetensors";
pub const STATE_META: &str = "optimizer.json";
const STATE_FORMAT: &str = "coordexp-adamw/1";

struct Param {
    name: String,
    value: Tensor,
    /// The f32 master of a low-precision `value` (see the module docs).
    master: Option<Tensor>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

impl Param {
    fn new(name: String, value: Tensor) -> Param {
        let master = (value.kind() != Kind::Float && value.kind() != Kind::Double)
            .then(|| value.detach().to_kind(Kind::Float));
        let like = master.as_ref().unwrap_or(&value);
        let exp_avg = like.zeros_like().detach();
        let exp_avg_sq = like.zeros_like().detach();
        Param { name, value, master, exp_avg, exp_avg_sq }
    }
}

struct Group {
    key: GroupKey,
    lr: f64,
    weight_decay: f64,
    params: Vec<Param>,
}

/// What a group holds (for logs and the run manifest).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupSummary {
    pub module: Module,
    pub decay: bool,
    /// Base learning rate (before the schedule).
    pub lr: f64,
    pub weight_decay: f64,
    pub tensors: usize,
    pub elements: i64,
}

/// Parameters left out of the optimizer, by reason (reported, never silent).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Excluded {
    /// In a module listed in `model.tuning.freeze`.
    pub frozen: Vec<String>,
    /// Storage shared with an earlier parameter (tied weights), updated once through it:
    /// `(name, name of the parameter that owns the storage)`.
    pub shared: Vec<(String, String)>,
}

/// The outcome of one optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Steps taken, this one included.
    pub step: u64,
    /// Schedule factor applied to every group's base rate.
    pub lr_factor: f64,
    /// Global gradient 2-norm before clipping.
    pub grad_norm: f64,
    /// True when clipping scaled the gradients down.
    pub clipped: bool,
    /// Parameters skipped because no gradient reached them (counted, like torch skips them).
    pub without_grad: usize,
}

/// AdamW with one group per (module, decay) pair.
pub struct AdamW {
    groups: Vec<Group>,
    betas: (f64, f64),
    eps: f64,
    clip: f64,
    schedule: LrSchedule,
    steps: u64,
    excluded: Excluded,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    format: String,
    steps: u64,
    /// Group name (`language`, `language.no_decay`, …) → its parameters, in order.
    groups: BTreeMap<String, Vec<String>>,
}

fn group_name(key: GroupKey) -> String {
    let m = match key.module {
        Module::Vision => "vision",
        Module::Merger => "merger",
        Module::Language => "language",
        Module::CoordRows => "coord_rows",
    };
    if key.decay { m.to_string() } else { format!("{m}.no_decay") }
}

impl AdamW {
    /// Build the groups from named trainable parameters (HF names; see [`super::groups`]).
    ///
    /// Parameters of `frozen` modules are excluded (the caller also turns their gradients off);
    /// a parameter sharing storage with an earlier one is excluded so it is updated once.
    pub fn new(
        params: impl IntoIterator<Item = (String, Tensor)>,
        cfg: &Optim,
        frozen: &[Module],
        max_steps: u64,
    ) -> Result<AdamW> {
        let mut by_key: BTreeMap<u8, (GroupKey, Vec<Param>)> = BTreeMap::new();
        let mut excluded = Excluded::default();
        let mut owners: Vec<(usize, i64, String)> = Vec::new();
        for (name, value) in params {
            let key = group_of(&name)?;
            if frozen.contains(&key.module) {
                excluded.frozen.push(name);
                continue;
            }
            let ptr = value.data_ptr() as usize;
            if let Some((_, _, owner)) =
                owners.iter().find(|(p, n, _)| *p == ptr && *n == value.numel() as i64)
            {
                excluded.shared.push((name, owner.clone()));
                continue;
            }
            owners.push((ptr, value.numel() as i64, name.clone()));
            by_key
                .entry(key.rank())
                .or_insert_with(|| (key, Vec::new()))
                .1
                .push(Param::new(name, value));
        }
        let groups = by_key
            .into_values()
            .map(|(key, params)| Group {
                key,
                lr: match key.module {
                    Module::Vision => cfg.lr.vision,
                    Module::Merger => cfg.lr.merger,
                    Module::Language => cfg.lr.language,
                    Module::CoordRows => cfg.lr.coord_rows,
                },
                weight_decay: if key.decay { cfg.weight_decay } else { 0.0 },
                params,
            })
            .collect();
        Ok(AdamW {
            groups,
            betas: (cfg.betas[0], cfg.betas[1]),
            eps: cfg.eps,
            clip: cfg.grad_clip,
            schedule: LrSchedule::new(cfg.schedule, cfg.warmup, max_steps, cfg.min_lr),
            steps: 0,
            excluded,
        })
    }

    /// One entry per non-empty group.
    pub fn summary(&self) -> Vec<GroupSummary> {
        self.groups
            .iter()
            .map(|g| GroupSummary {
                module: g.key.module,
                decay: g.key.decay,
                lr: g.lr,
                weight_decay: g.weight_decay,
                tensors: g.params.len(),
                elements: g.params.iter().map(|p| p.value.numel() as i64).sum(),
            })
            .collect()
    }

    pub fn excluded(&self) -> &Excluded {
        &self.excluded
    }

    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// End the schedule after `total` steps instead (a time budget re-fitted to the pace of
    /// the machine); the warmup keeps its length.
    pub fn refit_schedule(&mut self, total: u64) {
        self.schedule.total_steps = total.max(1);
    }

    /// Continue a schedule of `total` steps whose warmup is `warmup_steps` long (a resumed
    /// run restores the schedule its checkpoint was on, a deadline's re-fit included).
    pub fn restore_schedule(&mut self, total: u64, warmup_steps: u64) {
        self.schedule.total_steps = total.max(1);
        self.schedule.warmup_steps = warmup_steps;
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The rate of `module`'s groups for the next step (for logging).
    pub fn next_lr(&self, module: Module) -> Option<f64> {
        let s = &self.schedule;
        self.groups.iter().find(|g| g.key.module == module).map(|g| s.rate(g.lr, self.steps))
    }

    /// Zero every gradient (kept allocated; torch's `set_to_none=False`).
    pub fn zero_grad(&mut self) {
        for p in self.groups.iter_mut().flat_map(|g| g.params.iter_mut()) {
            p.value.zero_grad();
        }
    }

    /// The optimized parameters (names and tensors) in the order [`AdamW::step_with`] takes
    /// their gradients.
    pub fn params(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.groups.iter().flat_map(|g| g.params.iter()).map(|p| (p.name.as_str(), &p.value))
    }

    /// Clip, update every parameter that has a gradient (`.grad`), advance the schedule.
    ///
    /// A non-finite gradient norm is an error and leaves the parameters untouched.
    pub fn step(&mut self) -> Result<StepStats> {
        let grads =
            self.params().map(|(_, p)| Some(p.grad()).filter(Tensor::defined)).collect::<Vec<_>>();
        self.step_with(grads)
    }

    /// [`AdamW::step`] with explicit gradients, one per parameter in [`AdamW::params`] order
    /// (`None`: no gradient reached it). The gradients are clipped in place.
    pub fn step_with(&mut self, grads: Vec<Option<Tensor>>) -> Result<StepStats> {
        let expected = self.params().count();
        if grads.len() != expected {
            return Err(Error::runtime(format!(
                "{} gradients for {expected} optimized parameters",
                grads.len()
            )));
        }
        let lr_factor = self.schedule.factor(self.steps);
        let step = self.steps + 1;
        let without_grad = grads.iter().filter(|g| g.is_none()).count();
        let present: Vec<&Tensor> = grads.iter().flatten().collect();
        let (grad_norm, clipped) = tch::no_grad(|| self.clip_grads(&present))?;
        if !grad_norm.is_finite() {
            return Err(Error::runtime(format!(
                "the gradient norm is {grad_norm} at optimizer step {step}"
            ))
            .hint("lower the learning rates, check the data of this step, or use bf16/f32 instead of f16"));
        }
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powf(step as f64);
        let bc2_sqrt = (1.0 - b2.powf(step as f64)).sqrt();
        let eps = self.eps;
        let mut grads = grads.into_iter();
        tch::no_grad(|| {
            let schedule = self.schedule;
            let completed = self.steps;
            for g in &mut self.groups {
                let lr = schedule.rate(g.lr, completed);
                let step_size = lr / bc1;
                for p in &mut g.params {
                    let Some(Some(grad)) = grads.next() else { continue };
                    let grad = if p.master.is_some() { grad.to_kind(Kind::Float) } else { grad };
                    let mut theta = p.master.as_ref().unwrap_or(&p.value).shallow_clone();
                    if g.weight_decay != 0.0 {
                        let _ = theta.g_mul_scalar_(1.0 - lr * g.weight_decay);
                    }
                    let _ = p.exp_avg.lerp_(&grad, 1.0 - b1);
                    let _ = p.exp_avg_sq.g_mul_scalar_(b2);
                    let _ = p.exp_avg_sq.addcmul_(&(&grad * (1.0 - b2)), &grad);
                    let mut denom = p.exp_avg_sq.sqrt() / bc2_sqrt;
                    let _ = denom.g_add_scalar_(eps);
                    let _ = theta.addcdiv_(&(&p.exp_avg * -step_size), &denom);
                    if let Some(master) = &p.master {
                        p.value.copy_(master);
                    }
                }
            }
        });
        self.steps = step;
        Ok(StepStats { step, lr_factor, grad_norm, clipped, without_grad })
    }

    /// Global 2-norm of `grads`, scaling them in place when clipping is on.
    fn clip_grads(&self, grads: &[&Tensor]) -> Result<(f64, bool)> {
        let Some(first) = grads.first() else { return Ok((0.0, false)) };
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm().to_kind(Kind::Float)).collect();
        let total = Tensor::stack(&norms, 0).norm();
        let value = total
            .f_double_value(&[])
            .map_err(|e| Error::runtime(format!("reading the gradient norm: {e}")))?;
        if self.clip <= 0.0 || !value.is_finite() {
            return Ok((value, false));
        }
        let coef = (Tensor::full([], self.clip, (Kind::Float, first.device())) / (total + 1e-6))
            .clamp_max(1.0);
        for g in grads {
            let mut g = g.shallow_clone();
            let _ = g.g_mul_(&coef);
        }
        Ok((value, value > self.clip))
    }

    /// Write the moments (`optimizer.safetensors`) and the step count and group layout
    /// (`optimizer.json`) into `dir`. The learning rates and the schedule come from the config
    /// on resume; the step count places the schedule.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        let mut groups = BTreeMap::new();
        for g in &self.groups {
            let mut names = Vec::new();
            for p in &g.params {
                tensors.push((format!("exp_avg.{}", p.name), p.exp_avg.to_device(Device::Cpu)));
                tensors
                    .push((format!("exp_avg_sq.{}", p.name), p.exp_avg_sq.to_device(Device::Cpu)));
                if let Some(m) = &p.master {
                    tensors.push((format!("master.{}", p.name), m.to_device(Device::Cpu)));
                }
                names.push(p.name.clone());
            }
            groups.insert(group_name(g.key), names);
        }
        let path = dir.join(STATE_TENSORS);
        Tensor::write_safetensors(&tensors, &path).map_err(|e| {
            Error::runtime(format!("cannot write the optimizer state: {e}"))
                .at(path.display().to_string())
        })?;
        let meta = Meta { format: STATE_FORMAT.into(), steps: self.steps, groups };
        let text = serde_json::to_string_pretty(&meta)
            .map_err(|e| Error::runtime(format!("cannot encode the optimizer state: {e}")))?;
        let path = dir.join(STATE_META);
        std::fs::write(&path, text).map_err(|e| Error::io("write", &path, &e))
    }

    /// Restore the state saved by [`AdamW::save`] into an optimizer built over the same
    /// parameters (same names, groups and shapes), for resuming.
    pub fn load(&mut self, dir: &Path) -> Result<()> {
        let hint = "resume with the same model, tuning.freeze and parameter set as the run that wrote the checkpoint";
        let path = dir.join(STATE_META);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, &e))?;
        let meta: Meta = serde_json::from_str(&text).map_err(|e| {
            Error::input(format!("invalid optimizer state: {e}")).at(path.display().to_string())
        })?;
        if meta.format != STATE_FORMAT {
            return Err(Error::input(format!(
                "optimizer state format `{}` is not `{STATE_FORMAT}`",
                meta.format
            ))
            .at(path.display().to_string()));
        }
        let ours: BTreeMap<String, Vec<String>> = self
            .groups
            .iter()
            .map(|g| (group_name(g.key), g.params.iter().map(|p| p.name.clone()).collect()))
            .collect();
        if ours != meta.groups {
            let diff = describe_layout_diff(&ours, &meta.groups);
            return Err(Error::input(format!(
                "the optimizer state does not match the model: {diff}"
            ))
            .at(path.display().to_string())
            .hint(hint));
        }
        let path = dir.join(STATE_TENSORS);
        let stored: BTreeMap<String, Tensor> = Tensor::read_safetensors(&path)
            .map_err(|e| {
                Error::input(format!("cannot read the optimizer state: {e}"))
                    .at(path.display().to_string())
            })?
            .into_iter()
            .collect();
        tch::no_grad(|| {
            for p in self.groups.iter_mut().flat_map(|g| g.params.iter_mut()) {
                let mut slots =
                    vec![("exp_avg", &mut p.exp_avg), ("exp_avg_sq", &mut p.exp_avg_sq)];
                if let Some(m) = p.master.as_mut() {
                    slots.push(("master", m));
                }
                for (prefix, slot) in slots {
                    let key = format!("{prefix}.{}", p.name);
                    let t = stored.get(&key).ok_or_else(|| {
                        Error::input(format!("the optimizer state lacks `{key}`"))
                            .at(path.display().to_string())
                            .hint(hint)
                    })?;
                    if t.size() != slot.size() {
                        return Err(Error::input(format!(
                            "`{key}` has shape {:?}, the parameter has {:?}",
                            t.size(),
                            slot.size()
                        ))
                        .at(path.display().to_string())
                        .hint(hint));
                    }
                    slot.copy_(t);
                }
                if let Some(m) = &p.master {
                    // The parameter as the interrupted run had it: its master, rounded.
                    p.value.copy_(m);
                }
            }
            Ok(())
        })?;
        self.steps = meta.steps;
        Ok(())
    }
}

/// The first difference between two group layouts, in words.
fn describe_layout_diff(
    ours: &BTreeMap<String, Vec<String>>,
    theirs: &BTreeMap<String, Vec<String>>,
) -> String {
    for (g, names) in ours {
        match theirs.get(g) {
            None => return format!("group `{g}` is not in the checkpoint"),
            Some(t) if t != names => {
                let missing = names.iter().find(|n| !t.contains(n));
                let extra = t.iter().find(|n| !names.contains(n));
                return match (missing, extra) {
                    (Some(m), _) => {
                        format!("parameter `{m}` (group `{g}`) is not in the checkpoint")
                    }
                    (None, Some(x)) => format!(
                        "the checkpoint has parameter `{x}` in group `{g}`, the model does not"
                    ),
                    (None, None) => format!("group `{g}` lists its parameters in another order"),
                };
            }
            Some(_) => {}
        }
    }
    match theirs.keys().find(|g| !ours.contains_key(*g)) {
        Some(g) => format!("the checkpoint has group `{g}`, the model does not"),
        None => "the group layouts differ".into(),
    }
}

#[cfg(test)]
mod tests;
