//! CoordJSON render → parse round trips for arbitrary valid records, truncation behaviour on
//! every prefix, and no-panic guarantees for arbitrary input to every untrusted-text parser
//! (the CI-side complement of the cargo-fuzz targets in `fuzz/`).

use coordexp_core::coordjson::{self, FieldOrder, Parsed, parse_salvage, parse_strict};
use coordexp_core::norm1000::Bin;
use coordexp_core::record::{Desc, Geometry, Object, Polygon, Record};
use proptest::prelude::*;

fn bin() -> impl Strategy<Value = Bin> {
    (0u16..1000).prop_map(|k| Bin::new(k).unwrap())
}

/// Descriptions drawn from arbitrary non-control text mixed with JSON-significant fragments
/// (quotes, backslashes, braces, tokens), kept only when they satisfy the desc rules.
fn desc() -> impl Strategy<Value = Desc> {
    let piece = prop_oneof![
        4 => "[^\\p{Cc}]{1,6}",
        1 => Just("\"".to_owned()),
        1 => Just("\\".to_owned()),
        1 => Just("]}".to_owned()),
        1 => Just("{".to_owned()),
        1 => Just("<|coord_5|>".to_owned()),
        1 => Just("é猫🙂".to_owned()),
    ];
    prop::collection::vec(piece, 1..5)
        .prop_filter_map("desc rules", |v| Desc::new(&v.concat()).ok())
}

fn geometry() -> impl Strategy<Value = Geometry<Bin>> {
    prop_oneof![
        [bin(), bin(), bin(), bin()].prop_map(Geometry::BBox),
        prop::collection::vec([bin(), bin()], 3..16)
            .prop_map(|pts| Geometry::Poly(Polygon::new(pts).unwrap())),
    ]
}

fn objects() -> impl Strategy<Value = Vec<Object<Bin>>> {
    prop::collection::vec((desc(), geometry()).prop_map(|(d, g)| Object::new(d, g)), 0..8)
}

fn order() -> impl Strategy<Value = FieldOrder> {
    prop_oneof![Just(FieldOrder::DescFirst), Just(FieldOrder::GeometryFirst)]
}

