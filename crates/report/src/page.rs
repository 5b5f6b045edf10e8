//! The page: sections assembled from a [`Run`], with the stylesheet.
//!
//! Why this shape: a reader opens the report to answer "did it learn, where does it fail, can I
//! trust these numbers?" — so the page leads with provenance and the headline evaluation, then
//! the evaluation over time, per-category AP, the parse/drop counters, pictures of good and bad
//! cases, and only then the many training curves. Each section says plainly when its data is
//! absent (no validation set, a run still in progress, stage 1 without stage-2 metrics) instead
//! of disappearing, so an empty section is never mistaken for a bug.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::html::{duration, esc, fixed, num};
use crate::overlay::{self, GridInput, ImageResolver, note};
use crate::run::{EvalDir, Run};
use crate::svg::{self, Chart, Series};
use crate::{ReportOptions, ReportSummary};

/// Train metric families, in page order: (title, exact names, prefixes).
const FAMILIES: [(&str, &[&str], &[&str]); 5] = [
    ("Loss", &["loss"], &["loss/"]),
    ("Text cross-entropy", &[], &["text_ce/"]),
    ("Coordinate diagnostics", &[], &["coord_diag/"]),
    ("Optimisation", &["lr", "grad_norm", "clipped_frac"], &[]),
    ("Throughput", &["tokens_per_s", "samples_per_s", "supervised_tokens_per_step"], &[]),
];

/// Train metric prefixes of stage 2 (rollouts, matching, duplicate control, triage).
pub const STAGE2_PREFIXES: [&str; 6] =
    ["rollout/", "stage2/", "stage2_ab/", "train/triage/", "dup/", "strict_drop/"];

/// Last path segments that belong in the stage-2 overview chart.
const OVERVIEW: [&str; 8] = [
    "matched",
    "fn",
    "fp",
    "gt_objects",
    "fn_recovered",
    "n_objects_suppressed",
    "n_clusters_suppressed",
    "duplicates",
];

/// Eval metric keys that are bookkeeping, not curves.
const EVAL_NOT_CURVES: [&str; 3] = ["step", "train_seconds", "records"];

/// One evaluation point: an `eval/<name>/` directory and/or a `metrics.jsonl` eval record.
#[derive(Debug, Clone, Default)]
struct EvalRow {
    name: Option<String>,
    step: Option<u64>,
    values: BTreeMap<String, Option<f64>>,
    precision: Option<f64>,
    recall: Option<f64>,
}

impl EvalRow {
    fn get(&self, k: &str) -> Option<f64> {
        self.values.get(k).copied().flatten()
    }
}

fn eval_rows(run: &Run) -> Vec<EvalRow> {
    let mut rows: Vec<EvalRow> = run
        .evals
        .iter()
        .map(|e| {
            let mut values = BTreeMap::new();
            if let Some(Value::Object(m)) = &e.metrics {
                for (k, v) in m {
                    if let Value::Number(n) = v {
                        values.insert(k.clone(), n.as_f64());
                    }
                }
            }
            let f1 = e.report("f1").and_then(|f| f.get("0.5"));
            let pr = |k: &str| f1.and_then(|f| f.get(k)).and_then(Value::as_f64);
            EvalRow {
                name: Some(e.name.clone()),
                step: e.step,
                values,
                precision: pr("precision"),
                recall: pr("recall"),
            }
        })
        .collect();
    let mut used = vec![false; rows.len()];
    for rec in &run.metrics.eval {
        let slot = rows
            .iter()
            .enumerate()
            .position(|(i, r)| !used[i] && r.step == Some(rec.step) && r.name.is_some());
        match slot {
            Some(i) => {
                used[i] = true;
                for (k, v) in &rec.values {
                    rows[i].values.entry(k.clone()).or_insert(*v);
                }
            }
            None => rows.push(EvalRow {
                name: None,
                step: Some(rec.step),
                values: rec.values.clone(),
                ..EvalRow::default()
            }),
        }
    }
    rows.sort_by_key(|r| (r.step.unwrap_or(u64::MAX), r.name.as_deref() == Some("final")));
    rows
}

/// A series of train metric `key` over steps.
fn train_series(run: &Run, key: &str) -> Series {
    Series {
        name: key.to_owned(),
        points: run
            .metrics
            .train
            .iter()
            .filter_map(|r| r.values.get(key).map(|v| (r.step as f64, *v)))
            .collect(),
    }
}

fn chart(title: &str, series: Vec<Series>) -> Chart {
    Chart { title: title.to_owned(), series }
}

struct Builder<'a> {
    run: &'a Run,
    opts: &'a ReportOptions,
    curves: usize,
    summary: ReportSummary,
}

