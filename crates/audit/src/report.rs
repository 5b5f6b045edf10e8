//! The audit's results: checks with verdicts and evidence, provenance, and their Markdown and
//! error renderings.

use crate::map::Boundary;
use coordexp_core::Error;
use serde::Serialize;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// The input the check needs is absent (the reason says which).
    Skip,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

/// A config key a check read: its resolved value and where that value comes from (`file:line`,
/// `default`, or the command-line flag that overrode it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setting {
    pub key: String,
    pub value: String,
    pub origin: String,
}

/// One problem a check found, located when it can be (`FILE:LINE` for a record, a dotted config
/// key, a path).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub at: Option<String>,
    pub what: String,
    /// A remedy specific to this finding (the check's remedy applies otherwise).
    pub hint: Option<String>,
}

impl Finding {
    pub fn new(at: Option<String>, what: impl Into<String>) -> Finding {
        Finding { at, what: what.into(), hint: None }
    }

    pub fn at(at: impl Into<String>, what: impl Into<String>) -> Finding {
        Finding::new(Some(at.into()), what)
    }

    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Finding {
        self.hint = Some(hint.into());
        self
    }
}

/// One live check of the audit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Stable id (`template`, `coord_vocab`, …), used by the map's `audited_by`.
    pub id: &'static str,
    pub title: &'static str,
    /// What the check verifies, in one sentence.
    pub verifies: &'static str,
    pub verdict: Verdict,
    /// One line: what was found (for a skip: why it did not run).
    pub summary: String,
    /// The config keys read, with values and origins.
    pub settings: Vec<Setting>,
    /// Facts: counts, sizes, files, what was sampled.
    pub evidence: Vec<String>,
    /// Problems (a failing check has at least one).
    pub findings: Vec<Finding>,
    /// Things worth knowing that do not fail the check.
    pub warnings: Vec<String>,
    /// What to do about a failure.
    pub remedy: Option<String>,
}

impl Check {
    pub(crate) fn new(id: &'static str, title: &'static str, verifies: &'static str) -> Check {
        Check {
            id,
            title,
            verifies,
            verdict: Verdict::Pass,
            summary: String::new(),
            settings: Vec::new(),
            evidence: Vec::new(),
            findings: Vec::new(),
            warnings: Vec::new(),
            remedy: None,
        }
    }

    /// Mark as skipped because `reason` (the input it needs is absent).
    pub(crate) fn skip(mut self, reason: impl Into<String>) -> Check {
        self.verdict = Verdict::Skip;
        self.summary = format!("skip: {}", reason.into());
        self
    }

    /// Pass unless a finding was recorded; `pass` / `fail` are the summaries.
    pub(crate) fn conclude(
        mut self,
        pass: impl Into<String>,
        fail: impl FnOnce(usize) -> String,
        remedy: impl Into<String>,
    ) -> Check {
        if self.findings.is_empty() {
            self.verdict = Verdict::Pass;
            self.summary = pass.into();
        } else {
            self.verdict = Verdict::Fail;
            self.summary = fail(self.findings.len());
            self.remedy = Some(remedy.into());
        }
        self
    }
}

/// Fingerprint of a JSONL dataset: the run manifest's format (sha256 of every byte, non-blank
/// lines counted as records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasetFingerprint {
    /// `train`, `val` or `data` (a `--data` file).
    pub role: String,
    pub path: String,
    /// `None` when the file cannot be read (the records check says why).
    pub sha256: Option<String>,
    pub records: Option<u64>,
}

/// Fingerprint of the tokenizer (the run manifest's `tokenizer` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenizerFingerprint {
    pub path: String,
    pub sha256: String,
    /// Ids of `<|coord_0|>` and `<|coord_999|>` when the vocabulary verified.
    pub coord_first_id: Option<u32>,
    pub coord_last_id: Option<u32>,
}

/// A file and the sha256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileFingerprint {
    pub path: String,
    pub sha256: String,
}

/// The git state of the code's checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitInfo {
    /// `git rev-parse HEAD`, or `unknown` (no git, or not a checkout).
    pub commit: String,
    /// `git status --porcelain` is non-empty; `None` when unknown.
    pub dirty: Option<bool>,
}

