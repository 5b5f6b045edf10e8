//! Box arithmetic on norm1000 bins, shared by duplicate control, matching and triage.
//!
//! Every overlap test of channel B compares boxes the model wrote as bins. The reference uses
//! one formula throughout: continuous coordinates with no `+1` pixel convention, an empty
//! overlap counts 0, and `inter / (area_a + area_b − inter)` otherwise (stage2_rollout §3.7
//! step 2 for matching candidates; the duplicate-control relation of stage2_current §2.2 and the
//! triage association of §3.2 use the same arithmetic, once on Python ints and once on floats).
//! Bins are integers below 1000, so every intermediate value is an integer below 10⁶ and `f64`
//! arithmetic is exact: one function reproduces both reference variants bit for bit.

use coordexp_core::norm1000::Bin;
use coordexp_core::record::Geometry;

/// A box as `[x1, y1, x2, y2]` floats with the corners put in order (min, max), as the
/// reference canonicalises before any overlap test (stage2_rollout §3.7 step 1).
pub fn xyxy(b: &[Bin; 4]) -> [f64; 4] {
    let [x1, y1, x2, y2] = b.map(|v| f64::from(v.get()));
    [x1.min(x2), y1.min(y2), x1.max(x2), y1.max(y2)]
}

/// The axis-aligned extent of a geometry: the box itself (corners ordered) or the polygon's
/// bounding box. Matching candidates of a polygon ground truth use this (stage2_rollout §3.7
/// step 1, "a poly would use its bounding box").
pub fn extent(g: &Geometry<Bin>) -> [f64; 4] {
    match g {
        Geometry::BBox(b) => xyxy(b),
        Geometry::Poly(p) => {
            let mut out = [f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY];
            for [x, y] in p.points() {
                let (x, y) = (f64::from(x.get()), f64::from(y.get()));
                out = [out[0].min(x), out[1].min(y), out[2].max(x), out[3].max(y)];
            }
            // A polygon always has ≥ 3 vertices, so the extent is finite.
            out
        }
    }
}

/// The bins of [`extent`] (a polygon's bounding box as a box target).
pub fn extent_bins(g: &Geometry<Bin>) -> [Bin; 4] {
    match g {
        Geometry::BBox([x1, y1, x2, y2]) => {
            [(*x1).min(*x2), (*y1).min(*y2), (*x1).max(*x2), (*y1).max(*y2)]
        }
        Geometry::Poly(p) => {
            let pts = p.points();
            let xs = pts.iter().map(|[x, _]| *x);
            let ys = pts.iter().map(|[_, y]| *y);
            [
                xs.clone().min().unwrap_or(Bin::MIN),
                ys.clone().min().unwrap_or(Bin::MIN),
                xs.max().unwrap_or(Bin::MIN),
                ys.max().unwrap_or(Bin::MIN),
            ]
        }
    }
}

/// IoU of two ordered boxes, the reference formula (0 when the overlap is empty or the union
/// is not positive).
pub fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    if inter <= 0.0 {
        return 0.0;
    }
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Area of an ordered box (zero extents clamp at 0).
pub fn area(b: &[f64; 4]) -> f64 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

/// Centre `(cx, cy)`, computed as `0.5 · (x1 + x2)` like the matching fallback of
/// stage2_rollout §3.7 (the duplicate-control centre `(x1 + x2) / 2` is the same value).
pub fn center(b: &[f64; 4]) -> (f64, f64) {
    (0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3]))
}

/// Euclidean distance between two centres. The squared sum is exact for half-integer centres
/// below 1000, so the correctly rounded square root equals the reference's `math.hypot`.
pub fn center_distance(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (a.0 - b.0, a.1 - b.1);
    (dx * dx + dy * dy).sqrt()
}

/// True when a coordinate sits on the canvas edge (bin 0 or 999): the duplicate-control
/// survivor rule prefers boxes that do not (stage2_current §2.2, "touches 0/999").
pub fn touches_border(b: &[Bin; 4]) -> bool {
    b.iter().any(|v| *v == Bin::MIN || *v == Bin::MAX)
}

/// The `(y1, x1)` key of the `sorted` insertion order (stage2_current §2.5): a box's own
/// `(y1, x1)` as written, a polygon's `(min y, min x)`.
pub fn top_left_key(g: &Geometry<Bin>) -> (u16, u16) {
    match g {
        Geometry::BBox(b) => (b[1].get(), b[0].get()),
        Geometry::Poly(p) => {
            let pts = p.points();
            let y = pts.iter().map(|[_, y]| y.get()).min().unwrap_or(u16::MAX);
            let x = pts.iter().map(|[x, _]| x.get()).min().unwrap_or(u16::MAX);
            (y, x)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coordexp_core::record::Polygon;

    fn b(v: [u16; 4]) -> [Bin; 4] {
        v.map(|k| Bin::new(k).unwrap())
    }

    #[test]
    fn iou_of_disjoint_touching_and_identical_boxes() {
        let a = xyxy(&b([0, 0, 10, 10]));
        assert_eq!(iou(&a, &xyxy(&b([10, 0, 20, 10]))), 0.0);
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &xyxy(&b([5, 0, 15, 10]))), 50.0 / 150.0);
    }

    #[test]
    fn reversed_corners_are_ordered_before_any_overlap_test() {
        assert_eq!(xyxy(&b([10, 20, 0, 5])), [0.0, 5.0, 10.0, 20.0]);
    }

    #[test]
    fn polygon_extent_and_key_use_the_minimum_corner() {
        let p = Polygon::new(vec![
            [Bin::new(40).unwrap(), Bin::new(10).unwrap()],
            [Bin::new(5).unwrap(), Bin::new(30).unwrap()],
            [Bin::new(60).unwrap(), Bin::new(50).unwrap()],
        ])
        .unwrap();
        let g = Geometry::Poly(p);
        assert_eq!(extent(&g), [5.0, 10.0, 60.0, 50.0]);
        assert_eq!(extent_bins(&g), b([5, 10, 60, 50]));
        assert_eq!(top_left_key(&g), (10, 5));
        assert_eq!(top_left_key(&Geometry::BBox(b([7, 3, 9, 9]))), (3, 7));
    }

    #[test]
    fn border_touching_means_bin_0_or_999() {
        assert!(touches_border(&b([0, 5, 6, 7])));
        assert!(touches_border(&b([1, 5, 999, 7])));
        assert!(!touches_border(&b([1, 5, 998, 7])));
    }
}
