//! The audit on fixtures: a clean case passes every check; one broken input per check fails
//! exactly that check, with its evidence located.

mod common;

use common::*;
use coordexp_audit::{AuditOptions, Verdict, verify_pack};
use coordexp_core::config::schema::{FieldOrder, Prompt, Template};
use coordexp_core::prompt::Prompts;
use coordexp_core::record::read_records;
use coordexp_text::{Answer, Encoder, ModelDir, PackedBatch, Turn};
use std::net::TcpListener;
use std::path::Path;

#[test]
fn a_clean_fixture_passes_every_check() {
    let f = Fixture::new();
    let r = f.audit("");
    assert!(r.passed(), "{}", r.markdown());
    for id in ["records", "images", "template", "coord_vocab", "lengths", "packing", "eval_join"] {
        assert_eq!(verdict(&r, id), Verdict::Pass, "{id}:\n{}", r.markdown());
    }
    // A stage-1 config: the stage-2 checks say why they do not apply.
    for id in ["stage2", "server_prompt_tokens"] {
        let c = r.check(id).unwrap();
        assert_eq!(c.verdict, Verdict::Skip);
        assert!(c.summary.contains("train.stage = stage1"), "{}", c.summary);
    }
    assert!(r.failures().is_empty());
    // Evidence names numbers, files and keys with their origins.
    let lengths = r.check("lengths").unwrap();
    assert!(lengths.evidence.iter().any(|e| e.contains("longest sample:")), "{lengths:?}");
    let max_len = lengths.settings.iter().find(|s| s.key == "packing.max_length").unwrap();
    assert_eq!(max_len.value, "1024");
    assert!(max_len.origin.ends_with("base.yaml:6"), "{max_len:?}");
    let on_overflow = lengths.settings.iter().find(|s| s.key == "packing.on_overflow").unwrap();
    assert_eq!((on_overflow.value.as_str(), on_overflow.origin.as_str()), ("error", "default"));
    let images = r.check("images").unwrap();
    assert!(
        images.evidence.iter().any(|e| e.contains("10 records checked")),
        "{:?}",
        images.evidence
    );
    let packing = r.check("packing").unwrap();
    assert!(packing.evidence.iter().any(|e| e.contains("cu_seqlens")), "{packing:?}");
}

#[test]
fn an_image_of_the_wrong_size_fails_the_image_check_at_its_line() {
    let f = Fixture::new();
    let rec = f.line(&f.train, 3);
    let image = f.train.parent().unwrap().join(rec["images"][0].as_str().unwrap());
    image::RgbImage::new(128, 128).save(&image).unwrap();
    let r = f.audit("");
    fails_only(&r, "images");
    let found = findings(&r, "images");
    assert_eq!(found.len(), 1, "{found:?}");
    let at = format!("{}:3", f.train.display());
    assert!(found[0].starts_with(&at), "{found:?}");
    assert!(found[0].contains("128x128 on disk but the record says"), "{found:?}");
}

#[test]
fn a_template_that_adds_a_space_after_the_answer_fails_template_drift() {
    let f = Fixture::with_model(ModelSpec { space_after_answer: true, ..ModelSpec::default() });
    let r = f.audit("");
    fails_only(&r, "template");
    let found = findings(&r, "template");
    assert!(
        found.iter().any(|s| s.starts_with("fixed conversation")
            && s.contains("not followed directly by a special end-of-turn token")),
        "{found:?}"
    );
    // Every sampled record drifts, each located at its line.
    assert!(found.iter().any(|s| s.starts_with(&format!("{}:1:", f.train.display()))), "{found:?}");
    let c = r.check("template").unwrap();
    assert!(
        c.evidence.iter().any(|e| e.contains("after the answer the template writes \" <|im_end|>")),
        "{c:?}"
    );
    // Nothing was encoded, so the checks that need encoded samples say why they did not run.
    assert_eq!(verdict(&r, "lengths"), Verdict::Skip);
    assert_eq!(verdict(&r, "packing"), Verdict::Skip);
}

