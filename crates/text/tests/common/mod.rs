//! Model directories for the integration tests.
//!
//! * [`tiny_model_dir`]: built here in Rust, no Python: a byte-level tokenizer with no merges
//!   (every byte one token), the Qwen special tokens and the coordinate tokens, the real
//!   Qwen3-VL chat template. Fast; used by the invariant tests.
//! * [`qwen_model_dir`]: the real Qwen vocabulary, built once per test process by
//!   `tests/fixtures/qwen3vl-text/make_model_dir.py` with the oracle venv's transformers; used by
//!   the live parity tests.
#![allow(dead_code)] // each test binary uses a different subset

use coordexp_core::geometry::ImageSize;
use coordexp_core::norm1000::Bin;
use coordexp_core::record::{Desc, Geometry, Object, Polygon};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const FIXTURE_DIR: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/qwen3vl-text");

use coordexp_text::vocab::QWEN_ADDED;

use coordexp_testkit::byte_to_unicode;

/// Write a tiny byte-level model directory into `dir`. `coord_gap` puts a foreign token between
/// `<|coord_499|>` and `<|coord_500|>` to break the contiguity contract.
pub fn write_tiny_model_dir(dir: &Path, coord_gap: bool) {
    let b2u = byte_to_unicode();
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..256).map(|b| (b2u[b].to_string(), json!(b))).collect();
    let mut added = Vec::new();
    let mut push = |content: String, special: bool| {
        let id = 256 + added.len();
        added.push(json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": special}));
    };
    for t in QWEN_ADDED {
        push(t.to_string(), true);
    }
    push("<|coord_*|>".into(), true);
    for k in 0..1000 {
        if coord_gap && k == 500 {
            push("<|not_a_coord|>".into(), true);
        }
        push(format!("<|coord_{k}|>"), true);
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
    std::fs::copy(
        Path::new(FIXTURE_DIR).join("chat_template.jinja"),
        dir.join("chat_template.jinja"),
    )
    .unwrap();
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

/// A fresh tiny model directory (see the module docs).
pub fn tiny_model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model_dir(dir.path(), false);
    dir
}

/// The real-vocabulary Qwen3-VL text model directory, generated once per test process.
pub fn qwen_model_dir() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("qwen3vl-text");
        let script =
            std::fs::read_to_string(Path::new(FIXTURE_DIR).join("make_model_dir.py")).unwrap();
        let args = json!({"out": out, "fixture_dir": FIXTURE_DIR, "min_pixels": 1024});
        coordexp_testkit::run_python_json(&script, &args);
        (tmp, out)
    });
    path
}

pub fn bin(k: u16) -> Bin {
    Bin::new(k).unwrap()
}

pub fn bbox(desc: &str, c: [u16; 4]) -> Object<Bin> {
    Object::new(Desc::new(desc).unwrap(), Geometry::BBox(c.map(bin)))
}

pub fn poly(desc: &str, pts: &[[u16; 2]]) -> Object<Bin> {
    let pts = pts.iter().map(|[x, y]| [bin(*x), bin(*y)]).collect();
    Object::new(Desc::new(desc).unwrap(), Geometry::Poly(Polygon::new(pts).unwrap()))
}

pub fn size(w: u32, h: u32) -> ImageSize {
    ImageSize::new(w, h).unwrap()
}

/// A deterministic mix of objects: boxes and polygons, ASCII and non-ASCII descriptions.
pub fn objects(n: usize, seed: u64) -> Vec<Object<Bin>> {
    const DESCS: [&str; 12] = [
        "person",
        "dining table",
        "猫",
        "café au lait",
        "Ölfass",
        "🐶 dog",
        "naïve robot",
        "señal de tráfico",
        "красный мяч",
        "say \"hi\" sign",
        "back\\slash",
        "e\u{301}clair",
    ];
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = |m: u64| {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 33) % m) as u16
    };
    (0..n)
        .map(|_| {
            let desc = DESCS[next(DESCS.len() as u64) as usize];
            if next(3) == 0 {
                let k = 3 + next(4) as usize;
                let pts: Vec<[u16; 2]> = (0..k).map(|_| [next(1000), next(1000)]).collect();
                poly(desc, &pts)
            } else {
                let (x1, y1) = (next(900), next(900));
                bbox(desc, [x1, y1, x1 + 1 + next(99), y1 + 1 + next(99)])
            }
        })
        .collect()
}
