//! The clean-prefix target: the one answer text channel B teacher-forces, and the role and
//! weights of every byte of it (stage2_current §2.5–§2.7).
//!
//! Why re-serialise instead of training on the raw rollout: the raw text carries dropped
//! records, duplicates and dead objects; the reference now rebuilds a canonical container from
//! the objects it keeps (§2.5), so the context is clean and every position has a known role.
//!
//! The text:
//! * **prefix** = `{"objects": [` + the retained anchors (matched and shielded, in anchor order;
//!   dead anchors and suppressed duplicates removed, §2.4) as canonical entries joined by
//!   `", "`;
//! * `tail_append` (default): then `", "` (only after a non-empty prefix) + the missed ground
//!   truths (FN) in ascending index + `]}` — the **tail** starts right after the prefix, so the
//!   separator before the first FN entry is tail;
//! * `sorted`: retained anchors and FN entries, stably sorted by `(y1, x1)` (anchors first, then
//!   FN, before sorting), form the whole prefix; the tail is `]}`.
//! * An invalid anchor has no objects: prefix `{"objects": [`, every ground truth injected.
//!
//! The whole answer is **one string** (DESIGN "Stage 2 decisions" 6): the trainer tokenises it
//! once, and the byte ranges below map onto its tokens; there is no prefix/fragment junction.
//!
//! Weights (the role table of §2.7, with our decisions):
//! * structure bytes (braces, keys, separators) in the prefix get the global prefix weight `g`;
//!   in the tail, 1;
//! * a retained anchor's description gets CE (weight `g`) only when it is matched **and** equals
//!   its ground truth's description after [`crate::dup::normalize_desc`]; otherwise it is masked
//!   (DESIGN decision 1: never train towards an unverified description — the reference's code
//!   trains every prefix token, its spec masks descriptions);
//! * an FN entry's description gets `fn_desc_weight × object weight`, the object weight being
//!   `recovered_gt_weight_multiplier` for a recovered FN (§3.3) and 1 otherwise; its structure
//!   bytes get 1 in the tail (never multiplied). In `sorted` mode FN entries sit in the prefix:
//!   their structure gets `g`, but the description keeps its FN weight and the recovered
//!   multiplier (DESIGN decision 5; the reference drops both there);
//! * coordinate tokens are never CE'd; their targets are per entry (matched → the ground truth's
//!   bins, weight 1; FN → the ground truth's bins, object weight; pseudo-positive → own bins,
//!   `coord_weight`; shielded and not demoted with pseudo-positive on → own bins, `coord_weight
//!   × support_rate`; everything else none);
//! * the container's closing `}` (and the template's `<|im_end|>`, which is not part of this
//!   text) get `max(w, 1)` (§2.6).
//!
//! Ground truth may carry a polygon (the reference rejects it in stage 2; we accept it): a matched
//! anchor's box target is then the polygon's bounding box, and an FN polygon is injected as a
//! `poly` entry whose per-coordinate targets are its vertices.

use crate::boxes;
use crate::serde_bins;
use coordexp_core::coordjson::{FieldOrder, write_json_string};
use coordexp_core::norm1000::Bin;
use coordexp_core::record::Geometry;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Where missed ground truth goes (`stage2_ab.channel_b.insertion_order`, §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InsertionOrder {
    /// After the clean prefix, in ascending ground-truth index.
    #[default]
    TailAppend,
    /// Merged with the retained anchors, stably sorted by `(y1, x1)`.
    Sorted,
}

/// The weight settings of the target (the role table, §2.7).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetWeights {
    /// `g`: structure CE weight in the prefix.
    pub global_prefix_weight: f64,
    /// Description CE weight of an FN entry (before the object weight).
    pub fn_desc_weight: f64,
    /// Object weight of a recovered FN.
    pub recovered_gt_weight_multiplier: f64,
    /// Pseudo-positive mode on.
    pub pseudo_positive: bool,
    /// Coordinate weight of a pseudo-positive.
    pub pseudo_positive_coord_weight: f64,
}

