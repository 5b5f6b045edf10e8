//! `eval preds`: raw model predictions against JSONL ground truth.
//!
//! 1. The ground truth is read and indexed by identity ([`gt`]).
//! 2. Each prediction line ([`input`]) is joined to its ground-truth record by `"id"` or
//!    `"image"` — never by position. Unknown identities and ground truth without a prediction
//!    are counted and listed; the latter are scored with no predictions. Two prediction lines
//!    for one record, or a path shared by several records without ids, are input errors.
//! 3. Text answers are parsed with the CoordJSON salvage parser; bins become pixels as
//!    `k/999·(W−1)` with the ground-truth record's size, without rounding.
//! 4. Descriptions map to categories ([`crate::mapping`]); scores are the objects' `score`, a
//!    text line's `object_scores` (one per kept object, in order), or 1.0.
//! 5. COCO AP/AR (hotcoco, bbox) and F1 at IoU thresholds ([`crate::f1`]) are computed, and
//!    everything is collected in a [`PredsReport`], per-image rows and COCO results.

mod gt;
mod input;
mod report;

pub use gt::{ByImage, GroundTruth, GtImage, GtObject};
pub use input::{
    Identity, ObjectDrop, Payload, PixelObject, PredLine, read_line, read_object, read_value,
};
pub use report::{
    AnswerStatus, DescCount, ImageCounts, MAX_EXAMPLES, ParseCounts, PerImage, PredsReport,
    ScoreSource, UnmappedReport,
};

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use coordexp_core::coordjson::parse_salvage;
use coordexp_core::geometry::ImageSize;
use coordexp_core::progress::Progress;
use coordexp_core::record::file_task;
use coordexp_core::{Error, Result};
use hotcoco::{Annotation, Category, Dataset, Image};
use serde::Serialize;

use crate::coco::{CocoSummary, IouKind, evaluate_datasets};
use crate::f1::{Candidate, CategoryRule, Counts, ImageMatcher, IouThreshold};
use crate::mapping::{Categories, DescMapper, LexicalMapper, MappingStats, Synonyms};

/// What `eval preds` is asked to compute.
#[derive(Debug, Clone)]
pub struct PredsOptions {
    /// F1 thresholds (sorted, unique).
    pub thresholds: Vec<IouThreshold>,
    /// A fixed category list; `None` = the distinct ground-truth descriptions.
    pub categories: Option<(Categories, String)>,
    /// How many unmapped descriptions the report lists.
    pub top_unmapped: usize,
}

/// One entry of the COCO results file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CocoResult {
    pub image_id: u64,
    pub category_id: u64,
    /// `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    pub score: f64,
}

/// Everything `eval preds` produces.
#[derive(Debug, Clone)]
pub struct PredsEvaluation {
    pub report: PredsReport,
    pub coco: CocoSummary,
    pub per_image: Vec<PerImage>,
    /// COCO detections; `image_id` is the ground-truth record's 1-based position, the same ids
    /// the evaluation used.
    pub coco_results: Vec<CocoResult>,
}

/// A predicted object ready for scoring.
#[derive(Debug, Clone)]
struct PredObject {
    desc: String,
    candidate: Candidate,
    score: Option<f64>,
}

/// A joined prediction line, decoded.
#[derive(Debug, Clone)]
struct Joined {
    line: usize,
    status: AnswerStatus,
    objects: Vec<PredObject>,
    dropped: u64,
}

/// One line of a predictions source, as the join engine consumes it.
pub enum PredSource {
    /// A blank line (counted, not an error).
    Blank,
    /// Line `line` (1-based): a readable prediction, or why it is not one.
    Line { line: usize, parsed: std::result::Result<PredLine, String> },
}

/// Evaluate the predictions in `pred_path` against the ground truth in `gt_path` (a thin
/// wrapper: both files are read, then [`evaluate_lines`] scores them).
pub fn evaluate(gt_path: &Path, pred_path: &Path, opts: &PredsOptions) -> Result<PredsEvaluation> {
    evaluate_with(gt_path, pred_path, opts, Progress::OFF)
}

