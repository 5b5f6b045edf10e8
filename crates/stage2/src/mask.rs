//! Mask IoU exactly as the reference computes it: pycocotools' polygon rasterisation on a
//! virtual `R × R` canvas.
//!
//! Why not the box IoU: the reference gates and costs matches on *mask* IoU (stage2_rollout
//! §3.7 step 3; unchanged in stage2_current §2.3) so that a polygon ground truth is compared by
//! its shape, and boxes go through the very same rasteriser. Reproducing its numbers bit for bit
//! matters because the gate (`IoU ≥ 0.5`) and the assignment's tie-breaking turn on them.
//!
//! The steps (stage2_rollout §3.7, `rm/matching.py`):
//! 1. Each coordinate is clamped to `[0, 999]` and scaled by `max(R − 1, 1) / 999`.
//! 2. A box becomes the 4-corner polygon `[x1, y1, x2, y1, x2, y2, x1, y2]` (corners ordered
//!    first); a polygon is used as written.
//! 3. The polygon is rasterised by pycocotools' `rleFrPoly` (`maskApi.c`), reproduced here step
//!    by step: vertices upsampled by 5 and rounded with `(int)(5·v + 0.5)`; every edge walked
//!    densely along its major axis with `(int)(a + s·t + 0.5)`; the points where the walk
//!    crosses a pixel column boundary are downsampled back (`(v + 0.5)/5 − 0.5`, kept only on
//!    exact integers inside `[0, w − 1]`, rows clamped to `[0, h]` and rounded up); the
//!    resulting column-major boundary indices, sorted and differenced, are the run lengths.
//! 4. `merge` of a single polygon is the identity; `iou(…, iscrowd=[0])` walks both run-length
//!    encodings and returns `|A ∩ B| / |A ∪ B|`, 0 when the intersection is empty. Its bounding
//!    box pre-filter cannot change the value (masks that intersect have intersecting bounding
//!    boxes), so it is not reproduced.
//!
//! pycocotools counts in 32-bit unsigned integers; we count in 64 bits, which gives identical
//! results whenever `R² < 2³²` (every sensible resolution; production uses 256).

use coordexp_core::norm1000::Bin;
use coordexp_core::record::Geometry;

/// Upsampling factor of `rleFrPoly`.
const SCALE: f64 = 5.0;

/// Largest canvas side [`rasterize`] accepts (`Settings::check` enforces it); beyond it a
/// mask would cost gigabytes, so the IoU is taken as 0 instead.
pub const MAX_RESOLUTION: u32 = 16384;

/// Polygon coordinates are clamped to `±COORD_LIMIT` (4 × the largest canvas) before
/// upsampling, so arbitrary input can neither overflow the integer walk nor make it huge. Canvas
/// polygons from bins never come near it; for raw input beyond it pycocotools' behaviour is
/// undefined or its result differs only outside any supported canvas.
const COORD_LIMIT: f64 = 65_536.0;

/// A binary mask as column-major run lengths, starting with a run of zeros (the COCO layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rle {
    pub h: u64,
    pub w: u64,
    pub counts: Vec<u64>,
}

impl Rle {
    /// Number of pixels set.
    pub fn area(&self) -> u64 {
        self.counts.iter().skip(1).step_by(2).sum()
    }
}

/// C's `(int)` conversion of a finite double: truncation toward zero.
fn c_int(v: f64) -> i64 {
    v.trunc() as i64
}

