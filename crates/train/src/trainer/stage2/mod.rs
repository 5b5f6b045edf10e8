//! The stage-2 step kinds: channel A and channel B (`stage2_current.md`, DESIGN "Stage 2").
//!
//! Both consume the same data stream as stage 1 — the samples of `accumulation × micro_batch`
//! packs of the seeded epoch plan per optimizer step — so a resumed run sees exactly the samples
//! the uninterrupted run would have, whichever channel a step runs.
//!
//! - Channel A trains those packs as they are (teacher forcing on the ground truth) with the
//!   stage-2 objective.
//! - Channel B rolls the samples out ([`channel_b`]), turns each into a clean-prefix segment,
//!   packs the segments anew and trains them. Rollouts are re-derived from the seeds on resume
//!   (the embedded engine is deterministic on CPU), so nothing is stored with the checkpoint.
//!
//! The schedule ([`Stage2Plan`]): step `s` (0-based) runs channel B iff ⌊(s+1)·b⌋ > ⌊s·b⌋.

pub mod channel_b;
pub mod inspect;
pub mod segment;
pub mod share;
pub mod supervise;

use crate::objective::CoordIds;
use crate::objective::stage2::{Stage2Counts, Stage2Objective, term_names};
use coordexp_core::config::schema::Channel;
use coordexp_core::{Result, seed};
use coordexp_text::Encoder;
use std::time::Instant;

use super::epochs::{Cursor, Epochs};
use super::step::{StepKind, StepOutcome, StepPlan, StepTools, Window, optimize_window};
use super::workers::Workers;
use segment::{Segment, Stage2Batch};
use share::Generation;

/// The stage-2 schedule: channel B on ⌊(s+1)·b⌋ > ⌊s·b⌋, channel A otherwise.
pub struct Stage2Plan {
    pub b_ratio: f64,
}

impl StepPlan for Stage2Plan {
    fn kind(&self, step: u64) -> StepKind {
        let s = step.saturating_sub(1) as f64;
        let b = self.b_ratio;
        if ((s + 1.0) * b).floor() > (s * b).floor() {
            StepKind::ChannelB
        } else {
            StepKind::ChannelA
        }
    }
}

/// The stage-2 step kinds' state: the objective, the workers and the rollout backend.
pub struct Stage2Step {
    pub objective: Stage2Objective,
    pub workers: Workers<Stage2Objective>,
    pub coord: CoordIds,
}

impl Stage2Step {
    /// Channel A: the window's packs from the stream, teacher-forced on the ground truth.
    pub fn run_a(
        &mut self,
        tools: &mut StepTools<'_>,
        encoder: &Encoder,
        epochs: &mut Epochs<'_>,
        step: u64,
        cursor: &mut Cursor,
    ) -> Result<StepOutcome> {
        let cfg = tools.cfg;
        let started = Instant::now();
        let mut groups = Vec::new();
        for _ in 0..cfg.train.accumulation_steps().max(1) {
            let mut segments = Vec::new();
            for _ in 0..cfg.train.micro_batch.max(1) {
                for (i, encoded) in epochs.take(cursor)? {
                    let supervision = supervise::channel_a(
                        &encoded,
                        encoder,
                        cfg.prompt.field_order,
                        self.coord,
                        &cfg.stage2.objective.token_ce,
                    )
                    .map_err(|e| e.at(tools.split.location(i as usize)))?;
                    segments.push(Segment { sample: i, encoded, supervision });
                }
            }
            groups.push(segments);
        }
        let groups: Vec<Vec<&Segment>> = groups.iter().map(|g| g.iter().collect()).collect();
        let window = window(Channel::A, &groups, tools)?;
        let encoded = started.elapsed().as_secs_f64();
        let mut out = self.optimize(window, tools, step)?;
        out.counters.push(("time/channel_a_encode_s".into(), encoded));
        out.counters.push(("stage2/channel_a".into(), 1.0));
        Ok(out)
    }

