//! Pixel-space geometry: image sizes, axis-aligned boxes and polygons.
//!
//! Everything here works on continuous pixel coordinates (`f64`). The box overlap measures
//! (IoU, GIoU, CIoU) are the plain-number references that evaluation uses directly and that the
//! tensor losses of the trainer are tested against, so their edge-case conventions (the `eps`
//! of CIoU, zero-area boxes) are spelled out on each function.

/// The size of an image in pixels; both sides are at least 1.
///
/// Records carry `width`/`height` as positive JSON integers; this type is where that rule lives,
/// so code holding an `ImageSize` never has to re-check for zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageSize {
    width: u32,
    height: u32,
}

impl ImageSize {
    /// `None` when either side is zero.
    pub fn new(width: u32, height: u32) -> Option<Self> {
        (width > 0 && height > 0).then_some(ImageSize { width, height })
    }

    /// Width in pixels (≥ 1).
    pub fn width(self) -> u32 {
        self.width
    }

    /// Height in pixels (≥ 1).
    pub fn height(self) -> u32 {
        self.height
    }

    /// `width · height`, the quantity the pixel budget (`max_pixels`) limits.
    pub fn pixels(self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

/// An axis-aligned box `[x1, y1, x2, y2]` in pixels (corner convention, continuous coordinates).
///
/// The measures below treat a box with `x2 < x1` (or `y2 < y1`) as having zero extent on that
/// axis, never a negative one, so a malformed prediction cannot produce a negative area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelBox {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
}

impl PixelBox {
    /// A box from its corners `[x1, y1, x2, y2]`.
    pub fn new(x1: f64, y1: f64, x2: f64, y2: f64) -> Self {
        PixelBox { x1, y1, x2, y2 }
    }

    /// A box from the `[x1, y1, x2, y2]` array layout used by records.
    pub fn from_xyxy(c: [f64; 4]) -> Self {
        PixelBox::new(c[0], c[1], c[2], c[3])
    }

    /// The `[x1, y1, x2, y2]` array layout used by records.
    pub fn xyxy(&self) -> [f64; 4] {
        [self.x1, self.y1, self.x2, self.y2]
    }

    /// Width, clamped at zero.
    pub fn width(&self) -> f64 {
        (self.x2 - self.x1).max(0.0)
    }

    /// Height, clamped at zero.
    pub fn height(&self) -> f64 {
        (self.y2 - self.y1).max(0.0)
    }

    /// Area, zero for degenerate or inverted boxes.
    pub fn area(&self) -> f64 {
        self.width() * self.height()
    }

    /// The centre point `(cx, cy)`.
    pub fn center(&self) -> (f64, f64) {
        ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)
    }

    /// Area of the overlap with `other` (zero when disjoint).
    pub fn intersection_area(&self, other: &PixelBox) -> f64 {
        let w = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let h = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        w * h
    }

    /// The smallest box containing both boxes.
    pub fn enclosing(&self, other: &PixelBox) -> PixelBox {
        PixelBox::new(
            self.x1.min(other.x1),
            self.y1.min(other.y1),
            self.x2.max(other.x2),
            self.y2.max(other.y2),
        )
    }

