//! The demo's model directory: tokenizer, chat template, processor config and a freshly
//! initialised Qwen3-VL-architecture checkpoint sized for a CPU.
//!
//! Coordinate-row initialisation: the 1000 coordinate rows of the (tied) embedding are a smooth
//! function of the bin — random Fourier features `Σ_j sin(π f_j x)·a_j + cos(π f_j x)·b_j` of
//! `x = k/999` — instead of independent noise. Why: with a tied head, the coordinate logits are
//! `h · E[k]`, so smooth rows make every coordinate distribution smooth in `k` from the first
//! step, neighbouring bins share what they learn, and the soft-CE / W1 targets (which are smooth
//! themselves) are reachable by moving `h` alone. Rows are scaled to the norm of the other rows.
//!
//! Vision initialisation, for the same reason: the learned position table of the vision tower
//! starts as a 2-D sinusoid of the patch row and column (instead of small noise), so every image
//! token carries where it is from the first step — what the coordinate tokens must read — and
//! the pixel normalisation (`image_mean` / `image_std`) is the training images' own statistics.
//! Why the latter matters: with Qwen's 0.5 / 0.5 a light background is a large constant input
//! shared by every patch; its gradient drives the patch embedding towards one shared direction
//! that drowns the colours and shapes (measured: the untrained tower separates a red from a blue
//! patch, after 400 steps it no longer does). Centred inputs keep the objects as the signal.

use coordexp_core::{Error, Result};
use coordexp_model::ParamInit;
use coordexp_model::config::{ModelConfig, SpecialIds};
use coordexp_model::model::Qwen3VL;
use coordexp_model::vision::preprocess::PixelNorm;
use serde_json::json;
use std::path::Path;
use tch::{Device, Kind, Tensor};
use tokenizers::Tokenizer;

use super::tokenizer;

/// The demo architecture's sizes (the rest comes from [`ModelConfig::tiny`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arch {
    pub hidden: i64,
    pub layers: i64,
    pub heads: i64,
    pub kv_heads: i64,
    pub intermediate: i64,
    pub vision_hidden: i64,
    pub vision_depth: i64,
    pub vision_heads: i64,
    pub vision_intermediate: i64,
}

impl Arch {
    /// The demo's default: ~2M parameters, sized so that a 2-core CPU trains it at a few
    /// thousand tokens per second.
    pub const DEMO: Arch = Arch {
        hidden: 128,
        layers: 4,
        heads: 4,
        kv_heads: 2,
        intermediate: 384,
        vision_hidden: 96,
        vision_depth: 3,
        vision_heads: 3,
        vision_intermediate: 256,
    };

    /// A minimal architecture for tests (every component present, a few thousand parameters
    /// besides the embedding).
    pub const TEST: Arch = Arch {
        hidden: 32,
        layers: 2,
        heads: 2,
        kv_heads: 1,
        intermediate: 64,
        vision_hidden: 32,
        vision_depth: 2,
        vision_heads: 2,
        vision_intermediate: 64,
    };

    /// The full model config for a tokenizer with `vocab` ids and these special ids.
    pub fn config(&self, vocab: i64, special: SpecialIds) -> Result<ModelConfig> {
        let mut c = ModelConfig::tiny(vocab, special);
        let head_dim = self.hidden / self.heads;
        if head_dim % 4 != 0 || self.heads % self.kv_heads != 0 {
            return Err(Error::input(format!("unsupported demo architecture {self:?}")));
        }
        let t = &mut c.text;
        t.hidden_size = self.hidden;
        t.num_hidden_layers = self.layers;
        t.num_attention_heads = self.heads;
        t.num_key_value_heads = self.kv_heads;
        t.head_dim = head_dim;
        t.intermediate_size = self.intermediate;
        // Qwen3-VL splits the rotary frequencies t:h:w ≈ 24:20:20.
        let half = head_dim / 2;
        let hw = (half * 20) / 64;
        t.mrope_section = [half - 2 * hw, hw, hw];
        let v = &mut c.vision;
        v.hidden_size = self.vision_hidden;
        v.depth = self.vision_depth;
        v.num_heads = self.vision_heads;
        v.intermediate_size = self.vision_intermediate;
        v.out_hidden_size = self.hidden;
        v.deepstack_visual_indexes = (0..self.vision_depth.min(self.layers)).collect();
        Ok(c)
    }
}

