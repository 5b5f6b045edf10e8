//! Dataset statistics for `coordexp data stats`: counts, class frequencies, box and image sizes,
//! and an estimate of the tokens each sample costs.
//!
//! **Token estimate.** Image tokens are exact for the model: `(W/32)·(H/32)` for the size the
//! image has after smart resize (its own size when it already conforms). Assistant text tokens
//! are an *estimate* of the desc-first CoordJSON answer under Qwen's byte-level BPE, whose
//! pre-tokenizer splits punctuation from spaces and never merges across a coordinate token:
//! - 6 for the container `{"objects": [` … `]}` and the closing `<|im_end|>`;
//! - per object, 12 for `{"desc": "`, `", "bbox_2d": [` (or `"poly"`) and `]}`, plus 1 for the
//!   `, ` between objects;
//! - per geometry, one token per coordinate and 2 per `, ` separator between coordinates
//!   (`,` and the space are separate pre-tokens next to a special token);
//! - per description word, `⌈bytes/7⌉` plus 1 for each ASCII punctuation character in it
//!   (common English words are one token; `bow_(weapon)` is about five).
//!
//! The estimate is meant for budgeting `packing.max_length`, not for exact packing; the
//! template-aware tokenizer gives exact counts.

use crate::images::SIDE_MULTIPLE;
use crate::resize::ResizePolicy;
use coordexp_core::Error;
use coordexp_core::geometry::ImageSize;
use coordexp_core::progress::Progress;
use coordexp_core::record::{Geometry, Objects, Record, RecordReader, file_task};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// Text tokens of the answer container and `<|im_end|>`.
const CONTAINER_TOKENS: usize = 6;
/// Text tokens of one object's keys and brackets, and of the separator before it.
const OBJECT_TOKENS: usize = 12;
const OBJECT_SEPARATOR_TOKENS: usize = 1;
/// Tokens per `, ` between two coordinates.
const COORD_SEPARATOR_TOKENS: usize = 2;
/// How many image sizes and classes the text rendering lists.
const TEXT_TOP: usize = 15;

/// Min / mean / percentiles / max of a sample (nearest-rank percentiles; all 0 when empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    fn of(mut values: Vec<f64>) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let rank = |p: f64| values[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Summary {
            count: n,
            min: values[0],
            mean: values.iter().sum::<f64>() / n as f64,
            p50: rank(0.5),
            p90: rank(0.9),
            p99: rank(0.99),
            max: values[n - 1],
        }
    }
}

/// One description's frequency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassCount {
    pub desc: String,
    pub objects: usize,
    /// Records with at least one object of this description.
    pub images: usize,
}

/// COCO's size buckets by box area in pixels: < 32², < 96², the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AreaBuckets {
    pub small: usize,
    pub medium: usize,
    pub large: usize,
}

/// Box extents in pixels (bin coordinates are mapped back to pixels with the record's size;
/// polygons count with their bounding box).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BoxSizes {
    pub width: Summary,
    pub height: Summary,
    /// Box area / image area.
    pub relative_area: Summary,
    pub coco_area: AreaBuckets,
}

/// Everything `coordexp data stats` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DatasetStats {
    pub file: PathBuf,
    pub records: usize,
    /// Records with no objects.
    pub records_empty: usize,
    pub records_pixel_coords: usize,
    pub records_bin_coords: usize,
    pub blank_lines: usize,
    pub objects: usize,
    pub bboxes: usize,
    pub polys: usize,
    /// Record count per number of objects.
    pub objects_per_image: BTreeMap<usize, usize>,
    pub objects_per_image_summary: Summary,
    /// Every description, most frequent first (ties by name).
    pub classes: Vec<ClassCount>,
    pub poly_vertices: Summary,
    pub box_sizes: BoxSizes,
    /// Record count per `WxH`, most frequent first (ties by size).
    pub image_sizes: Vec<(String, usize)>,
    pub image_pixels: Summary,
    /// Images whose size is not a multiple of 32 (their token counts use the smart-resize size).
    pub images_off_grid: usize,
    pub image_tokens: Summary,
    /// Estimated assistant-text tokens (see the module docs).
    pub text_tokens: Summary,
    pub total_tokens: Summary,
}