/// [`evaluate`], showing `progress` over the bytes of the predictions file.
pub fn evaluate_with(
    gt_path: &Path,
    pred_path: &Path,
    opts: &PredsOptions,
    progress: Progress,
) -> Result<PredsEvaluation> {
    let gt = GroundTruth::read(gt_path)?;
    let file =
        File::open(pred_path).map_err(|e| Error::io("open the predictions", pred_path, &e))?;
    let task = file_task(progress, "eval", pred_path);
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut line_no = 0usize;
    let mut buf = String::new();
    let lines = std::iter::from_fn(|| {
        buf.clear();
        match reader.read_line(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                task.inc(n as u64);
                line_no += 1;
                let text = buf.trim();
                Some(Ok(if text.is_empty() {
                    PredSource::Blank
                } else {
                    PredSource::Line { line: line_no, parsed: read_line(text) }
                }))
            }
            Err(e) => Some(Err(Error::input(format!("cannot read the predictions: {e}"))
                .at(format!("{}:{}", pred_path.display(), line_no + 1))
                .hint("the file must be UTF-8 JSONL, one prediction object per line"))),
        }
    });
    let out = evaluate_lines(&gt, gt_path, pred_path, lines, opts);
    task.finish();
    out
}

/// Evaluate in-memory predictions (prediction `i` plays line `i + 1`) against in-memory ground
/// truth: the trainer's periodic evaluation, with no file round trip. `gt_label` and
/// `pred_label` name the sources in the report's examples.
pub fn evaluate_in_memory(
    gt: &GroundTruth,
    gt_label: &Path,
    pred_label: &Path,
    preds: Vec<PredLine>,
    opts: &PredsOptions,
) -> Result<PredsEvaluation> {
    let lines = preds
        .into_iter()
        .enumerate()
        .map(|(i, p)| Ok(PredSource::Line { line: i + 1, parsed: Ok(p) }));
    evaluate_lines(gt, gt_label, pred_label, lines, opts)
}

