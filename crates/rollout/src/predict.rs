//! Predictions: batched generation on records, the raw text, and a confidence per object.
//!
//! Shared by the trainer's periodic evaluation, `coordexp infer` and the embedded rollout
//! backend, so all of them decode a checkpoint the same way. A prediction line keeps the model's raw text (the `eval preds` input, parsed
//! there with the salvage parser) and adds `object_scores`: for each object the salvage parser
//! keeps, in order, `exp(mean log-prob of its coordinate tokens)` under the raw model
//! distribution — the geometric-mean probability of its box, a calibrated-enough ranking signal
//! for COCO AP.
//!
//! The text is rebuilt piecewise (runs of ordinary tokens decoded together, each coordinate
//! token as its literal) so every coordinate token has a known byte span, and each parsed
//! object's coordinate spans select exactly its tokens.

use coordexp_core::config::schema::Decoding;
use coordexp_core::coordjson::parse_salvage;
use coordexp_core::progress::Task;
use coordexp_core::record::Record;
use coordexp_core::{Error, Result};
use coordexp_model::generate::{
    Generation, Job, Prompt, Sample, SamplingConfig, StopReason, generate_jobs,
};
use coordexp_model::model::Qwen3VL;
use coordexp_model::vision::preprocess::ImageBatch;
use coordexp_text::{Encoder, Turn};
use serde_json::{Value, json};
use std::collections::HashMap;
use tch::Tensor;

use crate::inputs::VisionInput;
use crate::split::Item;

/// The sampling settings of a config's decoding section (`eval.decoding`, the channel-B
/// explorers, a server request): the one conversion from config to sampler. `top_k: -1`
/// (disabled) becomes 0.
pub fn sampling(decoding: &Decoding, max_new_tokens: usize, stop_ids: Vec<i64>) -> SamplingConfig {
    SamplingConfig {
        temperature: decoding.temperature,
        top_p: decoding.top_p,
        top_k: usize::try_from(decoding.top_k).unwrap_or(0),
        repetition_penalty: decoding.repetition_penalty,
        max_new_tokens,
        stop_ids,
    }
}

/// The generation prompt of one record, as the model takes it: the learner's encoding of the
/// prompt (chat template, image pads, mRoPE positions) and the image patches.
pub struct PromptInputs {
    pub ids: Vec<i64>,
    /// `[4, L]` (the text row, then the three mRoPE rows).
    pub positions: Tensor,
    pub images: Option<ImageBatch>,
}

impl PromptInputs {
    /// Encode `item`'s generation prompt (errors name the record's line).
    pub fn of(encoder: &Encoder, vision: &VisionInput<'_>, item: &Item) -> Result<PromptInputs> {
        let sample = encoder
            .encode(&item.sizes(), Turn::Generate)
            .map_err(|e| e.at(format!("record on line {}", item.line)))?;
        let ids: Vec<i64> = sample.input_ids.iter().map(|&i| i64::from(i)).collect();
        let n = ids.len() as i64;
        let rows: Vec<i64> = sample.position_ids.rows.iter().flatten().copied().collect();
        let positions = Tensor::from_slice(&rows).view([4, n]);
        let images = ImageBatch::concat(&vision.patchify(&item.pixels)?);
        Ok(PromptInputs { ids, positions, images })
    }

    /// The prompt for `generate`, sampling from the stream seeded `seed`.
    pub fn prompt(&self, seed: u64) -> Prompt<'_> {
        Prompt { ids: &self.ids, position_ids: &self.positions, images: self.images.as_ref(), seed }
    }
}

/// Batches of `batch_size` rows handed to the engine per call by [`Predictor::predict_counted`].
const PER_CALL: usize = 4;

/// Generates answers for records with one model.
pub struct Predictor<'a> {
    pub model: &'a Qwen3VL,
    pub encoder: &'a Encoder,
    pub vision: VisionInput<'a>,
    pub sampling: SamplingConfig,
    /// Prompts per generation call.
    pub batch_size: usize,
    /// Item `k` of a [`Predictor::predict`] call samples from the stream seeded `seed + k`
    /// (whatever the batching; the seed matters only when sampling).
    pub seed: u64,
}

/// What the model wrote for one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The raw text (the end-of-turn token included when the model wrote it).
    pub text: String,
    /// One score per object the salvage parser keeps, in order.
    pub object_scores: Vec<f64>,
    pub new_tokens: usize,
    /// True when generation stopped at `max_new_tokens` rather than at an end-of-turn token.
    pub hit_max_new_tokens: bool,
}

