//! COCO / LVIS-style instances JSON → pixel JSONL.
//!
//! Input: `{"images": [{id, file_name | coco_url, width, height}], "annotations": [{id, image_id,
//! category_id, bbox: [x, y, w, h], iscrowd?, segmentation?}], "categories": [{id, name}]}`
//! (LVIS images carry `coco_url` instead of `file_name`; its last path segment is the file name).
//!
//! Output: one record per kept image, in image-id order, with `images: [<path of the file
//! relative to the output's directory>]`, `width`, `height`, `image_id`, and objects
//! `{desc, bbox_2d | poly, category_id, ann_id}`. The description is the category name, or its
//! entry in the `--desc-map` JSON object (`{"category name": "desc"}`). Objects start in
//! annotation-id order and are then stably sorted into the canonical top-left order (by anchor
//! `(y1, x1)`; see [`crate::order`]).
//!
//! Skip policy, each with its counter in [`CocoReport`]:
//! - annotations: crowd (`iscrowd = 1`), no 4-number bbox, empty box (side ≤ 1e-6), box or
//!   polygon outside `[0, W] × [0, H]` (beyond a 1e-6 tolerance; values within it are clamped),
//!   unknown category, unknown image;
//! - images: no file name, non-positive size, file missing under `--images-dir`, no object left
//!   (unless `--keep-empty`), more than `--max-objects` objects (the whole record is dropped,
//!   never truncated). Annotations of dropped images are counted in `anns_on_dropped_images`.
//!
//! With `--geometry poly`, an annotation whose segmentation is one polygon becomes `poly`
//! (vertices clamped to `[0, W−1] × [0, H−1]`, where every vertex has a norm1000 bin, counted
//! in `poly_vertices_clamped`); a multi-part, RLE or unusable segmentation falls back to its
//! bbox, counted per cause.

use crate::order::sort_canonical;
use crate::write::{write_atomically, write_json};
use coordexp_core::Error;
use coordexp_core::geometry::{ImageSize, polygon_area};
use coordexp_core::progress::Progress;
use coordexp_core::record::{Desc, Geometry, Object, Objects, Polygon, Record};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Tolerance for coordinates slightly outside the image (float noise in the annotations).
const EPS: f64 = 1e-6;

/// Which geometry to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometryChoice {
    BBox,
    Poly,
}

/// Inputs and policies of one conversion.
#[derive(Debug, Clone)]
pub struct CocoOptions {
    pub instances: PathBuf,
    pub images_dir: PathBuf,
    pub out: PathBuf,
    pub geometry: GeometryChoice,
    pub desc_map: Option<PathBuf>,
    pub max_objects: Option<usize>,
    pub keep_empty: bool,
    /// Progress over the images (their files are looked up in parallel).
    pub progress: Progress,
}

/// Counters of one conversion (also written to `OUT.report.json`, e.g. `val.report.json`).
///
/// Every annotation ends up in exactly one of `objects_written`, an `anns_*` skip counter or
/// `anns_on_dropped_images`; every image in `images_written` or one `images_*` skip counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CocoReport {
    pub instances: PathBuf,
    pub output: PathBuf,
    pub images_total: usize,
    pub images_written: usize,
    pub images_no_file_name: usize,
    pub images_invalid_size: usize,
    pub images_missing_file: usize,
    pub images_empty: usize,
    pub images_over_max_objects: usize,
    pub anns_total: usize,
    pub objects_written: usize,
    pub anns_crowd: usize,
    pub anns_missing_bbox: usize,
    pub anns_empty_bbox: usize,
    pub anns_outside_image: usize,
    pub anns_unknown_category: usize,
    pub anns_unknown_image: usize,
    pub anns_on_dropped_images: usize,
    // The counters below count every converted annotation, including those of images dropped
    // afterwards (over `--max-objects`).
    /// Objects whose description came from `--desc-map`.
    pub descs_mapped: usize,
    pub polys_written: usize,
    pub polys_multi_part_as_bbox: usize,
    pub polys_rle_as_bbox: usize,
    pub polys_invalid_as_bbox: usize,
    pub poly_vertices_clamped: usize,
}

