//! `coordexp demo`: the embedded default run, end to end on a CPU.
//!
//! ```text
//! synth data (OUT/data) → tokenizer learned from the training conversations
//!   → fresh demo-sized Qwen3-VL checkpoint (OUT/model) → config (OUT/demo.yaml, extending the
//!   shipped configs/demo/stage1.yaml) → stage-1 training under a wall-clock budget
//!   → evaluation of the untrained (step 0), intermediate and final model on the val set
//! ```
//!
//! The config written to `OUT/demo.yaml` is an ordinary config: `coordexp train OUT/demo.yaml`
//! repeats the training. The time budget is split up front: the number of optimizer steps is
//! the training share of the budget divided by a measured step time (a short throughput probe
//! on the real data), so the learning-rate schedule completes; as the machine's pace drifts the
//! trainer re-fits the schedule to what fits (trainer::budget), and the deadline backs it up.

mod model;
pub mod tokenizer;

pub use model::{Arch, write_model_dir};

use coordexp_core::config::{self, Loaded};
use coordexp_core::prompt::Prompts;
use coordexp_core::record::read_records;
use coordexp_core::{Error, Result};
use coordexp_data::synth::{SceneSpec, SynthOptions, generate_with};
use coordexp_text::messages::conversation;
use coordexp_text::{Answer, ChatTemplate};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::trainer::{self, EvalCallback, TrainOptions, TrainSummary};
use coordexp_model::vision::preprocess::PixelNorm;

/// The Qwen3-VL chat template (the released model's, verbatim).
pub const CHAT_TEMPLATE: &str =
    include_str!("../../../../tests/fixtures/qwen3vl-text/chat_template.jinja");
/// The shipped configs the demo config extends.
const BASE_YAML: &str = include_str!("../../../../configs/base.yaml");
const DEMO_YAML: &str = include_str!("../../../../configs/demo/stage1.yaml");

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Everything goes under this directory (which must not hold a previous demo).
    pub out: PathBuf,
    /// Wall-clock budget of the whole demo, data generation and evaluations included.
    pub minutes: f64,
    pub train_images: usize,
    pub val_images: usize,
    pub seed: u64,
}

/// What the demo produced.
pub struct DemoReport {
    pub summary: TrainSummary,
    pub config: PathBuf,
    pub parameters: i64,
    pub vocab_size: usize,
}

/// The demo's inputs, ready to train: data, model directory and config.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `OUT/demo.yaml`.
    pub config: PathBuf,
    pub parameters: i64,
    pub vocab_size: usize,
}

/// Write the synthetic data (`OUT/data`), the configs (`OUT/config/…`, `OUT/demo.yaml`) and a
/// fresh model of architecture `arch` with a tokenizer learned from the training conversations
/// (`OUT/model`). Tests use this with a smaller `arch` and small splits.
pub fn prepare(
    out: &Path,
    train_images: usize,
    val_images: usize,
    seed: u64,
    arch: &Arch,
) -> Result<Prepared> {
    let data = out.join("data");
    generate_with(
        &SynthOptions { out: data.clone(), train: train_images, val: val_images, seed },
        &scenes(),
    )?;
    let config = out.join("demo.yaml");
    write_configs(out, &config, None)?;
    let loaded = config::load(&config)?;
    let train = data.join("train.jsonl");
    let tok = tokenizer::learn(&corpus(&loaded, &train)?, 4000)?;
    let norm = pixel_statistics(&train, 200)?;
    let model_dir = out.join("model");
    let parameters = write_model_dir(
        &model_dir,
        &tok,
        arch,
        &norm,
        loaded.config.template.max_pixels,
        seed as i64,
    )?;
    Ok(Prepared { config, parameters, vocab_size: tok.get_vocab_size(true) })
}

/// Run the demo; `on_eval` sees every evaluation as it finishes (the untrained model first).
pub fn run(opts: &DemoOptions, on_eval: EvalCallback) -> Result<DemoReport> {
    let start = Instant::now();
    if !(opts.minutes > 0.0 && opts.minutes.is_finite()) {
        return Err(Error::input(format!("--minutes {} must be positive", opts.minutes))
            .hint("give the demo's wall-clock budget in minutes, e.g. --minutes 10"));
    }
    let prepared = prepare(&opts.out, opts.train_images, opts.val_images, opts.seed, &Arch::DEMO)?;
    tracing::info!(
        "demo model: {} parameters, vocabulary {}",
        prepared.parameters,
        prepared.vocab_size
    );
    let budget = Duration::from_secs_f64(opts.minutes * 60.0);
    // Evaluations and the final checkpoint share the rest of the budget.
    let reserve = budget.mul_f64(0.05).max(Duration::from_secs(20));
    let probe = trainer::probe(&config::load(&prepared.config)?, 10)?;
    let tried: Vec<String> =
        probe.tried.iter().map(|(plan, rate)| format!("{rate:.1} steps/min with {plan}")).collect();
    tracing::info!("throughput probe: {}; training with {}", tried.join(", "), probe.cpu);
    let steps_per_minute = probe.steps_per_minute;
    let train_budget = budget.saturating_sub(start.elapsed() + reserve);
    // 5% below the probe's estimate, for the evaluations and checkpoints along the way; the
    // trainer re-fits the schedule when the machine's pace drifts (trainer::budget).
    let max_steps =
        (0.95 * (train_budget.as_secs_f64() / 60.0) * steps_per_minute).floor().max(1.0);
    write_configs(&opts.out, &prepared.config, Some(max_steps as u64))?;
    let loaded = config::load(&prepared.config)?;
    tracing::info!(
        "training for {max_steps} steps ({steps_per_minute:.1} steps/min, {:.0} s of training)",
        train_budget.as_secs_f64()
    );
    let summary = trainer::train(
        &loaded,
        TrainOptions {
            deadline: Some(start + budget.saturating_sub(reserve)),
            on_eval: Some(on_eval),
            cpu: Some(probe.cpu),
            ..TrainOptions::default()
        },
    )?;
    Ok(DemoReport {
        summary,
        config: prepared.config,
        parameters: prepared.parameters,
        vocab_size: prepared.vocab_size,
    })
}

