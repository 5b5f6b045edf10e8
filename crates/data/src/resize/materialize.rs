//! `coordexp data resize`: rewrite a pixel-coordinate JSONL so that every image conforms to the
//! size rule, re-encoding only the images whose size changes.
//!
//! Per record: the target size comes from [`ResizePolicy::target`]. An image already at its
//! target size is hard-linked into the output (copied when linking fails, e.g. across file
//! systems) — never decoded or re-encoded, and its record's geometry is left exactly as it was.
//! An image that changes size is decoded, converted to RGB, resized with Lanczos3
//! (`fast_image_resize`) and written in the format of its extension (JPEG at quality
//! [`JPEG_QUALITY`]); its geometry is scaled by `W'/W`, `H'/H`, rounded half to even and clamped
//! to `[0, W'−1] × [0, H'−1]` — the domain in which every coordinate has a norm1000 bin, for
//! boxes and polygons alike — and a box whose edges collapsed onto each other is opened again by
//! one pixel. Every clamp, nudge and collapsed polygon is counted in the [`ResizeReport`].
//!
//! Output layout: `OUT/<input file name>` and `OUT/<stem>.resize_report.json`; each image goes to
//! `OUT/images/<its relative path>` (a relative path that already starts with `images/` keeps
//! it; an absolute or `..` path keeps only its file name), so that several splits resized into
//! one directory share `OUT/images`. An existing output JSONL is refused; an existing image of
//! the right size is reused (another split already wrote it).

use super::ResizePolicy;
use crate::images::{HeaderError, read_dimensions, resolve_image};
use crate::write::{write_atomically, write_json};
use coordexp_core::Error;
use coordexp_core::geometry::{ImageSize, polygon_area};
use coordexp_core::progress::Progress;
use coordexp_core::record::{Geometry, Object, Objects, Polygon, Record, read_records};
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// Quality of re-encoded JPEG images.
pub const JPEG_QUALITY: u8 = 90;

/// What to resize and where.
#[derive(Debug, Clone)]
pub struct ResizeJob {
    /// The pixel-coordinate JSONL to read.
    pub input: PathBuf,
    /// The output directory (created if missing).
    pub out_dir: PathBuf,
    pub policy: ResizePolicy,
    /// Progress over the distinct images.
    pub progress: Progress,
}

/// Counters of one resize run (also written to `OUT/<stem>.resize_report.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResizeReport {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Records read and written (resize never drops a record).
    pub records: usize,
    /// Records whose size changed (geometry scaled).
    pub records_resized: usize,
    /// Records already at their target size (geometry untouched).
    pub records_unchanged: usize,
    /// Distinct images decoded, resized and re-encoded.
    pub images_resized: usize,
    /// Distinct conforming images hard-linked into the output.
    pub images_linked: usize,
    /// Distinct conforming images copied because hard-linking failed.
    pub images_copied: usize,
    /// Output images that already existed at the target size and were kept.
    pub images_reused: usize,
    /// Scaled coordinates that fell outside `[0, W'−1] × [0, H'−1]` and were clamped.
    pub coords_clamped: usize,
    /// Scaled boxes whose edges collapsed after rounding and were opened by one pixel.
    pub boxes_nudged: usize,
    /// Scaled polygons whose rounded vertices enclose no area (kept; flagged for review).
    pub polys_zero_area: usize,
}

/// Resize a dataset (see the module docs). Fails before writing any JSONL when a record is
/// invalid, holds bin coordinates, or an image is missing or disagrees with its record's size.
pub fn resize_dataset(job: &ResizeJob) -> Result<ResizeReport, Error> {
    let records = read_records(&job.input)?;
    let file_name = job.input.file_name().ok_or_else(|| {
        Error::input(format!("{} is not a file path", job.input.display()))
            .hint("pass the JSONL file with --in")
    })?;
    let output = job.out_dir.join(file_name);
    if output.exists() {
        return Err(Error::input(format!("{} already exists", output.display()))
            .hint("resize writes fresh outputs: choose another --out-dir or remove the file"));
    }
    fs::create_dir_all(&job.out_dir)
        .map_err(|e| Error::io("create directory", &job.out_dir, &e))?;

    let plan = plan(&job.input, &records, job.policy)?;
    let task = job.progress.task("resize", Some(plan.images.len() as u64), "images");
    let outcomes: Vec<Result<Outcome, Error>> = plan
        .images
        .par_iter()
        .map(|image| {
            let outcome = materialize(image, &job.out_dir);
            task.inc(1);
            outcome
        })
        .collect();
    task.finish();
    let mut report =
        ResizeReport { input: job.input.clone(), output: output.clone(), ..Default::default() };
    let failures: Vec<Error> = outcomes
        .into_iter()
        .filter_map(|o| match o {
            Ok(outcome) => {
                outcome.count(&mut report);
                None
            }
            Err(e) => Some(e),
        })
        .collect();
    if let Some(first) = failures.first() {
        let more = failures.len() - 1;
        return Err(if more == 0 {
            first.clone()
        } else {
            let hint = first.hint_text().unwrap_or("").to_string();
            first.clone().hint(format!("{hint} ({more} more images failed)"))
        });
    }

    let mut text = String::new();
    for ((line, record), target) in records.into_iter().zip(&plan.targets) {
        let resized = rewrite(record, &plan.paths, *target, &mut report).map_err(|problems| {
            Error::runtime(format!(
                "resized record is invalid: {}",
                problems.iter().map(|p| p.describe()).collect::<Vec<_>>().join("; ")
            ))
            .at(format!("{}:{line}", job.input.display()))
        })?;
        text.push_str(&resized.to_json_line());
        text.push('\n');
    }
    write_atomically(&output, text.as_bytes())?;
    let report_path = job.out_dir.join(format!(
        "{}.resize_report.json",
        Path::new(file_name).file_stem().unwrap_or(file_name).to_string_lossy()
    ));
    write_json(&report_path, &report)?;
    Ok(report)
}

