//! Who attends to whom, and the one call that computes attention.
//!
//! Training packs several samples into one row; attention must then be causal *within* each
//! sample and blind across samples. The sample boundaries come from `cu_seqlens` (cumulative
//! lengths `[0, l0, l0+l1, …, L]`), never from the mRoPE rows, which are not monotone across an
//! image. Two equivalent executions exist: [`AttentionLayout::Packed`] is one
//! `scaled_dot_product_attention` call with a block-diagonal boolean mask (one kernel launch, L²
//! mask memory), [`AttentionLayout::Segments`] is one causal call per segment (no mask, Σ lᵢ²
//! work; the faster choice on CPU and for few long segments). Both keep `cu_seqlens`, which is
//! what a varlen flash-attention kernel takes, so one can replace either without changing any
//! caller. Padded batches and cached decoding use an explicit mask ([`AttentionLayout::Masked`]).

use coordexp_core::Error;
use tch::{Device, Kind, Tensor};

/// The visibility pattern of one attention call.
#[derive(Debug)]
pub enum AttentionLayout {
    /// Every row is one causal sequence; no padding, no cache offset.
    Causal,
    /// Row 0 holds several sequences back to back: causal inside each, nothing across; computed
    /// with one masked call.
    Packed {
        cu_seqlens: Vec<i64>,
        /// [1, 1, L, L], true where attention is allowed.
        mask: Tensor,
    },
    /// An explicit mask [B, 1, Lq, Lk], true where attention is allowed (padded batches and
    /// cached decoding).
    Masked(Tensor),
    /// Row 0 holds several sequences back to back, like [`AttentionLayout::Packed`], but each
    /// segment is attended on its own (causal SDPA per segment). Same result, no `[L, L]` mask,
    /// and Σ lᵢ² instead of L² work: the trainer's choice on CPU, where a dense mask over a
    /// 2k-token pack costs more than the rest of a tiny model.
    Segments { cu_seqlens: Vec<i64> },
}

impl AttentionLayout {
    /// The masked layout for a packed row of `total` tokens split at `cu_seqlens`.
    pub fn packed(cu_seqlens: &[i64], total: i64, device: Device) -> Result<Self, Error> {
        validate_cu_seqlens(cu_seqlens, total)?;
        if cu_seqlens.len() == 2 {
            return Ok(AttentionLayout::Causal);
        }
        let seg = segment_ids(cu_seqlens, device);
        let same = seg.unsqueeze(1).eq_tensor(&seg.unsqueeze(0));
        let pos = Tensor::arange(total, (Kind::Int64, device));
        let causal = pos.unsqueeze(0).le_tensor(&pos.unsqueeze(1));
        let mask = same.logical_and(&causal).view([1, 1, total, total]);
        Ok(AttentionLayout::Packed { cu_seqlens: cu_seqlens.to_vec(), mask })
    }

    /// The per-segment layout for a packed row of `total` tokens split at `cu_seqlens` (see
    /// [`AttentionLayout::Segments`]).
    pub fn segments(cu_seqlens: &[i64], total: i64) -> Result<Self, Error> {
        validate_cu_seqlens(cu_seqlens, total)?;
        if cu_seqlens.len() == 2 {
            return Ok(AttentionLayout::Causal);
        }
        Ok(AttentionLayout::Segments { cu_seqlens: cu_seqlens.to_vec() })
    }

    /// Attention of q [B, H, Lq, D] over k, v [B, H, Lk, D] under this layout.
    pub fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
        match self {
            AttentionLayout::Causal => sdpa(q, k, v, None, true, scale),
            AttentionLayout::Packed { mask, .. } | AttentionLayout::Masked(mask) => {
                sdpa(q, k, v, Some(mask), false, scale)
            }
            AttentionLayout::Segments { cu_seqlens } => {
                segmentwise(q, k, v, cu_seqlens, true, scale)
            }
        }
    }
}

