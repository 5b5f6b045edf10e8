//! Live parity of `coordexp_stage2::matching::hungarian` with an independent Python
//! implementation of stage2_rollout §3.7 (scipy's `linear_sum_assignment` and pycocotools).
//!
//! The oracle below is written from the specification, not from our code: candidate pruning by
//! box IoU with the centre-distance fallback, mask-IoU gating, the dummy-augmented square
//! matrix, and the `< 5e5` acceptance rule. Cases are built to hit ties: repeated prediction
//! boxes, repeated ground truths, symmetric layouts with equal IoUs, polygons in the ground
//! truth, and varied settings (top-k 1..6, gates including 0, small canvases, costs that make
//! leaving objects unmatched cheaper). Pairs, FN, FP, gating rejections and the IoU sum must be
//! identical.

use coordexp_core::norm1000::Bin;
use coordexp_core::record::{Geometry, Polygon};
use coordexp_core::seed::SplitMix64 as Rng;
use coordexp_stage2::matching::{MatchSettings, hungarian};
use serde_json::{Value, json};

const ORACLE: &str = r#"
import json, sys
import numpy as np
from scipy.optimize import linear_sum_assignment
from pycocotools import mask as M

def extent(g):
    kind, p = g
    xs, ys = p[0::2], p[1::2]
    return (float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys)))

def box_iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    if inter <= 0.0:
        return 0.0
    u = (max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
         + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter)
    return inter / u if u > 0.0 else 0.0

def poly(g, r):
    kind, p = g
    p = [float(min(max(int(v), 0), 999)) for v in p]
    if kind == "bbox":
        x1, y1, x2, y2 = min(p[0], p[2]), min(p[1], p[3]), max(p[0], p[2]), max(p[1], p[3])
        p = [x1, y1, x2, y1, x2, y2, x1, y2]
    s = float(max(r - 1, 1)) / 999.0
    return [v * s for v in p]

def mask_iou(a, b, r):
    ra = M.merge(M.frPyObjects([poly(a, r)], r, r))
    rb = M.merge(M.frPyObjects([poly(b, r)], r, r))
    return float(M.iou([ra], [rb], [0])[0][0])

def match(preds, gts, s):
    P, G = len(preds), len(gts)
    if P == 0 or G == 0:
        return {"pairs": [], "fn": list(range(G)), "fp": list(range(P)), "rej": 0, "sum": 0.0, "count": 0}
    k = max(1, s["top_k"])
    pb = [extent(p) for p in preds]
    gb = [extent(g) for g in gts]
    cost = np.full((P, G), 1e6)
    rej = 0
    for i in range(P):
        ranked = sorted(range(G), key=lambda j: (-box_iou(pb[i], gb[j]), j))
        if box_iou(pb[i], gb[ranked[0]]) <= 0.0:
            cx, cy = 0.5 * (pb[i][0] + pb[i][2]), 0.5 * (pb[i][1] + pb[i][3])
            def d(j):
                gx, gy = 0.5 * (gb[j][0] + gb[j][2]), 0.5 * (gb[j][1] + gb[j][3])
                return (cx - gx) ** 2 + (cy - gy) ** 2
            ranked = sorted(range(G), key=lambda j: (d(j), j))
        for j in ranked[:k]:
            v = mask_iou(preds[i], gts[j], s["r"])
            if v < s["gate"]:
                rej += 1
            else:
                cost[i, j] = 1.0 - v
    n = P + G
    big = np.zeros((n, n))
    big[:P, :G] = cost
    big[:P, G:] = s["fp"]
    big[P:, :G] = s["fn"]
    rows, cols = linear_sum_assignment(big)
    col_of = dict(zip(rows.tolist(), cols.tolist()))
    pairs, fp, total, count = [], [], 0.0, 0
    for i in range(P):
        c = col_of[i]
        if c < G and cost[i, c] < 5e5:
            pairs.append([i, c])
            total += min(1.0, max(0.0, 1.0 - float(cost[i, c])))
            count += 1
        else:
            fp.append(i)
    got = {c for _, c in pairs}
    return {"pairs": pairs, "fn": [j for j in range(G) if j not in got], "fp": fp,
            "rej": rej, "sum": total, "count": count}