/// The scoring engine: join every prediction line to its ground truth by identity, decode,
/// map descriptions, and compute COCO AP/AR and F1.
pub fn evaluate_lines(
    gt: &GroundTruth,
    gt_path: &Path,
    pred_path: &Path,
    lines: impl Iterator<Item = Result<PredSource>>,
    opts: &PredsOptions,
) -> Result<PredsEvaluation> {
    let (categories, categories_source) = match &opts.categories {
        Some((c, source)) => (c.clone(), source.clone()),
        None => (
            Categories::from_names(
                gt.images.iter().flat_map(|i| i.objects.iter().map(|o| o.desc.as_str())),
            ),
            "gt_descs".to_owned(),
        ),
    };
    let mapper = LexicalMapper::new(categories, Synonyms::builtin()?);
    let mut unmapped = UnmappedReport {
        categories_source,
        categories: mapper.categories().len() as u64,
        collisions: mapper
            .collisions()
            .iter()
            .map(|(k, ids)| {
                (k.clone(), ids.iter().map(|&id| mapper.categories().name(id).to_owned()).collect())
            })
            .collect(),
        ..UnmappedReport::default()
    };

    // Ground-truth candidates, with categories from the same mapper.
    let mut gt_unmapped = MappingStats::default();
    let gt_candidates: Vec<Vec<Candidate>> = gt
        .images
        .iter()
        .map(|img| {
            img.objects
                .iter()
                .map(|o| {
                    let m = mapper.map(&o.desc);
                    if m.is_none() {
                        gt_unmapped.record(&o.desc, None);
                    }
                    Candidate { bbox: o.bbox, category: m.map(|m| m.category) }
                })
                .collect()
        })
        .collect();
    unmapped.gt_unmapped = gt_unmapped.unmapped_total();
    unmapped.gt_unmapped_top = desc_counts(&gt_unmapped, opts.top_unmapped);

    let mut images = ImageCounts {
        gt: gt.images.len() as u64,
        multi_image_records: gt.multi_image_records() as u64,
        gt_objects: gt_candidates.iter().map(|v| v.len() as u64).sum(),
        ..ImageCounts::default()
    };
    let mut parse = ParseCounts::default();
    let mut mapping = MappingStats::default();
    let joined =
        join_predictions(gt, pred_path, lines, &mapper, &mut mapping, &mut images, &mut parse)?;

    unmapped.mapped_exact = mapping.mapped_by(crate::mapping::MatchRule::Exact);
    unmapped.mapped_normalized = mapping.mapped_by(crate::mapping::MatchRule::Normalized);
    unmapped.mapped_synonym = mapping.mapped_by(crate::mapping::MatchRule::Synonym);
    unmapped.total = mapping.unmapped_total();
    unmapped.distinct = mapping.unmapped_distinct() as u64;
    unmapped.top = desc_counts(&mapping, opts.top_unmapped);

    // Score every ground-truth image; build the COCO inputs on the way.
    let keys: Vec<String> = opts.thresholds.iter().map(ToString::to_string).collect();
    let mut f1_total = vec![Counts::default(); keys.len()];
    let mut f1_agnostic_total = vec![Counts::default(); keys.len()];
    let mut per_image = Vec::with_capacity(gt.images.len());
    let mut coco_gt = Dataset {
        categories: mapper
            .categories()
            .iter()
            .map(|(id, name)| Category {
                id: id.get(),
                name: name.to_owned(),
                ..Category::default()
            })
            .collect(),
        ..Dataset::default()
    };
    let mut coco_results = Vec::new();
    let (mut with_score, mut without_score) = (0u64, 0u64);
    let no_objects = Vec::new();
    for (index, (img, gts)) in gt.images.iter().zip(&gt_candidates).enumerate() {
        let image_id = index as u64 + 1;
        coco_gt.images.push(Image {
            id: image_id,
            file_name: img.image.clone(),
            width: img.size.width(),
            height: img.size.height(),
            ..Image::default()
        });
        for c in gts {
            if let Some(cat) = c.category {
                let [x, y, w, h] = xywh(c);
                coco_gt.annotations.push(Annotation {
                    id: coco_gt.annotations.len() as u64 + 1,
                    image_id,
                    category_id: cat.get(),
                    bbox: Some([x, y, w, h]),
                    area: Some(w * h),
                    ..Annotation::default()
                });
            }
        }
        let pred = joined[index].as_ref();
        let objects = pred.map_or(&no_objects, |j| &j.objects);
        for o in objects {
            match o.score {
                Some(_) => with_score += 1,
                None => without_score += 1,
            }
            if let Some(cat) = o.candidate.category {
                coco_results.push(CocoResult {
                    image_id,
                    category_id: cat.get(),
                    bbox: xywh(&o.candidate),
                    score: o.score.unwrap_or(1.0),
                });
            }
        }
        let preds: Vec<Candidate> = objects.iter().map(|o| o.candidate).collect();
        let matcher = ImageMatcher::new(&preds, gts);
        let mut row_f1 = BTreeMap::new();
        let mut row_agnostic = BTreeMap::new();
        for (k, (t, key)) in opts.thresholds.iter().zip(&keys).enumerate() {
            let aware = matcher.counts(*t, CategoryRule::SameCategory)?;
            let agnostic = matcher.counts(*t, CategoryRule::Agnostic)?;
            f1_total[k].add(aware);
            f1_agnostic_total[k].add(agnostic);
            row_f1.insert(key.clone(), aware);
            row_agnostic.insert(key.clone(), agnostic);
        }
        if pred.is_none() && images.without_prediction_examples.len() < MAX_EXAMPLES {
            images.without_prediction_examples.push(format!(
                "{}:{} ({})",
                gt_path.display(),
                img.line,
                display_identity(img)
            ));
        }
        per_image.push(PerImage {
            gt_line: img.line,
            id: img.id.clone(),
            image: img.image.clone(),
            pred_line: pred.map(|j| j.line),
            status: pred.map_or(AnswerStatus::Missing, |j| j.status),
            gt: gts.len() as u64,
            pred: preds.len() as u64,
            dropped: pred.map_or(0, |j| j.dropped),
            unmapped: preds.iter().filter(|c| c.category.is_none()).count() as u64,
            f1: row_f1,
            f1_agnostic: row_agnostic,
        });
    }
    images.with_prediction = joined.iter().filter(|j| j.is_some()).count() as u64;
    images.without_prediction = images.gt - images.with_prediction;

    let detections: Vec<Annotation> = coco_results
        .iter()
        .map(|r| Annotation {
            image_id: r.image_id,
            category_id: r.category_id,
            bbox: Some(r.bbox),
            score: Some(r.score),
            ..Annotation::default()
        })
        .collect();
    let coco = evaluate_datasets(coco_gt, detections, IouKind::Bbox)?;

    let report = PredsReport {
        images,
        coco: coco.to_json(),
        f1: keys.iter().cloned().zip(f1_total.iter().map(Counts::summary)).collect(),
        f1_agnostic: keys
            .iter()
            .cloned()
            .zip(f1_agnostic_total.iter().map(Counts::summary))
            .collect(),
        parse,
        unmapped,
        score_source: ScoreSource::from_counts(with_score, without_score),
        predictions_with_score: with_score,
        predictions_without_score: without_score,
    };
    Ok(PredsEvaluation { report, coco, per_image, coco_results })
}

