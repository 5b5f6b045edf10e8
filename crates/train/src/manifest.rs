//! The run manifest (`manifest.json`): everything needed to say what produced a run directory —
//! code, toolchain, runtime, seeds, data, tokenizer, prompts, packing and command line.
//!
//! The trainer fills the struct (the helpers here compute the fingerprints and read git and
//! the toolchain) and writes it atomically once at start.

use crate::checkpoint::write_file_atomically;
use coordexp_core::digest::jsonl_fingerprint;
pub use coordexp_core::digest::sha256_file;
use coordexp_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Version of the manifest layout.
pub const MANIFEST_VERSION: u32 = 1;

/// The tch crate version this crate is built with (the workspace pins it exactly; a unit test
/// checks the pin).
pub const TCH_VERSION: &str = "0.24.0";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    pub schema_version: u32,
    pub coordexp_version: String,
    /// `null` when the code does not run from a git checkout (or git is missing).
    pub git: Option<GitState>,
    /// `rustc --version` of the toolchain on PATH at run time; `null` if none.
    pub rustc: Option<String>,
    pub tch_version: String,
    /// libtorch version (`coordexp_model::runtime::TORCH_VERSION`).
    pub torch_version: String,
    /// Device the run trains on (`cpu`, `cuda:0`, …) and what it is.
    pub device: String,
    pub seeds: Seeds,
    pub datasets: Vec<DatasetFingerprint>,
    pub tokenizer: TokenizerFingerprint,
    pub prompts: Prompts,
    /// Checksum of the epoch-0 packing plan (later epochs derive from the seed).
    pub packing_plan_checksum: String,
    pub command_line: Vec<String>,
    /// UTC, RFC 3339 (`2026-05-01T12:00:00Z`).
    pub started_at: String,
    /// Every resume of the run, in order, with what it accepted as changed (`--allow-changes`).
    #[serde(default)]
    pub resumes: Vec<ResumeRecord>,
}

/// One resume of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRecord {
    /// The checkpoint's step.
    pub from_step: u64,
    pub command_line: Vec<String>,
    /// UTC, RFC 3339.
    pub at: String,
    /// What differed from the run's recorded inputs and was accepted (`--allow-changes`).
    pub changes: Vec<String>,
    /// The data and the epoch-0 packing plan the run continued with (the next resume compares
    /// against these).
    pub datasets: Vec<DatasetFingerprint>,
    pub packing_plan_checksum: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitState {
    pub sha: String,
    /// Uncommitted changes to tracked or untracked files.
    pub dirty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seeds {
    /// `run.seed`.
    pub root: u64,
    /// How every other seed is derived from the root (see `coordexp_core::seed`).
    pub derivation: String,
}

impl Seeds {
    pub fn new(root: u64) -> Seeds {
        Seeds { root, derivation: "splitmix64 derive(parent, stream, index) v1".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetFingerprint {
    /// `train` or `val`.
    pub role: String,
    pub path: PathBuf,
    pub sha256: String,
    /// Non-empty lines (records) in the file.
    pub records: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerFingerprint {
    pub path: PathBuf,
    /// sha256 of `tokenizer.json`.
    pub sha256: String,
    /// Ids of `<|coord_0|>` and `<|coord_999|>`.
    pub coord_first_id: u32,
    pub coord_last_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompts {
    pub system: String,
    pub user: String,
}

impl RunManifest {
    /// Write pretty JSON to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::runtime(format!("cannot encode the run manifest: {e}")))?;
        text.push('\n');
        write_file_atomically(path, text.as_bytes())
    }

    pub fn read(path: &Path) -> Result<RunManifest> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, &e))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::input(format!("invalid run manifest: {e}")).at(path.display().to_string())
        })
    }
}

/// Fingerprint a JSONL dataset: sha256 of its bytes and its record count, in one pass.
pub fn fingerprint_jsonl(role: &str, path: &Path) -> Result<DatasetFingerprint> {
    let (sha256, records) = jsonl_fingerprint(path)?;
    Ok(DatasetFingerprint { role: role.into(), path: path.to_path_buf(), sha256, records })
}

/// HEAD and the dirty flag of the git checkout containing `dir`; `None` outside a checkout or
/// without git (recorded as `null`, visible in the manifest).
pub fn git_state(dir: &Path) -> Option<GitState> {
    let run = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let sha = run(&["rev-parse", "HEAD"])?;
    let status = run(&["status", "--porcelain"])?;
    Some(GitState { sha, dirty: !status.is_empty() })
}

/// `rustc --version` of the toolchain on PATH, if any.
pub fn rustc_version() -> Option<String> {
    let out = Command::new("rustc").arg("--version").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Now, UTC, RFC 3339 with second precision.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from day count (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn jsonl_fingerprint_counts_records_and_hashes_every_byte() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("train.jsonl");
        std::fs::write(&p, "{\"a\":1}\n\n{\"a\":2}").unwrap();
        let f = fingerprint_jsonl("train", &p).unwrap();
        assert_eq!(f.records, 2);
        assert_eq!(f.sha256, sha256_file(&p).unwrap());
        // sha256("abc"), FIPS 180-2 example.
        std::fs::write(&p, "abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_tch_constant_matches_the_workspace_pin() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
        let text = std::fs::read_to_string(root).unwrap();
        assert!(text.contains(&format!("tch = \"={TCH_VERSION}\"")), "update TCH_VERSION");
    }

    #[test]
    fn git_state_reads_this_checkout_and_outside_one_is_none() {
        let here = git_state(Path::new(env!("CARGO_MANIFEST_DIR")));
        if let Some(g) = here {
            assert_eq!(g.sha.len(), 40);
        }
        let d = tempfile::tempdir().unwrap();
        assert_eq!(git_state(d.path()), None);
    }
}
