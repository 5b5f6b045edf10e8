//! Opening a run: a fresh run directory, or the resume of an existing one.
//!
//! A resume never loses work. Every check runs before any file is touched:
//! 1. the checkpoint and its state are read (debris of an interrupted write is ignored);
//! 2. a checkpoint older than the run's newest is refused (resuming it would overwrite the
//!    later checkpoints and truncate their metrics) — the user must say which work to drop;
//! 3. the run's recorded inputs are compared with the current ones: the train and val files'
//!    fingerprints, the epoch-0 packing plan checksum and the resolved config (a changed
//!    `train.jsonl` would otherwise resume at the old epoch position of other data). A
//!    difference is refused unless `--allow-changes`, which records it in the manifest;
//! 4. the schedule is the checkpoint's (`TrainerState::total_steps`, which keeps a deadline's
//!    re-fit), unless the config changed `train.max_steps`; a run already at its last step has
//!    nothing to do and is left exactly as it is;
//! 5. the metrics log and TensorBoard files are planned to drop the steps after the checkpoint.
//!
//! Only then are files written: debris removed, the manifest's resume record appended, the
//! metrics and event files truncated.

use coordexp_core::config::Loaded;
use coordexp_core::config::schema::Config;
use coordexp_core::{Error, Result};
use coordexp_dist::Group;
use coordexp_rollout::{Session, Split};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

use super::epochs::Epochs;
use super::run_dir::{self, RunDir, TrainerState, find_resume};
use super::workers::CpuPlan;
use crate::manifest::{
    self, DatasetFingerprint, MANIFEST_VERSION, Prompts as ManifestPrompts, ResumeRecord,
    RunManifest, Seeds, TCH_VERSION, TokenizerFingerprint,
};
use crate::metrics::{EventWriter, MetricsLog, Truncation};
use crate::optim::LrSchedule;

/// A run ready to train: its directory, state, weights and metric sinks.
pub struct OpenRun {
    pub dir: RunDir,
    pub state: TrainerState,
    /// Where the weights to start from are (the model directory, or the checkpoint).
    pub weights: PathBuf,
    /// True when resuming (the optimizer state is in `weights`).
    pub resumed: bool,
    pub metrics: MetricsLog,
    pub events: EventWriter,
}

/// How opening a run ended.
pub enum Opened {
    Ready(Box<OpenRun>),
    /// A resumed run that already took every step of its schedule: nothing was touched.
    Finished {
        dir: PathBuf,
        state: TrainerState,
        checkpoint: PathBuf,
    },
}

/// Where training starts: what every rank of a multi-process run must agree on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Start {
    pub dir: PathBuf,
    pub state: TrainerState,
    /// The weights to load (the model directory, or the checkpoint).
    pub weights: PathBuf,
    pub resumed: bool,
    /// The run already took every step of its schedule.
    pub finished: bool,
}

impl Start {
    /// The start of an opened run (`None` when this rank did not open it).
    pub fn of(opened: Option<&Opened>) -> Option<Start> {
        Some(match opened? {
            Opened::Ready(r) => Start {
                dir: r.dir.root.clone(),
                state: r.state.clone(),
                weights: r.weights.clone(),
                resumed: r.resumed,
                finished: false,
            },
            Opened::Finished { dir, state, checkpoint } => Start {
                dir: dir.clone(),
                state: state.clone(),
                weights: checkpoint.clone(),
                resumed: true,
                finished: true,
            },
        })
    }

