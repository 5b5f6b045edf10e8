//! `coordexp config check|show` as a user runs them: exit codes and the error layout.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn coordexp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coordexp")).args(args).output().unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_demo_config_checks_clean() {
    let cfg = repo().join("configs/demo/stage1.yaml");
    let out = coordexp(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_misspelled_nested_key_exits_2_with_path_line_and_suggestion() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("configs/demo")).unwrap();
    std::fs::copy(repo().join("configs/base.yaml"), d.path().join("configs/base.yaml")).unwrap();
    let src = std::fs::read_to_string(repo().join("configs/demo/stage1.yaml")).unwrap();
    let line = src.lines().position(|l| l.trim_start().starts_with("max_steps:")).unwrap() + 1;
    let bad = d.path().join("configs/demo/stage1.yaml");
    std::fs::write(&bad, src.replace("max_steps:", "max_stesp:")).unwrap();
    let out = coordexp(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("stage1.yaml:{line} (train.max_stesp)")), "{err}");
    assert!(err.contains("hint: did you mean `train.max_steps`?"), "{err}");
}

#[test]
fn garbage_yaml_exits_2_without_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("g.yaml");
    std::fs::write(&f, "train: [1, {\n\t: :").unwrap();
    let out = coordexp(&["config", "check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: invalid YAML"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_missing_config_file_exits_2() {
    let out = coordexp(&["config", "check", "/nonexistent/c.yaml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn show_prints_provenance() {
    let cfg = repo().join("configs/demo/stage1.yaml");
    let out = coordexp(&["config", "show", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("configs/base.yaml:"), "{text}");
    assert!(text.contains("# default"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    let out = coordexp(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
}
