//! LoRA and DoRA adapters on the model's linear modules, in PEFT's layout.
//!
//! An adapted linear computes, with `s = alpha / r` and `x'` = dropout(x) (dropout only while
//! [`Qwen3VL::set_adapter_training`] is on):
//!
//! ```text
//! LoRA:  y = x Wᵀ + b + s · x' Aᵀ Bᵀ
//! DoRA:  y = x Wᵀ + b + (g − 1) ⊙ x' Wᵀ + g ⊙ s · x' Aᵀ Bᵀ,   g = m / ‖W + s·B A‖_row
//! ```
//!
//! with `A` [r, in], `B` [out, r], the magnitude `m` [out], and the row norm computed without
//! gradient (as PEFT does: the norm is a constant of each step). A fresh adapter has `B = 0` and
//! `m = ‖W‖_row`, so it starts as the base model.
//!
//! Why outside the VarStore: the base weights stay a plain Hugging Face checkpoint (load, save,
//! weight sync and vocabulary tools see no adapter tensors), and the adapter tensors are saved
//! on their own in PEFT's files (`adapter_config.json`, `adapter_model.safetensors` with
//! `base_model.model.<module>.lora_A.weight` names), which `peft.PeftModel.from_pretrained`
//! loads on transformers' Qwen3-VL. [`Qwen3VL::save`] writes the merged weights when adapters
//! are attached, so a saved model always computes what the in-memory one computes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use coordexp_core::Error;
use serde_json::{Value, json};
use tch::{Kind, Tensor};

use crate::model::{ParamGroup, Qwen3VL, param_group};
use crate::weights;

/// PEFT's file names.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// The prefix PEFT puts before a module path in adapter tensor names.
const PEFT_PREFIX: &str = "base_model.model.";

/// LoRA or DoRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    Lora,
    Dora,
}

/// Which linear modules get an adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Every linear module except the output head (PEFT's and ms-swift's `all-linear`).
    AllLinear,
    /// Modules whose path equals a name or ends with `.name` (PEFT's rule for a list).
    Modules(Vec<String>),
}

impl Targets {
    fn matches(&self, module: &str) -> bool {
        match self {
            Targets::AllLinear => module != "lm_head",
            Targets::Modules(names) => names.iter().any(|t| {
                module == t || module.strip_suffix(t.as_str()).is_some_and(|p| p.ends_with('.'))
            }),
        }
    }
}

/// What to attach.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSpec {
    pub kind: AdapterKind,
    pub r: i64,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Targets,
    /// Modules of these groups get no adapter (the trainer's `model.tuning.freeze`).
    pub skip: Vec<ParamGroup>,
    /// Modules trained in full beside the adapters and saved with them (PEFT's
    /// `modules_to_save`): every module whose path ends with a name, and everything inside it.
    pub modules_to_save: Vec<String>,
}

impl AdapterSpec {
    fn scaling(&self) -> f64 {
        self.alpha / self.r as f64
    }
}

/// The adapter of one linear module.
#[derive(Debug)]
pub struct Adapter {
    /// [r, in]
    pub a: Tensor,
    /// [out, r]
    pub b: Tensor,
    /// DoRA's magnitude [out]; `None` for LoRA.
    pub magnitude: Option<Tensor>,
    pub scaling: f64,
    pub dropout: f64,
    /// The model's training switch (dropout applies only while it is on).
    training: Arc<AtomicBool>,
}

