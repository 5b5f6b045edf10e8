//! The run directory and the trainer's checkpoints.
//!
//! ```text
//! runs/<run.name>/
//!   config.resolved.yaml   manifest.json   metrics.jsonl   events.out.tfevents.*
//!   checkpoints/step-<N>/  config.json model.safetensors (HF layout) + tokenizer.json,
//!                          chat template, processor config (copied from the model dir),
//!                          optimizer.safetensors + optimizer.json, trainer_state.json,
//!                          config.resolved.yaml (prompts and decoding for `coordexp infer`)
//!   eval/gt.jsonl          eval/step-<N>/{metrics.json, predictions.jsonl}   eval/final/…
//! ```
//!
//! A checkpoint is written into a hidden temporary directory and renamed into place
//! ([`crate::checkpoint`]), so an interrupted write never leaves a `step-<N>` behind. Resuming
//! needs no RNG state (every seed derives from the root seed and the step): the weights, the
//! optimizer moments, the step count and the data [`Cursor`] are the whole state.

use coordexp_core::{Error, Result};
use coordexp_model::model::Qwen3VL;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::epochs::Cursor;
use crate::checkpoint::{Checkpoints, write_dir_atomically, write_file_atomically};
use crate::optim::AdamW;

pub const RESOLVED_CONFIG: &str = "config.resolved.yaml";
pub const MANIFEST: &str = "manifest.json";
pub const METRICS: &str = "metrics.jsonl";
pub const TRAINER_STATE: &str = "trainer_state.json";
const STATE_FORMAT: &str = "coordexp-trainer/2";
/// Safetensors shard size of saved weights.
const SHARD_BYTES: u64 = 4 << 30;

/// Everything besides weights and optimizer moments that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: String,
    /// Optimizer steps completed.
    pub step: u64,
    /// The next pack to train on.
    pub cursor: Cursor,
    /// Tokens and samples trained on so far.
    pub tokens: u64,
    pub samples: u64,
    /// Training seconds so far (evaluation excluded).
    pub train_seconds: f64,
    /// The schedule's total steps when the checkpoint was written: `train.max_steps`, or what
    /// a deadline re-fitted it to (a resume continues this schedule).
    pub total_steps: u64,
    /// The schedule's warmup length in steps (fixed when the run started; a re-fit keeps it).
    pub warmup_steps: u64,
}

impl TrainerState {
    /// A run about to take its first step on a schedule of `total_steps` (its warmup is set
    /// from the optimizer before the first checkpoint).
    pub fn start(total_steps: u64) -> TrainerState {
        TrainerState {
            format: STATE_FORMAT.into(),
            step: 0,
            cursor: Cursor::default(),
            tokens: 0,
            samples: 0,
            train_seconds: 0.0,
            total_steps,
            warmup_steps: 0,
        }
    }
}

/// `runs/<name>/`.
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// Create a fresh run directory and store the resolved config; an existing non-empty
    /// directory is refused (runs are never overwritten).
    pub fn create(root: &Path, resolved_yaml: &str) -> Result<RunDir> {
        if root.read_dir().is_ok_and(|mut d| d.next().is_some()) {
            return Err(Error::input(format!("run directory {} already exists", root.display()))
                .hint("continue it with `coordexp train CONFIG --resume DIR`, or set another run.name"));
        }
        std::fs::create_dir_all(root).map_err(|e| Error::io("create", root, &e))?;
        write_file_atomically(&root.join(RESOLVED_CONFIG), resolved_yaml.as_bytes())?;
        Ok(RunDir { root: root.to_path_buf() })
    }

    pub fn checkpoints(&self) -> Checkpoints {
        Checkpoints::new(&self.root.join("checkpoints"))
    }

    pub fn eval_root(&self) -> PathBuf {
        self.root.join("eval")
    }

    /// Where the checkpoint of `step` is written.
    pub fn checkpoint_path(&self, step: u64) -> PathBuf {
        self.checkpoints().step_dir(step)
    }

    /// Write `checkpoints/step-<step>/` atomically and prune to `keep_last`.
    pub fn save_checkpoint(
        &self,
        model: &Qwen3VL,
        optimizer: &AdamW,
        model_src: &Path,
        resolved_yaml: &str,
        state: &TrainerState,
        keep_last: u32,
    ) -> Result<PathBuf> {
        let checkpoints = self.checkpoints();
        let dest = checkpoints.step_dir(state.step);
        let dir = write_dir_atomically(&dest, |tmp| {
            if model.adapter_spec().is_some() {
                // The adapter only (PEFT's layout), naming its frozen base by absolute path;
                // `config.json` keeps the directory readable as the model it computes.
                let base = std::path::absolute(model_src).unwrap_or_else(|_| model_src.into());
                model.save_adapter(tmp, Some(&base.display().to_string()))?;
                if model.coord_offset().is_some() {
                    model.save_coord_offsets(tmp)?;
                }
                let config = model_src.join("config.json");
                std::fs::copy(&config, tmp.join("config.json"))
                    .map_err(|e| Error::io("copy", &config, &e))?;
            } else {
                model.save_checkpoint(tmp, SHARD_BYTES)?;
            }
            copy_model_files(model_src, tmp)?;
            optimizer.save(tmp)?;
            write_file_atomically(&tmp.join(RESOLVED_CONFIG), resolved_yaml.as_bytes())?;
            write_json(&tmp.join(TRAINER_STATE), state)
        })?;
        checkpoints.prune(keep_last)?;
        Ok(dir)
    }
}

