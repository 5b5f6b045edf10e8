//! Stage-2 trainer invariants on the tiny fixture: both channels train and log their metrics,
//! the window loss does not depend on how the segments were packed or split, a run resumes
//! bit-identically, and every drop is counted.

use super::stage2::channel_b::{self, SampleDecision};
use super::stage2::segment::{Segment, Stage2Batch};
use super::stage2::supervise;
use super::tests::{
    Fixture, backward_window, copy_at, fixture, logged_steps, max_diff, parts, quiet, resume,
};
use super::*;
use crate::objective::stage2::{Stage2Counts, Stage2Objective};
use coordexp_core::config::schema::Channel;
use coordexp_core::coordjson::render;
use coordexp_core::norm1000::Bin;
use coordexp_core::record::{Desc, Geometry, Object};
use coordexp_model::generate::StopReason;
use coordexp_rollout::backend::{
    BackendError, RequestResult, Rollout, RolloutBackend, RolloutRequest,
};
use coordexp_rollout::{Item, Split};
use coordexp_text::Encoder;
use std::path::Path;
use tch::{Device, Kind, Tensor};

const STAGE2: &str = "data:\n  val: null\ntrain:\n  stage: stage2\n  max_steps: 4\n  log_every: 1\n  eval_every: 0\n  save_every: 2\n  keep_last: 0\nrollout:\n  max_new_tokens: 24\nstage2:\n  schedule: {b_ratio: 0.5}\n";

/// The anchor a scripted model writes for a record: its first object twice (a duplicate), the
/// rest but the last (a miss), and a far-away extra object (a false positive).
fn anchor_text(item: &Item) -> String {
    let objects = channel_b::ground_truth(&item.record).unwrap();
    let mut out: Vec<Object<Bin>> = Vec::new();
    if let Some(first) = objects.first() {
        out.push(first.clone());
        out.push(first.clone());
    }
    if objects.len() > 2 {
        out.extend(objects[1..objects.len() - 1].iter().cloned());
    }
    let b = |k: u16| Bin::new(k).unwrap();
    out.push(Object::new(
        Desc::new("purple star").unwrap(),
        Geometry::BBox([b(990), b(990), b(998), b(998)]),
    ));
    render(&out, coordexp_core::coordjson::FieldOrder::DescFirst)
}

/// The ground-truth answer of a record (what a perfect model writes).
fn gt_text(item: &Item) -> String {
    render(
        &channel_b::ground_truth(&item.record).unwrap(),
        coordexp_core::coordjson::FieldOrder::DescFirst,
    )
}

/// A rollout backend that writes [`anchor_text`] for anchors and the ground truth for
/// explorers, through the learner's tokenizer; `wrong_prompt` reports other prompt ids.
struct Scripted {
    encoder: Encoder,
    im_end: i64,
    wrong_prompt: bool,
}

impl Scripted {
    fn new(f: &Fixture, wrong_prompt: bool) -> Scripted {
        let p = parts(f);
        let im_end = p.session.stop_ids().unwrap()[0];
        Scripted { encoder: p.session.encoder.clone(), im_end, wrong_prompt }
    }
}

impl RolloutBackend for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn generate(
        &mut self,
        requests: &[RolloutRequest<'_>],
    ) -> Result<Vec<RequestResult>, BackendError> {
        requests
            .iter()
            .map(|r| -> Result<RequestResult, BackendError> {
                let text = if r.decoding.temperature == 0.0 {
                    anchor_text(r.item)
                } else {
                    gt_text(r.item)
                };
                let mut tokens: Vec<i64> = self
                    .encoder
                    .answer_tokens(r.item.sizes().len(), &text)
                    .map_err(BackendError::Engine)?
                    .into_iter()
                    .map(|(id, _)| i64::from(id))
                    .collect();
                tokens.push(self.im_end);
                let mut prompt_ids = r.prompt_ids.to_vec();
                if self.wrong_prompt {
                    prompt_ids.push(0);
                }
                Ok(Ok(vec![Rollout {
                    logprobs: vec![0.0; tokens.len()],
                    tokens,
                    stop: StopReason::StopToken,
                    prompt_ids,
                    weight_version: 0,
                }]))
            })
            .collect()
    }
}

fn metrics_of(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["metrics"].clone())
        .collect()
}