/// What an entry of the target stands for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Role {
    /// A clean anchor matched to ground truth `gt`.
    Matched { clean: usize, gt: usize, desc_agrees: bool },
    /// An unmatched, explorer-supported clean anchor.
    Shielded { clean: usize, support: usize, support_rate: f64 },
    /// The selected pseudo-positive of its component.
    PseudoPositive { clean: usize, support: usize, support_rate: f64 },
    /// A pseudo-positive candidate that lost its component.
    Demoted { clean: usize, support: usize, support_rate: f64 },
    /// An injected ground truth the anchor missed.
    Fn { gt: usize, recovered: bool },
}

/// A retained anchor going into the prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorEntry<'a> {
    /// Matched, Shielded, PseudoPositive or Demoted.
    pub role: Role,
    pub desc: &'a str,
    pub bbox: [Bin; 4],
    /// For a matched anchor: the ground truth's box (a polygon's bounding box).
    pub gt_box: Option<[Bin; 4]>,
}

/// A missed ground truth to inject.
#[derive(Debug, Clone, PartialEq)]
pub struct FnEntry<'a> {
    pub gt: usize,
    pub desc: &'a str,
    pub geometry: &'a Geometry<Bin>,
    pub recovered: bool,
}

/// The coordinate target of an entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoordTarget {
    /// One bin per coordinate token of the entry (4 for a box).
    #[serde(with = "serde_bins")]
    pub bins: Vec<Bin>,
    /// Group weight.
    pub weight: f64,
}

/// One object entry of the target text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub role: Role,
    /// The description as written (unescaped).
    pub desc_text: String,
    /// The entry's own coordinates as written.
    #[serde(with = "serde_bins")]
    pub bins: Vec<Bin>,
    /// The record, `{` through `}`.
    pub span: Range<usize>,
    /// The description's content, between its quotes: a token overlapping it is a
    /// description token (the reference's rule).
    pub desc: Range<usize>,
    /// Each coordinate token.
    pub coords: Vec<Range<usize>>,
    /// In the prefix (`g` region) rather than the tail.
    pub in_prefix: bool,
    /// CE weight of the entry's structure bytes.
    pub struct_weight: f64,
    /// CE weight of the entry's description (0 = masked).
    pub desc_weight: f64,
    /// Coordinate supervision, if any.
    pub coord_target: Option<CoordTarget>,
}

/// The clean-prefix target of one sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// The whole answer, one string, closed with `]}`.
    pub text: String,
    pub insertion_order: InsertionOrder,
    /// Bytes `[0, prefix_end)` are the prefix (structure weight `g`), the rest the tail.
    pub prefix_end: usize,
    /// `boundaries[b]` = byte length of the prefix text after its first `b` entries
    /// (`b = 0..=` prefix entries); the duplicate-burst unlikelihood aligns at these.
    pub boundaries: Vec<usize>,
    /// The container's closing `}`.
    pub closure: Range<usize>,
    /// Every object entry, in text order.
    pub entries: Vec<Entry>,
    /// `g`, echoed for [`Target::token_weights`].
    pub global_prefix_weight: f64,
}