impl Adapter {
    /// The adapted output, given the base output `base = x Wᵀ + b`.
    pub(crate) fn apply(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        base: Tensor,
    ) -> Tensor {
        let dropped = self.dropout > 0.0 && self.training.load(Ordering::Relaxed);
        let xd = if dropped { x.dropout(self.dropout, true) } else { x.shallow_clone() };
        let lora = xd.linear::<Tensor>(&self.a, None).linear::<Tensor>(&self.b, None);
        let Some(m) = &self.magnitude else {
            return base + lora * self.scaling;
        };
        // DoRA: the base term of the decomposition sees the dropped-out input too.
        let base_plain = if dropped {
            xd.linear::<Tensor>(weight, None)
        } else {
            match bias {
                Some(b) => &base - b,
                None => base.shallow_clone(),
            }
        };
        let g = (m / self.row_norm(weight)).to_kind(base.kind());
        let delta = (&g - 1.0) * base_plain + &g * lora * self.scaling;
        base + delta
    }

    /// ‖W + s·B A‖ per output row, without gradient.
    fn row_norm(&self, weight: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let w = weight.to_kind(Kind::Float)
                + self.b.to_kind(Kind::Float).matmul(&self.a.to_kind(Kind::Float)) * self.scaling;
            w.norm_scalaropt_dim(2.0, [1i64].as_slice(), false).to_kind(weight.kind())
        })
    }

    /// The weight this adapter and `weight` compute together (for merging).
    pub fn merged(&self, weight: &Tensor) -> Tensor {
        merged_weight(weight, &self.a, &self.b, self.magnitude.as_ref(), self.scaling)
    }
}

/// `W + s·B A` (LoRA), scaled per row to the magnitude `m` (DoRA), computed in f32 and
/// returned in `W`'s dtype.
fn merged_weight(
    weight: &Tensor,
    a: &Tensor,
    b: &Tensor,
    magnitude: Option<&Tensor>,
    scaling: f64,
) -> Tensor {
    tch::no_grad(|| {
        let f = |t: &Tensor| t.to_kind(Kind::Float);
        let w = f(weight) + f(b).matmul(&f(a)) * scaling;
        let w = match magnitude {
            None => w,
            Some(m) => {
                let norm = w.norm_scalaropt_dim(2.0, [1i64].as_slice(), true);
                w * (f(m).unsqueeze(1) / norm)
            }
        };
        w.to_kind(weight.kind())
    })
}

/// One attached adapter as the model lists it (shallow clones of the module's tensors).
#[derive(Debug)]
pub(crate) struct AdapterEntry {
    pub module: String,
    pub a: Tensor,
    pub b: Tensor,
    pub magnitude: Option<Tensor>,
}

/// The adapters attached to a model: the spec, every adapted module and the parameters of the
/// modules saved in full (`modules_to_save`: the model's own variables, trainable, by name).
#[derive(Debug)]
pub(crate) struct Attached {
    pub spec: AdapterSpec,
    pub entries: Vec<AdapterEntry>,
    pub saved: Vec<(String, Tensor)>,
}

/// True when a module holding parameter `name` (the parameter's own module or one of its
/// ancestors) ends with one of `targets`: PEFT's `modules_to_save` rule, a plain suffix (so
/// `norm` takes `input_layernorm` too).
fn saved_by<'t>(targets: &'t [String], name: &str) -> Option<&'t String> {
    let modules = name.match_indices('.').map(|(i, _)| &name[..i]);
    let modules: Vec<&str> = modules.collect();
    targets.iter().find(|t| modules.iter().any(|m| m.ends_with(t.as_str())))
}

/// What an adapter directory holds (PEFT's `adapter_config.json`, the keys we read).
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterFile {
    pub spec: AdapterSpec,
    /// `base_model_name_or_path`.
    pub base: Option<String>,
}

impl Qwen3VL {
    /// Attach fresh adapters to every linear module `spec` targets: `A` Kaiming-uniform (PEFT's
    /// default, from the torch RNG: seed it first), `B = 0`, DoRA's `m = ‖W‖_row`, so the model
    /// computes exactly what it did. The base parameters are frozen; returns the adapted module
    /// paths. Fails when nothing matches or adapters are already attached.
    pub fn attach_adapters(&mut self, spec: &AdapterSpec) -> Result<Vec<String>, Error> {
        self.attach_with(spec, |linear, spec| {
            let (out, inp) = (linear.weight.size()[0], linear.weight.size()[1]);
            let opts = (linear.weight.kind(), linear.weight.device());
            let bound = 1.0 / (inp as f64).sqrt();
            let a = Tensor::empty([spec.r, inp], opts).uniform_(-bound, bound);
            let b = Tensor::zeros([out, spec.r], opts);
            Ok((a, b, None))
        })
    }