#[test]
fn a_coordinate_token_missing_from_the_tokenizer_fails_the_vocabulary_check() {
    let f = Fixture::with_model(ModelSpec { missing_coord: Some(500), ..ModelSpec::default() });
    let r = f.audit("");
    fails_only(&r, "coord_vocab");
    let found = findings(&r, "coord_vocab");
    assert!(found[0].contains("tokenizer.json") && found[0].contains("<|coord_500|>"), "{found:?}");
    // The model does not load: the checks that encode say so, and point at the vocabulary.
    for id in ["template", "lengths", "packing"] {
        let c = r.check(id).unwrap();
        assert_eq!(c.verdict, Verdict::Skip, "{id}");
        assert!(c.summary.contains("coord_vocab"), "{id}: {}", c.summary);
    }
    // The data checks still run.
    assert_eq!(verdict(&r, "images"), Verdict::Pass);
    assert_eq!(verdict(&r, "eval_join"), Verdict::Pass);
}

#[test]
fn a_normalized_coordinate_token_fails_the_vocabulary_check() {
    let f = Fixture::new();
    let path = f.model.join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for t in tok["added_tokens"].as_array_mut().unwrap() {
        if t["content"] == "<|coord_7|>" {
            t["normalized"] = serde_json::Value::Bool(true);
        }
    }
    std::fs::write(&path, tok.to_string()).unwrap();
    let r = f.audit("");
    fails_only(&r, "coord_vocab");
    let found = findings(&r, "coord_vocab");
    assert!(
        found.iter().any(|s| s.contains("normalized: true") && s.contains("<|coord_7|>")),
        "{found:?}"
    );
}

/// A record with `n` boxes on the image of line 1 of `file`.
fn crowded(f: &Fixture, file: &Path, n: usize) -> String {
    let mut rec = f.line(file, 1);
    let (w, h) = (rec["width"].as_u64().unwrap(), rec["height"].as_u64().unwrap());
    let objects: Vec<serde_json::Value> = (0..n as u64)
        .map(|i| {
            let y = (i * (h - 2)) / n as u64;
            serde_json::json!({"desc": "red circle", "bbox_2d": [1, y, w - 1, y + 1]})
        })
        .collect();
    rec["objects"] = serde_json::Value::Array(objects);
    rec.to_string()
}

#[test]
fn a_sample_longer_than_the_pack_fails_the_length_check_at_its_line() {
    let f = Fixture::new();
    let line = f.append(&f.train, &crowded(&f, &f.train, 40));
    let r = f.audit("packing: {max_length: 512}\n");
    fails_only(&r, "lengths");
    let found = findings(&r, "lengths");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with(&format!("{}:{line}:", f.train.display())), "{found:?}");
    assert!(found[0].contains("more than packing.max_length 512"), "{found:?}");
    // Packing is still verified, with the long sample as a pack of its own.
    let packing = r.check("packing").unwrap();
    assert_eq!(packing.verdict, Verdict::Pass);
    assert!(packing.evidence.iter().any(|e| e.contains("1 oversize singletons")), "{packing:?}");
}

#[test]
fn a_generation_prompt_plus_max_new_tokens_over_max_model_len_fails_the_length_check() {
    let f = Fixture::new();
    let r = f.audit(
        "rollout: {max_new_tokens: 1000, max_model_len: 1030}\npacking: {max_length: 1024}\n",
    );
    fails_only(&r, "lengths");
    let found = findings(&r, "lengths");
    assert!(found.iter().all(|s| s.contains("exceeds rollout.max_model_len 1030")), "{found:?}");
}

