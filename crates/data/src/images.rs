//! Image checks for `data validate --images`: does every record's image exist, and does it have
//! exactly the size the record claims, a multiple of 32, within the pixel budget?
//!
//! The size check is the "no meta-only rescale" rule: a record's `width`/`height` must describe
//! the file on disk, because images are never resized at training time — a record whose numbers
//! were edited without re-materialising its image would train on misplaced boxes. Only image
//! headers are read (`into_dimensions`), in parallel, so a 100k-record file checks in seconds.
//! Problems go into the same [`ValidationReport`] as the structural ones, with their own reasons.

use coordexp_core::geometry::ImageSize;
use coordexp_core::progress::Progress;
use coordexp_core::record::{Problem, Reason, Record, ValidationReport};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The side multiple the vision tower needs (16-pixel patches merged 2×2).
pub const SIDE_MULTIPLE: u32 = 32;

/// Resolve an image path from a record: relative paths are relative to the JSONL file's
/// directory, absolute ones are kept.
pub fn resolve_image(jsonl: &Path, image: &str) -> PathBuf {
    let image = Path::new(image);
    if image.is_absolute() {
        image.to_path_buf()
    } else {
        jsonl.parent().unwrap_or(Path::new("")).join(image)
    }
}

/// The image side of one valid record: its 1-based JSONL line, its image paths and its size
/// (kept instead of the whole record, so that checking a large file holds little memory).
#[derive(Debug, Clone)]
pub struct RecordImages {
    pub line: usize,
    pub images: Vec<String>,
    pub size: ImageSize,
}

impl RecordImages {
    /// The image side of `record`, found on `line`.
    pub fn of(line: usize, record: Record) -> Self {
        let (images, size, _, _) = record.into_parts();
        RecordImages { line, images, size }
    }
}

/// Check the images of `records`, which come from `report.file()`, in parallel, and push every
/// problem into `report` in line order. Returns the number of image files opened.
pub fn check_images(
    report: &mut ValidationReport,
    records: &[RecordImages],
    max_pixels: u64,
    progress: Progress,
) -> usize {
    let jsonl = report.file().to_path_buf();
    let task = progress.task("image headers", Some(records.len() as u64), "records");
    let per_record: Vec<Vec<Problem>> = records
        .par_iter()
        .map(|r| {
            let problems = check_record(&jsonl, r, max_pixels);
            task.inc(1);
            problems
        })
        .collect();
    task.finish();
    for (r, problems) in records.iter().zip(per_record) {
        for problem in problems {
            report.push(r.line, problem);
        }
    }
    records.iter().map(|r| r.images.len()).sum()
}

fn check_record(jsonl: &Path, r: &RecordImages, max_pixels: u64) -> Vec<Problem> {
    let (w, h) = (r.size.width(), r.size.height());
    let mut problems = Vec::new();
    for (field, side) in [("width", w), ("height", h)] {
        if !side.is_multiple_of(SIDE_MULTIPLE) {
            problems.push(Problem::new(
                field,
                Reason::NotMultipleOf32,
                format!("{side} is not a multiple of {SIDE_MULTIPLE}"),
            ));
        }
    }
    if r.size.pixels() > max_pixels {
        problems.push(Problem::new(
            "width",
            Reason::ExceedsMaxPixels,
            format!("{w}x{h} = {} pixels exceeds max_pixels {max_pixels}", r.size.pixels()),
        ));
    }
    for (i, image) in r.images.iter().enumerate() {
        let field = format!("images[{i}]");
        let path = resolve_image(jsonl, image);
        match read_dimensions(&path) {
            Ok((fw, fh)) if (fw, fh) != (w, h) => problems.push(Problem::new(
                field,
                Reason::ImageSizeMismatch,
                format!("{} is {fw}x{fh} on disk but the record says {w}x{h}", path.display()),
            )),
            Ok(_) => {}
            Err(HeaderError::Missing) => problems.push(
                Problem::new(
                    field,
                    Reason::ImageMissing,
                    format!("{} does not exist", path.display()),
                )
                .with_hint(
                    "relative image paths are resolved against the JSONL file's directory; \
                     fix the path or restore the file",
                ),
            ),
            Err(HeaderError::Unreadable(e)) => problems.push(Problem::new(
                field,
                Reason::ImageUnreadable,
                format!("cannot read the image header of {}: {e}", path.display()),
            )),
        }
    }
    problems
}

