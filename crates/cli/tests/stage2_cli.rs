//! Stage 2 from the command line: `inspect rollout` shows every decision of channel B for one
//! record (text and JSON, with the documented keys), and `coordexp train` runs the shipped
//! `configs/stage2/demo.yaml` on the demo's data.

use coordexp_core::coordjson::{FieldOrder, render};
use coordexp_core::record::{Objects, read_records};
use coordexp_demo::{self as demo, Arch};
use serde_json::Value;
use std::path::{Path, PathBuf};

mod common;

use common::{coordexp, text};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A demo fixture, a rollout file that repeats the first object of a record (a duplicate) and
/// misses its last (a false negative), and an explorer file with the record's ground truth.
fn fixture(dir: &Path) -> (demo::Prepared, PathBuf, PathBuf, usize) {
    let prepared = demo::prepare(&dir.join("demo"), 6, 2, 5, &Arch::TEST).unwrap();
    let data = dir.join("demo/data/train.jsonl");
    let (line, record) = read_records(&data)
        .unwrap()
        .into_iter()
        .find(|(_, r)| r.objects().len() >= 2)
        .expect("a record with two objects");
    let binned = record.to_bins().unwrap();
    let Objects::Bins(objects) = binned.objects() else { unreachable!() };
    let mut anchor = vec![objects[0].clone(), objects[0].clone()];
    anchor.extend(objects[1..objects.len() - 1].iter().cloned());
    let rollout = dir.join("anchor.txt");
    std::fs::write(&rollout, format!("{}<|im_end|>", render(&anchor, FieldOrder::DescFirst)))
        .unwrap();
    std::fs::write(dir.join("explorer.txt"), render(objects, FieldOrder::DescFirst)).unwrap();
    (prepared, data, rollout, line)
}

#[test]
fn inspect_rollout_prints_every_decision_and_its_json_has_the_documented_keys() {
    let d = tempfile::tempdir().unwrap();
    let (prepared, data, rollout, line) = fixture(d.path());
    let args = |json: bool| {
        let mut v = vec![
            "inspect".to_string(),
            "rollout".into(),
            "--config".into(),
            prepared.config.display().to_string(),
            "--data".into(),
            data.display().to_string(),
            "--line".into(),
            line.to_string(),
            "--text".into(),
            rollout.display().to_string(),
            "--explorer".into(),
            d.path().join("explorer.txt").display().to_string(),
        ];
        if json {
            v.push("--json".into());
        }
        v
    };
    let o = coordexp(&args(false).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    for want in
        ["duplicates:", "matching (mask IoU", "missed ground truth", "target:", "unlikelihood:"]
    {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }

    let o = coordexp(&args(true).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["clean", "dropped", "duplicates", "matching", "target", "unlikelihood"] {
        assert!(v.get(key).is_some(), "no {key}");
    }
    assert!(v["duplicates"]["settings"]["iou_threshold"].is_number());
    assert!(v["duplicates"]["settings"]["center_radius_scale"].is_number());
    assert_eq!(v["duplicates"]["suppressed"], serde_json::json!([1]), "the repeat is suppressed");
    for k in ["candidate_top_k", "gate", "mask_resolution", "fp_cost", "fn_cost"] {
        assert!(v["matching"]["settings"][k].is_number(), "matching.settings.{k}");
    }
    let pairs = v["matching"]["pairs"].as_array().unwrap();
    assert!(!pairs.is_empty() && pairs[0].as_array().unwrap().len() == 2);
    assert_eq!(v["matching"]["fn"].as_array().unwrap().len(), 1, "the last object is missed");
    let clean = v["clean"].as_array().unwrap();
    assert!(clean[0]["desc"].is_string() && clean[0]["bbox_2d"].as_array().unwrap().len() == 4);
    let t = &v["target"];
    let n = t["input_ids"].as_array().unwrap().len();
    assert!(n > 0 && t["roles"].as_array().unwrap().len() == n);
    assert_eq!(t["weights"].as_array().unwrap().len(), n);
    let roles: Vec<&str> =
        t["roles"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(roles.contains(&"coord/matched") && roles.contains(&"coord/fn"), "{roles:?}");
    assert!(roles.last() == Some(&"end_of_turn"));
    assert!(v["unlikelihood"]["candidates"].as_array().is_some_and(|c| !c.is_empty()));
}

#[test]
fn inspect_rollout_without_a_rollout_text_is_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let (prepared, data, _, line) = fixture(d.path());
    let o = coordexp(&[
        "inspect",
        "rollout",
        "--config",
        prepared.config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--line",
        &line.to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--text"));
}

#[test]
fn the_shipped_stage2_demo_config_trains() {
    let d = tempfile::tempdir().unwrap();
    let (_, data, _, _) = fixture(d.path());
    let config = d.path().join("stage2.yaml");
    std::fs::write(
        &config,
        format!(
            "extends: {:?}\nrun:\n  output_dir: {:?}\ndata:\n  train: {:?}\n  val: {:?}\nmodel:\n  path: {:?}\n\
             packing:\n  max_length: 512\ntrain:\n  max_steps: 4\n  log_every: 1\n  eval_every: 0\n  save_every: 0\n\
             eval:\n  limit: 2\n  max_new_tokens: 16\nrollout:\n  max_new_tokens: 16\n",
            repo().join("configs/stage2/demo.yaml").display().to_string(),
            d.path().join("runs").display().to_string(),
            data.display().to_string(),
            d.path().join("demo/data/val.jsonl").display().to_string(),
            d.path().join("demo/model").display().to_string(),
        ),
    )
    .unwrap();
    let o = coordexp(&["train", config.to_str().unwrap(), "--no-progress"]);
    assert!(o.status.success(), "{}", text(&o));
    let metrics = std::fs::read_to_string(d.path().join("runs/demo-stage2/metrics.jsonl")).unwrap();
    assert!(metrics.contains("loss/B_rollout_text/struct_ce"), "{metrics}");
    assert!(metrics.contains("loss/text/struct_ce"));
    assert!(metrics.contains("stage2_ab/b_ratio_realized"));
}