/// `cu_seqlens` must start at 0, strictly increase (no empty segment) and end at `total`.
pub fn validate_cu_seqlens(cu_seqlens: &[i64], total: i64) -> Result<(), Error> {
    let ok = cu_seqlens.len() >= 2
        && cu_seqlens[0] == 0
        && cu_seqlens.windows(2).all(|w| w[0] < w[1])
        && cu_seqlens.last() == Some(&total);
    if ok {
        Ok(())
    } else {
        Err(Error::input(format!(
            "cu_seqlens {cu_seqlens:?} do not split a row of {total} tokens into non-empty segments"
        ))
        .hint("cu_seqlens must be [0, l0, l0+l1, …, total] with every segment length > 0"))
    }
}

/// The segment index of every position: [L] int64.
fn segment_ids(cu_seqlens: &[i64], device: Device) -> Tensor {
    let lens: Vec<i64> = cu_seqlens.windows(2).map(|w| w[1] - w[0]).collect();
    let ids = Tensor::arange(lens.len() as i64, (Kind::Int64, Device::Cpu));
    ids.repeat_interleave_self_tensor(&Tensor::from_slice(&lens), 0, None).to_device(device)
}

fn sdpa(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    scale: f64,
) -> Tensor {
    Tensor::scaled_dot_product_attention(q, k, v, mask, 0.0, causal, scale, false)
}

/// Attention computed separately inside each segment of the sequence axis (dim 2) of q, k, v
/// [B, H, N, D]: exact block-diagonal attention, causal or not.
fn segmentwise(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens: &[i64],
    causal: bool,
    scale: f64,
) -> Tensor {
    if cu_seqlens.len() == 2 {
        return sdpa(q, k, v, None, causal, scale);
    }
    let outs: Vec<Tensor> = cu_seqlens
        .windows(2)
        .map(|w| {
            let (s, n) = (w[0], w[1] - w[0]);
            sdpa(&q.narrow(2, s, n), &k.narrow(2, s, n), &v.narrow(2, s, n), None, causal, scale)
        })
        .collect();
    Tensor::cat(&outs, 2)
}

/// Non-causal attention within each segment (one per image frame in the vision tower).
pub fn bidirectional_segments(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens: &[i64],
    scale: f64,
) -> Tensor {
    segmentwise(q, k, v, cu_seqlens, false, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_mask_is_causal_inside_segments_and_blind_across() {
        let layout = AttentionLayout::packed(&[0, 2, 5], 5, Device::Cpu).unwrap();
        let AttentionLayout::Packed { mask, .. } = layout else {
            panic!("expected a packed layout")
        };
        let m: Vec<Vec<bool>> = (0..5)
            .map(|i| Vec::try_from(mask.get(0).get(0).get(i).to_kind(Kind::Bool)).unwrap())
            .collect();
        assert_eq!(m[1], vec![true, true, false, false, false]);
        assert_eq!(m[2], vec![false, false, true, false, false]);
        assert_eq!(m[4], vec![false, false, true, true, true]);
    }

    #[test]
    fn per_segment_attention_equals_the_block_diagonal_mask() {
        let cu = [0i64, 3, 4, 9];
        let (q, k, v) = (
            Tensor::randn([1, 2, 9, 4], (Kind::Float, Device::Cpu)),
            Tensor::randn([1, 2, 9, 4], (Kind::Float, Device::Cpu)),
            Tensor::randn([1, 2, 9, 4], (Kind::Float, Device::Cpu)),
        );
        let dense = AttentionLayout::packed(&cu, 9, Device::Cpu).unwrap().attend(&q, &k, &v, 0.5);
        let seg = AttentionLayout::segments(&cu, 9).unwrap().attend(&q, &k, &v, 0.5);
        assert!((dense - seg).abs().max().double_value(&[]) < 1e-6);
        assert!(AttentionLayout::segments(&[0, 2, 2, 9], 9).is_err());
    }

    #[test]
    fn a_single_segment_is_plain_causal_and_bad_boundaries_are_errors() {
        assert!(matches!(
            AttentionLayout::packed(&[0, 4], 4, Device::Cpu).unwrap(),
            AttentionLayout::Causal
        ));
        assert!(AttentionLayout::packed(&[0, 2, 2, 4], 4, Device::Cpu).is_err());
        assert!(AttentionLayout::packed(&[0, 3], 4, Device::Cpu).is_err());
        assert!(AttentionLayout::packed(&[1, 4], 4, Device::Cpu).is_err());
    }
}
