//! `coordexp data …` — dataset tools (owned by the data layer).

use clap::{Args, Subcommand};
use coordexp_core::Error;
use coordexp_core::coordjson::{self, FieldOrder, Parsed};
use coordexp_core::progress::Progress;
use coordexp_core::record;
use serde_json::{Value, json};
use std::io::Read;
use std::path::PathBuf;

use coordexp_data::convert::{CocoOptions, GeometryChoice};
use coordexp_data::images::{RecordImages, check_images};
use coordexp_data::resize::{ResizeJob, ResizePolicy, resize_dataset};
use coordexp_data::stats::dataset_stats;
use coordexp_data::synth::SynthOptions;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Print the assistant CoordJSON for one record (pixel records are quantized with the
    /// record's own size).
    Render(RenderArgs),
    /// Parse model output from stdin as CoordJSON; prints {"valid", "truncated", "objects",
    /// "dropped"} and exits 0 when valid, 2 otherwise.
    Parse(ParseArgs),
    /// Check a JSONL file against the record contract; prints every problem and a summary,
    /// exits 0 when clean, 2 otherwise.
    Validate(ValidateArgs),
    /// Generate the synthetic shapes dataset: PNG images plus train.jsonl / val.jsonl.
    Synth(SynthArgs),
    /// Dataset statistics: counts, classes, box and image sizes, estimated tokens per sample.
    Stats(StatsArgs),
    /// Convert public annotation formats to pixel-coordinate JSONL.
    #[command(subcommand)]
    Convert(ConvertCommand),
    /// Smart-resize a pixel JSONL: images snapped to multiples of the factor within the pixel
    /// budget (Lanczos3), geometry scaled; conforming images are hard-linked, never re-encoded.
    Resize(ResizeArgs),
}

pub fn run(cmd: DataCommand, progress: Progress) -> crate::CliResult {
    match cmd {
        DataCommand::Render(a) => render(a),
        DataCommand::Parse(a) => parse(a),
        DataCommand::Validate(a) => validate(a, progress),
        DataCommand::Synth(a) => synth(a, progress),
        DataCommand::Stats(a) => stats(a, progress),
        DataCommand::Convert(ConvertCommand::Coco(a)) => convert_coco(a, progress),
        DataCommand::Resize(a) => resize(a, progress),
    }
}

// ---- render / parse / validate: the record contract and CoordJSON text ----

#[derive(Args)]
pub struct RenderArgs {
    /// The JSONL file.
    file: PathBuf,
    /// 1-based line number of the record.
    #[arg(long)]
    line: usize,
    /// Field order inside each record.
    #[arg(long, default_value = "desc_first", value_parser = field_order)]
    field_order: FieldOrder,
}

#[derive(Args)]
pub struct ParseArgs {
    /// strict: exactly the CoordJSON grammar; salvage: keep what is valid in model output.
    #[arg(long, default_value = "salvage", value_parser = ["strict", "salvage"])]
    mode: String,
    /// Required field order: desc_first, geometry_first, or any.
    #[arg(long, default_value = "desc_first", value_parser = field_order_rule)]
    field_order: OrderRule,
}

#[derive(Args)]
pub struct ValidateArgs {
    /// The JSONL file.
    file: PathBuf,
    /// Also read every image header (in parallel): the file exists, its true size equals the
    /// record's width/height, both are multiples of 32, and width·height ≤ --max-pixels.
    #[arg(long)]
    images: bool,
    /// Pixel budget checked by --images.
    #[arg(long, default_value_t = 786_432, requires = "images")]
    max_pixels: u64,
}

/// A field order requirement; `None` accepts either order.
#[derive(Clone, Copy)]
struct OrderRule(Option<FieldOrder>);

fn field_order(s: &str) -> Result<FieldOrder, String> {
    FieldOrder::parse(s).ok_or_else(|| format!("expected desc_first or geometry_first, got {s:?}"))
}

fn field_order_rule(s: &str) -> Result<OrderRule, String> {
    if s == "any" { Ok(OrderRule(None)) } else { field_order(s).map(|o| OrderRule(Some(o))) }
}

fn render(a: RenderArgs) -> crate::CliResult {
    let record = record::read_record_at(&a.file, a.line)?;
    let location = format!("{}:{}", a.file.display(), a.line);
    let objects = record.bin_objects().map_err(|p| p.into_error(&location))?;
    println!("{}", coordjson::render(&objects, a.field_order));
    Ok(())
}