print(json.dumps([match(c["preds"], c["gts"], c["s"]) for c in json.load(sys.stdin)]))
"#;

fn bin(v: i64) -> Bin {
    Bin::new(v.clamp(0, 999) as u16).unwrap()
}

struct Case {
    preds: Vec<[Bin; 4]>,
    gts: Vec<Geometry<Bin>>,
    settings: MatchSettings,
}

fn random_box(rng: &mut Rng, proper: bool) -> [Bin; 4] {
    let x = rng.below(900) as i64;
    let y = rng.below(900) as i64;
    let w = [1, 5, 40, 150][rng.below(4) as usize] + rng.below(30) as i64;
    let h = [1, 5, 40, 150][rng.below(4) as usize] + rng.below(30) as i64;
    if !proper && rng.below(10) == 0 {
        return [bin(x), bin(y), bin(x), bin(y + h)];
    }
    [bin(x), bin(y), bin(x + w), bin(y + h)]
}

fn near(rng: &mut Rng, b: &[Bin; 4], spread: u64) -> [Bin; 4] {
    let mut j = |v: Bin| bin(v.get() as i64 + rng.below(2 * spread + 1) as i64 - spread as i64);
    let mut out = [j(b[0]), j(b[1]), j(b[2]), j(b[3])];
    if out[2] <= out[0] {
        out[2] = bin(out[0].get() as i64 + 1);
    }
    if out[3] <= out[1] {
        out[3] = bin(out[1].get() as i64 + 1);
    }
    if out[2] <= out[0] || out[3] <= out[1] {
        return *b;
    }
    out
}

fn polygon_around(rng: &mut Rng, b: &[Bin; 4]) -> Geometry<Bin> {
    let (x1, y1, x2, y2) =
        (b[0].get() as i64, b[1].get() as i64, b[2].get() as i64, b[3].get() as i64);
    let n = 3 + rng.below(6);
    let pts = (0..n)
        .map(|_| {
            [
                bin(x1 + rng.below((x2 - x1 + 1) as u64) as i64),
                bin(y1 + rng.below((y2 - y1 + 1) as u64) as i64),
            ]
        })
        .collect();
    Geometry::Poly(Polygon::new(pts).unwrap())
}

fn cases() -> Vec<Case> {
    let mut rng = Rng::new(20_260_601);
    let settings = [
        MatchSettings::default(),
        MatchSettings {
            candidate_top_k: 10,
            gate: 0.3,
            mask_resolution: 256,
            fp_cost: 1.0,
            fn_cost: 1.0,
        },
        MatchSettings {
            candidate_top_k: 1,
            gate: 0.5,
            mask_resolution: 64,
            fp_cost: 1.0,
            fn_cost: 1.2,
        },
        MatchSettings {
            candidate_top_k: 2,
            gate: 0.0,
            mask_resolution: 256,
            fp_cost: 0.3,
            fn_cost: 0.2,
        },
        MatchSettings {
            candidate_top_k: 3,
            gate: 0.7,
            mask_resolution: 37,
            fp_cost: 1.0,
            fn_cost: 1.2,
        },
        MatchSettings {
            candidate_top_k: 0,
            gate: 0.5,
            mask_resolution: 256,
            fp_cost: 1.0,
            fn_cost: 1.2,
        },
    ];
    let mut out = Vec::new();
    for i in 0..600 {
        let s = settings[i % settings.len()].clone();
        let g_n = rng.below(7) as usize;
        let mut gt_boxes: Vec<[Bin; 4]> = (0..g_n).map(|_| random_box(&mut rng, false)).collect();
        // Repeated ground truths: identical costs for two columns.
        if g_n > 1 && rng.below(3) == 0 {
            gt_boxes[1] = gt_boxes[0];
        }
        let gts: Vec<Geometry<Bin>> = gt_boxes
            .iter()
            .map(|b| {
                if rng.below(4) == 0 && b[2] > b[0] && b[3] > b[1] {
                    polygon_around(&mut rng, b)
                } else {
                    Geometry::BBox(*b)
                }
            })
            .collect();
        let p_n = rng.below(8) as usize;
        let mut preds = Vec::new();
        for _ in 0..p_n {
            let b = match (gt_boxes.is_empty(), rng.below(4)) {
                (false, 0..=2) => {
                    let t = gt_boxes[rng.below(gt_boxes.len() as u64) as usize];
                    let spread = [0, 3, 15][rng.below(3) as usize];
                    if t[2] > t[0] && t[3] > t[1] {
                        near(&mut rng, &t, spread)
                    } else {
                        random_box(&mut rng, true)
                    }
                }
                _ => random_box(&mut rng, true),
            };
            preds.push(b);
        }
        // Repeated predictions: a duplicate burst.
        if p_n > 1 && rng.below(3) == 0 {
            preds[p_n - 1] = preds[0];
        }
        // A symmetric layout: one prediction straddling two equal ground truths.
        if i % 25 == 0 {
            let gts = vec![
                Geometry::BBox([bin(100), bin(100), bin(200), bin(200)]),
                Geometry::BBox([bin(200), bin(100), bin(300), bin(200)]),
            ];
            let preds = vec![
                [bin(150), bin(100), bin(250), bin(200)],
                [bin(150), bin(100), bin(250), bin(200)],
            ];
            out.push(Case { preds, gts, settings: MatchSettings { gate: 0.3, ..s.clone() } });
        }
        out.push(Case { preds, gts, settings: s });
    }
    out
}

