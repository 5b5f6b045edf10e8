//! `coordexp inspect rollout`: everything channel B decides for one record and one anchor
//! rollout text (plus optional explorer texts), down to each target token's role and weight —
//! the same functions the trainer runs, so what a user sees is what a step trains.

use coordexp_core::config::schema::Config;
use coordexp_core::record::Record;
use coordexp_core::{Error, Result};
use coordexp_stage2::mask::mask_iou;
use coordexp_stage2::{Decision, Role, TokenKind, UlTargets, decide};
use coordexp_text::Encoder;
use serde::Serialize;

use super::channel_b::{ground_truth, settings, target_answer};

/// One token of the encoded target answer.
#[derive(Debug, Clone, Serialize)]
pub struct TargetToken {
    pub id: u32,
    pub text: String,
    /// `struct`, `desc`, `coord`, `closure` or `end_of_turn`, with the entry's role
    /// (`/matched`, `/shielded`, `/pseudo_positive`, `/demoted`, `/fn`) when the token belongs to an
    /// object entry, or `/prefix` / `/tail` for the container's own structure.
    pub role: String,
    /// CE weight for text tokens; the coordinate group weight for a supervised coordinate
    /// token; 0 for an unsupervised one.
    pub weight: f64,
}

/// The full inspection of one sample.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    #[serde(flatten)]
    pub decision: Decision,
    /// Mask IoU of each matched pair, in `matching.pairs` order.
    pub pair_mask_iou: Vec<f64>,
    pub target_tokens: Vec<TargetToken>,
    pub unlikelihood_targets: UlTargets,
}

impl Inspection {
    /// The JSON shape: `clean`, `dropped`, `duplicates`, `matching`, `target` (with
    /// `text`, `input_ids`, `roles`, `weights`), `unlikelihood`, plus the rest of the decision.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        let mut v = serde_json::to_value(self)
            .map_err(|e| Error::runtime(format!("cannot encode the inspection: {e}")))?;
        if let Some(target) = v.get_mut("target").and_then(|t| t.as_object_mut()) {
            let t = &self.target_tokens;
            target.insert("input_ids".into(), t.iter().map(|x| x.id).collect());
            target.insert("roles".into(), t.iter().map(|x| x.role.clone()).collect());
            target.insert("weights".into(), t.iter().map(|x| x.weight).collect());
        }
        if let Some(obj) = v.as_object_mut() {
            let candidates = obj.remove("unlikelihood").unwrap_or_default();
            let targets = obj.remove("unlikelihood_targets").unwrap_or_default();
            obj.insert(
                "unlikelihood".into(),
                serde_json::json!({"candidates": candidates, "resolved": targets}),
            );
            obj.remove("target_tokens");
        }
        Ok(v)
    }
}

/// Inspect channel B on `record` for the `anchor` rollout text and the `explorers`.
pub fn inspect_rollout(
    cfg: &Config,
    encoder: &Encoder,
    record: &Record,
    anchor: &str,
    explorers: &[&str],
) -> Result<Inspection> {
    let gt = ground_truth(record)?;
    let s = settings(cfg);
    let decision = decide(anchor, explorers, &gt, &s, cfg.prompt.field_order);
    let pair_mask_iou = decision
        .matching
        .pairs
        .iter()
        .map(|[c, g]| {
            let bbox = decision.clean[*c].bbox;
            mask_iou(
                &coordexp_core::record::Geometry::BBox(bbox),
                &gt[*g].geometry,
                s.matching.mask_resolution,
            )
        })
        .collect();
    let sizes = vec![record.size(); record.images().len()];
    let images = sizes.len();
    let ul = decision.unlikelihood_targets(&|t: &str| encoder.answer_tokens(images, t))?;
    let target = &decision.target;
    let answer = target_answer(target)?;
    let (encoded, ranges) = encoder.encode_with_offsets(&sizes, &answer)?;
    // The weights shown are those the trainer uses: read back from the supervision rows.
    let sup = super::supervise::channel_b(&encoded, &ranges, target, &ul)?;
    let mut row_weight: std::collections::HashMap<i64, f64> = std::collections::HashMap::new();
    for (r, w) in sup.text_rows.iter().zip(&sup.text_weights) {
        row_weight.insert(*r, *w);
    }
    for (r, w) in sup.coord_rows.iter().zip(&sup.coord_weights) {
        row_weight.insert(*r, *w);
    }
    let kinds = target.token_weights(&ranges);
    let tok = encoder.model().tokenizer();
    let first = super::supervise::first_supervised(&encoded)?;
    let mut tokens: Vec<TargetToken> = Vec::with_capacity(ranges.len() + 1);
    for (j, (r, w)) in ranges.iter().zip(&kinds).enumerate() {
        let kind = match w.kind {
            TokenKind::Struct => "struct",
            TokenKind::Desc => "desc",
            TokenKind::Coord => "coord",
            TokenKind::Closure => "closure",
        };
        let whose = match w.entry.map(|e| target.entries[e].role) {
            Some(Role::Matched { .. }) => "matched",
            Some(Role::Shielded { .. }) => "shielded",
            Some(Role::PseudoPositive { .. }) => "pseudo_positive",
            Some(Role::Demoted { .. }) => "demoted",
            Some(Role::Fn { .. }) => "fn",
            None if r.start < target.prefix_end => "prefix",
            None => "tail",
        };
        let row = (first + j) as i64 - 1;
        tokens.push(TargetToken {
            id: encoded.input_ids[first + j],
            text: target.text.get(r.clone()).unwrap_or("").to_string(),
            role: format!("{kind}/{whose}"),
            weight: row_weight.get(&row).copied().unwrap_or(0.0),
        });
    }
    let eot_at = first + ranges.len();
    if let Some(&eot) = encoded.input_ids.get(eot_at) {
        tokens.push(TargetToken {
            id: eot,
            text: tok.id_to_token(eot).unwrap_or_default(),
            role: "end_of_turn".into(),
            weight: row_weight.get(&(eot_at as i64 - 1)).copied().unwrap_or(0.0),
        });
    }
    Ok(Inspection { decision, pair_mask_iou, target_tokens: tokens, unlikelihood_targets: ul })
}
