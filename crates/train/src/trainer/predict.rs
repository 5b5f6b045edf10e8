//! Predictions: batched generation on records, the raw text, and a confidence per object.
//!
//! Shared by the trainer's periodic evaluation and `coordexp infer`, so both score a checkpoint
//! the same way. A prediction line keeps the model's raw text (the `eval preds` input, parsed
//! there with the salvage parser) and adds `object_scores`: for each object the salvage parser
//! keeps, in order, `exp(mean log-prob of its coordinate tokens)` under the raw model
//! distribution — the geometric-mean probability of its box, a calibrated-enough ranking signal
//! for COCO AP.
//!
//! The text is rebuilt piecewise (runs of ordinary tokens decoded together, each coordinate
//! token as its literal) so every coordinate token has a known byte span, and each parsed
//! object's coordinate spans select exactly its tokens.

use coordexp_core::coordjson::parse_salvage;
use coordexp_core::record::Record;
use coordexp_core::{Error, Result};
use coordexp_model::generate::{Generation, Prompt, SamplingConfig, StopReason, generate};
use coordexp_model::model::Qwen3VL;
use coordexp_model::vision::preprocess::{ImageBatch, patchify_rgb};
use coordexp_text::{Encoder, Turn};
use serde_json::{Value, json};
use std::collections::HashMap;
use tch::Tensor;

use super::batch::VisionInput;
use super::data::Item;

