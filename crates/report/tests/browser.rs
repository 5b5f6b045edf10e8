//! The report in a real browser: headless Chromium (`/usr/bin/chromium`, installed by
//! `scripts/setup.sh`; `COORDEXP_CHROMIUM` overrides the binary) loads the written file from
//! `file://`, and we check what it made of it:
//!
//! 1. no console message and no script error — Chromium's console log on stderr (the page logs
//!    nothing, so every message is a defect), plus the page's own recorder (`<html
//!    data-js-errors>` must stay empty in the dumped DOM); the page's Content-Security-Policy
//!    forbids any fetch, so a resource that is not embedded shows up as a console message. A
//!    negative control checks that the harness sees each kind of defect;
//! 2. the DOM after load holds every chart, overlay, embedded image and table row the summary
//!    promises;
//! 3. a screenshot is not blank (many non-white pixels, many distinct colours).
//!
//! The harness (time limit, console, screenshot judgement) is `common/chromium.rs`.

mod common;

use std::path::Path;

use common::chromium::{console_messages, judge_screenshot, recorded_script_errors, run_chromium};
use common::{Variant, build, count};
use coordexp_report::{ReportOptions, write_report};

#[test]
fn the_harness_sees_console_and_script_errors() {
    // A negative control: the checks below must fail on a page with the defects they guard
    // against, or their passing means nothing.
    let tmp = tempfile::tempdir().unwrap();
    let page = tmp.path().join("bad.html");
    std::fs::write(
        &page,
        r#"<!DOCTYPE html><html data-js-errors=""><head><meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; script-src 'unsafe-inline'"><script>window.addEventListener("error",function(e){var h=document.documentElement;h.setAttribute("data-js-errors",(h.getAttribute("data-js-errors")||"")+e.message);});</script></head><body><svg><path d="M NaN,1 L 2,3"/></svg><img src="http://example.invalid/x.png"><script>undefinedFn()</script></body></html>"#,
    )
    .unwrap();
    let url = format!("file://{}", page.display());
    let (dom, stderr) = run_chromium(&tmp.path().join("profile"), &url, &["--dump-dom".into()]);
    let console = console_messages(&stderr).join("\n");
    assert!(console.contains("attribute d"), "SVG error not seen:\n{stderr}");
    assert!(console.contains("Content Security Policy"), "blocked fetch not seen:\n{stderr}");
    assert!(console.contains("undefinedFn"), "exception not seen:\n{stderr}");
    assert!(recorded_script_errors(&dom).is_some_and(|e| e.contains("undefinedFn")), "{dom}");
}

#[test]
fn chromium_renders_the_report_without_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let f = build(tmp.path(), Variant::Stage2);
    // Keep the artifacts where a person can look at them after the run.
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-browser");
    let _ = std::fs::remove_dir_all(&keep);
    std::fs::create_dir_all(&keep).unwrap();
    let html_path = keep.join("report.html");
    let s = write_report(
        &f.run,
        &html_path,
        &ReportOptions { progress: false, images_per_group: 2, ..ReportOptions::default() },
    )
    .unwrap();
    let url = format!("file://{}", html_path.display());

    // 1 + 2: the DOM after load.
    let (dom, stderr) = run_chromium(&tmp.path().join("profile-dom"), &url, &["--dump-dom".into()]);
    std::fs::write(keep.join("dom.html"), &dom).unwrap();
    let console = console_messages(&stderr);
    assert!(console.is_empty(), "console messages:\n{}", console.join("\n"));
    assert_eq!(recorded_script_errors(&dom), Some(""), "script errors recorded");
    assert_eq!(count(&dom, r#"<svg class="curve""#), s.curves);
    assert_eq!(s.curves, 27);
    assert_eq!(count(&dom, r#"<figure class="overlay""#), s.overlays);
    assert_eq!(s.overlays, 6);
    assert_eq!(count(&dom, r#"<image href="data:image/png;base64,"#), s.images_embedded);
    assert_eq!(s.images_embedded, 6);
    assert_eq!(count(&dom, r#"<tr class="eval-row"#), 2);
    assert_eq!(count(&dom, r#"<tr class="cat-row">"#), f.categories);
    assert!(dom.contains("&lt;script&gt;alert("), "the hostile description is text");
    assert_eq!(count(&dom, "<script"), 1, "no description became a script");
    assert!(dom.contains(r#"id="stage2""#) && dom.contains("matched / FN / duplicates"));

    // 3: a screenshot that is not blank.
    let shot = keep.join("screenshot.png");
    let (_, stderr) = run_chromium(
        &tmp.path().join("profile-shot"),
        &url,
        &[format!("--screenshot={}", shot.display()), "--window-size=1400,3000".into()],
    );
    let console = console_messages(&stderr);
    assert!(console.is_empty(), "console messages:\n{}", console.join("\n"));
    let img = image::open(&shot).expect("a PNG screenshot").to_rgb8();
    assert_eq!(img.dimensions(), (1400, 3000));
    let (colours, non_white) = judge_screenshot(&shot);
    eprintln!(
        "screenshot: {} ({} colours, {:.1}% non-white)",
        shot.display(),
        colours,
        100.0 * non_white
    );
}
