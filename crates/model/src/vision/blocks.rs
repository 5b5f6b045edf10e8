//! One vision transformer block: LayerNorm → fused-qkv attention with 2-D rotary, non-causal
//! within each frame → LayerNorm → GELU(tanh) MLP.

use tch::nn::Path;
use tch::{Kind, Tensor};

use crate::attention::bidirectional_segments;
use crate::config::VisionConfig;
use crate::layers::{LayerNorm, Linear, ParamInit, apply_rotary};

#[derive(Debug)]
pub struct VisionBlock {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: i64,
}

impl VisionBlock {
    pub fn new(p: &Path<'_>, c: &VisionConfig, init: ParamInit) -> Self {
        let d = c.hidden_size;
        VisionBlock {
            norm1: LayerNorm::new(&(p / "norm1"), d, 1e-6),
            qkv: Linear::new(&(p / "attn" / "qkv"), d, 3 * d, true, init),
            proj: Linear::new(&(p / "attn" / "proj"), d, d, true, init),
            norm2: LayerNorm::new(&(p / "norm2"), d, 1e-6),
            fc1: Linear::new(&(p / "mlp" / "linear_fc1"), d, c.intermediate_size, true, init),
            fc2: Linear::new(&(p / "mlp" / "linear_fc2"), c.intermediate_size, d, true, init),
            heads: c.num_heads,
        }
    }

    /// True when any of its parameters (adapters included) is trained.
    pub(crate) fn trainable(&self) -> bool {
        [&self.qkv, &self.proj, &self.fc1, &self.fc2].iter().any(|l| l.trainable())
            || [&self.norm1, &self.norm2]
                .iter()
                .any(|n| n.weight.requires_grad() || n.bias.requires_grad())
    }

    pub(crate) fn linears(&mut self) -> [&mut Linear; 4] {
        [&mut self.qkv, &mut self.proj, &mut self.fc1, &mut self.fc2]
    }

    /// x [N, D]; cos/sin [N, head_dim] in fp32; `cu_seqlens` splits N into frames.
    pub fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, cu_seqlens: &[i64]) -> Tensor {
        let h = x + self.attention(&self.norm1.forward(x), cos, sin, cu_seqlens);
        &h + self.fc2.forward(&self.fc1.forward(&self.norm2.forward(&h)).gelu("tanh"))
    }

    fn attention(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, cu_seqlens: &[i64]) -> Tensor {
        let s = x.size();
        let (n, d) = (s[0], s[1]);
        let qkv = self.qkv.forward(x).reshape([n, 3, self.heads, -1]).permute([1, 0, 2, 3]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        // Rotary in fp32, as transformers does, then back to the activation dtype.
        let (cos, sin) = (cos.unsqueeze(1), sin.unsqueeze(1));
        let kind = q.kind();
        let q = apply_rotary(&q.to_kind(Kind::Float), &cos, &sin).to_kind(kind);
        let k = apply_rotary(&k.to_kind(Kind::Float), &cos, &sin).to_kind(kind);
        let to_heads = |t: &Tensor| t.transpose(0, 1).unsqueeze(0); // [1, H, N, hd]
        let head_dim = d / self.heads;
        let out = bidirectional_segments(
            &to_heads(&q),
            &to_heads(&k),
            &to_heads(&v),
            cu_seqlens,
            (head_dim as f64).powf(-0.5),
        );
        self.proj.forward(&out.squeeze_dim(0).transpose(0, 1).reshape([n, d]))
    }
}