    /// Attach the adapters of a PEFT directory (LoRA or DoRA, written by us or by peft): the
    /// adapted modules are the ones its tensors name.
    pub fn load_adapter(&mut self, dir: &Path) -> Result<AdapterFile, Error> {
        let file = read_adapter_config(dir)?;
        let path = dir.join(ADAPTER_WEIGHTS);
        let tensors = Tensor::read_safetensors(&path).map_err(|e| {
            Error::input(format!("cannot read the adapter weights: {e}"))
                .at(path.display().to_string())
                .hint("an adapter directory holds adapter_config.json and adapter_model.safetensors (PEFT's layout)")
        })?;
        let mut by_module: BTreeMap<String, BTreeMap<&'static str, Tensor>> = BTreeMap::new();
        let mut saved: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut unknown = Vec::new();
        for (name, t) in tensors {
            let Some(rest) = name.strip_prefix(PEFT_PREFIX) else {
                unknown.push(name);
                continue;
            };
            let part = [
                (".lora_A.weight", "a"),
                (".lora_B.weight", "b"),
                (".lora_magnitude_vector", "m"),
                (".lora_magnitude_vector.weight", "m"),
            ]
            .iter()
            .find_map(|(suffix, key)| rest.strip_suffix(suffix).map(|m| (m.to_string(), *key)));
            match part {
                Some((module, key)) => {
                    by_module.entry(module).or_default().insert(key, t);
                }
                None if saved_by(&file.spec.modules_to_save, rest).is_some() => {
                    saved.insert(rest.to_string(), t);
                }
                None => unknown.push(name),
            }
        }
        if !unknown.is_empty() {
            return Err(Error::input(format!(
                "the adapter holds tensors this model cannot place: {}",
                unknown.join(", ")
            ))
            .at(path.display().to_string())
            .hint("only LoRA/DoRA tensors of linear modules and the parameters of modules_to_save are supported (no embedding or conv adapters)"));
        }
        let spec = AdapterSpec {
            targets: Targets::Modules(by_module.keys().cloned().collect()),
            ..file.spec.clone()
        };
        let wanted: BTreeSet<String> = by_module.keys().cloned().collect();
        let mut attached = BTreeSet::new();
        self.attach_with(&spec, |linear, spec| {
            let Some(mut parts) = by_module.remove(&linear.name) else {
                return Err(Error::runtime(format!("no adapter tensors for {}", linear.name)));
            };
            let (Some(a), Some(b)) = (parts.remove("a"), parts.remove("b")) else {
                return Err(Error::input(format!(
                    "{}: the adapter has lora_A or lora_B but not both",
                    linear.name
                )));
            };
            let (out, inp) = (linear.weight.size()[0], linear.weight.size()[1]);
            if a.size() != [spec.r, inp] || b.size() != [out, spec.r] {
                return Err(Error::input(format!(
                    "{}: adapter shapes A {:?} and B {:?} do not fit a [{out}, {inp}] weight at r = {}",
                    linear.name,
                    a.size(),
                    b.size(),
                    spec.r
                )));
            }
            let m = parts.remove("m");
            if (spec.kind == AdapterKind::Dora) != m.is_some() {
                return Err(Error::input(format!(
                    "{}: use_dora is {} but the magnitude vector is {}",
                    linear.name,
                    spec.kind == AdapterKind::Dora,
                    if m.is_some() { "present" } else { "missing" }
                )));
            }
            let opts = (linear.weight.kind(), linear.weight.device());
            let place = |t: Tensor| t.to_kind(opts.0).to_device(opts.1);
            attached.insert(linear.name.clone());
            Ok((place(a), place(b), m.map(|m| place(m.reshape([out])))))
        })
        .map_err(|e| e.at(dir.display().to_string()))?;
        if attached != wanted {
            let missing: Vec<_> = wanted.difference(&attached).cloned().collect();
            return Err(Error::input(format!(
                "the adapter names modules this model has no linear layer for: {}",
                missing.join(", ")
            ))
            .at(dir.display().to_string())
            .hint("the adapter was trained on another architecture"));
        }
        self.load_saved_modules(saved).map_err(|e| e.at(path.display().to_string()))?;
        Ok(AdapterFile { spec, base: file.base })
    }

