//! Rotary position embeddings: the text decoder's interleaved multimodal RoPE and the vision
//! tower's 2-D (row, column) RoPE. Angles are always computed in fp32 (a bf16 angle for a position
//! in the thousands would be off by whole radians) and cast to the activation dtype afterwards.

use tch::{Device, Kind, Tensor};

use crate::config::{TextConfig, VisionConfig};

/// `1 / theta^(2i / dim)` for i < dim / 2, in fp32 — computed with the same tensor ops as
/// transformers so the frequencies agree to the last bit.
fn inverse_frequencies(theta: f64, dim: i64, device: Device) -> Tensor {
    let exps = Tensor::arange_start_step(0, dim, 2, (Kind::Float, device)) / dim as f64;
    Tensor::pow_scalar(theta, &exps).reciprocal()
}

/// Interleaved mRoPE. Each of the `head_dim / 2` frequencies reads its angle from one axis of the
/// 3-row position ids: frequency i takes h when `i % 3 == 1 && i < 3·section[1]`, w when
/// `i % 3 == 2 && i < 3·section[2]`, and t otherwise. Text tokens have t = h = w, so for them
/// this is ordinary 1-D RoPE.
#[derive(Debug)]
pub struct TextRope {
    inv_freq: Tensor,
    /// For every frequency, which position row (0 = t, 1 = h, 2 = w) drives it.
    axis_of_freq: Tensor,
}

impl TextRope {
    pub fn new(c: &TextConfig, device: Device) -> Self {
        let half = c.head_dim / 2;
        let axes: Vec<i64> = (0..half)
            .map(|i| match i % 3 {
                1 if i < 3 * c.mrope_section[1] => 1,
                2 if i < 3 * c.mrope_section[2] => 2,
                _ => 0,
            })
            .collect();
        TextRope {
            inv_freq: inverse_frequencies(c.rope_theta, c.head_dim, device),
            axis_of_freq: Tensor::from_slice(&axes).to_device(device),
        }
    }

    /// cos and sin, each [B, L, head_dim] in `kind`, from position ids [3, B, L] (t, h, w).
    pub fn cos_sin(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let _guard = tch::no_grad_guard();
        let angles = positions.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq; // [3,B,L,F]
        let size = angles.size();
        let index =
            self.axis_of_freq.view([1, 1, 1, -1]).expand([1, size[1], size[2], size[3]], false);
        let chosen = angles.gather(0, &index, false).squeeze_dim(0); // [B, L, F]
        let emb = Tensor::cat(&[&chosen, &chosen], -1);
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }
}

/// The vision tower's axial rotary embedding: a quarter of the head's frequencies rotate with the
/// patch row, a quarter with the column, and the pair is duplicated over the two halves.
#[derive(Debug)]
pub struct VisionRope {
    inv_freq: Tensor,
}

impl VisionRope {
    pub fn new(c: &VisionConfig, device: Device) -> Self {
        let head_dim = c.hidden_size / c.num_heads;
        VisionRope { inv_freq: inverse_frequencies(c.rope_theta, head_dim / 2, device) }
    }

    /// cos and sin, each [N, head_dim] in fp32, from per-patch (row, col) [N, 2].
    pub fn cos_sin(&self, rows_cols: &Tensor) -> (Tensor, Tensor) {
        let _guard = tch::no_grad_guard();
        let angles = rows_cols.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq; // [N, 2, F]
        let n = angles.size()[0];
        let hw = angles.reshape([n, -1]); // [h freqs, w freqs]
        let emb = Tensor::cat(&[&hw, &hw], -1);
        (emb.cos(), emb.sin())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tiny_test_config;

    #[test]
    fn text_positions_with_equal_axes_reduce_to_plain_rope() {
        let c = tiny_test_config().text;
        let rope = TextRope::new(&c, Device::Cpu);
        let pos =
            Tensor::arange(7, (Kind::Int64, Device::Cpu)).view([1, 1, 7]).expand([3, 1, 7], false);
        let (cos, _) = rope.cos_sin(&pos, Kind::Float);
        let inv = inverse_frequencies(c.rope_theta, c.head_dim, Device::Cpu);
        let plain = (Tensor::arange(7, (Kind::Float, Device::Cpu)).unsqueeze(-1) * inv).cos();
        let diff = (cos.get(0).narrow(-1, 0, c.head_dim / 2) - plain).abs().max().double_value(&[]);
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn each_frequency_reads_the_axis_the_interleaving_assigns() {
        let c = tiny_test_config().text; // section [4, 2, 2]
        let rope = TextRope::new(&c, Device::Cpu);
        let axes: Vec<i64> = Vec::try_from(&rope.axis_of_freq).unwrap();
        assert_eq!(axes, vec![0, 1, 2, 0, 1, 2, 0, 0]);
    }
}
