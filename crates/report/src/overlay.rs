//! The image grid: validation images with ground-truth and predicted boxes drawn over them.
//!
//! Why SVG over an embedded image: the boxes stay crisp at any zoom, the page stays one file
//! (images are `data:` URIs, their original bytes when the format is one browsers read), and no
//! pixel of the image is altered. Predictions are decoded exactly as `coordexp eval preds`
//! decodes them (salvage parser, bins → pixels with the ground-truth size), and the per-image
//! TP/FP/FN that choose which images to show come from [`coordexp_eval::preds::evaluate`]
//! itself, so the grid agrees with the numbers in `metrics.json`.
//!
//! Which images: all evaluated records ranked by per-image F1 at IoU 0.5 (category-aware; ties
//! broken by more matches, then fewer errors, then file order); the page shows the best few,
//! the few around the median and the worst few ([`select_cases`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use coordexp_core::coordjson::parse_salvage;
use coordexp_core::geometry::{ImageSize, PixelBox};
use coordexp_core::record::{Geometry, Objects, Record};
use coordexp_eval::f1::{Candidate, CategoryRule, Counts, ImageMatcher, IouThreshold};
use coordexp_eval::mapping::{Categories, DescMapper, LexicalMapper, Synonyms};
use coordexp_eval::preds::{
    AnswerStatus, Identity, Payload, PerImage, PredLine, PredsOptions, evaluate, read_line,
    read_object,
};
use serde_json::Value;

use crate::base64::data_uri;
use crate::html::{bytes, esc, fixed, num};
use crate::run::Warnings;

/// The width (CSS pixels) an overlay is laid out at; label sizes and stroke widths are
/// computed for it so they read the same on small and large images.
const DISPLAY_PX: f64 = 300.0;
pub const GT_COLOR: &str = "#16a34a";
pub const TP_COLOR: &str = "#2563eb";
pub const FP_COLOR: &str = "#ea580c";
/// Longest description drawn as a label (the full text is in the hover title).
const LABEL_CHARS: usize = 32;
/// Above this many boxes of one kind an image gets no text labels (they would hide the image);
/// every box keeps its hover title.
const MAX_LABELS: usize = 16;
/// Images larger than this are decoded, shrunk to [`THUMB_PX`] and re-encoded as JPEG.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 2 << 20;
const THUMB_PX: u32 = 800;
/// A file of another kind than an image is not read past this.
const MAX_READ_BYTES: u64 = 256 << 20;

/// Where a case sits in the ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Best,
    Median,
    Worst,
    /// Few enough images to show them all, best first.
    All,
    /// No ranking was possible (the evaluation could not be recomputed): file order.
    FileOrder,
}

impl Group {
    pub fn label(self) -> &'static str {
        match self {
            Group::Best => "best",
            Group::Median => "median",
            Group::Worst => "worst",
            Group::All => "all",
            Group::FileOrder => "in file order",
        }
    }
}

/// One ranked record: its index among the evaluated records and its per-image result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    pub index: usize,
    pub counts: Counts,
}

impl Ranked {
    pub fn f1(&self) -> f64 {
        self.counts.f1()
    }
}

/// Rank by per-image F1 (best first; ties: more TP, fewer FP+FN, file order) and pick
/// `per_group` best, median and worst records — all of them, best first, when there are no
/// more than `3 × per_group`. Deterministic; the groups never overlap.
pub fn select_cases(items: &[Ranked], per_group: usize) -> Vec<(Group, Ranked)> {
    let mut sorted = items.to_vec();
    sorted.sort_by(|a, b| {
        b.f1()
            .total_cmp(&a.f1())
            .then(b.counts.tp.cmp(&a.counts.tp))
            .then((a.counts.fp + a.counts.fn_).cmp(&(b.counts.fp + b.counts.fn_)))
            .then(a.index.cmp(&b.index))
    });
    let n = sorted.len();
    if per_group == 0 {
        return Vec::new();
    }
    if n <= 3 * per_group {
        return sorted.into_iter().map(|r| (Group::All, r)).collect();
    }
    let mid = (n / 2).saturating_sub(per_group / 2).clamp(per_group, n - 2 * per_group);
    let mut out = Vec::with_capacity(3 * per_group);
    out.extend(sorted[..per_group].iter().map(|&r| (Group::Best, r)));
    out.extend(sorted[mid..mid + per_group].iter().map(|&r| (Group::Median, r)));
    out.extend(sorted[n - per_group..].iter().map(|&r| (Group::Worst, r)));
    out
}