/// Build the target (module docs).
pub fn build(
    anchors: &[AnchorEntry<'_>],
    fns: &[FnEntry<'_>],
    weights: &TargetWeights,
    insertion: InsertionOrder,
    order: FieldOrder,
) -> Target {
    let g = weights.global_prefix_weight;
    struct Item<'b> {
        role: Role,
        desc: &'b str,
        geometry: Geometry<Bin>,
        desc_weight: f64,
        fn_struct_tail: bool,
        coord_target: Option<CoordTarget>,
    }
    let own = |b: &[Bin; 4]| b.to_vec();
    let mut items: Vec<Item<'_>> = anchors
        .iter()
        .map(|a| {
            let (desc_weight, coord_target) = match a.role {
                Role::Matched { desc_agrees, .. } => (
                    if desc_agrees { g } else { 0.0 },
                    Some(CoordTarget { bins: own(&a.gt_box.unwrap_or(a.bbox)), weight: 1.0 }),
                ),
                Role::PseudoPositive { .. } => (
                    0.0,
                    Some(CoordTarget {
                        bins: own(&a.bbox),
                        weight: weights.pseudo_positive_coord_weight,
                    }),
                ),
                Role::Shielded { support_rate, .. } => {
                    let w = weights.pseudo_positive_coord_weight * support_rate;
                    let t = (weights.pseudo_positive && w > 0.0)
                        .then(|| CoordTarget { bins: own(&a.bbox), weight: w });
                    (0.0, t)
                }
                Role::Demoted { .. } | Role::Fn { .. } => (0.0, None),
            };
            Item {
                role: a.role,
                desc: a.desc,
                geometry: Geometry::BBox(a.bbox),
                desc_weight,
                fn_struct_tail: false,
                coord_target,
            }
        })
        .collect();
    let fn_items = fns.iter().map(|f| {
        let w = if f.recovered { weights.recovered_gt_weight_multiplier } else { 1.0 };
        Item {
            role: Role::Fn { gt: f.gt, recovered: f.recovered },
            desc: f.desc,
            geometry: f.geometry.clone(),
            desc_weight: weights.fn_desc_weight * w,
            fn_struct_tail: true,
            coord_target: Some(CoordTarget { bins: f.geometry.coords(), weight: w }),
        }
    });
    let n_prefix = match insertion {
        InsertionOrder::TailAppend => {
            let n = items.len();
            items.extend(fn_items);
            n
        }
        InsertionOrder::Sorted => {
            items.extend(fn_items);
            items.sort_by_key(|it| boxes::top_left_key(&it.geometry));
            items.len()
        }
    };

    let mut text = String::with_capacity(16 + items.len() * 96);
    text.push_str(OPEN);
    let mut boundaries = vec![text.len()];
    let mut prefix_end = text.len();
    let mut entries = Vec::with_capacity(items.len());
    for (i, it) in items.into_iter().enumerate() {
        let in_prefix = i < n_prefix;
        if i > 0 {
            text.push_str(SEP);
        }
        let w = write_entry(&mut text, it.desc, &it.geometry, order);
        if in_prefix {
            boundaries.push(text.len());
            prefix_end = text.len();
        }
        entries.push(Entry {
            role: it.role,
            desc_text: it.desc.to_owned(),
            bins: it.geometry.coords(),
            span: w.span,
            desc: w.desc,
            coords: w.coords,
            in_prefix,
            struct_weight: if in_prefix || !it.fn_struct_tail { g } else { 1.0 },
            desc_weight: it.desc_weight,
            coord_target: it.coord_target,
        });
    }
    text.push(']');
    let closure = text.len()..text.len() + 1;
    text.push('}');
    Target {
        text,
        insertion_order: insertion,
        prefix_end,
        boundaries,
        closure,
        entries,
        global_prefix_weight: g,
    }
}

/// The container opener, `{"objects": [`.
pub const OPEN: &str = "{\"objects\": [";
/// The separator between entries.
pub const SEP: &str = ", ";

/// Byte ranges of one written entry.
pub struct Written {
    pub span: Range<usize>,
    pub desc: Range<usize>,
    pub coords: Vec<Range<usize>>,
}

/// Append one canonical entry (core's `render_object_into` layout, built from core's own
/// `write_json_string` and `Bin::write_token`) and report where its parts are.
pub fn write_entry(
    out: &mut String,
    desc: &str,
    geometry: &Geometry<Bin>,
    order: FieldOrder,
) -> Written {
    let start = out.len();
    let mut desc_range = 0..0;
    let mut coords = Vec::with_capacity(geometry.num_coords());
    let mut put_desc = |out: &mut String| {
        out.push_str("\"desc\": ");
        let s = out.len();
        write_json_string(out, desc);
        desc_range = s + 1..out.len() - 1;
    };
    let mut put_geometry = |out: &mut String| {
        out.push('"');
        out.push_str(geometry.key());
        out.push_str("\": [");
        for (k, b) in geometry.coords().into_iter().enumerate() {
            if k > 0 {
                out.push_str(SEP);
            }
            let s = out.len();
            b.write_token(out);
            coords.push(s..out.len());
        }
        out.push(']');
    };
    out.push('{');
    match order {
        FieldOrder::DescFirst => {
            put_desc(out);
            out.push_str(SEP);
            put_geometry(out);
        }
        FieldOrder::GeometryFirst => {
            put_geometry(out);
            out.push_str(SEP);
            put_desc(out);
        }
    }
    out.push('}');
    Written { span: start..out.len(), desc: desc_range, coords }
}

/// The closed canonical container of `items` (`{"objects": [...]}`), as the unlikelihood
/// alternatives are written.
pub fn closed_container(items: &[(&str, &Geometry<Bin>)], order: FieldOrder) -> String {
    let mut text = String::from(OPEN);
    for (i, (desc, geometry)) in items.iter().enumerate() {
        if i > 0 {
            text.push_str(SEP);
        }
        write_entry(&mut text, desc, geometry, order);
    }
    text.push_str("]}");
    text
}

/// The role of one token of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Braces, keys, separators.
    Struct,
    /// Overlaps a description's content.
    Desc,
    /// Overlaps a coordinate token (never CE'd).
    Coord,
    /// Overlaps the container's closing `}`.
    Closure,
}