/// Compute the statistics of a JSONL file, streaming it. Fails on the first invalid record
/// (`FILE:LINE`); `coordexp data validate` lists every problem.
pub fn dataset_stats(path: &Path, progress: Progress) -> Result<DatasetStats, Error> {
    let mut acc = Accumulator::default();
    let mut reader = RecordReader::open(path)?;
    let task = file_task(progress, "stats", path);
    while let Some(item) = reader.next() {
        task.inc(reader.bytes_read().saturating_sub(task.done()));
        let (_, record) = item.map_err(|e| {
            e.or_hint(format!(
                "run `coordexp data validate {}` to list every problem",
                path.display()
            ))
        })?;
        acc.add(&record);
    }
    task.finish();
    Ok(acc.finish(path.to_path_buf(), reader.blank_lines()))
}

#[derive(Default)]
struct Accumulator {
    stats: DatasetStats,
    per_image: Vec<f64>,
    classes: HashMap<String, (usize, usize)>,
    poly_vertices: Vec<f64>,
    widths: Vec<f64>,
    heights: Vec<f64>,
    relative: Vec<f64>,
    sizes: HashMap<(u32, u32), usize>,
    pixels: Vec<f64>,
    image_tokens: Vec<f64>,
    text_tokens: Vec<f64>,
    total_tokens: Vec<f64>,
}

impl Accumulator {
    fn add(&mut self, record: &Record) {
        let s = &mut self.stats;
        let size = record.size();
        let objects = record.objects();
        s.records += 1;
        s.objects += objects.len();
        s.records_empty += usize::from(objects.is_empty());
        match objects {
            Objects::Pixels(v) if !v.is_empty() => s.records_pixel_coords += 1,
            Objects::Bins(v) if !v.is_empty() => s.records_bin_coords += 1,
            _ => {}
        }
        *s.objects_per_image.entry(objects.len()).or_default() += 1;
        self.per_image.push(objects.len() as f64);

        let mut seen = Vec::new();
        for desc in objects.descs() {
            let entry = self.classes.entry(desc.as_str().to_owned()).or_default();
            entry.0 += 1;
            if !seen.contains(&desc) {
                entry.1 += 1;
                seen.push(desc);
            }
        }
        let geometries: Vec<Geometry<f64>> = match objects {
            Objects::Pixels(v) => v.iter().map(|o| o.geometry.clone()).collect(),
            Objects::Bins(v) => v.iter().map(|o| o.geometry.dequantize(size)).collect(),
        };
        let mut text = CONTAINER_TOKENS;
        for (i, (g, desc)) in geometries.iter().zip(objects.descs()).enumerate() {
            match g {
                Geometry::BBox(_) => s.bboxes += 1,
                Geometry::Poly(p) => {
                    s.polys += 1;
                    self.poly_vertices.push(p.points().len() as f64);
                }
            }
            let b = g.bounding_box();
            let area = b.area();
            self.widths.push(b.width());
            self.heights.push(b.height());
            self.relative.push(area / size.pixels() as f64);
            match area {
                a if a < 32.0 * 32.0 => s.box_sizes.coco_area.small += 1,
                a if a < 96.0 * 96.0 => s.box_sizes.coco_area.medium += 1,
                _ => s.box_sizes.coco_area.large += 1,
            }
            let n = g.num_coords();
            text += OBJECT_TOKENS
                + usize::from(i > 0) * OBJECT_SEPARATOR_TOKENS
                + n
                + (n - 1) * COORD_SEPARATOR_TOKENS
                + desc_tokens(desc.as_str());
        }

        *self.sizes.entry((size.width(), size.height())).or_default() += 1;
        self.pixels.push(size.pixels() as f64);
        let on_grid = size.width().is_multiple_of(SIDE_MULTIPLE)
            && size.height().is_multiple_of(SIDE_MULTIPLE);
        s.images_off_grid += usize::from(!on_grid);
        let image = image_tokens(size) as f64;
        self.image_tokens.push(image);
        self.text_tokens.push(text as f64);
        self.total_tokens.push(image + text as f64);
    }