    /// Rank 0's start — or the error that stopped it opening the run — on every rank.
    pub fn shared(
        group: &Group,
        mine: std::result::Result<Option<Start>, String>,
    ) -> Result<Start> {
        let message: std::result::Result<Start, String> = match mine {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err("rank 0 did not open the run".into()),
            Err(e) => Err(e),
        };
        let bytes = if group.rank() == 0 {
            Some(
                serde_json::to_vec(&message)
                    .map_err(|e| Error::runtime(format!("encoding the run start: {e}")))?,
            )
        } else {
            None
        };
        let got = group.broadcast_bytes(bytes.as_deref(), 0, "run start from rank 0")?;
        let shared: std::result::Result<Start, String> = serde_json::from_slice(&got)
            .map_err(|e| Error::runtime(format!("decoding rank 0's run start: {e}")))?;
        shared.map_err(|e| {
            Error::runtime(format!("rank 0 could not open the run: {e}"))
                .hint("see rank 0's error; every rank stops with it")
        })
    }
}

/// What the opening needs besides the config.
pub struct RunInputs<'a> {
    pub loaded: &'a Loaded,
    pub session: &'a Session,
    pub train: &'a Split,
    pub val: Option<&'a Split>,
    pub epochs: &'a Epochs<'a>,
    pub cpu: CpuPlan,
    pub command_line: &'a [String],
}

/// Open a fresh run (`resume: None`) or resume one (see the module docs).
pub fn open(inputs: &RunInputs<'_>, resume: Option<&Path>, allow_changes: bool) -> Result<Opened> {
    let cfg = &inputs.loaded.config;
    let resolved = inputs.loaded.resolved_yaml();
    let Some(dir) = resume else {
        let root = cfg.run.output_dir.join(&cfg.run.name);
        let dir = RunDir::create(&root, &resolved)?;
        manifest_of(inputs)?.write(&dir.root.join(run_dir::MANIFEST))?;
        let metrics = MetricsLog::create(&dir.root.join(run_dir::METRICS))?;
        let events = EventWriter::create(&dir.root)?;
        return Ok(Opened::Ready(Box::new(OpenRun {
            dir,
            state: TrainerState::start(cfg.train.max_steps),
            weights: inputs.session.model_src.clone(),
            resumed: false,
            metrics,
            events,
        })));
    };

    // 1–2: the checkpoint, and no later one.
    let (root, ckpt, mut state) = find_resume(dir)?;
    let run = RunDir { root };
    let later: Vec<String> = run
        .checkpoints()
        .list()?
        .into_iter()
        .filter(|(step, _)| *step > state.step)
        .map(|(_, p)| p.display().to_string())
        .collect();
    if !later.is_empty() {
        return Err(Error::input(format!(
            "checkpoint {} is at step {}, but the run has later checkpoints: {}",
            ckpt.display(),
            state.step,
            later.join(", ")
        ))
        .at(ckpt.display().to_string())
        .hint(format!(
            "resume from the newest (`--resume {}`), or delete the later checkpoints to drop their work",
            run.root.display()
        )));
    }

    // 3: the inputs the checkpoint was trained with: its own stored config, and the data and
    // plan of the run's latest (re)start.
    let manifest_path = run.root.join(run_dir::MANIFEST);
    let mut recorded = RunManifest::read(&manifest_path)?;
    let stored_config = ckpt.join(run_dir::RESOLVED_CONFIG);
    let stored = coordexp_core::config::load(&stored_config)
        .map_err(|e| e.or_hint("the checkpoint's stored config no longer loads; restore it"))?
        .config;
    let (datasets, plan) = match recorded.resumes.last() {
        Some(r) => (&r.datasets, r.packing_plan_checksum.as_str()),
        None => (&recorded.datasets, recorded.packing_plan_checksum.as_str()),
    };
    let current = fingerprints(inputs)?;
    let mut changes = input_changes(datasets, plan, &current, inputs.epochs.first_plan_checksum());
    changes.extend(config_changes(&stored, cfg, &state)?);
    if !changes.is_empty() && !allow_changes {
        return Err(Error::many(
            changes
                .iter()
                .map(|c| {
                    Error::input(format!("changed since the run started: {c}"))
                        .at(run.root.display().to_string())
                })
                .collect(),
        )
        .unwrap_or_else(|| Error::input("the run's inputs changed"))
        .or_hint("resume with the run's own inputs, or pass --allow-changes to accept the changes (recorded in manifest.json)"));
    }

    // 4: the schedule, and a finished run.
    if cfg.train.max_steps != stored.train.max_steps && cfg.train.max_steps != state.total_steps {
        state.total_steps = cfg.train.max_steps;
    }
    if state.step >= state.total_steps {
        return Ok(Opened::Finished { dir: run.root, state, checkpoint: ckpt });
    }

    // 5: plan the truncations (they read and validate everything first).
    let metrics_plan = MetricsLog::plan_resume(&run.root.join(run_dir::METRICS), state.step)?;
    let events_plan = Truncation::plan(&run.root, state.step)?;

    // Every check passed: now write.
    run.checkpoints().remove_stale()?;
    recorded.resumes.push(ResumeRecord {
        from_step: state.step,
        command_line: inputs.command_line.to_vec(),
        at: manifest::utc_now(),
        changes,
        datasets: current,
        packing_plan_checksum: inputs.epochs.first_plan_checksum().to_string(),
    });
    recorded.write(&manifest_path)?;
    if metrics_plan.dropped > 0 || events_plan.dropped > 0 {
        tracing::info!(
            "dropped {} metrics records and {} TensorBoard events written after step {}",
            metrics_plan.dropped,
            events_plan.dropped,
            state.step
        );
    }
    let metrics = metrics_plan.apply()?;
    events_plan.apply()?;
    let events = EventWriter::create(&run.root)?;
    tracing::info!("resuming {} from step {}", run.root.display(), state.step);
    Ok(Opened::Ready(Box::new(OpenRun {
        dir: run,
        state,
        weights: ckpt,
        resumed: true,
        metrics,
        events,
    })))
}

