//! The JSONL record contract: one image and its objects per line.
//!
//! ```text
//! {"images": ["images/0001.png"], "width": 640, "height": 480,
//!  "objects": [{"desc": "red circle", "bbox_2d": [12, 40, 200, 310]},
//!              {"desc": "tree", "poly": [1, 2, 30, 4, 15, 60]}], ...extra keys}
//! ```
//!
//! A [`Record`] can only be obtained through validation ([`Record::new`] or
//! [`Record::from_json_line`]), so code holding one may rely on the whole contract: at least one
//! image path, a positive size, every description valid, exactly one geometry per object with the
//! right arity, and coordinates that are either **all pixels** (finite numbers inside
//! `[0, W] × [0, H]`) or **all bins** (`<|coord_k|>` tokens) — the [`Objects`] enum makes a mixed
//! record unrepresentable. Unknown keys are kept, at record and object level, and written back.
//!
//! Reading files: [`read_records`] stops at the first bad line,
//! [`validate_file`] collects every problem into a [`ValidationReport`].

mod check;
mod desc;
mod json;
mod reader;
mod report;

pub use desc::{Desc, DescError, FORBIDDEN_PATTERNS};
pub use reader::{
    RecordReader, file_task, line_error, read_record_at, read_records, validate_file,
    validate_file_with,
};
pub use report::{Issue, Problem, Reason, ValidationReport};

use crate::geometry::{ImageSize, PixelBox, bounding_box};
use crate::norm1000::{self, Bin};
use serde_json::{Map, Value};

/// The key of a box geometry.
pub const BBOX_KEY: &str = "bbox_2d";
/// The key of a polygon geometry.
pub const POLY_KEY: &str = "poly";

/// A polygon with at least 3 vertices `[x, y]`, in the order given (never re-ordered here).
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon<C>(Vec<[C; 2]>);

impl<C> Polygon<C> {
    /// `None` with fewer than 3 vertices.
    pub fn new(points: Vec<[C; 2]>) -> Option<Self> {
        (points.len() >= 3).then_some(Polygon(points))
    }

    /// The vertices in order.
    pub fn points(&self) -> &[[C; 2]] {
        &self.0
    }

    /// The vertices, consuming the polygon.
    pub fn into_points(self) -> Vec<[C; 2]> {
        self.0
    }
}

/// One object's shape, with coordinates of type `C` (`f64` pixels or [`Bin`]s).
#[derive(Debug, Clone, PartialEq)]
pub enum Geometry<C> {
    /// `[x1, y1, x2, y2]`.
    BBox([C; 4]),
    /// A flat `[x1, y1, x2, y2, …]` list in the file; vertex pairs here.
    Poly(Polygon<C>),
}

impl<C: Copy> Geometry<C> {
    /// The record key: `bbox_2d` or `poly`.
    pub fn key(&self) -> &'static str {
        match self {
            Geometry::BBox(_) => BBOX_KEY,
            Geometry::Poly(_) => POLY_KEY,
        }
    }

    /// The coordinates in file order (`x1, y1, x2, y2, …`).
    pub fn coords(&self) -> Vec<C> {
        match self {
            Geometry::BBox(b) => b.to_vec(),
            Geometry::Poly(p) => p.points().iter().flatten().copied().collect(),
        }
    }

    /// Number of coordinate values (4 for a box, 2 per polygon vertex).
    pub fn num_coords(&self) -> usize {
        match self {
            Geometry::BBox(_) => 4,
            Geometry::Poly(p) => 2 * p.points().len(),
        }
    }
}

impl Geometry<f64> {
    /// The axis-aligned extent in pixels (the box itself, or the polygon's bounding box).
    pub fn bounding_box(&self) -> PixelBox {
        match self {
            Geometry::BBox(b) => PixelBox::from_xyxy(*b),
            // A polygon has ≥ 3 vertices, so its bounding box exists.
            Geometry::Poly(p) => bounding_box(p.points()).unwrap_or(PixelBox::new(0., 0., 0., 0.)),
        }
    }

    /// Quantize to bins with the norm1000 rules (boxes floor/ceil/clamp/nudge, vertices round
    /// half to even). Fails with the flat coordinate index when a vertex has no bin.
    pub fn quantize(
        &self,
        size: ImageSize,
    ) -> Result<Geometry<Bin>, (usize, norm1000::QuantizeError)> {
        match self {
            Geometry::BBox(b) => norm1000::quantize_bbox(*b, size)
                .map(Geometry::BBox)
                .map_err(|e| (b.iter().position(|v| !v.is_finite()).unwrap_or(0), e)),
            Geometry::Poly(p) => {
                norm1000::quantize_points(p.points(), size).map(|pts| Geometry::Poly(Polygon(pts)))
            }
        }
    }
}