    fn finish(self, file: PathBuf, blank_lines: usize) -> DatasetStats {
        let mut classes: Vec<ClassCount> = self
            .classes
            .into_iter()
            .map(|(desc, (objects, images))| ClassCount { desc, objects, images })
            .collect();
        classes.sort_by(|a, b| b.objects.cmp(&a.objects).then_with(|| a.desc.cmp(&b.desc)));
        let mut sizes: Vec<((u32, u32), usize)> = self.sizes.into_iter().collect();
        sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut box_sizes = self.stats.box_sizes.clone();
        box_sizes.width = Summary::of(self.widths);
        box_sizes.height = Summary::of(self.heights);
        box_sizes.relative_area = Summary::of(self.relative);
        DatasetStats {
            file,
            blank_lines,
            objects_per_image_summary: Summary::of(self.per_image),
            classes,
            poly_vertices: Summary::of(self.poly_vertices),
            box_sizes,
            image_sizes: sizes.into_iter().map(|((w, h), n)| (format!("{w}x{h}"), n)).collect(),
            image_pixels: Summary::of(self.pixels),
            image_tokens: Summary::of(self.image_tokens),
            text_tokens: Summary::of(self.text_tokens),
            total_tokens: Summary::of(self.total_tokens),
            ..self.stats
        }
    }
}

/// Vision tokens of an image of `size` once smart-resized: `(W'/32)·(H'/32)`. A size the rule
/// refuses (aspect ratio above 200) is estimated from its own sides rounded up to 32.
pub fn image_tokens(size: ImageSize) -> u64 {
    let t = ResizePolicy::default().target(size).unwrap_or(size);
    u64::from(t.width().div_ceil(SIDE_MULTIPLE)) * u64::from(t.height().div_ceil(SIDE_MULTIPLE))
}

/// Estimated tokens of a description (see the module docs).
fn desc_tokens(desc: &str) -> usize {
    desc.split_whitespace()
        .map(|w| w.len().div_ceil(7) + w.bytes().filter(u8::is_ascii_punctuation).count())
        .sum()
}