/// The train (and val) files' fingerprints now.
fn fingerprints(inputs: &RunInputs<'_>) -> Result<Vec<DatasetFingerprint>> {
    let mut out = vec![manifest::fingerprint_jsonl("train", &inputs.train.path)?];
    if let Some(v) = inputs.val {
        out.push(manifest::fingerprint_jsonl("val", &v.path)?);
    }
    Ok(out)
}

/// Data and packing differences between what the checkpoint trained on and the current inputs.
fn input_changes(
    then_data: &[DatasetFingerprint],
    then_plan: &str,
    now_data: &[DatasetFingerprint],
    now_plan: &str,
) -> Vec<String> {
    let mut changes = Vec::new();
    for role in ["train", "val"] {
        let then = then_data.iter().find(|d| d.role == role);
        let now = now_data.iter().find(|d| d.role == role);
        match (then, now) {
            (Some(a), Some(b)) if a.sha256 != b.sha256 => changes.push(format!(
                "the {role} data: {} ({} records, sha256 {}) is now {} ({} records, sha256 {})",
                a.path.display(),
                a.records,
                short(&a.sha256),
                b.path.display(),
                b.records,
                short(&b.sha256)
            )),
            (Some(a), None) => {
                changes.push(format!("the {role} data {} is no longer used", a.path.display()))
            }
            (None, Some(b)) => changes.push(format!("the {role} data {} is new", b.path.display())),
            _ => {}
        }
    }
    if then_plan != now_plan {
        changes.push(format!(
            "the epoch-0 packing plan: checksum {} is now {}",
            short(then_plan),
            short(now_plan)
        ));
    }
    changes
}

