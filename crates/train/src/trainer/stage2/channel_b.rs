//! Channel B before the forward pass: rollouts → decisions → clean-prefix segments.
//!
//! Per sample (`stage2_current.md` §2–§3): one greedy anchor and `num_rollouts − 1` sampled
//! explorers through the rollout backend ([`Generation`]), each view with its own seed
//! (`seed::rollout_seed(root, step, record, view)`, DESIGN decision 8); the backend's prompt
//! ids checked against the learner's (a mismatch drops the sample, counted); the views parsed,
//! de-duplicated, matched and triaged by `coordexp_stage2::decide`; the clean target encoded
//! through the learner's encoder and supervised by its role table; the duplicate-burst
//! alternatives tokenised through the same encoder (one path). An invalid anchor is not
//! dropped: it trains on an empty prefix with every ground-truth object injected (counted).
//!
//! Nothing here is dropped without a counter (`Rolled::counters`).

use coordexp_core::config::schema::{Config, Decoding, InsertionOrder};
use coordexp_core::norm1000::Bin;
use coordexp_core::record::{Object, Objects, Record};
use coordexp_core::{Error, Result, seed};
use coordexp_model::generate::StopReason;
use coordexp_rollout::backend::{Rollout, RolloutRequest};
use coordexp_rollout::predict::decode_with_coords;
use coordexp_rollout::{Item, Split};
use coordexp_stage2::matching::MatchSettings;
use coordexp_stage2::{Decision, DuplicateSettings, PseudoPositiveSettings, Settings, decide};
use coordexp_text::{Answer, Encoder, Turn};
use std::time::Instant;

use super::segment::Segment;
use super::share::{Generation, Reply};
use super::supervise;

/// The channel-B settings of a config, in `coordexp_stage2` terms (one conversion).
pub fn settings(cfg: &Config) -> Settings {
    let b = &cfg.stage2.channel_b;
    let ce = &cfg.stage2.objective.token_ce;
    Settings {
        duplicate: DuplicateSettings {
            iou_threshold: b.duplicate_control.iou_threshold,
            center_radius_scale: b.duplicate_control.center_radius_scale,
        },
        unlabeled_consistent_iou_threshold: b.triage.unlabeled_consistent_iou_threshold,
        matching: MatchSettings {
            candidate_top_k: b.matching.candidate_top_k,
            gate: b.matching.gate,
            mask_resolution: b.matching.mask_resolution,
            fp_cost: b.matching.fp_cost,
            fn_cost: b.matching.fn_cost,
        },
        insertion_order: match b.insertion_order {
            InsertionOrder::TailAppend => coordexp_stage2::InsertionOrder::TailAppend,
            InsertionOrder::Sorted => coordexp_stage2::InsertionOrder::Sorted,
        },
        global_prefix_weight: ce.rollout_global_prefix_struct_ce_weight,
        fn_desc_weight: ce.rollout_fn_desc_weight,
        recovered_gt_weight_multiplier: b.triage.recovered_ground_truth_weight_multiplier,
        pseudo_positive: PseudoPositiveSettings {
            enabled: b.pseudo_positive.enabled,
            coord_weight: b.pseudo_positive.coord_weight,
        },
    }
}

/// The decoding of view `view` (0 = the anchor: greedy whatever `rollout.decoding` says, §3.1;
/// explorers: the triage's explorer settings); the repetition penalty applies to every view.
pub fn view_decoding(cfg: &Config, view: usize) -> Decoding {
    let penalty = cfg.rollout.decoding.repetition_penalty;
    if view == 0 {
        return Decoding { temperature: 0.0, top_p: 1.0, top_k: -1, repetition_penalty: penalty };
    }
    let e = &cfg.stage2.channel_b.triage.explorer;
    Decoding {
        temperature: e.temperature,
        top_p: e.top_p,
        top_k: e.top_k,
        repetition_penalty: penalty,
    }
}

