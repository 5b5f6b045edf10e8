//! The report of a realistic run directory (see `common`), and of damaged or partial ones:
//! every section present, counts consistent with the files, user text escaped, and no
//! absence or malformed file ever more than a note or a warning.

mod common;

use common::{HOSTILE_DESC, Variant, build, count};
use coordexp_report::{ReportOptions, render_report, write_report};

fn quiet() -> ReportOptions {
    ReportOptions { progress: false, ..ReportOptions::default() }
}

#[test]
fn a_full_stage1_run_has_every_section_with_consistent_counts() {
    let d = tempfile::tempdir().unwrap();
    let f = build(d.path(), Variant::Stage1);
    let r = render_report(&f.run, &ReportOptions { images_per_group: 2, ..quiet() }).unwrap();
    let (html, s) = (&r.html, &r.summary);

    // Curves: eval (AP+AP50, f1, parse rate, objects/record, hit rate, seconds) + 13 train.
    assert_eq!(s.curves, 6 + 13, "{s:?}");
    assert_eq!(count(html, r#"<svg class="curve""#), s.curves);
    assert_eq!(s.train_metrics, 13);
    assert_eq!(s.stage2_metrics, 0);
    assert!(html.contains("no stage-2 metrics in this run"));

    // Evaluation table: step-2 and final, with precision/recall from metrics.json.
    assert_eq!(s.eval_points, 2);
    assert_eq!(count(html, r#"<tr class="eval-row"#), 2);
    assert!(html.contains("eval/step-2") && html.contains("eval/final"));

    // Per-category AP: every ground-truth description is a category.
    assert_eq!(s.categories, f.categories);
    assert_eq!(count(html, r#"<tr class="cat-row">"#), f.categories);

    // Parse counters of the final evaluation.
    assert!(html.contains("<caption>report.parse</caption>"));
    assert!(html.contains("<caption>report.unmapped</caption>"));
    assert!(html.contains("<code>purple star</code> ×1"), "the unmapped description is listed");
    assert!(html.contains("incomplete_tail"), "the truncated answer's drop is counted");

    // Images: 8 records > 3 × 2, so 2 best, 2 median, 2 worst, all embedded.
    assert_eq!(s.overlays, 6);
    assert_eq!(s.images_embedded, 6);
    assert_eq!(s.images_missing, 0);
    for group in ["best", "median", "worst"] {
        assert_eq!(count(html, &format!(r#"data-group="{group}""#)), 2, "{group}");
    }
    assert_eq!(count(html, r#"<image href="data:image/png;base64,"#), 6);
    assert!(html.contains("ranked by its F1 at IoU 0.5"), "the page says how images were chosen");
    // The worst image is the one without a prediction line or the unmapped one: F1 0.
    assert!(html.contains("no prediction line"));

    // Provenance.
    assert!(html.contains("<code>0123456789ab</code>") && html.contains("dirty"));
    assert!(html.contains("sha256 <code>cdcdcdcdcdcd</code>"));
    assert!(html.contains("coordexp train configs/demo/stage1.yaml"));
    assert!(html.contains("2026-05-01T12:00:00Z"));
    assert!(html.contains(r#"<span class="badge ok">finished</span>"#));

    // User text is escaped everywhere: the only script element is the page's own.
    assert_eq!(count(html, "<script"), 1, "only the error recorder");
    assert!(!html.contains(HOSTILE_DESC));
    assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));

    // The malformed metrics line and the unreadable prediction line are warnings.
    assert!(
        s.warnings.iter().any(|w| w.contains("1 malformed lines in metrics.jsonl")),
        "{:?}",
        s.warnings
    );
    assert!(!html.contains("NaN"));
    // Self-contained: nothing is fetched.
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
}

#[test]
fn few_images_are_all_shown_best_first() {
    let d = tempfile::tempdir().unwrap();
    let f = build(d.path(), Variant::Stage1);
    let r = render_report(&f.run, &quiet()).unwrap();
    assert_eq!(r.summary.overlays, f.records, "4 per group ≥ 8 records / 3: all shown");
    assert_eq!(count(&r.html, r#"data-group="all""#), f.records);
    // Boxes: ground truth solid, predictions dashed.
    assert!(count(&r.html, r#"<rect class="gt""#) + count(&r.html, r#"<polygon class="gt""#) >= 13);
    assert!(
        r.html.contains(r#"<rect class="pred tp""#) && r.html.contains(r#"<rect class="pred fp""#)
    );
    assert!(
        r.html.contains(r#"<polygon class="gt""#),
        "polygon ground truth is drawn as a polygon"
    );
}

#[test]
fn stage2_metrics_are_plotted_when_present() {
    let d = tempfile::tempdir().unwrap();
    let f = build(d.path(), Variant::Stage2);
    let r = render_report(&f.run, &quiet()).unwrap();
    let s = &r.summary;
    assert_eq!(s.stage2_metrics, 7);
    assert_eq!(s.train_metrics, 13, "stage-2 keys are not counted twice");
    // 6 eval + 13 train + 1 overview (matched / fn / suppressed) + 7 per key.
    assert_eq!(s.curves, 6 + 13 + 1 + 7);
    assert!(!r.html.contains("no stage-2 metrics in this run"));
    assert!(r.html.contains("matched / FN / duplicates"));
    assert!(r.html.contains("<code>train/triage/</code>"));
    assert!(r.html.contains("stage 2"));
}

#[test]
fn a_run_in_progress_describes_its_latest_evaluation() {
    let d = tempfile::tempdir().unwrap();
    let f = build(d.path(), Variant::Stage1);
    std::fs::remove_dir_all(f.run.join("eval/final")).unwrap();
    let r = render_report(&f.run, &quiet()).unwrap();
    assert!(r.html.contains("in progress or interrupted"));
    assert!(r.html.contains("Predictions of <code>eval/step-2</code>"));
    // metrics.jsonl still has the final eval record: it becomes a row of its own.
    assert_eq!(r.summary.eval_points, 2);
    assert!(r.html.contains("metrics.jsonl only"));
}

#[test]
fn a_run_without_validation_data_says_so() {
    let d = tempfile::tempdir().unwrap();
    let f = build(d.path(), Variant::Stage1);
    std::fs::remove_dir_all(f.run.join("eval")).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(f.run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains(r#""mode":"eval""#))
        .map(str::to_owned)
        .collect();
    std::fs::write(f.run.join("metrics.jsonl"), lines.join("\n")).unwrap();
    let r = render_report(&f.run, &quiet()).unwrap();
    assert_eq!(r.summary.eval_points, 0);
    assert_eq!(r.summary.overlays, 0);
    assert_eq!(r.summary.curves, 13);
    assert!(r.html.contains("No evaluation in this run"));
    assert!(r.html.contains("No eval/gt.jsonl"));
    assert!(r.html.contains("No evaluation: no per-category AP."));
}

#[test]
fn missing_images_are_drawn_on_a_blank_canvas_with_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let f = build(d.path(), Variant::Stage1);
    std::fs::remove_dir_all(f.data.join("images")).unwrap();
    let r = render_report(&f.run, &quiet()).unwrap();
    assert_eq!(r.summary.overlays, f.records);
    assert_eq!(r.summary.images_missing, f.records);
    assert!(r.html.contains("image not available"));
    assert!(r.summary.warnings.iter().any(|w| w.contains("could not be embedded")));
}

#[test]
fn images_are_found_when_the_data_moved_given_a_root() {
    let d = tempfile::tempdir().unwrap();
    let f = build(d.path(), Variant::Stage1);
    let moved = d.path().join("elsewhere");
    std::fs::rename(&f.data, &moved).unwrap();
    let r = render_report(&f.run, &quiet()).unwrap();
    assert_eq!(r.summary.images_embedded, 0);
    let r = render_report(&f.run, &ReportOptions { images_root: Some(moved), ..quiet() }).unwrap();
    assert_eq!(r.summary.images_embedded, f.records);
}

#[test]
fn relative_dataset_paths_resolve_against_the_run_directory_ancestors() {
    let d = tempfile::tempdir().unwrap();
    let f = build(d.path(), Variant::Stage1);
    // As when `coordexp train` ran in `root` with `data.val: data/val.jsonl`.
    let manifest = std::fs::read_to_string(f.run.join("manifest.json")).unwrap();
    let relative = manifest.replace(&format!("{}/", f.root.display()), "");
    assert_ne!(manifest, relative);
    std::fs::write(f.run.join("manifest.json"), relative).unwrap();
    let r = render_report(&f.run, &quiet()).unwrap();
    assert_eq!(r.summary.images_embedded, f.records, "{:?}", r.summary.warnings);
}

#[test]
fn garbage_in_every_file_is_reported_never_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let f = build(d.path(), Variant::Stage2);
    let junk = "\u{0}\u{1}{\"mode\": 7}\n[1,2,3]\n{\"objects\": \"<b>\"}\nnull\n\u{feff}{\n";
    for p in [
        "metrics.jsonl",
        "manifest.json",
        "config.resolved.yaml",
        "eval/gt.jsonl",
        "eval/final/predictions.jsonl",
        "eval/final/metrics.json",
        "eval/step-2/metrics.json",
    ] {
        std::fs::write(f.run.join(p), junk).unwrap();
    }
    std::fs::write(f.data.join("images/val/0000.png"), b"\x89PNG not really").unwrap();
    let r = render_report(&f.run, &quiet()).unwrap();
    let w = r.summary.warnings.join("\n");
    assert!(w.contains("malformed lines in metrics.jsonl"), "{w}");
    assert!(w.contains("manifest.json is not valid JSON"), "{w}");
    assert!(w.contains("invalid records in eval/gt.jsonl"), "{w}");
    assert!(w.contains("eval/final/metrics.json is not valid JSON"), "{w}");
    assert!(r.html.contains(r#"<div class="warnings""#));
    assert!(!r.html.contains("<b>"), "junk text is escaped");
    assert_eq!(count(&r.html, "<script"), 1);
}

#[test]
fn numbers_that_are_null_or_huge_do_not_break_the_charts() {
    let d = tempfile::tempdir().unwrap();
    let f = build(d.path(), Variant::Stage1);
    let mut text = std::fs::read_to_string(f.run.join("metrics.jsonl")).unwrap();
    text.push_str(r#"{"schema_version":1,"mode":"train","step":5,"elapsed_s":50,"metrics":{"loss":null,"grad_norm":1e300,"lr":-0.0,"weird":"text"}}"#);
    text.push('\n');
    text.push_str(
        r#"{"schema_version":1,"mode":"train","step":6,"elapsed_s":60,"metrics":{"loss":null}}"#,
    );
    std::fs::write(f.run.join("metrics.jsonl"), text).unwrap();
    let r = render_report(&f.run, &quiet()).unwrap();
    assert!(!r.html.contains("NaN") && !r.html.contains("inf\""));
    assert_eq!(count(&r.html, r#"<svg class="curve""#), r.summary.curves);
}

#[test]
fn a_directory_that_is_not_a_run_is_an_input_error_naming_what_is_missing() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("report.html");
    let e = write_report(d.path(), &out, &quiet()).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let msg = e.report();
    assert!(msg.contains(&d.path().display().to_string()), "{msg}");
    assert!(msg.contains("config.resolved.yaml") && msg.contains("metrics.jsonl"), "{msg}");
    assert!(!out.exists());
    let e = write_report(&d.path().join("missing"), &out, &quiet()).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
}

#[test]
fn write_report_writes_atomically_and_summarizes() {
    let d = tempfile::tempdir().unwrap();
    let f = build(d.path(), Variant::Stage1);
    let out = f.run.join("report.html");
    let s = write_report(&f.run, &out, &quiet()).unwrap();
    assert_eq!(s.path, out);
    assert_eq!(s.bytes, std::fs::metadata(&out).unwrap().len());
    let leftovers: Vec<_> = std::fs::read_dir(&f.run)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
    // Writing again replaces the page; a missing output directory is an input error.
    write_report(&f.run, &out, &quiet()).unwrap();
    let e = write_report(&f.run, &d.path().join("no/such/dir/r.html"), &quiet()).unwrap_err();
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn the_fixture_metrics_are_real_and_the_final_model_is_better() {
    let d = tempfile::tempdir().unwrap();
    let f = build(d.path(), Variant::Stage1);
    let read = |n: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(f.run.join("eval").join(n).join("metrics.json")).unwrap(),
        )
        .unwrap()
    };
    let (early, last) = (read("step-2"), read("final"));
    assert!(last["AP50"].as_f64().unwrap() > early["AP50"].as_f64().unwrap());
    assert_eq!(early["report"]["parse"]["invalid_lines"], 1);
    assert_eq!(early["report"]["images"]["unknown"], 1);
    assert_eq!(last["report"]["images"]["without_prediction"], 1);
}