/// Join every prediction line to its ground-truth record and decode it.
fn join_predictions(
    gt: &GroundTruth,
    path: &Path,
    lines: impl Iterator<Item = Result<PredSource>>,
    mapper: &LexicalMapper,
    mapping: &mut MappingStats,
    images: &mut ImageCounts,
    parse: &mut ParseCounts,
) -> Result<Vec<Option<Joined>>> {
    let mut joined: Vec<Option<Joined>> = vec![None; gt.images.len()];
    // Each distinct description is mapped once.
    let mut mapped: HashMap<String, Option<crate::mapping::Mapped>> = HashMap::new();
    for source in lines {
        let (line_no, parsed) = match source? {
            PredSource::Blank => {
                parse.blank_lines += 1;
                continue;
            }
            PredSource::Line { line, parsed } => (line, parsed),
        };
        parse.lines += 1;
        let at = format!("{}:{line_no}", path.display());
        let line = match parsed {
            Ok(l) => l,
            Err(why) => {
                parse.invalid_lines += 1;
                if parse.invalid_examples.len() < MAX_EXAMPLES {
                    parse.invalid_examples.push(format!("{at}: {why}"));
                }
                continue;
            }
        };
        let Some(index) = resolve(gt, &line.identity, &at)? else {
            images.unknown += 1;
            if images.unknown_examples.len() < MAX_EXAMPLES {
                images.unknown_examples.push(format!("{at} ({})", line.identity));
            }
            continue;
        };
        if let Some(first) = &joined[index] {
            return Err(Error::input(format!(
                "a second prediction for the ground-truth record on line {} ({}); the first is on line {}",
                gt.images[index].line,
                line.identity,
                first.line
            ))
            .at(at)
            .hint("give exactly one prediction line per image"));
        }
        let size = gt.images[index].size;
        if line
            .size
            .is_some_and(|(w, h)| (w, h) != (u64::from(size.width()), u64::from(size.height())))
        {
            parse.size_mismatch += 1;
        }
        let is_text = matches!(line.payload, Payload::Text(_));
        let mut decoded = decode(line.payload, size, parse);
        if let Some(scores) = &line.object_scores {
            if is_text && scores.len() == decoded.objects.len() {
                for (o, s) in decoded.objects.iter_mut().zip(scores) {
                    o.score = Some(*s);
                }
            } else {
                parse.object_scores_ignored += 1;
            }
        }
        for o in &mut decoded.objects {
            let m = *mapped.entry(o.desc.clone()).or_insert_with(|| mapper.map(&o.desc));
            mapping.record(&o.desc, m);
            o.candidate.category = m.map(|m| m.category);
        }
        parse.objects_kept += decoded.objects.len() as u64;
        images.pred_objects += decoded.objects.len() as u64;
        decoded.line = line_no;
        joined[index] = Some(decoded);
    }
    Ok(joined)
}

