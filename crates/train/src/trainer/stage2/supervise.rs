//! What each position of a stage-2 segment is taught: the two channels' role tables turned into
//! [`Supervision`] rows.
//!
//! Channel A (`stage2_current.md` §1.2): the ground-truth answer; structure tokens weight 1,
//! descriptions `desc_ce_weight`, the closing brace and the end of turn weight 1; every box of
//! the ground truth a `bbox_geo` group of weight 1, every coordinate a slot of weight 1.
//!
//! Channel B (§2.7 with our decisions, computed by `coordexp_stage2::Target::token_weights`):
//! the clean prefix and the injected objects, each answer token with its kind and weight;
//! coordinate slots only where the entry has a target (matched → ground truth, FN → ground
//! truth at the object weight, pseudo-positives their own bins), the end of turn at weight 1,
//! and the duplicate-burst unlikelihood rows.
//!
//! In both, the text gate covers the supervised text rows except coordinates and closure.

use crate::objective::CoordIds;
use crate::objective::stage2::{Supervision, TextKind};
use coordexp_core::config::schema::TokenCe;
use coordexp_core::coordjson::{FieldOrder, parse_strict};
use coordexp_core::record::Geometry;
use coordexp_core::{Error, Result};
use coordexp_rollout::predict::decode_with_coords;
use coordexp_stage2::{Target, TokenKind, UlTargets};
use coordexp_text::{EncodedSample, Encoder, IGNORE_INDEX, TokenType};
use std::ops::Range;

/// The index of the first supervised token (the answer's first token).
pub fn first_supervised(encoded: &EncodedSample) -> Result<usize> {
    encoded
        .labels
        .iter()
        .position(|&l| l != IGNORE_INDEX)
        .ok_or_else(|| Error::runtime("a training sample has no supervised token"))
}

/// Channel A's supervision of a ground-truth encoding (its answer is parsed back from the ids
/// to find each object's coordinates: boxes become `bbox_geo` groups).
pub fn channel_a(
    encoded: &EncodedSample,
    encoder: &Encoder,
    order: FieldOrder,
    ids: CoordIds,
    token_ce: &TokenCe,
) -> Result<Supervision> {
    let first = first_supervised(encoded)?;
    let mut sup = Supervision::default();
    let n = encoded.len();
    for p in first..n {
        let row = p as i64 - 1;
        let target = encoded.labels[p];
        if target == IGNORE_INDEX {
            continue;
        }
        match encoded.token_types[p] {
            TokenType::Coord => {
                let bin = ids.bin(target).ok_or_else(|| {
                    Error::runtime(format!("token {target} is typed coord but is no coordinate"))
                })?;
                sup.coord_rows.push(row);
                sup.coord_bins.push(bin);
                sup.coord_weights.push(1.0);
            }
            TokenType::Desc => {
                push_text(&mut sup, row, target, token_ce.desc_ce_weight, TextKind::Desc, true)
            }
            TokenType::Struct => push_text(&mut sup, row, target, 1.0, TextKind::Struct, true),
            TokenType::Closure => push_text(&mut sup, row, target, 1.0, TextKind::Struct, false),
            TokenType::Prompt | TokenType::Image => {}
        }
    }
    // Boxes: the answer's objects in order; each takes as many slots as it has coordinates.
    let answer_end = encoded.labels.iter().rposition(|&l| l != IGNORE_INDEX).unwrap_or(first);
    let answer_ids: Vec<i64> =
        encoded.input_ids[first..answer_end].iter().map(|&i| i64::from(i)).collect();
    let (text, _) = decode_with_coords(encoder, &answer_ids, &[])?;
    let parsed = parse_strict(&text, Some(order))
        .map_err(|e| Error::runtime(format!("the ground-truth answer does not parse back: {e}")))?;
    let mut slot = 0;
    for o in &parsed.objects {
        let k = o.geometry.coords().len();
        if matches!(o.geometry, Geometry::BBox(_)) && slot + 4 <= sup.coord_rows.len() {
            sup.boxes.push(([slot, slot + 1, slot + 2, slot + 3], 1.0));
        }
        slot += k;
    }
    if slot != sup.coord_rows.len() {
        return Err(Error::runtime(format!(
            "the answer has {slot} coordinates but {} coordinate tokens are supervised",
            sup.coord_rows.len()
        )));
    }
    Ok(sup)
}