#[test]
fn a_stage2_run_trains_both_channels_and_logs_their_terms_and_rollout_counters() {
    let f = fixture(STAGE2);
    let backend = Box::new(Scripted::new(&f, false));
    let run = train(&f.loaded(), TrainOptions { backend: Some(backend), ..quiet() }).unwrap();
    assert_eq!(run.steps, 4);
    assert!(
        run.step_losses.iter().all(|(_, l)| l.is_finite() && *l > 0.0),
        "{:?}",
        run.step_losses
    );
    let m = metrics_of(&run.run_dir);
    // b = 0.5: steps 2 and 4 run channel B.
    let has = |i: usize, k: &str| m[i][k].as_f64().is_some();
    assert!(has(0, "loss/text/struct_ce") && !has(0, "loss/B_rollout_text/struct_ce"));
    assert!(has(1, "loss/B_rollout_text/struct_ce") && has(1, "loss/B_coord/bbox_ciou"));
    assert_eq!(m[3]["stage2_ab/b_ratio_realized"].as_f64(), Some(0.5));
    // The scripted anchor: one duplicate, one miss and one false positive per record.
    let b = &m[1];
    let n = |k: &str| b[k].as_f64().unwrap_or_else(|| panic!("no {k} in {b}"));
    assert!(n("stage2_ab/channel_b/dup/N_objects_suppressed") > 0.0);
    assert!(n("rollout/fn_count") > 0.0);
    assert!(n("rollout/fp_count") > 0.0);
    assert!(n("rollout/matched_for_supervision_count") > 0.0);
    assert!(n("loss/B_rollout_text/duplicate_burst_unlikelihood") > 0.0);
    assert!(n("stage2_ab/channel_b/dup/N_ul_boundaries") > 0.0);
    let p = n("rollout/precision_rate");
    assert!(p > 0.0 && p < 1.0, "{p}");
    assert_eq!(n("stage2_ab/channel_b/invalid_rollout"), 0.0);
    assert!(n("time/rollout_generate_s") >= 0.0);
}

#[test]
fn samples_whose_prompt_ids_differ_are_dropped_and_counted_and_training_goes_on() {
    let f = fixture(&STAGE2.replace("b_ratio: 0.5", "b_ratio: 1.0"));
    let backend = Box::new(Scripted::new(&f, true));
    let run = train(&f.loaded(), TrainOptions { backend: Some(backend), ..quiet() }).unwrap();
    assert_eq!(run.steps, 4);
    let m = metrics_of(&run.run_dir);
    let dropped: f64 =
        m.iter().map(|x| x["stage2_ab/channel_b/prompt_tok_mismatch"].as_f64().unwrap()).sum();
    let raw: f64 = m.iter().map(|x| x["stage2/raw_rollouts"].as_f64().unwrap()).sum();
    assert!(dropped > 0.0);
    assert_eq!(raw, 2.0 * dropped, "every sample (2 views each) was dropped and counted");
    assert!(m.iter().all(|x| x["stage2/steps_without_segments"].as_f64() == Some(1.0)));
}

#[test]
fn a_stage2_run_with_the_embedded_engine_resumes_bit_identically() {
    let f = fixture(&format!("{STAGE2}  channel_b: {{triage: {{num_rollouts: 2}}}}\n"));
    let full = train(&f.loaded(), quiet()).unwrap();
    assert_eq!(full.step_losses.len(), 4);
    let copy = copy_at(&full.run_dir, &f.dir.path().join("copy"), 2);
    let resumed = train(&f.loaded(), resume(&copy)).unwrap();
    assert_eq!(resumed.step_losses, full.step_losses[2..].to_vec());
    assert_eq!(logged_steps(&copy, "train"), vec![1, 2, 3, 4]);
    // An untrained model writes no valid CoordJSON: every anchor is invalid, trained on an
    // empty prefix with every object injected, and counted.
    let m = metrics_of(&full.run_dir);
    assert_eq!(
        m[1]["stage2_ab/channel_b/invalid_rollout"].as_f64(),
        m[1]["stage2/channel_b_samples"].as_f64()
    );
}

/// Channel-A and channel-B segments of the fixture's first records.
fn segments(p: &super::tests::Parts, cfg: &Config) -> Vec<Segment> {
    let coord = coord_ids(&p.session);
    let mut out = Vec::new();
    for i in 0..4 {
        let supervision = supervise::channel_a(
            &p.samples[i],
            &p.session.encoder,
            cfg.prompt.field_order,
            coord,
            &cfg.stage2.objective.token_ce,
        )
        .unwrap();
        out.push(Segment { sample: i as u64, encoded: p.samples[i].clone(), supervision });
    }
    let settings = channel_b::settings(cfg);
    for i in 4..8 {
        let item = &p.split.items[i];
        let gt = channel_b::ground_truth(&item.record).unwrap();
        let explorer = gt_text(item);
        let decision = coordexp_stage2::decide(
            &anchor_text(item),
            &[explorer.as_str()],
            &gt,
            &settings,
            cfg.prompt.field_order,
        );
        let d = SampleDecision { sample: i as u64, decision, new_tokens: vec![] };
        let (segment, _) =
            channel_b::encode_decision(&p.session.encoder, item, &d, String::new).unwrap();
        out.push(segment);
    }
    out
}