/// The ground-truth record a line answers; `None` when unknown.
fn resolve(gt: &GroundTruth, identity: &Identity, at: &str) -> Result<Option<usize>> {
    Ok(match identity {
        Identity::Id(id) => gt.by_id(id),
        Identity::Image(image) => match gt.by_image(image) {
            None => None,
            Some(ByImage::One(i)) => Some(i),
            Some(ByImage::Several) => {
                return Err(Error::input(format!(
                    "several ground-truth records use image `{image}`, so the prediction cannot be joined by image"
                ))
                .at(at.to_owned())
                .hint("add a unique \"id\" to each ground-truth record and to its prediction line"));
            }
        },
    })
}

/// Decode a payload into scored objects (categories filled in by the caller).
fn decode(payload: Payload, size: ImageSize, parse: &mut ParseCounts) -> Joined {
    let mut dropped = 0u64;
    let mut drop = |code: &str, n: u64, parse: &mut ParseCounts| {
        if n > 0 {
            *parse.objects_dropped.entry(code.to_owned()).or_default() += n;
            dropped += n;
        }
    };
    let unmapped = |desc: String, bbox, score| PredObject {
        desc,
        candidate: Candidate { bbox, category: None },
        score,
    };
    let (status, objects) = match payload {
        Payload::Text(text) => {
            parse.text += 1;
            let parsed = parse_salvage(&text, None);
            let status = match (parsed.found(), parsed.truncated) {
                (false, _) => {
                    parse.no_container += 1;
                    AnswerStatus::NoContainer
                }
                (true, true) => {
                    parse.truncated += 1;
                    AnswerStatus::Truncated
                }
                (true, false) => {
                    parse.valid += 1;
                    AnswerStatus::Valid
                }
            };
            for (reason, n) in parsed.dropped_by_reason() {
                drop(reason.code(), n as u64, parse);
            }
            drop("incomplete_tail", u64::from(parsed.incomplete_tail.is_some()), parse);
            let objects = parsed
                .objects
                .into_iter()
                .map(|o| unmapped(o.desc, o.geometry.dequantize(size).bounding_box(), None))
                .collect();
            (status, objects)
        }
        Payload::Objects(values) => {
            parse.objects_form += 1;
            let mut objects = Vec::with_capacity(values.len());
            for v in &values {
                match read_object(v) {
                    Ok(o) => objects.push(unmapped(o.desc, o.bbox, o.score)),
                    Err(reason) => drop(reason.code(), 1, parse),
                }
            }
            (AnswerStatus::Objects, objects)
        }
    };
    parse.degenerate_boxes +=
        objects.iter().filter(|o: &&PredObject| o.candidate.bbox.area() <= 0.0).count() as u64;
    Joined { line: 0, status, objects, dropped }
}

/// COCO `[x, y, w, h]`; an inverted box gets zero extent, as in [`PixelBox`]'s measures.
///
/// [`PixelBox`]: coordexp_core::geometry::PixelBox
fn xywh(c: &Candidate) -> [f64; 4] {
    let b = c.bbox;
    [b.x1, b.y1, b.width(), b.height()]
}

fn display_identity(img: &GtImage) -> String {
    match &img.id {
        Some(id) => format!("id {id}"),
        None => format!("image {}", img.image),
    }
}

fn desc_counts(stats: &MappingStats, n: usize) -> Vec<DescCount> {
    stats
        .top_unmapped(n)
        .into_iter()
        .map(|(d, c)| DescCount { desc: d.to_owned(), count: c })
        .collect()
}
