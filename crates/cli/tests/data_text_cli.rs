//! `coordexp data render | parse | validate`: the record contract and CoordJSON from the
//! command line (output shape, exit codes, located messages).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn coordexp(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coordexp"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = stdin.unwrap_or("").to_owned();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const PIXELS: &str = r#"{"images": ["a.png"], "width": 640, "height": 480, "objects": [{"desc": "person", "bbox_2d": [0, 0, 640, 480]}, {"desc": "table", "poly": [100, 50, 320, 240, 639, 479]}]}"#;
const BINS: &str = r#"{"images": ["a.png"], "width": 640, "height": 480, "objects": [{"desc": "cat", "bbox_2d": ["<|coord_5|>", "<|coord_120|>", "<|coord_300|>", "<|coord_700|>"]}]}"#;

fn jsonl(dir: &Path, lines: &[&str]) -> PathBuf {
    let path = dir.join("d.jsonl");
    std::fs::write(&path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    path
}

#[test]
fn validate_a_clean_file_exits_zero_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let f = jsonl(dir.path(), &[PIXELS, BINS]);
    let o = coordexp(&["data", "validate", f.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("2 records, 0 with issues, 0 issues"), "{}", stdout(&o));
}

#[test]
fn validate_lists_every_problem_with_file_line_field_and_hint_and_exits_two() {
    let dir = tempfile::tempdir().unwrap();
    let bad = r#"{"images": ["a.png"], "width": 640, "height": 480, "objects": [{"desc": "a", "bbox_2d": [1, 2, 3, 4, 5]}]}"#;
    let f = jsonl(
        dir.path(),
        &[PIXELS, bad, "{", r#"{"images": ["a.png"], "width": 640.0, "height": 4, "objects": []}"#],
    );
    let o = coordexp(&["data", "validate", f.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    let file = f.display();
    assert!(
        out.contains(&format!("{file}:2: objects[0].bbox_2d: expected 4 numbers, got 5\n  hint: ")),
        "{out}"
    );
    assert!(out.contains(&format!("{file}:3: malformed JSON")), "{out}");
    assert!(
        out.contains(&format!("{file}:4: width: expected a positive integer, got 640.0")),
        "{out}"
    );
    assert!(out.contains("4 records, 3 with issues, 3 issues"), "{out}");
    assert!(out.contains("  wrong_arity: 1\n") && out.contains("  invalid_size: 1\n"), "{out}");
    assert!(stderr(&o).starts_with("error: 3 problems"), "{}", stderr(&o));
}

#[test]
fn validate_a_missing_file_is_an_input_error() {
    let o = coordexp(&["data", "validate", "/nonexistent/d.jsonl"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("hint:"));
}

#[test]
fn render_quantizes_pixel_records_with_their_own_size() {
    let dir = tempfile::tempdir().unwrap();
    let f = jsonl(dir.path(), &[BINS, PIXELS]);
    let o = coordexp(&["data", "render", f.to_str().unwrap(), "--line", "2"], None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "{\"objects\": [{\"desc\": \"person\", \"bbox_2d\": [<|coord_0|>, <|coord_0|>, <|coord_999|>, <|coord_999|>]}, {\"desc\": \"table\", \"poly\": [<|coord_156|>, <|coord_104|>, <|coord_500|>, <|coord_501|>, <|coord_999|>, <|coord_999|>]}]}\n"
    );
}

#[test]
fn render_honours_the_field_order() {
    let dir = tempfile::tempdir().unwrap();
    let f = jsonl(dir.path(), &[BINS]);
    let o = coordexp(
        &["data", "render", f.to_str().unwrap(), "--line", "1", "--field-order", "geometry_first"],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "{\"objects\": [{\"bbox_2d\": [<|coord_5|>, <|coord_120|>, <|coord_300|>, <|coord_700|>], \"desc\": \"cat\"}]}\n"
    );
    let o = coordexp(
        &["data", "render", f.to_str().unwrap(), "--line", "1", "--field-order", "sideways"],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn render_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = jsonl(
        dir.path(),
        &[BINS, r#"{"images": ["a.png"], "width": 4, "height": 4, "objects": [{"desc": ""}]}"#],
    );
    let o = coordexp(&["data", "render", f.to_str().unwrap(), "--line", "2"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!(
            "objects[0].desc: desc is empty after trimming whitespace (desc = \"\") at {}:2",
            f.display()
        )),
        "{}",
        stderr(&o)
    );
    let o = coordexp(&["data", "render", f.to_str().unwrap(), "--line", "9"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("has only 2 lines"), "{}", stderr(&o));
}

fn parse_json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
fn parse_salvage_reports_objects_drops_and_truncation() {
    let text = r#"{"objects": [{"desc": "cat", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}, {"desc": "x", "bbox_2d": [<|coord_1|>]}, {"desc": "tail", "poly": [<|coord_8|>"#;
    let o = coordexp(&["data", "parse"], Some(text));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = parse_json(&o);
    assert_eq!(v["valid"], true);
    assert_eq!(v["truncated"], true);
    assert_eq!(
        v["objects"],
        serde_json::json!([{"index": 0, "desc": "cat", "bbox_2d": [1, 2, 3, 4]}])
    );
    assert_eq!(v["dropped"][0]["index"], 1);
    assert_eq!(v["dropped"][0]["reason"], "wrong_arity");
}

#[test]
fn parse_ignores_text_after_im_end_and_accepts_any_order_on_request() {
    let text = r#"{"objects": [{"poly": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>, <|coord_5|>, <|coord_6|>], "desc": "g"}]}<|im_end|>{"#;
    let v = parse_json(&coordexp(&["data", "parse", "--field-order", "any"], Some(text)));
    assert_eq!(v["valid"], true);
    assert_eq!(v["truncated"], false);
    assert_eq!(v["objects"][0]["poly"], serde_json::json!([1, 2, 3, 4, 5, 6]));
    let v = parse_json(&coordexp(&["data", "parse"], Some(text)));
    assert_eq!(v["dropped"][0]["reason"], "order_violation");
}

#[test]
fn parse_strict_failure_is_invalid_with_the_record_index_and_exits_two() {
    let text = r#"{"objects": [{"desc": "a", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_1000|>]}]}"#;
    let o = coordexp(&["data", "parse", "--mode", "strict"], Some(text));
    assert_eq!(o.status.code(), Some(2));
    let v = parse_json(&o);
    assert_eq!(v["valid"], false);
    assert_eq!(v["dropped"][0]["reason"], "bad_token");
    assert!(v["error"].as_str().unwrap().starts_with("objects[0] invalid (bad_token):"), "{v}");
    assert!(stderr(&o).contains("objects[0] invalid (bad_token)"));
}

#[test]
fn parse_without_a_container_is_invalid() {
    let o = coordexp(&["data", "parse"], Some("I see nothing."));
    assert_eq!(o.status.code(), Some(2));
    let v = parse_json(&o);
    assert_eq!(v["valid"], false);
    assert_eq!(v["objects"], serde_json::json!([]));
}