/// Write the model directory `dir` (which must not exist): `tokenizer.json`,
/// `chat_template.jinja`, `preprocessor_config.json`, `config.json` and `model.safetensors`.
/// Returns the parameter count.
pub fn write_model_dir(
    dir: &Path,
    tok: &Tokenizer,
    arch: &Arch,
    norm: &PixelNorm,
    max_pixels: u64,
    seed: i64,
) -> Result<i64> {
    if dir.exists() {
        return Err(Error::input(format!("{} already exists", dir.display()))
            .hint("the demo writes a fresh model directory; remove it or pick another --out"));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, &e))?;
    tokenizer::save(tok, dir)?;
    let template = dir.join("chat_template.jinja");
    std::fs::write(&template, super::CHAT_TEMPLATE)
        .map_err(|e| Error::io("write", &template, &e))?;
    let pre = json!({
        "patch_size": 16, "merge_size": 2, "temporal_patch_size": 2,
        "min_pixels": 32 * 32, "max_pixels": max_pixels,
        "image_mean": norm.mean, "image_std": norm.std,
    });
    let pre_path = dir.join("preprocessor_config.json");
    std::fs::write(&pre_path, pre.to_string()).map_err(|e| Error::io("write", &pre_path, &e))?;

    let id = |t: &str| {
        tok.token_to_id(t)
            .map(i64::from)
            .ok_or_else(|| Error::runtime(format!("the demo tokenizer has no {t}")))
    };
    let special = SpecialIds {
        image_pad: id("<|image_pad|>")?,
        video_pad: id("<|video_pad|>")?,
        vision_start: id("<|vision_start|>")?,
        vision_end: id("<|vision_end|>")?,
    };
    let vocab = i64::try_from(tok.get_vocab_size(true))
        .map_err(|_| Error::runtime("vocabulary size overflows"))?;
    let config = arch.config(vocab, special)?;
    tch::manual_seed(seed);
    let model = Qwen3VL::new(
        &config,
        Kind::Float,
        Device::Cpu,
        ParamInit::Normal { std: config.text.initializer_range },
    );
    smooth_coordinate_rows(&model, id("<|coord_0|>")?);
    sinusoidal_vision_positions(&model)?;
    model.save(dir, u64::MAX)?;
    Ok(model.named_parameters()?.iter().map(|(_, t, _)| t.numel() as i64).sum())
}

/// Set the vision position table `[g², D]` (a `g × g` grid, interpolated to each image's patch
/// grid) to sin/cos of the row and column at `D / 4` frequencies each, with unit RMS.
fn sinusoidal_vision_positions(model: &Qwen3VL) -> Result<()> {
    let _guard = tch::no_grad_guard();
    let mut table = model
        .named_parameters()?
        .into_iter()
        .find(|(n, _, _)| n == "model.visual.pos_embed.weight")
        .map(|(_, t, _)| t)
        .ok_or_else(|| Error::runtime("the vision tower has no pos_embed"))?;
    let (n, d) = (table.size()[0], table.size()[1]);
    let g = (n as f64).sqrt().round() as i64;
    if g * g != n || d % 4 != 0 {
        return Err(Error::runtime(format!("vision position table {n}x{d} is not a square grid")));
    }
    let cells = Tensor::arange(n, (Kind::Float, Device::Cpu));
    let row = (&cells / g as f64).floor() / (g - 1).max(1) as f64;
    let col = cells.fmod(g as f64) / (g - 1).max(1) as f64;
    let f = Tensor::arange_start(1, d / 4 + 1, (Kind::Float, Device::Cpu)) * std::f64::consts::PI;
    let angle = |x: &Tensor| x.unsqueeze(1) * f.unsqueeze(0); // [n, D/4]
    let (r, c) = (angle(&row), angle(&col));
    let features = Tensor::cat(&[r.sin(), r.cos(), c.sin(), c.cos()], 1);
    let rms = features.square().mean(Kind::Float).sqrt();
    table.copy_(&(features / rms));
    Ok(())
}

/// Replace the 1000 coordinate rows with smooth random Fourier features (see the module docs).
fn smooth_coordinate_rows(model: &Qwen3VL, first: i64) {
    let _guard = tch::no_grad_guard();
    let mut weight = model.lm_head_weight().shallow_clone();
    let hidden = weight.size()[1];
    let freqs = 24i64;
    let x = Tensor::arange(1000, (Kind::Float, Device::Cpu)) / 999.0;
    let f = Tensor::arange_start(1, freqs + 1, (Kind::Float, Device::Cpu));
    let phase = x.unsqueeze(1) * f.unsqueeze(0) * std::f64::consts::PI; // [1000, F]
    let basis = Tensor::cat(&[phase.sin(), phase.cos()], 1); // [1000, 2F]
    let directions = Tensor::randn([2 * freqs, hidden], (Kind::Float, Device::Cpu));
    let rows = basis.matmul(&directions);
    let others = weight.narrow(0, 0, first);
    let target_norm = others.norm_scalaropt_dim(2, [1], false).mean(Kind::Float);
    let norms = rows.norm_scalaropt_dim(2, [1], true);
    let rows = rows / norms * target_norm;
    weight.narrow(0, first, 1000).copy_(&rows);
    let _ = &mut weight;
}