/// Finds image files: the record's path against each base directory in turn.
#[derive(Debug, Clone, Default)]
pub struct ImageResolver {
    pub bases: Vec<PathBuf>,
}

impl ImageResolver {
    pub fn resolve(&self, image: &str) -> Option<PathBuf> {
        let p = Path::new(image);
        if p.is_absolute() {
            return Some(p.to_path_buf()).filter(|p| p.is_file());
        }
        self.bases.iter().map(|b| b.join(p)).find(|p| p.is_file())
    }
}

/// An image ready for the page.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub uri: String,
    /// The file's true size when it could be read (PNG/JPEG).
    pub size: Option<(u32, u32)>,
    pub file_bytes: u64,
    /// Shrunk and re-encoded because the file exceeded the size cap.
    pub reencoded: bool,
}

fn sniff_mime(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0x89, b'P', b'N', b'G', ..] => Some("image/png"),
        [0xff, 0xd8, 0xff, ..] => Some("image/jpeg"),
        [b'G', b'I', b'F', b'8', ..] => Some("image/gif"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some("image/webp"),
        _ => None,
    }
}

/// Read an image file into a `data:` URI: its own bytes when browsers read the format and it
/// is under `max_bytes`; else decoded, shrunk and re-encoded (JPEG).
pub fn embed(path: &Path, max_bytes: u64) -> std::result::Result<Embedded, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut raw = Vec::new();
    file.take(MAX_READ_BYTES).read_to_end(&mut raw).map_err(|e| format!("cannot read: {e}"))?;
    let file_bytes = raw.len() as u64;
    let size = image::ImageReader::new(Cursor::new(&raw))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok());
    match sniff_mime(&raw) {
        Some(mime) if file_bytes <= max_bytes => {
            Ok(Embedded { uri: data_uri(mime, &raw), size, file_bytes, reencoded: false })
        }
        _ => {
            let img = image::ImageReader::new(Cursor::new(&raw))
                .with_guessed_format()
                .map_err(|e| format!("unknown image format: {e}"))?
                .decode()
                .map_err(|e| format!("cannot decode: {e}"))?;
            let small = img.thumbnail(THUMB_PX, THUMB_PX).to_rgb8();
            let mut out = Cursor::new(Vec::new());
            small
                .write_to(&mut out, image::ImageFormat::Jpeg)
                .map_err(|e| format!("cannot re-encode: {e}"))?;
            Ok(Embedded {
                uri: data_uri("image/jpeg", out.get_ref()),
                size: Some((img.width(), img.height())),
                file_bytes,
                reencoded: true,
            })
        }
    }
}

/// A predicted object as `coordexp eval preds` decodes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PredObject {
    pub desc: String,
    pub bbox: PixelBox,
    pub score: Option<f64>,
}