/// What produced this audit and what it looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    pub coordexp_version: String,
    pub git: GitInfo,
    pub datasets: Vec<DatasetFingerprint>,
    pub tokenizer: Option<TokenizerFingerprint>,
    pub chat_template: Option<FileFingerprint>,
    /// libtorch version used for parity (from the caller), or `not available`.
    pub torch_version: String,
    /// transformers version of the oracle environment, or `not available`.
    pub transformers_version: String,
}

/// Everything the audit found.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// The config file audited (the leaf of its `extends:` chain).
    pub config: String,
    /// The model directory, and where it came from.
    pub model: Option<Setting>,
    /// Records per file that the record-level checks sampled (the image check reads all).
    pub sample_limit: usize,
    pub map: &'static [Boundary],
    pub checks: Vec<Check>,
    pub provenance: Provenance,
}

impl AuditReport {
    /// No check failed (skips do not fail the audit; each says why it did not run).
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.verdict != Verdict::Fail)
    }

    /// The check with this id.
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// One input error (exit 2) per finding of every failing check: `audit <check>: <what>`
    /// located at the finding (`FILE:LINE` for a record), with the finding's or the check's
    /// remedy.
    pub fn failures(&self) -> Vec<Error> {
        let mut out = Vec::new();
        for c in self.checks.iter().filter(|c| c.verdict == Verdict::Fail) {
            let remedy = c.remedy.clone().unwrap_or_else(|| "see the audit report".into());
            if c.findings.is_empty() {
                out.push(Error::input(format!("audit {}: {}", c.id, c.summary)).hint(remedy));
                continue;
            }
            for f in &c.findings {
                let mut e = Error::input(format!("audit {}: {}", c.id, f.what));
                if let Some(at) = &f.at {
                    e = e.at(at.clone());
                }
                let hint = match &f.hint {
                    Some(h) => format!("{h}; {remedy}"),
                    None => remedy.clone(),
                };
                out.push(e.hint(hint));
            }
        }
        out
    }

    /// Pretty JSON of the whole report.
    pub fn json(&self) -> coordexp_core::Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::runtime(format!("cannot encode the audit report: {e}")))
    }

    /// The report as Markdown: verdict, the pipeline map, every check with its evidence, then
    /// provenance.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let count = |v: Verdict| self.checks.iter().filter(|c| c.verdict == v).count();
        s.push_str("# coordexp audit\n\n");
        s.push_str(&format!("- config: `{}`\n", self.config));
        match &self.model {
            Some(m) => s.push_str(&format!("- model: `{}` ({})\n", m.value, m.origin)),
            None => s.push_str("- model: none (`model.path` is not set and no --model)\n"),
        }
        s.push_str(&format!(
            "- sample: the first {} records of each file for record-level checks; the image check reads every record\n",
            self.sample_limit
        ));
        s.push_str(&format!(
            "- verdict: **{}** ({} passed, {} failed, {} skipped)\n\n",
            if self.passed() { "PASS" } else { "FAIL" },
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::Skip)
        ));

        s.push_str("## Pipeline map\n\n");
        s.push_str("Generated from `crates/audit/src/map.rs`; the audit crate's tests check that every module exists, every key is a key of the config schema and every test is a `fn` of its file.\n\n");
        s.push_str("| boundary | modules | config keys | tests | artifacts | audited by |\n");
        s.push_str("|---|---|---|---|---|---|\n");
        for b in self.map {
            let code = |items: &[&str]| -> String {
                if items.is_empty() {
                    "—".into()
                } else {
                    items.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join("<br>")
                }
            };
            let tests = b
                .tests
                .iter()
                .map(|t| format!("`{}` ({})", t.name, t.file))
                .collect::<Vec<_>>()
                .join("<br>");
            s.push_str(&format!(
                "| **{}**: {} | {} | {} | {} | {} | {} |\n",
                b.name,
                cell(b.invariant),
                code(b.modules),
                code(b.keys),
                tests,
                code(b.artifacts),
                code(b.audited_by)
            ));
        }
        s.push('\n');
        s.push_str("## Checks\n\n| check | verdict | summary |\n|---|---|---|\n");
        for c in &self.checks {
            s.push_str(&format!(
                "| {} (`{}`) | {} | {} |\n",
                c.title,
                c.id,
                c.verdict.word(),
                cell(&c.summary)
            ));
        }
        s.push('\n');
        for c in &self.checks {
            render_check(&mut s, c);
        }

        s.push_str("## Provenance\n\n");
        let p = &self.provenance;
        s.push_str(&format!("- coordexp {}\n", p.coordexp_version));
        let dirty = match p.git.dirty {
            Some(true) => "dirty",
            Some(false) => "clean",
            None => "unknown",
        };
        s.push_str(&format!("- git commit {} ({dirty})\n", p.git.commit));
        for d in &p.datasets {
            match (&d.sha256, d.records) {
                (Some(sha), Some(n)) => s.push_str(&format!(
                    "- data `{}` `{}`: {n} records, sha256 {sha}\n",
                    d.role, d.path
                )),
                _ => s.push_str(&format!("- data `{}` `{}`: unreadable\n", d.role, d.path)),
            }
        }
        match &p.tokenizer {
            Some(t) => {
                let ids = match (t.coord_first_id, t.coord_last_id) {
                    (Some(a), Some(b)) => format!(", coordinate ids {a}..={b}"),
                    _ => ", coordinate ids unverified".into(),
                };
                s.push_str(&format!("- tokenizer `{}`: sha256 {}{ids}\n", t.path, t.sha256));
            }
            None => s.push_str("- tokenizer: none\n"),
        }
        match &p.chat_template {
            Some(t) => s.push_str(&format!("- chat template `{}`: sha256 {}\n", t.path, t.sha256)),
            None => s.push_str("- chat template: none\n"),
        }
        s.push_str(&format!("- torch (parity): {}\n", p.torch_version));
        s.push_str(&format!("- transformers (parity): {}\n", p.transformers_version));
        s
    }
}

