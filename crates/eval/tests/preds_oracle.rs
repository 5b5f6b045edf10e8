//! `eval preds` against an independent Python implementation of the same definitions.
//!
//! The oracle rebuilds everything from the two JSONL files on its own: the join by image path,
//! bins → pixels as `k/999·(W−1)`, the COCO ground truth and detections (scored by pycocotools),
//! and F1 (IoU matrix with numpy, one-to-one assignment with scipy's
//! `linear_sum_assignment` on weight `K + IoU` for eligible pairs). All 12 COCO statistics must
//! agree to 1e-9 and every F1 count exactly.

use coordexp_core::seed::SplitMix64 as Rng;
use coordexp_eval::f1::IouThreshold;
use coordexp_eval::preds::{PredsOptions, evaluate};
use serde_json::{Value, json};

const ORACLE: &str = r#"
import contextlib, io, json, re, sys
import numpy as np
from scipy.optimize import linear_sum_assignment
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

inp = json.load(sys.stdin)
gts, preds, thresholds = inp["gt"], inp["pred"], inp["thresholds"]

def px(k, extent):
    return int(k) / 999 * max(1, extent - 1)

def coords(v, w, h):
    if isinstance(v[0], str):
        k = [int(re.match(r"<\|coord_(\d+)\|>", t).group(1)) for t in v]
        return [px(k[0], w), px(k[1], h), px(k[2], w), px(k[3], h)]
    return [float(x) for x in v]

cats = []
for r in gts:
    for o in r["objects"]:
        if o["desc"] not in cats:
            cats.append(o["desc"])
cat_id = {c: i + 1 for i, c in enumerate(cats)}

record = re.compile(r'\{"desc": "([^"]*)", "bbox_2d": \[<\|coord_(\d+)\|>, <\|coord_(\d+)\|>, <\|coord_(\d+)\|>, <\|coord_(\d+)\|>\]\}')
by_image = {}
for p in preds:
    by_image[p["image"]] = p

