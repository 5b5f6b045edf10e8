//! The data files under audit, read once: structural problems of every line, the image side of
//! every record the run uses, a bounded sample of whole records, and identities for the
//! evaluation join.

use crate::context::Ctx;
use coordexp_core::Error;
use coordexp_core::progress::Progress;
use coordexp_core::record::{Record, ValidationReport, validate_file_with};
use coordexp_data::images::RecordImages;
use serde_json::Value;
use std::path::PathBuf;

/// One data file of the audit.
pub(crate) struct DataFile {
    /// `train`, `val`, or `data` (a `--data` file).
    pub role: &'static str,
    pub path: PathBuf,
    /// Where the path comes from (`data.train = … (file:line)` or `--data`).
    pub source: String,
    /// The config's record limit for this file (`data.train_limit` / `data.val_limit`).
    pub limit: Option<(usize, &'static str)>,
    pub contents: Result<Contents, Error>,
}

/// What was read from a data file.
pub(crate) struct Contents {
    /// Structural problems of every line of the file (the trainer refuses a file with any).
    pub report: ValidationReport,
    /// The image side of every valid record the run uses (within the limit).
    pub images: Vec<RecordImages>,
    /// The first `sample_limit` valid records the run uses, with their lines.
    pub sample: Vec<(usize, Record)>,
    /// Valid records in the whole file.
    pub valid: usize,
    /// `(line, id, first image)` of every valid record (evaluation files only).
    pub identity: Vec<Identity>,
}

/// What a prediction can join a ground-truth record by.
pub(crate) struct Identity {
    pub line: usize,
    pub id: Option<Value>,
    pub image: String,
}

impl DataFile {
    /// `FILE:LINE` of a record of this file.
    pub fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.path.display())
    }

    /// True for the file the evaluation join applies to.
    pub fn is_eval(&self) -> bool {
        self.role != "train"
    }
}

/// The files to audit: `--data`, else `data.train` and `data.val`.
pub(crate) fn read_files(ctx: &Ctx<'_>) -> Vec<DataFile> {
    let mut files = Vec::new();
    if let Some(p) = &ctx.opts.data {
        files.push(read_file(ctx, "data", p.clone(), "--data".into(), None));
        return files;
    }
    let d = &ctx.cfg.data;
    if let Some(p) = &d.train {
        let limit = d.train_limit.map(|n| (n, "data.train_limit"));
        files.push(read_file(ctx, "train", p.clone(), ctx.describe("data.train"), limit));
    }
    if let Some(p) = &d.val {
        let limit = d.val_limit.map(|n| (n, "data.val_limit"));
        files.push(read_file(ctx, "val", p.clone(), ctx.describe("data.val"), limit));
    }
    files
}

fn read_file(
    ctx: &Ctx<'_>,
    role: &'static str,
    path: PathBuf,
    source: String,
    limit: Option<(usize, &'static str)>,
) -> DataFile {
    ctx.progress.note(&format!("reading {role} data {}", path.display()));
    let keep = limit.map_or(usize::MAX, |(n, _)| n);
    let sample_limit = ctx.opts.sample_limit;
    let want_identity = role != "train";
    let mut images = Vec::new();
    let mut sample = Vec::new();
    let mut identity = Vec::new();
    let mut valid = 0usize;
    let result = validate_file_with(&path, Progress::OFF, |line, record| {
        valid += 1;
        ctx.progress.tick("records read", valid, 0);
        if want_identity {
            identity.push(Identity {
                line,
                id: record.extra().get("id").cloned(),
                image: record.images().first().cloned().unwrap_or_default(),
            });
        }
        if images.len() < keep {
            if sample.len() < sample_limit {
                sample.push((line, record.clone()));
            }
            images.push(RecordImages::of(line, record));
        }
    });
    let contents = result.map(|report| Contents { report, images, sample, valid, identity });
    DataFile { role, path, source, limit, contents }
}
