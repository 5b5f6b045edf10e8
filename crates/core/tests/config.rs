//! Behaviour of the strict config across files: the shipped configs load, every misspelled key is
//! rejected with its dotted path, file:line and a suggestion, and the merge rules hold.

use coordexp_core::config::{self, yaml};
use proptest::prelude::*;
use std::fs;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn every_shipped_config_loads() {
    let mut n = 0;
    let mut stack = vec![repo_root().join("configs")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "yaml") {
                config::load(&p).unwrap_or_else(|e| panic!("{}: {}", p.display(), e.report()));
                n += 1;
            }
        }
    }
    assert!(n >= 2, "expected shipped configs, found {n}");
}

/// Collect (dotted path, line, key) for every key written in a YAML file.
fn keys(node: &yaml::Node, prefix: &str, out: &mut Vec<(String, usize, String)>) {
    if let yaml::Value::Map(entries) = &node.value {
        for e in entries {
            if e.key == "extends" {
                continue;
            }
            let path =
                if prefix.is_empty() { e.key.clone() } else { format!("{prefix}.{}", e.key) };
            out.push((path.clone(), e.key_origin.line, e.key.clone()));
            keys(&e.node, &path, out);
        }
    }
}

#[test]
fn misspelling_any_key_of_the_demo_config_is_rejected_with_path_line_and_suggestion() {
    let root = repo_root();
    for file in ["configs/demo/stage1.yaml", "configs/base.yaml"] {
        let src = fs::read_to_string(root.join(file)).unwrap();
        let tree = yaml::parse(&src, Path::new(file)).unwrap();
        let mut all = Vec::new();
        keys(&tree, "", &mut all);
        assert!(all.len() > 10, "{file}: too few keys to be a real test");
        for (path, line, key) in all {
            // A one-letter deletion keeps the key recognisably close to the original.
            let typo: String =
                key.chars().enumerate().filter(|(i, _)| *i != 1).map(|(_, c)| c).collect();
            let lines: Vec<String> = src
                .lines()
                .enumerate()
                .map(|(i, l)| {
                    if i + 1 == line {
                        l.replacen(&format!("{key}:"), &format!("{typo}:"), 1)
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            let dir = tempfile::tempdir().unwrap();
            // Keep the relative `extends:` valid by mirroring the configs tree.
            let target = dir.path().join(file);
            fs::create_dir_all(target.parent().unwrap()).unwrap();
            fs::copy(root.join("configs/base.yaml"), dir.path().join("configs/base.yaml")).unwrap();
            fs::write(&target, lines.join("\n")).unwrap();
            let err = config::load(&target).expect_err(&format!("typo in {path} accepted"));
            assert_eq!(err.exit_code(), 2);
            let bad_path = match path.rsplit_once('.') {
                Some((parent, _)) => format!("{parent}.{typo}"),
                None => typo.clone(),
            };
            let first = err.all().next().unwrap();
            let loc = first.location().unwrap_or_default();
            assert!(
                loc.ends_with(&format!("{file}:{line} ({bad_path})")),
                "{path}: {}",
                err.report()
            );
            let hint = first.hint_text().unwrap_or_default();
            assert!(
                hint.contains(&format!("`{path}`"))
                    || hint.contains("no longer")
                    || hint.contains("known keys"),
                "{path}: {}",
                err.report()
            );
        }
    }
}

#[test]
fn unknown_keys_are_rejected_at_every_depth() {
    let d = tempfile::tempdir().unwrap();
    for (yaml_text, path, line) in [
        ("bogus: 1\n", "bogus", 1),
        ("train:\n  bogus: 1\n", "train.bogus", 2),
        ("objective:\n  coord:\n    bogus: 1\n", "objective.coord.bogus", 3),
        (
            "objective:\n  coord:\n    soft_ce:\n      bogus: 1\n",
            "objective.coord.soft_ce.bogus",
            4,
        ),
        (
            "rollout:\n  backend: openai\n  servers:\n    - url: http://x\n      bogus: 1\n",
            "rollout.servers[0].bogus",
            5,
        ),
    ] {
        let f = write(d.path(), "c.yaml", yaml_text);
        let e = config::load(&f).unwrap_err();
        let loc = e.location().unwrap();
        assert!(loc.ends_with(&format!("c.yaml:{line} ({path})")), "{yaml_text}: {loc}");
        assert_eq!(e.exit_code(), 2);
    }
}

#[test]
fn wrong_type_names_the_key_and_line() {
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), "c.yaml", "train:\n  max_steps: lots\n");
    let e = config::load(&f).unwrap_err();
    assert!(e.what().contains("invalid type"), "{}", e.report());
    assert!(e.location().unwrap().ends_with("c.yaml:2 (train.max_steps)"));
    let f = write(d.path(), "c.yaml", "train: 3\n");
    let e = config::load(&f).unwrap_err();
    assert!(e.what().contains("expected a mapping for `train`"), "{}", e.report());
}

#[test]
fn renamed_key_gets_a_migration_message() {
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), "c.yaml", "train:\n  learning_rate: 0.1\n");
    let e = config::load(&f).unwrap_err();
    assert!(e.what().contains("no longer supported"), "{}", e.report());
    assert!(e.hint_text().unwrap().contains("optim.lr.language"), "{}", e.report());
    let f = write(d.path(), "c.yaml", "training: {}\n");
    let e = config::load(&f).unwrap_err();
    assert!(e.hint_text().unwrap().contains("`train`"), "{}", e.report());
}