    /// Attach adapters to the targeted linears, each built by `make` (A, B, magnitude; a
    /// missing DoRA magnitude is initialised to the row norm of `W + s·B A`).
    fn attach_with(
        &mut self,
        spec: &AdapterSpec,
        mut make: impl FnMut(
            &crate::layers::Linear,
            &AdapterSpec,
        ) -> Result<(Tensor, Tensor, Option<Tensor>), Error>,
    ) -> Result<Vec<String>, Error> {
        if self.adapters.is_some() {
            return Err(Error::runtime("the model already has adapters attached")
                .hint("attach adapters once (merge them first to stack another)"));
        }
        if spec.r <= 0 || !(spec.alpha.is_finite() && (0.0..1.0).contains(&spec.dropout)) {
            return Err(Error::input(format!(
                "adapter r {} / alpha {} / dropout {} out of range",
                spec.r, spec.alpha, spec.dropout
            ))
            .hint("r ≥ 1, a finite alpha, 0 ≤ dropout < 1"));
        }
        // Check the saved modules before changing anything, so a refusal leaves the model as it
        // was.
        let mut adapted = Vec::new();
        for linear in self.linears_mut() {
            let group = param_group(&format!("{}.weight", linear.name))?;
            if spec.targets.matches(&linear.name) && !spec.skip.contains(&group) {
                adapted.push(linear.name.clone());
            }
        }
        let saved = self.saved_modules(&spec.modules_to_save, &adapted)?;
        let training = self.adapter_training.clone();
        let _guard = tch::no_grad_guard();
        let mut entries = Vec::new();
        for linear in self.linears_mut() {
            let group = param_group(&format!("{}.weight", linear.name))?;
            if !spec.targets.matches(&linear.name) || spec.skip.contains(&group) {
                continue;
            }
            let (a, b, m) = make(linear, spec)?;
            let mut adapter = Adapter {
                a,
                b,
                magnitude: None,
                scaling: spec.scaling(),
                dropout: spec.dropout,
                training: training.clone(),
            };
            if spec.kind == AdapterKind::Dora {
                adapter.magnitude = Some(m.unwrap_or_else(|| adapter.row_norm(&linear.weight)));
            }
            let a = adapter.a.set_requires_grad(true);
            let b = adapter.b.set_requires_grad(true);
            let magnitude = adapter.magnitude.as_ref().map(|m| m.set_requires_grad(true));
            entries.push(AdapterEntry {
                module: linear.name.clone(),
                a: a.shallow_clone(),
                b: b.shallow_clone(),
                magnitude: magnitude.as_ref().map(Tensor::shallow_clone),
            });
            adapter.a = a;
            adapter.b = b;
            adapter.magnitude = magnitude;
            linear.adapter = Some(adapter);
        }
        if entries.is_empty() {
            return Err(Error::input("the adapter targets match no linear module of the model")
                .hint("use `all-linear` or module names such as q_proj, v_proj, linear_fc1"));
        }
        for (_, t) in self.var_store().variables() {
            let _ = t.set_requires_grad(false);
        }
        for (_, t) in &saved {
            let _ = t.set_requires_grad(true);
        }
        let names = entries.iter().map(|e| e.module.clone()).collect();
        self.adapters = Some(Attached { spec: spec.clone(), entries, saved });
        Ok(names)
    }

