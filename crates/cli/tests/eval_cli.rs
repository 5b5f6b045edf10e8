//! `coordexp eval coco|preds` as a user runs them: joins, counters, outputs, exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn coordexp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coordexp")).args(args).output().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn lines(values: &[Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

fn bins(b: [u16; 4]) -> Value {
    json!(b.map(|k| format!("<|coord_{k}|>")))
}

/// The CoordJSON answer for `(desc, bins)` objects.
fn answer(objects: &[(&str, [u16; 4])]) -> String {
    let recs: Vec<String> = objects
        .iter()
        .map(|(d, b)| {
            let coords = b.map(|k| format!("<|coord_{k}|>")).join(", ");
            format!("{{\"desc\": \"{d}\", \"bbox_2d\": [{coords}]}}")
        })
        .collect();
    format!("{{\"objects\": [{}]}}", recs.join(", "))
}

/// Run `eval preds` and return (exit code, stdout, stderr, report JSON if written).
fn eval_preds(gt: &str, pred: &str, extra: &[&str]) -> (Option<i32>, String, String, Value) {
    let d = tempfile::tempdir().unwrap();
    let gt = write(d.path(), "gt.jsonl", gt);
    let pred = write(d.path(), "pred.jsonl", pred);
    let out = d.path().join("report.json");
    let mut args = vec![
        "eval",
        "preds",
        "--gt",
        gt.to_str().unwrap(),
        "--pred",
        pred.to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = coordexp(&args);
    let report = std::fs::read_to_string(&out)
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        report,
    )
}

/// COCO precision is `tp / (tp + fp + eps)` (pycocotools' eps), so a perfect AP is 1 - 2e-16.
fn assert_near(v: &Value, want: f64, what: &str) {
    let got = v.as_f64().unwrap_or(f64::NAN);
    assert!((got - want).abs() < 1e-9, "{what}: {got} != {want}");
}

fn assert_perfect(report: &Value) {
    for key in ["AP", "AP50", "AP75", "AR100"] {
        assert_near(&report["coco"][key], 1.0, key);
    }
    for table in ["f1", "f1_agnostic"] {
        for t in ["0.3", "0.5"] {
            let cell = &report[table][t];
            assert_eq!(
                (cell["precision"].as_f64(), cell["recall"].as_f64()),
                (Some(1.0), Some(1.0))
            );
            assert_eq!(cell["f1"], 1.0, "{table} {t}");
        }
    }
}

