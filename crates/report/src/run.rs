//! Reading a run directory leniently.
//!
//! Why lenient: the report is how a user looks at a run that may be broken, interrupted or
//! still being written — exactly when strict readers would refuse. Only a directory that is not
//! a run directory at all is an error; every other absence or defect (no manifest, a truncated
//! last line of `metrics.jsonl`, an eval directory without `metrics.json`, an unreadable
//! prediction line) becomes a note or a counted warning on the page. Nothing here panics on file
//! contents.
//!
//! What is read (the layout `coordexp train` writes, see `coordexp_train::trainer::run_dir`):
//! `config.resolved.yaml`, `manifest.json`, `metrics.jsonl` (`{"schema_version", "mode",
//! "step", "elapsed_s", "metrics": {name: number|null}}` per line), and `eval/<name>/` with
//! `metrics.json` and `predictions.jsonl` next to `eval/gt.jsonl`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use coordexp_core::config::yaml;
use coordexp_core::{Error, Result};
use serde_json::Value;

pub const RESOLVED_CONFIG: &str = "config.resolved.yaml";
pub const MANIFEST: &str = "manifest.json";
pub const METRICS: &str = "metrics.jsonl";
pub const EVAL_DIR: &str = "eval";
pub const GT: &str = "gt.jsonl";

/// Metric files larger than this are read only up to it (the page says so).
const MAX_METRICS_BYTES: u64 = 512 << 20;
/// How many malformed-line locations a warning lists.
const EXAMPLES: usize = 5;

/// Problems found while reading, shown at the top of the page.
#[derive(Debug, Clone, Default)]
pub struct Warnings(pub Vec<String>);

impl Warnings {
    pub fn push(&mut self, w: impl Into<String>) {
        self.0.push(w.into());
    }

    /// One warning for `count` bad items of one kind, with up to [`EXAMPLES`] locations.
    pub fn counted(&mut self, count: usize, what: &str, examples: &[String]) {
        if count == 0 {
            return;
        }
        let mut w = format!("{count} {what}");
        if !examples.is_empty() {
            w.push_str(": ");
            w.push_str(&examples.join("; "));
            if count > examples.len() {
                w.push_str("; …");
            }
        }
        self.push(w);
    }
}

/// One `metrics.jsonl` record.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRecord {
    pub step: u64,
    pub elapsed_s: Option<f64>,
    /// `None` for `null` (a non-finite value at training time).
    pub values: BTreeMap<String, Option<f64>>,
}

/// `metrics.jsonl`, split by mode.
#[derive(Debug, Clone, Default)]
pub struct MetricsLog {
    pub present: bool,
    pub train: Vec<MetricsRecord>,
    pub eval: Vec<MetricsRecord>,
    /// Lines that are not a usable record.
    pub malformed: usize,
    pub malformed_examples: Vec<String>,
    /// Records of another mode than `train`/`eval` (skipped).
    pub other_mode: usize,
}

impl MetricsLog {
    /// Every train metric name, in first-seen order.
    pub fn train_keys(&self) -> Vec<String> {
        keys(&self.train)
    }

    /// Every eval metric name, in first-seen order.
    pub fn eval_keys(&self) -> Vec<String> {
        keys(&self.eval)
    }
}

fn keys(records: &[MetricsRecord]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for r in records {
        for k in r.values.keys() {
            if seen.insert(k.as_str()) {
                out.push(k.clone());
            }
        }
    }
    out
}

/// Parse `metrics.jsonl` text; malformed lines are counted with their line numbers.
pub fn parse_metrics(text: &str, label: &str) -> MetricsLog {
    let mut log = MetricsLog { present: true, ..MetricsLog::default() };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match parse_metrics_line(line) {
            Ok((mode, record)) => match mode.as_str() {
                "train" => log.train.push(record),
                "eval" => log.eval.push(record),
                _ => log.other_mode += 1,
            },
            Err(why) => {
                log.malformed += 1;
                if log.malformed_examples.len() < EXAMPLES {
                    log.malformed_examples.push(format!("{label}:{}: {why}", i + 1));
                }
            }
        }
    }
    // A resumed run may have logged a step twice before the log was trimmed; plot in step
    // order either way (stable, so same-step records keep their order).
    log.train.sort_by_key(|r| r.step);
    log.eval.sort_by_key(|r| r.step);
    log
}

fn parse_metrics_line(line: &str) -> std::result::Result<(String, MetricsRecord), String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON ({e})"))?;
    let mode = v.get("mode").and_then(Value::as_str).ok_or("no string `mode`")?.to_owned();
    let step = v.get("step").and_then(Value::as_u64).ok_or("no non-negative integer `step`")?;
    let elapsed_s = v.get("elapsed_s").and_then(Value::as_f64);
    let Some(Value::Object(m)) = v.get("metrics") else {
        return Err("no `metrics` object".into());
    };
    let values = m
        .iter()
        .filter_map(|(k, v)| match v {
            Value::Null => Some((k.clone(), None)),
            Value::Number(n) => Some((k.clone(), n.as_f64())),
            _ => None,
        })
        .collect();
    Ok((mode, MetricsRecord { step, elapsed_s, values }))
}