fn geometry_json(g: &Geometry<Bin>) -> Value {
    let pts: Vec<u16> = g.coords().iter().map(|b| b.get()).collect();
    match g {
        Geometry::BBox(_) => json!(["bbox", pts]),
        Geometry::Poly(_) => json!(["poly", pts]),
    }
}

#[test]
fn matching_equals_an_independent_scipy_pycocotools_implementation() {
    let cases = cases();
    assert!(cases.len() >= 500);
    let payload: Vec<Value> = cases
        .iter()
        .map(|c| {
            json!({
                "preds": c.preds.iter().map(|b| geometry_json(&Geometry::BBox(*b))).collect::<Vec<_>>(),
                "gts": c.gts.iter().map(geometry_json).collect::<Vec<_>>(),
                "s": {"top_k": c.settings.candidate_top_k, "gate": c.settings.gate,
                      "r": c.settings.mask_resolution, "fp": c.settings.fp_cost, "fn": c.settings.fn_cost},
            })
        })
        .collect();
    let out = coordexp_testkit::run_python_json(ORACLE, &Value::Array(payload));
    let out = out.as_array().unwrap();
    let (mut matched, mut gated, mut polygons) = (0, 0, 0);
    for (c, o) in cases.iter().zip(out) {
        let m = hungarian(&c.preds, &c.gts, &c.settings);
        let ctx = format!("preds={:?} gts={:?} settings={:?}", c.preds, c.gts, c.settings);
        let pairs: Vec<[usize; 2]> = serde_json::from_value(o["pairs"].clone()).unwrap();
        assert_eq!(m.pairs, pairs, "{ctx}");
        assert_eq!(
            m.fn_gt,
            serde_json::from_value::<Vec<usize>>(o["fn"].clone()).unwrap(),
            "{ctx}"
        );
        assert_eq!(m.fp, serde_json::from_value::<Vec<usize>>(o["fp"].clone()).unwrap(), "{ctx}");
        assert_eq!(m.gating_rejections as u64, o["rej"].as_u64().unwrap(), "{ctx}");
        assert_eq!(m.matched_maskiou_count as u64, o["count"].as_u64().unwrap(), "{ctx}");
        assert_eq!(m.matched_maskiou_sum.to_bits(), o["sum"].as_f64().unwrap().to_bits(), "{ctx}");
        matched += m.pairs.len();
        gated += m.gating_rejections;
        polygons += usize::from(
            c.gts.iter().any(|g| matches!(g, Geometry::Poly(_))) && !m.pairs.is_empty(),
        );
    }
    assert!(
        matched > 400 && gated > 200 && polygons > 30,
        "matched {matched}, gated {gated}, polygons {polygons}"
    );
}