#[derive(Deserialize)]
struct Instances {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: Option<String>,
    coco_url: Option<String>,
    width: Option<i64>,
    height: Option<i64>,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox: Option<Vec<f64>>,
    #[serde(default)]
    iscrowd: i64,
    segmentation: Option<Value>,
}

#[derive(Deserialize)]
struct CocoCategory {
    id: u64,
    name: String,
}

/// Convert (see the module docs). Writes `opts.out` and `OUT.report.json`.
pub fn convert_coco(opts: &CocoOptions) -> Result<CocoReport, Error> {
    let text =
        fs::read_to_string(&opts.instances).map_err(|e| Error::io("read", &opts.instances, &e))?;
    let data: Instances = serde_json::from_str(&text).map_err(|e| {
        Error::input(format!("not a COCO instances file: {e}"))
            .at(format!("{}:{}:{}", opts.instances.display(), e.line(), e.column()))
            .hint("expected {\"images\": [...], \"annotations\": [...], \"categories\": [...]}")
    })?;
    drop(text);
    let descs = descriptions(&data.categories, opts.desc_map.as_deref(), &opts.instances)?;
    let out_dir = output_dir(&opts.out)?;
    let image_prefix = relative_images_dir(&opts.images_dir, &out_dir)?;

    let mut report = CocoReport {
        instances: opts.instances.clone(),
        output: opts.out.clone(),
        images_total: data.images.len(),
        anns_total: data.annotations.len(),
        ..Default::default()
    };
    let mut image_ids = HashSet::new();
    if let Some(dup) = data.images.iter().find(|i| !image_ids.insert(i.id)) {
        return Err(Error::input(format!("image id {} appears twice", dup.id))
            .at(opts.instances.display().to_string())
            .hint("image ids must be unique; fix or deduplicate the instances file"));
    }
    let mut anns: HashMap<u64, Vec<&CocoAnnotation>> = HashMap::new();
    for a in &data.annotations {
        if image_ids.contains(&a.image_id) {
            anns.entry(a.image_id).or_default().push(a);
        } else {
            report.anns_unknown_image += 1;
        }
    }
    let mut images: Vec<&CocoImage> = data.images.iter().collect();
    images.sort_by_key(|i| i.id);
    let task = opts.progress.task("convert: image files", Some(images.len() as u64), "images");
    let exists: Vec<bool> = images
        .par_iter()
        .map(|i| {
            task.inc(1);
            file_name(i).is_some_and(|f| opts.images_dir.join(f).is_file())
        })
        .collect();
    task.finish();

    let mut lines = String::new();
    for (image, exists) in images.into_iter().zip(exists) {
        let mut image_anns = anns.remove(&image.id).unwrap_or_default();
        image_anns.sort_by_key(|a| a.id);
        let Some(name) = file_name(image) else {
            report.images_no_file_name += 1;
            report.anns_on_dropped_images += image_anns.len();
            continue;
        };
        let size = match (image.width, image.height) {
            (Some(w), Some(h)) => u32::try_from(w)
                .ok()
                .zip(u32::try_from(h).ok())
                .and_then(|(w, h)| ImageSize::new(w, h)),
            _ => None,
        };
        let Some(size) = size else {
            report.images_invalid_size += 1;
            report.anns_on_dropped_images += image_anns.len();
            continue;
        };
        if !exists {
            report.images_missing_file += 1;
            report.anns_on_dropped_images += image_anns.len();
            continue;
        }
        let mut objects = Vec::new();
        for a in image_anns {
            if let Some(object) = convert_annotation(a, size, &descs, opts.geometry, &mut report)? {
                objects.push(object);
            }
        }
        if objects.is_empty() && !opts.keep_empty {
            report.images_empty += 1;
            continue;
        }
        if opts.max_objects.is_some_and(|max| objects.len() > max) {
            report.images_over_max_objects += 1;
            report.anns_on_dropped_images += objects.len();
            continue;
        }
        sort_canonical(&mut objects);
        report.objects_written += objects.len();
        report.polys_written +=
            objects.iter().filter(|o| matches!(o.geometry, Geometry::Poly(_))).count();
        let mut extra = Map::new();
        extra.insert("image_id".into(), Value::from(image.id));
        let path = format!("{image_prefix}{name}");
        let record =
            Record::new(vec![path], size, Objects::Pixels(objects), extra).map_err(|problems| {
                Error::runtime(format!(
                    "converted image {} is not a valid record: {}",
                    image.id,
                    problems.iter().map(|p| p.describe()).collect::<Vec<_>>().join("; ")
                ))
            })?;
        lines.push_str(&record.to_json_line());
        lines.push('\n');
        report.images_written += 1;
    }

    write_atomically(&opts.out, lines.as_bytes())?;
    write_json(&report_path(&opts.out), &report)?;
    Ok(report)
}

