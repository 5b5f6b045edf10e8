//! coordexp-demo: everything `coordexp demo` (and the tests that train a tiny model) needs
//! before training — data, a tokenizer, a model directory and configs, all generated.
//!
//! ```text
//! synth data (OUT/data) → tokenizer learned from the training conversations
//!   → fresh demo-sized Qwen3-VL checkpoint (OUT/model) → config (OUT/demo.yaml, extending the
//!   shipped configs/demo/stage1.yaml)
//! ```
//!
//! The config written to `OUT/demo.yaml` is an ordinary config: `coordexp train OUT/demo.yaml`
//! trains on the demo's data. The driver that splits the time budget and trains lives in the
//! CLI (`coordexp demo`); this crate never trains, so the trainer's own tests can build their
//! fixtures with it.
//!
//! The chat template is the released Qwen3-VL template, shipped as this crate's data file
//! (`data/chat_template.jinja`).

mod model;
pub mod tokenizer;

pub use model::{Arch, write_model_dir};

use coordexp_core::config::{self, Loaded};
use coordexp_core::progress::Progress;
use coordexp_core::prompt::Prompts;
use coordexp_core::record::read_records;
use coordexp_core::{Error, Result};
use coordexp_data::synth::{SceneSpec, SynthOptions, generate_with};
use coordexp_text::messages::conversation;
use coordexp_text::{Answer, ChatTemplate};
use std::path::{Path, PathBuf};

use coordexp_model::vision::preprocess::PixelNorm;

/// The Qwen3-VL chat template (the released model's, verbatim), a data file of this crate.
pub const CHAT_TEMPLATE: &str = include_str!("../data/chat_template.jinja");
/// The shipped configs the demo config extends.
const BASE_YAML: &str = include_str!("../../../configs/base.yaml");
const DEMO_YAML: &str = include_str!("../../../configs/demo/stage1.yaml");
const STAGE2_YAML: &str = include_str!("../../../configs/stage2/demo.yaml");

/// The training length the demo's time budget fixed: the schedule's steps, and the interval of
/// evaluations and checkpoints (five along the way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub max_steps: u64,
    pub every: u64,
}

impl Schedule {
    /// A schedule of `max_steps` with five evaluations along the way.
    pub fn of(max_steps: u64) -> Schedule {
        Schedule { max_steps, every: max_steps.div_ceil(5).max(1) }
    }
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
    prepare_scenes(out, train_images, val_images, seed, arch, &scenes())
}

/// [`prepare`] with other scenes (tests that must learn within seconds use one object per
/// image).
pub fn prepare_scenes(
    out: &Path,
    train_images: usize,
    val_images: usize,
    seed: u64,
    arch: &Arch,
    scenes: &SceneSpec,
) -> Result<Prepared> {
    let data = out.join("data");
    generate_with(
        &SynthOptions {
            out: data.clone(),
            train: train_images,
            val: val_images,
            seed,
            progress: Progress::OFF,
        },
        scenes,
    )?;
    let config = out.join("demo.yaml");
    write_configs(out, &config, &Leaf { extends: STAGE1, ..Leaf::default() })?;
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

/// The shipped configs the demo's leaf configs extend, written under `OUT/config/`.
pub const STAGE1: &str = "config/demo/stage1.yaml";
pub const STAGE2: &str = "config/stage2/demo.yaml";

/// A leaf config of the demo: which shipped config it extends, and what it sets.
#[derive(Debug, Clone, Default)]
pub struct Leaf {
    /// `STAGE1` or `STAGE2`.
    pub extends: &'static str,
    pub run_name: Option<String>,
    /// The model directory (default `OUT/model`, the fresh model).
    pub model: Option<PathBuf>,
    pub schedule: Option<Schedule>,
    /// Keys of the leaf's `optim` section (`"warmup: 0.0"`, …).
    pub optim: Vec<String>,
}

/// Write the shipped configs under `OUT/config/` and the leaf config `path`, which points the
/// data, model and run directory into `OUT` (and the schedule, once the time budget has fixed
/// it: after training, the demo writes the re-fitted total so the file says what ran).
pub fn write_configs(out: &Path, path: &Path, leaf: &Leaf) -> Result<()> {
    let dir = out.join("config");
    for (rel, text) in [
        ("base.yaml", BASE_YAML),
        ("demo/stage1.yaml", DEMO_YAML),
        ("stage2/demo.yaml", STAGE2_YAML),
    ] {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, &e))?;
        }
        std::fs::write(&p, text).map_err(|e| Error::io("write", &p, &e))?;
    }
    let q = |p: &Path| serde_json::Value::from(p.display().to_string()).to_string();
    let extends = if leaf.extends.is_empty() { STAGE1 } else { leaf.extends };
    let model = leaf.model.clone().unwrap_or_else(|| out.join("model"));
    let mut text = format!(
        "# Written by `coordexp demo`; `coordexp train {}` trains on the demo's data.\n\
         extends: {extends}\n\
         run:\n  output_dir: {}\n",
        path.display(),
        q(&out.join("runs")),
    );
    if let Some(name) = &leaf.run_name {
        text.push_str(&format!("  name: {name}\n"));
    }
    text.push_str(&format!(
        "data:\n  train: {}\n  val: {}\nmodel:\n  path: {}\n",
        q(&out.join("data").join("train.jsonl")),
        q(&out.join("data").join("val.jsonl")),
        q(&model),
    ));
    if let Some(Schedule { max_steps, every }) = leaf.schedule {
        text.push_str(&format!(
            "train:\n  max_steps: {max_steps}\n  eval_every: {every}\n  save_every: {every}\n"
        ));
    }
    if !leaf.optim.is_empty() {
        text.push_str("optim:\n");
        for line in &leaf.optim {
            text.push_str(&format!("  {line}\n"));
        }
    }
    std::fs::write(path, text.as_bytes()).map_err(|e| Error::io("write", path, &e))
}
