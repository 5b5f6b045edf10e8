//! The canonical object order of every record this crate writes: top-left first.
//!
//! Each object has an anchor `(y, x)`: `(y1, x1)` for a box, `(min y, min x)` over the vertices
//! for a polygon (the same anchor the training-time ordering check uses, so a file sorted here
//! always passes it). Objects are sorted by anchor, `y` before `x`, with a **stable** sort, so
//! objects with equal anchors keep their input order (for COCO: annotation id order).

use coordexp_core::record::{Geometry, Object};
use std::cmp::Ordering;

/// The `(y, x)` anchor of a geometry (see the module docs).
pub fn anchor<C: Copy + PartialOrd>(geometry: &Geometry<C>) -> (C, C) {
    match geometry {
        Geometry::BBox([x1, y1, _, _]) => (*y1, *x1),
        Geometry::Poly(p) => {
            let points = p.points();
            // A polygon always has at least 3 vertices.
            let mut min = (points[0][1], points[0][0]);
            for &[x, y] in &points[1..] {
                if y < min.0 {
                    min.0 = y;
                }
                if x < min.1 {
                    min.1 = x;
                }
            }
            min
        }
    }
}

/// Sort objects into the canonical order (stable; see the module docs).
pub fn sort_canonical<C: Copy + PartialOrd>(objects: &mut [Object<C>]) {
    objects.sort_by(|a, b| {
        let (ya, xa) = anchor(&a.geometry);
        let (yb, xb) = anchor(&b.geometry);
        ya.partial_cmp(&yb)
            .unwrap_or(Ordering::Equal)
            .then(xa.partial_cmp(&xb).unwrap_or(Ordering::Equal))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use coordexp_core::record::{Desc, Polygon};

    fn bbox(desc: &str, b: [f64; 4]) -> Object<f64> {
        Object::new(Desc::new(desc).unwrap(), Geometry::BBox(b))
    }

    #[test]
    fn objects_sort_by_top_then_left_and_ties_keep_input_order() {
        let mut objects = vec![
            bbox("c", [50.0, 20.0, 60.0, 30.0]),
            bbox("a", [90.0, 10.0, 95.0, 15.0]),
            bbox("b1", [5.0, 20.0, 9.0, 30.0]),
            bbox("b2", [5.0, 20.0, 8.0, 25.0]),
        ];
        sort_canonical(&mut objects);
        let order: Vec<_> = objects.iter().map(|o| o.desc.as_str()).collect();
        assert_eq!(order, ["a", "b1", "b2", "c"]);
    }

    #[test]
    fn a_polygon_anchors_at_its_minimum_y_and_minimum_x() {
        let poly = Polygon::new(vec![[50.0, 10.0], [5.0, 40.0], [60.0, 40.0]]).unwrap();
        assert_eq!(anchor(&Geometry::Poly(poly)), (10.0, 5.0));
    }
}
