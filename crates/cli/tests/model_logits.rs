//! `coordexp model logits` against live transformers: the written logits of a record equal
//! `Qwen3VLForConditionalGeneration` on the same model directory, image file and token ids.

use coordexp_demo::{self as demo, Arch};
use std::process::Command;

#[test]
fn written_logits_equal_transformers_on_the_same_record() {
    let d = tempfile::tempdir().unwrap();
    let prepared = demo::prepare(&d.path().join("demo"), 4, 1, 5, &Arch::TEST).unwrap();
    let model = d.path().join("demo/model");
    let data = d.path().join("demo/data/train.jsonl");
    let out = d.path().join("logits.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_coordexp"))
        .args(["model", "logits", "--model"])
        .arg(&model)
        .arg("--config")
        .arg(&prepared.config)
        .arg("--data")
        .arg(&data)
        .args(["--line", "2", "--out"])
        .arg(&out)
        .env("COORDEXP_CPU_THREADS", "1")
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    assert!(text.contains("logits ["), "{text}");

    let line = std::fs::read_to_string(&data).unwrap().lines().nth(1).unwrap().to_string();
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    let image = data.parent().unwrap().join(record["images"][0].as_str().unwrap());
    let r = coordexp_testkit::run_python_json(
        include_str!("oracle/model_logits.py"),
        &serde_json::json!({"logits": out, "model": model, "image": image}),
    );
    eprintln!("transformers oracle: {r}");
    assert_eq!(r["grid"], true, "{r}");
    assert_eq!(r["positions"], true, "{r}");
    assert!(r["pixels"].as_f64().unwrap() <= 1e-6, "{r}");
    assert!(r["logits"].as_f64().unwrap() <= 1e-4, "{r}");
    assert!(r["scale"].as_f64().unwrap() > 1e-3, "the logits are not all zero: {r}");
    assert_eq!(r["shape"][1].as_u64().unwrap() as usize, prepared.vocab_size, "{r}");
    assert!(r["supervised"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn a_missing_line_is_bad_input_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let prepared = demo::prepare(&d.path().join("demo"), 2, 1, 5, &Arch::TEST).unwrap();
    let data = d.path().join("demo/data/train.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_coordexp"))
        .args(["model", "logits", "--model"])
        .arg(d.path().join("demo/model"))
        .arg("--config")
        .arg(&prepared.config)
        .arg("--data")
        .arg(&data)
        .args(["--line", "9", "--out"])
        .arg(d.path().join("x.safetensors"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("train.jsonl") && err.contains("line 9"), "{err}");
    assert!(!d.path().join("x.safetensors").exists());
}