/// The CE weight of one token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TokenWeight {
    pub kind: TokenKind,
    /// CE weight (0 for coordinates and masked descriptions).
    pub weight: f64,
    /// The entry the token belongs to, if any.
    pub entry: Option<usize>,
}

impl Target {
    /// Per-token CE weights for a tokenisation of [`Target::text`] given as byte ranges, by the
    /// role table (module docs). A token overlapping several regions takes, in this order of
    /// precedence: coordinate, description (of the first entry it overlaps), closure
    /// (`max(w, 1)`), structure (the largest structure weight among the regions it touches —
    /// a token straddling the prefix end gets the tail's 1 if that is larger).
    pub fn token_weights(&self, tokens: &[Range<usize>]) -> Vec<TokenWeight> {
        let overlaps = |t: &Range<usize>, r: &Range<usize>| t.start < r.end && r.start < t.end;
        let g = self.global_prefix_weight;
        tokens
            .iter()
            .map(|t| {
                let touched: Vec<usize> = self
                    .entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| overlaps(t, &e.span))
                    .map(|(i, _)| i)
                    .collect();
                if let Some(&i) =
                    touched.iter().find(|&&i| self.entries[i].coords.iter().any(|c| overlaps(t, c)))
                {
                    return TokenWeight { kind: TokenKind::Coord, weight: 0.0, entry: Some(i) };
                }
                if let Some(&i) = touched.iter().find(|&&i| overlaps(t, &self.entries[i].desc)) {
                    let e = &self.entries[i];
                    return TokenWeight {
                        kind: TokenKind::Desc,
                        weight: e.desc_weight,
                        entry: Some(i),
                    };
                }
                // Structure weight: entries touched, and the gaps between entries on either
                // side of the prefix end.
                let mut w: f64 =
                    touched.iter().map(|&i| self.entries[i].struct_weight).fold(0.0, f64::max);
                let inside_one_entry = touched.len() == 1
                    && self.entries[touched[0]].span.start <= t.start
                    && t.end <= self.entries[touched[0]].span.end;
                if !inside_one_entry || t.is_empty() {
                    if t.start < self.prefix_end {
                        w = w.max(g);
                    }
                    if t.end > self.prefix_end || t.start >= self.prefix_end {
                        w = w.max(1.0);
                    }
                }
                let entry = touched.first().copied();
                if overlaps(t, &self.closure) {
                    return TokenWeight { kind: TokenKind::Closure, weight: w.max(1.0), entry };
                }
                TokenWeight { kind: TokenKind::Struct, weight: w, entry }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coordexp_core::coordjson::{parse_strict, render_object_into};
    use coordexp_core::record::Polygon;

    fn b(c: [u16; 4]) -> [Bin; 4] {
        c.map(|k| Bin::new(k).unwrap())
    }

    fn weights() -> TargetWeights {
        TargetWeights {
            global_prefix_weight: 0.5,
            fn_desc_weight: 1.5,
            recovered_gt_weight_multiplier: 2.0,
            pseudo_positive: false,
            pseudo_positive_coord_weight: 0.5,
        }
    }

    #[test]
    fn written_entries_equal_cores_canonical_renderer_in_both_field_orders() {
        let poly =
            Polygon::new(vec![[Bin::MIN, Bin::MAX], [Bin::MAX, Bin::MIN], [Bin::MIN, Bin::MIN]])
                .unwrap();
        for order in [FieldOrder::DescFirst, FieldOrder::GeometryFirst] {
            for (desc, g) in [
                ("red \"quoted\" \\ é\n", Geometry::BBox(b([1, 2, 30, 400]))),
                ("tree", Geometry::Poly(poly.clone())),
            ] {
                let mut ours = String::from("xx");
                let w = write_entry(&mut ours, desc, &g, order);
                let mut core = String::from("xx");
                render_object_into(&mut core, desc, &g, order);
                assert_eq!(ours, core);
                assert_eq!(&ours[w.span.clone()], &core[2..]);
                assert_eq!(w.coords.len(), g.num_coords());
                assert_eq!(&ours[w.coords[0].clone()], g.coords()[0].token());
                let mut lit = String::new();
                write_json_string(&mut lit, desc);
                assert_eq!(&ours[w.desc.start - 1..w.desc.end + 1], lit);
            }
        }
    }

    #[test]
    fn tail_append_puts_fn_after_the_prefix_with_a_tail_separator() {
        let gt = Geometry::BBox(b([5, 6, 7, 8]));
        let a = [AnchorEntry {
            role: Role::Matched { clean: 0, gt: 1, desc_agrees: true },
            desc: "cat",
            bbox: b([1, 2, 3, 4]),
            gt_box: Some(b([1, 2, 3, 5])),
        }];
        let f = [FnEntry { gt: 0, desc: "dog", geometry: &gt, recovered: true }];
        let t = build(&a, &f, &weights(), InsertionOrder::TailAppend, FieldOrder::DescFirst);
        assert_eq!(
            t.text,
            "{\"objects\": [{\"desc\": \"cat\", \"bbox_2d\": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}, {\"desc\": \"dog\", \"bbox_2d\": [<|coord_5|>, <|coord_6|>, <|coord_7|>, <|coord_8|>]}]}"
        );
        assert_eq!(&t.text[t.prefix_end..t.prefix_end + 2], ", ");
        assert_eq!(t.boundaries, vec![13, t.prefix_end]);
        assert_eq!(&t.text[t.closure.clone()], "}");
        assert_eq!(t.closure.end, t.text.len());
        let (m, n) = (&t.entries[0], &t.entries[1]);
        assert_eq!((m.struct_weight, m.desc_weight), (0.5, 0.5));
        assert_eq!(
            m.coord_target,
            Some(CoordTarget { bins: b([1, 2, 3, 5]).to_vec(), weight: 1.0 })
        );
        assert_eq!((n.struct_weight, n.desc_weight), (1.0, 3.0));
        assert_eq!(
            n.coord_target,
            Some(CoordTarget { bins: b([5, 6, 7, 8]).to_vec(), weight: 2.0 })
        );
        assert_eq!(&t.text[n.desc.clone()], "dog");
        let p = parse_strict(&t.text, Some(FieldOrder::DescFirst)).unwrap();
        assert_eq!(p.objects.len(), 2);
    }

    #[test]
    fn sorted_mode_orders_by_top_left_and_keeps_fn_desc_weights() {
        let gt = Geometry::BBox(b([5, 1, 7, 8]));
        let a = [AnchorEntry {
            role: Role::Shielded { clean: 0, support: 1, support_rate: 1.0 },
            desc: "cat",
            bbox: b([1, 2, 3, 4]),
            gt_box: None,
        }];
        let f = [FnEntry { gt: 0, desc: "dog", geometry: &gt, recovered: true }];
        let t = build(&a, &f, &weights(), InsertionOrder::Sorted, FieldOrder::DescFirst);
        assert!(matches!(t.entries[0].role, Role::Fn { gt: 0, recovered: true }));
        assert_eq!(t.prefix_end + 2, t.text.len());
        assert_eq!(t.boundaries.len(), 3);
        assert!(t.entries.iter().all(|e| e.in_prefix));
        assert_eq!((t.entries[0].struct_weight, t.entries[0].desc_weight), (0.5, 3.0));
        assert_eq!(t.entries[1].desc_weight, 0.0);
        assert_eq!(t.entries[1].coord_target, None);
    }

    #[test]
    fn no_objects_at_all_is_an_empty_container() {
        let t = build(&[], &[], &weights(), InsertionOrder::TailAppend, FieldOrder::DescFirst);
        assert_eq!(t.text, "{\"objects\": []}");
        assert_eq!(t.boundaries, vec![13]);
        assert_eq!(t.prefix_end, 13);
    }

    #[test]
    fn token_weights_follow_the_role_table() {
        let gt = Geometry::BBox(b([5, 6, 7, 8]));
        let a = [AnchorEntry {
            role: Role::Matched { clean: 0, gt: 1, desc_agrees: false },
            desc: "cat",
            bbox: b([1, 2, 3, 4]),
            gt_box: Some(b([1, 2, 3, 5])),
        }];
        let f = [FnEntry { gt: 0, desc: "dog", geometry: &gt, recovered: false }];
        let t = build(&a, &f, &weights(), InsertionOrder::TailAppend, FieldOrder::DescFirst);
        // A byte-level tokenisation.
        let toks: Vec<Range<usize>> = (0..t.text.len()).map(|i| i..i + 1).collect();
        let w = t.token_weights(&toks);
        let at = |i: usize| w[i];
        assert_eq!(at(0).kind, TokenKind::Struct);
        assert_eq!(at(0).weight, 0.5);
        let m = &t.entries[0];
        assert_eq!(at(m.desc.start).kind, TokenKind::Desc);
        assert_eq!(at(m.desc.start).weight, 0.0, "unverified description masked");
        assert_eq!(at(m.coords[0].start).kind, TokenKind::Coord);
        let n = &t.entries[1];
        assert_eq!((at(n.desc.start).kind, at(n.desc.start).weight), (TokenKind::Desc, 1.5));
        assert_eq!(at(t.prefix_end).weight, 1.0, "tail separator");
        assert_eq!(at(n.span.start).weight, 1.0);
        assert_eq!(at(t.closure.start).kind, TokenKind::Closure);
        assert_eq!(at(t.closure.start).weight, 1.0);
        // A token straddling the prefix end takes the larger weight.
        let straddling = std::iter::once(t.prefix_end - 1..t.prefix_end + 1).collect::<Vec<_>>();
        let s = t.token_weights(&straddling);
        assert_eq!(s[0].weight, 1.0);
    }
}