/// Decode a prediction line for a record of `size`, mirroring `coordexp eval preds`
/// (`coordexp_eval::preds` `decode`): text through the salvage parser with bins dequantized to
/// the ground-truth size, or the `objects` form; `object_scores` apply when there is exactly one
/// per kept object of a text answer. Returns the objects and the number dropped.
pub fn decode(line: &PredLine, size: ImageSize) -> (Vec<PredObject>, u64) {
    let (mut objects, dropped, is_text) = match &line.payload {
        Payload::Text(text) => {
            let parsed = parse_salvage(text, None);
            let dropped = parsed.dropped.len() as u64 + u64::from(parsed.incomplete_tail.is_some());
            let objects: Vec<PredObject> = parsed
                .objects
                .into_iter()
                .map(|o| PredObject {
                    desc: o.desc,
                    bbox: o.geometry.dequantize(size).bounding_box(),
                    score: None,
                })
                .collect();
            (objects, dropped, true)
        }
        Payload::Objects(values) => {
            let mut dropped = 0;
            let mut objects = Vec::new();
            for v in values {
                match read_object(v) {
                    Ok(o) => {
                        objects.push(PredObject { desc: o.desc, bbox: o.bbox, score: o.score })
                    }
                    Err(_) => dropped += 1,
                }
            }
            (objects, dropped, false)
        }
    };
    if let Some(scores) = &line.object_scores
        && is_text
        && scores.len() == objects.len()
    {
        for (o, s) in objects.iter_mut().zip(scores) {
            o.score = Some(*s);
        }
    }
    (objects, dropped)
}

/// The join key of a prediction line.
fn pred_key(identity: &Identity) -> String {
    match identity {
        Identity::Id(id) => format!("id:{id}"),
        Identity::Image(image) => format!("image:{image}"),
    }
}

/// The join key of a ground-truth record: its `id` (string or integer), else its first image.
fn gt_key(record: &Record) -> String {
    match record.extra().get("id") {
        Some(Value::String(s)) => format!("id:{s}"),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => format!("id:{n}"),
        _ => format!("image:{}", record.images().first().map_or("", String::as_str)),
    }
}

/// `eval/gt.jsonl`, read leniently: valid records with their 1-based line.
pub fn read_gt(path: &Path, warnings: &mut Warnings) -> Vec<(usize, Record)> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            warnings.push(format!("cannot read {}: {e}", path.display()));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let (mut bad, mut examples) = (0, Vec::new());
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match Record::from_json_line(line) {
            Ok(r) => out.push((i + 1, r)),
            Err(problems) => {
                bad += 1;
                if examples.len() < 5 {
                    let why = problems.first().map(|p| p.describe()).unwrap_or_default();
                    examples.push(format!("eval/gt.jsonl:{}: {why}", i + 1));
                }
            }
        }
    }
    warnings.counted(bad, "invalid records in eval/gt.jsonl (not shown)", &examples);
    out
}

/// Prediction lines by join key (the first line per key; later ones are counted as repeats).
fn read_predictions(
    path: &Path,
    name: &str,
    warnings: &mut Warnings,
) -> HashMap<String, (usize, PredLine)> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            warnings.push(format!("cannot read {}: {e}", path.display()));
            return HashMap::new();
        }
    };
    let mut out = HashMap::new();
    let (mut bad, mut examples, mut repeats) = (0, Vec::new(), 0);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match read_line(line.trim()) {
            Ok(p) => match out.entry(pred_key(&p.identity)) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert((i + 1, p));
                }
                std::collections::hash_map::Entry::Occupied(_) => repeats += 1,
            },
            Err(why) => {
                bad += 1;
                if examples.len() < 5 {
                    examples.push(format!("eval/{name}/predictions.jsonl:{}: {why}", i + 1));
                }
            }
        }
    }
    warnings.counted(bad, &format!("unreadable lines in eval/{name}/predictions.jsonl"), &examples);
    if repeats > 0 {
        warnings.push(format!(
            "{repeats} repeated predictions for one record in eval/{name}/predictions.jsonl (the first is drawn)"
        ));
    }
    out
}

/// What the image section needs to know about the run.
pub struct GridInput<'a> {
    pub gt_path: &'a Path,
    pub eval_name: &'a str,
    pub predictions: Option<&'a Path>,
    pub resolver: &'a ImageResolver,
    pub per_group: usize,
    pub max_image_bytes: u64,
}