#[test]
fn a_tampered_pack_breaks_each_packing_invariant() {
    let f = Fixture::new();
    let model = ModelDir::load(&f.model).unwrap();
    let prompts = Prompts::resolve(&Prompt::default()).unwrap();
    let enc = Encoder::new(model, prompts, &Template::default()).unwrap();
    let records = read_records(&f.train).unwrap();
    let mut samples = Vec::new();
    let mut answers = Vec::new();
    for (_, rec) in records.iter().take(3) {
        let answer = Answer::from_record(rec, FieldOrder::DescFirst).unwrap();
        let (s, ranges) = enc.encode_with_offsets(&[rec.size()], &answer).unwrap();
        samples.push(s);
        answers.push(ranges.len());
    }
    let batch = PackedBatch::assemble(samples.iter().enumerate().map(|(i, s)| (i as u64, s)));
    let merge = enc.model().vision().merge_size;
    assert_eq!(verify_pack(&batch, &answers, merge), Vec::<String>::new());
    let second = batch.segments[1].offset;

    let broken = |edit: &dyn Fn(&mut PackedBatch), expect: &str| {
        let mut b = batch.clone();
        edit(&mut b);
        let problems = verify_pack(&b, &answers, merge);
        assert!(problems.iter().any(|p| p.contains(expect)), "{expect}: {problems:?}");
    };
    // Attention across segments: a boundary off by one.
    broken(&|b| b.cu_seqlens[1] += 1, "attention would cross segments");
    // Positions that run on instead of restarting.
    broken(
        &|b| {
            for v in &mut b.position_ids.rows[0][second..] {
                *v += second as i64;
            }
        },
        "positions must restart",
    );
    // A prompt token with a label (the first of a segment: it leaks across the boundary).
    broken(&|b| b.labels[second] = i64::from(b.input_ids[second]), "must be -100");
    broken(
        &|b| b.labels[second] = i64::from(b.input_ids[second]),
        "leaks across the segment boundary",
    );
    // A supervised token dropped from the answer.
    let first_label = batch.labels.iter().position(|l| *l != -100).unwrap();
    broken(&|b| b.labels[first_label + 1] = -100, "carries no label");
    broken(&|b| b.labels[first_label + 1] = -100, "not one contiguous answer span");
    // Answers that do not match the supervised spans.
    let wrong: Vec<usize> = answers.iter().map(|a| a + 1).collect();
    let problems = verify_pack(&batch, &wrong, merge);
    assert!(problems.iter().any(|p| p.contains("supervised tokens, expected")), "{problems:?}");
    // Image grids that are not the segments'.
    broken(&|b| b.image_grid_thw[0].h += 2, "grids");
    broken(&|b| b.segments[0].image_grid_thw[0].h += 2, "image tokens but its grids make");
    // A generation prompt in a pack: no answer, no end-of-turn.
    let prompt = enc.encode(&[records[0].1.size()], Turn::Generate).unwrap();
    let generation = PackedBatch::assemble([(0u64, &prompt)]);
    let problems = verify_pack(&generation, &[0], merge);
    assert!(problems.iter().any(|p| p.contains("0 supervised tokens")), "{problems:?}");
}

#[test]
fn two_id_less_val_records_sharing_an_image_fail_the_join_check() {
    let f = Fixture::new();
    let first = f.line(&f.val, 1);
    let line = f.append(&f.val, &first.to_string());
    let r = f.audit("");
    fails_only(&r, "eval_join");
    let found = findings(&r, "eval_join");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with(&format!("{}:1:", f.val.display())), "{found:?}");
    assert!(found[1].starts_with(&format!("{}:{line}:", f.val.display())), "{found:?}");
    assert!(found[0].contains(&format!("shared by 2 records (lines 1, {line})")), "{found:?}");
}

#[test]
fn records_sharing_an_image_with_ids_join_and_a_repeated_id_fails() {
    let f = Fixture::new();
    // Ids on every record: a shared image is fine.
    let text = std::fs::read_to_string(&f.val).unwrap();
    let mut lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut copy = lines[0].clone();
    copy["id"] = "copy".into();
    lines.push(copy);
    for (i, l) in lines.iter_mut().enumerate().take(4) {
        l["id"] = serde_json::Value::from(i as u64);
    }
    let write = |lines: &[serde_json::Value]| {
        let body: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        std::fs::write(&f.val, body.join("\n") + "\n").unwrap();
    };
    write(&lines);
    let r = f.audit("");
    assert_eq!(verdict(&r, "eval_join"), Verdict::Pass, "{}", r.markdown());
    // A repeated id is the evaluator's own error, located at the second record.
    lines[2]["id"] = serde_json::Value::from(1u64);
    write(&lines);
    let r = f.audit("");
    fails_only(&r, "eval_join");
    let found = findings(&r, "eval_join");
    assert!(found[0].starts_with(&format!("{}:3:", f.val.display())), "{found:?}");
    assert!(found[0].contains("id `1` repeats the record on line 2"), "{found:?}");
}

#[test]
fn a_malformed_line_fails_the_record_check_at_its_line() {
    let f = Fixture::new();
    let line = f.append(&f.train, r#"{"images": ["x.png"], "width": 64, "height": 64, "objects": [{"desc": "a", "bbox_2d": [1, 2, 3]}]}"#);
    let r = f.audit("");
    fails_only(&r, "records");
    let found = findings(&r, "records");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(&format!("{}:{line}: objects[0].bbox_2d", f.train.display())),
        "{found:?}"
    );
}

