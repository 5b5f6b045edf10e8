//! The model directory and the sampled records encoded through it, exactly as the trainer
//! encodes them (`Answer::from_record` in the configured field order, `Encoder::encode`).

use crate::context::Ctx;
use crate::data::DataFile;
use crate::report::{Finding, Setting};
use coordexp_core::Error;
use coordexp_core::prompt::Prompts;
use coordexp_core::record::Record;
use coordexp_text::{Answer, EncodedSample, Encoder, IGNORE_INDEX, ModelDir, TokenType};
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The model directory of the audit, as far as it loaded.
pub(crate) enum ModelState {
    /// No model directory was given; the reason says so.
    Absent(String),
    /// It did not load: `owner` is the check that reports `error`.
    Broken {
        owner: &'static str,
        error: Error,
    },
    Ready(Box<Encoder>),
}

impl ModelState {
    pub fn encoder(&self) -> Option<&Encoder> {
        match self {
            ModelState::Ready(e) => Some(e),
            _ => None,
        }
    }

    /// Why a check that needs the encoder cannot run (`None` when it can).
    pub fn unavailable(&self) -> Option<String> {
        match self {
            ModelState::Ready(_) => None,
            ModelState::Absent(reason) => Some(reason.clone()),
            ModelState::Broken { owner, .. } => Some(format!(
                "the model directory did not load, so nothing could be encoded (reported by the `{owner}` check)"
            )),
        }
    }
}

/// Where the model directory comes from: `--model`, else `model.path`.
pub(crate) fn model_source(ctx: &Ctx<'_>) -> Option<(PathBuf, Setting)> {
    if let Some(p) = &ctx.opts.model {
        let s = Setting {
            key: "model.path".into(),
            value: p.display().to_string(),
            origin: "--model".into(),
        };
        return Some((p.clone(), s));
    }
    ctx.cfg.model.path.clone().map(|p| (p, ctx.setting("model.path")))
}

pub(crate) const NO_MODEL: &str =
    "no model directory: `model.path` is not set in the config and --model was not given";

/// Load the model directory, the prompts and the encoder. `vocab_failed`: the vocabulary check
/// already failed (a load error is then its to report).
pub(crate) fn load_model(ctx: &Ctx<'_>, src: Option<&PathBuf>, vocab_failed: bool) -> ModelState {
    let Some(dir) = src else {
        return ModelState::Absent(NO_MODEL.into());
    };
    ctx.progress.note(&format!("loading model directory {}", dir.display()));
    let owner = if vocab_failed { "coord_vocab" } else { "template" };
    let model = match ModelDir::load(dir) {
        Ok(m) => m,
        Err(error) => return ModelState::Broken { owner, error },
    };
    let built = Prompts::resolve(&ctx.cfg.prompt)
        .and_then(|prompts| Encoder::new(model, prompts, &ctx.cfg.template));
    match built {
        Ok(enc) => ModelState::Ready(Box::new(enc)),
        Err(error) => ModelState::Broken { owner: "template", error },
    }
}

/// One sampled record, encoded.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    /// Index into the audit's data files.
    pub file: usize,
    /// Index into that file's sample.
    pub index: usize,
    pub line: usize,
    /// Tokens of the training sample (image tokens included).
    pub len: usize,
    pub image_tokens: usize,
    /// Tokens before the answer: the generation prompt, image tokens included.
    pub prompt_len: usize,
    /// Tokens of the answer, the end-of-turn token excluded.
    pub answer_tokens: usize,
}

/// The sampled records of every file, encoded.
#[derive(Default)]
pub(crate) struct Encoding {
    pub samples: Vec<Encoded>,
    /// Records whose encoding failed: template / tokenizer drift, located `FILE:LINE`.
    pub drift: Vec<Finding>,
    /// Records whose answer could not be built (quantization), located `FILE:LINE`.
    pub record_errors: Vec<Finding>,
    /// Records not encoded because an image would need resizing (the images check reports it).
    pub resize_skipped: usize,
    /// Records sampled.
    pub attempted: usize,
}