/// The rendered image section body and its counts.
#[derive(Debug, Clone, Default)]
pub struct Grid {
    pub html: String,
    /// Overlays drawn, and how many of them have their image embedded.
    pub overlays: usize,
    pub images_embedded: usize,
    pub images_missing: usize,
}

/// Build the image grid of one evaluation.
pub fn grid(input: &GridInput<'_>, warnings: &mut Warnings) -> Grid {
    let records = read_gt(input.gt_path, warnings);
    let mut out = Grid::default();
    if records.is_empty() {
        out.html = note("eval/gt.jsonl holds no readable record: no images to show.");
        return out;
    }
    let preds = input
        .predictions
        .map(|p| read_predictions(p, input.eval_name, warnings))
        .unwrap_or_default();

    // Per-image results from the evaluation engine itself.
    let per_image: Option<HashMap<usize, PerImage>> = match input.predictions {
        None => None,
        Some(pred_path) => {
            let opts = PredsOptions {
                thresholds: IouThreshold::new(0.5).into_iter().collect(),
                categories: None,
                top_unmapped: 0,
            };
            match evaluate(input.gt_path, pred_path, &opts) {
                Ok(ev) => Some(ev.per_image.into_iter().map(|p| (p.gt_line, p)).collect()),
                Err(e) => {
                    warnings.push(format!(
                        "eval/{}: cannot score the predictions per image ({}); images are shown in file order",
                        input.eval_name,
                        e.report().replace('\n', " ")
                    ));
                    None
                }
            }
        }
    };
    let counts_of = |line: usize| {
        per_image.as_ref().and_then(|m| m.get(&line)).and_then(|p| p.f1.get("0.5").copied())
    };
    let chosen: Vec<(Group, usize, Option<Counts>)> = match &per_image {
        Some(_) => {
            let ranked: Vec<Ranked> = records
                .iter()
                .enumerate()
                .filter_map(|(i, (line, _))| {
                    counts_of(*line).map(|counts| Ranked { index: i, counts })
                })
                .collect();
            select_cases(&ranked, input.per_group)
                .into_iter()
                .map(|(g, r)| (g, r.index, Some(r.counts)))
                .collect()
        }
        None => (0..records.len().min(3 * input.per_group))
            .map(|i| (Group::FileOrder, i, None))
            .collect(),
    };

    // One mapper over the ground-truth descriptions, as `eval preds` builds it, to tell
    // matched from unmatched boxes.
    let mapper = Synonyms::builtin().ok().map(|syn| {
        let names = records.iter().flat_map(|(_, r)| {
            r.objects().descs().into_iter().map(|d| d.as_str().to_owned()).collect::<Vec<_>>()
        });
        LexicalMapper::new(Categories::from_names(names), syn)
    });

    let mut html = String::new();
    let mut current: Option<Group> = None;
    for (group, index, counts) in chosen {
        if current != Some(group) {
            if current.is_some() {
                html.push_str("</div>");
            }
            let _ = write!(
                html,
                r#"<h3 class="group">{}</h3><div class="grid">"#,
                esc(group_title(group))
            );
            current = Some(group);
        }
        let (line, record) = &records[index];
        let pred = preds.get(&gt_key(record));
        let (objects, dropped) = pred.map(|(_, p)| decode(p, record.size())).unwrap_or_default();
        let status = per_image.as_ref().and_then(|m| m.get(line)).map(|p| p.status);
        let image = record.images().first().map_or("", String::as_str);
        let embedded = match input.resolver.resolve(image) {
            Some(path) => match embed(&path, input.max_image_bytes) {
                Ok(e) => Ok(e),
                Err(why) => Err(format!("{}: {why}", path.display())),
            },
            None => Err(format!("image not found: {image}")),
        };
        match &embedded {
            Ok(_) => out.images_embedded += 1,
            Err(_) => out.images_missing += 1,
        }
        let fig = Figure {
            group,
            gt_line: *line,
            record,
            preds: &objects,
            pred_line: pred.map(|(l, _)| *l),
            dropped,
            counts,
            status,
            image: embedded,
            mapper: mapper.as_ref(),
        };
        html.push_str(&fig.render());
        out.overlays += 1;
    }
    if current.is_some() {
        html.push_str("</div>");
    }
    if out.images_missing > 0 {
        let bases: Vec<String> =
            input.resolver.bases.iter().map(|b| b.display().to_string()).collect();
        warnings.push(format!(
            "{} of {} shown images could not be embedded (searched relative to: {}); boxes are drawn on a blank canvas",
            out.images_missing,
            out.overlays,
            if bases.is_empty() { "nothing".into() } else { bases.join(", ") }
        ));
    }
    out.html = html;
    out
}

