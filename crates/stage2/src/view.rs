//! A rollout's text → its *view*: the box objects channel B works with, plus counted drops.
//!
//! Why a separate step: the anchor and every explorer are read the same way, and everything
//! downstream (duplicate control, matching, triage) must see only objects it can compare — a
//! description and a proper box — while every discarded record stays visible as a counter
//! (stage2_current §2.1; stage2_rollout §3.5–§3.6).
//!
//! The rules, in order:
//! 1. Text from the first `<|im_end|>` on is not part of the answer (stage2_rollout §3.5
//!    step 2). The reference appends an end-of-turn token to a rollout cut at
//!    `max_new_tokens` only to make that cut deterministic; on text it changes nothing.
//! 2. Salvage parsing with the configured field order (core's [`parse_salvage`]): the first
//!    container from the left whose separators are intact; complete invalid records are
//!    dropped with a reason; an unfinished last record is dropped silently and marks the view
//!    `truncated` (§3.5, "Truncation at max_new_tokens").
//! 3. No container, or one that ends before its `[` → the rollout is **invalid**: zero objects
//!    and zero drop counters, `truncated` passed through (§3.5 "Fallback A"). Its objects are
//!    never guessed.
//! 4. Of the valid records, only `bbox_2d` with `x2 > x1` and `y2 > y1` are kept
//!    (stage2_current §2.1, stricter than the old `≥`); polygons count as `poly_unsupported`,
//!    inverted or flat boxes as `bbox_invalid` (§3.6).
//!
//! Where core's parser and the reference differ (documented, deliberate):
//! * The reference counts a geometry element that is not a bare coordinate token (a quoted
//!   token, a bare number) as `wrong_arity`; core names it `bad_token`. Both drop the record.
//! * The reference re-checks every record against the tokenizer (coordinate-token alignment)
//!   and counts a mismatch in both `dropped_invalid` and `dropped_ambiguous`, double-counting it
//!   in `N_drop_invalid`. We parse text, have no alignment step and count each drop once.
//! * The reference's prefix fallbacks B/C (the cut rollout prefix must end in `[` or `}`) guard
//!   the raw rollout prefix, which stage2_current §2.5 no longer uses as context; they have no
//!   equivalent here.
//! * A kept description containing `<|` (possible through JSON escapes such as `\u003c|`) is
//!   dropped as `special_token_in_desc`: re-serialised into the clean prefix it would be read
//!   by the tokenizer as a control or coordinate token, which in the reference trips the fatal
//!   coordinate-count check (stage2_current §2.5, `tb.py:712-722`). Counted like every drop.
//! * `unknown_geom` exists for parity of the counter set; core's parser only knows `bbox_2d`
//!   and `poly`, so it is always 0 (it is unreachable in the reference too, §3.6).

use crate::serde_bins;
use coordexp_core::coordjson::{DropReason, FieldOrder, parse_salvage};
use coordexp_core::norm1000::Bin;
use coordexp_core::record::Geometry;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ops::Range;

/// One usable object of a rollout: a description and a proper box.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewObject {
    /// Position in the rollout's `objects` array (dropped records count too).
    pub array_index: usize,
    /// The description, unescaped and trimmed.
    pub desc: String,
    /// `[x1, y1, x2, y2]` with `x2 > x1` and `y2 > y1`.
    #[serde(rename = "bbox_2d", with = "serde_bins")]
    pub bbox: [Bin; 4],
    /// The record's bytes in the rollout text.
    #[serde(skip)]
    pub span: Range<usize>,
}

/// Why a record of a rollout did not become a [`ViewObject`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropKind {
    /// The parser rejected the record.
    Parse(DropReason),
    /// A valid `poly` record (channel B supervises boxes only).
    PolyUnsupported,
    /// A geometry key that is neither `bbox_2d` nor `poly` (never produced; see module docs).
    UnknownGeom,
    /// A box with `x2 ≤ x1` or `y2 ≤ y1`.
    BboxInvalid,
    /// A description containing `<|` (see module docs).
    SpecialTokenInDesc,
    /// The unfinished last record of truncated text (not counted in `N_drop_invalid`).
    IncompleteTail,
}