fn stage2(extra: &str) -> String {
    format!("train: {{stage: stage2}}\n{extra}")
}

#[test]
fn stage2_max_new_tokens_shorter_than_an_answer_fails_the_stage2_check() {
    let f = Fixture::new();
    let r = f.audit(&stage2("rollout: {max_new_tokens: 20}\n"));
    fails_only(&r, "stage2");
    let found = findings(&r, "stage2");
    assert!(!found.is_empty());
    assert!(found.iter().all(|s| s.contains("more than rollout.max_new_tokens 20")), "{found:?}");
    assert!(found[0].starts_with(&format!("{}:1:", f.train.display())), "{found:?}");
    let c = r.check("stage2").unwrap();
    assert!(c.evidence.iter().any(|e| e.contains("longest encoded answer")), "{c:?}");
}

#[test]
fn an_unreachable_server_fails_the_stage2_check() {
    let f = Fixture::new();
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r = f.audit(&stage2(&format!(
        "rollout: {{backend: openai, servers: [{{url: \"http://127.0.0.1:{port}\"}}]}}\n"
    )));
    fails_only(&r, "stage2");
    let found = findings(&r, "stage2");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(&format!("rollout.servers[0] http://127.0.0.1:{port}")),
        "{found:?}"
    );
    assert!(found[0].contains("GET /health got no answer"), "{found:?}");
    let c = r.check("server_prompt_tokens").unwrap();
    assert_eq!(c.verdict, Verdict::Skip);
    assert_eq!(c.summary, "skip: needs the rollout backend (not available in this build)");
}

#[test]
fn a_clean_stage2_config_with_a_healthy_server_passes_and_skips_prompt_token_equality() {
    let f = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        let request = String::from_utf8_lossy(&buf[..n]).to_string();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        request
    });
    let r = f.audit(&stage2(&format!(
        "rollout: {{backend: openai, servers: [{{url: \"http://127.0.0.1:{port}\"}}]}}\n"
    )));
    assert!(r.passed(), "{}", r.markdown());
    assert_eq!(verdict(&r, "stage2"), Verdict::Pass);
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request:?}");
    let c = r.check("stage2").unwrap();
    assert!(c.evidence.iter().any(|e| e.contains("200 OK")), "{c:?}");
    assert!(
        c.evidence
            .iter()
            .any(|e| e.contains("a greedy anchor and 1 explorer(s) at temperature 0.7")),
        "{c:?}"
    );
    assert_eq!(
        r.check("server_prompt_tokens").unwrap().summary,
        "skip: needs the rollout backend (not available in this build)"
    );
    // Embedded rollouts: nothing to compare.
    let r = f.audit(&stage2(""));
    assert!(r.passed(), "{}", r.markdown());
    assert!(r.check("server_prompt_tokens").unwrap().summary.contains("in-process"));
}

#[test]
fn without_model_or_data_the_checks_skip_and_say_why() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("bare.yaml");
    std::fs::write(&cfg, "run: {name: bare}\n").unwrap();
    let loaded = coordexp_core::config::load(&cfg).unwrap();
    let r = coordexp_audit::audit(&loaded, &options()).unwrap();
    assert!(r.passed(), "{}", r.markdown());
    for c in &r.checks {
        assert_eq!(c.verdict, Verdict::Skip, "{}", c.id);
        assert!(c.summary.starts_with("skip: "), "{}", c.summary);
    }
    assert!(r.check("template").unwrap().summary.contains("model.path"));
    assert!(r.check("images").unwrap().summary.contains("data.train"));
    assert!(r.check("eval_join").unwrap().summary.contains("data.val"));
    assert!(r.markdown().contains("SKIP"));
}

#[test]
fn the_data_flag_replaces_the_configs_files_and_is_treated_as_evaluation_data() {
    let f = Fixture::new();
    let opts = AuditOptions { data: Some(f.val.clone()), ..options() };
    let r = f.audit_with("", opts);
    assert!(r.passed(), "{}", r.markdown());
    assert_eq!(r.provenance.datasets.len(), 1);
    assert_eq!(r.provenance.datasets[0].role, "data");
    let join = r.check("eval_join").unwrap();
    assert!(join.evidence[0].contains("--data"), "{join:?}");
}