fn group_title(g: Group) -> &'static str {
    match g {
        Group::Best => "Best (highest per-image F1@0.5)",
        Group::Median => "Around the median",
        Group::Worst => "Worst (lowest per-image F1@0.5)",
        Group::All => "All evaluated images, best first",
        Group::FileOrder => "First records in file order",
    }
}

pub fn note(text: &str) -> String {
    format!(r#"<p class="note">{}</p>"#, esc(text))
}

struct Figure<'a> {
    group: Group,
    gt_line: usize,
    record: &'a Record,
    preds: &'a [PredObject],
    pred_line: Option<usize>,
    dropped: u64,
    counts: Option<Counts>,
    status: Option<AnswerStatus>,
    image: std::result::Result<Embedded, String>,
    mapper: Option<&'a LexicalMapper>,
}

/// Ground-truth shapes in pixels: boxes, or polygons with their points.
fn gt_shapes(record: &Record) -> Vec<(String, Geometry<f64>)> {
    let size = record.size();
    match record.objects() {
        Objects::Pixels(v) => {
            v.iter().map(|o| (o.desc.as_str().to_owned(), o.geometry.clone())).collect()
        }
        Objects::Bins(v) => {
            v.iter().map(|o| (o.desc.as_str().to_owned(), o.geometry.dequantize(size))).collect()
        }
    }
}