/// Generates answers for records with one model.
pub struct Predictor<'a> {
    pub model: &'a Qwen3VL,
    pub encoder: &'a Encoder,
    pub vision: VisionInput<'a>,
    pub sampling: SamplingConfig,
    /// Prompts per generation call.
    pub batch_size: usize,
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
    /// The stop ids of the chat format: `<|im_end|>` (and `<|endoftext|>` when present).
    pub fn stop_ids(encoder: &Encoder) -> Result<Vec<i64>> {
        let tok = encoder.model().tokenizer();
        let im_end = tok.token_to_id("<|im_end|>").ok_or_else(|| {
            Error::input("the tokenizer has no <|im_end|> token")
                .hint("use a Qwen3-VL tokenizer (its chat format ends turns with <|im_end|>)")
        })?;
        let mut ids = vec![i64::from(im_end)];
        ids.extend(tok.token_to_id("<|endoftext|>").map(i64::from));
        Ok(ids)
    }

    /// Predict every item, `batch_size` at a time, in order.
    pub fn predict(&self, items: &[&Item]) -> Result<Vec<Prediction>> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(self.batch_size.max(1)) {
            out.extend(self.predict_batch(chunk)?);
        }
        Ok(out)
    }

    fn predict_batch(&self, items: &[&Item]) -> Result<Vec<Prediction>> {
        let mut encoded = Vec::with_capacity(items.len());
        for item in items {
            let sample = self
                .encoder
                .encode(&item.sizes(), Turn::Generate)
                .map_err(|e| e.at(format!("record on line {}", item.line)))?;
            let ids: Vec<i64> = sample.input_ids.iter().map(|&i| i64::from(i)).collect();
            let n = ids.len() as i64;
            let rows: Vec<i64> = sample.position_ids.rows.iter().flatten().copied().collect();
            let positions = Tensor::from_slice(&rows).view([4, n]);
            let parts = item
                .pixels
                .iter()
                .map(|p| {
                    patchify_rgb(
                        &p.rgb,
                        i64::from(p.width),
                        i64::from(p.height),
                        self.vision.config,
                        &self.vision.norm,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            encoded.push((ids, positions, ImageBatch::concat(&parts)));
        }
        let prompts: Vec<Prompt<'_>> = encoded
            .iter()
            .map(|(ids, positions, images)| Prompt {
                ids,
                position_ids: positions,
                images: images.as_ref(),
            })
            .collect();
        let generations = generate(self.model, &prompts, &self.sampling)?;
        generations.into_iter().map(|g| self.describe(g)).collect()
    }

    fn describe(&self, g: Generation) -> Result<Prediction> {
        let (text, coord_logprobs) = self.text_with_coords(&g)?;
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

    /// The text of a generation and the log-prob of each coordinate token keyed by its byte
    /// offset in that text.
    fn text_with_coords(&self, g: &Generation) -> Result<(String, HashMap<usize, f64>)> {
        let tok = self.encoder.model().tokenizer();
        let vocab = self.encoder.model().vocab();
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
        for (&id, &lp) in g.tokens.iter().zip(&g.logprobs) {
            let id = u32::try_from(id)
                .map_err(|_| Error::runtime(format!("generated token id {id} is negative")))?;
            match vocab.bin(id) {
                Some(bin) => {
                    flush(&mut run, &mut text)?;
                    coords.insert(text.len(), f64::from(lp));
                    text.push_str(&bin.token());
                }
                None => run.push(id),
            }
        }
        flush(&mut run, &mut text)?;
        Ok((text, coords))
    }
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

/// What `coordexp infer` is asked to do.
#[derive(Debug, Clone)]
pub struct InferOptions {
    /// A checkpoint directory (or any HF-layout model directory with a tokenizer).
    pub checkpoint: std::path::PathBuf,
    pub data: std::path::PathBuf,
    pub out: std::path::PathBuf,
    /// Predict only the first N records.
    pub limit: Option<usize>,
}

/// What `coordexp infer` did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InferSummary {
    pub records: usize,
    /// Objects the salvage parser keeps, over all records.
    pub objects: usize,
    /// Answers cut off by `eval.max_new_tokens`.
    pub hit_max_new_tokens: usize,
    /// Where prompts and decoding settings came from.
    pub settings_from: String,
    pub seconds: f64,
}

/// Predict every record of `opts.data` with the checkpoint and write one prediction line per
/// record to `opts.out` (the `coordexp eval preds` input). Prompts, template limits, decoding
/// and batch size come from the checkpoint's `config.resolved.yaml` (the run's own settings);
/// a directory without one uses the defaults.
pub fn infer(opts: &InferOptions) -> Result<InferSummary> {
    use coordexp_core::config::{self, schema::Config};
    use coordexp_core::prompt::Prompts;
    use coordexp_model::vision::preprocess::PixelNorm;
    use std::io::BufWriter;

    let start = std::time::Instant::now();
    let stored = opts.checkpoint.join(super::run_dir::RESOLVED_CONFIG);
    let (cfg, settings_from) = if stored.is_file() {
        (config::load(&stored)?.config, stored.display().to_string())
    } else {
        (Config::default(), "defaults".to_string())
    };
    let (device, _) = super::configure_device(&cfg, None)?;
    let model_dir = coordexp_text::ModelDir::load(&opts.checkpoint)?;
    let encoder = Encoder::new(model_dir.clone(), Prompts::resolve(&cfg.prompt)?, &cfg.template)?;
    let max_pixels = cfg.template.max_pixels.min(model_dir.vision().max_pixels);
    let split = super::Split::load("data", &opts.data, opts.limit, max_pixels)?;
    let model = Qwen3VL::load(&opts.checkpoint, super::kind_of(cfg.model.dtype), device)?;
    let vision_cfg = model.config().vision.clone();
    let predictor = Predictor {
        model: &model,
        encoder: &encoder,
        vision: VisionInput {
            config: &vision_cfg,
            norm: PixelNorm::from_model_dir(&opts.checkpoint)?,
        },
        sampling: super::sampling(&cfg, &encoder, 0)?,
        batch_size: cfg.rollout.decode_batch_size.max(1) as usize,
    };
    if let Some(parent) = opts.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, &e))?;
    }
    let file = std::fs::File::create(&opts.out).map_err(|e| Error::io("create", &opts.out, &e))?;
    let mut w = BufWriter::new(file);
    let mut summary =
        InferSummary { records: 0, objects: 0, hit_max_new_tokens: 0, settings_from, seconds: 0.0 };
    let items: Vec<&Item> = split.items.iter().collect();
    for chunk in items.chunks(predictor.batch_size) {
        for (item, p) in chunk.iter().zip(predictor.predict(chunk)?) {
            serde_json::to_writer(&mut w, &prediction_line(&item.record, &p))
                .map_err(|e| Error::runtime(format!("cannot encode a prediction: {e}")))?;
            std::io::Write::write_all(&mut w, b"\n")
                .map_err(|e| Error::io("write", &opts.out, &e))?;
            summary.records += 1;
            summary.objects += p.object_scores.len();
            summary.hit_max_new_tokens += usize::from(p.hit_max_new_tokens);
        }
    }
    std::io::Write::flush(&mut w).map_err(|e| Error::io("write", &opts.out, &e))?;
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}