/// pycocotools `rleFrPoly`: rasterise the polygon `xy` (flat `x0, y0, x1, y1, …`) on an
/// `h × w` canvas (`h · w` must fit in 64 bits). A trailing odd value is ignored; no vertex
/// gives an empty mask; non-finite or huge coordinates are clamped to `±2¹⁶` (NaN → 0).
pub fn rle_from_polygon(xy: &[f64], h: u64, w: u64) -> Rle {
    let k = xy.len() / 2;
    if k == 0 {
        return Rle { h, w, counts: vec![h.saturating_mul(w)] };
    }
    let at = |i: usize| {
        let v = xy[i];
        if v.is_nan() { 0.0 } else { v.clamp(-COORD_LIMIT, COORD_LIMIT) }
    };
    // Upsample the vertices and close the ring.
    let mut x: Vec<i64> = (0..k).map(|j| c_int(SCALE * at(2 * j) + 0.5)).collect();
    let mut y: Vec<i64> = (0..k).map(|j| c_int(SCALE * at(2 * j + 1) + 0.5)).collect();
    x.push(x[0]);
    y.push(y[0]);
    // Walk every edge densely along its major axis.
    let mut u: Vec<i64> = Vec::new();
    let mut v: Vec<i64> = Vec::new();
    for j in 0..k {
        let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
        let dx = (xe - xs).abs();
        let dy = (ys - ye).abs();
        let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if flip {
            std::mem::swap(&mut xs, &mut xe);
            std::mem::swap(&mut ys, &mut ye);
        }
        if dx >= dy {
            // dx == 0 means a repeated vertex: C divides 0/0 here, but the single point it
            // emits repeats its neighbours' column and is never used below; emit the vertex.
            let s = if dx == 0 { 0.0 } else { (ye - ys) as f64 / dx as f64 };
            for d in 0..=dx {
                let t = if flip { dx - d } else { d };
                u.push(t + xs);
                v.push(c_int(ys as f64 + s * t as f64 + 0.5));
            }
        } else {
            let s = (xe - xs) as f64 / dy as f64;
            for d in 0..=dy {
                let t = if flip { dy - d } else { d };
                v.push(t + ys);
                u.push(c_int(xs as f64 + s * t as f64 + 0.5));
            }
        }
    }
    // Keep the points where the walk crosses a column boundary and downsample them.
    let mut a: Vec<u64> = Vec::new();
    let w_max = w as f64 - 1.0;
    for j in 1..u.len() {
        if u[j] == u[j - 1] {
            continue;
        }
        let xd = (if u[j] < u[j - 1] { u[j] } else { u[j] - 1 }) as f64;
        let xd = (xd + 0.5) / SCALE - 0.5;
        if xd.floor() != xd || xd < 0.0 || xd > w_max {
            continue;
        }
        let yd = (if v[j] < v[j - 1] { v[j] } else { v[j - 1] }) as f64;
        let mut yd = (yd + 0.5) / SCALE - 0.5;
        if yd < 0.0 {
            yd = 0.0;
        } else if yd > h as f64 {
            yd = h as f64;
        }
        let yd = yd.ceil();
        // xd ∈ [0, w − 1] and yd ∈ [0, h] here, so the index is at most h · w.
        a.push((xd as u64).saturating_mul(h).saturating_add(yd as u64));
    }
    // Boundary indices → run lengths; a zero-length run merges its neighbours.
    a.push(h.saturating_mul(w));
    a.sort_unstable();
    let mut prev = 0;
    for e in a.iter_mut() {
        let t = *e;
        *e -= prev;
        prev = t;
    }
    let mut counts = Vec::with_capacity(a.len());
    let mut j = 0;
    counts.push(a[j]);
    j += 1;
    while j < a.len() {
        if a[j] > 0 {
            counts.push(a[j]);
            j += 1;
        } else {
            j += 1;
            if j < a.len() {
                if let Some(last) = counts.last_mut() {
                    *last += a[j];
                }
                j += 1;
            }
        }
    }
    Rle { h, w, counts }
}

/// pycocotools `iou` with `iscrowd = 0` for two masks of the same canvas: intersection over
/// union of the set pixels, 0 when they do not intersect. Masks of different canvases have no
/// IoU (pycocotools returns −1; we return 0, the reference's "any error gives 0").
pub fn rle_iou(a: &Rle, b: &Rle) -> f64 {
    if a.h != b.h || a.w != b.w {
        return 0.0;
    }
    let (ka, kb) = (a.counts.len(), b.counts.len());
    let mut ca = a.counts.first().copied().unwrap_or(0);
    let mut cb = b.counts.first().copied().unwrap_or(0);
    let (mut va, mut vb) = (false, false);
    let (mut ia, mut ib) = (1, 1);
    let (mut inter, mut union) = (0u64, 0u64);
    let mut ct = 1u64;
    while ct > 0 {
        let c = ca.min(cb);
        if va || vb {
            union += c;
            if va && vb {
                inter += c;
            }
        }
        ct = 0;
        ca -= c;
        if ca == 0 && ia < ka {
            ca = a.counts[ia];
            ia += 1;
            va = !va;
        }
        ct += ca;
        cb -= c;
        if cb == 0 && ib < kb {
            cb = b.counts[ib];
            ib += 1;
            vb = !vb;
        }
        ct += cb;
    }
    if inter == 0 {
        return 0.0;
    }
    inter as f64 / union as f64
}

