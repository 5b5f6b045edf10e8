//! `coordexp data synth|stats|convert|resize` and `validate --images` as a user runs them.

use serde_json::{Value, json};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn coordexp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coordexp")).args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn synth_output_validates_clean_with_images_and_has_the_asked_sizes() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("synth");
    ok(&coordexp(&[
        "data",
        "synth",
        "--out",
        s(&out),
        "--train",
        "40",
        "--val",
        "8",
        "--seed",
        "3",
    ]));
    for split in ["train", "val"] {
        let jsonl = out.join(format!("{split}.jsonl"));
        let stdout = ok(&coordexp(&["data", "validate", s(&jsonl), "--images"]));
        assert!(stdout.contains("0 issues"), "{stdout}");
    }
    let stats: Value = serde_json::from_str(&ok(&coordexp(&[
        "data",
        "stats",
        s(&out.join("train.jsonl")),
        "--json",
    ])))
    .unwrap();
    assert_eq!(stats["records"], json!(40));
    assert_eq!(stats["images_off_grid"], json!(0));
    assert!(stats["classes"].as_array().unwrap().len() > 4);
}

#[test]
fn validate_images_reports_a_meta_only_rescale_with_line_and_field() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("synth");
    ok(&coordexp(&[
        "data",
        "synth",
        "--out",
        s(&out),
        "--train",
        "3",
        "--val",
        "0",
        "--seed",
        "4",
    ]));
    let jsonl = out.join("train.jsonl");
    let text = fs::read_to_string(&jsonl).unwrap();
    let mut lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Claim a larger size for record 2 without touching its image (boxes stay in bounds).
    let w = lines[1]["width"].as_u64().unwrap();
    lines[1]["width"] = json!(w + 32);
    let edited: Vec<String> = lines.iter().map(Value::to_string).collect();
    fs::write(&jsonl, edited.join("\n") + "\n").unwrap();

    let out = coordexp(&["data", "validate", s(&jsonl), "--images"]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("train.jsonl:2: images[0]: "), "{stdout}");
    assert!(stdout.contains("image_size_mismatch: 1"), "{stdout}");
    // Without --images only the structure is checked, and it is fine.
    ok(&coordexp(&["data", "validate", s(&jsonl)]));
}

#[test]
fn convert_coco_writes_ordered_records_and_a_counter_report() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    fs::create_dir_all(root.join("val2017")).unwrap();
    fs::write(root.join("val2017/1.jpg"), b"x").unwrap();
    let instances = json!({
        "images": [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 64},
                   {"id": 2, "file_name": "2.jpg", "width": 64, "height": 64}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 20, 10, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [2, 5, 10, 10], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 64, 64], "iscrowd": 1},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 8, 8], "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    });
    fs::write(root.join("instances.json"), instances.to_string()).unwrap();
    let out = root.join("val.jsonl");
    let stdout = ok(&coordexp(&[
        "data",
        "convert",
        "coco",
        "--instances",
        s(&root.join("instances.json")),
        "--images-dir",
        s(&root.join("val2017")),
        "--out",
        s(&out),
    ]));
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["anns_crowd"], json!(1));
    assert_eq!(printed["images_missing_file"], json!(1));
    assert_eq!(printed["anns_on_dropped_images"], json!(1));
    let report: Value =
        serde_json::from_str(&fs::read_to_string(root.join("val.report.json")).unwrap()).unwrap();
    assert_eq!(report, printed);
    let record: Value = serde_json::from_str(fs::read_to_string(&out).unwrap().trim()).unwrap();
    assert_eq!(record["images"], json!(["val2017/1.jpg"]));
    let descs: Vec<_> =
        record["objects"].as_array().unwrap().iter().map(|o| o["desc"].clone()).collect();
    assert_eq!(descs, [json!("dog"), json!("cat")], "top-left first");
    assert_eq!(record["objects"][1]["bbox_2d"], json!([30, 20, 40, 30]));
    ok(&coordexp(&["data", "validate", s(&out)]));
}