impl Predictor<'_> {
    /// Predict every item, `batch_size` at a time, in order.
    pub fn predict(&self, items: &[&Item]) -> Result<Vec<Prediction>> {
        self.predict_counted(items, &Task::off())
    }

    /// [`Predictor::predict`], counting finished items into `task`. Items go to the engine
    /// [`PER_CALL`] batches at a time, so rows that finish early are refilled (continuous
    /// batching) while the prompts in memory stay bounded; item `i` samples from the stream
    /// seeded `seed + i` whatever the grouping.
    pub fn predict_counted(&self, items: &[&Item], task: &Task) -> Result<Vec<Prediction>> {
        let mut out = Vec::with_capacity(items.len());
        let chunk_len = self.batch_size.max(1) * PER_CALL;
        for (k, chunk) in items.chunks(chunk_len).enumerate() {
            let first = self.seed.wrapping_add((k * chunk_len) as u64);
            out.extend(self.predict_batch(chunk, first)?);
            task.inc(chunk.len() as u64);
        }
        Ok(out)
    }

    fn predict_batch(&self, items: &[&Item], first_seed: u64) -> Result<Vec<Prediction>> {
        let inputs = items
            .iter()
            .map(|item| PromptInputs::of(self.encoder, &self.vision, item))
            .collect::<Result<Vec<_>>>()?;
        let prompts: Vec<Prompt<'_>> = inputs
            .iter()
            .enumerate()
            .map(|(i, p)| p.prompt(first_seed.wrapping_add(i as u64)))
            .collect();
        let jobs: Vec<Job<'_>> = prompts
            .into_iter()
            .map(|p| {
                let seed = p.seed;
                Job { prompt: p, samples: vec![Sample { seed, cfg: &self.sampling }] }
            })
            .collect();
        let generations = generate_jobs(self.model, &jobs, self.batch_size.max(1))?;
        generations.into_iter().flatten().map(|g| self.describe(g)).collect()
    }

    fn describe(&self, g: Generation) -> Result<Prediction> {
        let (text, coord_logprobs) = decode_with_coords(self.encoder, &g.tokens, &g.logprobs)?;
        let parsed = parse_salvage(&text, None);
        let object_scores = parsed
            .objects
            .iter()
            .map(|o| {
                let lps: Vec<f64> = o
                    .coord_spans
                    .iter()
                    .filter_map(|s| coord_logprobs.get(&s.start).copied())
                    .collect();
                if lps.is_empty() {
                    0.0
                } else {
                    (lps.iter().sum::<f64>() / lps.len() as f64).exp()
                }
            })
            .collect();
        Ok(Prediction {
            text,
            object_scores,
            new_tokens: g.tokens.len(),
            hit_max_new_tokens: g.stop == StopReason::MaxNewTokens,
        })
    }
}

/// The text of generated `tokens` and the log-prob of each coordinate token keyed by its byte
/// offset in that text (`logprobs` may be empty when only the text is wanted).
///
/// Runs of ordinary tokens are decoded together and each coordinate token becomes its literal,
/// so every coordinate token has a known byte span whatever the tokenizer's decoder does.
pub fn decode_with_coords(
    encoder: &Encoder,
    tokens: &[i64],
    logprobs: &[f32],
) -> Result<(String, HashMap<usize, f64>)> {
    let tok = encoder.model().tokenizer();
    let vocab = encoder.model().vocab();
    let mut text = String::new();
    let mut coords = HashMap::new();
    let mut run: Vec<u32> = Vec::new();
    let flush = |run: &mut Vec<u32>, text: &mut String| -> Result<()> {
        if !run.is_empty() {
            let piece = tok
                .decode(run, false)
                .map_err(|e| Error::runtime(format!("cannot decode generated tokens: {e}")))?;
            text.push_str(&piece);
            run.clear();
        }
        Ok(())
    };
    for (k, &id) in tokens.iter().enumerate() {
        let id = u32::try_from(id)
            .map_err(|_| Error::runtime(format!("generated token id {id} is negative")))?;
        match vocab.bin(id) {
            Some(bin) => {
                flush(&mut run, &mut text)?;
                if let Some(lp) = logprobs.get(k) {
                    coords.insert(text.len(), f64::from(*lp));
                }
                text.push_str(&bin.token());
            }
            None => run.push(id),
        }
    }
    flush(&mut run, &mut text)?;
    Ok((text, coords))
}

/// The prediction line of `record`: its identity (`id` when the record has one, and the first
/// image), its size, the raw text and the object scores.
pub fn prediction_line(record: &Record, p: &Prediction) -> Value {
    let mut line = serde_json::Map::new();
    if let Some(id) = record.extra().get("id") {
        line.insert("id".into(), id.clone());
    }
    line.insert("image".into(), json!(record.images().first()));
    line.insert("width".into(), json!(record.size().width()));
    line.insert("height".into(), json!(record.size().height()));
    line.insert("text".into(), json!(p.text));
    line.insert("object_scores".into(), json!(p.object_scores));
    Value::Object(line)
}
