//! A small but realistic run directory, built from scratch: synthetic PNG images, a validation
//! file, `eval/gt.jsonl`, two evaluations (`step-2` and `final`) whose `metrics.json` is
//! computed by `coordexp_eval::preds::evaluate` on the fixture's own predictions (so the
//! numbers are real), `metrics.jsonl` with train and eval records, `manifest.json` and
//! `config.resolved.yaml`.

#![allow(dead_code)]

pub mod chromium;

use std::path::{Path, PathBuf};

use coordexp_core::coordjson::{FieldOrder, render};
use coordexp_core::geometry::ImageSize;
use coordexp_core::norm1000::quantize_bbox;
use coordexp_core::record::{Desc, Geometry, Object, Record};
use coordexp_eval::f1::IouThreshold;
use coordexp_eval::preds::{PredsOptions, evaluate};
use image::{Rgb, RgbImage};
use serde_json::{Value, json};

/// The description that must arrive in the page as text.
pub const HOSTILE_DESC: &str = r#"<script>alert("x")</script>"#;

/// What the fixture contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Stage 1: no stage-2 metrics.
    Stage1,
    /// Stage 2: `rollout/*`, `stage2/*`, `stage2_ab/*`, `train/triage/*`, `dup/*` metrics too.
    Stage2,
}

pub struct Fixture {
    pub root: PathBuf,
    pub run: PathBuf,
    pub data: PathBuf,
    /// Validation records in the fixture.
    pub records: usize,
    /// Distinct ground-truth descriptions (= categories).
    pub categories: usize,
}