/// `OUT.report.json`: `val.jsonl` → `val.report.json`.
fn report_path(out: &Path) -> PathBuf {
    out.with_extension("report.json")
}

/// The image's file name: `file_name`, or the last segment of LVIS's `coco_url`.
fn file_name(image: &CocoImage) -> Option<&str> {
    match (&image.file_name, &image.coco_url) {
        (Some(f), _) if !f.is_empty() => Some(f),
        (_, Some(url)) => url.rsplit('/').next().filter(|s| !s.is_empty()),
        _ => None,
    }
}

/// Category id → description (or the reason the name cannot be one).
type Descs = HashMap<u64, (Result<Desc, String>, bool)>;

fn descriptions(
    categories: &[CocoCategory],
    map: Option<&Path>,
    instances: &Path,
) -> Result<Descs, Error> {
    let mut mapping: BTreeMap<String, String> = match map {
        None => BTreeMap::new(),
        Some(path) => {
            let text = fs::read_to_string(path).map_err(|e| Error::io("read", path, &e))?;
            serde_json::from_str(&text).map_err(|e| {
                Error::input(format!("desc map is not a JSON object of strings: {e}"))
                    .at(format!("{}:{}:{}", path.display(), e.line(), e.column()))
                    .hint("write {\"category name\": \"description\", ...}")
            })?
        }
    };
    let mut descs = HashMap::new();
    for c in categories {
        let (raw, mapped) = match mapping.remove(&c.name) {
            Some(d) => (d, true),
            None => (c.name.clone(), false),
        };
        let desc = Desc::new(&raw)
            .map_err(|e| format!("category {} ({:?}) is not a valid description: {e}", c.id, raw));
        descs.insert(c.id, (desc, mapped));
    }
    if let (Some(path), Some(unknown)) = (map, mapping.keys().next()) {
        return Err(Error::input(format!(
            "desc map names category {unknown:?}, which {} does not define",
            instances.display()
        ))
        .at(path.display().to_string())
        .hint("keys of the desc map are category names exactly as in the instances file"));
    }
    Ok(descs)
}

/// The directory the output JSONL lives in (created if needed).
fn output_dir(out: &Path) -> Result<PathBuf, Error> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, &e))?;
    Ok(dir)
}

/// The images directory relative to the output's directory, `/`-separated with a trailing
/// `/` (empty when they coincide). Records must use relative paths, so the images must live
/// under the output's directory.
fn relative_images_dir(images_dir: &Path, out_dir: &Path) -> Result<String, Error> {
    let lexical = std::path::absolute(images_dir)
        .ok()
        .zip(std::path::absolute(out_dir).ok())
        .and_then(|(i, o)| i.strip_prefix(&o).ok().map(Path::to_path_buf));
    let canonical = || {
        let i = fs::canonicalize(images_dir).map_err(|e| Error::io("open", images_dir, &e))?;
        let o = fs::canonicalize(out_dir).map_err(|e| Error::io("open", out_dir, &e))?;
        i.strip_prefix(&o).map(Path::to_path_buf).map_err(|_| {
            Error::input(format!(
                "--images-dir {} is not inside the output's directory {}",
                images_dir.display(),
                out_dir.display()
            ))
            .hint("records use image paths relative to their JSONL file: write --out next to the images (e.g. --out DATA/val.jsonl for DATA/val2017) or link the images under it")
        })
    };
    let rel = match lexical {
        Some(rel) if !rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) => rel,
        _ => canonical()?,
    };
    if !images_dir.is_dir() {
        return Err(Error::input(format!(
            "--images-dir {} is not a directory",
            images_dir.display()
        )));
    }
    let mut prefix: String = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    if !prefix.is_empty() {
        prefix.push('/');
    }
    Ok(prefix)
}