#[test]
fn empty_ground_truth_before_a_perfect_prediction_scores_perfect() {
    // The reference evaluator drops records with empty GT from its id space but keys predictions
    // by position, so the prediction for image 2 lands on nothing and AP comes out 0.
    let gt = lines(&[
        json!({"images": ["empty.png"], "width": 64, "height": 48, "objects": []}),
        json!({"images": ["cat.png"], "width": 640, "height": 480,
               "objects": [{"desc": "cat", "bbox_2d": bins([100, 200, 500, 900])},
                           {"desc": "dog", "bbox_2d": bins([600, 10, 990, 400])}]}),
        json!({"images": ["pix.png"], "width": 300, "height": 200,
               "objects": [{"desc": "car", "bbox_2d": [10.5, 20, 120, 180]}]}),
    ]);
    let pred = lines(&[
        // Out of order on purpose: the join is by identity.
        json!({"image": "pix.png", "objects": [{"desc": "car", "bbox_2d": [10.5, 20, 120, 180]}]}),
        json!({"image": "empty.png", "text": answer(&[])}),
        json!({"image": "cat.png",
               "text": answer(&[("dog", [600, 10, 990, 400]), ("cat", [100, 200, 500, 900])])}),
    ]);
    let (code, stdout, stderr, report) = eval_preds(&gt, &pred, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_perfect(&report);
    assert_eq!(report["images"]["with_prediction"], 3);
    assert_eq!(report["images"]["unknown"], 0);
    assert_eq!(report["parse"]["valid"], 2);
    assert_eq!(report["score_source"], "constant_1.0");
    assert!(
        stdout.contains(
            "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000"
        ),
        "{stdout}"
    );
}

#[test]
fn ids_take_precedence_and_unknown_predictions_are_reported() {
    let gt = lines(&[
        json!({"id": "a", "images": ["same.png"], "width": 100, "height": 100,
               "objects": [{"desc": "cat", "bbox_2d": [10, 10, 50, 50]}]}),
        json!({"id": 7, "images": ["same.png"], "width": 100, "height": 100,
               "objects": [{"desc": "dog", "bbox_2d": [20, 20, 90, 90]}]}),
    ]);
    let pred = lines(&[
        json!({"id": 7, "image": "ignored.png", "objects": [{"desc": "dog", "bbox_2d": [20, 20, 90, 90]}]}),
        json!({"id": "a", "objects": [{"desc": "cat", "bbox_2d": [10, 10, 50, 50]}]}),
        json!({"id": "nope", "objects": [{"desc": "cat", "bbox_2d": [10, 10, 50, 50]}]}),
        json!({"image": "elsewhere.png", "text": "{\"objects\": []}"}),
    ]);
    let (code, stdout, stderr, report) = eval_preds(&gt, &pred, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_perfect(&report);
    assert_eq!(report["images"]["unknown"], 2);
    let examples = report["images"]["unknown_examples"].to_string();
    assert!(examples.contains("pred.jsonl:3 (id nope)"), "{examples}");
    assert!(examples.contains("pred.jsonl:4 (image elsewhere.png)"), "{examples}");
    assert!(stdout.contains("2 unknown prediction lines"), "{stdout}");
}

#[test]
fn empty_prediction_file_gives_zeros_not_a_crash() {
    let gt = lines(&[
        json!({"images": ["a.png"], "width": 100, "height": 100,
               "objects": [{"desc": "cat", "bbox_2d": [10, 10, 50, 50]}]}),
        json!({"images": ["b.png"], "width": 100, "height": 100, "objects": []}),
    ]);
    let (code, _, stderr, report) = eval_preds(&gt, "", &[]);
    assert_eq!(code, Some(0), "{stderr}");
    for key in ["AP", "AP50", "AR100"] {
        assert_eq!(report["coco"][key], 0.0, "{key}");
    }
    for t in ["0.3", "0.5"] {
        assert_eq!(report["f1"][t]["f1"], 0.0);
        assert_eq!(report["f1"][t]["recall"], 0.0);
        assert_eq!(report["f1"][t]["fn"], 1);
    }
    assert_eq!(report["images"]["without_prediction"], 2);
    assert_eq!(report["parse"]["lines"], 0);
}

#[test]
fn truncated_text_is_counted_and_its_complete_objects_kept() {
    let gt = lines(&[json!({"images": ["a.png"], "width": 1000, "height": 1000,
        "objects": [{"desc": "cat", "bbox_2d": bins([100, 100, 400, 400])},
                    {"desc": "dog", "bbox_2d": bins([500, 500, 900, 900])}]})]);
    let full = answer(&[("cat", [100, 100, 400, 400]), ("dog", [500, 500, 900, 900])]);
    let cut = &full[..full.len() - 30];
    let pred = lines(&[json!({"image": "a.png", "text": cut})]);
    let d = tempfile::tempdir().unwrap();
    let per_image = d.path().join("per_image.jsonl");
    let (code, _, stderr, report) =
        eval_preds(&gt, &pred, &["--per-image", per_image.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["parse"]["truncated"], 1);
    assert_eq!(report["parse"]["valid"], 0);
    assert_eq!(report["parse"]["objects_kept"], 1);
    assert_eq!(report["parse"]["objects_dropped"]["incomplete_tail"], 1);
    assert_eq!(report["f1"]["0.5"]["tp"], 1);
    assert_eq!(report["f1"]["0.5"]["fn"], 1);
    let row: Value =
        serde_json::from_str(std::fs::read_to_string(&per_image).unwrap().trim()).unwrap();
    assert_eq!(row["status"], "truncated");
    assert_eq!(row["f1"]["0.5"], json!({"tp": 1, "fp": 0, "fn": 1}));
}

#[test]
fn unmapped_descriptions_and_invalid_lines_are_counted_and_scores_reported() {
    let gt = lines(&[json!({"images": ["a.png"], "width": 100, "height": 100,
        "objects": [{"desc": "person", "bbox_2d": [10, 10, 50, 50]}]})]);
    let pred = lines(&[json!({"image": "a.png", "objects": [
            {"desc": "Man", "bbox_2d": [10, 10, 50, 50], "score": 0.9},
            {"desc": "unicorn", "bbox_2d": [60, 60, 90, 90], "score": 0.8},
            {"desc": "unicorn", "bbox_2d": [61, 60, 90, 90]},
            {"desc": "broken", "bbox_2d": [1, 2, 3]}]})])
        + "this is not json\n\n";
    let d = tempfile::tempdir().unwrap();
    let results = d.path().join("results.json");
    let (code, _, stderr, report) =
        eval_preds(&gt, &pred, &["--coco-results", results.to_str().unwrap(), "--iou", "0.5"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["unmapped"]["mapped_synonym"], 1);
    assert_eq!(report["unmapped"]["total"], 2);
    assert_eq!(report["unmapped"]["top"], json!([{"desc": "unicorn", "count": 2}]));
    assert_eq!(report["parse"]["invalid_lines"], 1);
    assert_eq!(report["parse"]["blank_lines"], 1);
    assert_eq!(report["parse"]["objects_dropped"]["object_bad_bbox"], 1);
    assert_eq!(report["score_source"], "mixed");
    assert_eq!(
        report["f1"]["0.5"],
        json!({"precision": 1.0/3.0, "recall": 1.0, "f1": 0.5, "tp": 1, "fp": 2, "fn": 0})
    );
    assert_eq!(report["f1_agnostic"]["0.5"]["tp"], 1);
    assert!(report["f1"].get("0.3").is_none());
    // Unmapped predictions stay out of the COCO results.
    let res: Value = serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    assert_eq!(
        res,
        json!([{"image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 40.0, 40.0], "score": 0.9}])
    );
}

#[test]
fn a_fixed_category_list_maps_ground_truth_too() {
    let gt = lines(&[json!({"images": ["a.png"], "width": 100, "height": 100,
        "objects": [{"desc": "people", "bbox_2d": [10, 10, 50, 50]},
                    {"desc": "spaceship", "bbox_2d": [60, 60, 90, 90]}]})]);
    let pred = lines(&[
        json!({"image": "a.png", "objects": [{"desc": "person", "bbox_2d": [10, 10, 50, 50]}]}),
    ]);
    let d = tempfile::tempdir().unwrap();
    let cats = write(d.path(), "coco80.txt", "person\nbicycle\n");
    let (code, _, stderr, report) =
        eval_preds(&gt, &pred, &["--categories", cats.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["unmapped"]["categories"], 2);
    assert_eq!(report["unmapped"]["gt_unmapped"], 1);
    assert_eq!(report["unmapped"]["gt_unmapped_top"], json!([{"desc": "spaceship", "count": 1}]));
    assert_near(&report["coco"]["AP"], 1.0, "AP");
    assert_eq!(report["f1"]["0.5"]["fn"], 1);
}

#[test]
fn two_predictions_for_one_image_exit_2_with_both_lines() {
    let gt = lines(&[json!({"images": ["a.png"], "width": 100, "height": 100, "objects": []})]);
    let pred =
        lines(&[json!({"image": "a.png", "text": ""}), json!({"image": "a.png", "text": ""})]);
    let (code, _, stderr, _) = eval_preds(&gt, &pred, &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("pred.jsonl:2"), "{stderr}");
    assert!(stderr.contains("first is on line 1"), "{stderr}");
}

#[test]
fn a_bad_iou_list_exits_2() {
    let (code, _, stderr, _) = eval_preds("", "", &["--iou", "0.5,1.5"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("invalid IoU threshold `1.5` at --iou"), "{stderr}");
}

#[test]
fn eval_coco_prints_the_summary_and_writes_the_json() {
    let d = tempfile::tempdir().unwrap();
    let gt = write(
        d.path(),
        "gt.json",
        &json!({"images": [{"id": 1, "width": 100, "height": 100}],
                "categories": [{"id": 5, "name": "cat"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 10, 40, 40],
                                 "area": 1600, "iscrowd": 0}]})
        .to_string(),
    );
    let dt = write(
        d.path(),
        "dt.json",
        &json!([{"image_id": 1, "category_id": 5, "bbox": [10, 10, 40, 40], "score": 0.5}])
            .to_string(),
    );
    let out = d.path().join("out.json");
    let o = coordexp(&[
        "eval",
        "coco",
        "--gt",
        gt.to_str().unwrap(),
        "--dt",
        dt.to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.lines().count(), 12, "{stdout}");
    assert!(stdout.starts_with(
        " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000"
    ));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for k in
        ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    {
        assert!(v[k].is_f64(), "{k}");
    }
    assert_near(&v["per_category"]["cat"], 1.0, "per-category AP");
}

#[test]
fn eval_coco_with_a_missing_or_malformed_file_exits_2_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let gt = write(d.path(), "gt.json", "{\"images\": [");
    let o =
        coordexp(&["eval", "coco", "--gt", gt.to_str().unwrap(), "--dt", "/nonexistent/dt.json"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("gt.json"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
}
