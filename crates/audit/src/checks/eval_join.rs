//! `eval_join`: predictions can join every evaluation record by identity — ids are unique, and
//! records that share an image are told apart by an id (the image path alone cannot).

use crate::context::Ctx;
use crate::data::DataFile;
use crate::report::{Check, Finding};
use coordexp_core::geometry::ImageSize;
use coordexp_eval::preds::{GroundTruth, GtImage};
use serde_json::Value;
use std::collections::BTreeMap;

const REMEDY: &str = "give every record a unique \"id\" (a string or an integer): predictions join ground truth by id, else by image path — never by position";

pub(crate) fn run(ctx: &Ctx<'_>, files: &[DataFile]) -> Check {
    let c = Check::new(
        "eval_join",
        "Evaluation join by identity",
        "every evaluation record can be found by a prediction: ids are unique strings or integers, and records that share an image path each carry an id",
    );
    let Some(file) = files.iter().find(|f| f.is_eval()) else {
        let reason = if ctx.cfg.data.val.is_none() {
            "no val file: `data.val` is not set (and no --data file was given)"
        } else {
            "no evaluation file"
        };
        return c.skip(reason);
    };
    let Ok(contents) = &file.contents else {
        return c.skip(format!(
            "{} cannot be read (the records check reports why)",
            file.path.display()
        ));
    };
    let mut c = c;
    c.evidence.push(format!("{} `{}` ({})", file.role, file.path.display(), file.source));
    // The identities go through the evaluator's own index (`GroundTruth::push`, what
    // `GroundTruth::read` builds): a repeated id is its error.
    let mut gt = GroundTruth::default();
    let mut with_id = 0usize;
    // Identity is all the join needs; the size and objects of an index entry are not read.
    let Some(size) = ImageSize::new(1, 1) else {
        return c.skip("internal: no image size");
    };
    for row in &contents.identity {
        let id = match &row.id {
            None => None,
            Some(v) => match id_text(v) {
                Some(id) => Some(id),
                None => {
                    c.findings.push(
                        Finding::at(
                            file.at(row.line),
                            format!("`id` must be a string or an integer, got {v}"),
                        )
                        .hint("give every record a unique string or integer id, or none"),
                    );
                    continue;
                }
            },
        };
        with_id += usize::from(id.is_some());
        let img =
            GtImage { line: row.line, id, image: row.image.clone(), size, objects: Vec::new() };
        if let Err(e) = gt.push(img, &file.path) {
            let mut f = Finding::new(e.location().map(str::to_string), e.what());
            if let Some(h) = e.hint_text() {
                f = f.hint(h);
            }
            c.findings.push(f);
        }
    }
    let mut by_image: BTreeMap<&str, Vec<&GtImage>> = BTreeMap::new();
    for img in &gt.images {
        by_image.entry(img.image.as_str()).or_default().push(img);
    }
    let shared: Vec<&Vec<&GtImage>> = by_image.values().filter(|v| v.len() > 1).collect();
    for group in &shared {
        let lines: Vec<String> = group.iter().map(|g| g.line.to_string()).collect();
        for img in group.iter().filter(|g| g.id.is_none()) {
            c.findings.push(Finding::at(
                file.at(img.line),
                format!(
                    "image `{}` is shared by {} records (lines {}) and this one has no id: a prediction for it could not be joined",
                    img.image,
                    group.len(),
                    lines.join(", ")
                ),
            ));
        }
    }
    c.evidence.push(format!(
        "{} records (the whole file: identities must be unique across it), {with_id} with an id, {} distinct first images, {} images shared by several records",
        contents.identity.len(),
        by_image.len(),
        shared.len()
    ));
    if gt.multi_image_records() > 0 {
        c.warnings.push(format!(
            "{} records have several images: without an id they are identified by their first image",
            gt.multi_image_records()
        ));
    }
    c.conclude(
        "every record is identified uniquely (by id, else by image path)",
        |n| format!("{n} record(s) a prediction could not join"),
        REMEDY,
    )
}

/// An `"id"` as text, as the evaluator reads it (`coordexp_eval::preds::gt::id_text`, which the
/// crate does not export): strings as they are, integers in decimal, nothing else.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}
