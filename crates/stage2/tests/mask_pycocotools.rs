//! Live parity of `coordexp_stage2::mask` with pycocotools.
//!
//! Random boxes and polygons (with repeated vertices, self-intersections, canvas-edge and
//! flat shapes) on several canvas sizes go to pycocotools in one call. The oracle projects the
//! bins itself (clamp to [0, 999], scale by max(R − 1, 1)/999, box → 4-corner polygon), builds
//! masks with `frPyObjects` + `merge` and scores pairs with `iou(…, [0])`, exactly as the
//! reference's matcher does. We require the same run-length encoding (compared as pycocotools'
//! compressed strings) and the same IoU to the last bit.

use coordexp_core::norm1000::Bin;
use coordexp_core::record::{Geometry, Polygon};
use coordexp_core::seed::SplitMix64 as Rng;
use coordexp_stage2::mask::{mask_iou, rasterize};
use serde_json::{Value, json};

const ORACLE: &str = r#"
import json, sys
from pycocotools import mask as M
def canvas(shape, r):
    kind, pts = shape
    pts = [float(min(max(int(v), 0), 999)) for v in pts]
    if kind == "bbox":
        x1, y1, x2, y2 = pts
        pts = [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
        x1, y1, x2, y2 = pts
        pts = [x1, y1, x2, y1, x2, y2, x1, y2]
    s = float(max(r - 1, 1)) / 999.0
    return [v * s for v in pts]
def rle(shape, r):
    return M.merge(M.frPyObjects([canvas(shape, r)], r, r))
out = []
for case in json.load(sys.stdin):
    r = case["r"]
    a, b = rle(case["a"], r), rle(case["b"], r)
    mine = M.frPyObjects({"counts": case["counts_a"], "size": [r, r]}, r, r)
    out.append({
        "iou": float(M.iou([a], [b], [0])[0][0]),
        "same_rle": mine["counts"] == a["counts"],
        "area": int(M.area(a)),
    })
print(json.dumps(out))
"#;

fn bin(v: u64) -> Bin {
    Bin::new(v as u16).unwrap()
}

fn perturb(rng: &mut Rng, g: &Geometry<Bin>) -> Geometry<Bin> {
    let mut j = |b: &Bin| bin((b.get() as i64 + rng.below(41) as i64 - 20).clamp(0, 999) as u64);
    match g {
        Geometry::BBox(c) => Geometry::BBox([j(&c[0]), j(&c[1]), j(&c[2]), j(&c[3])]),
        Geometry::Poly(p) => Geometry::Poly(
            Polygon::new(p.points().iter().map(|[x, y]| [j(x), j(y)]).collect()).unwrap(),
        ),
    }
}

fn random_shape(rng: &mut Rng) -> Geometry<Bin> {
    let (cx, cy) = (rng.below(1000), rng.below(1000));
    let jitter = |rng: &mut Rng, c: u64, spread: u64| -> u64 {
        (c as i64 + rng.below(2 * spread + 1) as i64 - spread as i64).clamp(0, 999) as u64
    };
    match rng.below(6) {
        // Boxes, including flat, inverted and edge-touching ones.
        0..=2 => {
            let s = [3, 30, 300][rng.below(3) as usize];
            let mut c =
                [jitter(rng, cx, s), jitter(rng, cy, s), jitter(rng, cx, s), jitter(rng, cy, s)];
            if rng.below(8) == 0 {
                c[2] = c[0];
            }
            if rng.below(10) == 0 {
                c[0] = 0;
                c[3] = 999;
            }
            Geometry::BBox(c.map(bin))
        }
        // Polygons with 3..12 vertices; sometimes repeated or collinear vertices.
        _ => {
            let n = 3 + rng.below(10) as usize;
            let s = [5, 60, 400][rng.below(3) as usize];
            let mut pts: Vec<[Bin; 2]> =
                (0..n).map(|_| [bin(jitter(rng, cx, s)), bin(jitter(rng, cy, s))]).collect();
            if rng.below(4) == 0 {
                let k = rng.below(n as u64) as usize;
                pts.insert(k, pts[k]);
            }
            Geometry::Poly(Polygon::new(pts).unwrap())
        }
    }
}

fn shape_json(g: &Geometry<Bin>) -> Value {
    let pts: Vec<u16> = g.coords().iter().map(|b| b.get()).collect();
    match g {
        Geometry::BBox(_) => json!(["bbox", pts]),
        Geometry::Poly(_) => json!(["poly", pts]),
    }
}

#[test]
fn mask_iou_and_run_lengths_equal_pycocotools_on_random_boxes_and_polygons() {
    let mut rng = Rng::new(20_260_512);
    let resolutions = [256u32, 256, 256, 64, 1000, 1, 2, 37];
    let mut cases = Vec::new();
    for i in 0..600 {
        let r = resolutions[i % resolutions.len()];
        let a = random_shape(&mut rng);
        // Three partners in four are a perturbed copy (partial overlaps), the rest random.
        let b = if i % 4 != 0 { perturb(&mut rng, &a) } else { random_shape(&mut rng) };
        let b = if i % 17 == 0 { a.clone() } else { b };
        cases.push((r, a, b));
    }
    let payload: Vec<Value> = cases
        .iter()
        .map(|(r, a, b)| {
            let ra = rasterize(a, *r).unwrap();
            json!({"r": r, "a": shape_json(a), "b": shape_json(b), "counts_a": ra.counts})
        })
        .collect();
    let out = coordexp_testkit::run_python_json(ORACLE, &Value::Array(payload));
    let out = out.as_array().unwrap();
    assert_eq!(out.len(), cases.len());
    let mut nontrivial = 0;
    for ((r, a, b), o) in cases.iter().zip(out) {
        let ours = mask_iou(a, b, *r);
        let theirs = o["iou"].as_f64().unwrap();
        assert_eq!(ours.to_bits(), theirs.to_bits(), "r={r} a={a:?} b={b:?}: {ours} vs {theirs}");
        assert!(o["same_rle"].as_bool().unwrap(), "run lengths differ: r={r} a={a:?}");
        assert_eq!(rasterize(a, *r).unwrap().area(), o["area"].as_u64().unwrap());
        if ours > 0.0 && ours < 1.0 {
            nontrivial += 1;
        }
    }
    assert!(nontrivial > 150, "only {nontrivial} partial overlaps; the test lost its teeth");
}