/// The parse reproduces the objects and its spans point at the rendered pieces.
fn assert_matches(
    text: &str,
    parsed: &Parsed,
    objects: &[Object<Bin>],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(parsed.objects.len(), objects.len());
    for (i, (p, o)) in parsed.objects.iter().zip(objects).enumerate() {
        prop_assert_eq!(p.index, i);
        prop_assert_eq!(p.desc.as_str(), o.desc.as_str());
        prop_assert_eq!(&p.geometry, &o.geometry);
        let mut quoted = String::new();
        coordjson::write_json_string(&mut quoted, o.desc.as_str());
        prop_assert_eq!(p.desc_span.of(text), quoted.as_str());
        let coords = o.geometry.coords();
        prop_assert_eq!(p.coord_spans.len(), coords.len());
        for (s, b) in p.coord_spans.iter().zip(&coords) {
            prop_assert_eq!(s.of(text), b.token());
        }
        let span_text = p.span.of(text);
        prop_assert!(
            span_text.starts_with('{') && span_text.ends_with('}'),
            "record span {:?}",
            p.span
        );
        prop_assert!(p.geometry_span.start > p.span.start && p.geometry_span.end < p.span.end);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn render_then_strict_parse_round_trips(objs in objects(), ord in order()) {
        let text = coordjson::render(&objs, ord);
        prop_assert!(!text.contains('\n'));
        let parsed = parse_strict(&text, Some(ord)).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        assert_matches(&text, &parsed, &objs)?;
        prop_assert_eq!(parsed.container.map(|c| c.len()), Some(text.len()));
    }

    #[test]
    fn render_then_salvage_parse_round_trips(objs in objects(), ord in order()) {
        let text = coordjson::render(&objs, ord);
        let parsed = parse_salvage(&text, Some(ord));
        prop_assert!(parsed.found() && !parsed.truncated && parsed.dropped.is_empty());
        assert_matches(&text, &parsed, &objs)?;
        // Evaluation parses without an order rule; the result is the same.
        prop_assert_eq!(parse_salvage(&text, None), parsed);
    }

    #[test]
    fn the_other_field_order_drops_every_record_as_an_order_violation(objs in objects(), ord in order()) {
        let text = coordjson::render(&objs, ord);
        let other = match ord { FieldOrder::DescFirst => FieldOrder::GeometryFirst, FieldOrder::GeometryFirst => FieldOrder::DescFirst };
        let parsed = parse_salvage(&text, Some(other));
        prop_assert!(parsed.objects.is_empty());
        prop_assert_eq!(parsed.dropped.len(), objs.len());
        prop_assert!(parsed.dropped.iter().all(|d| d.reason.code() == "order_violation"));
    }

    #[test]
    fn every_prefix_salvages_the_complete_records_and_flags_truncation(
        objs in objects(), ord in order(), cut in 0.0f64..1.0,
    ) {
        let text = coordjson::render(&objs, ord);
        let full = parse_strict(&text, Some(ord)).unwrap();
        let mut at = ((text.len() as f64) * cut) as usize;
        while !text.is_char_boundary(at) { at -= 1; }
        let prefix = &text[..at];
        let parsed = parse_salvage(prefix, Some(ord));
        prop_assert!(parsed.dropped.is_empty());
        if at == 0 {
            prop_assert!(!parsed.found());
        } else {
            prop_assert!(parsed.found() && parsed.truncated);
            let complete = full.objects.iter().filter(|o| o.span.end <= at).count();
            prop_assert_eq!(parsed.objects.len(), complete);
            for (p, f) in parsed.objects.iter().zip(&full.objects) {
                prop_assert_eq!(p, f);
            }
            prop_assert!(parse_strict(prefix, Some(ord)).is_err());
        }
    }

    #[test]
    fn arbitrary_text_never_panics_any_parser(s in any::<String>()) {
        let _ = parse_salvage(&s, Some(FieldOrder::DescFirst));
        let _ = parse_salvage(&s, None);
        let _ = parse_strict(&s, Some(FieldOrder::GeometryFirst));
        let _ = Record::from_json_line(&s);
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_parser(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let s = String::from_utf8_lossy(&bytes);
        let _ = parse_salvage(&s, None);
        let _ = parse_strict(&s, None);
        let _ = Record::from_json_line(&s);
    }

    #[test]
    fn mutated_renders_never_panic_and_spans_stay_in_bounds(
        objs in objects(), ord in order(),
        edits in prop::collection::vec((0.0f64..1.0, prop_oneof![
            Just(""), Just("{"), Just("}"), Just("["), Just("]"), Just(","), Just("\""), Just("\\"),
            Just("<|coord_"), Just("<|coord_*|>"), Just("<|im_end|>"), Just(" "), Just(":"),
        ]), 1..6),
    ) {
        let mut text = coordjson::render(&objs, ord);
        for (pos, ins) in edits {
            let mut at = ((text.len() as f64) * pos) as usize;
            while !text.is_char_boundary(at) { at -= 1; }
            if ins.is_empty() {
                // delete one character
                if let Some(c) = text[at..].chars().next() { text.replace_range(at..at + c.len_utf8(), ""); }
            } else {
                text.insert_str(at, ins);
            }
        }
        for parsed in [parse_salvage(&text, Some(ord)), parse_salvage(&text, None)] {
            for o in &parsed.objects {
                for s in [o.span, o.desc_span, o.geometry_span].iter().chain(&o.coord_spans) {
                    prop_assert!(s.start <= s.end && s.end <= text.len());
                    prop_assert!(text.is_char_boundary(s.start) && text.is_char_boundary(s.end));
                }
            }
        }
        let _ = parse_strict(&text, Some(ord));
    }
}

#[test]
fn a_pixel_record_renders_through_its_quantized_bins() {
    let r = Record::from_json_line(
        r#"{"images": ["a.png"], "width": 640, "height": 480, "objects": [{"desc": "person", "bbox_2d": [0, 0, 640, 480]}]}"#,
    )
    .unwrap();
    let b = r.to_bins().unwrap();
    let coordexp_core::record::Objects::Bins(objs) = b.objects() else { panic!("bins expected") };
    assert_eq!(
        coordjson::render(objs, FieldOrder::DescFirst),
        r#"{"objects": [{"desc": "person", "bbox_2d": [<|coord_0|>, <|coord_0|>, <|coord_999|>, <|coord_999|>]}]}"#
    );
}
