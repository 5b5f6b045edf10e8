//! A packed batch: several encoded samples laid end to end in one sequence.
//!
//! Attention inside a pack is block-diagonal per segment, driven by `cu_seqlens` (never by the
//! position rows, which are not monotone across an image), and positions restart at 0 in every
//! segment. Labels are not shifted: the last token of a segment is followed by the first token
//! of the next, a prompt token labelled −100, so no label leaks across segments.

use crate::mrope::GridThw;
use crate::mrope::PositionIds;
use crate::sample::{EncodedSample, TokenType};
use serde::Serialize;

/// Where one sample sits in a pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// The caller's id for the sample (e.g. its index in the dataset).
    pub sample_id: u64,
    pub offset: usize,
    pub len: usize,
    pub image_grid_thw: Vec<GridThw>,
}

/// The model inputs of one pack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackedBatch {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
    pub token_types: Vec<TokenType>,
    pub position_ids: PositionIds,
    /// `[0, len₁, len₁+len₂, …, total]`.
    pub cu_seqlens: Vec<i32>,
    /// All images of all segments, in order (the vision tower's `grid_thw`).
    pub image_grid_thw: Vec<GridThw>,
    pub segments: Vec<Segment>,
}

impl PackedBatch {
    /// Concatenate `(sample_id, sample)` pairs in the given order.
    pub fn assemble<'a>(parts: impl IntoIterator<Item = (u64, &'a EncodedSample)>) -> PackedBatch {
        let mut b = PackedBatch {
            input_ids: Vec::new(),
            labels: Vec::new(),
            token_types: Vec::new(),
            position_ids: PositionIds::default(),
            cu_seqlens: vec![0],
            image_grid_thw: Vec::new(),
            segments: Vec::new(),
        };
        for (sample_id, s) in parts {
            let offset = b.input_ids.len();
            b.input_ids.extend_from_slice(&s.input_ids);
            b.labels.extend_from_slice(&s.labels);
            b.token_types.extend_from_slice(&s.token_types);
            b.position_ids.extend(&s.position_ids);
            b.image_grid_thw.extend_from_slice(&s.image_grid_thw);
            b.cu_seqlens.push(b.input_ids.len() as i32);
            b.segments.push(Segment {
                sample_id,
                offset,
                len: s.len(),
                image_grid_thw: s.image_grid_thw.clone(),
            });
        }
        b
    }

    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}
