//! `coordexp inspect`: how one record becomes tokens, and how a dataset packs.
//!
//! ```text
//! coordexp inspect --config CFG [--model DIR] --data FILE.jsonl --line N [--json]
//! coordexp inspect pack --config CFG [--model DIR] --data FILE.jsonl [--json]
//! coordexp inspect rollout --config CFG [--model DIR] --data FILE.jsonl --line N
//!     --text ROLLOUT.txt [--explorer EXPLORER.txt]… [--json]
//! ```
//!
//! The JSON form of the sample view carries the structured messages in the HF chat format, so
//! anyone can re-render them with transformers and compare ids, labels and positions.

use clap::{Args, Subcommand};
use coordexp_core::config::{self, Config};
use coordexp_core::record::{Record, read_record_at, read_records};
use coordexp_core::{Error, Result};
use coordexp_rollout::Session;
use coordexp_text::{
    Answer, EncodedSample, Encoder, IGNORE_INDEX, TokenType, Turn, epoch_seed, plan,
};
use coordexp_train::trainer::stage2::inspect::inspect_rollout;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `coordexp inspect …`: one record's tokens, or `inspect pack` for the packing plan.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct InspectArgs {
    #[command(subcommand)]
    command: Option<InspectCommand>,
    #[command(flatten)]
    sample: SampleArgs,
}

#[derive(Subcommand)]
enum InspectCommand {
    /// Plan the packs of a dataset (epoch 0) and print fill statistics and the plan checksum.
    Pack(PackArgs),
    /// What stage 2's channel B makes of one anchor rollout text for one record: parsed
    /// objects and drops, duplicate clusters, matching with mask IoU, missed objects, the
    /// target text with each token's role and weight, and the unlikelihood targets.
    Rollout(RolloutArgs),
}

#[derive(Args)]
struct RolloutArgs {
    #[command(flatten)]
    source: Source,
    /// 1-based line number of the record in the JSONL file.
    #[arg(long)]
    line: Option<usize>,
    /// A file with the anchor rollout: the model's answer text (`<|im_end|>` and anything after
    /// it are ignored).
    #[arg(long)]
    text: Option<PathBuf>,
    /// A file with an explorer rollout (repeat for several; without any, every unmatched
    /// anchor object has zero explorer support).
    #[arg(long)]
    explorer: Vec<PathBuf>,
    /// Emit the decision as JSON (keys documented in the README).
    #[arg(long)]
    json: bool,
}

/// Where the model, the config and the data come from (paths only; no hyper-parameters).
#[derive(Args)]
struct Source {
    /// The YAML config (prompt, template and packing sections are used).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model directory; overrides the config's `model.path`.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The JSONL dataset.
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(Args)]
struct SampleArgs {
    #[command(flatten)]
    source: Source,
    /// 1-based line number of the record in the JSONL file.
    #[arg(long)]
    line: Option<usize>,
    /// Emit the messages, ids, labels, token types, position ids and image grids as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PackArgs {
    #[command(flatten)]
    source: Source,
    /// Emit the statistics and checksum as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InspectArgs) -> crate::CliResult {
    match args.command {
        Some(InspectCommand::Pack(p)) => run_pack(p),
        Some(InspectCommand::Rollout(r)) => run_rollout(r),
        None => run_sample(args.sample),
    }
}

struct Loaded {
    config: Config,
    encoder: Encoder,
    data: PathBuf,
}

fn required<T>(value: Option<T>, flag: &str) -> Result<T> {
    value.ok_or_else(|| {
        Error::input(format!("missing {flag}"))
            .hint("usage: coordexp inspect --config CFG [--model DIR] --data FILE.jsonl --line N [--json]")
    })
}

fn load(source: Source) -> Result<Loaded> {
    let config_path = required(source.config, "--config")?;
    let data = required(source.data, "--data")?;
    let config = config::load(&config_path)?.config;
    let session = Session::open(&config, source.model.as_deref(), Some(1))?;
    Ok(Loaded { config, encoder: session.encoder, data })
}