fn push_text(sup: &mut Supervision, row: i64, target: i64, w: f64, kind: TextKind, gate: bool) {
    if w <= 0.0 {
        return;
    }
    sup.text_rows.push(row);
    sup.text_targets.push(target);
    sup.text_weights.push(w);
    sup.text_kinds.push(kind);
    if gate {
        sup.gate_rows.push(row);
    }
}

/// Channel B's supervision of a clean-prefix target encoded as `encoded`, whose answer tokens
/// have the byte ranges `ranges` (from `Encoder::encode_with_offsets`), with the resolved
/// unlikelihood targets `ul`.
pub fn channel_b(
    encoded: &EncodedSample,
    ranges: &[Range<usize>],
    target: &Target,
    ul: &UlTargets,
) -> Result<Supervision> {
    let first = first_supervised(encoded)?;
    // The answer's tokens and its end of turn are exactly the supervised labels, in one run:
    // otherwise the byte ranges and the ids are out of step.
    let supervised = encoded.labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
    if supervised != ranges.len() + 1 {
        return Err(Error::runtime(format!(
            "the target encodes to {supervised} supervised tokens but its answer has {} tokens plus the end of turn",
            ranges.len()
        ))
        .hint("the tokenizer emits a token the answer offsets cannot place (e.g. an empty one); this is a bug in the encoder"));
    }
    if first == 0 || first + ranges.len() >= encoded.len() {
        return Err(Error::runtime(format!(
            "the target's {} answer tokens do not fit its {}-token encoding after position {first}",
            ranges.len(),
            encoded.len()
        )));
    }
    let weights = target.token_weights(ranges);
    let mut sup = Supervision::default();
    // Slot index of each entry's coordinate tokens, in order.
    let mut next_coord = vec![0usize; target.entries.len()];
    let mut entry_slots: Vec<Vec<usize>> = vec![Vec::new(); target.entries.len()];
    for (j, w) in weights.iter().enumerate() {
        let p = first + j;
        let row = p as i64 - 1;
        let id = i64::from(encoded.input_ids[p]);
        match w.kind {
            TokenKind::Coord => {
                let Some(e) = w.entry else { continue };
                let k = next_coord[e];
                next_coord[e] += 1;
                let Some(t) = &target.entries[e].coord_target else { continue };
                let Some(bin) = t.bins.get(k) else {
                    return Err(Error::runtime(format!(
                        "target entry {e} has {} coordinate targets but more coordinate tokens",
                        t.bins.len()
                    )));
                };
                entry_slots[e].push(sup.coord_rows.len());
                sup.coord_rows.push(row);
                sup.coord_bins.push(i64::from(bin.get()));
                sup.coord_weights.push(t.weight);
            }
            TokenKind::Desc => push_text(&mut sup, row, id, w.weight, TextKind::Desc, true),
            TokenKind::Struct => push_text(&mut sup, row, id, w.weight, TextKind::Struct, true),
            TokenKind::Closure => push_text(&mut sup, row, id, w.weight, TextKind::Struct, false),
        }
    }
    // The end of turn after the answer: closure, weight max(w, 1) = 1.
    let eot = first + ranges.len();
    push_text(
        &mut sup,
        eot as i64 - 1,
        i64::from(encoded.input_ids[eot]),
        1.0,
        TextKind::Struct,
        false,
    );
    for (e, slots) in entry_slots.iter().enumerate() {
        let entry = &target.entries[e];
        if let (Some(t), [a, b, c, d]) = (&entry.coord_target, slots.as_slice())
            && entry.coords.len() == 4
        {
            sup.boxes.push(([*a, *b, *c, *d], t.weight));
        }
    }
    for t in &ul.targets {
        let row = (first + t.rel_pos) as i64 - 1;
        if t.rel_pos >= ranges.len() {
            return Err(Error::runtime(format!(
                "an unlikelihood target at answer token {} lies outside the encoding",
                t.rel_pos
            )));
        }
        sup.ul_rows.push(row);
        sup.ul_tokens.push(i64::from(t.token_id));
    }
    Ok(sup)
}