    /// Intersection over union. Two zero-area boxes have IoU 0 (not NaN): a degenerate box never
    /// counts as a match.
    pub fn iou(&self, other: &PixelBox) -> f64 {
        let inter = self.intersection_area(other);
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// Generalized IoU: `IoU − (C − U)/C` with `C` the enclosing box area; in `[-1, 1]`.
    /// When the enclosing box has zero area the penalty term is taken as 0.
    pub fn giou(&self, other: &PixelBox) -> f64 {
        let inter = self.intersection_area(other);
        let union = self.area() + other.area() - inter;
        let iou = if union > 0.0 { inter / union } else { 0.0 };
        let c = self.enclosing(other).area();
        if c > 0.0 { iou - (c - union) / c } else { iou }
    }

    /// Complete IoU of `self` (prediction) against `target`:
    /// `IoU − ρ²/c² − α·v` with `ρ` the centre distance, `c` the enclosing box diagonal,
    /// `v = 4/π² · (atan(w_t/h_t) − atan(w/h))²` and `α = v / (1 − IoU + v + eps)`.
    ///
    /// Uses the same `eps = 1e-7` guards as the reference trainer (union, `c²`, and widths /
    /// heights inside the aspect term are clamped to at least `eps`), so the stage-2 CIoU loss
    /// `1 − ciou` can be checked against this function on identical inputs. Unlike the
    /// trainer, the boxes are not clamped to the image here.
    pub fn ciou(&self, target: &PixelBox) -> f64 {
        const EPS: f64 = 1e-7;
        let inter = self.intersection_area(target);
        let union = (self.area() + target.area() - inter).max(EPS);
        let iou = inter / union;
        let (pcx, pcy) = self.center();
        let (tcx, tcy) = target.center();
        let rho2 = (pcx - tcx).powi(2) + (pcy - tcy).powi(2);
        let e = self.enclosing(target);
        let c2 = ((e.x2 - e.x1).powi(2) + (e.y2 - e.y1).powi(2)).max(EPS);
        let aspect = |b: &PixelBox| (b.width().max(EPS) / b.height().max(EPS)).atan();
        let v = 4.0 / (std::f64::consts::PI * std::f64::consts::PI)
            * (aspect(target) - aspect(self)).powi(2);
        let alpha = v / (1.0 - iou + v + EPS);
        iou - rho2 / c2 - alpha * v
    }
}

/// Twice the signed area of a closed polygon (shoelace formula); positive when the vertices run
/// counter-clockwise in a y-up frame (clockwise on screen, where y points down).
pub fn polygon_signed_area2(points: &[[f64; 2]]) -> f64 {
    let n = points.len();
    (0..n)
        .map(|i| {
            let [x0, y0] = points[i];
            let [x1, y1] = points[(i + 1) % n];
            x0 * y1 - x1 * y0
        })
        .sum()
}

/// Area of a simple polygon (shoelace formula, absolute value). Fewer than 3 points → 0.
pub fn polygon_area(points: &[[f64; 2]]) -> f64 {
    if points.len() < 3 { 0.0 } else { polygon_signed_area2(points).abs() / 2.0 }
}

/// The tightest axis-aligned box around the points; `None` for an empty slice.
pub fn bounding_box(points: &[[f64; 2]]) -> Option<PixelBox> {
    let (first, rest) = points.split_first()?;
    let init = PixelBox::new(first[0], first[1], first[0], first[1]);
    Some(
        rest.iter().fold(init, |b, &[x, y]| {
            PixelBox::new(b.x1.min(x), b.y1.min(y), b.x2.max(x), b.y2.max(y))
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn image_size_rejects_zero_sides() {
        assert!(ImageSize::new(0, 10).is_none());
        assert!(ImageSize::new(10, 0).is_none());
        assert_eq!(ImageSize::new(640, 480).map(ImageSize::pixels), Some(307_200));
    }

    #[test]
    fn iou_of_half_overlapping_unit_squares_is_one_third() {
        let a = PixelBox::new(0.0, 0.0, 2.0, 2.0);
        let b = PixelBox::new(1.0, 0.0, 3.0, 2.0);
        // intersection 2, union 4 + 4 − 2 = 6
        assert!(close(a.iou(&b), 1.0 / 3.0));
        assert!(close(a.iou(&a), 1.0));
    }

    #[test]
    fn iou_of_disjoint_or_degenerate_boxes_is_zero() {
        let a = PixelBox::new(0.0, 0.0, 1.0, 1.0);
        let b = PixelBox::new(2.0, 2.0, 3.0, 3.0);
        assert_eq!(a.iou(&b), 0.0);
        let point = PixelBox::new(1.0, 1.0, 1.0, 1.0);
        assert_eq!(point.iou(&point), 0.0);
    }

    #[test]
    fn inverted_boxes_have_zero_area_not_negative() {
        let inv = PixelBox::new(5.0, 5.0, 1.0, 1.0);
        assert_eq!(inv.area(), 0.0);
    }

    #[test]
    fn giou_of_disjoint_boxes_is_penalised_by_the_empty_enclosure() {
        let a = PixelBox::new(0.0, 0.0, 1.0, 1.0);
        let b = PixelBox::new(2.0, 0.0, 3.0, 1.0);
        // IoU 0, union 2, enclosing [0,0,3,1] area 3 → 0 − (3 − 2)/3
        assert!(close(a.giou(&b), -1.0 / 3.0));
        assert!(close(a.giou(&a), 1.0));
    }

    #[test]
    fn giou_of_overlapping_boxes_hand_computed() {
        let a = PixelBox::new(0.0, 0.0, 2.0, 2.0);
        let b = PixelBox::new(1.0, 1.0, 3.0, 3.0);
        // inter 1, union 7, enclosing 9 → 1/7 − 2/9
        assert!(close(a.giou(&b), 1.0 / 7.0 - 2.0 / 9.0));
    }

    #[test]
    fn ciou_equals_iou_minus_centre_penalty_for_same_aspect_boxes() {
        let a = PixelBox::new(0.0, 0.0, 2.0, 2.0);
        let b = PixelBox::new(1.0, 1.0, 3.0, 3.0);
        // same aspect → v = 0; ρ² = 1 + 1 = 2; c² = 3² + 3² = 18
        assert!(close(a.ciou(&b), 1.0 / 7.0 - 2.0 / 18.0));
        assert!(close(a.ciou(&a), 1.0));
    }

    #[test]
    fn ciou_aspect_term_hand_computed() {
        // Same centre (ρ = 0); prediction 2×2, target 4×2 sharing the box [0,0,4,2].
        let p = PixelBox::new(1.0, 0.0, 3.0, 2.0);
        let t = PixelBox::new(0.0, 0.0, 4.0, 2.0);
        let iou: f64 = 4.0 / 8.0;
        let v = 4.0 / std::f64::consts::PI.powi(2) * (2f64.atan() - 1f64.atan()).powi(2);
        let alpha = v / (1.0 - iou + v + 1e-7);
        assert!(close(p.ciou(&t), iou - alpha * v));
    }

    #[test]
    fn ciou_of_zero_area_boxes_is_finite() {
        let p = PixelBox::new(1.0, 1.0, 1.0, 1.0);
        assert!(p.ciou(&p).is_finite());
        assert!(p.ciou(&PixelBox::new(0.0, 0.0, 4.0, 4.0)).is_finite());
    }

    #[test]
    fn polygon_area_of_unit_square_and_triangle() {
        let square = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
        assert!(close(polygon_area(&square), 1.0));
        let triangle = [[0.0, 0.0], [4.0, 0.0], [0.0, 3.0]];
        assert!(close(polygon_area(&triangle), 6.0));
        // orientation does not change the area
        let reversed: Vec<_> = triangle.iter().rev().copied().collect();
        assert!(close(polygon_area(&reversed), 6.0));
        assert!(close(polygon_signed_area2(&triangle), -polygon_signed_area2(&reversed)));
    }

    #[test]
    fn polygon_area_of_fewer_than_three_points_is_zero() {
        assert_eq!(polygon_area(&[[0.0, 0.0], [5.0, 5.0]]), 0.0);
    }

    #[test]
    fn bounding_box_covers_every_vertex() {
        let pts = [[3.0, 1.0], [-1.0, 4.0], [2.0, -2.0]];
        assert_eq!(bounding_box(&pts), Some(PixelBox::new(-1.0, -2.0, 3.0, 4.0)));
        assert_eq!(bounding_box(&[]), None);
    }
}