impl Figure<'_> {
    /// Which predictions and ground-truth objects are matched at IoU 0.5 (same category).
    fn matches(&self, gts: &[(String, Geometry<f64>)]) -> (Vec<bool>, Vec<bool>) {
        let mut pred_ok = vec![false; self.preds.len()];
        let mut gt_ok = vec![false; gts.len()];
        let (Some(mapper), Some(t)) = (self.mapper, IouThreshold::new(0.5)) else {
            return (pred_ok, gt_ok);
        };
        let cat = |d: &str| mapper.map(d).map(|m| m.category);
        let p: Vec<Candidate> =
            self.preds.iter().map(|o| Candidate { bbox: o.bbox, category: cat(&o.desc) }).collect();
        let g: Vec<Candidate> = gts
            .iter()
            .map(|(d, geo)| Candidate { bbox: geo.bounding_box(), category: cat(d) })
            .collect();
        if let Ok(pairs) = ImageMatcher::new(&p, &g).matches(t, CategoryRule::SameCategory) {
            for (pi, gi) in pairs {
                pred_ok[pi] = true;
                gt_ok[gi] = true;
            }
        }
        (pred_ok, gt_ok)
    }

    fn render(&self) -> String {
        let size = self.record.size();
        let (w, h) = (f64::from(size.width()), f64::from(size.height()));
        let scale = DISPLAY_PX / w;
        let u = |px: f64| px / scale; // CSS pixels → image units
        let font = u(11.0);
        let gts = gt_shapes(self.record);
        let (pred_ok, gt_ok) = self.matches(&gts);
        let image = self.record.images().first().map_or("", String::as_str);

        let mut s = String::new();
        let _ = write!(
            s,
            r#"<figure class="overlay" data-group="{}" data-gt-line="{}" data-gt="{}" data-pred="{}">"#,
            self.group.label(),
            self.gt_line,
            gts.len(),
            self.preds.len()
        );
        let _ = write!(
            s,
            r#"<svg class="overlay-svg" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{}">"#,
            esc(image)
        );
        match &self.image {
            Ok(e) => {
                let _ = write!(
                    s,
                    r#"<image href="{}" x="0" y="0" width="{w}" height="{h}" preserveAspectRatio="none"/>"#,
                    e.uri
                );
            }
            Err(why) => {
                let _ = write!(
                    s,
                    r##"<rect width="{w}" height="{h}" fill="#eef0f4"/><text x="{:.1}" y="{:.1}" font-size="{font:.2}" text-anchor="middle" fill="#6b7280">image not available<title>{}</title></text>"##,
                    w / 2.0,
                    h / 2.0,
                    esc(why)
                );
            }
        }
        let sw = u(2.0);
        for ((desc, geo), ok) in gts.iter().zip(&gt_ok) {
            let status = if *ok { "matched" } else { "missed" };
            let tip = format!("ground truth: {desc} ({status})");
            let shape = match geo {
                Geometry::BBox([x1, y1, x2, y2]) => format!(
                    r#"<rect class="gt" x="{x1:.2}" y="{y1:.2}" width="{:.2}" height="{:.2}""#,
                    (x2 - x1).max(0.0),
                    (y2 - y1).max(0.0)
                ),
                Geometry::Poly(p) => {
                    let pts: Vec<String> =
                        p.points().iter().map(|[x, y]| format!("{x:.2},{y:.2}")).collect();
                    format!(r#"<polygon class="gt" points="{}""#, pts.join(" "))
                }
            };
            let _ = write!(
                s,
                r#"{shape} fill="none" stroke="{GT_COLOR}" stroke-width="{sw:.2}"><title>{}</title>{}"#,
                esc(&tip),
                if matches!(geo, Geometry::BBox(_)) { "</rect>" } else { "</polygon>" }
            );
            let b = geo.bounding_box();
            if gts.len() <= MAX_LABELS {
                s.push_str(&label(desc, b.x1, b.y1, true, GT_COLOR, font, w, h, &tip));
            }
        }
        for (o, ok) in self.preds.iter().zip(&pred_ok) {
            let color = if *ok { TP_COLOR } else { FP_COLOR };
            let b = o.bbox;
            let score = o.score.map(|v| format!(" {v:.2}")).unwrap_or_default();
            let tip = format!(
                "prediction: {}{} ({})",
                o.desc,
                o.score.map(|v| format!(", score {}", num(v))).unwrap_or_default(),
                if *ok { "matched" } else { "unmatched" }
            );
            let _ = write!(
                s,
                r#"<rect class="pred{}" x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="none" stroke="{color}" stroke-width="{sw:.2}" stroke-dasharray="{:.2} {:.2}"><title>{}</title></rect>"#,
                if *ok { " tp" } else { " fp" },
                b.x1,
                b.y1,
                b.width(),
                b.height(),
                u(5.0),
                u(3.0),
                esc(&tip)
            );
            let text = format!("{}{score}", o.desc);
            if self.preds.len() <= MAX_LABELS {
                s.push_str(&label(&text, b.x1, b.y2, false, color, font, w, h, &tip));
            }
        }
        s.push_str("</svg>");

        // Caption: where the image is, how it scored.
        let _ = write!(
            s,
            r#"<figcaption><div class="cap-head"><span class="badge {}">{}</span>"#,
            self.group.label(),
            esc(self.group.label())
        );
        if let Some(c) = self.counts {
            let _ = write!(
                s,
                r#"<span class="f1">F1 {}</span><span class="tpfpfn">TP {} · FP {} · FN {}</span>"#,
                fixed(Some(c.f1()), 2),
                c.tp,
                c.fp,
                c.fn_
            );
        }
        s.push_str("</div>");
        let _ = write!(s, r#"<div class="path" title="{0}">{0}</div>"#, esc(image));
        let mut facts = vec![
            format!("gt.jsonl line {}", self.gt_line),
            format!("{} GT, {} predicted", gts.len(), self.preds.len()),
        ];
        match (self.pred_line, self.status) {
            (None, _) => facts.push("no prediction line".into()),
            (Some(l), st) => {
                facts.push(format!("prediction line {l}"));
                if let Some(st) = st {
                    facts.push(status_text(st).into());
                }
            }
        }
        if self.dropped > 0 {
            facts.push(format!("{} dropped", self.dropped));
        }
        if gts.len() > MAX_LABELS || self.preds.len() > MAX_LABELS {
            facts.push("too many boxes for labels: hover a box".into());
        }
        match &self.image {
            Ok(e) => {
                facts.push(format!("{}×{}", size.width(), size.height()));
                if let Some((iw, ih)) = e.size
                    && (iw, ih) != (size.width(), size.height())
                    && !e.reencoded
                {
                    facts.push(format!("file is {iw}×{ih}: size differs from the record"));
                }
                if e.reencoded {
                    facts.push(format!("shrunk from {}", bytes(e.file_bytes)));
                }
            }
            Err(why) => facts.push(why.clone()),
        }
        let _ = write!(
            s,
            r#"<div class="facts">{}</div></figcaption></figure>"#,
            esc(&facts.join(" · "))
        );
        s
    }
}

fn status_text(s: AnswerStatus) -> &'static str {
    match s {
        AnswerStatus::Valid => "valid answer",
        AnswerStatus::Truncated => "truncated answer",
        AnswerStatus::NoContainer => "no CoordJSON container",
        AnswerStatus::Objects => "objects form",
        AnswerStatus::Missing => "no prediction",
    }
}