/// The teacher-forced segments of one channel-B step and what happened on the way.
pub struct Rolled {
    pub segments: Vec<Segment>,
    pub counters: Vec<(String, f64)>,
    /// Seconds generating, deciding (parse, duplicates, matching, triage) and encoding.
    pub times: [f64; 3],
}

/// The decided rollouts of one record.
pub struct SampleDecision {
    pub sample: u64,
    pub decision: Decision,
    /// Tokens generated per view.
    pub new_tokens: Vec<usize>,
}

/// Roll out `samples` (dataset indices) at optimizer step `step` and build their segments. In
/// a multi-process run each request is generated on the rank `generation` names and every rank
/// gets every answer (`share`), so every rank builds the same segments.
pub fn roll_out(
    cfg: &Config,
    encoder: &Encoder,
    generation: &mut Generation<'_>,
    split: &Split,
    samples: &[u64],
    step: u64,
) -> Result<Rolled> {
    let started = Instant::now();
    let views = cfg.stage2.channel_b.triage.num_rollouts.max(1) as usize;
    let mut counters = Counters::default();
    // The learner's generation prompt of every sample.
    let mut prompts = Vec::with_capacity(samples.len());
    for &i in samples {
        let item = &split.items[i as usize];
        let p = encoder
            .encode(&item.sizes(), Turn::Generate)
            .map_err(|e| e.at(split.location(i as usize)))?;
        prompts.push(p.input_ids.iter().map(|&t| i64::from(t)).collect::<Vec<i64>>());
    }
    // View-major requests: every anchor, then every explorer of view 1, 2, …
    let mut requests = Vec::with_capacity(samples.len() * views);
    for view in 0..views {
        for (k, &i) in samples.iter().enumerate() {
            requests.push(RolloutRequest {
                item: &split.items[i as usize],
                prompt_ids: &prompts[k],
                decoding: view_decoding(cfg, view),
                max_new_tokens: cfg.rollout.max_new_tokens,
                seed: seed::rollout_seed(cfg.run.seed, step, i, view as u64),
                n: 1,
            });
        }
    }
    let generated = generation.generate(&requests, samples.len(), step)?;
    for (name, n) in generated.counters {
        counters.add(name, n);
    }
    // A request that failed for good, or answered with the wrong number of samples, falls back
    // to an empty rollout: the view is invalid (for the anchor: empty prefix, every object
    // injected), and the failure is counted by kind.
    let empty = |prompt: &[i64]| Rollout {
        tokens: Vec::new(),
        logprobs: Vec::new(),
        stop: StopReason::MaxNewTokens,
        prompt_ids: prompt.to_vec(),
        weight_version: 0,
    };
    let mut rollouts: Vec<Rollout> = Vec::with_capacity(requests.len());
    for (r, answer) in requests.iter().zip(generated.replies) {
        match answer {
            Reply::Rollouts(mut v) if v.len() == 1 => rollouts.extend(v.pop()),
            Reply::Rollouts(v) => {
                counters.add("rollout/backend_fallback/wrong_count", 1.0);
                tracing::warn!("a rollout request for {} sample(s) got {}", r.n, v.len());
                rollouts.push(empty(r.prompt_ids));
            }
            Reply::Failed(kind) => {
                counters.add(&format!("rollout/backend_fallback/{kind}"), 1.0);
                rollouts.push(empty(r.prompt_ids));
            }
        }
    }
    let generate_secs = started.elapsed().as_secs_f64();

    let settings = settings(cfg);
    let order = cfg.prompt.field_order;
    let mut decided = Vec::with_capacity(samples.len());
    let decide_start = Instant::now();
    for (k, &i) in samples.iter().enumerate() {
        let view_rollouts: Vec<&Rollout> =
            (0..views).map(|v| &rollouts[v * samples.len() + k]).collect();
        counters.add("stage2/raw_rollouts", views as f64);
        if view_rollouts.iter().any(|r| r.prompt_ids != prompts[k]) {
            counters.add("stage2_ab/channel_b/prompt_tok_mismatch", 1.0);
            continue;
        }
        // A view whose ids do not decode (a server answered ids outside the vocabulary) is an
        // invalid rollout, counted.
        let texts: Vec<String> = view_rollouts
            .iter()
            .map(|r| match decode_with_coords(encoder, &r.tokens, &[]) {
                Ok((t, _)) => t,
                Err(e) => {
                    counters.add("rollout/backend_fallback/undecodable", 1.0);
                    tracing::warn!(
                        "a rollout does not decode, training it as invalid: {}",
                        e.what()
                    );
                    String::new()
                }
            })
            .collect();
        let item = &split.items[i as usize];
        let gt = ground_truth(&item.record).map_err(|e| e.at(split.location(i as usize)))?;
        let explorers: Vec<&str> = texts[1..].iter().map(String::as_str).collect();
        let decision = decide(&texts[0], &explorers, &gt, &settings, order);
        decided.push(SampleDecision {
            sample: i,
            decision,
            new_tokens: view_rollouts.iter().map(|r| r.tokens.len()).collect(),
        });
    }
    let decided_secs = decide_start.elapsed().as_secs_f64();

    let encode_start = Instant::now();
    let mut segments = Vec::with_capacity(decided.len());
    for d in &decided {
        let item = &split.items[d.sample as usize];
        let at = || split.location(d.sample as usize);
        let (segment, ul) = encode_decision(encoder, item, d, at)?;
        counters.record(d, &ul);
        segments.push(segment);
    }
    counters.add("stage2/channel_b_samples", decided.len() as f64);
    Ok(Rolled {
        segments,
        counters: counters.0,
        times: [generate_secs, decided_secs, encode_start.elapsed().as_secs_f64()],
    })
}

