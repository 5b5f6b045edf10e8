//! `coordexp model …`: producing model directories.
//!
//! Both operations write a complete Hugging Face layout (config.json, safetensors, tokenizer.json,
//! chat template) that transformers and vLLM load unchanged, and refuse an existing destination.

use clap::{Subcommand, ValueEnum};
use coordexp_model::vocab;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Add `<|coord_*|>` and `<|coord_0|>`…`<|coord_999|>` as special tokens with contiguous ids,
    /// grow the embedding (and an untied head; new rows start at the mean of the existing rows),
    /// update config.json and copy everything else. `--dst` must not exist.
    ExpandVocab {
        /// Source model directory (HF layout).
        #[arg(long)]
        src: PathBuf,
        /// Destination directory (created).
        #[arg(long)]
        dst: PathBuf,
    },
    /// Write a randomly initialised model of a preset size with the tokenizer of another model
    /// directory (which must already carry the coordinate tokens or get them with expand-vocab).
    Init {
        /// Architecture preset.
        #[arg(long, value_enum, default_value_t = Preset::Tiny)]
        preset: Preset,
        /// Directory whose tokenizer.json / chat template the new model uses.
        #[arg(long)]
        tokenizer_from: PathBuf,
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the random initialisation.
        #[arg(long, default_value_t = 17)]
        seed: i64,
    },
    /// Write the full-vocabulary logits of one record (with the input ids, labels, position
    /// ids and pixels that produced them) to a safetensors file, for parity checks against
    /// another implementation.
    Logits {
        /// Model directory (HF layout).
        #[arg(long)]
        model: PathBuf,
        /// Config whose prompt, template, dtype and device are used.
        #[arg(long)]
        config: PathBuf,
        /// JSONL data file.
        #[arg(long)]
        data: PathBuf,
        /// 1-based line of the record in --data.
        #[arg(long)]
        line: usize,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// A PEFT LoRA/DoRA adapter directory applied on top of --model.
        #[arg(long)]
        adapter: Option<PathBuf>,
    },
    /// Fold a PEFT LoRA/DoRA adapter (written by coordexp or peft) into its base: a plain
    /// Hugging Face directory that transformers, vLLM and `coordexp serve` load, computing what
    /// base + adapter compute. `--out` must not exist.
    Merge {
        /// The base model directory.
        #[arg(long)]
        base: PathBuf,
        /// The adapter directory (adapter_config.json, adapter_model.safetensors).
        #[arg(long)]
        adapter: PathBuf,
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Preset {
    /// A few-million-parameter Qwen3-VL for tests and the CPU demo.
    Tiny,
}

pub fn run(cmd: ModelCommand) -> crate::CliResult {
    match cmd {
        ModelCommand::ExpandVocab { src, dst } => {
            let r = vocab::expand_vocab(&src, &dst)?;
            println!(
                "expanded {} -> {}: vocabulary {} -> {} (coordinate ids {}..={}), {} matrices grown, {} files copied",
                src.display(),
                dst.display(),
                r.old_vocab_size,
                r.new_vocab_size,
                r.wildcard_id + 1,
                r.wildcard_id + 1000,
                r.grown_matrices,
                r.copied_files
            );
            for s in &r.skipped_entries {
                println!("not copied: {s}");
            }
            Ok(())
        }
        ModelCommand::Logits { model, config, data, line, out, adapter } => {
            let loaded = coordexp_core::config::load(&config)?;
            let r = coordexp_rollout::logits::record_logits(
                &loaded.config,
                &model,
                adapter.as_deref(),
                &data,
                line,
                &out,
            )?;
            println!(
                "wrote {}: logits [{}, {}] of {}:{line} ({} image(s), {} supervised tokens)",
                out.display(),
                r.tokens,
                r.vocab,
                data.display(),
                r.images,
                r.supervised
            );
            Ok(())
        }
        ModelCommand::Merge { base, adapter, out } => {
            let r = coordexp_model::adapter::merge_dir(&base, &adapter, &out)?;
            println!(
                "wrote {}: {:?} adapter (r {}, alpha {}) merged into {} modules of {}, {} files copied",
                out.display(),
                r.spec.kind,
                r.spec.r,
                r.spec.alpha,
                r.modules,
                base.display(),
                r.copied_files
            );
            Ok(())
        }
        ModelCommand::Init { preset: Preset::Tiny, tokenizer_from, out, seed } => {
            let r = vocab::init_tiny(&tokenizer_from, &out, seed)?;
            println!(
                "wrote {}: tiny Qwen3-VL, {} parameters, vocabulary {}, {} files copied",
                out.display(),
                r.parameters,
                r.vocab_size,
                r.copied_files
            );
            for s in &r.skipped_entries {
                println!("not copied: {s}");
            }
            Ok(())
        }
    }
}