#[test]
fn coherence_violation_is_reported_at_the_offending_key() {
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), "c.yaml", "rollout:\n  max_new_tokens: 9000\n  max_model_len: 8192\n");
    let e = config::load(&f).unwrap_err();
    assert!(e.what().contains("rollout.max_new_tokens (9000)"), "{}", e.report());
    assert!(e.location().unwrap().ends_with("c.yaml:2 (rollout.max_new_tokens)"));
    // A pack that cannot hold one max-size image.
    let f =
        write(d.path(), "c.yaml", "packing:\n  max_length: 512\nrollout: {max_model_len: 4096}\n");
    let e = config::load(&f).unwrap_err();
    assert!(e.what().contains("cannot hold one sample"), "{}", e.report());
    // Batch divisibility.
    let f = write(d.path(), "c.yaml", "train: {micro_batch: 3, effective_batch_size: 8}\n");
    let e = config::load(&f).unwrap_err();
    assert!(e.what().contains("not divisible"), "{}", e.report());
}

#[test]
fn extends_cycle_missing_file_and_relative_paths() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a.yaml", "extends: b.yaml\n");
    write(d.path(), "b.yaml", "extends: a.yaml\n");
    let e = config::load(&d.path().join("a.yaml")).unwrap_err();
    assert!(e.what().contains("cycle"));

    let f = write(d.path(), "m.yaml", "extends: missing.yaml\n");
    let e = config::load(&f).unwrap_err();
    assert!(e.what().contains("missing.yaml"));
    assert!(e.location().unwrap().ends_with("m.yaml:1"));

    // Relative to the naming file, from a different working directory: the leaf lives two
    // directories below the base, and the test's cwd is the crate directory.
    write(d.path(), "shared/base.yaml", "train: {max_steps: 11}\n");
    let leaf = write(d.path(), "exp/deep/leaf.yaml", "extends: ../../shared/base.yaml\n");
    assert_eq!(config::load(&leaf).unwrap().config.train.max_steps, 11);
}

#[test]
fn lists_and_null_replace_through_extends() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "base.yaml", "eval: {iou: [0.3, 0.5, 0.7], limit: 50}\n");
    let leaf =
        write(d.path(), "leaf.yaml", "extends: base.yaml\neval: {iou: [0.9], limit: null}\n");
    let cfg = config::load(&leaf).unwrap().config;
    assert_eq!(cfg.eval.iou, vec![0.9]);
    assert_eq!(cfg.eval.limit, None);
}

#[test]
fn show_annotates_values_with_their_source_file() {
    let loaded = config::load(&repo_root().join("configs/demo/stage1.yaml")).unwrap();
    let text = loaded.show();
    assert!(text.contains("max_steps: 600  # "), "{text}");
    assert!(text.contains("configs/demo/stage1.yaml:"), "{text}");
    assert!(text.contains("configs/base.yaml:"), "{text}");
    assert!(text.contains("# default"), "{text}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn garbage_yaml_is_an_error_never_a_panic(src in "\\PC{0,200}") {
        let _ = config::from_str(&src, "garbage.yaml");
    }

    #[test]
    fn yaml_like_garbage_is_an_error_never_a_panic(
        src in proptest::collection::vec(
            prop_oneof![
                Just("train:".to_string()), Just("\n".to_string()), Just("  ".to_string()),
                Just("- ".to_string()), Just(": ".to_string()), Just("{".to_string()), Just("}".to_string()),
                Just("[".to_string()), Just("]".to_string()), Just("&a ".to_string()), Just("*a".to_string()),
                Just("max_steps".to_string()), Just("1e-4".to_string()), Just("'x'".to_string()),
                Just("\"y".to_string()), Just("? ".to_string()), Just("!!str ".to_string()), Just("~".to_string()),
                Just("extends: x".to_string()), Just("---\n".to_string()), Just("#c".to_string()),
            ],
            0..40,
        )
    ) {
        let _ = config::from_str(&src.concat(), "garbage.yaml");
    }
}

#[test]
fn the_retired_vllm_backend_value_is_rejected_with_the_valid_ones() {
    // `rollout.backend: vllm` was renamed `openai` (a vLLM server speaks that protocol).
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), "c.yaml", "rollout:\n  backend: vllm\n");
    let e = config::load(&f).unwrap_err();
    let text = e.report();
    assert!(text.contains("vllm") && text.contains("openai"), "{text}");
    assert!(e.location().unwrap().ends_with("c.yaml:2 (rollout.backend)"), "{text}");
    let f = write(
        d.path(),
        "ok.yaml",
        "rollout:\n  backend: openai\n  servers:\n    - url: http://127.0.0.1:8000\n",
    );
    let c = config::load(&f).unwrap().config;
    assert_eq!(c.rollout.backend, coordexp_core::config::schema::RolloutBackend::Openai);
}
