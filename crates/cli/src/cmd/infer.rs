//! `coordexp infer --checkpoint DIR --data FILE.jsonl --out PRED.jsonl` — batched generation
//! with a checkpoint; the output feeds `coordexp eval preds`.

use clap::Args;
use coordexp_core::progress::Progress;
use coordexp_rollout::infer::{InferOptions, infer};
use std::path::PathBuf;

#[derive(Args)]
pub struct InferArgs {
    /// Checkpoint directory (runs/<name>/checkpoints/step-<N>/) or a model directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Records to predict (JSONL; images resolved against the file's directory).
    #[arg(long)]
    pub data: PathBuf,
    /// Prediction lines: identity, size, raw `text`, `object_scores`.
    #[arg(long)]
    pub out: PathBuf,
    /// Predict only the first N records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// A PEFT LoRA/DoRA adapter directory applied on top of --checkpoint (an adapter
    /// checkpoint of coordexp can also be given as --checkpoint alone: its base is merged in).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}

pub fn run(a: InferArgs, progress: Progress) -> crate::CliResult {
    let s = infer(&InferOptions {
        checkpoint: a.checkpoint,
        data: a.data,
        out: a.out.clone(),
        limit: a.limit,
        adapter: a.adapter,
        progress,
    })?;
    println!(
        "{} records, {} objects, {} cut at max_new_tokens, {:.1} s (settings: {}) -> {}",
        s.records,
        s.objects,
        s.hit_max_new_tokens,
        s.seconds,
        s.settings_from,
        a.out.display()
    );
    Ok(())
}
