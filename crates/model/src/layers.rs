//! The parameterised building blocks shared by both towers, named exactly as transformers names
//! their tensors (`weight`, `bias`) so that a VarStore path *is* the Hugging Face parameter name.

use crate::adapter::Adapter;
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// How freshly created parameters are filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamInit {
    /// transformers' `_init_weights` for Qwen3-VL: weights ~ N(0, std), biases 0, norms 1.
    /// Used by `init --preset tiny`; reproducible through `tch::manual_seed`.
    Normal { std: f64 },
    /// Everything 0 (norms 1): cheap placeholders that a checkpoint load overwrites.
    Zeros,
}

impl ParamInit {
    fn weight(self) -> Init {
        match self {
            ParamInit::Normal { std } => Init::Randn { mean: 0.0, stdev: std },
            ParamInit::Zeros => Init::Const(0.0),
        }
    }
}

/// `y = x Wᵀ + b` with `weight` [out, in] and optional `bias` [out], plus a LoRA or DoRA
/// [`Adapter`] when one is attached.
#[derive(Debug)]
pub struct Linear {
    /// The module's Hugging Face path (`model.language_model.layers.0.self_attn.q_proj`): what
    /// adapter targets and PEFT tensor names refer to.
    pub name: String,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub adapter: Option<Adapter>,
}

impl Linear {
    pub fn new(p: &Path<'_>, in_dim: i64, out_dim: i64, bias: bool, init: ParamInit) -> Self {
        let weight = p.var("weight", &[out_dim, in_dim], init.weight());
        let bias = bias.then(|| p.var("bias", &[out_dim], Init::Const(0.0)));
        let name = p.components().collect::<Vec<_>>().join(".");
        Linear { name, weight, bias, adapter: None }
    }

    /// True when any of its tensors (adapter included) is trained.
    pub fn trainable(&self) -> bool {
        self.weight.requires_grad()
            || self.bias.as_ref().is_some_and(Tensor::requires_grad)
            || self.adapter.as_ref().is_some_and(|a| {
                a.a.requires_grad()
                    || a.b.requires_grad()
                    || a.magnitude.as_ref().is_some_and(Tensor::requires_grad)
            })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let out = x.linear(&self.weight, self.bias.as_ref());
        match &self.adapter {
            None => out,
            Some(a) => a.apply(x, &self.weight, self.bias.as_ref(), out),
        }
    }
}

/// Root-mean-square norm with the variance taken in fp32 and the weight applied after casting
/// back to the input dtype (this order matters in bf16 and is what transformers does).
#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(p: &Path<'_>, dim: i64, eps: f64) -> Self {
        RmsNorm { weight: p.var("weight", &[dim], Init::Const(1.0)), eps }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let xf = x.to_kind(Kind::Float);
        let var = xf.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = (xf * (var + self.eps).rsqrt()).to_kind(kind);
        &self.weight * normed
    }
}

/// Standard LayerNorm over the last dimension, with weight and bias.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    dim: i64,
    eps: f64,
}

impl LayerNorm {
    pub fn new(p: &Path<'_>, dim: i64, eps: f64) -> Self {
        LayerNorm {
            weight: p.var("weight", &[dim], Init::Const(1.0)),
            bias: p.var("bias", &[dim], Init::Const(0.0)),
            dim,
            eps,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm([self.dim], Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

/// A lookup table `weight` [rows, dim].
#[derive(Debug)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    pub fn new(p: &Path<'_>, rows: i64, dim: i64, init: ParamInit) -> Self {
        Embedding { weight: p.var("weight", &[rows, dim], init.weight()) }
    }

    pub fn forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.weight, ids, -1, false, false)
    }
}

/// `rotate_half`: [x1, x2] → [−x2, x1] over the last dimension (NeoX-style rotary pairing j ↔
/// j + D/2).
pub fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size().last().copied().unwrap_or(0) / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    Tensor::cat(&[x2.neg(), x1], -1)
}

/// `x·cos + rotate_half(x)·sin`, the rotary embedding itself.
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    x * cos + rotate_half(x) * sin
}