/// One distinct image to materialise.
struct ImageTask {
    /// Where the first record naming it was (`FILE:LINE`), for messages.
    location: String,
    source: PathBuf,
    /// Relative to the output directory, `/`-separated.
    out_rel: String,
    from: ImageSize,
    to: ImageSize,
}

/// Per-record targets, the image path mapping and the distinct image tasks.
struct Plan {
    targets: Vec<ImageSize>,
    /// Input image path (as written) → output relative path.
    paths: HashMap<String, String>,
    images: Vec<ImageTask>,
}

fn plan(input: &Path, records: &[(usize, Record)], policy: ResizePolicy) -> Result<Plan, Error> {
    let mut plan = Plan { targets: Vec::new(), paths: HashMap::new(), images: Vec::new() };
    let mut by_out: HashMap<String, usize> = HashMap::new();
    for (line, record) in records {
        let location = format!("{}:{line}", input.display());
        if matches!(record.objects(), Objects::Bins(v) if !v.is_empty()) {
            return Err(Error::input("record has bin coordinates; resize works on pixels")
                .at(location)
                .hint("resize the pixel-coordinate JSONL, then convert to coordinate tokens"));
        }
        let to = policy.target(record.size()).map_err(|e| e.at(location.clone()))?;
        plan.targets.push(to);
        for image in record.images() {
            let source = resolve_image(input, image);
            let out_rel = output_path(image);
            match by_out.get(&out_rel).map(|&i| &plan.images[i]) {
                Some(task) if task.source != source => {
                    return Err(Error::input(format!(
                        "images {} and {} would both be written to {out_rel}",
                        task.source.display(),
                        source.display()
                    ))
                    .at(location)
                    .hint("give images distinct file names or keep them under distinct relative directories"));
                }
                Some(task) if task.from != record.size() => {
                    return Err(Error::input(format!(
                        "image {image} is {}x{} here but {}x{} at {}",
                        record.size().width(),
                        record.size().height(),
                        task.from.width(),
                        task.from.height(),
                        task.location
                    ))
                    .at(location)
                    .hint("every record naming an image must give its true size; run `coordexp data validate --images`"));
                }
                Some(_) => {}
                None => {
                    by_out.insert(out_rel.clone(), plan.images.len());
                    plan.images.push(ImageTask {
                        location: location.clone(),
                        source,
                        out_rel: out_rel.clone(),
                        from: record.size(),
                        to,
                    });
                }
            }
            plan.paths.insert(image.clone(), out_rel);
        }
    }
    Ok(plan)
}

/// The output path (relative to the output directory) of an input image path.
fn output_path(image: &str) -> String {
    let path = Path::new(image);
    let parts: Option<Vec<String>> = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    match parts {
        Some(parts) if parts.first().is_some_and(|p| p == "images") => parts.join("/"),
        Some(parts) => format!("images/{}", parts.join("/")),
        None => format!(
            "images/{}",
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        ),
    }
}

enum Outcome {
    Resized,
    Linked,
    Copied,
    Reused,
}

impl Outcome {
    fn count(self, report: &mut ResizeReport) {
        match self {
            Outcome::Resized => report.images_resized += 1,
            Outcome::Linked => report.images_linked += 1,
            Outcome::Copied => report.images_copied += 1,
            Outcome::Reused => report.images_reused += 1,
        }
    }
}