impl Builder<'_> {
    fn charts(&mut self, charts: &[Chart]) -> String {
        let mut s = String::from(r#"<div class="charts">"#);
        for c in charts {
            s.push_str(&svg::figure(c));
            self.curves += 1;
        }
        s.push_str("</div>");
        s
    }
}

fn section(id: &str, title: &str, body: &str) -> String {
    format!(r#"<section id="{id}"><h2>{}</h2>{body}</section>"#, esc(title))
}

/// Build the page and fill `summary` (everything but the output path and size).
pub fn build(run: &mut Run, opts: &ReportOptions) -> (String, ReportSummary) {
    let progress = |msg: &str| {
        if opts.progress {
            eprintln!("report: {msg}");
        }
    };
    let rows = eval_rows(run);
    let last = run.last_eval().cloned();

    // The image grid reads and scores files; do it first so its warnings make the page top.
    let mut warnings = std::mem::take(&mut run.warnings);
    let grid = match (&run.gt, &last) {
        (Some(gt), Some(e)) => {
            progress(&format!("drawing validation images of eval/{}", e.name));
            let resolver = resolver(run, opts);
            let g = overlay::grid(
                &GridInput {
                    gt_path: gt,
                    eval_name: &e.name,
                    predictions: e.predictions.as_deref(),
                    resolver: &resolver,
                    per_group: opts.images_per_group,
                    max_image_bytes: opts.max_image_bytes,
                },
                &mut warnings,
            );
            if e.predictions.is_none() {
                warnings.push(format!(
                    "eval/{}/predictions.jsonl is missing: ground truth only",
                    e.name
                ));
            }
            Some((e.name.clone(), g))
        }
        _ => None,
    };
    run.warnings = warnings;
    let run: &Run = run;

    let mut b = Builder { run, opts, curves: 0, summary: ReportSummary::default() };
    progress("building curves and tables");
    let eval_html = eval_section(&mut b, &rows);
    let cat_html = categories_section(&mut b, last.as_ref());
    let parse_html = parse_section(last.as_ref());
    let images_html = images_section(&mut b, grid, last.as_ref());
    let train_html = train_section(&mut b);
    let stage2_html = stage2_section(&mut b);

    let name = run
        .config_str("run.name")
        .or_else(|| run.root.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "run".into());
    let mut page = String::with_capacity(1 << 16);
    let _ = write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en" data-js-errors="">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="generator" content="coordexp-report {}">
<title>{} — coordexp report</title>
<script>window.addEventListener("error",function(e){{var h=document.documentElement;h.setAttribute("data-js-errors",(h.getAttribute("data-js-errors")||"")+(e.message||"error")+"\n");}});</script>
<style>{CSS}</style>
</head>
<body>
"#,
        env!("CARGO_PKG_VERSION"),
        esc(&name)
    );
    page.push_str(&header(run, &name, last.as_ref(), &rows));
    page.push_str(
        r##"<nav><div class="wrap"><a href="#evaluation">Evaluation</a><a href="#categories">Per-category AP</a><a href="#parsing">Parsing</a><a href="#images">Images</a><a href="#training">Training</a><a href="#stage2">Stage 2</a><a href="#config">Config</a></div></nav>"##,
    );
    page.push_str("<main>");
    if !run.warnings.0.is_empty() {
        page.push_str(r#"<div class="warnings" id="warnings"><strong>Warnings</strong><ul>"#);
        for w in &run.warnings.0 {
            let _ = write!(page, "<li>{}</li>", esc(w));
        }
        page.push_str("</ul></div>");
    }
    for s in [eval_html, cat_html, parse_html, images_html, train_html, stage2_html] {
        page.push_str(&s);
    }
    page.push_str(&config_section(run));
    page.push_str("</main>");
    let _ = write!(
        page,
        r#"<footer>Generated by <code>coordexp report</code> {} from <code>{}</code>. Static page: no network access, no script needed.</footer>
</body>
</html>
"#,
        env!("CARGO_PKG_VERSION"),
        esc(&run.root.display().to_string())
    );
    let mut summary = b.summary;
    summary.curves = b.curves;
    summary.eval_points = rows.len();
    summary.warnings = run.warnings.0.clone();
    (page, summary)
}

/// Where validation images are looked for: the explicit root, then the directory of the
/// validation file named in the manifest (as written, then against each ancestor of the run
/// directory, since training runs usually start from a directory above `runs/`), then the
/// run's `eval/` directory.
fn resolver(run: &Run, opts: &ReportOptions) -> ImageResolver {
    let mut bases: Vec<PathBuf> = Vec::new();
    if let Some(root) = &opts.images_root {
        bases.push(root.clone());
    }
    let val_dir = run
        .dataset("val")
        .and_then(|d| d.get("path"))
        .and_then(Value::as_str)
        .map(|p| PathBuf::from(p).parent().map(PathBuf::from).unwrap_or_default());
    if let Some(dir) = val_dir {
        if dir.is_absolute() {
            bases.push(dir);
        } else {
            bases.push(dir.clone());
            let root = run.root.canonicalize().unwrap_or_else(|_| run.root.clone());
            for ancestor in root.ancestors().skip(1) {
                bases.push(ancestor.join(&dir));
            }
        }
    }
    bases.push(run.root.join("eval"));
    let mut seen = HashSet::new();
    bases.retain(|b| seen.insert(b.clone()));
    ImageResolver { bases }
}

fn header(run: &Run, name: &str, last: Option<&EvalDir>, rows: &[EvalRow]) -> String {
    let stage = run.config_str("train.stage").unwrap_or_else(|| "stage1".into());
    let finished = run.evals.iter().any(EvalDir::is_final);
    let last_step = run.metrics.train.last().map(|r| r.step);
    let max_steps = run.config_str("train.max_steps");
    let status = if finished {
        r#"<span class="badge ok">finished</span>"#.to_owned()
    } else {
        r#"<span class="badge warn">in progress or interrupted (no final evaluation)</span>"#
            .to_owned()
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<header><div class="wrap"><div class="title"><h1>{}</h1><span class="badge stage">{}</span>{status}</div><div class="subtitle">coordexp run report · <code>{}</code></div>"#,
        esc(name),
        esc(&stage.replace("stage", "stage ")),
        esc(&run.root.display().to_string())
    );

    // Headline cards.
    s.push_str(r#"<div class="cards">"#);
    let card = |s: &mut String, label: &str, value: String, sub: String| {
        let _ = write!(
            s,
            r#"<div class="card"><div class="label">{}</div><div class="value">{}</div><div class="sub">{}</div></div>"#,
            esc(label),
            esc(&value),
            esc(&sub)
        );
    };
    let last_row = last.and_then(|e| rows.iter().find(|r| r.name.as_deref() == Some(&e.name)));
    let from = last.map(|e| format!("eval/{}", e.name)).unwrap_or_else(|| "no evaluation".into());
    for (label, key) in
        [("AP", "AP"), ("AP50", "AP50"), ("F1@0.5", "f1@0.5"), ("parse rate", "parse_valid_rate")]
    {
        card(&mut s, label, fixed(last_row.and_then(|r| r.get(key)), 3), from.clone());
    }
    card(
        &mut s,
        "steps",
        last_step.map_or("—".into(), |v| v.to_string()),
        max_steps.map(|m| format!("of {m} planned")).unwrap_or_default(),
    );
    let secs = run.metrics.train.last().and_then(|r| r.elapsed_s);
    card(&mut s, "training time", secs.map_or("—".into(), duration), "evaluation excluded".into());
    let loss = run.metrics.train.iter().rev().find_map(|r| r.values.get("loss").copied().flatten());
    card(&mut s, "last loss", loss.map_or("—".into(), num), "train".into());
    s.push_str("</div>");

    // Provenance.
    s.push_str(r#"<details class="prov" open><summary>Provenance</summary>"#);
    match &run.manifest {
        None => s.push_str(&note(
            "manifest.json is missing: provenance unknown (a run writes it when training starts).",
        )),
        Some(m) => {
            s.push_str("<dl>");
            let dd = |s: &mut String, k: &str, v: String| {
                let _ = write!(s, "<dt>{}</dt><dd>{v}</dd>", esc(k));
            };
            let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
            dd(&mut s, "started", esc(&text("started_at").unwrap_or_else(|| "—".into())));
            let git = match m.get("git") {
                Some(Value::Object(g)) => {
                    let sha = g.get("sha").and_then(Value::as_str).unwrap_or("?");
                    let dirty = g.get("dirty").and_then(Value::as_bool).unwrap_or(false);
                    format!(
                        "<code>{}</code>{}",
                        esc(&sha.chars().take(12).collect::<String>()),
                        if dirty { r#" <span class="badge warn">dirty</span>"# } else { "" }
                    )
                }
                _ => "not a git checkout".into(),
            };
            dd(&mut s, "git", git);
            dd(&mut s, "device", esc(&text("device").unwrap_or_else(|| "—".into())));
            let versions = [
                ("coordexp", "coordexp_version"),
                ("torch", "torch_version"),
                ("tch", "tch_version"),
            ]
            .iter()
            .filter_map(|(n, k)| text(k).map(|v| format!("{n} {v}")))
            .collect::<Vec<_>>()
            .join(" · ");
            dd(&mut s, "versions", esc(&versions));
            if let Some(seed) = m.get("seeds").and_then(|v| v.get("root")).and_then(Value::as_u64) {
                dd(&mut s, "seed", seed.to_string());
            }
            if let Some(Value::Array(ds)) = m.get("datasets") {
                let items: Vec<String> = ds
                    .iter()
                    .map(|d| {
                        let g = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("?");
                        let records = d.get("records").and_then(Value::as_u64).map_or("?".into(), |r| r.to_string());
                        format!(
                            "<b>{}</b> <code>{}</code> · {records} records · sha256 <code>{}</code>",
                            esc(g("role")),
                            esc(g("path")),
                            esc(&g("sha256").chars().take(12).collect::<String>())
                        )
                    })
                    .collect();
                dd(&mut s, "datasets", items.join("<br>"));
            }
            if let Some(Value::Array(cmd)) = m.get("command_line") {
                let words: Vec<&str> = cmd.iter().filter_map(Value::as_str).collect();
                dd(&mut s, "command", format!("<code>{}</code>", esc(&words.join(" "))));
            }
            if let Some(Value::Array(r)) = m.get("resumes")
                && !r.is_empty()
            {
                let steps: Vec<String> = r
                    .iter()
                    .filter_map(|x| x.get("from_step").and_then(Value::as_u64))
                    .map(|v| v.to_string())
                    .collect();
                dd(
                    &mut s,
                    "resumed",
                    esc(&format!("{} time(s), from step {}", r.len(), steps.join(", "))),
                );
            }
            s.push_str("</dl>");
        }
    }
    s.push_str("</details></div></header>");
    s
}

fn eval_section(b: &mut Builder<'_>, rows: &[EvalRow]) -> String {
    let mut body = String::new();
    if rows.is_empty() {
        let why = if b.run.gt.is_none() && b.run.evals.is_empty() {
            "No evaluation in this run: it has no validation set (data.val), or no evaluation has finished yet."
        } else {
            "No evaluation point could be read (see the warnings)."
        };
        body.push_str(&note(why));
        return section("evaluation", "Evaluation", &body);
    }
    // Curves: AP and AP50 together, then one chart per other metric.
    let series = |key: &str| Series {
        name: key.to_owned(),
        points: rows.iter().filter_map(|r| r.step.map(|s| (s as f64, r.get(key)))).collect(),
    };
    let has = |key: &str| rows.iter().any(|r| r.values.contains_key(key));
    let mut charts = Vec::new();
    let ap: Vec<Series> = ["AP", "AP50"].iter().filter(|k| has(k)).map(|k| series(k)).collect();
    if !ap.is_empty() {
        charts.push(chart("AP (IoU 0.50:0.95) and AP50", ap));
    }
    let mut keys: Vec<String> = Vec::new();
    for preferred in ["f1@0.5", "parse_valid_rate", "objects_per_record"] {
        if has(preferred) {
            keys.push(preferred.into());
        }
    }
    let mut rest: Vec<String> = rows
        .iter()
        .flat_map(|r| r.values.keys().cloned())
        .filter(|k| !["AP", "AP50"].contains(&k.as_str()) && !keys.contains(k))
        .filter(|k| !EVAL_NOT_CURVES.contains(&k.as_str()))
        .collect();
    rest.sort();
    rest.dedup();
    keys.extend(rest);
    for k in &keys {
        charts.push(chart(k, vec![series(k)]));
    }
    body.push_str(&b.charts(&charts));

    // Table.
    let best = rows.iter().filter_map(|r| r.get("AP50")).fold(f64::NEG_INFINITY, f64::max);
    body.push_str(r#"<table class="evals"><thead><tr><th>step</th><th>evaluation</th><th>AP</th><th>AP50</th><th>F1@0.5</th><th>precision</th><th>recall</th><th>parse rate</th><th>objects / record</th><th>train time</th></tr></thead><tbody>"#);
    for r in rows {
        let is_best = r.get("AP50").is_some_and(|v| v == best && best.is_finite());
        let _ = write!(
            body,
            r#"<tr class="eval-row{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            if is_best { " best" } else { "" },
            r.step.map_or("?".into(), |s| s.to_string()),
            r.name
                .as_deref()
                .map_or_else(|| "metrics.jsonl only".into(), |n| format!("eval/{}", esc(n))),
            fixed(r.get("AP"), 4),
            fixed(r.get("AP50"), 4),
            fixed(r.get("f1@0.5"), 4),
            fixed(r.precision, 4),
            fixed(r.recall, 4),
            fixed(r.get("parse_valid_rate"), 3),
            fixed(r.get("objects_per_record"), 2),
            r.get("train_seconds").map_or("—".into(), duration),
        );
    }
    body.push_str("</tbody></table>");
    body.push_str(r#"<p class="explain">One row per evaluation; precision and recall are the category-aware F1 counts at IoU 0.5 from each <code>metrics.json</code>. The best AP50 is highlighted.</p>"#);
    section("evaluation", "Evaluation", &body)
}

fn categories_section(b: &mut Builder<'_>, last: Option<&EvalDir>) -> String {
    let title = "Per-category AP";
    let Some(e) = last else {
        return section("categories", title, &note("No evaluation: no per-category AP."));
    };
    let Some(Value::Object(per)) = e.report("coco").and_then(|c| c.get("per_category")) else {
        return section(
            "categories",
            title,
            &note(&format!("eval/{}/metrics.json has no report.coco.per_category.", e.name)),
        );
    };
    let mut cats: Vec<(&String, Option<f64>)> =
        per.iter().map(|(k, v)| (k, v.as_f64().filter(|x| x.is_finite() && *x >= 0.0))).collect();
    cats.sort_by(|a, b| b.1.unwrap_or(-1.0).total_cmp(&a.1.unwrap_or(-1.0)).then(a.0.cmp(b.0)));
    b.summary.categories = cats.len();
    let mut body = format!(
        r#"<p class="explain">AP (IoU 0.50:0.95) of each category with ground truth in <code>eval/{}</code>, best first.</p>"#,
        esc(&e.name)
    );
    if cats.is_empty() {
        body.push_str(&note("No category has ground truth."));
        return section("categories", title, &body);
    }
    let scroll = if cats.len() > 30 { " scroll" } else { "" };
    let _ = write!(
        body,
        r#"<div class="cats{scroll}"><table class="cats"><thead><tr><th>category</th><th>AP</th><th class="barcol"></th></tr></thead><tbody>"#
    );
    for (name, ap) in cats {
        let width = ap.map_or(0.0, |v| (v * 100.0).clamp(0.0, 100.0));
        let _ = write!(
            body,
            r#"<tr class="cat-row"><td>{}</td><td class="num">{}</td><td class="barcol"><div class="bar"><span style="width:{width:.1}%"></span></div></td></tr>"#,
            esc(name),
            ap.map_or("n/a".into(), |v| format!("{v:.3}"))
        );
    }
    body.push_str("</tbody></table></div>");
    section("categories", title, &body)
}

/// One JSON value for a counter table.
fn value_html(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.as_f64().map_or_else(|| esc(&n.to_string()), num),
        Value::String(s) => esc(s),
        Value::Array(a) if a.is_empty() => r#"<span class="muted">none</span>"#.into(),
        Value::Array(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|x| match x {
                    Value::Object(o) if o.contains_key("desc") => format!(
                        "<code>{}</code> ×{}",
                        esc(o.get("desc").and_then(Value::as_str).unwrap_or("?")),
                        o.get("count").map_or("?".into(), value_html)
                    ),
                    Value::String(s) => format!("<code>{}</code>", esc(s)),
                    other => value_html(other),
                })
                .collect();
            format!(r#"<ul class="examples"><li>{}</li></ul>"#, items.join("</li><li>"))
        }
        Value::Object(o) if o.is_empty() => r#"<span class="muted">none</span>"#.into(),
        Value::Object(o) => {
            let items: Vec<String> = o
                .iter()
                .map(|(k, v)| format!("<code>{}</code> {}", esc(k), value_html(v)))
                .collect();
            items.join(", ")
        }
    }
}

fn kv_table(title: &str, obj: &Map<String, Value>) -> String {
    let mut s = format!(r#"<table class="kv"><caption>{}</caption><tbody>"#, esc(title));
    for (k, v) in obj {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), value_html(v));
    }
    s.push_str("</tbody></table>");
    s
}

fn parse_section(last: Option<&EvalDir>) -> String {
    let title = "Parsing and drops";
    let Some(e) = last else {
        return section("parsing", title, &note("No evaluation: no parse counters."));
    };
    let mut body = format!(
        r#"<p class="explain">How the raw answers of <code>eval/{}</code> were read (salvage parser) and which predicted descriptions mapped to no category.</p>"#,
        esc(&e.name)
    );
    let parse = e.report("parse").and_then(Value::as_object);
    if let Some(p) = parse {
        // Answer status as one stacked bar.
        let n = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
        let parts = [
            ("valid", n("valid"), "#16a34a"),
            ("truncated", n("truncated"), "#ca8a04"),
            ("no container", n("no_container"), "#dc2626"),
            ("objects form", n("objects_form"), "#2563eb"),
            ("invalid line", n("invalid_lines"), "#6b7280"),
        ];
        let total: u64 = parts.iter().map(|p| p.1).sum();
        if total > 0 {
            body.push_str(r#"<div class="stack" role="img" aria-label="answer status">"#);
            for (label, count, color) in parts.iter().filter(|p| p.1 > 0) {
                let _ = write!(
                    body,
                    r#"<span style="flex:{count};background:{color}" title="{label}: {count}">{label} {count}</span>"#
                );
            }
            body.push_str("</div>");
        }
    }
    body.push_str(r#"<div class="kvs">"#);
    let mut any = false;
    for (key, caption) in
        [("parse", "report.parse"), ("unmapped", "report.unmapped"), ("images", "report.images")]
    {
        if let Some(Value::Object(o)) = e.report(key) {
            body.push_str(&kv_table(caption, o));
            any = true;
        }
    }
    if let Some(Value::String(src)) = e.report("score_source") {
        let mut m = Map::new();
        m.insert("score_source".into(), Value::String(src.clone()));
        for k in ["predictions_with_score", "predictions_without_score"] {
            if let Some(v) = e.report(k) {
                m.insert(k.into(), v.clone());
            }
        }
        body.push_str(&kv_table("scores", &m));
    }
    body.push_str("</div>");
    if !any {
        body.push_str(&note(&format!(
            "eval/{}/metrics.json has no report.parse / report.unmapped.",
            e.name
        )));
    }
    section("parsing", title, &body)
}

fn images_section(
    b: &mut Builder<'_>,
    grid: Option<(String, overlay::Grid)>,
    last: Option<&EvalDir>,
) -> String {
    let title = "Validation images";
    let Some((name, g)) = grid else {
        let why = match (&b.run.gt, last) {
            (None, _) => "No eval/gt.jsonl: this run evaluated no validation records.",
            (Some(_), None) => "No evaluation directory yet: no predictions to draw.",
            _ => "No images.",
        };
        return section("images", title, &note(why));
    };
    b.summary.overlays = g.overlays;
    b.summary.images_embedded = g.images_embedded;
    b.summary.images_missing = g.images_missing;
    let per = b.opts.images_per_group;
    let mut body = format!(
        r#"<p class="explain">Predictions of <code>eval/{}</code>. Every evaluated record is ranked by its F1 at IoU 0.5 (category-aware, as in <code>metrics.json</code>; ties: more matches first, then fewer errors, then file order); shown are the {per} best, the {per} around the median and the {per} worst (all of them when there are at most {}). Boxes are drawn over the original image; hover a box for its description and score.</p>"#,
        esc(&name),
        3 * per
    );
    let _ = write!(
        body,
        r#"<div class="box-legend"><span><svg width="28" height="12"><rect x="1" y="1" width="26" height="10" fill="none" stroke="{}" stroke-width="2"/></svg>ground truth</span><span><svg width="28" height="12"><rect x="1" y="1" width="26" height="10" fill="none" stroke="{}" stroke-width="2" stroke-dasharray="5 3"/></svg>prediction, matched (IoU ≥ 0.5, same category)</span><span><svg width="28" height="12"><rect x="1" y="1" width="26" height="10" fill="none" stroke="{}" stroke-width="2" stroke-dasharray="5 3"/></svg>prediction, unmatched</span></div>"#,
        overlay::GT_COLOR,
        overlay::TP_COLOR,
        overlay::FP_COLOR
    );
    body.push_str(&g.html);
    section("images", title, &body)
}

fn train_section(b: &mut Builder<'_>) -> String {
    let title = "Training";
    if !b.run.metrics.present {
        return section(
            "training",
            title,
            &note("No metrics.jsonl: no training metrics logged yet."),
        );
    }
    let keys: Vec<String> = b
        .run
        .metrics
        .train_keys()
        .into_iter()
        .filter(|k| !STAGE2_PREFIXES.iter().any(|p| k.starts_with(p)))
        .collect();
    if keys.is_empty() {
        return section("training", title, &note("metrics.jsonl holds no training record yet."));
    }
    let mut placed: HashSet<&str> = HashSet::new();
    let mut body = String::new();
    for (family, exact, prefixes) in FAMILIES {
        let mut members: Vec<&str> =
            exact.iter().copied().filter(|e| keys.iter().any(|k| k == e)).collect();
        let mut by_prefix: Vec<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|k| prefixes.iter().any(|p| k.starts_with(p)) && !members.contains(k))
            .collect();
        by_prefix.sort_unstable();
        members.extend(by_prefix);
        if members.is_empty() {
            continue;
        }
        placed.extend(members.iter().copied());
        let charts: Vec<Chart> =
            members.iter().map(|k| chart(k, vec![train_series(b.run, k)])).collect();
        let _ = write!(body, r#"<h3>{}</h3>"#, esc(family));
        body.push_str(&b.charts(&charts));
    }
    let mut other: Vec<&str> =
        keys.iter().map(String::as_str).filter(|k| !placed.contains(k)).collect();
    other.sort_unstable();
    if !other.is_empty() {
        body.push_str("<h3>Other</h3>");
        let charts: Vec<Chart> =
            other.iter().map(|k| chart(k, vec![train_series(b.run, k)])).collect();
        body.push_str(&b.charts(&charts));
    }
    b.summary.train_metrics = keys.len();
    section("training", title, &body)
}

fn stage2_section(b: &mut Builder<'_>) -> String {
    let title = "Stage 2: rollouts, matching, duplicates";
    let keys: Vec<String> = b
        .run
        .metrics
        .train_keys()
        .into_iter()
        .filter(|k| STAGE2_PREFIXES.iter().any(|p| k.starts_with(p)))
        .collect();
    b.summary.stage2_metrics = keys.len();
    if keys.is_empty() {
        return section("stage2", title, &note("no stage-2 metrics in this run"));
    }
    let mut body = format!(
        r#"<p class="explain">Every training metric under {} — {} keys.</p>"#,
        STAGE2_PREFIXES.iter().map(|p| format!("<code>{p}</code>")).collect::<Vec<_>>().join(", "),
        keys.len()
    );
    let overview: Vec<Series> = keys
        .iter()
        .filter(|k| {
            let last = k.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
            OVERVIEW.contains(&last.as_str()) || last.contains("matched") || last.contains("dup")
        })
        .take(svg::PALETTE.len())
        .map(|k| train_series(b.run, k))
        .collect();
    if !overview.is_empty() {
        body.push_str("<h3>Matched, missed and duplicate counts</h3>");
        body.push_str(&b.charts(&[chart("matched / FN / duplicates", overview)]));
    }
    // One chart per key, grouped by prefix.
    for prefix in STAGE2_PREFIXES {
        let mut members: Vec<&String> = keys.iter().filter(|k| k.starts_with(prefix)).collect();
        // `stage2/` must not swallow `stage2_ab/` (it does not: the slash is part of the prefix).
        members.sort();
        if members.is_empty() {
            continue;
        }
        let _ = write!(body, "<h3><code>{}</code></h3>", esc(prefix));
        let charts: Vec<Chart> =
            members.iter().map(|k| chart(k, vec![train_series(b.run, k)])).collect();
        body.push_str(&b.charts(&charts));
    }
    section("stage2", title, &body)
}

fn config_section(run: &Run) -> String {
    let body = match &run.config_text {
        Some(t) => format!(
            r#"<details><summary>config.resolved.yaml ({} lines)</summary><pre>{}</pre></details>"#,
            t.lines().count(),
            esc(t)
        ),
        None => note("config.resolved.yaml is missing."),
    };
    section("config", "Config", &body)
}

const CSS: &str = r#"
:root{--fg:#1f2430;--muted:#6b7280;--line:#e3e6ec;--bg:#f6f7f9;--card:#fff;--accent:#2563eb}
*{box-sizing:border-box}
html{background:var(--bg)}
body{margin:0;color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12.5px}
.wrap{max-width:1280px;margin:0 auto;padding:0 32px}
header{background:#fff;border-bottom:1px solid var(--line);padding:22px 0 14px}
header .title{display:flex;align-items:center;gap:10px;flex-wrap:wrap}
h1{font-size:24px;margin:0;font-weight:650;letter-spacing:-.01em}
.subtitle{color:var(--muted);margin-top:2px}
.badge{display:inline-block;font-size:11.5px;font-weight:600;padding:2px 8px;border-radius:999px;background:#eef2ff;color:#3730a3}
.badge.ok{background:#dcfce7;color:#166534}.badge.warn{background:#fef3c7;color:#92400e}.badge.stage{background:#e0e7ff;color:#3730a3}
.badge.best{background:#dcfce7;color:#166534}.badge.median{background:#e0e7ff;color:#3730a3}.badge.worst{background:#fee2e2;color:#991b1b}
.cards{display:flex;gap:10px;flex-wrap:wrap;margin:16px 0 8px}
.card{background:var(--bg);border:1px solid var(--line);border-radius:10px;padding:8px 14px;min-width:118px}
.card .label{font-size:11.5px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:22px;font-weight:650;font-variant-numeric:tabular-nums}
.card .sub{font-size:11.5px;color:var(--muted)}
details.prov summary{cursor:pointer;color:var(--muted);font-weight:600;margin-top:6px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:8px 0 0}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
nav{position:sticky;top:0;z-index:2;background:rgba(255,255,255,.94);border-bottom:1px solid var(--line);padding:8px 0}
nav .wrap{display:flex;gap:18px;flex-wrap:wrap}
nav a{color:var(--accent);text-decoration:none;font-weight:550}
main{max-width:1280px;margin:0 auto;padding:8px 32px 32px}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:14px 20px 18px;margin:18px 0}
h2{font-size:18px;margin:2px 0 10px;font-weight:650}
h3{font-size:14px;margin:16px 0 8px;color:#374151;font-weight:620}
.explain{color:var(--muted);margin:0 0 10px;max-width:950px}
.note{background:#f3f4f6;border-left:3px solid #9ca3af;padding:8px 12px;color:#374151;margin:6px 0;border-radius:4px}
.warnings{background:#fffbeb;border:1px solid #fcd34d;border-radius:10px;padding:10px 16px;margin:18px 0 0;color:#78350f}
.warnings ul{margin:4px 0 0;padding-left:20px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
figure.chart{margin:0;border:1px solid var(--line);border-radius:8px;padding:6px 8px 2px;background:#fff}
figure.chart figcaption{display:flex;justify-content:space-between;align-items:baseline;gap:8px;font-size:12.5px}
.chart-title{font-weight:600;overflow-wrap:anywhere}
.last{color:var(--muted);font-variant-numeric:tabular-nums;white-space:nowrap}
.nulls{color:#b45309;font-size:11.5px;margin-right:6px}
.legend{display:flex;gap:8px;flex-wrap:wrap;color:var(--muted)}
.legend .key i{display:inline-block;width:10px;height:3px;margin:0 4px 3px 0;vertical-align:middle;border-radius:2px}
svg.curve{width:100%;height:auto;display:block}
svg.curve .tick{font-size:10.5px;fill:#6b7280;font-variant-numeric:tabular-nums}
svg.curve .axis-label{font-size:10px;fill:#9ca3af}
svg.curve .empty{font-size:12px;fill:#9ca3af}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
table.evals{width:100%;margin-top:14px}
table.evals th,table.evals td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
table.evals th:nth-child(2),table.evals td:nth-child(2){text-align:left}
table.evals thead th{font-size:12px;color:var(--muted);font-weight:600}
table.evals tr.best td{background:#f0fdf4;font-weight:600}
div.cats.scroll{max-height:560px;overflow:auto}
table.cats{min-width:480px}
table.cats td,table.cats th{padding:3px 10px;border-bottom:1px solid #f0f1f4;text-align:left}
table.cats td.num{text-align:right;width:70px}
td.barcol{width:320px}
.bar{background:#eef0f4;height:10px;border-radius:5px;overflow:hidden;width:300px}
.bar span{display:block;height:100%;background:linear-gradient(90deg,#60a5fa,#2563eb)}
.stack{display:flex;height:24px;border-radius:6px;overflow:hidden;margin:4px 0 12px;font-size:11.5px;color:#fff;font-weight:600}
.stack span{display:flex;align-items:center;padding:0 8px;white-space:nowrap;overflow:hidden;min-width:2px}
.kvs{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:14px;align-items:start}
table.kv{width:100%;font-size:13px}
table.kv caption{text-align:left;font-weight:600;padding-bottom:4px;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
table.kv th{text-align:left;font-weight:500;color:#4b5563;padding:3px 10px 3px 0;vertical-align:top;white-space:nowrap}
table.kv td{padding:3px 0;border-bottom:1px solid #f0f1f4;overflow-wrap:anywhere}
ul.examples{margin:0;padding-left:16px}
.muted{color:var(--muted)}
.box-legend{display:flex;gap:18px;flex-wrap:wrap;font-size:12.5px;color:#374151;margin:4px 0 6px}
.box-legend span{display:flex;align-items:center;gap:6px}
h3.group{margin-top:18px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:14px}
figure.overlay{margin:0;border:1px solid var(--line);border-radius:8px;overflow:hidden;background:#fff}
svg.overlay-svg{display:block;width:100%;height:auto;background:#111827}
svg.overlay-svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
figure.overlay figcaption{padding:6px 10px 8px;font-size:12px}
.cap-head{display:flex;gap:8px;align-items:center;flex-wrap:wrap}
.cap-head .f1{font-weight:650}
.cap-head .tpfpfn{color:var(--muted)}
.path{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11.5px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;margin-top:2px}
.facts{color:var(--muted);font-size:11.5px}
pre{background:#f8fafc;border:1px solid var(--line);border-radius:8px;padding:12px;overflow:auto;max-height:600px}
footer{color:var(--muted);font-size:12px;text-align:center;padding:4px 0 26px}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_values_render_escaped() {
        let v: Value = serde_json::json!({
            "top": [{"desc": "<b>cat</b>", "count": 3}],
            "invalid_examples": ["p.jsonl:2: invalid JSON"],
            "objects_dropped": {"wrong_arity": 2},
            "empty": [],
            "n": 0.5
        });
        let t = kv_table("report.unmapped", v.as_object().unwrap());
        assert!(t.contains("<code>&lt;b&gt;cat&lt;/b&gt;</code> ×3"), "{t}");
        assert!(t.contains("<code>wrong_arity</code> 2"));
        assert!(t.contains(r#"<span class="muted">none</span>"#));
        assert!(!t.contains("<b>cat"));
    }
}
