//! `resize_dataset` end to end on a tiny dataset written by the test.

use coordexp_core::progress::Progress;
use coordexp_core::record::{Objects, read_records};
use coordexp_data::resize::{ResizeJob, ResizePolicy, resize_dataset};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn png(path: &Path, w: u32, h: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]))
        .save(path)
        .unwrap();
}

fn dataset(dir: &Path, lines: &[&str]) -> std::path::PathBuf {
    png(&dir.join("images/a.png"), 640, 427);
    png(&dir.join("images/b.png"), 64, 64);
    let jsonl = dir.join("data.jsonl");
    fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    jsonl
}

const A: &str = r#"{"images": ["images/a.png"], "width": 640, "height": 427, "objects": [{"desc": "cat", "bbox_2d": [10.5, 20, 630, 427]}], "id": 1}"#;
const B: &str = r#"{"images": ["images/b.png"], "width": 64, "height": 64, "objects": [{"desc": "dog", "bbox_2d": [0, 0, 64, 64]}]}"#;

fn job(input: &Path, out: &Path) -> ResizeJob {
    ResizeJob {
        input: input.into(),
        out_dir: out.into(),
        policy: ResizePolicy::default(),
        progress: Progress::OFF,
    }
}

#[test]
fn off_grid_images_are_resized_and_conforming_ones_hard_linked_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let input = dataset(dir.path(), &[A, B, B]);
    let out = dir.path().join("out");
    let report = resize_dataset(&job(&input, &out)).unwrap();

    assert_eq!((report.records, report.records_resized, report.records_unchanged), (3, 1, 2));
    assert_eq!((report.images_resized, report.images_linked, report.images_copied), (1, 1, 0));
    assert_eq!(report.coords_clamped, 1); // y2 = 416 clamps to the last row, 415
    assert!(out.join("data.resize_report.json").exists());

    let records = read_records(&out.join("data.jsonl")).unwrap();
    let a = &records[0].1;
    assert_eq!((a.size().width(), a.size().height()), (640, 416));
    assert_eq!(a.images(), ["images/a.png"]);
    assert_eq!(a.extra()["id"], 1);
    let Objects::Pixels(objs) = a.objects() else { panic!() };
    // x unchanged (scale 1, 10.5 rounds half to even to 10); y scaled by 416/427.
    assert_eq!(objs[0].geometry.coords(), vec![10.0, 19.0, 630.0, 415.0]);
    let Objects::Pixels(objs) = records[1].1.objects() else { panic!() };
    assert_eq!(objs[0].geometry.coords(), vec![0.0, 0.0, 64.0, 64.0], "unchanged size: untouched");

    assert_eq!(image::image_dimensions(out.join("images/a.png")).unwrap(), (640, 416));
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&out.join("images/b.png")), ino(&dir.path().join("images/b.png")));
}

#[test]
fn a_second_split_into_the_same_directory_reuses_shared_images() {
    let dir = tempfile::tempdir().unwrap();
    let input = dataset(dir.path(), &[A]);
    let other = dir.path().join("val.jsonl");
    fs::write(&other, format!("{A}\n{B}\n")).unwrap();
    let out = dir.path().join("out");
    resize_dataset(&job(&input, &out)).unwrap();
    let report = resize_dataset(&job(&other, &out)).unwrap();
    assert_eq!((report.images_reused, report.images_linked, report.images_resized), (1, 1, 0));
    let again = resize_dataset(&job(&input, &out)).unwrap_err();
    assert!(again.what().contains("already exists"), "{again}");
}

#[test]
fn a_record_whose_size_disagrees_with_its_image_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad =
        B.replace("\"width\": 64", "\"width\": 128").replace("[0, 0, 64, 64]", "[0, 0, 128, 64]");
    let input = dataset(dir.path(), &[A, &bad]);
    let err = resize_dataset(&job(&input, &dir.path().join("out"))).unwrap_err();
    assert!(err.what().contains("64x64 on disk but the record says 128x64"), "{err}");
    assert!(err.location().unwrap().ends_with("data.jsonl:2"), "{err}");
    assert!(!dir.path().join("out/data.jsonl").exists());
}

#[test]
fn bin_coordinate_records_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bins = r#"{"images": ["images/b.png"], "width": 64, "height": 64, "objects": [{"desc": "dog", "bbox_2d": ["<|coord_0|>", "<|coord_0|>", "<|coord_9|>", "<|coord_9|>"]}]}"#;
    let input = dataset(dir.path(), &[bins]);
    let err = resize_dataset(&job(&input, &dir.path().join("out"))).unwrap_err();
    assert!(err.what().contains("bin coordinates"), "{err}");
    assert_eq!(err.exit_code(), 2);
}