#[test]
fn provenance_fingerprints_the_data_and_the_tokenizer() {
    let f = Fixture::new();
    let r = f.audit("");
    let p = &r.provenance;
    assert_eq!(p.coordexp_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(p.torch_version, "2.11.0");
    let train = &p.datasets[0];
    assert_eq!((train.role.as_str(), train.records), ("train", Some(10)));
    let (sha, n) = coordexp_audit::fingerprint_jsonl(&f.train).unwrap();
    assert_eq!((train.sha256.as_deref(), n), (Some(sha.as_str()), 10));
    assert_eq!(p.datasets[1].records, Some(4));
    let tok = p.tokenizer.as_ref().unwrap();
    assert_eq!(tok.sha256.len(), 64);
    assert_eq!((tok.coord_first_id, tok.coord_last_id), (Some(283), Some(1282)));
    assert!(p.chat_template.as_ref().unwrap().path.ends_with("chat_template.jinja"));
    // This checkout has git; a plain directory does not.
    assert_eq!(p.git.commit.len(), 40, "{:?}", p.git);
    assert!(p.git.dirty.is_some());
    let opts =
        AuditOptions { repo: f.dir.path().to_path_buf(), transformers_version: None, ..options() };
    let r = f.audit_with("", opts);
    assert_eq!(r.provenance.git.commit, "unknown");
    assert_eq!(r.provenance.git.dirty, None);
    // The oracle interpreter is asked when the caller gives no version (or it is unavailable).
    let tv = &r.provenance.transformers_version;
    assert!(tv == "not available" || tv.chars().next().is_some_and(|c| c.is_ascii_digit()), "{tv}");
    assert!(r.markdown().contains("git commit unknown (unknown)"));
}

#[test]
fn failures_are_input_errors_located_at_the_record_with_the_remedy() {
    let f = Fixture::new();
    let rec = f.line(&f.val, 2);
    let image = f.val.parent().unwrap().join(rec["images"][0].as_str().unwrap());
    std::fs::remove_file(&image).unwrap();
    let r = f.audit("");
    fails_only(&r, "images");
    let errors = r.failures();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(e.exit_code(), 2);
    assert_eq!(e.location(), Some(format!("{}:2", f.val.display()).as_str()));
    assert!(e.what().starts_with("audit images: images[0]:"), "{}", e.what());
    assert!(e.what().contains("does not exist"), "{}", e.what());
    assert!(e.hint_text().unwrap().contains("coordexp data resize"), "{e:?}");
}

#[test]
fn the_report_renders_the_map_and_every_check_as_markdown_and_json() {
    let f = Fixture::new();
    let r = f.audit("");
    let md = r.markdown();
    assert!(md.contains("| boundary | modules | config keys | tests | artifacts |"), "{md}");
    for b in coordexp_audit::BOUNDARIES {
        assert!(md.contains(&format!("**{}**", b.name)), "{}", b.name);
    }
    for c in &r.checks {
        assert!(md.contains(&format!("(`{}`)", c.id)), "{}", c.id);
    }
    assert!(md.find("## Pipeline map").unwrap() < md.find("## Checks").unwrap());
    assert!(md.contains("`packing.max_length` = `1024`"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&r.json().unwrap()).unwrap();
    assert_eq!(json["checks"].as_array().unwrap().len(), r.checks.len());
    assert_eq!(json["checks"][0]["verdict"], "pass");
    assert_eq!(json["map"].as_array().unwrap().len(), coordexp_audit::BOUNDARIES.len());
    assert!(json["provenance"]["datasets"][0]["sha256"].is_string());
}

#[test]
fn the_sample_limit_bounds_record_checks_but_not_the_image_check() {
    let f = Fixture::new();
    let opts = AuditOptions { sample_limit: 2, ..options() };
    let r = f.audit_with("", opts);
    assert!(r.passed(), "{}", r.markdown());
    let lengths = r.check("lengths").unwrap();
    assert!(
        lengths.evidence.iter().any(|e| e.contains("2 of the first 2 sampled records")),
        "{lengths:?}"
    );
    let images = r.check("images").unwrap();
    assert!(images.evidence.iter().any(|e| e.contains("10 records checked")), "{images:?}");
    let zero = AuditOptions { sample_limit: 0, ..options() };
    let loaded = coordexp_core::config::load(&f.config("")).unwrap();
    assert_eq!(coordexp_audit::audit(&loaded, &zero).unwrap_err().exit_code(), 2);
}