impl Encoding {
    /// Encoded samples of one file, in sample order.
    pub fn of_file(&self, file: usize) -> impl Iterator<Item = &Encoded> {
        self.samples.iter().filter(move |e| e.file == file)
    }
}

/// The training answer of a record, as the trainer builds it for `object_ordering: sorted`
/// (file order; a random order changes which object comes first, not the token counts that
/// the audit measures).
pub(crate) fn answer_of(ctx: &Ctx<'_>, record: &Record) -> coordexp_core::Result<Answer> {
    Answer::from_record(record, ctx.cfg.prompt.field_order)
}

/// Encode a record as a training sample: the sample and its answer-token count.
pub(crate) fn encode_record(
    enc: &Encoder,
    answer: &Answer,
    record: &Record,
) -> coordexp_core::Result<(EncodedSample, usize)> {
    let sizes = vec![record.size(); record.images().len()];
    let (sample, ranges) = enc.encode_with_offsets(&sizes, answer)?;
    Ok((sample, ranges.len()))
}

/// Encode the sample of every file (in parallel, one encoder clone per thread).
pub(crate) fn encode_samples(ctx: &Ctx<'_>, files: &[DataFile], enc: &Encoder) -> Encoding {
    let jobs: Vec<(usize, usize)> = files
        .iter()
        .enumerate()
        .filter_map(|(f, file)| file.contents.as_ref().ok().map(|c| (f, c.sample.len())))
        .flat_map(|(f, n)| (0..n).map(move |i| (f, i)))
        .collect();
    ctx.progress.note(&format!("encoding {} sampled records", jobs.len()));
    let done = AtomicUsize::new(0);
    let proto = Mutex::new(enc.clone());
    let outcomes: Vec<Outcome> = jobs
        .par_iter()
        .map_init(
            || proto.lock().map(|e| e.clone()).ok(),
            |local, &(f, i)| {
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                ctx.progress.tick("records encoded", n, jobs.len());
                let Some(enc) = local.as_ref() else {
                    return Outcome::Drift(f, 0, "internal: no encoder for this thread".into());
                };
                let Some((line, record)) =
                    files[f].contents.as_ref().ok().and_then(|c| c.sample.get(i))
                else {
                    return Outcome::Drift(f, 0, "internal: sample index out of range".into());
                };
                encode_one(ctx, enc, f, i, *line, record)
            },
        )
        .collect();
    let mut out = Encoding { attempted: jobs.len(), ..Encoding::default() };
    for o in outcomes {
        match o {
            Outcome::Ok(e) => out.samples.push(e),
            Outcome::Drift(f, line, what) => out.drift.push(Finding::at(files[f].at(line), what)),
            Outcome::Record(f, line, what) => {
                out.record_errors.push(Finding::at(files[f].at(line), what))
            }
            Outcome::Resize => out.resize_skipped += 1,
        }
    }
    out
}

enum Outcome {
    Ok(Encoded),
    Drift(usize, usize, String),
    Record(usize, usize, String),
    Resize,
}

fn encode_one(
    ctx: &Ctx<'_>,
    enc: &Encoder,
    file: usize,
    index: usize,
    line: usize,
    record: &Record,
) -> Outcome {
    // An image that would need resizing is the images check's finding, not drift.
    if enc.grid(record.size()).is_err() {
        return Outcome::Resize;
    }
    let answer = match answer_of(ctx, record) {
        Ok(a) => a,
        Err(e) => return Outcome::Record(file, line, format!("cannot build the answer: {e}")),
    };
    match encode_record(enc, &answer, record) {
        Ok((s, answer_tokens)) => Outcome::Ok(Encoded {
            file,
            index,
            line,
            len: s.len(),
            image_tokens: s.token_types.iter().filter(|t| **t == TokenType::Image).count(),
            prompt_len: s.labels.iter().position(|l| *l != IGNORE_INDEX).unwrap_or(s.len()),
            answer_tokens,
        }),
        Err(e) => Outcome::Drift(file, line, e.what().to_string()),
    }
}