/// The canvas polygon of a geometry (steps 1–2 of the module docs): flat `x, y, …` in canvas
/// units for an `R × R` canvas.
pub fn canvas_polygon(g: &Geometry<Bin>, resolution: u32) -> Vec<f64> {
    let scale = f64::from(resolution.saturating_sub(1).max(1)) / 999.0;
    let project = |b: Bin| f64::from(b.get().min(999)) * scale;
    match g {
        Geometry::BBox(b) => {
            let [x1, y1, x2, y2] = *b;
            let (x1, x2) = (x1.min(x2), x1.max(x2));
            let (y1, y2) = (y1.min(y2), y1.max(y2));
            [x1, y1, x2, y1, x2, y2, x1, y2].into_iter().map(project).collect()
        }
        Geometry::Poly(p) => p.points().iter().flatten().map(|&b| project(b)).collect(),
    }
}

/// The mask of a geometry on the `R × R` canvas; `None` for `R = 0` (no canvas: the reference
/// returns IoU 0) and for `R >` [`MAX_RESOLUTION`].
pub fn rasterize(g: &Geometry<Bin>, resolution: u32) -> Option<Rle> {
    if resolution == 0 || resolution > MAX_RESOLUTION {
        return None;
    }
    let r = u64::from(resolution);
    Some(rle_from_polygon(&canvas_polygon(g, resolution), r, r))
}

/// Mask IoU of two geometries on the `R × R` canvas (0 for `R = 0`).
pub fn mask_iou(a: &Geometry<Bin>, b: &Geometry<Bin>, resolution: u32) -> f64 {
    match (rasterize(a, resolution), rasterize(b, resolution)) {
        (Some(ra), Some(rb)) => rle_iou(&ra, &rb),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(c: [u16; 4]) -> Geometry<Bin> {
        Geometry::BBox(c.map(|k| Bin::new(k).unwrap()))
    }

    fn decode(r: &Rle) -> Vec<bool> {
        let mut out = Vec::new();
        let mut v = false;
        for &c in &r.counts {
            out.extend(std::iter::repeat_n(v, c as usize));
            v = !v;
        }
        out
    }

    #[test]
    fn run_lengths_cover_the_whole_canvas() {
        for c in [[0, 0, 999, 999], [10, 20, 300, 400], [500, 500, 501, 501]] {
            let r = rasterize(&bx(c), 256).unwrap();
            assert_eq!(r.counts.iter().sum::<u64>(), 256 * 256, "{c:?}");
        }
    }

    #[test]
    fn a_box_on_a_4x4_canvas_sets_the_pixels_pycocotools_sets() {
        // A 4x4 canvas; box [0,0,3,3] in canvas units covers pixels whose centres are inside.
        let r = rle_from_polygon(&[0.0, 0.0, 3.0, 0.0, 3.0, 3.0, 0.0, 3.0], 4, 4);
        let m = decode(&r);
        assert_eq!(m.len(), 16);
        // Column-major: pycocotools marks columns 0..2 and rows 0..2 (the pixel centres
        // (x + 0.5, y + 0.5) strictly inside the polygon).
        let set: Vec<usize> = (0..16).filter(|&i| m[i]).collect();
        assert_eq!(set, vec![0, 1, 2, 4, 5, 6, 8, 9, 10]);
    }

    #[test]
    fn identical_shapes_have_iou_one_and_disjoint_shapes_zero() {
        let a = bx([100, 100, 400, 400]);
        assert_eq!(mask_iou(&a, &a, 256), 1.0);
        assert_eq!(mask_iou(&a, &bx([600, 600, 900, 900]), 256), 0.0);
        assert_eq!(mask_iou(&a, &a, 0), 0.0);
    }

    #[test]
    fn absurd_coordinates_and_canvases_never_panic() {
        let r = rle_from_polygon(&[f64::NAN, 1e300, -1e300, f64::INFINITY, 3.0, 3.0], 8, 8);
        assert_eq!(r.counts.iter().sum::<u64>(), 64);
        assert_eq!(rasterize(&bx([1, 1, 5, 5]), MAX_RESOLUTION + 1), None);
    }

    #[test]
    fn repeated_vertices_do_not_break_the_rasteriser() {
        let r = rle_from_polygon(&[1.0, 1.0, 1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 5.0, 5.0], 8, 8);
        assert_eq!(r.counts.iter().sum::<u64>(), 64);
        assert!(r.area() > 0);
    }
}
