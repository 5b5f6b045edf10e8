//! Datasets for training, evaluation and prediction: records checked, kept in memory with their
//! pixels, and encoded as training samples.
//!
//! Why everything is checked before the first step: a missing image, an image whose size is not
//! the record's, or one above the pixel budget would otherwise stop a run hours in. All records
//! of a split are checked (image headers, in parallel) and every problem is reported together,
//! as `FILE:LINE: field: message` with a remedy, before any model is loaded.
//!
//! Why samples are encoded once: the chat template, tokenization, labels and mRoPE positions of a
//! record do not change between epochs when objects keep their canonical order, so the encoded
//! sample is cached (`prompt.object_ordering: random` re-encodes each epoch with the objects
//! shuffled by the sample seed). Pixels are kept as RGB bytes (a quarter of the float patches)
//! and patchified per batch.

use coordexp_core::config::schema::{FieldOrder, ObjectOrdering};
use coordexp_core::geometry::ImageSize;
use coordexp_core::progress::Progress;
use coordexp_core::record::{
    Object, Objects, Record, ValidationReport, read_record_at, read_records,
};
use coordexp_core::{Error, Result, seed};
use coordexp_data::images::{RecordImages, check_images, resolve_image};
use coordexp_text::{Answer, EncodedSample, Encoder, Turn};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// One image's pixels, `height·width·3` RGB bytes.
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// One record of a split, with what training and evaluation need of it.
pub struct Item {
    /// 1-based line in the JSONL file (errors and NaN reports name it).
    pub line: usize,
    pub record: Record,
    pub pixels: Vec<Pixels>,
}

impl Item {
    pub fn sizes(&self) -> Vec<ImageSize> {
        vec![self.record.size(); self.record.images().len()]
    }
}

/// A split (train or val) loaded and checked.
pub struct Split {
    pub role: &'static str,
    pub path: PathBuf,
    pub items: Vec<Item>,
}

impl Split {
    /// Read the first `limit` records of `path`, check their images against the records and the
    /// pixel budget, and load the pixels. Every problem of the split is reported at once.
    pub fn load(
        role: &'static str,
        path: &Path,
        limit: Option<usize>,
        max_pixels: u64,
    ) -> Result<Split> {
        let mut records = read_checked(role, path)?;
        if let Some(n) = limit {
            records.truncate(n);
        }
        Self::from_records(role, path, records, max_pixels)
    }

    /// The record on 1-based line `line` of `path` alone, checked and loaded like [`Split::load`].
    pub fn load_line(path: &Path, line: usize, max_pixels: u64) -> Result<Split> {
        let record = read_record_at(path, line)?;
        Self::from_records("data", path, vec![(line, record)], max_pixels)
    }

    fn from_records(
        role: &'static str,
        path: &Path,
        records: Vec<(usize, Record)>,
        max_pixels: u64,
    ) -> Result<Split> {
        if records.is_empty() {
            return Err(Error::input(format!("the {role} set {} has no records", path.display()))
                .hint("point data.train / data.val at a JSONL file with at least one record"));
        }
        let mut report = ValidationReport::new(path);
        let sides: Vec<RecordImages> =
            records.iter().map(|(line, r)| RecordImages::of(*line, r.clone())).collect();
        check_images(&mut report, &sides, max_pixels, Progress::OFF);
        if !report.is_clean() {
            let errors: Vec<Error> = report
                .issues()
                .iter()
                .map(|issue| {
                    Error::input(issue.problem.describe())
                        .at(format!("{}:{}", path.display(), issue.line))
                        .hint(issue.problem.hint.clone())
                })
                .collect();
            return Err(Error::many(errors)
                .unwrap_or_else(|| Error::input(report.summary()))
                .or_hint("fix or drop these records before training"));
        }
        let items = records
            .into_par_iter()
            .map(|(line, record)| {
                let pixels = record
                    .images()
                    .iter()
                    .map(|image| read_rgb(&resolve_image(path, image)))
                    .collect::<Result<Vec<_>>>()
                    .map_err(|e| e.at(format!("{}:{line}", path.display())))?;
                Ok(Item { line, record, pixels })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Split { role, path: path.to_path_buf(), items })
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Where record `i` comes from, as `FILE:LINE`.
    pub fn location(&self, i: usize) -> String {
        format!("{}:{}", self.path.display(), self.items[i].line)
    }

    /// Encode every record as a training sample. With `ordering: random`, the objects of record
    /// `i` are shuffled with `sample_seed(epoch_seed, i)`; with `sorted` they keep file order.
    pub fn encode_train(
        &self,
        encoder: &Encoder,
        order: FieldOrder,
        ordering: ObjectOrdering,
        epoch_seed: u64,
    ) -> Result<Vec<EncodedSample>> {
        self.items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = || self.location(i);
                let answer = answer_for(&item.record, order, ordering, epoch_seed, i as u64)
                    .map_err(|e| e.at(at()))?;
                encoder.encode(&item.sizes(), Turn::Train(&answer)).map_err(|e| e.at(at()))
            })
            .collect()
    }
}

fn read_checked(role: &str, path: &Path) -> Result<Vec<(usize, Record)>> {
    read_records(path).map_err(|e| {
        e.or_hint(format!("fix the {role} data (check it with `coordexp data validate`)"))
    })
}

/// The training answer of a record (objects shuffled when `ordering` is random).
fn answer_for(
    record: &Record,
    order: FieldOrder,
    ordering: ObjectOrdering,
    epoch_seed: u64,
    index: u64,
) -> Result<Answer> {
    match ordering {
        ObjectOrdering::Sorted => Answer::from_record(record, order),
        ObjectOrdering::Random => {
            let binned = record.to_bins().map_err(|p| Error::input(p.describe()))?;
            let Objects::Bins(objects) = binned.objects() else {
                return Err(Error::runtime(
                    "record still has pixel coordinates after quantization",
                ));
            };
            let mut objects: Vec<Object<_>> = objects.clone();
            shuffle(&mut objects, seed::sample_seed(epoch_seed, index));
            Answer::from_objects(&objects, order)
        }
    }
}

/// Fisher–Yates driven by the seed's SplitMix64 stream.
fn shuffle<T>(items: &mut [T], seed: u64) {
    seed::SplitMix64::new(seed).shuffle(items);
}

fn read_rgb(path: &Path) -> Result<Pixels> {
    let img = image::open(path)
        .map_err(|e| {
            Error::input(format!("cannot decode image {}: {e}", path.display()))
                .hint("re-encode the image as PNG or JPEG")
        })?
        .to_rgb8();
    let (width, height) = img.dimensions();
    Ok(Pixels { width, height, rgb: img.into_raw() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mut a: Vec<u32> = (0..10).collect();
        let mut b = a.clone();
        shuffle(&mut a, 5);
        shuffle(&mut b, 5);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let mut c: Vec<u32> = (0..10).collect();
        shuffle(&mut c, 6);
        assert_ne!(a, c);
    }
}
