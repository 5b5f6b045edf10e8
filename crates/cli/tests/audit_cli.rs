//! `coordexp audit` from the command line: a clean demo setup passes with a Markdown report and a
//! JSON file; a broken image fails with exit 2 naming the record.

mod common;

use common::{coordexp, text};
use coordexp_demo::{self as demo, Arch};

#[test]
fn a_clean_demo_setup_passes_and_a_wrong_image_size_exits_2_at_its_record() {
    let d = tempfile::tempdir().unwrap();
    let prepared = demo::prepare(&d.path().join("demo"), 6, 3, 9, &Arch::TEST).unwrap();
    let json = d.path().join("audit.json");
    let o = coordexp(&[
        "audit",
        "--config",
        prepared.config.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("# coordexp audit") && out.contains("**PASS**"), "{out}");
    assert!(out.contains("## Pipeline map") && out.contains("## Provenance"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(v["checks"].as_array().is_some_and(|c| c.len() >= 8), "{v}");

    // Line 2 of the training file now claims another width than its image has.
    let train = d.path().join("demo/data/train.jsonl");
    let t = std::fs::read_to_string(&train).unwrap();
    let mut lines: Vec<String> = t.lines().map(String::from).collect();
    lines[1] = lines[1].replacen("\"width\":128", "\"width\":160", 1);
    std::fs::write(&train, lines.join("\n") + "\n").unwrap();
    let o = coordexp(&["audit", "--config", prepared.config.to_str().unwrap(), "--no-progress"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("train.jsonl:2"), "{}", text(&o));
}