fn parse(a: ParseArgs) -> crate::CliResult {
    let mut raw = Vec::new();
    std::io::stdin()
        .read_to_end(&mut raw)
        .map_err(|e| Error::runtime(format!("cannot read stdin: {e}")))?;
    let text = String::from_utf8(raw).map_err(|e| {
        Error::input(format!("stdin is not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()))
    })?;
    let order = a.field_order.0;
    let (parsed, error) = if a.mode == "strict" {
        match coordjson::parse_strict(&text, order) {
            Ok(p) => (p, None),
            Err(e) => (Parsed::default(), Some(e)),
        }
    } else {
        (coordjson::parse_salvage(&text, order), None)
    };
    let valid = parsed.found() && error.is_none();
    let mut out = json!({
        "valid": valid,
        "truncated": parsed.truncated,
        "objects": parsed.objects.iter().map(|o| {
            let coords: Vec<u16> = o.geometry.coords().iter().map(|b| b.get()).collect();
            let mut m = serde_json::Map::new();
            m.insert("index".into(), json!(o.index));
            m.insert("desc".into(), json!(o.desc));
            m.insert(o.geometry.key().into(), json!(coords));
            Value::Object(m)
        }).collect::<Vec<_>>(),
        "dropped": parsed.dropped.iter().map(|d| json!({
            "index": d.index, "reason": d.reason.code(), "message": d.message,
        })).collect::<Vec<_>>(),
    });
    if let Some(e) = &error {
        out["error"] = json!(e.to_string());
        if let coordjson::StrictError::Record { index, reason, .. } = e {
            out["dropped"] =
                json!([{"index": index, "reason": reason.code(), "message": e.to_string()}]);
        }
    }
    println!("{out}");
    match error {
        Some(e) => Err(e.into()),
        None if !valid => Err(Error::input("no CoordJSON container found in the input")
            .hint("the answer must contain {\"objects\": [...]} before any <|im_end|>")),
        None => Ok(()),
    }
}

fn validate(a: ValidateArgs, progress: Progress) -> crate::CliResult {
    let mut with_images = Vec::new();
    let mut report = record::validate_file_with(&a.file, progress, |line, r| {
        if a.images {
            with_images.push(RecordImages::of(line, r));
        }
    })?;
    if a.images {
        check_images(&mut report, &with_images, a.max_pixels, progress);
    }
    print!("{}", report.render());
    if report.is_clean() {
        Ok(())
    } else {
        Err(Error::input(format!(
            "{} problems in {} of {} records of {}",
            report.issues().len(),
            report.records_with_issues(),
            report.records(),
            a.file.display()
        ))
        .hint("fix the lines listed above (each with its field and a hint)"))
    }
}

// ---- synth / stats / convert / resize: datasets and images (coordexp-data) ----

#[derive(Args)]
pub struct SynthArgs {
    /// Output directory (created; must be empty if it exists).
    #[arg(long)]
    out: PathBuf,
    /// Number of training images.
    #[arg(long, default_value_t = 2000)]
    train: usize,
    /// Number of validation images.
    #[arg(long, default_value_t = 200)]
    val: usize,
    /// Dataset seed; the same seed gives the same bytes.
    #[arg(long, default_value_t = 17)]
    seed: u64,
}

#[derive(Args)]
pub struct StatsArgs {
    /// The JSONL file.
    file: PathBuf,
    /// Print the full statistics as JSON instead of the text summary.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum ConvertCommand {
    /// COCO / LVIS-style instances JSON; writes OUT and OUT.report.json (skip counters).
    Coco(CocoArgs),
}

#[derive(Args)]
pub struct CocoArgs {
    /// The instances JSON (images, annotations, categories).
    #[arg(long)]
    instances: PathBuf,
    /// Directory holding the images' file names; must be inside OUT's directory.
    #[arg(long)]
    images_dir: PathBuf,
    /// Output JSONL.
    #[arg(long)]
    out: PathBuf,
    /// bbox: boxes; poly: single-polygon segmentations (others fall back to boxes, counted).
    #[arg(long, default_value = "bbox", value_parser = ["bbox", "poly"])]
    geometry: String,
    /// JSON object {"category name": "desc"} overriding category names.
    #[arg(long)]
    desc_map: Option<PathBuf>,
    /// Drop (never truncate) images with more objects than this.
    #[arg(long)]
    max_objects: Option<usize>,
    /// Keep images left without objects (written with "objects": []).
    #[arg(long)]
    keep_empty: bool,
}

#[derive(Args)]
pub struct ResizeArgs {
    /// The pixel-coordinate JSONL to resize.
    #[arg(long = "in")]
    input: PathBuf,
    /// Output directory: OUT/<input name>, OUT/images/…, OUT/<stem>.resize_report.json.
    #[arg(long)]
    out_dir: PathBuf,
    /// Sides become multiples of this.
    #[arg(long, default_value_t = 32)]
    factor: u32,
    /// Smaller images are scaled up to at least this many pixels.
    #[arg(long, default_value_t = 4096)]
    min_pixels: u64,
    /// Larger images are scaled down to at most this many pixels.
    #[arg(long, default_value_t = 786_432)]
    max_pixels: u64,
}

fn synth(a: SynthArgs, progress: Progress) -> crate::CliResult {
    let opts = SynthOptions { out: a.out, train: a.train, val: a.val, seed: a.seed, progress };
    let summary = coordexp_data::generate(&opts)?;
    for (name, split) in [("train", &summary.train), ("val", &summary.val)] {
        println!(
            "{name}: {} images, {} objects ({} not placed) -> {}",
            split.images,
            split.objects,
            split.objects_not_placed,
            split.jsonl.display()
        );
    }
    Ok(())
}

fn stats(a: StatsArgs, progress: Progress) -> crate::CliResult {
    let stats = dataset_stats(&a.file, progress)?;
    if a.json {
        println!("{}", to_json(&stats)?);
    } else {
        println!("{stats}");
    }
    Ok(())
}

fn convert_coco(a: CocoArgs, progress: Progress) -> crate::CliResult {
    let geometry = if a.geometry == "poly" { GeometryChoice::Poly } else { GeometryChoice::BBox };
    let report = coordexp_data::convert::convert_coco(&CocoOptions {
        instances: a.instances,
        images_dir: a.images_dir,
        out: a.out,
        geometry,
        desc_map: a.desc_map,
        max_objects: a.max_objects,
        keep_empty: a.keep_empty,
        progress,
    })?;
    println!("{}", to_json(&report)?);
    Ok(())
}

fn resize(a: ResizeArgs, progress: Progress) -> crate::CliResult {
    let policy = ResizePolicy::new(a.factor, a.min_pixels, a.max_pixels)?;
    let report =
        resize_dataset(&ResizeJob { input: a.input, out_dir: a.out_dir, policy, progress })?;
    println!("{}", to_json(&report)?);
    Ok(())
}

fn to_json(value: &impl serde::Serialize) -> Result<String, Error> {
    serde_json::to_string_pretty(value)
        .map_err(|e| Error::runtime(format!("cannot serialise the report: {e}")))
}