    /// The parameters `modules_to_save` selects, by name. Refused: a name that selects nothing,
    /// a module that is adapted too, and the embedding or head of a model that ties them (peft
    /// would train a copy of one and untie them; this model keeps one matrix).
    fn saved_modules(
        &self,
        targets: &[String],
        adapted: &[String],
    ) -> Result<Vec<(String, Tensor)>, Error> {
        let hint = "modules_to_save names modules by the end of their path (e.g. lm_head, embed_tokens, norm)";
        if let Some(t) = targets.iter().find(|t| t.is_empty()) {
            return Err(
                Error::input(format!("modules_to_save holds an empty name ({t:?})")).hint(hint)
            );
        }
        let tied = self.config().tie_word_embeddings;
        let mut vars: Vec<(String, Tensor)> = self.var_store().variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        let mut used = BTreeSet::new();
        for (name, t) in vars {
            let Some(target) = saved_by(targets, &name) else { continue };
            let module = name.rsplit_once('.').map_or(name.as_str(), |(m, _)| m);
            if adapted.iter().any(|m| m == module) {
                return Err(Error::input(format!(
                    "{module} is both adapted (target_modules) and saved in full (modules_to_save {target:?})"
                ))
                .hint("remove it from one of the two lists"));
            }
            if tied && name == crate::coord_offset::EMBED_ROWS {
                return Err(tied_error(target));
            }
            used.insert(target.clone());
            out.push((name, t));
        }
        if let Some(t) = targets.iter().find(|t| !used.contains(*t)) {
            if tied && "lm_head".ends_with(t.as_str()) {
                return Err(tied_error(t));
            }
            return Err(Error::input(format!(
                "modules_to_save entry {t:?} matches no module with parameters"
            ))
            .hint(hint));
        }
        Ok(out)
    }

    /// Overwrite the saved modules' parameters with an adapter file's `values` (every selected
    /// parameter must be there, with its shape).
    fn load_saved_modules(&mut self, mut values: BTreeMap<String, Tensor>) -> Result<(), Error> {
        let Some(attached) = &self.adapters else { return Ok(()) };
        let _guard = tch::no_grad_guard();
        for (name, t) in &attached.saved {
            let v = values.remove(name).ok_or_else(|| {
                Error::input(format!(
                    "modules_to_save selects {name}, which the adapter file lacks"
                ))
                .hint(
                    "the adapter was saved from another architecture or with other modules_to_save",
                )
            })?;
            if v.size() != t.size() {
                return Err(Error::input(format!(
                    "{name}: saved shape {:?}, the model's {:?}",
                    v.size(),
                    t.size()
                )));
            }
            t.shallow_clone().copy_(&v.to_kind(t.kind()).to_device(t.device()));
        }
        if let Some(name) = values.keys().next() {
            return Err(Error::input(format!(
                "the adapter holds {name}, which this model has no parameter for"
            ))
            .hint("the adapter was trained on another architecture"));
        }
        Ok(())
    }

    /// The attached adapter spec, if any.
    pub fn adapter_spec(&self) -> Option<&AdapterSpec> {
        self.adapters.as_ref().map(|a| &a.spec)
    }

