//! Properties of `decide` on arbitrary and adversarial rollout text: it never panics, and the
//! target it builds always strict-parses back to exactly the retained anchors plus the injected
//! ground truth, with the byte ranges it reports.

use coordexp_core::coordjson::{FieldOrder, parse_strict};
use coordexp_core::norm1000::Bin;
use coordexp_core::record::{Desc, Geometry, Object, Polygon};
use coordexp_stage2::{Decision, InsertionOrder, Role, Settings, decide};
use proptest::prelude::*;
use std::ops::Range;

const DESCS: [&str; 8] =
    ["car", "Car", "red_car", "tree (big)", "a \\\"q\\\"", "é猫", "  pad  ", "\\u003c|coord_1|>"];

fn token(k: u16) -> String {
    Bin::new(k % 1000).unwrap().token()
}

/// One record as a model might write it: mostly valid boxes near a few centres (so duplicates
/// and matches happen), sometimes polygons, flat boxes, wrong arity or broken syntax.
fn record(order: FieldOrder) -> impl Strategy<Value = (u8, usize, [u16; 4], bool)> {
    // One record in eight is written in the other field order (an order violation).
    (0u8..10, 0..DESCS.len(), prop::array::uniform4(0u16..1000), 0u8..8).prop_map(
        move |(k, d, c, flip)| (k, d, c, (order == FieldOrder::GeometryFirst) != (flip == 0)),
    )
}

/// A box from four random numbers: mostly one of a few canonical boxes around three centres
/// (so duplicates, near-duplicates and ground-truth matches are common), sometimes anywhere.
fn box_from(c: [u16; 4]) -> [u16; 4] {
    if c[3].is_multiple_of(4) {
        let (x1, y1) = (c[0] % 900, c[1] % 900);
        return [x1, y1, x1 + 1 + c[2] % 99, y1 + 1 + c[3] % 99];
    }
    let centre = [100u16, 450, 800][(c[0] % 3) as usize];
    let (x1, y1) = (centre - 50 + 3 * (c[1] % 2), centre - 50 + 3 * (c[2] % 2));
    let size = 100 + c[3] % 2;
    [x1, y1, x1 + size, y1 + size]
}

fn render_record((kind, d, c, geometry_first): (u8, usize, [u16; 4], bool)) -> String {
    let [x1, y1, x2, y2] = box_from(c);
    let boxed = [x1, y1, x2, y2].map(token).join(", ");
    let geometry = match kind {
        0 => format!("\"poly\": [{}]", [x1, y1, x2, y1, x2, y2].map(token).join(", ")),
        1 => format!("\"bbox_2d\": [{}]", [x2, y1, x1, y2].map(token).join(", ")),
        2 => format!("\"bbox_2d\": [{}]", [x1, y1, x2].map(token).join(", ")),
        3 => "\"bbox_2d\": [1, 2, 3, 4]".to_owned(),
        _ => format!("\"bbox_2d\": [{boxed}]"),
    };
    let desc = format!("\"desc\": \"{}\"", DESCS[d]);
    if geometry_first {
        format!("{{{geometry}, {desc}}}")
    } else {
        format!("{{{desc}, {geometry}}}")
    }
}

fn rollout(order: FieldOrder) -> impl Strategy<Value = String> {
    let structured = (
        prop::collection::vec(record(order), 0..12),
        0usize..6,
        any::<prop::sample::Index>(),
        any::<bool>(),
        "[ -~]{0,6}",
    )
        .prop_map(|(records, mode, cut, im_end, junk)| {
            let body: Vec<String> = records.into_iter().map(render_record).collect();
            let mut text = format!("{{\"objects\": [{}]}}", body.join(", "));
            match mode {
                // Truncated at any character boundary.
                0 => {
                    let mut at = cut.index(text.len() + 1);
                    while !text.is_char_boundary(at) {
                        at -= 1;
                    }
                    text.truncate(at);
                }
                // Leading prose.
                1 => text = format!("Sure! {junk}{text}"),
                // Junk spliced in.
                2 => {
                    let mut at = cut.index(text.len() + 1);
                    while !text.is_char_boundary(at) {
                        at -= 1;
                    }
                    text.insert_str(at, &junk);
                }
                _ => {}
            }
            if im_end {
                text.push_str("<|im_end|>{\"objects\": [");
            }
            text
        });
    prop_oneof![6 => structured, 1 => ".{0,80}", 1 => "[{}\\[\\]\",: a-z<|>_0-9]{0,120}"]
}

