//! Ground truth for `eval preds`: JSONL records indexed by identity.
//!
//! A record's identity is its `"id"` (a string or an integer) when present, else its image path.
//! Predictions find their ground truth through these indices only — never by position — so an
//! image with empty ground truth cannot shift the predictions after it (the reference evaluator's
//! defect).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

use coordexp_core::geometry::{ImageSize, PixelBox};
use coordexp_core::record::{Objects, Record, RecordReader};
use coordexp_core::{Error, Result};
use serde_json::Value;
use std::borrow::Borrow;

/// One ground-truth object: its pixel box (polygons by their bounding box) and description.
#[derive(Debug, Clone, PartialEq)]
pub struct GtObject {
    pub bbox: PixelBox,
    pub desc: String,
}

/// One ground-truth record.
#[derive(Debug, Clone, PartialEq)]
pub struct GtImage {
    /// 1-based line in the GT file.
    pub line: usize,
    /// The record's `"id"`, as text, when it has one.
    pub id: Option<String>,
    /// The first image path (records with several images are counted in
    /// [`GroundTruth::multi_image_records`]).
    pub image: String,
    pub size: ImageSize,
    pub objects: Vec<GtObject>,
}

/// Where a lookup by image path leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByImage {
    One(usize),
    /// Several records share the path; only an `"id"` can pick one.
    Several,
}

/// All ground-truth records with their identity indices.
#[derive(Debug, Clone, Default)]
pub struct GroundTruth {
    pub images: Vec<GtImage>,
    by_id: HashMap<String, usize>,
    by_image: HashMap<String, ByImage>,
    multi_image_records: usize,
}

/// An `"id"` as text: strings as they are, integers in decimal. Other JSON values are not ids.
pub fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

impl GroundTruth {
    /// Read and validate every record (the first invalid line is an error at `FILE:LINE`).
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_records(path, RecordReader::open(path)?)
    }

    /// Index in-memory records (`(line, record)` as read from `path`, which names them in
    /// errors): the trainer's validation records, with no file round trip.
    pub fn from_records<R: Borrow<Record>>(
        path: &Path,
        records: impl IntoIterator<Item = Result<(usize, R)>>,
    ) -> Result<Self> {
        let mut gt = GroundTruth::default();
        for item in records {
            let (line, record) = item?;
            let record = record.borrow();
            let at = || format!("{}:{line}", path.display());
            let id = match record.extra().get("id") {
                None => None,
                Some(v) => Some(id_text(v).ok_or_else(|| {
                    Error::input(format!("`id` must be a string or an integer, got {v}"))
                        .at(at())
                        .hint("give every record a unique string or integer id, or none")
                })?),
            };
            let size = record.size();
            let objects = match record.objects() {
                Objects::Pixels(v) => v
                    .iter()
                    .map(|o| GtObject {
                        bbox: o.geometry.bounding_box(),
                        desc: o.desc.as_str().to_owned(),
                    })
                    .collect(),
                Objects::Bins(v) => v
                    .iter()
                    .map(|o| GtObject {
                        bbox: o.geometry.dequantize(size).bounding_box(),
                        desc: o.desc.as_str().to_owned(),
                    })
                    .collect(),
            };
            let images = record.images();
            if images.len() > 1 {
                gt.multi_image_records += 1;
            }
            let image = images.first().cloned().unwrap_or_default();
            gt.push(GtImage { line, id, image, size, objects }, path)?;
        }
        Ok(gt)
    }

    /// Add a record, rejecting a repeated `"id"` (a join on it would be ambiguous).
    pub fn push(&mut self, img: GtImage, path: &Path) -> Result<()> {
        let index = self.images.len();
        if let Some(id) = &img.id {
            match self.by_id.entry(id.clone()) {
                Entry::Occupied(e) => {
                    let first = self.images[*e.get()].line;
                    return Err(Error::input(format!(
                        "ground-truth id `{id}` repeats the record on line {first}"
                    ))
                    .at(format!("{}:{}", path.display(), img.line))
                    .hint("ids must be unique: predictions are joined to ground truth by id"));
                }
                Entry::Vacant(e) => {
                    e.insert(index);
                }
            }
        }
        self.by_image
            .entry(img.image.clone())
            .and_modify(|b| *b = ByImage::Several)
            .or_insert(ByImage::One(index));
        self.images.push(img);
        Ok(())
    }

    /// The record with `"id"` `id`.
    pub fn by_id(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The record(s) whose first image is `image`.
    pub fn by_image(&self, image: &str) -> Option<ByImage> {
        self.by_image.get(image).copied()
    }

    /// Records with more than one image (identified by their first image unless they have an id).
    pub fn multi_image_records(&self) -> usize {
        self.multi_image_records
    }
}