/// One annotation → an object, or `None` (counted) when skipped.
fn convert_annotation(
    a: &CocoAnnotation,
    size: ImageSize,
    descs: &Descs,
    choice: GeometryChoice,
    report: &mut CocoReport,
) -> Result<Option<Object<f64>>, Error> {
    if a.iscrowd == 1 {
        report.anns_crowd += 1;
        return Ok(None);
    }
    let Some((desc, mapped)) = descs.get(&a.category_id) else {
        report.anns_unknown_category += 1;
        return Ok(None);
    };
    let Some(&[x, y, w, h]) = a.bbox.as_deref() else {
        report.anns_missing_bbox += 1;
        return Ok(None);
    };
    if !(w > EPS && h > EPS) {
        report.anns_empty_bbox += 1;
        return Ok(None);
    }
    let (iw, ih) = (f64::from(size.width()), f64::from(size.height()));
    let inside = |v: f64, max: f64| v >= -EPS && v <= max + EPS;
    if !(inside(x, iw) && inside(y, ih) && inside(x + w, iw) && inside(y + h, ih)) {
        report.anns_outside_image += 1;
        return Ok(None);
    }
    let bbox = [x.clamp(0.0, iw), y.clamp(0.0, ih), (x + w).clamp(0.0, iw), (y + h).clamp(0.0, ih)];
    let geometry = match choice {
        GeometryChoice::BBox => Geometry::BBox(bbox),
        GeometryChoice::Poly => match polygon(a.segmentation.as_ref(), size, report) {
            PolyOutcome::Poly(p) => Geometry::Poly(p),
            PolyOutcome::Outside => {
                report.anns_outside_image += 1;
                return Ok(None);
            }
            PolyOutcome::Fallback => Geometry::BBox(bbox),
        },
    };
    let desc = desc.clone().map_err(|e| {
        Error::input(e)
            .hint("map it to a valid description with --desc-map FILE ({\"name\": \"desc\"})")
    })?;
    report.descs_mapped += usize::from(*mapped);
    let mut object = Object::new(desc, geometry);
    object.extra.insert("category_id".into(), Value::from(a.category_id));
    object.extra.insert("ann_id".into(), Value::from(a.id));
    Ok(Some(object))
}

enum PolyOutcome {
    Poly(Polygon<f64>),
    Outside,
    Fallback,
}

/// The single polygon of a segmentation, or why not (fallback causes are counted here).
fn polygon(seg: Option<&Value>, size: ImageSize, report: &mut CocoReport) -> PolyOutcome {
    let parts = match seg {
        Some(Value::Array(parts)) => parts,
        Some(Value::Object(_)) => {
            report.polys_rle_as_bbox += 1;
            return PolyOutcome::Fallback;
        }
        _ => {
            report.polys_invalid_as_bbox += 1;
            return PolyOutcome::Fallback;
        }
    };
    if parts.len() > 1 {
        report.polys_multi_part_as_bbox += 1;
        return PolyOutcome::Fallback;
    }
    let flat: Option<Vec<f64>> =
        parts.first().and_then(Value::as_array).and_then(|v| v.iter().map(Value::as_f64).collect());
    let Some(flat) = flat.filter(|f| f.len() % 2 == 0 && f.len() >= 6) else {
        report.polys_invalid_as_bbox += 1;
        return PolyOutcome::Fallback;
    };
    let (iw, ih) = (f64::from(size.width()), f64::from(size.height()));
    let inside = |v: f64, max: f64| v >= -EPS && v <= max + EPS;
    if !flat.chunks(2).all(|p| inside(p[0], iw) && inside(p[1], ih)) {
        return PolyOutcome::Outside;
    }
    let (mx, my) = (iw - 1.0, ih - 1.0);
    let points: Vec<[f64; 2]> = flat
        .chunks(2)
        .map(|p| {
            let q = [p[0].clamp(0.0, mx), p[1].clamp(0.0, my)];
            report.poly_vertices_clamped += usize::from(q != [p[0], p[1]]);
            q
        })
        .collect();
    if polygon_area(&points) <= 0.0 {
        report.polys_invalid_as_bbox += 1;
        return PolyOutcome::Fallback;
    }
    match Polygon::new(points) {
        Some(p) => PolyOutcome::Poly(p),
        None => {
            report.polys_invalid_as_bbox += 1;
            PolyOutcome::Fallback
        }
    }
}
