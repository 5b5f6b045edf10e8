//! Duplicate-burst unlikelihood: for each suppressed duplicate, the token at which writing it
//! again would first depart from the clean target (stage2_current §2.8).
//!
//! Why: removing a duplicate from the prefix only stops teaching it; the unlikelihood term
//! actively lowers the probability of the token that would start the repeat, at the exact
//! position where the model would emit it.
//!
//! The procedure (`tb.py:1573-1687`):
//! 1. For a suppressed duplicate `d` at boundary `b` (after triage's remap), the *alternative*
//!    text is the closed canonical container of `retained[:b] + [d] + retained[b:] + FN`. In
//!    `sorted` mode the FN entries are already among the sorted prefix entries, and `b` is `d`'s
//!    stable `(y1, x1)` insertion point among them (after every entry with an equal key).
//! 2. `c` = byte length of boundary text `b` (the prefix after `b` entries), shared by both texts.
//! 3. Both texts are tokenised whole, by the same tokenizer callback — the clean answer exactly as
//!    it is trained, one string (DESIGN "Stage 2 decisions" 6; the reference concatenated two
//!    tokenisations, so a junction could fake a divergence) — and each is read from its first
//!    token starting at byte ≥ `c`.
//! 4. Advance both while the token ids agree. If either runs out, the candidate is skipped
//!    (`skipped_no_divergence`); otherwise the target is `(b, rel_pos, token_id)`: the clean
//!    token index and the alternative's token there.
//! 5. Per `(b, token_id)` only the smallest `rel_pos` is kept; targets are sorted by
//!    `(b, rel_pos, token_id)`; `N_ul_boundaries` counts the distinct `b` among them.
//!
//! The loss term itself (`−log max(1 − p(token_id), 1e-6)` from the logits predicting
//! `rel_pos`) belongs to the trainer.

use crate::boxes;
use crate::target::{InsertionOrder, Target, closed_container};
use coordexp_core::coordjson::FieldOrder;
use coordexp_core::norm1000::Bin;
use coordexp_core::record::Geometry;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ops::Range;

/// A tokenizer applied to a whole string: `(token id, byte range)` per token, in order.
pub type Tokenize<'a> = &'a dyn Fn(&str) -> coordexp_core::Result<Vec<(u32, Range<usize>)>>;

/// One suppressed duplicate, placed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// Boundary index into [`Target::boundaries`].
    pub boundary: usize,
    /// The suppressed object's index in the anchor view.
    pub object: usize,
    /// `c`: the byte length of boundary text `boundary`.
    pub boundary_byte: usize,
    /// The alternative answer with the duplicate written at the boundary.
    pub alternative: String,
}

/// A resolved unlikelihood target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UlTarget {
    pub boundary: usize,
    /// Token index in the clean answer's tokenisation.
    pub rel_pos: usize,
    /// The alternative token to push down there.
    pub token_id: u32,
}

/// The resolved targets of one sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct UlTargets {
    pub targets: Vec<UlTarget>,
    /// `N_ul_boundaries`: distinct boundaries among the targets.
    pub boundaries: usize,
    /// `N_duplicate_burst_unlikelihood_skipped_no_divergence`.
    pub skipped_no_divergence: usize,
}

/// A suppressed duplicate to place: its anchor-view index, post-triage boundary, description
/// and box.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate<'a> {
    pub object: usize,
    pub boundary: usize,
    pub desc: &'a str,
    pub bbox: [Bin; 4],
}