    /// Every adapter tensor with its name (`<module>.lora_A.weight`, `<module>.lora_B.weight`,
    /// `<module>.lora_magnitude_vector`, and the parameters of `modules_to_save` under their
    /// own names) and the group of its module, sorted by name.
    pub fn adapter_parameters(&self) -> Result<Vec<(String, Tensor, ParamGroup)>, Error> {
        let mut out = Vec::new();
        for (name, t) in self.adapters.iter().flat_map(|a| &a.saved) {
            out.push((name.clone(), t.shallow_clone(), param_group(name)?));
        }
        for e in self.adapters.iter().flat_map(|a| &a.entries) {
            let group = param_group(&format!("{}.weight", e.module))?;
            out.push((format!("{}.lora_A.weight", e.module), e.a.shallow_clone(), group));
            out.push((format!("{}.lora_B.weight", e.module), e.b.shallow_clone(), group));
            if let Some(m) = &e.magnitude {
                out.push((format!("{}.lora_magnitude_vector", e.module), m.shallow_clone(), group));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Dropout of the adapters on (training passes) or off (evaluation, generation).
    pub fn set_adapter_training(&self, on: bool) {
        self.adapter_training.store(on, Ordering::Relaxed);
    }

    /// Write the adapters in PEFT's layout: `adapter_config.json` (`base` as
    /// `base_model_name_or_path`) and `adapter_model.safetensors`.
    pub fn save_adapter(&self, dir: &Path, base: Option<&str>) -> Result<(), Error> {
        let Some(attached) = &self.adapters else {
            return Err(Error::runtime("the model has no adapters to save"));
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, &e))?;
        let spec = &attached.spec;
        let modules: Vec<&str> = attached.entries.iter().map(|e| e.module.as_str()).collect();
        let config = json!({
            "peft_type": "LORA",
            "task_type": null,
            "base_model_name_or_path": base,
            "r": spec.r,
            "lora_alpha": spec.alpha,
            "lora_dropout": spec.dropout,
            // The exact module paths: a list entry matches a path equal to it, so peft adapts
            // exactly these modules whatever `all-linear` means in its version.
            "target_modules": modules,
            "use_dora": spec.kind == AdapterKind::Dora,
            "bias": "none",
            "fan_in_fan_out": false,
            "use_rslora": false,
            "init_lora_weights": true,
            "inference_mode": true,
            "modules_to_save": (!spec.modules_to_save.is_empty()).then_some(&spec.modules_to_save),
            "rank_pattern": {},
            "alpha_pattern": {},
        });
        weights::write_json(&dir.join(ADAPTER_CONFIG), &config)?;
        let named: Vec<(String, Tensor)> = self
            .adapter_parameters()?
            .into_iter()
            .map(|(n, t, _)| (format!("{PEFT_PREFIX}{n}"), t.detach().to_device(tch::Device::Cpu)))
            .collect();
        let refs: Vec<(&String, &Tensor)> = named.iter().map(|(n, t)| (n, t)).collect();
        weights::write_safetensors(&dir.join(ADAPTER_WEIGHTS), &refs)
    }

    /// Fold every adapter into its base weight and detach the adapters: the model computes the
    /// same function with plain linears (what `coordexp model merge` saves).
    pub fn merge_adapters(&mut self) -> Result<usize, Error> {
        let _guard = tch::no_grad_guard();
        let mut n = 0;
        for linear in self.linears_mut() {
            if let Some(adapter) = linear.adapter.take() {
                let merged = adapter.merged(&linear.weight);
                linear.weight.shallow_clone().copy_(&merged);
                n += 1;
            }
        }
        self.adapters = None;
        Ok(n)
    }

    /// The merged weight of every adapted module (`<module>.weight`), for [`Qwen3VL::save`].
    pub(crate) fn merged_weights(&self) -> Result<BTreeMap<String, Tensor>, Error> {
        let mut out = BTreeMap::new();
        let Some(attached) = &self.adapters else { return Ok(out) };
        let vars = self.var_store().variables();
        let scaling = attached.spec.scaling();
        for e in &attached.entries {
            let name = format!("{}.weight", e.module);
            let w = vars.get(&name).ok_or_else(|| {
                Error::runtime(format!("adapted module {} has no weight {name}", e.module))
            })?;
            out.insert(name, merged_weight(w, &e.a, &e.b, e.magnitude.as_ref(), scaling));
        }
        Ok(out)
    }
}

fn tied_error(target: &str) -> Error {
    Error::input(format!(
        "modules_to_save {target:?} selects the embedding or the head, which this model ties \
         (tie_word_embeddings): peft would train a copy of one and untie them"
    ))
    .hint("train them in full (model.tuning.mode: full), or use the coordinate-offset adapter (model.coord_offsets) for the coordinate rows")
}

impl AdapterFile {
    /// The base model directory: `base_model_name_or_path`, relative paths against the
    /// adapter directory.
    pub fn base_dir(&self, adapter_dir: &Path) -> Result<std::path::PathBuf, Error> {
        let Some(base) = &self.base else {
            return Err(Error::input("the adapter does not name its base model")
                .at(adapter_dir.join(ADAPTER_CONFIG).display().to_string())
                .hint("pass the base explicitly (`--model BASE --adapter DIR`) or set base_model_name_or_path"));
        };
        let path = adapter_dir.join(base);
        if !path.join("config.json").is_file() {
            return Err(Error::input(format!(
                "the adapter's base model {} is not a model directory here",
                path.display()
            ))
            .at(adapter_dir.join(ADAPTER_CONFIG).display().to_string())
            .hint("pass the base explicitly (`--model BASE --adapter DIR`), or fix base_model_name_or_path"));
        }
        Ok(path)
    }
}

/// What [`merge_dir`] did.
#[derive(Debug, Clone)]
pub struct MergeReport {
    pub spec: AdapterSpec,
    /// Modules whose weight changed.
    pub modules: usize,
    /// Other files (tokenizer, template, …) copied from the base.
    pub copied_files: usize,
}

/// `coordexp model merge`: the base in `base` with the adapter in `adapter` folded in, written
/// to `out` (which must not exist) in the base's layout and dtype; the merge itself is computed
/// in f32.
pub fn merge_dir(base: &Path, adapter: &Path, out: &Path) -> Result<MergeReport, Error> {
    use crate::vocab::{copy_rest, finish, refuse_existing, staging};
    refuse_existing(out)?;
    let stored = stored_kind(base)?;
    let mut model = Qwen3VL::load(base, Kind::Float, tch::Device::Cpu)?;
    let file = model.load_adapter(adapter)?;
    let modules = model.merge_adapters()?;
    if crate::coord_offset::has_offsets(adapter) && model.coord_offset().is_none() {
        model.load_coord_offsets(adapter)?;
    }
    model.set_kind(stored);
    let tmp = staging(out)?;
    model.save(&tmp, 4 << 30)?;
    let (copied, _) = copy_rest(base, &tmp, |n| {
        n.ends_with(".safetensors")
            || matches!(n, "model.safetensors.index.json" | "config.json" | ADAPTER_CONFIG)
    })?;
    finish(&tmp, out)?;
    Ok(MergeReport { spec: file.spec, modules, copied_files: copied })
}

/// The dtype of a checkpoint's first tensor (the dtype its weights are stored in).
fn stored_kind(dir: &Path) -> Result<Kind, Error> {
    let first = weights::shard_files(dir)?.into_iter().next().ok_or_else(|| {
        Error::input(format!("{} has no weights", dir.display()))
            .hint("point --base at a Hugging Face model directory")
    })?;
    let tensors = Tensor::read_safetensors(&first).map_err(|e| {
        Error::input(format!("cannot read safetensors: {e}")).at(first.display().to_string())
    })?;
    Ok(tensors.first().map_or(Kind::Float, |(_, t)| t.kind()))
}

/// True when `dir` holds a PEFT adapter and no model weights of its own.
pub fn is_adapter_only(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
        && !dir.join("model.safetensors").is_file()
        && !dir.join("model.safetensors.index.json").is_file()
}

/// Read PEFT's `adapter_config.json` (the keys coordexp needs; features it does not implement
/// are refused by name).
pub fn read_adapter_config(dir: &Path) -> Result<AdapterFile, Error> {
    let path = dir.join(ADAPTER_CONFIG);
    let v = weights::read_json(&path)?;
    let at = path.display().to_string();
    let bad = |what: String| {
        Error::input(what)
            .at(at.clone())
            .hint("coordexp loads PEFT LoRA/DoRA adapters of linear modules")
    };
    let peft_type = v.get("peft_type").and_then(Value::as_str).unwrap_or("LORA");
    if peft_type != "LORA" {
        return Err(bad(format!("peft_type {peft_type:?} is not LORA")));
    }
    let r = v.get("r").and_then(Value::as_i64).ok_or_else(|| bad("no integer `r`".into()))?;
    let alpha = v.get("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0);
    let dropout = v.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0);
    let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    for unsupported in ["use_rslora", "fan_in_fan_out"] {
        if flag(unsupported) {
            return Err(bad(format!("`{unsupported}: true` is not supported")));
        }
    }
    for pattern in ["rank_pattern", "alpha_pattern"] {
        if v.get(pattern).and_then(Value::as_object).is_some_and(|m| !m.is_empty()) {
            return Err(bad(format!("a non-empty `{pattern}` is not supported")));
        }
    }
    if v.get("bias").and_then(Value::as_str).is_some_and(|b| b != "none") {
        return Err(bad("`bias` other than \"none\" is not supported".into()));
    }
    let modules_to_save = match v.get("modules_to_save") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|m| m.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("`modules_to_save` must list module names".into()))?,
        Some(_) => return Err(bad("`modules_to_save` must be a list of module names".into())),
    };
    let targets = match v.get("target_modules") {
        Some(Value::String(s)) if s == "all-linear" => Targets::AllLinear,
        Some(Value::Array(a)) => {
            Targets::Modules(a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        }
        // A regex or nothing: the tensors decide (they always do when loading).
        _ => Targets::AllLinear,
    };
    let kind = if flag("use_dora") { AdapterKind::Dora } else { AdapterKind::Lora };
    Ok(AdapterFile {
        spec: AdapterSpec { kind, r, alpha, dropout, targets, skip: Vec::new(), modules_to_save },
        base: v.get("base_model_name_or_path").and_then(Value::as_str).map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_lists_match_whole_path_segments_like_peft() {
        let t = Targets::Modules(vec!["q_proj".into(), "mlp.linear_fc1".into()]);
        assert!(t.matches("model.language_model.layers.0.self_attn.q_proj"));
        assert!(t.matches("q_proj"));
        assert!(!t.matches("model.language_model.layers.0.self_attn.xq_proj"));
        assert!(t.matches("model.visual.blocks.0.mlp.linear_fc1"));
        assert!(!t.matches("model.visual.merger.linear_fc1"));
        assert!(Targets::AllLinear.matches("model.visual.merger.linear_fc1"));
        assert!(!Targets::AllLinear.matches("lm_head"));
    }

    #[test]
    fn modules_to_save_take_any_module_whose_path_ends_with_a_name_like_peft() {
        let t = vec!["lm_head".to_string(), "norm".to_string()];
        assert!(saved_by(&t, "lm_head.weight").is_some());
        assert!(saved_by(&t, "model.language_model.norm.weight").is_some());
        // A plain suffix, unlike target_modules: `input_layernorm` ends with `norm`.
        assert!(saved_by(&t, "model.language_model.layers.0.input_layernorm.weight").is_some());
        assert!(saved_by(&t, "model.visual.blocks.0.norm1.weight").is_none());
        // The parameter's own name is not a module.
        assert!(saved_by(&["weight".to_string()], "lm_head.weight").is_none());
        // Everything inside a selected module.
        let merger = vec!["merger".to_string()];
        assert!(saved_by(&merger, "model.visual.merger.linear_fc1.bias").is_some());
        assert!(saved_by(&merger, "model.visual.deepstack_merger_list.0.norm.weight").is_none());
    }
}
