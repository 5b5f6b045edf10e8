//! Checks on typed record parts, shared by [`Record::new`](super::Record::new) and the JSON
//! reader so that a record built in code and one read from a file obey the same rules.

use super::{Geometry, Object, POLY_KEY, Problem, Reason};
use crate::geometry::ImageSize;
use crate::norm1000::Bin;
use serde_json::{Map, Value};

/// Top-level keys owned by the contract; extra keys may not reuse them.
pub(super) const RECORD_KEYS: [&str; 4] = ["images", "width", "height", "objects"];
/// Object keys owned by the contract (including removed ones); extra keys may not reuse them.
pub(super) const OBJECT_KEYS: [&str; 7] =
    ["desc", "bbox_2d", "poly", "bbox", "polygon", "line", "line_points"];

/// Image paths: at least one, none empty.
pub(super) fn images(images: &[String], out: &mut Vec<Problem>) {
    if images.is_empty() {
        out.push(Problem::new(
            "images",
            Reason::InvalidImages,
            "expected at least one image path, got an empty list",
        ));
    }
    for (i, p) in images.iter().enumerate() {
        if p.trim().is_empty() {
            out.push(Problem::new(
                format!("images[{i}]"),
                Reason::InvalidImages,
                "image path is empty",
            ));
        }
    }
}

/// Extra top-level keys may not shadow contract keys.
pub(super) fn record_extra(extra: &Map<String, Value>, out: &mut Vec<Problem>) {
    for key in RECORD_KEYS.iter().filter(|k| extra.contains_key(**k)) {
        out.push(Problem::new(
            *key,
            Reason::ReservedKey,
            format!("extra key `{key}` shadows the record field"),
        ));
    }
}

/// A coordinate type's value-level rule: pixels must be finite and inside the image, bins are
/// valid by construction.
pub(super) trait Coordinate: Copy + PartialOrd {
    /// The problem with this value on an axis of `extent` pixels, if any.
    fn value_problem(self, extent: u32) -> Option<(Reason, String)>;
    /// The value as written in messages.
    fn show(self) -> String;
}

impl Coordinate for f64 {
    fn value_problem(self, extent: u32) -> Option<(Reason, String)> {
        if !self.is_finite() {
            Some((Reason::NonFinite, format!("coordinate {self} is not finite")))
        } else if !(0.0..=f64::from(extent)).contains(&self) {
            Some((Reason::OutsideImage, format!("{self} is outside [0, {extent}]")))
        } else {
            None
        }
    }

    fn show(self) -> String {
        self.to_string()
    }
}

impl Coordinate for Bin {
    fn value_problem(self, _extent: u32) -> Option<(Reason, String)> {
        None
    }

    fn show(self) -> String {
        self.token()
    }
}

/// Value-level checks of object `i`: coordinates in range, box corners ordered, extra keys.
pub(super) fn object<C: Coordinate>(
    i: usize,
    o: &Object<C>,
    size: ImageSize,
    out: &mut Vec<Problem>,
) {
    let key = o.geometry.key();
    let path = format!("objects[{i}].{key}");
    if let Geometry::BBox([x1, y1, x2, y2]) = o.geometry
        && (x2 < x1 || y2 < y1)
    {
        let what = if x2 < x1 {
            format!("x2 ({}) < x1 ({})", x2.show(), x1.show())
        } else {
            format!("y2 ({}) < y1 ({})", y2.show(), y1.show())
        };
        out.push(Problem::new(&path, Reason::InvertedBox, format!("inverted box: {what}")));
    }
    let extents = [size.width(), size.height()];
    let mut bad = o
        .geometry
        .coords()
        .into_iter()
        .enumerate()
        .filter_map(|(j, v)| v.value_problem(extents[j % 2]).map(|p| (j, p)));
    if let Some((j, (reason, message))) = bad.next() {
        let axis = if j % 2 == 0 { "x" } else { "y" };
        let more = bad.count();
        let tail = if more > 0 { format!(" (and {more} more coordinates)") } else { String::new() };
        out.push(Problem::new(format!("{path}[{j}]"), reason, format!("{axis} = {message}{tail}")));
    }
    for k in OBJECT_KEYS.iter().filter(|k| o.extra.contains_key(**k)) {
        out.push(Problem::new(
            format!("objects[{i}].{k}"),
            Reason::ReservedKey,
            format!("extra key `{k}` shadows an object field"),
        ));
    }
    poly_points(i, o, out);
}

/// `poly_points`, when present, must be an integer equal to the polygon's vertex count.
fn poly_points<C: Copy>(i: usize, o: &Object<C>, out: &mut Vec<Problem>) {
    let Some(v) = o.extra.get("poly_points") else { return };
    let path = format!("objects[{i}].poly_points");
    match &o.geometry {
        Geometry::BBox(_) => out.push(Problem::new(
            path,
            Reason::PolyPointsMismatch,
            "poly_points is only allowed on a poly object",
        )),
        Geometry::Poly(p) => {
            let n = p.points().len();
            if v.as_u64() != Some(n as u64) {
                out.push(Problem::new(
                    path,
                    Reason::PolyPointsMismatch,
                    format!("poly_points is {v} but {POLY_KEY} has {n} points"),
                ));
            }
        }
    }
}