fn materialize(task: &ImageTask, out_dir: &Path) -> Result<Outcome, Error> {
    let at = || task.location.clone();
    let dst = out_dir.join(&task.out_rel);
    let (tw, th) = (task.to.width(), task.to.height());
    match read_dimensions(&dst) {
        Ok(dims) if dims == (tw, th) => return Ok(Outcome::Reused),
        Ok((w, h)) => {
            return Err(Error::input(format!(
                "{} already exists at {w}x{h}, not the target {tw}x{th}",
                dst.display()
            ))
            .at(at())
            .hint("resize into a fresh --out-dir"));
        }
        Err(HeaderError::Missing) => {}
        Err(HeaderError::Unreadable(e)) => {
            return Err(Error::input(format!(
                "{} already exists and is not an image: {e}",
                dst.display()
            ))
            .at(at())
            .hint("resize into a fresh --out-dir"));
        }
    }
    let (fw, fh) = (task.from.width(), task.from.height());
    match read_dimensions(&task.source) {
        Ok(dims) if dims == (fw, fh) => {}
        Ok((w, h)) => {
            return Err(Error::input(format!(
                "{} is {w}x{h} on disk but the record says {fw}x{fh}",
                task.source.display()
            ))
            .at(at())
            .hint("the record's width/height must be the image's true size (no meta-only rescale); fix the record or the image"));
        }
        Err(HeaderError::Missing) => {
            return Err(Error::input(format!("image {} does not exist", task.source.display()))
                .at(at())
                .hint("relative image paths are resolved against the JSONL file's directory"));
        }
        Err(HeaderError::Unreadable(e)) => {
            return Err(
                Error::input(format!("cannot read image {}: {e}", task.source.display())).at(at())
            );
        }
    }
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, &e))?;
    }
    if task.from == task.to {
        if fs::hard_link(&task.source, &dst).is_ok() {
            return Ok(Outcome::Linked);
        }
        fs::copy(&task.source, &dst).map_err(|e| Error::io("copy image to", &dst, &e))?;
        return Ok(Outcome::Copied);
    }
    let bytes = resize_image(&task.source, task.to, &dst).map_err(|e| e.at(at()))?;
    write_atomically(&dst, &bytes)?;
    Ok(Outcome::Resized)
}

/// Decode `source`, resize it to `to` with Lanczos3 and encode it for `dst`'s extension.
fn resize_image(source: &Path, to: ImageSize, dst: &Path) -> Result<Vec<u8>, Error> {
    let format = image::ImageFormat::from_path(dst).map_err(|e| {
        Error::input(format!("cannot choose an output format for {}: {e}", dst.display()))
            .hint("use .png or .jpg image file names")
    })?;
    let src = image::open(source)
        .map_err(|e| Error::input(format!("cannot decode {}: {e}", source.display())))?
        .to_rgb8();
    let mut out = image::RgbImage::new(to.width(), to.height());
    Resizer::new()
        .resize(
            &src,
            &mut out,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)),
        )
        .map_err(|e| Error::runtime(format!("cannot resize {}: {e}", source.display())))?;
    let mut bytes = Vec::new();
    let encoded = match format {
        image::ImageFormat::Jpeg => out.write_with_encoder(
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY),
        ),
        other => out.write_to(&mut std::io::Cursor::new(&mut bytes), other),
    };
    encoded.map_err(|e| Error::runtime(format!("cannot encode {}: {e}", dst.display())))?;
    Ok(bytes)
}

/// The record with its images re-pointed at the output and, when its size changes, its
/// geometry scaled.
fn rewrite(
    record: Record,
    paths: &HashMap<String, String>,
    to: ImageSize,
    report: &mut ResizeReport,
) -> Result<Record, Vec<coordexp_core::record::Problem>> {
    let (images, from, objects, extra) = record.into_parts();
    let images =
        images.iter().map(|i| paths.get(i).cloned().unwrap_or_else(|| i.clone())).collect();
    report.records += 1;
    let objects = match objects {
        Objects::Pixels(v) if from != to => {
            report.records_resized += 1;
            let mut counters = ScaleCounters::default();
            let scaled = v
                .into_iter()
                .map(|o| Object { geometry: scale(&o.geometry, from, to, &mut counters), ..o })
                .collect();
            report.coords_clamped += counters.coords_clamped;
            report.boxes_nudged += counters.boxes_nudged;
            report.polys_zero_area += counters.polys_zero_area;
            Objects::Pixels(scaled)
        }
        other => {
            if from == to {
                report.records_unchanged += 1;
            } else {
                report.records_resized += 1;
            }
            other
        }
    };
    Record::new(images, to, objects, extra)
}

