//! The one setup sequence every command and the trainer share.
//!
//! ```text
//! device (model.device, CPU threads) → model directory (tokenizer, chat template, coordinate
//!   vocabulary, vision constants) → prompts → encoder → pixel budget → pixel normalisation
//!   … then, once the data is checked: model weights with model.dtype on the device
//! ```
//!
//! Why one sequence: four copies (trainer, probe, predict, logits) drifted — one capped the pixel
//! budget by the model's limit, another did not. Why the weights load separately
//! ([`Session::load_model`]): the trainer checks every record and image before it spends memory
//! and time on weights, and it loads them from a checkpoint rather than from the model
//! directory when it resumes.

use coordexp_core::config::schema::{Config, Dtype};
use coordexp_core::device::{DEVICE_GRAMMAR, DeviceSpec};
use coordexp_core::prompt::Prompts;
use coordexp_core::{Error, Result};
use coordexp_model::model::Qwen3VL;
use coordexp_model::runtime;
use coordexp_model::vision::preprocess::PixelNorm;
use coordexp_text::{Encoder, ModelDir};
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

use crate::inputs::VisionInput;
use crate::split::Split;

/// Everything a command needs before (and to load) the model weights.
pub struct Session {
    pub device: Device,
    /// Libtorch intra-op threads set for this thread (CPU only; 1 on CUDA).
    pub threads: usize,
    /// The model directory the session was opened on.
    pub model_src: PathBuf,
    pub model_dir: ModelDir,
    pub prompts: Prompts,
    pub encoder: Encoder,
    /// The pixel budget images are checked against: `template.max_pixels` capped by the
    /// model's own limit.
    pub max_pixels: u64,
    pub norm: PixelNorm,
    kind: Kind,
}

impl Session {
    /// Open the session of `cfg` on `model` (else `model.path`). `threads`: libtorch intra-op
    /// threads on CPU; `None` reads `COORDEXP_CPU_THREADS`, else uses every core.
    pub fn open(cfg: &Config, model: Option<&Path>, threads: Option<usize>) -> Result<Session> {
        Session::open_on(cfg, model, threads, device_of(cfg)?)
    }

    /// [`Session::open`] on `device` instead of `model.device` (a rank of a multi-process run
    /// takes the GPU of its local rank).
    pub fn open_on(
        cfg: &Config,
        model: Option<&Path>,
        threads: Option<usize>,
        device: Device,
    ) -> Result<Session> {
        coordexp_model::runtime::check_available(device)?;
        let threads = if device == Device::Cpu {
            let n = match threads {
                Some(n) => n.max(1),
                None => env_count("COORDEXP_CPU_THREADS")?.unwrap_or_else(cores),
            };
            tch::set_num_threads(n as i32);
            n
        } else {
            1
        };
        let model_src = match model {
            Some(p) => p.to_path_buf(),
            None => required_path(
                &cfg.model.path,
                "model.path",
                "a Qwen3-VL model directory (HF layout)",
            )?,
        };
        let model_dir = ModelDir::load(&model_src)?;
        let prompts = Prompts::resolve(&cfg.prompt)?;
        let encoder = Encoder::new(model_dir.clone(), prompts.clone(), &cfg.template)?;
        let max_pixels = cfg.template.max_pixels.min(model_dir.vision().max_pixels);
        let norm = PixelNorm::from_model_dir(&model_src)?;
        Ok(Session {
            device,
            threads,
            model_src,
            model_dir,
            prompts,
            encoder,
            max_pixels,
            norm,
            kind: kind_of(cfg.model.dtype),
        })
    }

    /// Load weights from `dir` (the model directory itself, or a checkpoint of it) with the
    /// configured dtype onto the session's device.
    pub fn load_model(&self, dir: &Path) -> Result<Qwen3VL> {
        Qwen3VL::load(dir, self.kind, self.device)
    }

    /// Load and check a split against the session's pixel budget (see [`Split::load`]).
    pub fn load_split(
        &self,
        role: &'static str,
        path: &Path,
        limit: Option<usize>,
    ) -> Result<Split> {
        Split::load(role, path, limit, self.max_pixels)
    }

    /// What batch assembly needs to patchify this session's images for `model`.
    pub fn vision<'m>(&self, model: &'m Qwen3VL) -> VisionInput<'m> {
        VisionInput { config: &model.config().vision, norm: self.norm }
    }

    /// The stop ids of the chat format: `<|im_end|>` (and `<|endoftext|>` when present).
    pub fn stop_ids(&self) -> Result<Vec<i64>> {
        stop_ids(&self.encoder)
    }
}

/// The stop ids of an encoder's chat format: `<|im_end|>` (and `<|endoftext|>` when present).
pub fn stop_ids(encoder: &Encoder) -> Result<Vec<i64>> {
    let tok = encoder.model().tokenizer();
    let im_end = tok.token_to_id("<|im_end|>").ok_or_else(|| {
        Error::input("the tokenizer has no <|im_end|> token")
            .hint("use a Qwen3-VL tokenizer (its chat format ends turns with <|im_end|>)")
    })?;
    let mut ids = vec![i64::from(im_end)];
    ids.extend(tok.token_to_id("<|endoftext|>").map(i64::from));
    Ok(ids)
}

/// The configured device (`model.device`, grammar in `coordexp_core::device`).
pub fn device_of(cfg: &Config) -> Result<Device> {
    let spec = DeviceSpec::parse(&cfg.model.device).ok_or_else(|| {
        Error::input(format!("unknown device `{}`", cfg.model.device))
            .at("model.device")
            .hint(DEVICE_GRAMMAR)
    })?;
    Ok(runtime::device(spec))
}

/// The tensor kind of a configured `model.dtype`.
pub fn kind_of(dtype: Dtype) -> Kind {
    match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::Bf16 => Kind::BFloat16,
    }
}

/// The machine's cores (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A positive count from the environment variable `name`, if it is set.
pub fn env_count(name: &str) -> Result<Option<usize>> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(v) => v.parse::<usize>().ok().filter(|n| *n > 0).map(Some).ok_or_else(|| {
            Error::input(format!("{name}={v} is not a positive integer"))
                .hint(format!("unset {name} to use the default"))
        }),
    }
}

/// The path a config key must hold.
pub fn required_path(p: &Option<PathBuf>, key: &str, what: &str) -> Result<PathBuf> {
    p.clone().ok_or_else(|| {
        Error::input(format!("{key} is not set")).at(key).hint(format!("point {key} at {what}"))
    })
}
