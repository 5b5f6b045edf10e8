//! `metrics.jsonl`: one JSON object per logged step, flushed as it is written so that a crash
//! loses nothing already logged.
//!
//! Line format: `{"schema_version":1,"mode":"train","step":10,"elapsed_s":12.5,"metrics":{..}}`;
//! metric values are numbers, or `null` for a non-finite value (JSON has no NaN).

use coordexp_core::{Error, Result};
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Version of the line format.
pub const SCHEMA_VERSION: u32 = 1;

/// Which phase produced a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Train,
    Eval,
}

impl Mode {
    /// Prefix of the TensorBoard tags of this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Train => "train",
            Mode::Eval => "eval",
        }
    }
}

/// Appends records to a run's `metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
}

/// A planned resume of `metrics.jsonl` (see [`MetricsLog::plan_resume`]).
pub struct MetricsResume {
    path: PathBuf,
    kept: String,
    /// Records of later steps that applying drops.
    pub dropped: usize,
}

impl MetricsResume {
    /// Rewrite the log without the later records (atomically; untouched when nothing is
    /// dropped) and open it for appending.
    pub fn apply(self) -> Result<MetricsLog> {
        if self.dropped > 0 {
            crate::checkpoint::write_file_atomically(&self.path, self.kept.as_bytes())?;
        }
        let file = File::options()
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io("open", &self.path, &e))?;
        Ok(MetricsLog { path: self.path, out: BufWriter::new(file) })
    }
}

#[derive(Serialize)]
struct Line {
    schema_version: u32,
    mode: Mode,
    step: u64,
    elapsed_s: f64,
    metrics: serde_json::Map<String, serde_json::Value>,
}

impl MetricsLog {
    /// Start a new log at `path` (an existing file is an error: runs never overwrite metrics).
    pub fn create(path: &Path) -> Result<MetricsLog> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io("create", path, &e))?;
        Ok(MetricsLog { path: path.to_path_buf(), out: BufWriter::new(file) })
    }

    /// Plan continuing the log of a run resumed after step `step`: records of later steps
    /// (written after that checkpoint by the interrupted run) are dropped so the log reads as
    /// one run. Nothing is written until [`MetricsResume::apply`]: a resume checks everything
    /// before it touches a file.
    pub fn plan_resume(path: &Path, step: u64) -> Result<MetricsResume> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, &e))?;
        let mut kept = String::new();
        let mut dropped = 0;
        let lines: Vec<&str> = text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = match serde_json::from_str(line) {
                Ok(v) => v,
                // A last line without its newline that does not parse was torn by a crash
                // mid-write: it is dropped (and counted) like the later steps.
                Err(_) if i + 1 == lines.len() => {
                    dropped += 1;
                    continue;
                }
                Err(e) => {
                    return Err(Error::input(format!("invalid metrics record: {e}"))
                        .at(format!("{}:{}", path.display(), i + 1))
                        .hint(
                            "metrics.jsonl is written by coordexp only; restore it or start a new run",
                        ));
                }
            };
            match v.get("step").and_then(serde_json::Value::as_u64) {
                Some(s) if s <= step => {
                    kept.push_str(line);
                    kept.push('\n');
                }
                Some(_) => dropped += 1,
                None => {
                    return Err(Error::input("metrics record without a `step`").at(format!(
                        "{}:{}",
                        path.display(),
                        i + 1
                    )));
                }
            }
        }
        Ok(MetricsResume { path: path.to_path_buf(), kept, dropped })
    }

    /// Append one record and flush it.
    pub fn write(
        &mut self,
        mode: Mode,
        step: u64,
        elapsed_s: f64,
        metrics: &[(&str, f64)],
    ) -> Result<()> {
        let metrics =
            metrics.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
        let line = Line { schema_version: SCHEMA_VERSION, mode, step, elapsed_s, metrics };
        let mut text = serde_json::to_string(&line)
            .map_err(|e| Error::runtime(format!("cannot encode a metrics record: {e}")))?;
        text.push('\n');
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|e| Error::io("write", &self.path, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(p: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn records_are_flushed_lines_with_null_for_non_finite_values() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.jsonl");
        let mut log = MetricsLog::create(&p).unwrap();
        log.write(Mode::Train, 1, 0.5, &[("loss", 2.5), ("lr", f64::NAN)]).unwrap();
        let got = lines(&p);
        assert_eq!(
            got[0],
            serde_json::json!({"schema_version": 1, "mode": "train", "step": 1, "elapsed_s": 0.5,
                               "metrics": {"loss": 2.5, "lr": null}})
        );
        assert!(MetricsLog::create(&p).is_err(), "never overwrites a log");
    }

    #[test]
    fn resume_drops_records_after_the_checkpoint_step() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.jsonl");
        let mut log = MetricsLog::create(&p).unwrap();
        for s in 1..=5 {
            log.write(Mode::Train, s, s as f64, &[("loss", 1.0 / s as f64)]).unwrap();
        }
        drop(log);
        // A crash mid-write left a torn last line.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"{\"schema_version\":1,\"mode\":\"tra").unwrap();
        let before = std::fs::read(&p).unwrap();
        let plan = MetricsLog::plan_resume(&p, 3).unwrap();
        assert_eq!(plan.dropped, 3, "steps 4 and 5, and the torn line");
        assert_eq!(std::fs::read(&p).unwrap(), before, "planning writes nothing");
        let mut log = plan.apply().unwrap();
        log.write(Mode::Eval, 4, 9.0, &[("AP50", 0.25)]).unwrap();
        let steps: Vec<u64> = lines(&p).iter().map(|v| v["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
    }
}
