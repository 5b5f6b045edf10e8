//! One decoder layer: pre-norm attention (per-head q/k RMSNorm, GQA, mRoPE) and a SwiGLU MLP.

use tch::Tensor;
use tch::nn::Path;

use crate::attention::AttentionLayout;
use crate::config::TextConfig;
use crate::layers::{Linear, ParamInit, RmsNorm, apply_rotary};
use crate::text::cache::KvCache;

#[derive(Debug)]
struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

impl SelfAttention {
    fn new(p: &Path<'_>, c: &TextConfig, init: ParamInit) -> Self {
        let (h, d) = (c.hidden_size, c.head_dim);
        SelfAttention {
            q_proj: Linear::new(&(p / "q_proj"), h, c.num_attention_heads * d, false, init),
            k_proj: Linear::new(&(p / "k_proj"), h, c.num_key_value_heads * d, false, init),
            v_proj: Linear::new(&(p / "v_proj"), h, c.num_key_value_heads * d, false, init),
            o_proj: Linear::new(&(p / "o_proj"), c.num_attention_heads * d, h, false, init),
            q_norm: RmsNorm::new(&(p / "q_norm"), d, c.rms_norm_eps),
            k_norm: RmsNorm::new(&(p / "k_norm"), d, c.rms_norm_eps),
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: d,
        }
    }

    fn linears(&mut self) -> [&mut Linear; 4] {
        [&mut self.q_proj, &mut self.k_proj, &mut self.v_proj, &mut self.o_proj]
    }

    /// x [B, L, hidden]; cos/sin [B, L, head_dim].
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        layout: &AttentionLayout,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor {
        let size = x.size();
        let (b, l) = (size[0], size[1]);
        let heads = |t: Tensor, n: i64| t.view([b, l, n, self.head_dim]);
        let q = self.q_norm.forward(&heads(self.q_proj.forward(x), self.heads)).transpose(1, 2);
        let k = self.k_norm.forward(&heads(self.k_proj.forward(x), self.kv_heads)).transpose(1, 2);
        let v = heads(self.v_proj.forward(x), self.kv_heads).transpose(1, 2);
        let (cos, sin) = (cos.unsqueeze(1), sin.unsqueeze(1));
        let q = apply_rotary(&q, &cos, &sin);
        let k = apply_rotary(&k, &cos, &sin);
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v),
            None => (k, v),
        };
        let rep = self.heads / self.kv_heads;
        let (k, v) = (repeat_kv(&k, rep), repeat_kv(&v, rep));
        let out = layout.attend(&q, &k, &v, (self.head_dim as f64).powf(-0.5));
        self.o_proj.forward(&out.transpose(1, 2).reshape([b, l, self.heads * self.head_dim]))
    }
}

/// [B, Hkv, L, D] → [B, Hkv·rep, L, D], each kv head serving `rep` consecutive query heads.
fn repeat_kv(x: &Tensor, rep: i64) -> Tensor {
    if rep == 1 {
        return x.shallow_clone();
    }
    let s = x.size();
    x.unsqueeze(2).expand([s[0], s[1], rep, s[2], s[3]], false).reshape([
        s[0],
        s[1] * rep,
        s[2],
        s[3],
    ])
}

#[derive(Debug)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(p: &Path<'_>, c: &TextConfig, init: ParamInit) -> Self {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Mlp {
            gate_proj: Linear::new(&(p / "gate_proj"), h, i, false, init),
            up_proj: Linear::new(&(p / "up_proj"), h, i, false, init),
            down_proj: Linear::new(&(p / "down_proj"), i, h, false, init),
        }
    }

    fn linears(&mut self) -> [&mut Linear; 3] {
        [&mut self.gate_proj, &mut self.up_proj, &mut self.down_proj]
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.down_proj.forward(&(self.gate_proj.forward(x).silu() * self.up_proj.forward(x)))
    }
}

/// `h + Attn(norm(h))`, then `h + MLP(norm(h))`.
#[derive(Debug)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: SelfAttention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    pub fn new(p: &Path<'_>, c: &TextConfig, init: ParamInit) -> Self {
        DecoderLayer {
            input_layernorm: RmsNorm::new(&(p / "input_layernorm"), c.hidden_size, c.rms_norm_eps),
            self_attn: SelfAttention::new(&(p / "self_attn"), c, init),
            post_attention_layernorm: RmsNorm::new(
                &(p / "post_attention_layernorm"),
                c.hidden_size,
                c.rms_norm_eps,
            ),
            mlp: Mlp::new(&(p / "mlp"), c, init),
        }
    }

    /// The layer's linear modules (adapter targets).
    pub fn linears(&mut self) -> Vec<&mut Linear> {
        let mut v: Vec<&mut Linear> = self.self_attn.linears().into_iter().collect();
        v.extend(self.mlp.linears());
        v
    }

    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        layout: &AttentionLayout,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor {
        let h =
            x + self.self_attn.forward(&self.input_layernorm.forward(x), cos, sin, layout, cache);
        &h + self.mlp.forward(&self.post_attention_layernorm.forward(&h))
    }
}