/// `(desc, [x1, y1, x2, y2])` of one object.
type Obj = (&'static str, [f64; 4]);

/// The objects of each image, and the image size.
fn scenes() -> Vec<((u32, u32), Vec<Obj>)> {
    vec![
        (
            (192, 128),
            vec![
                ("red circle", [12.0, 10.0, 70.0, 66.0]),
                ("blue square", [100.0, 40.0, 170.0, 110.0]),
            ],
        ),
        (
            (160, 160),
            vec![
                ("green triangle", [20.0, 30.0, 90.0, 100.0]),
                ("yellow diamond", [96.0, 96.0, 150.0, 150.0]),
            ],
        ),
        (
            (128, 128),
            vec![
                ("blue square", [10.0, 10.0, 60.0, 60.0]),
                ("red circle", [70.0, 64.0, 120.0, 118.0]),
            ],
        ),
        ((192, 128), vec![(HOSTILE_DESC, [30.0, 20.0, 110.0, 100.0])]),
        (
            (160, 128),
            vec![
                ("green triangle", [8.0, 8.0, 60.0, 70.0]),
                ("yellow diamond", [80.0, 30.0, 150.0, 110.0]),
                ("red circle", [66.0, 4.0, 96.0, 30.0]),
            ],
        ),
        ((128, 160), vec![("blue square", [30.0, 40.0, 100.0, 120.0])]),
        (
            (192, 160),
            vec![
                ("red circle", [20.0, 20.0, 90.0, 90.0]),
                ("blue square", [110.0, 60.0, 180.0, 140.0]),
            ],
        ),
        ((160, 160), vec![("yellow diamond", [40.0, 40.0, 120.0, 120.0])]),
    ]
}

fn colour(desc: &str) -> Rgb<u8> {
    match desc.split(' ').next() {
        Some("red") => Rgb([220, 38, 38]),
        Some("blue") => Rgb([37, 99, 235]),
        Some("green") => Rgb([22, 163, 74]),
        Some("yellow") => Rgb([234, 179, 8]),
        _ => Rgb([147, 51, 234]),
    }
}

/// A soft background with each object painted inside its box (circles as discs, the rest as
/// filled shapes), so screenshots have real content.
fn paint(size: (u32, u32), objects: &[(&str, [f64; 4])], seed: u32) -> RgbImage {
    let (w, h) = size;
    let mut img = RgbImage::from_fn(w, h, |x, y| {
        let t = (x + y + seed * 17) % 64;
        Rgb([228 + (t / 8) as u8, 232 + (x % 7) as u8, 238 - (y % 9) as u8])
    });
    for (desc, [x1, y1, x2, y2]) in objects {
        let c = colour(desc);
        let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        let (rx, ry) = ((x2 - x1) / 2.0, (y2 - y1) / 2.0);
        for y in (*y1 as u32)..(*y2 as u32).min(h) {
            for x in (*x1 as u32)..(*x2 as u32).min(w) {
                let (dx, dy) = ((f64::from(x) + 0.5 - cx) / rx, (f64::from(y) + 0.5 - cy) / ry);
                let inside = if desc.contains("circle") {
                    dx * dx + dy * dy <= 1.0
                } else if desc.contains("diamond") {
                    dx.abs() + dy.abs() <= 1.0
                } else if desc.contains("triangle") {
                    dy >= -1.0 && dx.abs() <= (dy + 1.0) / 2.0
                } else {
                    true
                };
                if inside {
                    img.put_pixel(x, y, c);
                }
            }
        }
    }
    img
}

/// CoordJSON text of `(desc, box)` objects for an image of `size`.
fn answer(size: ImageSize, objects: &[(&str, [f64; 4])]) -> String {
    let objects: Vec<Object<_>> = objects
        .iter()
        .map(|(d, b)| {
            Object::new(Desc::new(d).unwrap(), Geometry::BBox(quantize_bbox(*b, size).unwrap()))
        })
        .collect();
    render(&objects, FieldOrder::DescFirst)
}

fn shift(b: [f64; 4], dx: f64, dy: f64) -> [f64; 4] {
    [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy]
}

/// Prediction lines of one evaluation. `good` = the final model, else an early one.
fn predictions(records: &[(Record, Vec<Obj>)], good: bool) -> String {
    let mut out = String::new();
    for (i, (record, objects)) in records.iter().enumerate() {
        let size = record.size();
        let image = record.images()[0].clone();
        let mut line = json!({"image": image, "width": size.width(), "height": size.height()});
        if let Some(id) = record.extra().get("id") {
            line["id"] = id.clone();
        }
        let (text, scores): (String, Vec<f64>) = match (good, i) {
            // Early model: boxes off by a lot, a missing object, then truncated and empty answers.
            (false, 0 | 4) => {
                let moved: Vec<_> =
                    objects.iter().map(|(d, b)| (*d, shift(*b, 25.0, 18.0))).collect();
                (answer(size, &moved[..1]), vec![0.4])
            }
            (false, 2) => {
                let full = answer(size, objects);
                (full[..full.len() * 2 / 3].to_owned(), vec![])
            }
            (false, 5) => ("I see nothing here.".to_owned(), vec![]),
            (false, _) => (answer(size, objects), vec![0.6; objects.len()]),
            // Final model: exact, except one shifted box (FP + FN), one duplicate, one missing
            // line (record 5), a truncated tail and a wrong description.
            (true, 1) => {
                let mut o = objects.clone();
                o[1].1 = shift(o[1].1, 30.0, 0.0);
                (answer(size, &o), vec![0.9, 0.3])
            }
            (true, 2) => {
                let full = answer(size, objects);
                (format!("{}, {{\"desc\": \"blue", &full[..full.len() - 2]), vec![0.95, 0.8])
            }
            (true, 5) => continue,
            (true, 6) => {
                let mut o = objects.clone();
                o.push(("red circle", shift(o[0].1, 2.0, 1.0)));
                (answer(size, &o), vec![0.97, 0.91, 0.52])
            }
            (true, 7) => (answer(size, &[("purple star", objects[0].1)]), vec![0.5]),
            (true, _) => (
                answer(size, objects),
                (0..objects.len()).map(|k| 0.99 - 0.07 * k as f64).collect(),
            ),
        };
        line["text"] = Value::String(text);
        line["object_scores"] = json!(scores);
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// `metrics.json` as the trainer writes it, computed by the real evaluator.
fn eval_metrics(gt: &Path, preds: &Path, step: u64, records: usize) -> Value {
    let opts = PredsOptions {
        thresholds: vec![IouThreshold::new(0.3).unwrap(), IouThreshold::new(0.5).unwrap()],
        categories: None,
        top_unmapped: 10,
    };
    let ev = evaluate(gt, preds, &opts).unwrap();
    let n = records as f64;
    let stat = |k: &str| ev.coco.stat(k).unwrap_or(0.0).max(0.0);
    json!({
        "AP": stat("AP"),
        "AP50": stat("AP50"),
        "f1@0.5": ev.report.f1.get("0.5").map_or(0.0, |f| f.f1),
        "parse_valid_rate": ev.report.parse.valid as f64 / n,
        "hit_max_new_tokens_rate": ev.report.parse.truncated as f64 / n,
        "objects_per_record": ev.report.parse.objects_kept as f64 / n,
        "records": records,
        "seconds": 1.25,
        "step": step,
        "train_seconds": 10.0 * step as f64,
        "report": serde_json::to_value(&ev.report).unwrap(),
    })
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Build the fixture under `root`: `root/data/` (images and val.jsonl) and `root/runs/demo/`.
pub fn build(root: &Path, variant: Variant) -> Fixture {
    let data = root.join("data");
    let run = root.join("runs").join("demo");
    std::fs::create_dir_all(data.join("images/val")).unwrap();
    std::fs::create_dir_all(run.join("eval")).unwrap();

    // Images and the validation file (record 2 in bins, record 4 with an id and a polygon).
    let mut val = String::new();
    let mut records = Vec::new();
    let mut descs = std::collections::BTreeSet::new();
    for (i, ((w, h), objects)) in scenes().into_iter().enumerate() {
        let image = format!("images/val/{i:04}.png");
        paint((w, h), &objects, i as u32).save(data.join(&image)).unwrap();
        let size = ImageSize::new(w, h).unwrap();
        let objs: Vec<Value> = objects
            .iter()
            .enumerate()
            .map(|(k, (d, b))| {
                descs.insert(d.to_string());
                if i == 2 {
                    let bins = quantize_bbox(*b, size).unwrap();
                    json!({"desc": d, "bbox_2d": bins.iter().map(|b| b.token()).collect::<Vec<_>>()})
                } else if i == 4 && k == 0 {
                    let [x1, y1, x2, y2] = *b;
                    json!({"desc": d, "poly": [(x1 + x2) / 2.0, y1, x2, y2, x1, y2]})
                } else {
                    json!({"desc": d, "bbox_2d": b})
                }
            })
            .collect();
        let mut rec = json!({"images": [image], "width": w, "height": h, "objects": objs});
        if i == 4 {
            rec["id"] = json!("rec-4");
        }
        let record = Record::from_json_line(&rec.to_string()).unwrap();
        val.push_str(&record.to_json_line());
        val.push('\n');
        records.push((record, objects));
    }
    write(&data.join("val.jsonl"), &val);
    write(&data.join("train.jsonl"), &val);
    // eval/gt.jsonl: the evaluated records, unchanged (what the trainer writes).
    let gt = run.join("eval/gt.jsonl");
    write(&gt, &val);

    // Two evaluations with real metrics; an unreadable and an unknown line in the early one.
    for (name, step, good) in [("step-2", 2u64, false), ("final", 4, true)] {
        let mut preds = predictions(&records, good);
        if !good {
            preds.push_str("{not json\n");
            preds.push_str(r#"{"image": "images/val/9999.png", "text": "{\"objects\": []}"}"#);
            preds.push('\n');
        }
        let p = run.join("eval").join(name).join("predictions.jsonl");
        write(&p, &preds);
        let m = eval_metrics(&gt, &p, step, records.len());
        write(
            &run.join("eval").join(name).join("metrics.json"),
            &serde_json::to_string_pretty(&m).unwrap(),
        );
    }

    // metrics.jsonl: train records at steps 1–4 (one null, one NaN-turned-null), eval records
    // at 2 and 4 (from the metrics.json above), and one malformed line.
    let mut lines = Vec::new();
    for step in 1..=4u64 {
        let s = step as f64;
        let mut m = json!({
            "loss": 3.2 / s + 0.1,
            "loss/text_ce": 1.4 / s,
            "loss/soft_ce": 0.9 / s,
            "loss/w1": 0.5 / s,
            "loss/gate": if step == 3 { Value::Null } else { json!(0.05 / s) },
            "text_ce/struct": 0.3 / s,
            "text_ce/desc": 0.8 / s,
            "coord_diag/acc_top1": 0.1 * s,
            "coord_diag/expected_bin_mae": 40.0 / s,
            "lr": 2e-4 * s.min(2.0) / 2.0,
            "grad_norm": 4.0 / s,
            "tokens_per_s": 12000.0 + 500.0 * s,
            "epoch": s / 4.0,
        });
        if variant == Variant::Stage2 {
            let extra = json!({
                "rollout/parse_truncated": (step % 2) as f64,
                "rollout/pred_objects": 3.0 + s,
                "stage2/matched": 1.0 + s,
                "stage2/fn": 4.0 - s,
                "stage2_ab/channel_b/invalid_rollout": if step == 1 { 1.0 } else { 0.0 },
                "dup/N_objects_suppressed": 2.0 / s,
                "train/triage/dead_anchor": 0.5,
            });
            for (k, v) in extra.as_object().unwrap() {
                m[k] = v.clone();
            }
        }
        lines.push(json!({"schema_version": 1, "mode": "train", "step": step, "elapsed_s": 10.0 * s, "metrics": m}).to_string());
        if step == 2 || step == 4 {
            let name = if step == 2 { "step-2" } else { "final" };
            let mj: Value = serde_json::from_str(
                &std::fs::read_to_string(run.join("eval").join(name).join("metrics.json")).unwrap(),
            )
            .unwrap();
            let pick: serde_json::Map<String, Value> = [
                "AP",
                "AP50",
                "f1@0.5",
                "parse_valid_rate",
                "hit_max_new_tokens_rate",
                "objects_per_record",
                "seconds",
            ]
            .iter()
            .map(|k| (k.to_string(), mj[*k].clone()))
            .collect();
            lines.push(json!({"schema_version": 1, "mode": "eval", "step": step, "elapsed_s": 10.0 * s, "metrics": pick}).to_string());
        }
    }
    lines.insert(3, r#"{"schema_version":1,"mode":"train","step":"#.to_owned());
    write(&run.join("metrics.jsonl"), &(lines.join("\n") + "\n"));

    let stage = if variant == Variant::Stage2 { "stage2" } else { "stage1" };
    write(
        &run.join("config.resolved.yaml"),
        &format!(
            "run:\n  name: demo\n  output_dir: runs\n  seed: 17\ndata:\n  train: {0}/train.jsonl\n  val: {0}/val.jsonl\ntrain:\n  stage: {stage}\n  max_steps: 4\n  eval_every: 2\n",
            data.display()
        ),
    );
    let manifest = json!({
        "schema_version": 1,
        "coordexp_version": "0.1.0",
        "git": {"sha": "0123456789abcdef0123456789abcdef01234567", "dirty": true},
        "rustc": "rustc 1.95.0",
        "tch_version": "0.24.0",
        "torch_version": "2.11.0",
        "device": "cpu",
        "seeds": {"root": 17, "derivation": "splitmix64 derive(parent, stream, index) v1"},
        "datasets": [
            {"role": "train", "path": data.join("train.jsonl"), "sha256": "ab".repeat(32), "records": records.len()},
            {"role": "val", "path": data.join("val.jsonl"), "sha256": "cd".repeat(32), "records": records.len()}
        ],
        "tokenizer": {"path": "models/tiny", "sha256": "ef".repeat(32), "coord_first_id": 10, "coord_last_id": 1009},
        "prompts": {"system": "s", "user": "u"},
        "packing_plan_checksum": "0000",
        "command_line": ["coordexp", "train", "configs/demo/stage1.yaml"],
        "started_at": "2026-05-01T12:00:00Z",
        "resumes": []
    });
    write(&run.join("manifest.json"), &serde_json::to_string_pretty(&manifest).unwrap());

    Fixture { root: root.to_path_buf(), run, data, records: records.len(), categories: descs.len() }
}

/// Occurrences of `needle` in `haystack`.
pub fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}