impl fmt::Display for DatasetStats {
    /// A compact human-readable summary (the JSON form has everything).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |s: &Summary| {
            format!(
                "min {:.0}  mean {:.1}  p50 {:.0}  p90 {:.0}  p99 {:.0}  max {:.0}",
                s.min, s.mean, s.p50, s.p90, s.p99, s.max
            )
        };
        writeln!(f, "{}", self.file.display())?;
        writeln!(
            f,
            "records {}  (empty {}, pixel coords {}, bin coords {}, blank lines {})",
            self.records,
            self.records_empty,
            self.records_pixel_coords,
            self.records_bin_coords,
            self.blank_lines
        )?;
        writeln!(f, "objects {}  (bbox_2d {}, poly {})", self.objects, self.bboxes, self.polys)?;
        writeln!(f, "objects per image: {}", line(&self.objects_per_image_summary))?;
        let hist: Vec<String> =
            self.objects_per_image.iter().map(|(k, n)| format!("{k}:{n}")).collect();
        writeln!(f, "  histogram {}", hist.join(" "))?;
        writeln!(f, "classes {} (top {TEXT_TOP}):", self.classes.len())?;
        for c in self.classes.iter().take(TEXT_TOP) {
            writeln!(f, "  {:<28} {:>8} objects {:>8} images", c.desc, c.objects, c.images)?;
        }
        let b = &self.box_sizes;
        writeln!(f, "box width px:  {}", line(&b.width))?;
        writeln!(f, "box height px: {}", line(&b.height))?;
        writeln!(
            f,
            "box area / image: min {:.4}  p50 {:.4}  max {:.4};  COCO small {} medium {} large {}",
            b.relative_area.min,
            b.relative_area.p50,
            b.relative_area.max,
            b.coco_area.small,
            b.coco_area.medium,
            b.coco_area.large
        )?;
        let sizes: Vec<String> =
            self.image_sizes.iter().take(TEXT_TOP).map(|(s, n)| format!("{s}:{n}")).collect();
        writeln!(
            f,
            "image sizes {} distinct, {} off the 32 grid; most common {}",
            self.image_sizes.len(),
            self.images_off_grid,
            sizes.join(" ")
        )?;
        writeln!(f, "image tokens:          {}", line(&self.image_tokens))?;
        writeln!(f, "text tokens (est.):    {}", line(&self.text_tokens))?;
        write!(f, "total tokens (est.):   {}", line(&self.total_tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_of(lines: &[&str]) -> DatasetStats {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        dataset_stats(&path, Progress::OFF).unwrap()
    }

    #[test]
    fn counts_classes_histograms_and_buckets() {
        let s = stats_of(&[
            r#"{"images": ["a.png"], "width": 128, "height": 64, "objects": [{"desc": "red circle", "bbox_2d": [0, 0, 10, 10]}, {"desc": "red circle", "bbox_2d": [0, 0, 64, 64]}]}"#,
            r#"{"images": ["b.png"], "width": 100, "height": 100, "objects": []}"#,
            "",
            r#"{"images": ["c.png"], "width": 999, "height": 999, "objects": [{"desc": "tree", "poly": ["<|coord_0|>", "<|coord_0|>", "<|coord_999|>", "<|coord_0|>", "<|coord_0|>", "<|coord_999|>"]}]}"#,
        ]);
        assert_eq!((s.records, s.records_empty, s.blank_lines, s.objects), (3, 1, 1, 3));
        assert_eq!((s.records_pixel_coords, s.records_bin_coords), (1, 1));
        assert_eq!((s.bboxes, s.polys), (2, 1));
        assert_eq!(s.objects_per_image, BTreeMap::from([(0, 1), (1, 1), (2, 1)]));
        assert_eq!(s.classes[0], ClassCount { desc: "red circle".into(), objects: 2, images: 1 });
        assert_eq!(s.box_sizes.coco_area, AreaBuckets { small: 1, medium: 1, large: 1 });
        assert_eq!(s.box_sizes.width.max, 998.0, "bins map back to pixels with (W-1)");
        assert_eq!(s.images_off_grid, 2);
        assert_eq!(s.image_sizes[0].1, 1);
    }

    #[test]
    fn image_tokens_follow_the_resized_size() {
        assert_eq!(image_tokens(ImageSize::new(640, 480).unwrap()), 300);
        assert_eq!(image_tokens(ImageSize::new(1280, 960).unwrap()), 768);
        assert_eq!(image_tokens(ImageSize::new(640, 427).unwrap()), 260);
    }

    #[test]
    fn text_token_estimate_counts_structure_coordinates_and_words() {
        let s = stats_of(&[
            r#"{"images": ["a.png"], "width": 64, "height": 64, "objects": [{"desc": "red circle", "bbox_2d": [0, 0, 10, 10]}]}"#,
        ]);
        // container 6 + object 12 + 4 coords + 3·2 separators + 2 words.
        assert_eq!(s.text_tokens.max, 30.0);
        assert_eq!(desc_tokens("bow_(weapon)"), 5);
        assert_eq!(desc_tokens("traffic light"), 2);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let s = Summary::of((1..=100).map(f64::from).collect());
        assert_eq!(
            (s.min, s.p50, s.p90, s.p99, s.max, s.mean),
            (1.0, 50.0, 90.0, 99.0, 100.0, 50.5)
        );
        assert_eq!(Summary::of(vec![]), Summary::default());
    }

    #[test]
    fn an_invalid_record_fails_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(&path, "{\"images\": []}\n").unwrap();
        let err = dataset_stats(&path, Progress::OFF).unwrap_err();
        assert!(err.location().unwrap().ends_with("d.jsonl:1"), "{err}");
    }
}