/// One `eval/<name>/` directory.
#[derive(Debug, Clone)]
pub struct EvalDir {
    pub name: String,
    pub dir: PathBuf,
    /// From `metrics.json` `step`, else from the name `step-<N>`.
    pub step: Option<u64>,
    /// `metrics.json`, when present and valid JSON.
    pub metrics: Option<Value>,
    pub predictions: Option<PathBuf>,
}

impl EvalDir {
    pub fn is_final(&self) -> bool {
        self.name == "final"
    }

    /// A headline number of `metrics.json`.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.as_ref()?.get(key)?.as_f64()
    }

    /// `report.<section>` of `metrics.json`.
    pub fn report(&self, section: &str) -> Option<&Value> {
        self.metrics.as_ref()?.get("report")?.get(section)
    }
}

/// Everything read from a run directory.
#[derive(Debug, Clone)]
pub struct Run {
    pub root: PathBuf,
    pub config_text: Option<String>,
    pub config: Option<yaml::Node>,
    pub manifest: Option<Value>,
    pub metrics: MetricsLog,
    /// `eval/gt.jsonl` when present.
    pub gt: Option<PathBuf>,
    /// Sorted by step; `final` after a `step-<N>` of the same step.
    pub evals: Vec<EvalDir>,
    pub warnings: Warnings,
}

impl Run {
    /// Read `root`. Errors only when `root` is not a run directory (an input error naming the
    /// path and what is missing) or cannot be listed.
    pub fn read(root: &Path) -> Result<Run> {
        let meta = fs::metadata(root).map_err(|e| Error::io("open the run directory", root, &e))?;
        if !meta.is_dir() {
            return Err(Error::input(format!("{} is not a directory", root.display()))
                .hint("pass a run directory, runs/<run.name>/, as written by `coordexp train`"));
        }
        let has = |name: &str| root.join(name).is_file();
        if !has(RESOLVED_CONFIG) && !has(MANIFEST) && !has(METRICS) {
            return Err(Error::input(format!(
                "{} is not a coordexp run directory: it has none of {RESOLVED_CONFIG}, {MANIFEST}, {METRICS}",
                root.display()
            ))
            .hint("pass the run directory itself, runs/<run.name>/, as written by `coordexp train`"));
        }
        let mut warnings = Warnings::default();

        let config_text = read_text(&root.join(RESOLVED_CONFIG), &mut warnings);
        let config = config_text.as_deref().and_then(|t| {
            yaml::parse(t, &root.join(RESOLVED_CONFIG))
                .map_err(|e| warnings.push(format!("{RESOLVED_CONFIG} is not readable YAML: {e}")))
                .ok()
        });
        let manifest = read_text(&root.join(MANIFEST), &mut warnings).and_then(|t| {
            serde_json::from_str::<Value>(&t)
                .map_err(|e| warnings.push(format!("{MANIFEST} is not valid JSON: {e}")))
                .ok()
        });
        let metrics_path = root.join(METRICS);
        let metrics = match read_prefix(&metrics_path, MAX_METRICS_BYTES) {
            Ok(Some((text, truncated))) => {
                if truncated {
                    warnings.push(format!(
                        "{METRICS} is larger than {} MiB; only its beginning is shown",
                        MAX_METRICS_BYTES >> 20
                    ));
                }
                parse_metrics(&text, METRICS)
            }
            Ok(None) => MetricsLog::default(),
            Err(e) => {
                warnings.push(format!("cannot read {METRICS}: {e}"));
                MetricsLog::default()
            }
        };
        warnings.counted(
            metrics.malformed,
            "malformed lines in metrics.jsonl (skipped)",
            &metrics.malformed_examples,
        );
        if metrics.other_mode > 0 {
            warnings.push(format!(
                "{} metrics.jsonl records have a mode other than train/eval (skipped)",
                metrics.other_mode
            ));
        }

        let eval_root = root.join(EVAL_DIR);
        let gt = Some(eval_root.join(GT)).filter(|p| p.is_file());
        let mut evals = Vec::new();
        if let Ok(entries) = fs::read_dir(&eval_root) {
            for entry in entries.flatten() {
                let dir = entry.path();
                let name = entry.file_name().to_string_lossy().to_string();
                if !dir.is_dir() || name.starts_with('.') {
                    continue;
                }
                let metrics_file = dir.join("metrics.json");
                let metrics = read_text(&metrics_file, &mut warnings).and_then(|t| {
                    serde_json::from_str::<Value>(&t)
                        .map_err(|e| {
                            warnings
                                .push(format!("eval/{name}/metrics.json is not valid JSON: {e}"))
                        })
                        .ok()
                });
                let step = metrics
                    .as_ref()
                    .and_then(|m| m.get("step"))
                    .and_then(Value::as_u64)
                    .or_else(|| name.strip_prefix("step-").and_then(|s| s.parse().ok()));
                let predictions = Some(dir.join("predictions.jsonl")).filter(|p| p.is_file());
                evals.push(EvalDir { name, dir, step, metrics, predictions });
            }
        }
        evals.sort_by(|a, b| {
            (a.step.unwrap_or(u64::MAX), a.is_final(), &a.name).cmp(&(
                b.step.unwrap_or(u64::MAX),
                b.is_final(),
                &b.name,
            ))
        });
        Ok(Run {
            root: root.to_path_buf(),
            config_text,
            config,
            manifest,
            metrics,
            gt,
            evals,
            warnings,
        })
    }

