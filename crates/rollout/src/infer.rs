//! `coordexp infer`: predict every record of a JSONL file with a checkpoint and write one
//! prediction line per record (the `coordexp eval preds` input).

use coordexp_core::config::{self, schema::Config};
use coordexp_core::progress::Progress;
use coordexp_core::{Error, Result};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::predict::{Predictor, prediction_line, sampling};
use crate::session::Session;
use crate::split::Item;

/// The run's resolved config, stored in every checkpoint (prompts and decoding for `infer`).
pub const RESOLVED_CONFIG: &str = "config.resolved.yaml";

/// What `coordexp infer` is asked to do.
#[derive(Debug, Clone)]
pub struct InferOptions {
    /// A checkpoint directory (or any HF-layout model directory with a tokenizer).
    pub checkpoint: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    /// Predict only the first N records.
    pub limit: Option<usize>,
    /// A PEFT LoRA/DoRA adapter applied on top of the checkpoint.
    pub adapter: Option<PathBuf>,
    /// Progress over the records.
    pub progress: Progress,
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
/// record to `opts.out`. Prompts, template limits, decoding (`eval.decoding` up to
/// `eval.max_new_tokens`, seeded like the run's step-0 evaluation) and `eval.batch_size` come
/// from the checkpoint's `config.resolved.yaml` (the run's own settings); a directory without
/// one uses the defaults.
pub fn infer(opts: &InferOptions) -> Result<InferSummary> {
    let start = std::time::Instant::now();
    let stored = opts.checkpoint.join(RESOLVED_CONFIG);
    let (cfg, settings_from) = if stored.is_file() {
        (config::load(&stored)?.config, stored.display().to_string())
    } else {
        (Config::default(), "defaults".to_string())
    };
    let session = Session::open(&cfg, Some(&opts.checkpoint), None)?;
    let split = session.load_split("data", &opts.data, opts.limit)?;
    let mut model = session.load_model(&opts.checkpoint)?;
    if let Some(a) = &opts.adapter {
        model.load_adapter(a)?;
    }
    let predictor = Predictor {
        model: &model,
        encoder: &session.encoder,
        vision: session.vision(&model),
        sampling: sampling(&cfg.eval.decoding, cfg.eval.max_new_tokens, session.stop_ids()?),
        batch_size: cfg.eval.batch_size.max(1) as usize,
        seed: coordexp_core::seed::eval_seed(cfg.run.seed, 0),
    };
    if let Some(parent) = opts.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, &e))?;
    }
    let file = std::fs::File::create(&opts.out).map_err(|e| Error::io("create", &opts.out, &e))?;
    let mut w = BufWriter::new(file);
    let mut summary =
        InferSummary { records: 0, objects: 0, hit_max_new_tokens: 0, settings_from, seconds: 0.0 };
    let items: Vec<&Item> = split.items.iter().collect();
    let task = opts.progress.task("infer", Some(items.len() as u64), "records");
    let predictions = predictor.predict_counted(&items, &task)?;
    task.finish();
    for (item, p) in items.iter().zip(predictions) {
        serde_json::to_writer(&mut w, &prediction_line(&item.record, &p))
            .map_err(|e| Error::runtime(format!("cannot encode a prediction: {e}")))?;
        w.write_all(b"\n").map_err(|e| Error::io("write", &opts.out, &e))?;
        summary.records += 1;
        summary.objects += p.object_scores.len();
        summary.hit_max_new_tokens += usize::from(p.hit_max_new_tokens);
    }
    w.flush().map_err(|e| Error::io("write", &opts.out, &e))?;
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}