#[test]
fn resize_makes_an_off_grid_dataset_validate_clean() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    fs::create_dir_all(root.join("images")).unwrap();
    image::RgbImage::from_pixel(100, 70, image::Rgb([200, 10, 10]))
        .save(root.join("images/a.png"))
        .unwrap();
    let jsonl = root.join("data.jsonl");
    fs::write(
        &jsonl,
        r#"{"images": ["images/a.png"], "width": 100, "height": 70, "objects": [{"desc": "red square", "bbox_2d": [10, 10, 100, 70]}]}"#,
    )
    .unwrap();
    let before = coordexp(&["data", "validate", s(&jsonl), "--images"]);
    assert_eq!(before.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&before.stdout).contains("not_multiple_of_32: 2"));

    let out_dir = root.join("resized");
    let printed: Value = serde_json::from_str(&ok(&coordexp(&[
        "data",
        "resize",
        "--in",
        s(&jsonl),
        "--out-dir",
        s(&out_dir),
    ])))
    .unwrap();
    assert_eq!(printed["images_resized"], json!(1));
    ok(&coordexp(&["data", "validate", s(&out_dir.join("data.jsonl")), "--images"]));
    let record: Value =
        serde_json::from_str(fs::read_to_string(out_dir.join("data.jsonl")).unwrap().trim())
            .unwrap();
    // 100x70 -> 96x64; the box scales and clamps to the last pixel.
    assert_eq!((record["width"].clone(), record["height"].clone()), (json!(96), json!(64)));
    assert_eq!(record["objects"][0]["bbox_2d"], json!([10, 9, 95, 63]));
}

#[test]
fn bad_resize_policies_and_unknown_flags_exit_2() {
    let out = coordexp(&["data", "resize", "--in", "x.jsonl", "--out-dir", "o", "--factor", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("impossible resize policy"));
    let out = coordexp(&["data", "validate", "x.jsonl", "--max-pixels", "5"]);
    assert_eq!(out.status.code(), Some(2), "--max-pixels requires --images");
}

/// `coordexp ARGS` with progress lines due at every update (stderr is a pipe here).
fn with_lines(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coordexp"))
        .args(args)
        .env("COORDEXP_PROGRESS_SECS", "0")
        .output()
        .unwrap()
}

#[test]
fn data_commands_print_progress_lines_off_terminal_and_no_progress_silences_them() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("synth");
    let synth = with_lines(&["data", "synth", "--out", s(&data), "--train", "12", "--val", "2"]);
    ok(&synth);
    let err = String::from_utf8_lossy(&synth.stderr);
    assert!(err.contains("synth train: ") && err.contains("/12 images ("), "{err}");
    let jsonl = data.join("train.jsonl");
    let resized = d.path().join("r");
    let runs: [(&[&str], &[&str]); 3] = [
        (&["data", "validate", s(&jsonl), "--images"], &["validate ", "image headers: "]),
        (&["data", "stats", s(&jsonl)], &["stats "]),
        (&["data", "resize", "--in", s(&jsonl), "--out-dir", s(&resized)], &["resize: "]),
    ];
    for (args, want) in runs {
        let o = with_lines(args);
        ok(&o);
        let err = String::from_utf8_lossy(&o.stderr);
        for w in want {
            assert!(err.contains(w), "{args:?}: no {w:?} in {err}");
        }
        assert!(err.contains("(done in "), "{args:?}: no final line in {err}");
        // The flag is global: after the subcommand or before it.
        let mut after = args.to_vec();
        after.push("--no-progress");
        let mut before = vec!["--no-progress"];
        before.extend_from_slice(args);
        for quiet in [after, before] {
            if quiet.contains(&"resize") {
                let _ = fs::remove_dir_all(&resized);
            }
            let o = with_lines(&quiet);
            ok(&o);
            let err = String::from_utf8_lossy(&o.stderr);
            for w in want {
                assert!(!err.contains(w), "{quiet:?}: {w:?} in {err}");
            }
        }
    }
}
