//! The typed config tree: one section per pipeline stage, one meaning per key.
//!
//! Every section is strict (unknown keys are rejected by the deserializer in `de.rs`) and every
//! key has a default, so a config only states what differs from the defaults. Later issues grow
//! the sections; the rule that each key is documented here stays. `coordexp config show` prints
//! the resolved tree with the file each value came from.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    pub run: Run,
    pub model: Model,
    pub data: Data,
    pub prompt: Prompt,
    pub template: Template,
    pub packing: Packing,
    pub objective: Objective,
    pub optim: Optim,
    pub train: Train,
    pub eval: Eval,
    pub rollout: Rollout,
    pub stage2: Stage2,
}

/// Identity and output location of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Run {
    /// Run directory name under `output_dir`.
    pub name: String,
    /// Parent directory of run directories; relative to the current directory.
    pub output_dir: PathBuf,
    /// Root seed; every other seed is derived from it (see DESIGN "Determinism").
    pub seed: u64,
}

impl Default for Run {
    fn default() -> Self {
        Run { name: "coordexp".into(), output_dir: "runs".into(), seed: 17 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dtype {
    F32,
    Bf16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TuningMode {
    Full,
    Lora,
    Dora,
}

/// Parameter groups of Qwen3-VL, as used by freezing and the optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Module {
    Vision,
    Merger,
    Language,
    CoordRows,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Model {
    /// Model directory (HF layout: config.json, *.safetensors, tokenizer.json, chat template).
    pub path: Option<PathBuf>,
    pub dtype: Dtype,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    pub tuning: Tuning,
    pub coord_offsets: CoordOffsets,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            path: None,
            dtype: Dtype::F32,
            device: "cpu".into(),
            tuning: Tuning::default(),
            coord_offsets: CoordOffsets::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tuning {
    pub mode: TuningMode,
    /// Modules whose parameters receive no gradient. With adapters (which freeze every base
    /// parameter) these modules get no adapter.
    pub freeze: Vec<Module>,
    /// LoRA / DoRA settings (`mode: lora | dora`).
    pub adapter: Adapter,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { mode: TuningMode::Full, freeze: Vec::new(), adapter: Adapter::default() }
    }
}

/// LoRA / DoRA adapters on linear modules (PEFT's meaning of each key). Defaults are the
/// reference's recipe: r 16, alpha 32, no dropout, every linear module but the head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Adapter {
    pub r: u32,
    pub alpha: f64,
    /// Applied to the adapter's input during training passes only.
    pub dropout: f64,
    /// `[all-linear]` (every linear module except the output head: attention, MLP, vision
    /// blocks, mergers) or module names; a name matches a module path equal to it or ending in
    /// `.name`.
    pub target_modules: Vec<String>,
    /// Start from this PEFT adapter directory (LoRA or DoRA, written by coordexp or peft)
    /// instead of fresh adapters; its kind must equal `mode`.
    pub init_from: Option<PathBuf>,
    /// Modules trained in full beside the adapters and saved with them in the PEFT file
    /// (PEFT's `modules_to_save`): every module whose path ends with a name (a plain suffix:
    /// `norm` takes `input_layernorm` too) and everything inside it, e.g. `[lm_head]`.
    pub modules_to_save: Vec<String>,
}

impl Default for Adapter {
    fn default() -> Self {
        Adapter {
            r: 16,
            alpha: 32.0,
            dropout: 0.0,
            target_modules: vec!["all-linear".into()],
            init_from: None,
            modules_to_save: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
/// The coordinate-offset adapter: zero-initialised trainable offsets on the 1,000 coordinate
/// rows of the embedding and the head (their base rows frozen), learning rate
/// `optim.lr.coord_rows`; with `tie_head` the head uses the embedding's offsets.
pub struct CoordOffsets {
    pub enabled: bool,
    pub tie_head: bool,
}

impl Default for CoordOffsets {
    fn default() -> Self {
        CoordOffsets { enabled: false, tie_head: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Data {
    /// Training JSONL (record contract in README "Data").
    pub train: Option<PathBuf>,
    /// Validation JSONL.
    pub val: Option<PathBuf>,
    /// Keep only the first N training records (a prefix, before shuffling).
    pub train_limit: Option<usize>,
    /// Keep only the first N validation records.
    pub val_limit: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptVariant {
    Default,
    Coco80,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldOrder {
    DescFirst,
    GeometryFirst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectOrdering {
    /// Objects must already be in canonical (y1, x1) order; checked, never re-sorted.
    Sorted,
    /// Objects are shuffled per sample with the derived sample seed.
    Random,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prompt {
    pub variant: PromptVariant,
    pub field_order: FieldOrder,
    pub object_ordering: ObjectOrdering,
    /// Inline system prompt; `null` uses the built-in text.
    pub system: Option<String>,
    /// System prompt read from a file (relative to the current directory).
    pub system_file: Option<PathBuf>,
    /// Inline user prompt; `null` uses the built-in text.
    pub user: Option<String>,
    /// User prompt read from a file.
    pub user_file: Option<PathBuf>,
}

impl Default for Prompt {
    fn default() -> Self {
        Prompt {
            variant: PromptVariant::Default,
            field_order: FieldOrder::DescFirst,
            object_ordering: ObjectOrdering::Sorted,
            system: None,
            system_file: None,
            user: None,
            user_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Template {
    /// Largest image (W·H) a sample may carry; images are never resized at training time.
    pub max_pixels: u64,
    /// Image sides must be multiples of this (patch size × spatial merge size).
    pub image_factor: u32,
}

impl Default for Template {
    fn default() -> Self {
        Template { max_pixels: 786_432, image_factor: 32 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnOverflow {
    /// A sample longer than `max_length` is an error naming the record.
    Error,
    /// Such a sample becomes a pack of its own.
    Singleton,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Packing {
    pub enabled: bool,
    /// Token capacity of one pack (image tokens included).
    pub max_length: usize,
    /// Packs filled below this fraction are dropped (and counted).
    pub min_fill: f64,
    pub on_overflow: OnOverflow,
}

impl Default for Packing {
    fn default() -> Self {
        Packing { enabled: true, max_length: 4096, min_fill: 0.0, on_overflow: OnOverflow::Error }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Weight {
    pub weight: f64,
}

impl Default for Weight {
    fn default() -> Self {
        Weight { weight: 1.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SoftCe {
    pub weight: f64,
    /// Standard deviation of the Gaussian target, in bins (reference `target_sigma`).
    pub sigma: f64,
    /// Truncation radius of the Gaussian target, in bins; `null` keeps all 1,000 bins
    /// (reference `target_truncate`).
    pub radius: Option<u32>,
}

impl Default for SoftCe {
    fn default() -> Self {
        SoftCe { weight: 1.0, sigma: 2.0, radius: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoordObjective {
    /// Temperature applied to logits before the coordinate terms.
    pub temperature: f64,
    pub soft_ce: SoftCe,
    pub w1: Weight,
    pub gate: Weight,
    pub hard_ce: Weight,
}

impl Default for CoordObjective {
    fn default() -> Self {
        CoordObjective {
            temperature: 1.0,
            soft_ce: SoftCe::default(),
            w1: Weight { weight: 1.0 },
            gate: Weight { weight: 1.0 },
            hard_ce: Weight { weight: 0.0 },
        }
    }
}

/// Multipliers of each supervised text token's cross-entropy, by token type — **our extension**:
/// the reference has no per-type weights in stage 1 (every weight is 1, the default here).
///
/// Why: descriptions (what the model must recognise) are few tokens among many structure tokens,
/// and coordinate terms added on top can starve them; these weights rebalance the text term
/// without touching the coordinate terms. A weight scales the token's loss; the denominator stays
/// the token count (see [`LossNorm`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenWeights {
    /// CoordJSON structure: braces, brackets, keys, separators.
    #[serde(rename = "struct")]
    pub structure: f64,
    /// Object descriptions, quotes included.
    pub desc: f64,
    /// The answer's closing brace and the end-of-turn token.
    pub closure: f64,
}

impl Default for TokenWeights {
    fn default() -> Self {
        TokenWeights { structure: 1.0, desc: 1.0, closure: 1.0 }
    }
}

/// How the losses of an accumulation window are normalised.
///
/// The first two are **our** rule: the sums over the whole window are divided by the window's
/// counts, so the loss does not depend on how samples are packed or split into micro-batches.
/// The reference does something else (`per_pack_mean`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossNorm {
    /// Window sums: the text term by the window's supervised text tokens, the coordinate terms
    /// by its coordinate slots (each group is a mean of its own over the window).
    PerGroup,
    /// Window sums: every term by the window's supervised tokens, text and coordinate
    /// together, so each token weighs the same whatever the text/coordinate mix of the batch.
    PerToken,
    /// The reference's rule (`objective_packing.md` §3.4): each micro-batch (pack) takes the
    /// mean of its text term over its own text tokens and of its coordinate terms over its own
    /// slots, and the window loss is the mean of the micro-batch losses (÷ accumulation
    /// steps). A token of a short pack then weighs more than one of a long pack, and the
    /// loss changes with the packing.
    PerPackMean,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Objective {
    /// Weight of the token cross-entropy on supervised non-coordinate tokens.
    pub text_ce: f64,
    pub token_weights: TokenWeights,
    pub normalize: LossNorm,
    pub coord: CoordObjective,
}

impl Default for Objective {
    fn default() -> Self {
        Objective {
            text_ce: 1.0,
            token_weights: TokenWeights::default(),
            normalize: LossNorm::PerGroup,
            coord: CoordObjective::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupLr {
    pub language: f64,
    pub vision: f64,
    pub merger: f64,
    pub coord_rows: f64,
}

impl Default for GroupLr {
    fn default() -> Self {
        GroupLr { language: 2.0e-4, vision: 1.0e-4, merger: 4.0e-4, coord_rows: 4.0e-4 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Optim {
    pub lr: GroupLr,
    pub weight_decay: f64,
    /// Warmup as a fraction of `train.max_steps`.
    pub warmup: f64,
    pub schedule: Schedule,
    /// Global gradient-norm clip; 0 disables clipping.
    pub grad_clip: f64,
    /// Floor of the decayed rate (every group): after warmup a group's rate goes from its base
    /// rate down to `min_lr` (HF `cosine_with_min_lr`); groups whose base rate is at or below it
    /// keep their base rate. 0 decays to zero.
    pub min_lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
}

impl Default for Optim {
    fn default() -> Self {
        Optim {
            lr: GroupLr::default(),
            weight_decay: 0.0,
            warmup: 0.03,
            schedule: Schedule::Cosine,
            grad_clip: 1.0,
            min_lr: 0.0,
            betas: [0.9, 0.999],
            eps: 1e-8,
        }
    }
}

/// Which training stage a config runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Teacher-forced SFT on the ground truth (`objective`).
    Stage1,
    /// Two channels per optimizer step (`stage2`).
    Stage2,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Train {
    /// The stage this config trains; the `stage2` section applies only to `stage2`.
    pub stage: Stage,
    pub max_steps: u64,
    /// Packs (or samples, without packing) per forward pass.
    pub micro_batch: u32,
    /// Micro-batches per optimizer step; derived from `effective_batch_size` when that is set.
    pub accumulation: Option<u32>,
    /// Micro-batches × micro_batch per optimizer step; must be divisible by `micro_batch`.
    pub effective_batch_size: Option<u32>,
    pub log_every: u64,
    pub eval_every: u64,
    pub save_every: u64,
    pub keep_last: u32,
    /// Stage 1: compute the loss over the output projection's logits at most this many rows at
    /// a time, backwarding each piece at once, so that no more than one `[rows, vocab]` piece is
    /// alive (a 152k vocabulary costs 0.6 MB of f32 per row). 0 = all rows at once.
    pub logit_chunk_rows: u32,
    /// Stage 1: keep only each decoder layer's and vision block's input during the forward
    /// pass and recompute one layer at a time in the backward pass (about one more forward
    /// pass of compute for activations of one layer instead of all). Needs
    /// `model.tuning.adapter.dropout: 0` (a recomputed layer must draw the same masks).
    pub gradient_checkpointing: bool,
    /// Multi-process runs (torchrun): how long a rank waits in a collective (gradient sums,
    /// rank 0 evaluating or writing a checkpoint) before it stops with an error naming the ranks
    /// that did not arrive. Must exceed the longest evaluation.
    pub collective_timeout_s: f64,
}

impl Default for Train {
    fn default() -> Self {
        Train {
            stage: Stage::Stage1,
            max_steps: 2000,
            micro_batch: 1,
            accumulation: None,
            effective_batch_size: None,
            log_every: 10,
            eval_every: 200,
            save_every: 500,
            keep_last: 3,
            logit_chunk_rows: 0,
            gradient_checkpointing: false,
            collective_timeout_s: 1800.0,
        }
    }
}

impl Train {
    /// Micro-batches per optimizer step after applying `effective_batch_size`.
    pub fn accumulation_steps(&self) -> u32 {
        match (self.accumulation, self.effective_batch_size) {
            (Some(a), _) => a,
            (None, Some(ebs)) => (ebs / self.micro_batch.max(1)).max(1),
            (None, None) => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Eval {
    pub max_new_tokens: usize,
    /// IoU thresholds for F1.
    pub iou: Vec<f64>,
    /// Evaluate on the first N validation records.
    pub limit: Option<usize>,
    /// How evaluation and `coordexp infer` decode (greedy by default).
    pub decoding: Decoding,
    /// Records per generation call.
    pub batch_size: u32,
}

impl Default for Eval {
    fn default() -> Self {
        Eval {
            max_new_tokens: 512,
            iou: vec![0.3, 0.5],
            limit: Some(200),
            decoding: Decoding::default(),
            batch_size: 4,
        }
    }
}

/// Where stage 2's rollouts come from (`rollout.backend`).
///
/// `openai` speaks the OpenAI chat-completions protocol with vLLM's token-id extension
/// (`return_token_ids`): `coordexp serve`, or a vLLM server (≥ 0.10.2). It was called `vllm`
/// before; that value is now rejected with the list of valid ones (write `openai`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutBackend {
    /// The model being trained, in-process: no server, no weight sync.
    Embedded,
    /// `POST /v1/chat/completions` on each of `rollout.servers` (coordexp serve, vLLM).
    Openai,
    /// The ms-swift rollout protocol (`POST /infer/` with `return_details`): `coordexp serve`
    /// or `swift rollout`.
    Swift,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Server {
    /// Base URL, e.g. `http://127.0.0.1:8000`.
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Decoding {
    /// 0 = greedy.
    pub temperature: f64,
    pub top_p: f64,
    /// -1 = disabled.
    pub top_k: i64,
    pub repetition_penalty: f64,
}

impl Default for Decoding {
    fn default() -> Self {
        Decoding { temperature: 0.0, top_p: 1.0, top_k: -1, repetition_penalty: 1.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rollout {
    pub backend: RolloutBackend,
    pub servers: Vec<Server>,
    pub max_new_tokens: usize,
    /// Context length of the rollout engine (prompt + generation).
    pub max_model_len: usize,
    /// Rows decoding at once: the embedded engine's slots per process (rows are refilled as
    /// answers finish; a record's anchor and explorers share one prefill, and a record with more
    /// samples than this takes them all), `coordexp serve`'s rows per batch, or an HTTP
    /// backend's calls in flight per server.
    pub decode_batch_size: u32,
    pub decoding: Decoding,
    pub timeout_s: f64,
    pub retries: u32,
    /// HTTP backends: the directory weight syncs write the model to before every server loads
    /// it, so it must be readable by every server under the same path (a shared filesystem
    /// when they run elsewhere); relative to the current directory. Default:
    /// `<run dir>/rollout_sync`.
    pub sync_dir: Option<PathBuf>,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            backend: RolloutBackend::Embedded,
            servers: Vec::new(),
            max_new_tokens: 1024,
            max_model_len: 8192,
            decode_batch_size: 4,
            decoding: Decoding::default(),
            timeout_s: 240.0,
            retries: 2,
            sync_dir: None,
        }
    }
}

/// Stage 2 (`train.stage: stage2`): two channels per optimizer step on the reference's current
/// contract (`stage2_current.md`). Defaults are the reference's production values (§2.3, §4.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Stage2 {
    pub schedule: Stage2Schedule,
    /// The objective modules (§4): each with its weight and the channels it applies to.
    pub objective: Stage2Objective,
    pub channel_b: ChannelB,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stage2Schedule {
    /// Fraction of optimizer steps that run channel B: step `s` (0-based) runs B iff
    /// ⌊(s+1)·b⌋ > ⌊s·b⌋.
    pub b_ratio: f64,
}

impl Default for Stage2Schedule {
    fn default() -> Self {
        Stage2Schedule { b_ratio: 0.85 }
    }
}

/// A stage-2 channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Channel {
    /// Teacher forcing on the ground truth.
    A,
    /// Teacher forcing on the clean prefix built from the model's own rollouts.
    B,
}

/// `token_ce`: weighted cross-entropy on non-coordinate tokens (§4.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenCe {
    pub weight: f64,
    pub channels: Vec<Channel>,
    /// Description weight of ground-truth descriptions (channel A).
    pub desc_ce_weight: f64,
    /// Description weight of injected (missed) objects in channel B (before the recovered
    /// multiplier).
    pub rollout_fn_desc_weight: f64,
    /// `g`: structure weight of the clean prefix in channel B.
    pub rollout_global_prefix_struct_ce_weight: f64,
}

impl Default for TokenCe {
    fn default() -> Self {
        TokenCe {
            weight: 1.0,
            channels: vec![Channel::A, Channel::B],
            desc_ce_weight: 1.0,
            rollout_fn_desc_weight: 1.0,
            rollout_global_prefix_struct_ce_weight: 1.0,
        }
    }
}

/// `loss_duplicate_burst_unlikelihood` (§2.8): channel B only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DuplicateUl {
    pub weight: f64,
    pub channels: Vec<Channel>,
}

impl Default for DuplicateUl {
    fn default() -> Self {
        DuplicateUl { weight: 1.0, channels: vec![Channel::B] }
    }
}

/// How `bbox_geo` parameterises the SmoothL1 term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxParam {
    /// Mean SmoothL1 of the four corners.
    Xyxy,
    /// `center_weight · ½(SL1 cx + SL1 cy) + size_weight · ½(SL1 log w + SL1 log h)`.
    CenterSize,
}

/// `bbox_geo`: SmoothL1 and CIoU on the expected box (§4.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BboxGeo {
    pub weight: f64,
    pub channels: Vec<Channel>,
    pub smoothl1_weight: f64,
    pub ciou_weight: f64,
    pub parameterization: BoxParam,
    /// `center_size` only.
    pub center_weight: f64,
    /// `center_size` only.
    pub size_weight: f64,
}

impl Default for BboxGeo {
    fn default() -> Self {
        BboxGeo {
            weight: 1.0,
            channels: vec![Channel::A, Channel::B],
            smoothl1_weight: 1.0,
            ciou_weight: 0.5,
            parameterization: BoxParam::Xyxy,
            center_weight: 1.0,
            size_weight: 1.0,
        }
    }
}

/// `bbox_size_aux`: log-width/height and oversize terms (§4.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BboxSizeAux {
    pub weight: f64,
    pub channels: Vec<Channel>,
    pub log_wh_weight: f64,
    pub oversize_penalty_weight: f64,
    /// `relu(log w − τ)`; `null` disables the term.
    pub oversize_log_w_threshold: Option<f64>,
    pub oversize_log_h_threshold: Option<f64>,
    /// `relu(w·h − τ)` (normalised area); `null` disables the term.
    pub oversize_area_threshold: Option<f64>,
}

impl Default for BboxSizeAux {
    fn default() -> Self {
        BboxSizeAux {
            weight: 1.0,
            channels: vec![Channel::A, Channel::B],
            log_wh_weight: 0.05,
            oversize_penalty_weight: 0.0,
            oversize_log_w_threshold: None,
            oversize_log_h_threshold: None,
            oversize_area_threshold: None,
        }
    }
}

/// `coord_reg`: the coordinate-distribution terms (§4.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoordReg {
    pub weight: f64,
    pub channels: Vec<Channel>,
    /// Hard CE over the 1,000 coordinate logits.
    pub coord_ce_weight: f64,
    pub soft_ce_weight: f64,
    pub w1_weight: f64,
    /// `logsumexp(all/T) − logsumexp(coord/T)` at coordinate slots.
    pub coord_gate_weight: f64,
    /// `−log(1 − p_coord)` at supervised text positions (not coordinates, not closure).
    pub text_gate_weight: f64,
    pub temperature: f64,
    pub target_sigma: f64,
    /// Truncation radius of the soft target in bins; `null` keeps all 1,000.
    pub target_truncate: Option<u32>,
}

impl Default for CoordReg {
    fn default() -> Self {
        CoordReg {
            weight: 1.0,
            channels: vec![Channel::A, Channel::B],
            coord_ce_weight: 0.02,
            soft_ce_weight: 0.1,
            w1_weight: 0.02,
            coord_gate_weight: 1.0,
            text_gate_weight: 0.1,
            temperature: 1.0,
            target_sigma: 2.0,
            target_truncate: Some(8),
        }
    }
}

/// The objective pipeline of stage 2 (§4.1): module weights times module losses, summed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Stage2Objective {
    pub token_ce: TokenCe,
    pub duplicate_ul: DuplicateUl,
    pub bbox_geo: BboxGeo,
    pub bbox_size_aux: BboxSizeAux,
    pub coord_reg: CoordReg,
}

/// Where missed ground truth goes in the channel-B target (§2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InsertionOrder {
    TailAppend,
    Sorted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DuplicateControl {
    pub iou_threshold: f64,
    pub center_radius_scale: f64,
}

impl Default for DuplicateControl {
    fn default() -> Self {
        DuplicateControl { iou_threshold: 0.95, center_radius_scale: 0.8 }
    }
}

/// Explorer decoding (the anchor is always greedy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Explorer {
    pub temperature: f64,
    pub top_p: f64,
    /// -1 = disabled.
    pub top_k: i64,
}

impl Default for Explorer {
    fn default() -> Self {
        Explorer { temperature: 0.7, top_p: 0.95, top_k: 64 }
    }
}

/// Anchor/explorer triage (§3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Triage {
    /// One greedy anchor plus `num_rollouts − 1` explorers.
    pub num_rollouts: u32,
    pub explorer: Explorer,
    /// IoU of explorer support and anchor/explorer association.
    pub unlabeled_consistent_iou_threshold: f64,
    /// Object weight of a missed ground truth that an explorer found (≥ 1).
    pub recovered_ground_truth_weight_multiplier: f64,
}

impl Default for Triage {
    fn default() -> Self {
        Triage {
            num_rollouts: 2,
            explorer: Explorer::default(),
            unlabeled_consistent_iou_threshold: 0.9,
            recovered_ground_truth_weight_multiplier: 2.0,
        }
    }
}

/// Hungarian matching on mask IoU (§2.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Matching {
    pub candidate_top_k: usize,
    /// Pairs below this mask IoU are forbidden.
    pub gate: f64,
    pub mask_resolution: u32,
    pub fp_cost: f64,
    pub fn_cost: f64,
}

impl Default for Matching {
    fn default() -> Self {
        Matching { candidate_top_k: 5, gate: 0.5, mask_resolution: 256, fp_cost: 1.0, fn_cost: 1.2 }
    }
}

/// Optional pseudo-positive mode (§3.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PseudoPositive {
    pub enabled: bool,
    pub coord_weight: f64,
}

impl Default for PseudoPositive {
    fn default() -> Self {
        PseudoPositive { enabled: false, coord_weight: 0.5 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelB {
    pub insertion_order: InsertionOrder,
    pub duplicate_control: DuplicateControl,
    pub triage: Triage,
    pub matching: Matching,
    pub pseudo_positive: PseudoPositive,
}

impl Default for ChannelB {
    fn default() -> Self {
        ChannelB {
            insertion_order: InsertionOrder::TailAppend,
            duplicate_control: DuplicateControl::default(),
            triage: Triage::default(),
            matching: Matching::default(),
            pseudo_positive: PseudoPositive::default(),
        }
    }
}