fn gt_object() -> impl Strategy<Value = Object<Bin>> {
    (0usize..4, prop::array::uniform4(0u16..1000), 0u8..4).prop_map(|(d, c, kind)| {
        let desc = Desc::new(["car", "tree", "red car", "lamp post"][d]).unwrap();
        let [x1, y1, x2, y2] = box_from(c);
        let b = |v: u16| Bin::new(v).unwrap();
        let geometry = match kind {
            0 => Geometry::Poly(
                Polygon::new(vec![[b(x1), b(y1)], [b(x2), b(y1)], [b(x1), b(y2)]]).unwrap(),
            ),
            // A flat box: legal in old records, never matched by a proper prediction.
            1 if c[0] % 5 == 0 => Geometry::BBox([b(x1), b(y1), b(x1), b(y2)]),
            _ => Geometry::BBox([b(x1), b(y1), b(x2), b(y2)]),
        };
        Object::new(desc, geometry)
    })
}

fn byte_tokens(s: &str) -> coordexp_core::Result<Vec<(u32, Range<usize>)>> {
    // Characters as tokens, coordinate tokens whole (as a real vocabulary has them).
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let len = if rest.starts_with("<|coord_") {
            rest.find("|>").map_or(1, |k| k + 2)
        } else {
            rest.chars().next().map_or(1, char::len_utf8)
        };
        let id =
            rest[..len].bytes().fold(3u32, |h, c| h.wrapping_mul(257).wrapping_add(u32::from(c)));
        out.push((id, i..i + len));
        i += len;
    }
    Ok(out)
}