impl DropKind {
    /// The reason code used in reports and the `strict_drop/reason/<r>` metrics.
    pub fn code(self) -> &'static str {
        match self {
            DropKind::Parse(r) => r.code(),
            DropKind::PolyUnsupported => "poly_unsupported",
            DropKind::UnknownGeom => "unknown_geom",
            DropKind::BboxInvalid => "bbox_invalid",
            DropKind::SpecialTokenInDesc => "special_token_in_desc",
            DropKind::IncompleteTail => "incomplete_tail",
        }
    }

    /// Whether the drop counts in `N_drop_invalid` (everything but the truncated tail).
    pub fn counts_as_invalid(self) -> bool {
        self != DropKind::IncompleteTail
    }
}

impl Serialize for DropKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// A dropped record: where it was and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DroppedRecord {
    /// Position in the `objects` array.
    pub array_index: usize,
    pub reason: DropKind,
}

/// What channel B reads from one rollout.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct View {
    /// The usable objects, in rollout order.
    pub objects: Vec<ViewObject>,
    /// Every record that did not become an object, in array order.
    pub dropped: Vec<DroppedRecord>,
    /// No usable container: the rollout contributes zero objects (and zero drops).
    pub invalid: bool,
    /// The text ended before the container closed.
    pub truncated: bool,
    /// Records the parser accepted, boxes and polygons alike (`rollout/*/pred_objects`).
    pub parsed_records: usize,
}

impl View {
    /// Read `text` (a rollout's decoded answer) in the configured field order.
    pub fn parse(text: &str, order: FieldOrder) -> View {
        let parsed = parse_salvage(text, Some(order));
        if !parsed.found() || parsed.array_open.is_none() {
            return View { invalid: true, truncated: parsed.truncated, ..View::default() };
        }
        let records = parsed.objects.len() + parsed.dropped.len();
        let mut view = View {
            truncated: parsed.truncated,
            parsed_records: parsed.objects.len(),
            ..View::default()
        };
        for d in &parsed.dropped {
            view.dropped
                .push(DroppedRecord { array_index: d.index, reason: DropKind::Parse(d.reason) });
        }
        for o in parsed.objects {
            let drop = |reason| DroppedRecord { array_index: o.index, reason };
            let bbox = match o.geometry {
                Geometry::BBox(b) => b,
                Geometry::Poly(_) => {
                    view.dropped.push(drop(DropKind::PolyUnsupported));
                    continue;
                }
            };
            if bbox[2] <= bbox[0] || bbox[3] <= bbox[1] {
                view.dropped.push(drop(DropKind::BboxInvalid));
                continue;
            }
            if o.desc.contains("<|") {
                view.dropped.push(drop(DropKind::SpecialTokenInDesc));
                continue;
            }
            view.objects.push(ViewObject {
                array_index: o.index,
                desc: o.desc,
                bbox,
                span: o.span.start..o.span.end,
            });
        }
        if parsed.incomplete_tail.is_some() {
            // The unfinished record comes right after every complete one.
            view.dropped
                .push(DroppedRecord { array_index: records, reason: DropKind::IncompleteTail });
        }
        view.dropped.sort_by_key(|d| d.array_index);
        view
    }

    /// `N_drop_invalid`: every counted drop (the truncated tail excluded), each once.
    pub fn n_drop_invalid(&self) -> usize {
        self.dropped.iter().filter(|d| d.reason.counts_as_invalid()).count()
    }

    /// Drops per reason code, reasons with a zero count omitted (as the reference emits them),
    /// the truncated tail excluded.
    pub fn drops_by_reason(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for d in self.dropped.iter().filter(|d| d.reason.counts_as_invalid()) {
            *out.entry(d.reason.code().to_owned()).or_insert(0) += 1;
        }
        out
    }

