//! `coordexp model init | expand-vocab` as a user runs them: outputs, refusals and exit codes.

use std::process::{Command, Output};

fn coordexp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coordexp")).args(args).output().unwrap()
}

fn tokenizer_dir(dir: &std::path::Path) {
    let corpus: Vec<String> = (0..10)
        .map(|i| format!("<|im_start|>user\nfind shape {i}<|im_end|>\n<|im_start|>assistant\n{{\"objects\": []}}<|im_end|>\n"))
        .collect();
    let tok = coordexp_demo::tokenizer::learn(&corpus, 50).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    coordexp_demo::tokenizer::save(&tok, dir).unwrap();
}

#[test]
fn init_writes_a_loadable_model_dir_and_refuses_to_overwrite() {
    let d = tempfile::tempdir().unwrap();
    let tok = d.path().join("tok");
    tokenizer_dir(&tok);
    let out = d.path().join("model");
    let args = [
        "model",
        "init",
        "--tokenizer-from",
        tok.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let r = coordexp(&args);
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("parameters"));
    for f in ["config.json", "tokenizer.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    assert!(
        std::fs::read_dir(&out)
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().ends_with(".safetensors") })
    );
    // The destination now exists: a second init must refuse, with exit code 2.
    let again = coordexp(&args);
    assert_eq!(again.status.code(), Some(2), "{}", String::from_utf8_lossy(&again.stderr));
    // Its tokenizer already has the coordinate tokens: expand-vocab refuses too.
    let dst = d.path().join("expanded");
    let r = coordexp(&[
        "model",
        "expand-vocab",
        "--src",
        out.to_str().unwrap(),
        "--dst",
        dst.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("already"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

#[test]
fn expand_vocab_on_a_missing_source_exits_2() {
    let d = tempfile::tempdir().unwrap();
    let r = coordexp(&[
        "model",
        "expand-vocab",
        "--src",
        d.path().join("nope").to_str().unwrap(),
        "--dst",
        d.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2), "{}", String::from_utf8_lossy(&r.stderr));
}