/// A record's ground-truth objects in bins.
pub fn ground_truth(record: &Record) -> Result<Vec<Object<Bin>>> {
    let binned = record.to_bins().map_err(|p| Error::input(p.describe()))?;
    match binned.objects() {
        Objects::Bins(v) => Ok(v.clone()),
        Objects::Pixels(_) => {
            Err(Error::runtime("record still has pixel coordinates after quantization"))
        }
    }
}

/// Encode one decision's target and supervise it; also its resolved unlikelihood targets.
pub fn encode_decision(
    encoder: &Encoder,
    item: &Item,
    d: &SampleDecision,
    at: impl Fn() -> String,
) -> Result<(Segment, coordexp_stage2::UlTargets)> {
    let target = &d.decision.target;
    let sizes = item.sizes();
    let images = sizes.len();
    let ul = d
        .decision
        .unlikelihood_targets(&|text: &str| encoder.answer_tokens(images, text))
        .map_err(|e| e.at(at()))?;
    let answer = target_answer(target).map_err(|e| e.at(at()))?;
    let (encoded, ranges) = encoder.encode_with_offsets(&sizes, &answer).map_err(|e| e.at(at()))?;
    let supervision =
        supervise::channel_b(&encoded, &ranges, target, &ul).map_err(|e| e.at(at()))?;
    Ok((Segment { sample: d.sample, encoded, supervision }, ul))
}

/// The clean target as an encoder answer (its description and coordinate spans).
pub fn target_answer(target: &coordexp_stage2::Target) -> Result<Answer> {
    let descs = target.entries.iter().map(|e| e.desc.clone()).collect();
    let coords = target
        .entries
        .iter()
        .flat_map(|e| e.coords.iter().cloned().zip(e.bins.iter().copied()))
        .collect();
    Answer::new(target.text.clone(), descs, coords)
}

/// Named sums of one channel-B step (metric names of `stage2_current.md` §6; rates as
/// `_rate_num` / `_rate_den` pairs, recomputed after summing).
#[derive(Default)]
struct Counters(Vec<(String, f64)>);