    /// Channel B: the window's samples rolled out, decided, re-serialised and packed.
    pub fn run_b(
        &mut self,
        tools: &mut StepTools<'_>,
        encoder: &Encoder,
        generation: &mut Generation<'_>,
        epochs: &mut Epochs<'_>,
        step: u64,
        cursor: &mut Cursor,
    ) -> Result<StepOutcome> {
        let cfg = tools.cfg;
        let mut samples = Vec::new();
        for _ in 0..cfg.train.accumulation_steps().max(1) * cfg.train.micro_batch.max(1) {
            samples.extend(epochs.take(cursor)?.into_iter().map(|(i, _)| i));
        }
        let rolled = tch::no_grad(|| {
            channel_b::roll_out(cfg, encoder, generation, tools.split, &samples, step)
        })?;
        let pack_start = Instant::now();
        let packs = segment::pack(
            &rolled.segments,
            &cfg.packing,
            seed::step_seed(cfg.run.seed, step),
            tools.split,
        )?;
        let groups: Vec<Vec<&Segment>> =
            packs.iter().map(|p| p.iter().map(|&i| &rolled.segments[i]).collect()).collect();
        let window = window(Channel::B, &groups, tools)?;
        let packed = pack_start.elapsed().as_secs_f64();
        let mut out = if window.micro.is_empty() {
            // Every sample of the step was dropped (counted): the step passes without an update
            // (no parameter has a gradient), so the schedule and the step count stay aligned.
            let none = (0..tools.optimizer.params().count()).map(|_| None).collect();
            let stats = tools.optimizer.step_with(none)?;
            StepOutcome {
                loss: 0.0,
                terms: Vec::new(),
                stats,
                tokens: 0,
                supervised: 0,
                samples: 0,
                counters: vec![("stage2/steps_without_segments".to_string(), 1.0)],
                trained: false,
            }
        } else {
            self.optimize(window, tools, step)?
        };
        out.counters.extend(rolled.counters);
        let [generate, decide, encode] = rolled.times;
        out.counters.extend([
            ("time/rollout_generate_s".to_string(), generate),
            ("time/rollout_decide_s".to_string(), decide),
            ("time/channel_b_encode_s".to_string(), encode),
            ("time/channel_b_pack_s".to_string(), packed),
            ("stage2/channel_b".to_string(), 1.0),
        ]);
        out.samples = samples.len() as u64;
        Ok(out)
    }

    fn optimize(
        &mut self,
        window: Window<Stage2Batch>,
        tools: &mut StepTools<'_>,
        step: u64,
    ) -> Result<StepOutcome> {
        let started = Instant::now();
        let supervised = window.counts.slots + window.counts.text_tokens;
        let done = optimize_window(window, &mut self.workers, &self.objective, tools, step)?;
        let mut out = done.outcome(supervised);
        out.counters.push(("time/forward_backward_s".to_string(), started.elapsed().as_secs_f64()));
        Ok(out)
    }
}

/// Micro-batch `i` of the window lays `groups[i]` end to end; every rank counts every
/// micro-batch and builds only its own ([`Window`]).
fn window(
    channel: Channel,
    groups: &[Vec<&Segment>],
    tools: &StepTools<'_>,
) -> Result<Window<Stage2Batch>> {
    let (rank, world) = tools.dist.map_or((0, 1), |g| (g.rank(), g.world()));
    let mut w = Window {
        micro: Vec::with_capacity(groups.len()),
        counts: Stage2Counts::default(),
        ids: Vec::with_capacity(groups.len()),
        tokens: 0,
        terms: term_names(channel),
    };
    for (i, segments) in groups.iter().enumerate() {
        w.ids.push(segments.iter().map(|s| s.sample).collect());
        if i % world != rank {
            let (counts, tokens) = Stage2Batch::count(segments);
            w.counts += counts;
            w.tokens += tokens as u64;
            w.micro.push(None);
            continue;
        }
        let batch =
            Stage2Batch::build(channel, segments, tools.split, &tools.vision, tools.device)?;
        w.counts += batch.counts();
        w.tokens += batch.tokens as u64;
        w.micro.push(Some(batch));
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_b_schedule_runs_b_on_the_floor_increments_and_realises_the_ratio() {
        let kinds = |b: f64| -> Vec<StepKind> {
            let p = Stage2Plan { b_ratio: b };
            (1..=20).map(|s| p.kind(s)).collect()
        };
        assert!(kinds(0.0).iter().all(|k| *k == StepKind::ChannelA));
        assert!(kinds(1.0).iter().all(|k| *k == StepKind::ChannelB));
        let half = kinds(0.5);
        assert_eq!(half.iter().filter(|k| **k == StepKind::ChannelB).count(), 10);
        // s = 0: ⌊0.5⌋ = 0 = ⌊0⌋ → A; s = 1: ⌊1.0⌋ = 1 > ⌊0.5⌋ = 0 → B.
        assert_eq!(&half[..2], &[StepKind::ChannelA, StepKind::ChannelB]);
        let b85 = kinds(0.85);
        assert_eq!(b85.iter().filter(|k| **k == StepKind::ChannelB).count(), 17);
    }
}