images, anns, dets = [], [], []
counts = {(t, rule): [0, 0, 0] for t in thresholds for rule in ("aware", "agnostic")}
for idx, r in enumerate(gts):
    w, h = r["width"], r["height"]
    iid = idx + 1
    images.append({"id": iid, "width": w, "height": h, "file_name": r["images"][0]})
    g = [(o["desc"], coords(o["bbox_2d"], w, h)) for o in r["objects"]]
    for d, b in g:
        bw, bh = b[2] - b[0], b[3] - b[1]
        anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": cat_id[d],
                     "bbox": [b[0], b[1], bw, bh], "area": bw * bh, "iscrowd": 0})
    p = by_image.get(r["images"][0])
    objs = []
    if p is not None and "text" in p:
        for m in record.finditer(p["text"]):
            k = [int(m.group(i)) for i in range(2, 6)]
            objs.append((m.group(1), [px(k[0], w), px(k[1], h), px(k[2], w), px(k[3], h)], 1.0))
    elif p is not None:
        objs = [(o["desc"], [float(x) for x in o["bbox_2d"]], o.get("score", 1.0)) for o in p["objects"]]
    for d, b, s in objs:
        if d in cat_id:
            dets.append({"image_id": iid, "category_id": cat_id[d],
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    P, G = len(objs), len(g)
    iou = np.zeros((P, G))
    for i, (_, a, _) in enumerate(objs):
        for j, (_, b) in enumerate(g):
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            iou[i, j] = inter / union if union > 0 else 0.0
    for t in thresholds:
        for rule in ("aware", "agnostic"):
            same = np.array([[rule == "agnostic" or (objs[i][0] in cat_id and objs[i][0] == g[j][0])
                              for j in range(G)] for i in range(P)], dtype=bool).reshape(P, G)
            elig = (iou >= t) & same
            tp = 0
            if elig.any():
                wgt = np.where(elig, min(P, G) + 1 + iou, 0.0)
                rows, cols = linear_sum_assignment(wgt, maximize=True)
                tp = int(elig[rows, cols].sum())
            c = counts[(t, rule)]
            c[0] += tp; c[1] += P - tp; c[2] += G - tp

with contextlib.redirect_stdout(io.StringIO()):
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": i, "name": n} for n, i in cat_id.items()]}
    coco.createIndex()
    res = coco.loadRes(dets)
    ev = COCOeval(coco, res, "bbox")
    ev.evaluate(); ev.accumulate(); ev.summarize()
print(json.dumps({"stats": [float(s) for s in ev.stats],
                  "f1": {f"{t}|{rule}": c for (t, rule), c in counts.items()}}))
"#;

const DESCS: [&str; 4] = ["cat", "dog", "traffic light", "red car"];

/// A random valid bin box.
fn bin_box(rng: &mut Rng) -> [u64; 4] {
    let (x1, y1) = (rng.below(900), rng.below(900));
    [x1, y1, x1 + 1 + rng.below(999 - x1), y1 + 1 + rng.below(999 - y1)]
}

fn tokens(b: [u64; 4]) -> Value {
    json!(b.map(|k| format!("<|coord_{k}|>")))
}

fn px(k: u64, extent: u64) -> f64 {
    k as f64 / 999.0 * (extent.max(2) - 1) as f64
}

/// Ground truth and predictions with every case the join and the scorer must handle.
fn dataset() -> (String, String) {
    let mut rng = Rng::new(4242);
    let (mut gt, mut pred) = (String::new(), String::new());
    for i in 0..60u64 {
        let (w, h) = (200 + rng.below(800), 150 + rng.below(600));
        let image = format!("img/{i:03}.jpg");
        let n_gt = if i % 9 == 0 { 0 } else { rng.below(7) };
        let objects: Vec<(String, [u64; 4])> = (0..n_gt)
            .map(|_| (DESCS[rng.below(4) as usize].to_owned(), bin_box(&mut rng)))
            .collect();
        // Half the ground truth in bins, half in pixels (exact dequantized values).
        let gt_objects: Vec<Value> = objects
            .iter()
            .map(|(d, b)| {
                if i % 2 == 0 {
                    json!({"desc": d, "bbox_2d": tokens(*b)})
                } else {
                    json!({"desc": d, "bbox_2d": [px(b[0], w), px(b[1], h), px(b[2], w), px(b[3], h)]})
                }
            })
            .collect();
        gt += &format!(
            "{}\n",
            json!({"images": [image], "width": w, "height": h, "objects": gt_objects})
        );
        if i % 13 == 5 {
            continue; // no prediction for this image
        }
        // Predictions: jittered ground truth (some wrong class or unknown desc), some made up.
        let mut preds: Vec<(String, [u64; 4])> = Vec::new();
        for (d, b) in &objects {
            if rng.below(6) == 0 {
                continue;
            }
            let j = |v: u64, rng: &mut Rng| (v + rng.below(30)).saturating_sub(15).min(999);
            let mut nb =
                [j(b[0], &mut rng), j(b[1], &mut rng), j(b[2], &mut rng), j(b[3], &mut rng)];
            if nb[2] <= nb[0] {
                nb[2] = (nb[0] + 1).min(999);
            }
            if nb[3] <= nb[1] {
                nb[3] = (nb[1] + 1).min(999);
            }
            let desc = match rng.below(10) {
                0 => DESCS[rng.below(4) as usize].to_owned(),
                1 => "flying saucer".to_owned(),
                _ => d.clone(),
            };
            preds.push((desc, nb));
        }
        for _ in 0..rng.below(3) {
            preds.push((DESCS[rng.below(4) as usize].to_owned(), bin_box(&mut rng)));
        }
        let line = if i % 3 == 0 {
            let objs: Vec<Value> = preds
                .iter()
                .map(|(d, b)| {
                    json!({"desc": d, "bbox_2d": [px(b[0], w), px(b[1], h), px(b[2], w), px(b[3], h)],
                           "score": (1 + rng.below(20)) as f64 / 20.0})
                })
                .collect();
            json!({"image": image, "objects": objs})
        } else {
            let recs: Vec<String> = preds
                .iter()
                .map(|(d, b)| {
                    let c = b.map(|k| format!("<|coord_{k}|>")).join(", ");
                    format!("{{\"desc\": \"{d}\", \"bbox_2d\": [{c}]}}")
                })
                .collect();
            let mut text = format!("{{\"objects\": [{}]}}<|im_end|>", recs.join(", "));
            if i % 7 == 3 && text.len() > 40 {
                text.truncate(text.len() - 25); // truncated answer
            }
            json!({"image": image, "text": text})
        };
        pred += &format!("{line}\n");
    }
    pred += &format!("{}\n", json!({"image": "not/in/gt.jpg", "text": "{\"objects\": []}"}));
    (gt, pred)
}

#[test]
fn coco_stats_and_f1_counts_equal_an_independent_python_implementation() {
    let (gt, pred) = dataset();
    let dir = tempfile::tempdir().unwrap();
    let (gt_path, pred_path) = (dir.path().join("gt.jsonl"), dir.path().join("pred.jsonl"));
    std::fs::write(&gt_path, &gt).unwrap();
    std::fs::write(&pred_path, &pred).unwrap();
    let thresholds = IouThreshold::parse_list("0.3,0.5,0.75").unwrap();
    let opts = PredsOptions { thresholds, categories: None, top_unmapped: 5 };
    let ours = evaluate(&gt_path, &pred_path, &opts).unwrap();

    let parse = |text: &str| -> Vec<Value> {
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let input = json!({"gt": parse(&gt), "pred": parse(&pred), "thresholds": [0.3, 0.5, 0.75]});
    let want = coordexp_testkit::run_python_json(ORACLE, &input);

    let want_stats: Vec<f64> =
        want["stats"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    for (k, (g, w)) in ours.coco.stats().iter().zip(&want_stats).enumerate() {
        assert!((g - w).abs() <= 1e-9, "stat {k}: ours {g}, oracle {w}");
    }
    assert!(ours.coco.stats()[0] > 0.1, "the case must exercise AP");
    for (key, t) in [("0.3", "0.3"), ("0.5", "0.5"), ("0.75", "0.75")] {
        for (table, rule) in [(&ours.report.f1, "aware"), (&ours.report.f1_agnostic, "agnostic")] {
            let c = table[key];
            let w = &want["f1"][format!("{t}|{rule}")];
            assert_eq!(json!([c.tp, c.fp, c.fn_]), *w, "F1 counts at {key} ({rule})");
        }
    }
    // The case covers what it claims to.
    let r = &ours.report;
    assert!(r.parse.truncated > 0 && r.parse.objects_form > 0 && r.parse.text > 0);
    assert_eq!(r.images.unknown, 1);
    assert!(r.images.without_prediction > 0);
    assert!(r.unmapped.total > 0);
}