impl Counters {
    fn add(&mut self, name: &str, v: f64) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, acc)) => *acc += v,
            None => self.0.push((name.to_string(), v)),
        }
    }

    fn record(&mut self, d: &SampleDecision, ul: &coordexp_stage2::UlTargets) {
        let c = &d.decision.counters;
        let f = |x: usize| x as f64;
        let b = "stage2_ab/channel_b";
        self.add(&format!("{b}/invalid_rollout"), f(c.invalid_rollout));
        self.add("stage2/invalid_rollout", f(c.invalid_rollout));
        self.add(&format!("{b}/strict_drop/N_valid_pred"), f(c.n_valid_pred));
        self.add(&format!("{b}/strict_drop/N_drop_invalid"), f(c.n_drop_invalid));
        for (reason, n) in &c.drop_reasons {
            self.add(&format!("{b}/strict_drop/reason/{reason}"), f(*n));
        }
        self.add("stage2/drop_poly", f(c.drop_poly));
        self.add("stage2/drop_unknown", f(c.drop_unknown));
        self.add("stage2/drop_bbox_invalid", f(c.drop_bbox_invalid));
        for (name, v) in [
            ("N_raw_bbox_valid", c.n_raw_bbox_valid),
            ("N_clean_accepted", c.n_clean_accepted),
            ("N_clusters_total", c.n_clusters_total),
            ("N_clusters_exempt", c.n_clusters_exempt),
            ("N_clusters_suppressed", c.n_clusters_suppressed),
            ("N_objects_suppressed", c.n_objects_suppressed),
            ("N_ul_boundaries", ul.boundaries),
            ("N_duplicate_burst_unlikelihood_skipped_no_divergence", ul.skipped_no_divergence),
        ] {
            self.add(&format!("{b}/dup/{name}"), f(v));
        }
        self.add(
            "rollout/parse_truncated",
            f(c.anchor_parse_truncated + c.explorer_parse_truncated),
        );
        self.add("rollout/anchor/pred_objects", f(c.n_valid_pred + c.n_drop_invalid));
        self.add("rollout/anchor/valid_pred_objects", f(c.n_valid_pred));
        self.add("rollout/gt_objects", f(c.gt_objects));
        self.add("rollout/matched_for_supervision_count", f(c.matched));
        self.add("rollout/fn_count", f(c.fn_count));
        self.add("rollout/fp_count", f(c.fp));
        self.add("rollout/gating_rejections", f(c.gating_rejections));
        self.add("rollout/matched_maskiou_sum", c.matched_maskiou_sum);
        self.add("rollout/matched_maskiou_count", f(c.matched_maskiou_count));
        // Precision, recall and the duplicate rate of the anchor (before duplicate control).
        self.add("rollout/precision_rate_num", f(c.matched));
        self.add("rollout/precision_rate_den", f(c.n_valid_pred));
        self.add("rollout/recall_rate_num", f(c.matched));
        self.add("rollout/recall_rate_den", f(c.gt_objects));
        self.add("rollout/duplicate_rate_num", f(c.n_objects_suppressed));
        self.add("rollout/duplicate_rate_den", f(c.n_valid_pred));
        self.add(
            "rollout/anchor/gen_new_tokens_sum",
            f(d.new_tokens.first().copied().unwrap_or(0)),
        );
        self.add("rollout/anchor/gen_new_tokens_count", 1.0);
        for (name, v) in [
            ("gt_backed", c.gt_backed),
            ("unlabeled_consistent", c.unlabeled_consistent),
            ("dead_anchor", c.dead_anchor),
            ("dead_anchor_rate_num", c.dead_anchor),
            ("dead_anchor_rate_den", c.dead_anchor_rate_den),
            ("explorer_only_dead", c.explorer_only_dead),
            ("pseudo_positive_candidate", c.pseudo_positive_candidate),
            ("pseudo_positive_selected", c.pseudo_positive_selected),
            ("pseudo_positive_cluster_demoted", c.pseudo_positive_cluster_demoted),
            ("recovered_ground_truth", c.recovered_ground_truth),
            ("recovered_ground_truth_rate_num", c.recovered_ground_truth_rate_num),
            ("recovered_ground_truth_rate_den", c.recovered_ground_truth_rate_den),
        ] {
            self.add(&format!("train/triage/{name}"), f(v));
        }
        self.add("stage2/target_objects", f(c.target_objects));
        self.add("stage2/retained_anchors", f(c.retained));
    }
}
