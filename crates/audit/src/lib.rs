//! coordexp-audit: the pipeline map and a CPU audit of a config, its model directory and its
//! data, run before a GPU hour is spent.
//!
//! ```text
//! map::BOUNDARIES   data → template → tokens → pack → forward/loss masks → objective → rollouts
//!                   → eval → artifacts: owners, config keys, locking tests, artifacts (checked
//!                   against the repository by this crate's tests)
//! audit(config, options) → AuditReport
//!   records               every line satisfies the record contract
//!   images                every image exists, true size = record size, on the grid, in budget
//!   template              generation prompt ⊑ training render = prompt + answer + end-of-turn
//!   coord_vocab           1,000 contiguous, special, unnormalised single-id coordinate tokens
//!   lengths               longest sample vs packing.max_length / rollout limits
//!   packing               plan + first packs: cu_seqlens, positions, labels
//!   eval_join             evaluation records joinable by identity
//!   stage2                decode limits vs answers, explorers, server health
//!   server_prompt_tokens  learner/server prompt-token equality (needs the rollout backend)
//!   provenance            version, git, data / tokenizer fingerprints, parity versions
//! ```
//!
//! Every check ends with a verdict (pass, fail, or skip with the absent input named) and its
//! evidence: numbers, `FILE:LINE`s, config keys with their values and origins. Checks that read
//! records look at a bounded sample of each file ([`AuditOptions::sample_limit`]); the image
//! check reads every record. Nothing here links libtorch: the audit runs anywhere the data is.

mod checks;
mod context;
mod data;
mod encoding;
pub mod health;
pub mod map;
mod provenance;
mod report;

pub use checks::packing::{PACKS_CHECKED, verify_pack};
pub use map::{BOUNDARIES, Boundary, TestRef};
pub use provenance::{fingerprint_jsonl, git_state};
pub use report::{
    AuditReport, Check, DatasetFingerprint, FileFingerprint, Finding, GitInfo, Provenance, Setting,
    TokenizerFingerprint, Verdict,
};

use context::Ctx;
use coordexp_core::config::Loaded;
use coordexp_core::{Error, Result};
use encoding::ModelState;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to audit besides the config, and how.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Model directory; overrides the config's `model.path`.
    pub model: Option<PathBuf>,
    /// A data file to audit instead of the config's `data.train` and `data.val`.
    pub data: Option<PathBuf>,
    /// Progress lines on stderr.
    pub progress: bool,
    /// libtorch version used for parity (the CLI fills it from the model crate).
    pub torch_version: Option<String>,
    /// transformers version used for parity; `None` asks the oracle interpreter
    /// (`COORDEXP_PYTHON_ORACLE`) once per process, else reports `not available`.
    pub transformers_version: Option<String>,
    /// Records per file that record-level checks sample (the first N valid ones).
    pub sample_limit: usize,
    /// The checkout whose git commit and dirty flag are recorded.
    pub repo: PathBuf,
    /// Connect and read timeout of a rollout server's health probe.
    pub server_timeout: Duration,
}

/// Records sampled per file by default.
pub const DEFAULT_SAMPLE_LIMIT: usize = 2000;

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            model: None,
            data: None,
            progress: false,
            torch_version: None,
            transformers_version: None,
            sample_limit: DEFAULT_SAMPLE_LIMIT,
            repo: default_repo(),
            server_timeout: Duration::from_secs(3),
        }
    }
}

/// The checkout this crate was built from when it is still there, else the current directory
/// (what the trainer's manifest records).
fn default_repo() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if built.join(".git").exists() { built } else { PathBuf::from(".") }
}

/// Audit `loaded` with its model directory and data. Every problem found is in the report
/// (see [`AuditReport::failures`]); an error here means the audit itself could not run.
pub fn audit(loaded: &Loaded, opts: &AuditOptions) -> Result<AuditReport> {
    if opts.sample_limit == 0 {
        return Err(Error::input("the audit sample must hold at least one record")
            .hint("use a sample limit of 1 or more (the default is 2000)"));
    }
    let ctx = Ctx::new(loaded, opts);
    let model_src = encoding::model_source(&ctx);
    let model_dir = model_src.as_ref().map(|(p, _)| p.clone());

    ctx.progress.note("checking the coordinate vocabulary");
    let (vocab, tokenizer) = checks::vocab::run(model_dir.as_deref());
    let model = encoding::load_model(&ctx, model_dir.as_ref(), vocab.verdict == Verdict::Fail);
    let files = data::read_files(&ctx);
    let encoding = match &model {
        ModelState::Ready(enc) if !files.is_empty() => {
            Some(encoding::encode_samples(&ctx, &files, enc))
        }
        _ => None,
    };

    let mut checks = Vec::new();
    ctx.progress.note("checking records");
    checks.push(checks::records::run(&ctx, &files, encoding.as_ref()));
    checks.push(checks::images::run(&ctx, &files, &model));
    ctx.progress.note("checking the chat template");
    checks.push(checks::template::run(&ctx, &model, encoding.as_ref()));
    checks.push(vocab);
    checks.push(checks::lengths::run(&ctx, &files, &model, encoding.as_ref()));
    ctx.progress.note("checking packs");
    checks.push(checks::packing::run(&ctx, &files, &model, encoding.as_ref()));
    checks.push(checks::eval_join::run(&ctx, &files));
    checks.push(checks::stage2::run(&ctx, &files, &model, encoding.as_ref()));
    checks.push(checks::stage2::server_prompt_tokens(&ctx));

    ctx.progress.note("fingerprinting data and tokenizer");
    let template_file = model.encoder().map(|e| e.model().template_file().to_path_buf());
    let provenance = provenance::collect(opts, &files, tokenizer, template_file.as_deref());
    ctx.progress.note("done");
    Ok(AuditReport {
        config: loaded.tree.origin.file.to_string(),
        model: model_src.map(|(_, s)| s),
        sample_limit: opts.sample_limit,
        map: BOUNDARIES,
        checks,
        provenance,
    })
}

pub(crate) use coordexp_core::digest::sha256_file;
