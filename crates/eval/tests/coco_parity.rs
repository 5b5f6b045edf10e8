//! Live parity of `coordexp_eval::coco` with pycocotools on generated COCO files.
//!
//! Each case is written to disk once and evaluated by both sides: all 12 statistics must agree
//! to 1e-9, the 12 printed summary lines must be identical, and per-category AP must agree.
//! The generator covers what breaks evaluators: images without ground truth, images without
//! detections, crowd regions, more than 100 detections in an image, equal scores (stable-sort
//! tie-breaking), non-contiguous category ids, and tiny and huge boxes (all three area ranges).

use std::path::Path;

use coordexp_core::seed::SplitMix64 as Rng;
use coordexp_eval::coco::{IouKind, evaluate_files};
use serde_json::{Value, json};

const ORACLE: &str = r#"
import contextlib, io, json, sys
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
out = []
for case in json.load(sys.stdin):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        gt = COCO(case["gt"])
        dt = gt.loadRes(case["dt"])
        ev = COCOeval(gt, dt, case["iou_type"])
        ev.evaluate(); ev.accumulate(); ev.summarize()
    lines = [l for l in buf.getvalue().splitlines() if l.startswith(" Average")]
    per_cat = {}
    for k, cid in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        p = p[p > -1]
        if p.size:
            per_cat[gt.cats[cid]["name"]] = float(np.mean(p))
    out.append({"stats": [float(s) for s in ev.stats], "lines": lines, "per_category": per_cat})
print(json.dumps(out))
"#;

/// Round to 2 decimals, like coordinates in real result files.
fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A box inside a `w x h` image: tiny (area < 32²), medium, or huge (area > 96²); only huge
/// ones when `huge_only`.
fn random_box(rng: &mut Rng, w: f64, h: f64, huge_only: bool) -> [f64; 4] {
    let (bw, bh) = match if huge_only { 2 } else { rng.below(3) } {
        0 => (uniform(rng, 1.0, 20.0), uniform(rng, 1.0, 20.0)),
        1 => (uniform(rng, 30.0, 90.0), uniform(rng, 30.0, 90.0)),
        _ => (uniform(rng, 120.0, w * 0.95), uniform(rng, 120.0, h * 0.95)),
    };
    let x = uniform(rng, 0.0, (w - bw).max(0.0));
    let y = uniform(rng, 0.0, (h - bh).max(0.0));
    [r2(x), r2(y), r2(bw), r2(bh)]
}

fn polygon_of(b: [f64; 4]) -> Value {
    let [x, y, w, h] = b;
    json!([[x, y, x + w, y, x + w, y + h, x, y + h]])
}

struct Case {
    name: String,
    gt: Value,
    dt: Value,
    iou: IouKind,
}

/// A generated dataset. `score_levels` = number of distinct score values (1 = all equal);
/// `huge_only` leaves the small and medium area ranges empty (their statistics are -1).
fn generate(seed: u64, score_levels: u64, iou: IouKind, huge_only: bool) -> Case {
    let mut rng = Rng::new(seed);
    let category_ids = [3u64, 17, 18, 90, 1000];
    let categories: Vec<Value> = category_ids
        .iter()
        .map(|&id| json!({"id": id, "name": format!("class_{id}"), "supercategory": "thing"}))
        .collect();
    let mut images = Vec::new();
    let mut anns = Vec::new();
    let mut dets = Vec::new();
    let n_images = 24;
    for img in 0..n_images {
        let image_id = 10 + img * 7; // non-contiguous image ids
        let (w, h) =
            (uniform(&mut rng, 300.0, 1000.0).round(), uniform(&mut rng, 300.0, 1000.0).round());
        images.push(json!({"id": image_id, "width": w, "height": h, "file_name": format!("{image_id}.jpg")}));
        // Images 0 and 1 have no GT; image 2 has no detections; image 3 is dense.
        let n_gt = match img {
            0 | 1 => 0,
            3 => 40,
            _ => rng.below(9),
        };
        let mut gt_boxes = Vec::new();
        for _ in 0..n_gt {
            let b = random_box(&mut rng, w, h, huge_only);
            // The last category id never appears in GT: detections of it are pure FPs.
            let cat = category_ids[rng.below(4) as usize];
            let crowd = rng.below(12) == 0;
            let mut ann = json!({"id": anns.len() + 1, "image_id": image_id, "category_id": cat,
                                 "bbox": b, "area": r2(b[2] * b[3]), "iscrowd": i32::from(crowd)});
            if iou == IouKind::Segm {
                ann["segmentation"] = polygon_of(b);
            }
            anns.push(ann);
            gt_boxes.push((b, cat));
        }
        if img == 2 {
            continue;
        }
        let n_dt = if img == 3 { 160 } else { rng.below(25) };
        for k in 0..n_dt {
            let (b, cat) = if !gt_boxes.is_empty() && rng.below(3) != 0 {
                let (g, cat) = gt_boxes[k as usize % gt_boxes.len()];
                let j = |rng: &mut Rng, s: f64| uniform(rng, -0.15, 0.15) * s;
                let b = [
                    r2((g[0] + j(&mut rng, g[2])).max(0.0)),
                    r2((g[1] + j(&mut rng, g[3])).max(0.0)),
                    r2((g[2] * (1.0 + j(&mut rng, 1.0))).max(0.5)),
                    r2((g[3] * (1.0 + j(&mut rng, 1.0))).max(0.5)),
                ];
                let cat = if rng.below(8) == 0 { category_ids[rng.below(5) as usize] } else { cat };
                (b, cat)
            } else {
                (random_box(&mut rng, w, h, huge_only), category_ids[rng.below(5) as usize])
            };
            let score = (1 + rng.below(score_levels)) as f64 / score_levels as f64;
            let mut det =
                json!({"image_id": image_id, "category_id": cat, "bbox": b, "score": score});
            if iou == IouKind::Segm {
                det["segmentation"] = polygon_of(b);
            }
            dets.push(det);
        }
    }
    let gt = json!({"images": images, "annotations": anns, "categories": categories});
    Case {
        name: format!("seed {seed}, {score_levels} score levels, {iou:?}, huge only {huge_only}"),
        gt,
        dt: Value::Array(dets),
        iou,
    }
}

