//! Teacher-forced segments of stage 2 and their packing into micro-batches.
//!
//! A segment is one sample's sequence (prompt + answer + end of turn) with its supervision in
//! segment-local rows (row `t` is the hidden state that predicts token `t + 1`). Channel A
//! builds it from the ground-truth encoding, channel B from the clean-prefix target. Segments
//! are packed into micro-batches by the same seeded best-fit planner as stage 1 (the
//! reference's post-rollout packing, `objective_packing.md` §1.8); packing shifts the rows and
//! never changes the window loss (every term is divided by the window's totals).

use crate::objective::stage2::{RowIndex, Stage2Counts, Stage2Objective, Supervision};
use crate::trainer::workers::{Micro, MicroLoss};
use coordexp_core::config::schema::{Channel, OnOverflow, Packing};
use coordexp_core::{Error, Result};
use coordexp_model::grads::Grads;
use coordexp_model::model::Qwen3VL;
use coordexp_rollout::inputs::{RowInputs, VisionInput};
use coordexp_rollout::{Pixels, Split};
use coordexp_text::{EncodedSample, plan};
use tch::{Device, Tensor};

/// One sample's teacher-forced sequence and its supervision (segment-local rows).
pub struct Segment {
    /// Dataset index of the record.
    pub sample: u64,
    pub encoded: EncodedSample,
    pub supervision: Supervision,
}

impl Segment {
    pub fn len(&self) -> usize {
        self.encoded.len()
    }

    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }
}

/// Rows shifted by `offset` (a segment placed after `offset` tokens of a micro-batch).
fn shifted(rows: &[i64], offset: i64) -> impl Iterator<Item = i64> + '_ {
    rows.iter().map(move |r| r + offset)
}

/// The supervision of segments laid end to end, in order.
pub fn concat(segments: &[&Segment]) -> Supervision {
    let mut out = Supervision::default();
    let mut offset = 0i64;
    for s in segments {
        let sup = &s.supervision;
        let base = out.coord_rows.len();
        out.text_rows.extend(shifted(&sup.text_rows, offset));
        out.text_targets.extend_from_slice(&sup.text_targets);
        out.text_weights.extend_from_slice(&sup.text_weights);
        out.text_kinds.extend_from_slice(&sup.text_kinds);
        out.coord_rows.extend(shifted(&sup.coord_rows, offset));
        out.coord_bins.extend_from_slice(&sup.coord_bins);
        out.coord_weights.extend_from_slice(&sup.coord_weights);
        out.boxes.extend(sup.boxes.iter().map(|(slots, w)| (slots.map(|i| i + base), *w)));
        out.gate_rows.extend(shifted(&sup.gate_rows, offset));
        out.ul_rows.extend(shifted(&sup.ul_rows, offset));
        out.ul_tokens.extend_from_slice(&sup.ul_tokens);
        offset += s.len() as i64;
    }
    out
}

/// Pack segments into micro-batches of at most `packing.max_length` tokens (seeded best-fit
/// decreasing; nothing is dropped: `min_fill` does not apply after rollouts). A segment longer
/// than a pack follows `packing.on_overflow`: an error naming the record, or a pack of its own.
pub fn pack(
    segments: &[Segment],
    packing: &Packing,
    seed: u64,
    split: &Split,
) -> Result<Vec<Vec<usize>>> {
    if segments.is_empty() {
        return Ok(Vec::new());
    }
    let lengths = segments
        .iter()
        .map(|s| u32::try_from(s.len()))
        .collect::<std::result::Result<Vec<u32>, _>>()
        .map_err(|_| Error::runtime("a teacher-forced segment has more than 2^32 tokens"))?;
    let cfg = Packing { min_fill: 0.0, ..packing.clone() };
    let planned = plan(&lengths, &cfg, seed).map_err(|e| {
        match segments.iter().find(|s| s.len() > packing.max_length) {
            Some(s) if packing.on_overflow == OnOverflow::Error => e
                .at(split.location(s.sample as usize))
                .hint("the teacher-forced target (prompt + answer) is longer than packing.max_length; raise it or use packing.on_overflow: singleton"),
            _ => e,
        }
    })?;
    Ok((0..planned.len()).map(|i| planned.pack(i).iter().map(|&j| j as usize).collect()).collect())
}

/// A stage-2 micro-batch: the packed segments' model inputs and supervision.
pub struct Stage2Batch {
    pub channel: Channel,
    inputs: RowInputs,
    supervision: Supervision,
    index: RowIndex,
    rows: Tensor,
    pub sample_ids: Vec<u64>,
    pub tokens: usize,
}

impl Stage2Batch {
    /// Lay `segments` end to end (their images from `split`).
    pub fn build(
        channel: Channel,
        segments: &[&Segment],
        split: &Split,
        vision: &VisionInput<'_>,
        device: Device,
    ) -> Result<Stage2Batch> {
        let parts: Vec<(u64, &EncodedSample, &[Pixels])> = segments
            .iter()
            .map(|s| (s.sample, &s.encoded, split.items[s.sample as usize].pixels.as_slice()))
            .collect();
        let (inputs, packed) = RowInputs::build(&parts, vision, device)?;
        let supervision = concat(segments);
        let index = supervision.rows();
        let rows = Tensor::from_slice(&index.rows).to_device(device);
        Ok(Stage2Batch {
            channel,
            inputs,
            supervision,
            index,
            rows,
            sample_ids: segments.iter().map(|s| s.sample).collect(),
            tokens: packed.len(),
        })
    }

    pub fn counts(&self) -> Stage2Counts {
        self.supervision.counts()
    }

    /// The counts and tokens [`Stage2Batch::build`] would give `segments`, without building
    /// anything (a multi-process run counts the micro-batches other ranks compute).
    pub fn count(segments: &[&Segment]) -> (Stage2Counts, usize) {
        (concat(segments).counts(), segments.iter().map(|s| s.len()).sum())
    }
}

impl Micro for Stage2Batch {
    type Objective = Stage2Objective;
    type Counts = Stage2Counts;

    fn loss(
        &self,
        model: &Qwen3VL,
        objective: &Stage2Objective,
        window: &Stage2Counts,
        _grads: &mut Grads<'_>,
    ) -> Result<MicroLoss> {
        let hidden = model.forward_hidden(&self.inputs.forward_input())?;
        let h = hidden.size().last().copied().unwrap_or(0);
        let logits = model.logits(&hidden.reshape([-1, h]).index_select(0, &self.rows));
        let loss = objective.loss(self.channel, &self.supervision, &self.index, &logits, window)?;
        Ok(MicroLoss { total: loss.total, terms: loss.terms })
    }
}