/// Why an image header could not be read.
pub(crate) enum HeaderError {
    Missing,
    Unreadable(String),
}

/// The true `(width, height)` of an image file, from its header only.
pub(crate) fn read_dimensions(path: &Path) -> Result<(u32, u32), HeaderError> {
    let reader = image::ImageReader::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => HeaderError::Missing,
        _ => HeaderError::Unreadable(e.to_string()),
    })?;
    let reader =
        reader.with_guessed_format().map_err(|e| HeaderError::Unreadable(e.to_string()))?;
    reader.into_dimensions().map_err(|e| HeaderError::Unreadable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(dir: &Path, name: &str, w: u32, h: u32) {
        image::RgbImage::new(w, h).save(dir.join(name)).unwrap();
    }

    fn check(dir: &Path, images: &[String], w: u32, h: u32) -> ValidationReport {
        let mut report = ValidationReport::new(dir.join("data.jsonl"));
        let r =
            RecordImages { line: 3, images: images.to_vec(), size: ImageSize::new(w, h).unwrap() };
        assert_eq!(check_images(&mut report, &[r], 786_432, Progress::OFF), images.len());
        report
    }

    fn reasons(report: &ValidationReport) -> Vec<(String, Reason)> {
        report.issues().iter().map(|i| (i.problem.path.clone(), i.problem.reason)).collect()
    }

    #[test]
    fn a_matching_image_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        png(dir.path(), "a.png", 64, 32);
        let report = check(dir.path(), &["a.png".into()], 64, 32);
        assert!(report.is_clean(), "{}", report.render());
    }

    #[test]
    fn a_record_size_that_disagrees_with_the_file_is_a_meta_only_rescale() {
        let dir = tempfile::tempdir().unwrap();
        png(dir.path(), "a.png", 64, 32);
        let report = check(dir.path(), &["a.png".into()], 64, 64);
        assert_eq!(reasons(&report), [("images[0]".to_string(), Reason::ImageSizeMismatch)]);
        let text = report.render();
        assert!(text.contains("data.jsonl:3: images[0]: "), "{text}");
        assert!(text.contains("64x32 on disk but the record says 64x64"), "{text}");
    }

    #[test]
    fn missing_and_unreadable_images_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("junk.png"), b"not an image").unwrap();
        let report = check(dir.path(), &["nope.png".into(), "junk.png".into()], 64, 64);
        assert_eq!(
            reasons(&report),
            [
                ("images[0]".to_string(), Reason::ImageMissing),
                ("images[1]".to_string(), Reason::ImageUnreadable)
            ]
        );
    }

    #[test]
    fn sizes_off_the_grid_or_over_budget_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        png(dir.path(), "a.png", 40, 64);
        let report = check(dir.path(), &["a.png".into()], 40, 64);
        assert_eq!(reasons(&report), [("width".to_string(), Reason::NotMultipleOf32)]);
        png(dir.path(), "b.png", 1024, 1024);
        let over = check(dir.path(), &["b.png".into()], 1024, 1024);
        assert_eq!(reasons(&over), [("width".to_string(), Reason::ExceedsMaxPixels)]);
    }

    #[test]
    fn relative_paths_resolve_against_the_jsonl_directory() {
        assert_eq!(
            resolve_image(Path::new("d/x.jsonl"), "images/a.png"),
            Path::new("d/images/a.png")
        );
        assert_eq!(resolve_image(Path::new("x.jsonl"), "a.png"), Path::new("a.png"));
        assert_eq!(resolve_image(Path::new("d/x.jsonl"), "/abs/a.png"), Path::new("/abs/a.png"));
    }
}