/// The checkpoint to resume from: `dir` itself when it holds a trainer state, else the newest
/// checkpoint of the run directory `dir`. Returns (run root, checkpoint dir, state). Reads
/// only: hidden debris of an interrupted checkpoint write is ignored here and removed once the
/// resume's checks have passed.
pub fn find_resume(dir: &Path) -> Result<(PathBuf, PathBuf, TrainerState)> {
    let ckpt = if dir.join(TRAINER_STATE).is_file() {
        dir.to_path_buf()
    } else {
        let checkpoints = Checkpoints::new(&dir.join("checkpoints"));
        checkpoints.latest()?.map(|(_, p)| p).ok_or_else(|| {
            Error::input(format!("{} holds no checkpoint to resume from", dir.display()))
                .hint("pass a run directory with checkpoints/step-<N>/ or a checkpoint directory")
        })?
    };
    let root = ckpt
        .parent()
        .and_then(Path::parent)
        .filter(|r| r.join(RESOLVED_CONFIG).is_file())
        .ok_or_else(|| {
            Error::input(format!("{} is not inside a run directory", ckpt.display()))
                .hint("resume from runs/<name>/ or runs/<name>/checkpoints/step-<N>/")
        })?
        .to_path_buf();
    let path = ckpt.join(TRAINER_STATE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, &e))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| {
        Error::input(format!("invalid trainer state: {e}")).at(path.display().to_string())
    })?;
    if state.format != STATE_FORMAT {
        return Err(Error::input(format!(
            "trainer state format `{}` is not `{STATE_FORMAT}`",
            state.format
        ))
        .at(path.display().to_string())
        .hint("this checkpoint was written by another coordexp version; resume it with that version or start a new run from its weights"));
    }
    Ok((root, ckpt, state))
}

/// Copy the tokenizer, chat template and processor files of a model directory (every top-level
/// regular file except weights and `config.json`, which the model writes itself).
fn copy_model_files(src: &Path, dst: &Path) -> Result<()> {
    let entries = std::fs::read_dir(src).map_err(|e| Error::io("list", src, &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", src, &e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        let weights = name.ends_with(".safetensors") || name == "model.safetensors.index.json";
        let ours = matches!(
            name.as_str(),
            "config.json"
                | TRAINER_STATE
                | RESOLVED_CONFIG
                | "optimizer.json"
                | coordexp_model::adapter::ADAPTER_CONFIG
                | coordexp_model::adapter::ADAPTER_WEIGHTS
        );
        if weights || ours || name.starts_with('.') || !path.is_file() {
            continue;
        }
        std::fs::copy(&path, dst.join(&name)).map_err(|e| Error::io("copy", &path, &e))?;
    }
    Ok(())
}

pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::runtime(format!("cannot encode {}: {e}", path.display())))?;
    text.push('\n');
    write_file_atomically(path, text.as_bytes())
}