/// The demo's scenes: 128×128 images with one to four shapes. Why not the default 128–256 px
/// and up to six: on a 2-core CPU the budget buys a few tens of thousands of samples, and
/// smaller, sparser scenes (16 image tokens, shorter answers) turn that budget into more
/// samples of an easier localisation problem — the same design as the reference prototype.
pub fn scenes() -> SceneSpec {
    SceneSpec { sides: vec![128], min_objects: 1, max_objects: 4 }
}

/// Per-channel mean and standard deviation of the pixels of the first `n` training images (in
/// [0, 1]), the model's pixel normalisation (see [`model`]).
fn pixel_statistics(train: &Path, n: usize) -> Result<PixelNorm> {
    let mut sum = [0f64; 3];
    let mut sq = [0f64; 3];
    let mut count = 0f64;
    for (_, record) in read_records(train)?.into_iter().take(n) {
        for image in record.images() {
            let path = coordexp_data::images::resolve_image(train, image);
            let img = image::open(&path)
                .map_err(|e| Error::input(format!("cannot decode {}: {e}", path.display())))?
                .to_rgb8();
            for px in img.pixels() {
                for c in 0..3 {
                    let v = f64::from(px.0[c]) / 255.0;
                    sum[c] += v;
                    sq[c] += v * v;
                }
                count += 1.0;
            }
        }
    }
    if count == 0.0 {
        return Err(Error::input(format!("{} has no images", train.display())));
    }
    let mean = sum.map(|s| s / count);
    let std: [f64; 3] =
        std::array::from_fn(|c| (sq[c] / count - mean[c] * mean[c]).max(1e-4).sqrt());
    Ok(PixelNorm { mean: mean.map(|m| m as f32), std: std.map(|s| s as f32) })
}

/// The chat-rendered training conversations, the tokenizer's corpus.
fn corpus(loaded: &Loaded, train: &Path) -> Result<Vec<String>> {
    let cfg = &loaded.config;
    let prompts = Prompts::resolve(&cfg.prompt)?;
    let template = ChatTemplate::new(CHAT_TEMPLATE.to_string())?;
    let mut out = Vec::new();
    for (line, record) in read_records(train)? {
        let answer = Answer::from_record(&record, cfg.prompt.field_order)
            .map_err(|e| e.at(format!("{}:{line}", train.display())))?;
        let messages = conversation(
            &prompts.system,
            &prompts.user,
            record.images().len(),
            Some(answer.text()),
        );
        out.push(template.render(&messages, false)?);
    }
    Ok(out)
}

/// Write the shipped configs under `OUT/config/` and the demo's leaf config `path`, which points
/// the data, model and run directory into `OUT` (and the step count, once the time budget has fixed it).
fn write_configs(out: &Path, path: &Path, max_steps: Option<u64>) -> Result<()> {
    let dir = out.join("config");
    let demo_dir = dir.join("demo");
    std::fs::create_dir_all(&demo_dir).map_err(|e| Error::io("create", &demo_dir, &e))?;
    for (p, text) in [(dir.join("base.yaml"), BASE_YAML), (demo_dir.join("stage1.yaml"), DEMO_YAML)]
    {
        std::fs::write(&p, text).map_err(|e| Error::io("write", &p, &e))?;
    }
    let q = |p: PathBuf| serde_json::Value::from(p.display().to_string()).to_string();
    let mut leaf = format!(
        "# Written by `coordexp demo`; `coordexp train {}` repeats the training.\n\
         extends: config/demo/stage1.yaml\n\
         run:\n  output_dir: {}\n\
         data:\n  train: {}\n  val: {}\n\
         model:\n  path: {}\n",
        path.display(),
        q(out.join("runs")),
        q(out.join("data").join("train.jsonl")),
        q(out.join("data").join("val.jsonl")),
        q(out.join("model")),
    );
    if let Some(max_steps) = max_steps {
        // Five evaluations along the way draw the curve; two checkpoints are kept.
        let every = max_steps.div_ceil(5).max(1);
        leaf.push_str(&format!(
            "train:\n  max_steps: {max_steps}\n  eval_every: {every}\n  save_every: {every}\n"
        ));
    }
    crate::checkpoint::write_file_atomically(path, leaf.as_bytes())
}
