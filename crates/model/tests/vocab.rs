//! `init_tiny` and `expand_vocab` produce checkpoints that tokenizers and transformers read the
//! way we do (live oracle).

mod common;

use std::path::PathBuf;

use coordexp_model::attention::AttentionLayout;
use coordexp_model::model::{ForwardInput, Qwen3VL};
use coordexp_model::vocab::{coordinate_tokens, expand_vocab, init_tiny};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use common::{max_abs_diff, oracle, read_case};

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text_logits(model: &Qwen3VL, ids: &[i64]) -> Tensor {
    let t = Tensor::from_slice(ids).view([1, -1]);
    let pos = Tensor::arange(ids.len() as i64, (Kind::Int64, Device::Cpu))
        .view([1, 1, -1])
        .expand([3, 1, ids.len() as i64], false);
    let input = ForwardInput {
        input_ids: &t,
        position_ids: &pos,
        layout: &AttentionLayout::Causal,
        images: None,
        inputs_embeds: None,
    };
    tch::no_grad(|| model.forward(&input).unwrap())
}

/// Write an oracle case file for text-only ids (what the `logits` mode reads).
fn write_case(path: &PathBuf, ids: &[i64]) {
    let t = Tensor::from_slice(ids).view([1, -1]);
    let pos = Tensor::arange(ids.len() as i64, (Kind::Int64, Device::Cpu))
        .view([1, 1, -1])
        .expand([3, 1, ids.len() as i64], false)
        .contiguous();
    let types = Tensor::zeros([1, ids.len() as i64], (Kind::Int, Device::Cpu));
    Tensor::write_safetensors(
        &[("input_ids", t), ("position_ids", pos), ("mm_token_type_ids", types)],
        path,
    )
    .unwrap();
}

#[test]
fn init_then_expand_gives_contiguous_special_coordinate_tokens_that_transformers_loads() {
    let root = scratch("vocab_flow");
    let tok_dir = root.join("tok");
    std::fs::create_dir_all(&tok_dir).unwrap();
    let base_len = oracle(&json!({"mode": "tokenizer", "dir": tok_dir}))["len"].as_i64().unwrap();

    let tiny = root.join("tiny");
    let init = init_tiny(&tok_dir, &tiny, 5).unwrap();
    assert_eq!(init.vocab_size, base_len);
    assert!(init.copied_files >= 2, "tokenizer files copied");
    assert!(init_tiny(&tok_dir, &tiny, 5).is_err(), "an existing output is refused");

    let expanded = root.join("expanded");
    let report = expand_vocab(&tiny, &expanded).unwrap();
    assert_eq!(report.wildcard_id, base_len);
    assert_eq!(report.new_vocab_size, base_len + 1001);
    assert_eq!(report.grown_matrices, 1, "tied: only the embedding grows");
    assert!(expand_vocab(&tiny, &expanded).is_err(), "an existing destination is refused");
    let again = root.join("again");
    assert!(expand_vocab(&expanded, &again).is_err(), "expanding twice is refused");
    assert!(!again.exists());

    // tokenizers and transformers both see the new tokens as single special ids.
    let coords = coordinate_tokens();
    let text = format!("a{}{}{}b", coords[1], coords[1000], coords[0]);
    let seen = oracle(&json!({"mode": "tokens", "dir": expanded, "text": text}));
    let w = base_len;
    let raw: Vec<i64> =
        seen["raw"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(raw.len(), 5, "{seen}");
    assert_eq!(raw[1..4], [w + 1, w + 1000, w], "{seen}");
    assert_eq!(seen["auto"], seen["raw"]);
    assert_eq!(seen["len"].as_i64().unwrap(), base_len + 1001);
    // Special: decoding without special tokens drops them.
    assert_eq!(seen["skip_special"], json!("ab"));

    // The old rows are untouched, the new rows are the mean of the old ones.
    let before = Qwen3VL::load(&tiny, Kind::Float, Device::Cpu).unwrap();
    let after = Qwen3VL::load(&expanded, Kind::Float, Device::Cpu).unwrap();
    let (e0, e1) = (before.lm_head_weight(), after.lm_head_weight());
    assert_eq!(max_abs_diff(e0, &e1.narrow(0, 0, base_len)), 0.0);
    let mean = e0.mean_dim(0, false, Kind::Float);
    assert!(max_abs_diff(&e1.get(w + 500), &mean) < 1e-7);

    // transformers loads the expanded checkpoint and agrees with us, new ids included.
    let ids: Vec<i64> = vec![3, 17, w + 1, w + 999, 40, w];
    let case = root.join("case.safetensors");
    write_case(&case, &ids);
    let out = root.join("hf_logits.safetensors");
    oracle(&json!({"mode": "logits", "dir": expanded, "case": case, "out": out}));
    assert!(max_abs_diff(&text_logits(&after, &ids), &read_case(&out)["logits"]) <= 1e-4);
}

#[test]
fn an_untied_head_grows_alongside_the_embedding_and_stays_untied() {
    let root = scratch("vocab_untied");
    let tok_dir = root.join("tok");
    std::fs::create_dir_all(&tok_dir).unwrap();
    let base_len = oracle(&json!({"mode": "tokenizer", "dir": tok_dir}))["len"].as_i64().unwrap();
    let tiny = root.join("tiny");
    init_tiny(&tok_dir, &tiny, 1).unwrap();
    // Rewrite it untied, with a 300-row matrix (a padded vocabulary, like Qwen's).
    let mut cfg = coordexp_model::config::ModelConfig::from_file(&tiny).unwrap();
    cfg.tie_word_embeddings = false;
    cfg.text.vocab_size = 300;
    tch::manual_seed(2);
    let untied = Qwen3VL::new(
        &cfg,
        Kind::Float,
        Device::Cpu,
        coordexp_model::ParamInit::Normal { std: 0.02 },
    );
    untied.save(&tiny, u64::MAX).unwrap();

    let expanded = root.join("expanded");
    let report = expand_vocab(&tiny, &expanded).unwrap();
    assert_eq!(report.grown_matrices, 2);
    assert_eq!(report.old_vocab_size, 300);
    assert_eq!(report.new_vocab_size, base_len + 1001);
    let after = Qwen3VL::load(&expanded, Kind::Float, Device::Cpu).unwrap();
    assert!(!after.config().tie_word_embeddings);
    let head = after.lm_head_weight();
    assert_eq!(
        max_abs_diff(&head.narrow(0, 0, base_len), &untied.lm_head_weight().narrow(0, 0, base_len)),
        0.0
    );
    // The padding rows past the old tokenizer length are re-initialised like the new tokens.
    assert_eq!(max_abs_diff(&head.get(base_len + 1), &head.get(base_len + 1000)), 0.0);
}