impl Geometry<Bin> {
    /// Continuous pixel coordinates (`k/999 · max(1, W−1)`), e.g. for evaluation.
    pub fn dequantize(&self, size: ImageSize) -> Geometry<f64> {
        let (w, h) = (size.width(), size.height());
        match self {
            Geometry::BBox([x1, y1, x2, y2]) => Geometry::BBox([
                norm1000::dequantize(*x1, w),
                norm1000::dequantize(*y1, h),
                norm1000::dequantize(*x2, w),
                norm1000::dequantize(*y2, h),
            ]),
            Geometry::Poly(p) => Geometry::Poly(Polygon(
                p.points()
                    .iter()
                    .map(|[x, y]| [norm1000::dequantize(*x, w), norm1000::dequantize(*y, h)])
                    .collect(),
            )),
        }
    }
}

/// One object: a description, a geometry and any extra keys (kept, never rendered).
#[derive(Debug, Clone, PartialEq)]
pub struct Object<C> {
    pub desc: Desc,
    pub geometry: Geometry<C>,
    /// Keys other than `desc`/`bbox_2d`/`poly` (e.g. `category_id`, `poly_points`).
    pub extra: Map<String, Value>,
}

impl<C> Object<C> {
    /// An object without extra keys.
    pub fn new(desc: Desc, geometry: Geometry<C>) -> Self {
        Object { desc, geometry, extra: Map::new() }
    }
}

/// A record's objects: all in pixels or all in bins, never both.
///
/// An empty object list carries no coordinates at all; it is represented as `Bins(vec![])`
/// (the training domain), and [`Objects::is_pixels`] is false for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Objects {
    /// Pixel coordinates (`f64`), as produced by converters.
    Pixels(Vec<Object<f64>>),
    /// Coordinate bins, as written in training files (`"<|coord_k|>"`).
    Bins(Vec<Object<Bin>>),
}

impl Objects {
    /// Number of objects.
    pub fn len(&self) -> usize {
        match self {
            Objects::Pixels(v) => v.len(),
            Objects::Bins(v) => v.len(),
        }
    }

    /// True when there are no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True for a non-empty pixel-coordinate list.
    pub fn is_pixels(&self) -> bool {
        matches!(self, Objects::Pixels(v) if !v.is_empty())
    }

    /// The descriptions in order.
    pub fn descs(&self) -> Vec<&Desc> {
        match self {
            Objects::Pixels(v) => v.iter().map(|o| &o.desc).collect(),
            Objects::Bins(v) => v.iter().map(|o| &o.desc).collect(),
        }
    }
}

/// One validated JSONL record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    images: Vec<String>,
    size: ImageSize,
    objects: Objects,
    extra: Map<String, Value>,
}

impl Record {
    /// Build a record from parts, checking everything the types do not already guarantee
    /// (image paths, finite in-image pixel coordinates, box corner order, extra keys). Returns
    /// every problem found, located by field path.
    pub fn new(
        images: Vec<String>,
        size: ImageSize,
        objects: Objects,
        extra: Map<String, Value>,
    ) -> Result<Record, Vec<Problem>> {
        let mut problems = Vec::new();
        check::images(&images, &mut problems);
        check::record_extra(&extra, &mut problems);
        match &objects {
            Objects::Pixels(v) => {
                v.iter().enumerate().for_each(|(i, o)| check::object(i, o, size, &mut problems))
            }
            Objects::Bins(v) => {
                v.iter().enumerate().for_each(|(i, o)| check::object(i, o, size, &mut problems))
            }
        }
        if problems.is_empty() {
            Ok(Record { images, size, objects, extra })
        } else {
            Err(problems)
        }
    }

    /// Parse and validate one JSONL line, collecting every problem. See [`Reason`] for what is
    /// checked.
    pub fn from_json_line(line: &str) -> Result<Record, Vec<Problem>> {
        json::parse_line(line)
    }

    /// The record as one compact JSON line (no trailing newline): `images`, `width`,
    /// `height`, `objects` (each `desc`, geometry, then extra keys), then the extra keys.
    /// Bins are written as `"<|coord_k|>"` strings, integral pixel values as integers.
    pub fn to_json_line(&self) -> String {
        json::write_line(self)
    }

    /// Image paths (at least one), as written in the file.
    pub fn images(&self) -> &[String] {
        &self.images
    }

    /// The image size the coordinates refer to.
    pub fn size(&self) -> ImageSize {
        self.size
    }

    /// The objects, in file order.
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// Top-level keys other than `images`, `width`, `height`, `objects`.
    pub fn extra(&self) -> &Map<String, Value> {
        &self.extra
    }

    /// Split into `(images, size, objects, extra)`, e.g. to rebuild a transformed record with
    /// [`Record::new`].
    pub fn into_parts(self) -> (Vec<String>, ImageSize, Objects, Map<String, Value>) {
        (self.images, self.size, self.objects, self.extra)
    }