#[derive(Debug, Default, PartialEq, Eq)]
struct ScaleCounters {
    coords_clamped: usize,
    boxes_nudged: usize,
    polys_zero_area: usize,
}

/// Scale one geometry from `from` to `to` (see the module docs for the rounding rules).
fn scale(
    g: &Geometry<f64>,
    from: ImageSize,
    to: ImageSize,
    c: &mut ScaleCounters,
) -> Geometry<f64> {
    let (sx, sy) = (
        f64::from(to.width()) / f64::from(from.width()),
        f64::from(to.height()) / f64::from(from.height()),
    );
    let (mx, my) = (f64::from(to.width() - 1), f64::from(to.height() - 1));
    let mut snap = |v: f64, s: f64, max: f64| {
        let r = (v * s).round_ties_even();
        let clamped = r.clamp(0.0, max);
        c.coords_clamped += usize::from(clamped != r);
        clamped
    };
    match g {
        Geometry::BBox([x1, y1, x2, y2]) => {
            let (x1, x2) = (snap(*x1, sx, mx), snap(*x2, sx, mx));
            let (y1, y2) = (snap(*y1, sy, my), snap(*y2, sy, my));
            let (x1, x2, nx) = open_axis(x1, x2, mx);
            let (y1, y2, ny) = open_axis(y1, y2, my);
            c.boxes_nudged += usize::from(nx || ny);
            Geometry::BBox([x1, y1, x2, y2])
        }
        Geometry::Poly(p) => {
            let points: Vec<[f64; 2]> =
                p.points().iter().map(|&[x, y]| [snap(x, sx, mx), snap(y, sy, my)]).collect();
            c.polys_zero_area += usize::from(polygon_area(&points) == 0.0);
            // Scaling keeps the vertex count, so the polygon stays valid.
            Polygon::new(points).map_or_else(|| g.clone(), Geometry::Poly)
        }
    }
}

/// Open a collapsed `[lo, hi]` edge pair by one pixel within `[0, max]`: move `hi` right, or
/// `lo` left at the far edge. Returns whether it moved.
fn open_axis(lo: f64, hi: f64, max: f64) -> (f64, f64, bool) {
    if hi > lo {
        (lo, hi, false)
    } else if lo + 1.0 <= max {
        (lo, lo + 1.0, true)
    } else {
        ((max - 1.0).max(0.0), max, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(w: u32, h: u32) -> ImageSize {
        ImageSize::new(w, h).unwrap()
    }

    #[test]
    fn boxes_scale_round_half_even_and_clamp_to_the_last_pixel() {
        let mut c = ScaleCounters::default();
        // 640x427 -> 640x416: sy = 416/427.
        let g = scale(
            &Geometry::BBox([0.0, 0.0, 640.0, 427.0]),
            size(640, 427),
            size(640, 416),
            &mut c,
        );
        assert_eq!(g, Geometry::BBox([0.0, 0.0, 639.0, 415.0]));
        assert_eq!(c, ScaleCounters { coords_clamped: 2, boxes_nudged: 0, polys_zero_area: 0 });
        // 2.5 rounds to 2 (ties to even), 3.5 to 4.
        let mut c = ScaleCounters::default();
        let g = scale(&Geometry::BBox([5.0, 7.0, 9.0, 9.0]), size(64, 64), size(32, 32), &mut c);
        assert_eq!(g, Geometry::BBox([2.0, 4.0, 4.0, 4.0 + 1.0]));
        assert_eq!(c.boxes_nudged, 1);
    }

    #[test]
    fn a_box_collapsed_on_the_far_edge_opens_inward() {
        assert_eq!(open_axis(31.0, 31.0, 31.0), (30.0, 31.0, true));
        assert_eq!(open_axis(3.0, 3.0, 31.0), (3.0, 4.0, true));
        assert_eq!(open_axis(3.0, 5.0, 31.0), (3.0, 5.0, false));
    }

    #[test]
    fn polygons_keep_their_vertex_order_and_flag_zero_area() {
        let poly = Polygon::new(vec![[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).unwrap();
        let mut c = ScaleCounters::default();
        let g = scale(&Geometry::Poly(poly), size(640, 640), size(64, 64), &mut c);
        assert_eq!(g.coords(), vec![0.0; 6]);
        assert_eq!(c.polys_zero_area, 1);
    }

    #[test]
    fn output_paths_stay_relative_under_images() {
        assert_eq!(output_path("images/train/a.jpg"), "images/train/a.jpg");
        assert_eq!(output_path("./val2017/a.jpg"), "images/val2017/a.jpg");
        assert_eq!(output_path("/data/coco/a.jpg"), "images/a.jpg");
        assert_eq!(output_path("../x/a.jpg"), "images/a.jpg");
    }
}