/// Findings shown per check in Markdown (the JSON and [`AuditReport::failures`] hold all).
const SHOWN_FINDINGS: usize = 20;

fn render_check(s: &mut String, c: &Check) {
    s.push_str(&format!("### {} — {} (`{}`)\n\n", c.verdict.word(), c.title, c.id));
    s.push_str(&format!("Verifies: {}\n\n", c.verifies));
    s.push_str(&format!("**{}**\n\n", c.summary));
    if !c.settings.is_empty() {
        s.push_str("Settings:\n\n");
        for k in &c.settings {
            s.push_str(&format!("- `{}` = `{}` ({})\n", k.key, k.value, k.origin));
        }
        s.push('\n');
    }
    if !c.evidence.is_empty() {
        s.push_str("Evidence:\n\n");
        for e in &c.evidence {
            s.push_str(&format!("- {e}\n"));
        }
        s.push('\n');
    }
    if !c.findings.is_empty() {
        s.push_str(&format!("Findings ({}):\n\n", c.findings.len()));
        for f in c.findings.iter().take(SHOWN_FINDINGS) {
            let at = f.at.as_deref().map(|a| format!("`{a}`: ")).unwrap_or_default();
            match &f.hint {
                Some(h) => s.push_str(&format!("- {at}{} (hint: {h})\n", f.what)),
                None => s.push_str(&format!("- {at}{}\n", f.what)),
            }
        }
        if c.findings.len() > SHOWN_FINDINGS {
            s.push_str(&format!(
                "- … and {} more (all in the JSON report)\n",
                c.findings.len() - SHOWN_FINDINGS
            ));
        }
        s.push('\n');
    }
    if !c.warnings.is_empty() {
        s.push_str("Warnings:\n\n");
        for w in &c.warnings {
            s.push_str(&format!("- {w}\n"));
        }
        s.push('\n');
    }
    if let Some(r) = &c.remedy {
        s.push_str(&format!("Remedy: {r}\n\n"));
    }
}

/// Text safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