fn encode_record(l: &Loaded, record: &Record, at: &str) -> Result<(Answer, EncodedSample)> {
    let answer = Answer::from_record(record, l.config.prompt.field_order)
        .map_err(|e| e.at(at.to_string()))?;
    let images = vec![record.size(); record.images().len()];
    let sample =
        l.encoder.encode(&images, Turn::Train(&answer)).map_err(|e| e.at(at.to_string()))?;
    Ok((answer, sample))
}

fn run_sample(args: SampleArgs) -> crate::CliResult {
    let line = required(args.line, "--line")?;
    let l = load(args.source)?;
    let record = read_record_at(&l.data, line)?;
    let at = format!("{}:{line}", l.data.display());
    let (answer, s) = encode_record(&l, &record, &at)?;
    let n_images = s.image_grid_thw.len();
    if args.json {
        let out = json!({
            "messages": l.encoder.messages(n_images, Some(answer.text())),
            "input_ids": s.input_ids,
            "labels": s.labels,
            "token_types": s.token_types,
            "position_ids": s.position_ids.rows,
            "image_grid_thw": s.image_grid_thw.iter().map(|g| g.to_array()).collect::<Vec<_>>(),
        });
        println!("{out}");
        return Ok(());
    }
    let text = l.encoder.render(n_images, Turn::Train(&answer))?;
    let merge = l.encoder.model().vision().merge_size;
    let mut shown = String::with_capacity(text.len() + 16);
    let mut grids = s.image_grid_thw.iter();
    let mut rest = text.as_str();
    while let Some(k) = rest.find(IMAGE_PAD) {
        shown.push_str(&rest[..k + IMAGE_PAD.len()]);
        if let Some(g) = grids.next() {
            shown.push_str(&format!("×{}", g.tokens(merge)));
        }
        rest = &rest[k + IMAGE_PAD.len()..];
    }
    shown.push_str(rest);
    println!("{shown}");
    println!("---");
    let supervised = s.labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
    println!("tokens: {} (supervised {supervised})", s.len());
    let mut by_type: BTreeMap<TokenType, usize> = BTreeMap::new();
    for t in &s.token_types {
        *by_type.entry(*t).or_default() += 1;
    }
    let counts: Vec<String> = by_type
        .iter()
        .map(|(t, n)| {
            format!("{}={n}", serde_json::to_value(t).unwrap_or_default().as_str().unwrap_or("?"))
        })
        .collect();
    println!("token types: {}", counts.join(" "));
    let grids: Vec<String> =
        s.image_grid_thw.iter().map(|g| format!("[{}, {}, {}]", g.t, g.h, g.w)).collect();
    println!("image_grid_thw: [{}]", grids.join(", "));
    Ok(())
}

const IMAGE_PAD: &str = "<|image_pad|>";

fn run_pack(args: PackArgs) -> crate::CliResult {
    let l = load(args.source)?;
    let records = read_records(&l.data)?;
    let mut lengths = Vec::with_capacity(records.len());
    for (line, record) in &records {
        let at = format!("{}:{line}", l.data.display());
        let (_, s) = encode_record(&l, record, &at)?;
        lengths.push(u32::try_from(s.len()).map_err(|_| Error::input("sample too long").at(at))?);
    }
    let seed = epoch_seed(l.config.run.seed, 0);
    let p = plan(&lengths, &l.config.packing, seed)?;
    let st = p.stats();
    if args.json {
        println!("{}", json!({"stats": st, "checksum": p.checksum(), "epoch": 0, "seed": seed}));
        return Ok(());
    }
    println!(
        "samples {} -> packs {} (capacity {} tokens)\n\
         fill: mean {:.4} min {:.4} max {:.4}; tokens {}\n\
         oversize singletons {}; dropped packs {} (samples {}, tokens {})\n\
         checksum {}",
        st.samples,
        st.packs,
        st.capacity,
        st.mean_fill,
        st.min_fill,
        st.max_fill,
        st.tokens,
        st.oversize_singletons,
        st.dropped_packs,
        st.dropped_samples,
        st.dropped_tokens,
        p.checksum()
    );
    Ok(())
}

