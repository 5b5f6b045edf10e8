//! Salvage parsing of arbitrary model output: never panics, and every reported span lies inside
//! the text on character boundaries, with records in increasing, non-overlapping order.
#![no_main]

use coordexp_core::coordjson::{FieldOrder, Parsed, Span, parse_salvage};
use libfuzzer_sys::fuzz_target;

fn check_span(text: &str, s: Span) {
    assert!(s.start <= s.end && s.end <= text.len(), "span {s:?} outside text");
    assert!(
        text.is_char_boundary(s.start) && text.is_char_boundary(s.end),
        "span {s:?} splits a char"
    );
}

fn check(text: &str, p: &Parsed) {
    let mut records: Vec<(usize, Span)> = p.objects.iter().map(|o| (o.index, o.span)).collect();
    records.extend(p.dropped.iter().map(|d| (d.index, d.span)));
    records.sort_by_key(|r| r.0);
    for (i, (index, span)) in records.iter().enumerate() {
        assert_eq!(*index, i, "record indices are not contiguous");
        check_span(text, *span);
        if i > 0 {
            assert!(records[i - 1].1.end <= span.start, "records overlap");
        }
    }
    for o in &p.objects {
        for s in [o.desc_span, o.geometry_span].iter().chain(&o.coord_spans) {
            check_span(text, *s);
            assert!(o.span.start <= s.start && s.end <= o.span.end, "part outside its record");
        }
        assert_eq!(o.coord_spans.len(), o.geometry.num_coords());
    }
    if let Some(c) = p.container {
        check_span(text, c);
    } else {
        assert!(p.objects.is_empty() && p.dropped.is_empty() && !p.truncated);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check(text, &parse_salvage(text, Some(FieldOrder::DescFirst)));
        check(text, &parse_salvage(text, None));
    }
});