    /// How many drops have the given kind.
    pub fn count(&self, kind: DropKind) -> usize {
        self.dropped.iter().filter(|d| d.reason == kind).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DF: FieldOrder = FieldOrder::DescFirst;

    fn rec(desc: &str, c: [u16; 4]) -> String {
        let t: Vec<String> = c.iter().map(|&k| Bin::new(k).unwrap().token()).collect();
        format!(r#"{{"desc": "{desc}", "bbox_2d": [{}]}}"#, t.join(", "))
    }

    #[test]
    fn valid_boxes_are_kept_in_rollout_order_with_their_array_index() {
        let text = format!(
            r#"{{"objects": [{}, {}, {}]}}"#,
            rec("a", [1, 2, 3, 4]),
            r#"{"desc": "b"}"#,
            rec("c", [5, 6, 7, 8])
        );
        let v = View::parse(&text, DF);
        assert!(!v.invalid && !v.truncated);
        assert_eq!(v.objects.iter().map(|o| o.array_index).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(v.objects[1].desc, "c");
        assert_eq!(&text[v.objects[0].span.clone()], rec("a", [1, 2, 3, 4]));
        assert_eq!(v.n_drop_invalid(), 1);
        assert_eq!(v.parsed_records, 2);
    }

    #[test]
    fn flat_and_inverted_boxes_and_polygons_are_counted_not_kept() {
        let poly = r#"{"desc": "p", "poly": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>, <|coord_5|>, <|coord_6|>]}"#;
        let text = format!(
            r#"{{"objects": [{}, {}, {poly}, {}]}}"#,
            rec("flat", [5, 5, 5, 9]),
            rec("inv", [9, 5, 4, 9]),
            rec("ok", [1, 1, 2, 2])
        );
        let v = View::parse(&text, DF);
        assert_eq!(v.objects.len(), 1);
        assert_eq!(v.count(DropKind::BboxInvalid), 2);
        assert_eq!(v.count(DropKind::PolyUnsupported), 1);
        assert_eq!(v.n_drop_invalid(), 3);
        let reasons = v.drops_by_reason();
        assert_eq!(reasons.get("bbox_invalid"), Some(&2));
        assert_eq!(reasons.get("poly_unsupported"), Some(&1));
        assert_eq!(reasons.get("unknown_geom"), None);
    }

    #[test]
    fn no_container_is_an_invalid_rollout_with_zero_drops() {
        for text in ["", "garbage", r#"{"foo": 1}"#, r#"{"obj"#, "{", "[1, 2]"] {
            let v = View::parse(text, DF);
            assert!(v.invalid, "{text}");
            assert!(v.objects.is_empty() && v.dropped.is_empty(), "{text}");
        }
        // A container without its `[` is truncated but still invalid.
        assert!(View::parse(r#"{"objects": "#, DF).truncated);
    }

    #[test]
    fn truncation_keeps_complete_records_and_does_not_count_the_tail() {
        let text = format!(
            r#"{{"objects": [{}, {{"desc": "cut", "bbox_2d": [<|coord_8|>"#,
            rec("a", [1, 2, 3, 4])
        );
        let v = View::parse(&text, DF);
        assert!(v.truncated && !v.invalid);
        assert_eq!(v.objects.len(), 1);
        assert_eq!(v.count(DropKind::IncompleteTail), 1);
        assert_eq!(v.dropped[0].array_index, 1);
        assert_eq!(v.n_drop_invalid(), 0);
    }

    #[test]
    fn text_after_im_end_and_leading_prose_do_not_matter() {
        let text = format!(
            r#"Sure: {{"objects": [{}]}}<|im_end|>{{"objects": []}}"#,
            rec("a", [1, 2, 3, 4])
        );
        let v = View::parse(&text, DF);
        assert_eq!(v.objects.len(), 1);
        assert!(!v.invalid);
    }

    #[test]
    fn field_order_violations_are_dropped_with_their_reason() {
        let text = r#"{"objects": [{"bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>], "desc": "g"}]}"#;
        let v = View::parse(text, DF);
        assert!(v.objects.is_empty());
        assert_eq!(v.drops_by_reason().get("order_violation"), Some(&1));
        let v = View::parse(text, FieldOrder::GeometryFirst);
        assert_eq!(v.objects.len(), 1);
    }

    #[test]
    fn escaped_special_token_markers_in_descs_are_dropped() {
        let text = r#"{"objects": [{"desc": "\u003c|coord_5|>", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}]}"#;
        let v = View::parse(text, DF);
        assert!(v.objects.is_empty());
        assert_eq!(v.count(DropKind::SpecialTokenInDesc), 1);
    }
}