fn read_text(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::io("read", path, &e).or_hint("pass a UTF-8 text file with the model's answer")
    })
}

fn run_rollout(a: RolloutArgs) -> crate::CliResult {
    let line = a.line.ok_or_else(|| {
        Error::input("missing --line").hint("usage: coordexp inspect rollout --config CFG --data FILE.jsonl --line N --text ROLLOUT.txt")
    })?;
    let text_path = a.text.ok_or_else(|| {
        Error::input("missing --text")
            .hint("give the anchor rollout text in a file: --text ROLLOUT.txt")
    })?;
    let l = load(a.source)?;
    let record = read_record_at(&l.data, line)?;
    let anchor = read_text(&text_path)?;
    let explorers = a.explorer.iter().map(|p| read_text(p)).collect::<Result<Vec<_>>>()?;
    let explorer_refs: Vec<&str> = explorers.iter().map(String::as_str).collect();
    let at = format!("{}:{line}", l.data.display());
    let ins = inspect_rollout(&l.config, &l.encoder, &record, &anchor, &explorer_refs)
        .map_err(|e| e.at(at.clone()))?;
    if a.json {
        let v = ins.to_json()?;
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| Error::runtime(e.to_string()))?
        );
        return Ok(());
    }
    print_inspection(&at, &ins);
    Ok(())
}

fn print_inspection(at: &str, ins: &coordexp_train::trainer::stage2::inspect::Inspection) {
    let d = &ins.decision;
    println!("channel B for {at}");
    println!(
        "anchor: {} bbox-valid objects, {} dropped{}{}",
        d.counters.n_valid_pred,
        d.dropped.len(),
        if d.anchor.invalid {
            ", INVALID (no container): empty prefix, every object injected"
        } else {
            ""
        },
        if d.anchor.truncated { ", truncated" } else { "" }
    );
    for x in &d.dropped {
        println!("  dropped: {}", serde_json::to_string(x).unwrap_or_default());
    }
    println!("explorers: {}", d.explorers.len());
    println!(
        "duplicates: {} clusters, suppressed {:?}",
        d.duplicates.clusters.len(),
        d.duplicates.suppressed
    );
    for c in &d.duplicates.clusters {
        println!("  {}", serde_json::to_string(c).unwrap_or_default());
    }
    println!("clean anchors:");
    for (i, c) in d.clean.iter().enumerate() {
        let bins: Vec<u16> = c.bbox.iter().map(|b| b.get()).collect();
        println!("  [{i}] {:?} {:?} — {}", c.desc, bins, label(d, i));
    }
    println!("matching (mask IoU at resolution {}):", d.matching.settings.mask_resolution);
    for ([c, g], iou) in d.matching.pairs.iter().zip(&ins.pair_mask_iou) {
        println!("  clean {c} ↔ ground truth {g}: {iou:.3}");
    }
    println!("  missed ground truth (injected): {:?}", d.matching.fn_gt);
    println!(
        "  unmatched clean anchors: {:?}; gating rejections: {}",
        d.matching.fp, d.matching.gating_rejections
    );
    println!("target: {}", d.target.text);
    println!("  {:>4}  {:<24} {:>7}  token", "#", "role", "weight");
    for (j, t) in ins.target_tokens.iter().enumerate() {
        println!("  {j:>4}  {:<24} {:>7.3}  {:?}", t.role, t.weight, t.text);
    }
    let u = &ins.unlikelihood_targets;
    println!(
        "unlikelihood: {} targets at {} boundaries, {} without divergence",
        u.targets.len(),
        u.boundaries,
        u.skipped_no_divergence
    );
    for t in &u.targets {
        println!(
            "  boundary {} at target token {}: push down token {}",
            t.boundary, t.rel_pos, t.token_id
        );
    }
}

/// What triage made of clean anchor `i`.
fn label(d: &coordexp_stage2::Decision, i: usize) -> String {
    match d.triage.labels.get(i) {
        Some(l) => format!("{l:?}").to_lowercase(),
        None => "unknown".into(),
    }
}
