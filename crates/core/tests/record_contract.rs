//! The JSONL record contract, end to end through files: every error case is reported with
//! `FILE:LINE: field.path: message`, every problem of a file is collected, and valid records
//! survive a write/read round trip with their extra keys.

use coordexp_core::norm1000::Bin;
use coordexp_core::record::{
    Geometry, Objects, Reason, Record, RecordReader, ValidationReport, read_records, validate_file,
};
use std::io::Write;
use std::path::PathBuf;

const GOOD: &str = r#"{"images": ["a.png"], "width": 640, "height": 480, "objects": [{"desc": "cat", "bbox_2d": [1, 2, 30, 40]}]}"#;

fn write_file(lines: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    (dir, path)
}

fn validate(lines: &[&str]) -> (ValidationReport, String) {
    let (_dir, path) = write_file(lines);
    let report = validate_file(&path).unwrap();
    let text = report.render();
    (report, text)
}

/// Put `bad` on line 2 (after a valid line) and check that the report names line 2, the
/// field and the message, counts the reason, and that `read_records` fails at that line too.
fn assert_issue(bad: &str, field_and_message: &str, reason: Reason) {
    let (_dir, path) = write_file(&[GOOD, bad]);
    let report = validate_file(&path).unwrap();
    let text = report.render();
    let expected = format!("{}:2: {field_and_message}", path.display());
    assert!(text.contains(&expected), "missing `{expected}` in:\n{text}");
    assert!(
        report.counts().get(&reason).copied().unwrap_or(0) >= 1,
        "{reason} not counted:\n{text}"
    );
    assert!(!report.is_clean());
    let err = read_records(&path).unwrap_err();
    assert_eq!(err.location(), Some(format!("{}:2", path.display()).as_str()));
    assert_eq!(err.exit_code(), 2);
    assert!(err.hint_text().is_some());
}

fn obj_line(object: &str) -> String {
    format!(r#"{{"images": ["a.png"], "width": 640, "height": 480, "objects": [{object}]}}"#)
}

#[test]
fn malformed_json_names_the_line_and_column() {
    assert_issue(
        r#"{"images": ["a.png"], "width": 640,"#,
        "malformed JSON at column",
        Reason::MalformedJson,
    );
}

#[test]
fn invalid_utf8_is_malformed_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    std::fs::write(&path, b"{\"images\": [\"\xff\"]}\n").unwrap();
    let report = validate_file(&path).unwrap();
    assert!(report.render().contains(&format!("{}:1: line is not valid UTF-8", path.display())));
}

#[test]
fn a_line_that_is_not_an_object_is_rejected() {
    assert_issue("[1, 2]", "expected a JSON object, got a list of 2 items", Reason::NotAnObject);
}

#[test]
fn missing_required_keys_are_each_named() {
    assert_issue(
        r#"{"images": ["a.png"], "height": 480, "objects": []}"#,
        "width: missing required key `width`",
        Reason::MissingField,
    );
    assert_issue(
        r#"{"images": ["a.png"], "width": 4, "height": 480}"#,
        "objects: missing required key `objects`",
        Reason::MissingField,
    );
    assert_issue(
        r#"{"width": 4, "height": 480, "objects": []}"#,
        "images: missing required key `images`",
        Reason::MissingField,
    );
}