/// Loss and gradients of a stage-2 window made of `groups` micro-batches (segment indices).
fn window_loss(
    p: &super::tests::Parts,
    objective: &Stage2Objective,
    split: &Split,
    segs: &[Segment],
    groups: &[&[usize]],
    channel: Channel,
) -> (f64, Vec<Tensor>) {
    let vision = p.session.vision(&p.model);
    let micro: Vec<Stage2Batch> = groups
        .iter()
        .map(|g| {
            let refs: Vec<&Segment> = g.iter().map(|&i| &segs[i]).collect();
            Stage2Batch::build(channel, &refs, split, &vision, Device::Cpu).unwrap()
        })
        .collect();
    let window: Stage2Counts = micro.iter().map(Stage2Batch::counts).sum();
    backward_window(&p.model, &micro, |m, g| m.loss(&p.model, objective, &window, g))
}

#[test]
fn a_stage2_window_loss_does_not_depend_on_packing_or_accumulation() {
    let f = fixture(STAGE2);
    let loaded = f.loaded();
    let cfg = &loaded.config;
    let p = parts(&f);
    let segs = segments(&p, cfg);
    let objective = Stage2Objective::new(&cfg.stage2.objective, coord_ids(&p.session), Device::Cpu);
    for (channel, ids) in [(Channel::A, [0usize, 1, 2, 3]), (Channel::B, [4, 5, 6, 7])] {
        let one: &[&[usize]] = &[&ids];
        let two: &[&[usize]] = &[&ids[..1], &ids[1..]];
        let four: &[&[usize]] = &[&ids[3..], &ids[1..2], &ids[2..3], &ids[..1]];
        let (la, ga) = window_loss(&p, &objective, &p.split, &segs, one, channel);
        assert!(la.is_finite() && la > 0.0, "{channel:?}: {la}");
        assert!(ga.iter().any(|g| g.abs().sum(Kind::Float).double_value(&[]) > 0.0));
        for split in [two, four] {
            let (lb, gb) = window_loss(&p, &objective, &p.split, &segs, split, channel);
            assert!((la - lb).abs() <= 1e-5 * la.abs().max(1.0), "{channel:?}: {la} vs {lb}");
            let d = max_diff(&ga, &gb);
            assert!(d <= 1e-5, "{channel:?}: gradients differ by {d}");
        }
    }
}

#[test]
fn every_supervised_row_predicts_its_own_next_token_and_coordinate_targets_line_up() {
    let f = fixture(STAGE2);
    let loaded = f.loaded();
    let cfg = &loaded.config;
    let p = parts(&f);
    let coord = coord_ids(&p.session);
    let im_end = p.session.stop_ids().unwrap()[0];
    let mut ul_rows = 0;
    for s in segments(&p, cfg) {
        let ids: Vec<i64> = s.encoded.input_ids.iter().map(|&i| i64::from(i)).collect();
        let sup = &s.supervision;
        let next = |row: i64| ids[row as usize + 1];
        for (row, target) in sup.text_rows.iter().zip(&sup.text_targets) {
            assert_eq!(next(*row), *target, "sample {}: text row {row}", s.sample);
        }
        // The scripted anchor keeps exact ground-truth boxes and the injected objects are ground
        // truth: every coordinate target is the coordinate token that follows its row.
        for (row, bin) in sup.coord_rows.iter().zip(&sup.coord_bins) {
            assert_eq!(
                coord.bin(next(*row)),
                Some(*bin),
                "sample {}: coordinate row {row}",
                s.sample
            );
        }
        for (slots, w) in &sup.boxes {
            let b: Vec<i64> = slots.iter().map(|&k| sup.coord_bins[k]).collect();
            assert!(
                b[0] <= b[2] && b[1] <= b[3] && *w > 0.0,
                "box slots out of x1 y1 x2 y2 order: {b:?}"
            );
        }
        for (row, token) in sup.ul_rows.iter().zip(&sup.ul_tokens) {
            assert_ne!(next(*row), *token, "an unlikelihood target pushes down the clean token");
            ul_rows += 1;
        }
        let eot = sup.text_targets.iter().filter(|&&t| t == im_end).count();
        assert_eq!(eot, 1, "sample {}: the end of turn is supervised once", s.sample);
    }
    assert!(ul_rows > 0, "the scripted duplicates give unlikelihood rows");
}