/// The config keys whose resolved values differ, as `key: old → new`. The schedule keys are
/// compared by the schedule they give: `train.max_steps` equal to the checkpoint's total (a
/// deadline's re-fit, which the demo writes back into its config) and an `optim.warmup` that
/// gives the checkpoint's warmup steps for that total are not changes.
fn config_changes(stored: &Config, current: &Config, state: &TrainerState) -> Result<Vec<String>> {
    let as_value = |c: &Config| {
        serde_json::to_value(c).map_err(|e| Error::runtime(format!("cannot compare configs: {e}")))
    };
    let mut changes = Vec::new();
    diff("", &as_value(stored)?, &as_value(current)?, &mut changes);
    let same_total = current.train.max_steps == state.total_steps;
    let same_warmup = LrSchedule::new(
        current.optim.schedule,
        current.optim.warmup,
        state.total_steps,
        current.optim.min_lr,
    )
    .warmup_steps
        == state.warmup_steps;
    Ok(changes
        .into_iter()
        .filter(|(key, _)| !(key == "train.max_steps" && same_total))
        .filter(|(key, _)| !(key == "optim.warmup" && same_warmup))
        .map(|(key, what)| format!("{key}: {what}"))
        .collect())
}

fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<(String, String)>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match y.get(k) {
                    Some(vb) => diff(&p, va, vb, out),
                    None => out.push((p, format!("{va} → (absent)"))),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    out.push((p, format!("(absent) → {vb}")));
                }
            }
        }
        _ if a != b => out.push((path.to_string(), format!("{a} → {b}"))),
        _ => {}
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// The manifest of a fresh run.
fn manifest_of(inputs: &RunInputs<'_>) -> Result<RunManifest> {
    let cfg = &inputs.loaded.config;
    let datasets = fingerprints(inputs)?;
    let model_dir = &inputs.session.model_dir;
    let tokenizer_path = model_dir.root().join("tokenizer.json");
    let vocab = model_dir.vocab();
    let prompts = &inputs.session.prompts;
    Ok(RunManifest {
        schema_version: MANIFEST_VERSION,
        coordexp_version: env!("CARGO_PKG_VERSION").into(),
        git: manifest::git_state(Path::new(".")),
        rustc: manifest::rustc_version(),
        tch_version: TCH_VERSION.into(),
        torch_version: coordexp_model::runtime::TORCH_VERSION.into(),
        device: device_description(cfg, inputs.cpu),
        seeds: Seeds::new(cfg.run.seed),
        datasets,
        tokenizer: TokenizerFingerprint {
            sha256: manifest::sha256_file(&tokenizer_path)?,
            path: tokenizer_path,
            coord_first_id: *vocab.range().start(),
            coord_last_id: *vocab.range().end(),
        },
        prompts: ManifestPrompts { system: prompts.system.clone(), user: prompts.user.clone() },
        packing_plan_checksum: inputs.epochs.first_plan_checksum().into(),
        command_line: inputs.command_line.to_vec(),
        started_at: manifest::utc_now(),
        resumes: Vec::new(),
    })
}

fn device_description(cfg: &Config, cpu: CpuPlan) -> String {
    if cfg.model.device == "cpu" {
        format!("cpu ({cpu})")
    } else {
        let info = coordexp_model::runtime::info();
        format!("{} ({} CUDA devices visible)", cfg.model.device, info.cuda_devices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_differences_are_listed_by_dotted_key_and_a_refitted_total_is_not_one() {
        let a = Config::default();
        let mut b = Config::default();
        b.optim.lr.language = 1e-3;
        b.train.max_steps = 1234;
        let at = |total, warmup| TrainerState {
            total_steps: total,
            warmup_steps: warmup,
            ..TrainerState::start(total)
        };
        // warmup 0.03 of the planned 2000 steps = 60 steps.
        let changes = config_changes(&a, &b, &at(1234, 60)).unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(changes[0].starts_with("optim.lr.language: 0.0002 → 0.001"), "{changes:?}");
        let changes = config_changes(&a, &b, &at(99, 60)).unwrap();
        assert!(changes.iter().any(|c| c.starts_with("train.max_steps: 2000 → 1234")));
        // The demo writes back a re-fitted total with the warmup fraction giving the same steps.
        b.optim.warmup = 60.0 / 1234.0;
        let changes = config_changes(&a, &b, &at(1234, 60)).unwrap();
        assert!(!changes.iter().any(|c| c.starts_with("optim.warmup")), "{changes:?}");
    }
}