/// A text label with a background, above (`above`) the point's top edge or below its bottom
/// edge, moved inside the image when it would leave it.
#[allow(clippy::too_many_arguments)]
fn label(
    text: &str,
    x: f64,
    y: f64,
    above: bool,
    color: &str,
    font: f64,
    w: f64,
    h: f64,
    tip: &str,
) -> String {
    let shown: String = if text.chars().count() > LABEL_CHARS {
        text.chars().take(LABEL_CHARS - 1).chain(std::iter::once('…')).collect()
    } else {
        text.to_owned()
    };
    let pad = font * 0.25;
    let tw = shown.chars().count() as f64 * font * 0.6 + 2.0 * pad;
    let th = font * 1.3;
    let x = x.clamp(0.0, (w - tw).max(0.0));
    let top = if above {
        if y - th >= 0.0 { y - th } else { (y).min(h - th).max(0.0) }
    } else if y + th <= h {
        y
    } else {
        (y - th).max(0.0)
    };
    format!(
        r##"<g class="label"><title>{}</title><rect x="{x:.2}" y="{top:.2}" width="{tw:.2}" height="{th:.2}" fill="{color}" fill-opacity="0.85" rx="{:.2}"/><text x="{:.2}" y="{:.2}" font-size="{font:.2}" fill="#fff">{}</text></g>"##,
        esc(tip),
        pad,
        x + pad,
        top + font * 1.0,
        esc(&shown)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranked(index: usize, tp: u64, fp: u64, fn_: u64) -> Ranked {
        Ranked { index, counts: Counts { tp, fp, fn_ } }
    }

    #[test]
    fn cases_are_best_median_and_worst_without_overlap() {
        // index i has i true positives and 9 - i misses: F1 grows with i.
        let items: Vec<Ranked> = (0..10).map(|i| ranked(i, i as u64, 0, 9 - i as u64)).collect();
        let chosen = select_cases(&items, 2);
        let by =
            |g: Group| chosen.iter().filter(|c| c.0 == g).map(|c| c.1.index).collect::<Vec<_>>();
        assert_eq!(by(Group::Best), [9, 8]);
        assert_eq!(by(Group::Worst), [1, 0]);
        let median = by(Group::Median);
        assert_eq!(median.len(), 2);
        assert!(median.iter().all(|i| (3..=6).contains(i)), "{median:?}");
        let mut all: Vec<usize> = chosen.iter().map(|c| c.1.index).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 6, "groups never overlap");
    }

    #[test]
    fn few_images_are_all_shown_best_first_and_ties_are_deterministic() {
        let items =
            vec![ranked(0, 0, 1, 1), ranked(1, 2, 0, 0), ranked(2, 1, 0, 0), ranked(3, 0, 0, 0)];
        let chosen = select_cases(&items, 2);
        assert!(chosen.iter().all(|c| c.0 == Group::All));
        // F1 1.0 for 1, 2 and 3 (an empty image with no predictions is perfect): more TP first.
        assert_eq!(chosen.iter().map(|c| c.1.index).collect::<Vec<_>>(), [1, 2, 3, 0]);
        assert!(select_cases(&items, 0).is_empty());
        assert!(select_cases(&[], 3).is_empty());
    }

    #[test]
    fn labels_are_escaped_and_stay_inside_the_image() {
        let l = label(
            "<script>alert(1)</script>",
            95.0,
            2.0,
            true,
            GT_COLOR,
            10.0,
            100.0,
            80.0,
            "t<b>",
        );
        assert!(!l.contains("<script>"));
        assert!(l.contains("&lt;script&gt;"));
        assert!(l.contains("<title>t&lt;b&gt;</title>"));
        let x: f64 =
            l.split(r#"<rect x=""#).nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        assert!((0.0..95.0).contains(&x), "moved left to fit: {x}");
    }

    #[test]
    fn text_predictions_decode_like_eval_preds() {
        let line = read_line(
            r#"{"image": "a.png", "text": "{\"objects\": [{\"desc\": \"cat\", \"bbox_2d\": [<|coord_0|>, <|coord_0|>, <|coord_999|>, <|coord_500|>]}, {\"desc\": \"x\", \"bbox_2d\": [<|coord_1|>]}]}", "object_scores": [0.75]}"#,
        )
        .unwrap();
        let (objects, dropped) = decode(&line, ImageSize::new(101, 51).unwrap());
        assert_eq!(dropped, 1);
        assert_eq!(objects.len(), 1);
        let b = objects[0].bbox.xyxy();
        assert_eq!((b[0], b[2]), (0.0, 100.0), "k/999·(W−1)");
        assert!((b[3] - 500.0 / 999.0 * 50.0).abs() < 1e-9);
        assert_eq!(objects[0].score, Some(0.75));
    }

    #[test]
    fn images_embed_their_own_bytes_or_are_shrunk() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.png");
        image::RgbImage::from_pixel(40, 20, image::Rgb([200, 10, 10])).save(&p).unwrap();
        let e = embed(&p, DEFAULT_MAX_IMAGE_BYTES).unwrap();
        assert!(e.uri.starts_with("data:image/png;base64,iVBORw0KGgo"));
        assert_eq!(e.size, Some((40, 20)));
        assert!(!e.reencoded);
        let small = embed(&p, 10).unwrap();
        assert!(small.reencoded && small.uri.starts_with("data:image/jpeg;base64,"));
        let bad = d.path().join("b.png");
        std::fs::write(&bad, b"not an image").unwrap();
        assert!(embed(&bad, DEFAULT_MAX_IMAGE_BYTES).is_err());
        let resolver = ImageResolver { bases: vec![d.path().join("nope"), d.path().to_path_buf()] };
        assert_eq!(resolver.resolve("a.png"), Some(p));
        assert_eq!(resolver.resolve("missing.png"), None);
    }
}