    /// The evaluation the detailed sections describe: `final`, else the latest by step that
    /// has a `metrics.json`, else the latest at all.
    pub fn last_eval(&self) -> Option<&EvalDir> {
        self.evals
            .iter()
            .find(|e| e.is_final())
            .or_else(|| self.evals.iter().rev().find(|e| e.metrics.is_some()))
            .or_else(|| self.evals.last())
    }

    /// A scalar of the resolved config by dotted path (`run.name`), as text.
    pub fn config_str(&self, dotted: &str) -> Option<String> {
        let mut node = self.config.as_ref()?;
        for part in dotted.split('.') {
            node = &node.get(part)?.node;
        }
        match &node.value {
            yaml::Value::Str(s) => Some(s.clone()),
            yaml::Value::Int(i) => Some(i.to_string()),
            yaml::Value::Float(f) => Some(f.to_string()),
            yaml::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A string field of the manifest.
    pub fn manifest_str(&self, key: &str) -> Option<&str> {
        self.manifest.as_ref()?.get(key)?.as_str()
    }

    /// The manifest's dataset entry of `role` (`train`/`val`).
    pub fn dataset(&self, role: &str) -> Option<&Value> {
        self.manifest
            .as_ref()?
            .get("datasets")?
            .as_array()?
            .iter()
            .find(|d| d.get("role").and_then(Value::as_str) == Some(role))
    }
}

/// A file's text; `None` when absent (no warning: absences are shown where they matter), a
/// warning when present but unreadable.
fn read_text(path: &Path, warnings: &mut Warnings) -> Option<String> {
    match fs::read(path) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            warnings.push(format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// Up to `max` bytes of a file as text (cut at the last complete line when truncated).
fn read_prefix(path: &Path, max: u64) -> std::io::Result<Option<(String, bool)>> {
    use std::io::Read;
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    let truncated = bytes.len() as u64 > max;
    if truncated {
        let cut = bytes.iter().rposition(|&b| b == b'\n').unwrap_or(0);
        bytes.truncate(cut);
    }
    Ok(Some((String::from_utf8_lossy(&bytes).into_owned(), truncated)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lines_are_read_leniently() {
        let text = r#"{"schema_version":1,"mode":"train","step":2,"elapsed_s":1.5,"metrics":{"loss":2.0,"lr":null}}
{"schema_version":1,"mode":"train","step":1,"elapsed_s":0.5,"metrics":{"loss":3.0,"grad_norm":1.0}}

{"mode":"eval","step":2,"metrics":{"AP":0.25}}
{"mode":"train","step":3,"metrics":{"loss":
not json
{"mode":"train","step":-1,"metrics":{}}
{"mode":"bench","step":4,"metrics":{}}
"#;
        let log = parse_metrics(text, "m.jsonl");
        assert_eq!(log.train.iter().map(|r| r.step).collect::<Vec<_>>(), [1, 2], "sorted");
        assert_eq!(log.train[1].values["lr"], None);
        assert_eq!(log.eval[0].values["AP"], Some(0.25));
        assert_eq!(log.malformed, 3);
        assert!(log.malformed_examples[0].starts_with("m.jsonl:5: invalid JSON"));
        assert_eq!(log.other_mode, 1);
        assert_eq!(log.train_keys(), ["grad_norm", "loss", "lr"]);
    }

    #[test]
    fn a_directory_without_run_files_is_an_input_error_naming_what_is_missing() {
        let d = tempfile::tempdir().unwrap();
        let e = Run::read(d.path()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.what().contains("not a coordexp run directory"), "{e}");
        assert!(e.what().contains(METRICS) && e.what().contains(MANIFEST));
        let e = Run::read(&d.path().join("nope")).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        let file = d.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(Run::read(&file).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn a_fresh_run_with_only_its_config_reads() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(RESOLVED_CONFIG),
            "run:\n  name: demo\ntrain:\n  stage: stage1\n",
        )
        .unwrap();
        let run = Run::read(d.path()).unwrap();
        assert_eq!(run.config_str("run.name").as_deref(), Some("demo"));
        assert!(run.evals.is_empty() && !run.metrics.present && run.gt.is_none());
        assert!(run.warnings.0.is_empty(), "{:?}", run.warnings);
    }
}
