//! Fixtures built from scratch in temporary directories: a tiny byte-level Qwen3-VL text model
//! directory (the real Qwen3-VL chat template from `tests/fixtures/qwen3vl-text/`, the Qwen
//! special tokens and the 1,000 coordinate tokens; the builder of
//! `crates/text/tests/common/`), the synthetic shapes data, and a config naming both.
#![allow(dead_code)] // each test binary uses a different subset

use coordexp_audit::{AuditOptions, AuditReport, Verdict, audit};
use coordexp_core::progress::Progress;
use coordexp_data::synth::{SceneSpec, SynthOptions, generate_with};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const FIXTURE_DIR: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/qwen3vl-text");

/// How to spoil the model directory.
#[derive(Default, Clone, Copy)]
pub struct ModelSpec {
    /// Leave this coordinate token out of the tokenizer.
    pub missing_coord: Option<u16>,
    /// Write a space after the assistant's answer in the chat template.
    pub space_after_answer: bool,
}

use coordexp_testkit::byte_to_unicode;

/// A tiny byte-level model directory in `dir`.
pub fn write_model_dir(dir: &Path, spec: ModelSpec) {
    std::fs::create_dir_all(dir).unwrap();
    let b2u = byte_to_unicode();
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..256).map(|b| (b2u[b].to_string(), json!(b))).collect();
    let mut added = Vec::new();
    let mut push = |content: String| {
        let id = 256 + added.len();
        added.push(json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}));
    };
    for t in coordexp_text::vocab::QWEN_ADDED {
        push(t.to_string());
    }
    push("<|coord_*|>".into());
    for k in 0..1000u16 {
        if spec.missing_coord != Some(k) {
            push(format!("<|coord_{k}|>"));
        }
    }
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true});
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": {"type": "NFC"}, "pre_tokenizer": byte_level, "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": []}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let mut template =
        std::fs::read_to_string(Path::new(FIXTURE_DIR).join("chat_template.jinja")).unwrap();
    if spec.space_after_answer {
        // After the assistant's content, before its tool calls and <|im_end|>.
        let at = template.find("message.role == \"assistant\"").unwrap();
        let rel = template[at..].find("{%- if message.tool_calls %}").unwrap();
        template.insert_str(at + rel, "{{- ' ' }}\n        ");
    }
    std::fs::write(dir.join("chat_template.jinja"), template).unwrap();
    let config = json!({
        "model_type": "qwen3_vl", "image_token_id": 256 + 12, "vision_start_token_id": 256 + 9,
        "vision_end_token_id": 256 + 10,
        "vision_config": {"patch_size": 16, "temporal_patch_size": 2, "spatial_merge_size": 2}
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let pre = json!({"patch_size": 16, "merge_size": 2, "temporal_patch_size": 2,
                     "size": {"shortest_edge": 1024, "longest_edge": 16777216}});
    std::fs::write(dir.join("preprocessor_config.json"), pre.to_string()).unwrap();
}

/// A model directory, synthetic data and a base config in one temporary directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub model: PathBuf,
    pub train: PathBuf,
    pub val: PathBuf,
    pub base: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with_model(ModelSpec::default())
    }

    pub fn with_model(spec: ModelSpec) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        write_model_dir(&model, spec);
        let data = dir.path().join("data");
        let opts =
            SynthOptions { out: data.clone(), train: 10, val: 4, seed: 5, progress: Progress::OFF };
        let scenes = SceneSpec { sides: vec![64, 96], min_objects: 1, max_objects: 3 };
        generate_with(&opts, &scenes).unwrap();
        let base = dir.path().join("base.yaml");
        let train = data.join("train.jsonl");
        let val = data.join("val.jsonl");
        std::fs::write(
            &base,
            format!(
                "run: {{name: audit-test, seed: 3}}\n\
                 model: {{path: {model:?}}}\n\
                 data: {{train: {train:?}, val: {val:?}}}\n\
                 prompt: {{system: Detect the objects., user: List them.}}\n\
                 template: {{max_pixels: 65536, image_factor: 32}}\n\
                 packing: {{max_length: 1024}}\n\
                 eval: {{max_new_tokens: 256}}\n\
                 rollout: {{max_new_tokens: 256, max_model_len: 2048}}\n"
            ),
        )
        .unwrap();
        Fixture { dir, model, train, val, base }
    }

    /// A config extending the base with `extra` YAML.
    pub fn config(&self, extra: &str) -> PathBuf {
        let p = self.dir.path().join("leaf.yaml");
        std::fs::write(&p, format!("extends: base.yaml\n{extra}")).unwrap();
        p
    }

    /// Audit the base config extended with `extra`.
    pub fn audit(&self, extra: &str) -> AuditReport {
        self.audit_with(extra, options())
    }

    pub fn audit_with(&self, extra: &str, opts: AuditOptions) -> AuditReport {
        let loaded = coordexp_core::config::load(&self.config(extra)).unwrap();
        audit(&loaded, &opts).unwrap()
    }

    /// Append a line to a JSONL file; returns its 1-based line number.
    pub fn append(&self, file: &Path, line: &str) -> usize {
        let mut text = std::fs::read_to_string(file).unwrap();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(line);
        text.push('\n');
        std::fs::write(file, &text).unwrap();
        text.lines().count()
    }

    /// Line `n` (1-based) of a JSONL file as JSON.
    pub fn line(&self, file: &Path, n: usize) -> serde_json::Value {
        let text = std::fs::read_to_string(file).unwrap();
        serde_json::from_str(text.lines().nth(n - 1).unwrap()).unwrap()
    }
}

/// Quiet options with fixed parity versions (no Python probe).
pub fn options() -> AuditOptions {
    AuditOptions {
        progress: false,
        torch_version: Some("2.11.0".into()),
        transformers_version: Some("test".into()),
        server_timeout: Duration::from_secs(2),
        ..AuditOptions::default()
    }
}

/// The verdict of check `id`.
pub fn verdict(r: &AuditReport, id: &str) -> Verdict {
    r.check(id).unwrap_or_else(|| panic!("no check {id}")).verdict
}

/// Check `id` fails and no other check does.
pub fn fails_only(r: &AuditReport, id: &str) {
    assert_eq!(verdict(r, id), Verdict::Fail, "{id} should fail:\n{}", r.markdown());
    for c in &r.checks {
        if c.id != id {
            assert_ne!(c.verdict, Verdict::Fail, "{} fails too:\n{}", c.id, r.markdown());
        }
    }
    assert!(!r.passed());
    let c = r.check(id).unwrap();
    assert!(!c.findings.is_empty() && c.remedy.is_some(), "{c:?}");
}

/// Every finding of check `id`, rendered `at: what`.
pub fn findings(r: &AuditReport, id: &str) -> Vec<String> {
    r.check(id)
        .unwrap()
        .findings
        .iter()
        .map(|f| format!("{}: {}", f.at.as_deref().unwrap_or("-"), f.what))
        .collect()
}