/// Step 1–2 of the module docs: the alternative text of every suppressed duplicate, in
/// `(boundary, object)` order. `target` is the clean target the candidates compare against.
pub fn candidates(
    target: &Target,
    duplicates: &[Duplicate<'_>],
    order: FieldOrder,
) -> Vec<Candidate> {
    let entries: Vec<(&str, Geometry<Bin>)> =
        target.entries.iter().map(|e| (e.desc_text.as_str(), geometry_of(&e.bins))).collect();
    let n_prefix = target.boundaries.len().saturating_sub(1);
    let mut out: Vec<Candidate> = duplicates
        .iter()
        .map(|d| {
            let dg = Geometry::BBox(d.bbox);
            let b = match target.insertion_order {
                InsertionOrder::TailAppend => d.boundary.min(n_prefix),
                InsertionOrder::Sorted => {
                    let key = boxes::top_left_key(&dg);
                    entries.iter().take_while(|(_, g)| boxes::top_left_key(g) <= key).count()
                }
            };
            let mut items: Vec<(&str, &Geometry<Bin>)> = Vec::with_capacity(entries.len() + 1);
            items.extend(entries[..b].iter().map(|(s, g)| (*s, g)));
            items.push((d.desc, &dg));
            items.extend(entries[b..].iter().map(|(s, g)| (*s, g)));
            Candidate {
                boundary: b,
                object: d.object,
                boundary_byte: target.boundaries.get(b).copied().unwrap_or(0),
                alternative: closed_container(&items, order),
            }
        })
        .collect();
    out.sort_by_key(|c| (c.boundary, c.object));
    out
}

/// The geometry an entry was written with (a box for 4 coordinates, else a polygon).
fn geometry_of(bins: &[Bin]) -> Geometry<Bin> {
    match *bins {
        [a, b, c, d] => Geometry::BBox([a, b, c, d]),
        _ => coordexp_core::record::Polygon::new(
            bins.chunks_exact(2).map(|p| [p[0], p[1]]).collect(),
        )
        .map(Geometry::Poly)
        .unwrap_or(Geometry::BBox([Bin::MIN; 4])),
    }
}

/// Steps 3–5 of the module docs: tokenise the clean answer and every alternative with
/// `tokenize` and find each first divergent token.
pub fn resolve(
    clean: &str,
    candidates: &[Candidate],
    tokenize: Tokenize<'_>,
) -> coordexp_core::Result<UlTargets> {
    let mut out = UlTargets::default();
    if candidates.is_empty() {
        return Ok(out);
    }
    let clean_tokens = tokenize(clean)?;
    let first_at = |tokens: &[(u32, Range<usize>)], c: usize| {
        tokens.iter().position(|t| t.1.start >= c).unwrap_or(tokens.len())
    };
    let mut best: BTreeMap<(usize, u32), usize> = BTreeMap::new();
    for cand in candidates {
        let alt_tokens = tokenize(&cand.alternative)?;
        let mut i = first_at(&clean_tokens, cand.boundary_byte);
        let mut j = first_at(&alt_tokens, cand.boundary_byte);
        while i < clean_tokens.len() && j < alt_tokens.len() && clean_tokens[i].0 == alt_tokens[j].0
        {
            i += 1;
            j += 1;
        }
        if i >= clean_tokens.len() || j >= alt_tokens.len() {
            out.skipped_no_divergence += 1;
            continue;
        }
        let key = (cand.boundary, alt_tokens[j].0);
        let slot = best.entry(key).or_insert(i);
        *slot = (*slot).min(i);
    }
    let mut targets: Vec<UlTarget> = best
        .into_iter()
        .map(|((boundary, token_id), rel_pos)| UlTarget { boundary, rel_pos, token_id })
        .collect();
    targets.sort_by_key(|t| (t.boundary, t.rel_pos, t.token_id));
    let mut bs: Vec<usize> = targets.iter().map(|t| t.boundary).collect();
    bs.dedup();
    out.boundaries = bs.len();
    out.targets = targets;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{AnchorEntry, FnEntry, Role, TargetWeights, build};

    fn b(c: [u16; 4]) -> [Bin; 4] {
        c.map(|k| Bin::new(k).unwrap())
    }

    /// A toy tokenizer: each coordinate token, each run of letters, each other byte.
    pub(crate) fn toy_tokenize(s: &str) -> coordexp_core::Result<Vec<(u32, Range<usize>)>> {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let start = i;
            if s[i..].starts_with("<|coord_") {
                i += s[i..].find("|>").map_or(1, |k| k + 2);
            } else if bytes[i].is_ascii_alphabetic() {
                while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                    i += 1;
                }
            } else {
                i += 1;
            }
            let piece = &s[start..i];
            let id =
                piece.bytes().fold(17u32, |h, c| h.wrapping_mul(31).wrapping_add(u32::from(c)));
            out.push((id, start..i));
        }
        Ok(out)
    }

    fn weights() -> TargetWeights {
        TargetWeights {
            global_prefix_weight: 1.0,
            fn_desc_weight: 1.0,
            recovered_gt_weight_multiplier: 2.0,
            pseudo_positive: false,
            pseudo_positive_coord_weight: 0.5,
        }
    }

    #[test]
    fn a_duplicate_diverges_at_the_separator_after_the_boundary() {
        let a = [AnchorEntry {
            role: Role::Shielded { clean: 0, support: 1, support_rate: 1.0 },
            desc: "cat",
            bbox: b([1, 2, 3, 4]),
            gt_box: None,
        }];
        let t = build(&a, &[], &weights(), InsertionOrder::TailAppend, FieldOrder::DescFirst);
        let d = [Duplicate { object: 1, boundary: 1, desc: "cat", bbox: b([1, 2, 3, 5]) }];
        let c = candidates(&t, &d, FieldOrder::DescFirst);
        assert_eq!(c[0].boundary_byte, t.boundaries[1]);
        assert!(c[0].alternative.starts_with(&t.text[..t.boundaries[1]]));
        let r = resolve(&t.text, &c, &toy_tokenize).unwrap();
        // Clean continues with `]`, the alternative with `,`.
        assert_eq!(r.skipped_no_divergence, 0);
        assert_eq!(r.boundaries, 1);
        let clean = toy_tokenize(&t.text).unwrap();
        let tg = r.targets[0];
        assert_eq!(&t.text[clean[tg.rel_pos].1.clone()], "]");
        assert_eq!(tg.token_id, toy_tokenize(",").unwrap()[0].0);
    }

    #[test]
    fn a_duplicate_before_the_first_entry_diverges_inside_the_record() {
        let gt = Geometry::BBox(b([9, 9, 19, 19]));
        let a = [AnchorEntry {
            role: Role::Shielded { clean: 0, support: 1, support_rate: 1.0 },
            desc: "cat",
            bbox: b([1, 2, 3, 4]),
            gt_box: None,
        }];
        let f = [FnEntry { gt: 0, desc: "dog", geometry: &gt, recovered: false }];
        let t = build(&a, &f, &weights(), InsertionOrder::TailAppend, FieldOrder::DescFirst);
        // Same desc and first three coordinates: divergence at the fourth coordinate.
        let d = [
            Duplicate { object: 0, boundary: 0, desc: "cat", bbox: b([1, 2, 3, 5]) },
            Duplicate { object: 2, boundary: 0, desc: "cat", bbox: b([1, 2, 3, 5]) },
        ];
        let c = candidates(&t, &d, FieldOrder::DescFirst);
        let r = resolve(&t.text, &c, &toy_tokenize).unwrap();
        assert_eq!(r.targets.len(), 1, "deduplicated per (boundary, token)");
        let clean = toy_tokenize(&t.text).unwrap();
        assert_eq!(&t.text[clean[r.targets[0].rel_pos].1.clone()], "<|coord_4|>");
        assert_eq!(r.targets[0].token_id, toy_tokenize("<|coord_5|>").unwrap()[0].0);
    }

    #[test]
    fn sorted_mode_inserts_after_equal_keys_and_counts_no_divergence_when_identical() {
        let gt = Geometry::BBox(b([1, 2, 3, 4]));
        let f = [FnEntry { gt: 0, desc: "cat", geometry: &gt, recovered: false }];
        let t = build(&[], &f, &weights(), InsertionOrder::Sorted, FieldOrder::DescFirst);
        let d = [Duplicate { object: 0, boundary: 0, desc: "cat", bbox: b([1, 2, 3, 4]) }];
        let c = candidates(&t, &d, FieldOrder::DescFirst);
        assert_eq!(c[0].boundary, 1);
        // Clean `]}` vs alternative `, {...}]}` diverge at `]`.
        let r = resolve(&t.text, &c, &toy_tokenize).unwrap();
        assert_eq!(r.targets.len(), 1);
        // A tokenizer that swallows everything after the boundary into one token per text
        // never sees a shared token stream run out: divergence.
        let coarse = |s: &str| -> coordexp_core::Result<Vec<(u32, Range<usize>)>> {
            Ok(vec![(1, 0..s.len())])
        };
        let r = resolve(&t.text, &c, &coarse).unwrap();
        assert_eq!(r.skipped_no_divergence, 1);
        assert!(r.targets.is_empty());
    }

    #[test]
    fn tokenizer_errors_propagate() {
        let t = build(&[], &[], &weights(), InsertionOrder::TailAppend, FieldOrder::DescFirst);
        let d = [Duplicate { object: 0, boundary: 0, desc: "cat", bbox: b([1, 2, 3, 4]) }];
        let c = candidates(&t, &d, FieldOrder::DescFirst);
        let bad = |_: &str| -> coordexp_core::Result<Vec<(u32, Range<usize>)>> {
            Err(coordexp_core::Error::runtime("no tokenizer"))
        };
        assert!(resolve(&t.text, &c, &bad).is_err());
    }
}