    /// The same record with bin coordinates, quantized with the record's own size (a bin record
    /// is returned unchanged). Fails, naming the coordinate, when a polygon vertex has no bin
    /// (it lies beyond pixel `W−1`/`H−1` by more than half a bin).
    pub fn to_bins(&self) -> Result<Record, Problem> {
        Ok(Record {
            images: self.images.clone(),
            size: self.size,
            objects: Objects::Bins(self.bin_objects()?),
            extra: self.extra.clone(),
        })
    }

    /// The objects with bin coordinates (what CoordJSON renders), quantizing pixel records with
    /// the record's own size; see [`Record::to_bins`].
    pub fn bin_objects(&self) -> Result<Vec<Object<Bin>>, Problem> {
        let pixels = match &self.objects {
            Objects::Bins(v) => return Ok(v.clone()),
            Objects::Pixels(v) => v,
        };
        pixels
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let geometry = o.geometry.quantize(self.size).map_err(|(j, e)| {
                    Problem::new(
                        format!("objects[{i}].{}[{j}]", o.geometry.key()),
                        Reason::OutsideImage,
                        e.to_string(),
                    )
                    .with_hint(
                        "polygon vertices must lie within [0, width-1] x [0, height-1] to have a \
                         bin; clamp them when converting",
                    )
                })?;
                Ok(Object { desc: o.desc.clone(), geometry, extra: o.extra.clone() })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(w: u32, h: u32) -> ImageSize {
        ImageSize::new(w, h).unwrap()
    }

    fn desc(s: &str) -> Desc {
        Desc::new(s).unwrap()
    }

    #[test]
    fn polygons_need_three_vertices() {
        assert!(Polygon::new(vec![[0.0, 0.0], [1.0, 1.0]]).is_none());
        assert!(Polygon::new(vec![[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]).is_some());
    }

    #[test]
    fn pixel_records_quantize_with_their_own_size() {
        let obj = Object::new(desc("person"), Geometry::BBox([0.0, 0.0, 640.0, 480.0]));
        let poly = Polygon::new(vec![[100.0, 50.0], [320.0, 240.0], [639.0, 479.0]]).unwrap();
        let obj2 = Object::new(desc("table"), Geometry::Poly(poly));
        let r = Record::new(
            vec!["a.png".into()],
            size(640, 480),
            Objects::Pixels(vec![obj, obj2]),
            Map::new(),
        )
        .unwrap();
        let b = r.to_bins().unwrap();
        let Objects::Bins(objs) = b.objects() else { panic!("expected bins") };
        let k = |v: u16| Bin::new(v).unwrap();
        assert_eq!(objs[0].geometry, Geometry::BBox([k(0), k(0), k(999), k(999)]));
        assert_eq!(objs[1].geometry.coords(), vec![k(156), k(104), k(500), k(501), k(999), k(999)]);
        assert_eq!(b.to_bins().unwrap(), b);
    }

    #[test]
    fn quantizing_a_vertex_on_the_far_edge_names_the_coordinate() {
        let poly = Polygon::new(vec![[0.0, 0.0], [640.0, 0.0], [0.0, 10.0]]).unwrap();
        let r = Record::new(
            vec!["a.png".into()],
            size(640, 480),
            Objects::Pixels(vec![Object::new(desc("x"), Geometry::Poly(poly))]),
            Map::new(),
        )
        .unwrap();
        let p = r.to_bins().unwrap_err();
        assert_eq!(p.path, "objects[0].poly[2]");
        assert_eq!(p.reason, Reason::OutsideImage);
    }

    #[test]
    fn record_new_reports_every_problem_with_its_path() {
        let bad_box = Object::new(desc("a"), Geometry::BBox([10.0, 0.0, 5.0, 700.0]));
        let mut extra = Map::new();
        extra.insert("width".into(), Value::from(3));
        let problems =
            Record::new(vec![], size(640, 480), Objects::Pixels(vec![bad_box]), extra).unwrap_err();
        let got: Vec<_> = problems.iter().map(|p| (p.path.as_str(), p.reason)).collect();
        assert_eq!(
            got,
            vec![
                ("images", Reason::InvalidImages),
                ("width", Reason::ReservedKey),
                ("objects[0].bbox_2d", Reason::InvertedBox),
                ("objects[0].bbox_2d[3]", Reason::OutsideImage),
            ]
        );
    }

    #[test]
    fn bins_dequantize_to_continuous_pixels() {
        let k = |v: u16| Bin::new(v).unwrap();
        let g = Geometry::BBox([k(0), k(0), k(999), k(500)]);
        assert_eq!(
            g.dequantize(size(640, 480)),
            Geometry::BBox([0.0, 0.0, 639.0, 500.0 / 999.0 * 479.0])
        );
    }
}
