//! `coordexp train` / `infer` / `eval preds` end to end on a tiny model and a few synthetic
//! images (CPU, seconds): the loss falls, every artifact exists, bad input stops the run before
//! training with the record and a remedy.

use coordexp_data::synth::SceneSpec;
use coordexp_demo::{self as demo, Arch};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[path = "../../report/tests/common/chromium.rs"]
mod chromium;
mod common;

use common::{coordexp, text};

/// A tiny demo setup in `dir/demo` and a config `dir/run.yaml` extending it with `extra`.
fn setup(dir: &Path, extra: &str) -> PathBuf {
    let prepared = demo::prepare(&dir.join("demo"), 24, 6, 11, &Arch::TEST).unwrap();
    let config = dir.join("run.yaml");
    let runs = dir.join("runs");
    std::fs::write(
        &config,
        format!(
            "extends: {}\nrun:\n  name: e2e\n  output_dir: {:?}\n\
             optim:\n  lr: {{language: 3.0e-3, vision: 1.0e-3, merger: 3.0e-3, coord_rows: 3.0e-3}}\n\
             packing:\n  max_length: 512\n\
             train:\n  max_steps: 30\n  log_every: 5\n  eval_every: 15\n  save_every: 15\n  keep_last: 2\n\
             eval:\n  max_new_tokens: 48\n{extra}",
            prepared.config.display(),
            runs.display().to_string(),
        ),
    )
    .unwrap();
    config
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn thirty_steps_lower_the_loss_and_write_every_artifact_that_infer_and_eval_read() {
    let d = tempfile::tempdir().unwrap();
    let config = setup(d.path(), "");
    let o = coordexp(&["train", config.to_str().unwrap(), "--no-progress"]);
    assert!(o.status.success(), "{}", text(&o));
    let run = d.path().join("runs/e2e");
    for f in ["config.resolved.yaml", "manifest.json", "metrics.jsonl", "eval/gt.jsonl"] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let events = std::fs::read_dir(&run)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("events.out"))
        .count();
    assert_eq!(events, 1);
    for step in ["step-0", "step-15", "final"] {
        for f in ["metrics.json", "predictions.jsonl"] {
            assert!(run.join("eval").join(step).join(f).is_file(), "missing eval/{step}/{f}");
        }
    }
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("eval/final/metrics.json")).unwrap(),
    )
    .unwrap();
    for key in ["AP50", "AP", "f1@0.5", "parse_valid_rate"] {
        assert!(m[key].is_number(), "eval/final/metrics.json lacks {key}: {m}");
    }
    let ckpt = run.join("checkpoints/step-30");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "preprocessor_config.json",
        "optimizer.safetensors",
        "optimizer.json",
        "trainer_state.json",
        "config.resolved.yaml",
    ] {
        assert!(ckpt.join(f).is_file(), "checkpoint lacks {f}");
    }
    assert!(run.join("checkpoints/step-15").is_dir());
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["datasets"].as_array().unwrap().len(), 2);
    assert_eq!(manifest["packing_plan_checksum"].as_str().unwrap().len(), 64);
    assert!(manifest["tokenizer"]["coord_last_id"].as_u64().unwrap() > 999);

    let losses: Vec<f64> = metrics(&run)
        .iter()
        .filter(|l| l["mode"] == "train")
        .map(|l| l["metrics"]["loss"].as_f64().unwrap())
        .collect();
    assert!(losses.len() >= 6, "{losses:?}");
    assert!(losses.last().unwrap() < &(0.9 * losses[0]), "the loss did not fall: {losses:?}");

    // infer with the checkpoint, then score with eval preds.
    let val = d.path().join("demo/data/val.jsonl");
    let pred = d.path().join("pred.jsonl");
    let o = coordexp(&[
        "infer",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--data",
        val.to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<Value> = std::fs::read_to_string(&pred)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    for l in &lines {
        assert!(l["text"].is_string() && l["object_scores"].is_array() && l["image"].is_string());
    }
    let o = coordexp(&[
        "eval",
        "preds",
        "--gt",
        val.to_str().unwrap(),
        "--pred",
        pred.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));

    // A second run with the same name refuses to overwrite; --resume continues (nothing to do).
    let o = coordexp(&["train", config.to_str().unwrap(), "--no-progress"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--resume"), "{}", text(&o));
}

/// The final evaluation of a run against its step-0 evaluation (the untrained model).
fn eval_of(run: &Path, name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(run.join("eval").join(name).join("metrics.json")).unwrap(),
    )
    .unwrap()
}

#[test]
fn training_beats_the_untrained_model_on_the_val_split_by_a_stated_margin() {
    // The demo's recipe on a minimal model: 1,500 steps (about a minute) on 600 synthetic images
    // of one object each, evaluated on 24 held-out images. An untrained model writes nothing
    // that parses into a box (AP50 0, F1 0); measured: AP50 0.26, F1@0.5 0.34 after training.
    let d = tempfile::tempdir().unwrap();
    let one_object = SceneSpec { sides: vec![128], min_objects: 1, max_objects: 1 };
    let prepared =
        demo::prepare_scenes(&d.path().join("demo"), 600, 24, 7, &Arch::TEST, &one_object).unwrap();
    let config = d.path().join("run.yaml");
    std::fs::write(
        &config,
        format!(
            "extends: {}\nrun:\n  name: learns\n  output_dir: {:?}\n\
             train:\n  max_steps: 1500\n  accumulation: 1\n  log_every: 100\n  eval_every: 1500\n  save_every: 0\n\
             eval:\n  max_new_tokens: 64\n",
            prepared.config.display(),
            d.path().join("runs").display().to_string(),
        ),
    )
    .unwrap();
    let o = coordexp(&["train", config.to_str().unwrap(), "--no-progress"]);
    assert!(o.status.success(), "{}", text(&o));
    let run = d.path().join("runs/learns");
    let (before, after) = (eval_of(&run, "step-0"), eval_of(&run, "final"));
    let get = |v: &Value, k: &str| v[k].as_f64().unwrap();
    for (key, margin) in [("AP50", 0.1), ("f1@0.5", 0.15)] {
        assert!(
            get(&after, key) >= get(&before, key) + margin,
            "{key}: trained {} vs untrained {} (margin {margin})",
            get(&after, key),
            get(&before, key)
        );
    }

    // The run's report in a real browser: no console message or script error, the curves,
    // both evaluations and image overlays in the DOM, a screenshot that is not blank.
    let html = d.path().join("report.html");
    let o = coordexp(&["report", run.to_str().unwrap(), "--out", html.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let url = format!("file://{}", html.display());
    let (dom, stderr) =
        chromium::run_chromium(&d.path().join("profile-dom"), &url, &["--dump-dom".into()]);
    let console = chromium::console_messages(&stderr);
    assert!(console.is_empty(), "console messages:\n{}", console.join("\n"));
    assert_eq!(chromium::recorded_script_errors(&dom), Some(""), "script errors recorded");
    let count = |needle: &str| dom.matches(needle).count();
    assert!(count(r#"<svg class="curve""#) >= 5, "loss and metric curves");
    assert_eq!(count(r#"<tr class="eval-row"#), 2, "step-0 and final");
    let overlays = count(r#"<figure class="overlay""#);
    assert!(overlays >= 4, "{overlays} overlays");
    assert_eq!(count(r#"<image href="data:image/png;base64,"#), overlays, "images embedded");
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-run-report");
    let _ = std::fs::remove_dir_all(&keep);
    std::fs::create_dir_all(&keep).unwrap();
    let shot = keep.join("screenshot.png");
    std::fs::copy(&html, keep.join("report.html")).unwrap();
    let (_, stderr) = chromium::run_chromium(
        &d.path().join("profile-shot"),
        &url,
        &[format!("--screenshot={}", shot.display()), "--window-size=1400,3000".into()],
    );
    assert!(chromium::console_messages(&stderr).is_empty(), "{stderr}");
    let (colours, non_white) = chromium::judge_screenshot(&shot);
    eprintln!(
        "demo-run report screenshot: {} ({colours} colours, {:.1}% non-white)",
        shot.display(),
        100.0 * non_white
    );
}

/// Run `train` after `edit` broke the data; it must fail with exit 2 before any step.
fn fails_before_training(edit: impl FnOnce(&Path), extra: &str, expect: &[&str]) {
    let d = tempfile::tempdir().unwrap();
    let config = setup(d.path(), extra);
    edit(&d.path().join("demo/data"));
    let o = coordexp(&["train", config.to_str().unwrap(), "--no-progress"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    for e in expect {
        assert!(out.contains(e), "expected {e:?} in:\n{out}");
    }
    assert!(out.contains("hint:"), "{out}");
    assert!(!d.path().join("runs/e2e/metrics.jsonl").exists(), "training started:\n{out}");
}

#[test]
fn a_missing_image_stops_the_run_before_training_naming_the_record() {
    fails_before_training(
        |data| std::fs::remove_file(data.join("images/train/000003.png")).unwrap(),
        "",
        &["train.jsonl:4", "does not exist"],
    );
}

#[test]
fn an_image_whose_size_differs_from_its_record_stops_the_run() {
    fails_before_training(
        |data| {
            let p = data.join("train.jsonl");
            let t = std::fs::read_to_string(&p).unwrap();
            let mut lines: Vec<String> = t.lines().map(String::from).collect();
            lines[1] = lines[1].replacen("\"width\":128", "\"width\":160", 1);
            std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        },
        "",
        &["train.jsonl:2", "128x128 on disk but the record says 160x128"],
    );
}

#[test]
fn an_image_over_the_pixel_budget_stops_the_run() {
    fails_before_training(
        |_| {},
        "template:\n  max_pixels: 9000\n",
        &["train.jsonl:1", "max_pixels"],
    );
}