fn check(d: &Decision, order: FieldOrder) -> Result<(), TestCaseError> {
    let t = &d.target;
    let parsed = parse_strict(&t.text, Some(order)).map_err(|e| {
        TestCaseError::fail(format!("target does not strict-parse: {e}\n{}", t.text))
    })?;
    prop_assert_eq!(parsed.objects.len(), t.entries.len());
    for (p, e) in parsed.objects.iter().zip(&t.entries) {
        prop_assert_eq!(&p.desc, &e.desc_text);
        prop_assert_eq!(p.geometry.coords(), e.bins.clone());
        prop_assert_eq!(p.span.start..p.span.end, e.span.clone());
        prop_assert_eq!(p.desc_span.start + 1..p.desc_span.end - 1, e.desc.clone());
        let coords: Vec<Range<usize>> = p.coord_spans.iter().map(|s| s.start..s.end).collect();
        prop_assert_eq!(coords, e.coords.clone());
    }
    // Exactly the retained anchors (in anchor order for tail_append) and the missed GT.
    let mut anchors: Vec<usize> = Vec::new();
    let mut fns: Vec<usize> = Vec::new();
    for e in &t.entries {
        match e.role {
            Role::Fn { gt, .. } => fns.push(gt),
            Role::Matched { clean, .. }
            | Role::Shielded { clean, .. }
            | Role::PseudoPositive { clean, .. }
            | Role::Demoted { clean, .. } => anchors.push(clean),
        }
    }
    if t.insertion_order == InsertionOrder::Sorted {
        anchors.sort_unstable();
        fns.sort_unstable();
    }
    prop_assert_eq!(&anchors, &d.triage.retained);
    prop_assert_eq!(&fns, &d.matching.fn_gt);
    // Boundaries, closure and the prefix end are where they say.
    prop_assert_eq!(&t.text[t.closure.clone()], "}");
    prop_assert!(t.text.ends_with("]}"), "target must close its container");
    prop_assert!(t.boundaries.iter().all(|&b| b <= t.prefix_end));
    prop_assert_eq!(t.boundaries.last().copied(), Some(t.prefix_end));
    // Token weights cover any tokenisation; unlikelihood alternatives share their boundary.
    let toks = byte_tokens(&t.text)?;
    let ranges: Vec<Range<usize>> = toks.iter().map(|t| t.1.clone()).collect();
    prop_assert_eq!(t.token_weights(&ranges).len(), ranges.len());
    for c in &d.unlikelihood {
        prop_assert!(c.alternative.starts_with(&t.text[..c.boundary_byte]));
        prop_assert!(parse_strict(&c.alternative, Some(order)).is_ok());
    }
    let ul = d.unlikelihood_targets(&byte_tokens)?;
    prop_assert!(ul.targets.len() + ul.skipped_no_divergence <= d.unlikelihood.len());
    prop_assert!(serde_json::to_string(d).is_ok());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn decide_never_panics_and_its_target_parses_back_to_retained_plus_fn(
        (order, anchor, explorers) in prop_oneof![Just(FieldOrder::DescFirst), Just(FieldOrder::GeometryFirst)]
            .prop_flat_map(|o| (Just(o), rollout(o), prop::collection::vec(rollout(o), 0..3))),
        gt in prop::collection::vec(gt_object(), 0..5),
        sorted in any::<bool>(),
        pseudo_positive in any::<bool>(),
    ) {
        let mut settings = Settings {
            insertion_order: if sorted { InsertionOrder::Sorted } else { InsertionOrder::TailAppend },
            ..Settings::default()
        };
        settings.pseudo_positive.enabled = pseudo_positive;
        let explorers: Vec<&str> = explorers.iter().map(String::as_str).collect();
        let d = decide(&anchor, &explorers, &gt, &settings, order);
        check(&d, order)?;
    }

    #[test]
    fn arbitrary_bytes_as_text_never_panic(anchor in any::<String>(), explorer in any::<String>()) {
        let d = decide(&anchor, &[&explorer], &[], &Settings::default(), FieldOrder::DescFirst);
        check(&d, FieldOrder::DescFirst)?;
    }
}

fn wild_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-1.0),
        Just(0.0),
        Just(1e300),
        0.0f64..2.0,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn absurd_settings_never_panic_and_are_reported_by_check(
        anchor in rollout(FieldOrder::DescFirst),
        explorer in rollout(FieldOrder::DescFirst),
        gt in prop::collection::vec(gt_object(), 0..4),
        f in prop::array::uniform8(wild_f64()),
        top_k in prop_oneof![Just(0usize), Just(usize::MAX), 0usize..8],
        resolution in prop_oneof![Just(0u32), Just(u32::MAX), 1u32..300],
        pseudo_positive in any::<bool>(),
    ) {
        let mut s = Settings::default();
        s.duplicate.iou_threshold = f[0];
        s.duplicate.center_radius_scale = f[1];
        s.unlabeled_consistent_iou_threshold = f[2];
        s.matching.gate = f[3];
        s.matching.fp_cost = f[4];
        s.matching.fn_cost = f[5];
        s.matching.candidate_top_k = top_k;
        s.matching.mask_resolution = resolution;
        s.recovered_gt_weight_multiplier = f[6];
        s.pseudo_positive.coord_weight = f[7];
        s.pseudo_positive.enabled = pseudo_positive;
        let d = decide(&anchor, &[&explorer], &gt, &s, FieldOrder::DescFirst);
        prop_assert!(parse_strict(&d.target.text, Some(FieldOrder::DescFirst)).is_ok());
        if f.iter().any(|v| !v.is_finite()) || resolution == 0 || resolution == u32::MAX {
            prop_assert!(!s.check().is_empty());
        }
    }
}

#[test]
fn production_defaults_pass_their_own_check() {
    assert_eq!(Settings::default().check(), Vec::<String>::new());
}