fn write(dir: &Path, name: &str, v: &Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn all_twelve_stats_lines_and_per_category_ap_equal_pycocotools() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for seed in 1..=6 {
        cases.push(generate(seed, 7, IouKind::Bbox, false));
    }
    cases.push(generate(100, 1, IouKind::Bbox, false)); // every score equal
    cases.push(generate(101, 2, IouKind::Bbox, false));
    cases.push(generate(102, 4, IouKind::Bbox, true)); // APs, APm, ARs, ARm are -1
    cases.push(generate(200, 5, IouKind::Segm, false));
    cases.push(generate(201, 1, IouKind::Segm, false));

    let mut payload = Vec::new();
    let mut paths = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let gt = write(dir.path(), &format!("gt{i}.json"), &c.gt);
        let dt = write(dir.path(), &format!("dt{i}.json"), &c.dt);
        let iou_type = match c.iou {
            IouKind::Bbox => "bbox",
            IouKind::Segm => "segm",
        };
        payload.push(json!({"gt": gt, "dt": dt, "iou_type": iou_type}));
        paths.push((gt, dt));
    }
    let oracle = coordexp_testkit::run_python_json(ORACLE, &Value::Array(payload));

    for ((c, (gt, dt)), want) in cases.iter().zip(&paths).zip(oracle.as_array().unwrap()) {
        let got = evaluate_files(Path::new(gt), Path::new(dt), c.iou).unwrap();
        let want_stats: Vec<f64> =
            want["stats"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        for (k, (g, w)) in got.stats().iter().zip(&want_stats).enumerate() {
            assert!((g - w).abs() <= 1e-9, "{}: stat {k} ours {g} pycocotools {w}", c.name);
        }
        let want_lines: Vec<&str> =
            want["lines"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(got.summary_lines(), want_lines, "{}: summary lines", c.name);
        let want_cat = want["per_category"].as_object().unwrap();
        assert_eq!(got.per_category().len(), want_cat.len(), "{}: per-category keys", c.name);
        for (name, ap) in got.per_category() {
            let w = want_cat[name].as_f64().unwrap();
            assert!((ap - w).abs() <= 1e-9, "{}: per-category {name} ours {ap} theirs {w}", c.name);
        }
        if c.name.ends_with("huge only true") {
            assert_eq!(got.stat("APs"), Some(-1.0), "{}: small range must be empty", c.name);
        }
        // The cases must actually exercise the engine (not all -1 or all 0).
        assert!(got.stats()[0] > 0.0 && got.stats()[0] < 1.0, "{}: degenerate AP", c.name);
    }
}

#[test]
fn empty_detection_file_scores_zero_where_pycocotools_would_crash() {
    let dir = tempfile::tempdir().unwrap();
    let c = generate(7, 3, IouKind::Bbox, false);
    let gt = write(dir.path(), "gt.json", &c.gt);
    let dt = write(dir.path(), "dt.json", &json!([]));
    let got = evaluate_files(Path::new(&gt), Path::new(&dt), IouKind::Bbox).unwrap();
    assert_eq!(got.stat("AP"), Some(0.0));
    assert_eq!(got.stat("AR100"), Some(0.0));
}

/// Uniform in `[lo, hi)`.
fn uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.unit()
}
