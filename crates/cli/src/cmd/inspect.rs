//! `coordexp inspect`: how one record becomes tokens, and how a dataset packs.
//!
//! ```text
//! coordexp inspect --config CFG [--model DIR] --data FILE.jsonl --line N [--json]
//! coordexp inspect pack --config CFG [--model DIR] --data FILE.jsonl [--json]
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