#[test]
fn width_and_height_must_be_positive_json_integers() {
    let cases = [
        ("640.0", "width: expected a positive integer, got 640.0"),
        ("0", "width: expected a positive integer, got 0"),
        ("-3", "width: expected a positive integer, got -3"),
        (r#""640""#, "width: expected a positive integer, got a string \"640\""),
        ("true", "width: expected a positive integer, got true"),
        ("4294967296", "width: expected a positive integer, got 4294967296"),
    ];
    for (w, msg) in cases {
        let line =
            format!(r#"{{"images": ["a.png"], "width": {w}, "height": 480, "objects": []}}"#);
        assert_issue(&line, msg, Reason::InvalidSize);
    }
    assert_issue(
        r#"{"images": ["a.png"], "width": 4, "height": 1.5, "objects": []}"#,
        "height: expected a positive integer, got 1.5",
        Reason::InvalidSize,
    );
}

#[test]
fn images_must_be_a_non_empty_list_of_paths() {
    assert_issue(
        r#"{"images": "a.png", "width": 4, "height": 4, "objects": []}"#,
        "images: expected a list of image paths, got a string \"a.png\"",
        Reason::InvalidImages,
    );
    assert_issue(
        r#"{"images": [], "width": 4, "height": 4, "objects": []}"#,
        "images: expected at least one image path, got an empty list",
        Reason::InvalidImages,
    );
    assert_issue(
        r#"{"images": ["a.png", 3], "width": 4, "height": 4, "objects": []}"#,
        "images[1]: expected a path string, got 3",
        Reason::InvalidImages,
    );
}

#[test]
fn objects_must_be_a_list_of_objects() {
    assert_issue(
        r#"{"images": ["a.png"], "width": 4, "height": 4, "objects": {"desc": "a"}}"#,
        "objects: expected a list of objects, got an object",
        Reason::ObjectsNotList,
    );
    assert_issue(
        &obj_line(r#""cat""#),
        "objects[0]: expected an object, got a string \"cat\"",
        Reason::ObjectNotMap,
    );
}

#[test]
fn desc_is_required_and_must_be_a_string() {
    assert_issue(
        &obj_line(r#"{"bbox_2d": [1, 2, 3, 4]}"#),
        "objects[0].desc: missing `desc`",
        Reason::MissingDesc,
    );
    assert_issue(
        &obj_line(r#"{"desc": 5, "bbox_2d": [1, 2, 3, 4]}"#),
        "objects[0].desc: expected a string, got 5",
        Reason::MissingDesc,
    );
}

#[test]
fn empty_desc_is_rejected() {
    assert_issue(
        &obj_line(r#"{"desc": "   ", "bbox_2d": [1, 2, 3, 4]}"#),
        "objects[0].desc: desc is empty after trimming whitespace",
        Reason::EmptyDesc,
    );
}

#[test]
fn desc_with_control_characters_is_rejected() {
    assert_issue(
        &obj_line(r#"{"desc": "red\ncircle", "bbox_2d": [1, 2, 3, 4]}"#),
        "objects[0].desc: desc contains the control character U+000A",
        Reason::DescControlChar,
    );
    assert_issue(
        &obj_line(r#"{"desc": "red\tcircle", "bbox_2d": [1, 2, 3, 4]}"#),
        "objects[0].desc: desc contains the control character U+0009",
        Reason::DescControlChar,
    );
}

#[test]
fn desc_with_separator_like_patterns_is_rejected() {
    for (desc, pat) in [
        ("person, standing", ", "),
        ("a ,b", " ,"),
        ("a / b", " /"),
        ("a/ b", "/ "),
        ("k: v", ": "),
        ("k :v", " :"),
        ("two  spaces", "  "),
    ] {
        let line = obj_line(&format!(r#"{{"desc": "{desc}", "bbox_2d": [1, 2, 3, 4]}}"#));
        assert_issue(
            &line,
            &format!("objects[0].desc: desc contains the separator-like pattern {pat:?}"),
            Reason::DescPattern,
        );
    }
}

#[test]
fn exactly_one_geometry_is_required() {
    assert_issue(
        &obj_line(r#"{"desc": "a"}"#),
        "objects[0]: has neither `bbox_2d` nor `poly`",
        Reason::NoGeometry,
    );
    assert_issue(
        &obj_line(r#"{"desc": "a", "bbox_2d": [1, 2, 3, 4], "poly": [1, 1, 2, 2, 3, 1]}"#),
        "objects[0]: has both `bbox_2d` and `poly`",
        Reason::TwoGeometries,
    );
}

#[test]
fn bbox_with_wrong_arity_reports_the_count() {
    let line = format!(
        r#"{{"images": ["a.png"], "width": 640, "height": 480, "objects": [{o}, {o}, {{"desc": "a", "bbox_2d": [1, 2, 3, 4, 5]}}]}}"#,
        o = r#"{"desc": "a", "bbox_2d": [1, 2, 3, 4]}"#
    );
    assert_issue(&line, "objects[2].bbox_2d: expected 4 numbers, got 5", Reason::WrongArity);
    assert_issue(
        &obj_line(r#"{"desc": "a", "bbox_2d": ["<|coord_1|>", "<|coord_2|>", "<|coord_3|>"]}"#),
        "objects[0].bbox_2d: expected 4 coordinate tokens, got 3",
        Reason::WrongArity,
    );
}

#[test]
fn poly_with_odd_length_is_rejected() {
    assert_issue(
        &obj_line(r#"{"desc": "a", "poly": [1, 1, 2, 2, 3, 1, 4]}"#),
        "objects[0].poly: expected an even number of numbers (x, y pairs), got 7",
        Reason::OddPoly,
    );
}

#[test]
fn poly_with_fewer_than_three_points_is_rejected() {
    assert_issue(
        &obj_line(r#"{"desc": "a", "poly": [1, 1, 2, 2]}"#),
        "objects[0].poly: expected at least 3 points (6 numbers), got 2 points",
        Reason::PolyTooShort,
    );
}

#[test]
fn geometry_must_be_a_list() {
    assert_issue(
        &obj_line(r#"{"desc": "a", "bbox_2d": null}"#),
        "objects[0].bbox_2d: expected a list of coordinates, got null",
        Reason::GeometryNotList,
    );
}

#[test]
fn nested_or_non_numeric_coordinates_are_rejected() {
    assert_issue(
        &obj_line(r#"{"desc": "a", "poly": [[1, 1], [2, 2], [3, 1]]}"#),
        "objects[0].poly[0]: expected a number or a coordinate token, got a list of 2 items",
        Reason::BadCoordinate,
    );
}

#[test]
fn non_finite_numbers_are_located_at_their_coordinate() {
    for (lit, idx) in [("NaN", 1), ("Infinity", 2), ("-Infinity", 0), ("1e999", 3)] {
        let mut coords = ["1", "2", "3", "4"];
        coords[idx] = lit;
        let line = obj_line(&format!(r#"{{"desc": "a", "bbox_2d": [{}]}}"#, coords.join(", ")));
        assert_issue(
            &line,
            &format!("objects[0].bbox_2d[{idx}]: coordinate {lit} is not finite"),
            Reason::NonFinite,
        );
    }
}

#[test]
fn inverted_boxes_are_errors_in_both_domains() {
    assert_issue(
        &obj_line(r#"{"desc": "a", "bbox_2d": [30, 2, 10, 40]}"#),
        "objects[0].bbox_2d: inverted box: x2 (10) < x1 (30)",
        Reason::InvertedBox,
    );
    assert_issue(
        &obj_line(
            r#"{"desc": "a", "bbox_2d": ["<|coord_1|>", "<|coord_9|>", "<|coord_3|>", "<|coord_4|>"]}"#,
        ),
        "objects[0].bbox_2d: inverted box: y2 (<|coord_4|>) < y1 (<|coord_9|>)",
        Reason::InvertedBox,
    );
}

#[test]
fn degenerate_but_not_inverted_boxes_are_accepted() {
    let (report, text) = validate(&[&obj_line(r#"{"desc": "a", "bbox_2d": [5, 5, 5, 5]}"#)]);
    assert!(report.is_clean(), "{text}");
}

#[test]
fn pixel_coordinates_outside_the_image_are_rejected() {
    assert_issue(
        &obj_line(r#"{"desc": "a", "bbox_2d": [1, 2, 641, 40]}"#),
        "objects[0].bbox_2d[2]: x = 641 is outside [0, 640]",
        Reason::OutsideImage,
    );
    assert_issue(
        &obj_line(r#"{"desc": "a", "poly": [1, -0.5, 2, 2, 3, 481]}"#),
        "objects[0].poly[1]: y = -0.5 is outside [0, 480] (and 1 more coordinates)",
        Reason::OutsideImage,
    );
    // The far edges themselves are inside.
    let (report, text) = validate(&[&obj_line(r#"{"desc": "a", "bbox_2d": [0, 0, 640, 480]}"#)]);
    assert!(report.is_clean(), "{text}");
}

#[test]
fn coordinate_tokens_out_of_range_are_rejected() {
    assert_issue(
        &obj_line(
            r#"{"desc": "a", "bbox_2d": ["<|coord_1|>", "<|coord_2|>", "<|coord_1000|>", "<|coord_4|>"]}"#,
        ),
        "objects[0].bbox_2d[2]: \"<|coord_1000|>\": coordinate token value 1000 is out of range 0..=999",
        Reason::TokenOutOfRange,
    );
}

#[test]
fn the_wildcard_token_is_rejected() {
    assert_issue(
        &obj_line(
            r#"{"desc": "a", "bbox_2d": ["<|coord_*|>", "<|coord_2|>", "<|coord_3|>", "<|coord_4|>"]}"#,
        ),
        "objects[0].bbox_2d[0]: \"<|coord_*|>\": the wildcard",
        Reason::WildcardToken,
    );
}

#[test]
fn strings_that_are_not_tokens_are_rejected() {
    assert_issue(
        &obj_line(
            r#"{"desc": "a", "bbox_2d": ["12", "<|coord_2|>", "<|coord_3|>", "<|coord_4|>"]}"#,
        ),
        "objects[0].bbox_2d[0]: \"12\" is not a coordinate token",
        Reason::BadToken,
    );
}

#[test]
fn mixing_numbers_and_tokens_is_rejected_within_and_across_objects() {
    assert_issue(
        &obj_line(r#"{"desc": "a", "bbox_2d": [1, "<|coord_2|>", 3, 4]}"#),
        "objects[0].bbox_2d: mixes 3 pixel numbers with 1 coordinate tokens",
        Reason::MixedCoordinates,
    );
    assert_issue(
        &obj_line(
            r#"{"desc": "a", "bbox_2d": [1, 2, 3, 4]}, {"desc": "b", "poly": ["<|coord_1|>", "<|coord_1|>", "<|coord_2|>", "<|coord_2|>", "<|coord_3|>", "<|coord_1|>"]}"#,
        ),
        "objects[1].poly: uses coordinate tokens but objects[0] uses pixel numbers",
        Reason::MixedCoordinates,
    );
}

#[test]
fn legacy_keys_get_a_migration_hint() {
    let (_dir, path) = write_file(&[&obj_line(r#"{"desc": "a", "bbox": [1, 2, 3, 4]}"#)]);
    let report = validate_file(&path).unwrap();
    let text = report.render();
    assert!(
        text.contains(&format!(
            "{}:1: objects[0].bbox: `bbox` is no longer part of the record contract\n  hint: rename `bbox` to `bbox_2d`",
            path.display()
        )),
        "{text}"
    );
    // The legacy key explains the missing geometry; no second "no geometry" issue.
    assert_eq!(report.issues().len(), 1);
    assert_issue(
        &obj_line(r#"{"desc": "a", "polygon": [1, 2, 3, 4, 5, 6]}"#),
        "objects[0].polygon: `polygon` is no longer part",
        Reason::LegacyKey,
    );
    assert_issue(
        &obj_line(r#"{"desc": "a", "line": [1, 2, 3, 4]}"#),
        "objects[0].line: `line` is no longer part",
        Reason::LegacyKey,
    );
}

#[test]
fn poly_points_must_match_the_polygon() {
    assert_issue(
        &obj_line(r#"{"desc": "a", "poly": [1, 1, 2, 2, 3, 1], "poly_points": 4}"#),
        "objects[0].poly_points: poly_points is 4 but poly has 3 points",
        Reason::PolyPointsMismatch,
    );
    let (report, text) =
        validate(&[&obj_line(r#"{"desc": "a", "poly": [1, 1, 2, 2, 3, 1], "poly_points": 3}"#)]);
    assert!(report.is_clean(), "{text}");
}

#[test]
fn every_problem_in_a_file_is_collected_with_a_summary() {
    let bad_many =
        obj_line(r#"{"desc": "", "bbox_2d": [1, 2, 3]}, {"desc": "b, c", "poly": [1, 1]}"#);
    let (report, text) = validate(&[GOOD, &bad_many, "", "not json", GOOD]);
    assert_eq!(report.records(), 4);
    assert_eq!(report.blank_lines(), 1);
    assert_eq!(report.records_with_issues(), 2);
    assert_eq!(report.issues().len(), 5, "{text}");
    let lines: Vec<_> = report.issues().iter().map(|i| (i.line, i.problem.path.as_str())).collect();
    assert_eq!(
        lines,
        vec![
            (2, "objects[0].desc"),
            (2, "objects[0].bbox_2d"),
            (2, "objects[1].desc"),
            (2, "objects[1].poly"),
            (4, ""),
        ]
    );
    assert!(text.contains("4 records, 2 with issues, 5 issues, 1 blank lines skipped"), "{text}");
    for code in [
        "empty_desc: 1",
        "wrong_arity: 1",
        "desc_pattern: 1",
        "poly_too_short: 1",
        "malformed_json: 1",
    ] {
        assert!(text.contains(&format!("  {code}\n")), "{code} in {text}");
    }
}

#[test]
fn read_records_fails_on_the_first_bad_line_and_mentions_the_rest() {
    let bad = obj_line(r#"{"desc": "", "bbox_2d": [1, 2, 3]}"#);
    let (_dir, path) = write_file(&[GOOD, GOOD, &bad, "garbage"]);
    let err = read_records(&path).unwrap_err();
    assert_eq!(err.location(), Some(format!("{}:3", path.display()).as_str()));
    assert!(err.what().starts_with("objects[0].desc: desc is empty"));
    assert!(err.hint_text().unwrap().contains("1 more problems on this line"));
}

#[test]
fn a_clean_file_reads_with_line_numbers_and_skips_blank_lines() {
    let (_dir, path) = write_file(&[GOOD, "", "  ", GOOD]);
    let records = read_records(&path).unwrap();
    assert_eq!(records.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 4]);
    let (report, _) = validate(&[GOOD, "", GOOD]);
    assert!(report.is_clean());
    let mut reader =
        RecordReader::new(std::io::Cursor::new(format!("{GOOD}\r\n\r\n{GOOD}\r\n")), "mem");
    assert_eq!(reader.by_ref().filter(|r| r.is_ok()).count(), 2);
    assert_eq!(reader.blank_lines(), 1);
}

#[test]
fn a_missing_file_is_an_input_error_with_a_hint() {
    let err = validate_file(std::path::Path::new("/nonexistent/x.jsonl")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.hint_text().is_some());
}

#[test]
fn empty_object_lists_are_valid() {
    let r =
        Record::from_json_line(r#"{"images": ["a.png"], "width": 4, "height": 4, "objects": []}"#)
            .unwrap();
    assert!(r.objects().is_empty());
    assert!(!r.objects().is_pixels());
}

#[test]
fn records_round_trip_through_json_with_extra_keys() {
    let line = r#"{"images": ["i/ü.png"], "width": 640, "height": 480, "image_id": 7, "metadata": {"src": "coco"}, "objects": [{"desc": " person ", "bbox_2d": [1.5, 2, 30, 40], "category_id": 1}, {"desc": "table", "poly": [1, 1, 20, 2, 3, 30], "poly_points": 3}]}"#;
    let r = Record::from_json_line(line).unwrap();
    assert_eq!(r.extra()["image_id"], 7);
    let out = r.to_json_line();
    assert_eq!(
        out,
        r#"{"images":["i/ü.png"],"width":640,"height":480,"objects":[{"desc":"person","bbox_2d":[1.5,2,30,40],"category_id":1},{"desc":"table","poly":[1,1,20,2,3,30],"poly_points":3}],"image_id":7,"metadata":{"src":"coco"}}"#
    );
    assert_eq!(Record::from_json_line(&out).unwrap(), r);
}

#[test]
fn token_records_round_trip_with_canonical_token_text() {
    let line = obj_line(
        r#"{"desc": "a", "bbox_2d": ["<|coord_007|>", "<|coord_2|>", "<|coord_30|>", "<|coord_999|>"]}"#,
    );
    let r = Record::from_json_line(&line).unwrap();
    let Objects::Bins(objs) = r.objects() else { panic!("expected bins") };
    let k = |v| Bin::new(v).unwrap();
    assert_eq!(objs[0].geometry, Geometry::BBox([k(7), k(2), k(30), k(999)]));
    let out = r.to_json_line();
    assert!(
        out.contains(r#""bbox_2d":["<|coord_7|>","<|coord_2|>","<|coord_30|>","<|coord_999|>"]"#),
        "{out}"
    );
    assert_eq!(Record::from_json_line(&out).unwrap(), r);
}

#[test]
fn pixel_records_convert_to_bins_that_validate() {
    let r = Record::from_json_line(GOOD).unwrap();
    let b = r.to_bins().unwrap();
    assert!(!b.objects().is_pixels());
    let back = Record::from_json_line(&b.to_json_line()).unwrap();
    assert_eq!(back, b);
}

#[test]
fn extra_keys_keep_their_file_order() {
    let line = r#"{"z": 1, "images": ["a.png"], "a": 2, "width": 4, "height": 4, "objects": [{"q": 1, "desc": "x", "b": 2, "bbox_2d": [0, 0, 1, 1], "a": 3}], "m": 3}"#;
    let out = Record::from_json_line(line).unwrap().to_json_line();
    assert_eq!(
        out,
        r#"{"images":["a.png"],"width":4,"height":4,"objects":[{"desc":"x","bbox_2d":[0,0,1,1],"q":1,"b":2,"a":3}],"z":1,"a":2,"m":3}"#
    );
}
