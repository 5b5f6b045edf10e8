//! Provenance: the code (version, git commit and dirty flag), the data and tokenizer
//! fingerprints (the run manifest's format), and the torch / transformers versions used for
//! parity.

use crate::AuditOptions;
use crate::data::DataFile;
use crate::report::{
    DatasetFingerprint, FileFingerprint, GitInfo, Provenance, TokenizerFingerprint,
};
use coordexp_core::digest::sha256_file;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub(crate) const NOT_AVAILABLE: &str = "not available";

/// How long the oracle interpreter may take to print the transformers version.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn collect(
    opts: &AuditOptions,
    files: &[DataFile],
    tokenizer: Option<TokenizerFingerprint>,
    template: Option<&Path>,
) -> Provenance {
    let datasets = files
        .iter()
        .map(|f| match fingerprint_jsonl(&f.path) {
            Ok((sha, n)) => DatasetFingerprint {
                role: f.role.into(),
                path: f.path.display().to_string(),
                sha256: Some(sha),
                records: Some(n),
            },
            Err(_) => DatasetFingerprint {
                role: f.role.into(),
                path: f.path.display().to_string(),
                sha256: None,
                records: None,
            },
        })
        .collect();
    let chat_template = template.and_then(|p| {
        sha256_file(p).ok().map(|sha256| FileFingerprint { path: p.display().to_string(), sha256 })
    });
    Provenance {
        coordexp_version: env!("CARGO_PKG_VERSION").into(),
        git: git_state(&opts.repo),
        datasets,
        tokenizer,
        chat_template,
        torch_version: opts.torch_version.clone().unwrap_or_else(|| NOT_AVAILABLE.into()),
        transformers_version: match &opts.transformers_version {
            Some(v) => v.clone(),
            None => transformers_version(),
        },
    }
}

pub use coordexp_core::digest::jsonl_fingerprint as fingerprint_jsonl;

/// `git rev-parse HEAD` and `git status --porcelain` in `dir`; `unknown` without git or a
/// checkout.
pub fn git_state(dir: &Path) -> GitInfo {
    let run = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(commit) if !commit.is_empty() => {
            let dirty = run(&["status", "--porcelain"]).map(|s| !s.is_empty());
            GitInfo { commit, dirty }
        }
        _ => GitInfo { commit: "unknown".into(), dirty: None },
    }
}

/// The oracle environment's transformers version (`COORDEXP_PYTHON_ORACLE`), asked once per
/// process with a timeout; `not available` without the variable, the package or an answer.
fn transformers_version() -> String {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION
        .get_or_init(|| {
            std::env::var_os("COORDEXP_PYTHON_ORACLE")
                .and_then(|py| {
                    python_print(
                        Path::new(&py),
                        "import transformers; print(transformers.__version__)",
                    )
                })
                .unwrap_or_else(|| NOT_AVAILABLE.into())
        })
        .clone()
}

fn python_print(python: &Path, code: &str) -> Option<String> {
    let mut child = Command::new(python)
        .args(["-c", code])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                child.stdout.take()?.read_to_string(&mut out).ok()?;
                let v = out.trim();
                return (status.success() && !v.is_empty()).then(|| v.to_string());
            }
            Ok(None) if start.elapsed() < PYTHON_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}
