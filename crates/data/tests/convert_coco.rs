//! COCO conversion on a small instances file written by the test: records, object order and
//! every skip counter.

use coordexp_core::progress::Progress;
use coordexp_data::convert::{CocoOptions, CocoReport, GeometryChoice, convert_coco};
use serde_json::{Value, json};
use std::fs;
use std::path::Path;

fn instances() -> Value {
    let img = |id: u64, name: &str, w: u64, h: u64| json!({"id": id, "file_name": name, "width": w, "height": h});
    let ann = |id: u64, image: u64, cat: u64, bbox: [f64; 4]| json!({"id": id, "image_id": image, "category_id": cat, "bbox": bbox, "iscrowd": 0});
    json!({
        "images": [
            img(2, "2.jpg", 640, 480),
            img(1, "1.jpg", 640, 480),
            img(3, "3.jpg", 640, 480),          // file missing
            img(4, "4.jpg", 640, 480),          // too many objects for --max-objects 3
            img(5, "5.jpg", 640, 480),          // only a crowd annotation: empty
            img(6, "6.jpg", 0, 480),            // invalid size
            {"id": 7, "width": 640, "height": 480},   // no file name
            {"id": 8, "coco_url": "http://images.example/val/8.jpg", "width": 320, "height": 240},
        ],
        "annotations": [
            ann(10, 1, 1, [100.0, 50.0, 20.0, 30.0]),
            ann(11, 1, 2, [10.0, 10.0, 5.0, 5.0]),
            ann(12, 1, 1, [5.0, 50.0, 10.0, 10.0]),
            {"id": 13, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 10.0, 10.0], "iscrowd": 1},
            ann(14, 1, 1, [630.0, 0.0, 20.0, 10.0]),   // outside
            ann(15, 1, 1, [1.0, 1.0, 0.0, 5.0]),       // empty
            ann(16, 1, 77, [1.0, 1.0, 5.0, 5.0]),      // unknown category
            {"id": 17, "image_id": 1, "category_id": 1},   // no bbox
            ann(22, 2, 1, [300.0, 200.0, 10.0, 10.0]),
            ann(21, 2, 2, [300.0, 200.0, 40.0, 40.0]),     // same anchor as 22, lower id
            ann(20, 2, 1, [0.0, 0.0, 640.0000001, 10.0]), // within tolerance: clamped to 640
            ann(30, 3, 1, [1.0, 1.0, 5.0, 5.0]),
            ann(40, 4, 1, [1.0, 1.0, 5.0, 5.0]),
            ann(41, 4, 1, [2.0, 1.0, 5.0, 5.0]),
            ann(42, 4, 1, [3.0, 1.0, 5.0, 5.0]),
            ann(43, 4, 1, [4.0, 1.0, 5.0, 5.0]),
            {"id": 50, "image_id": 5, "category_id": 1, "bbox": [0.0, 0.0, 10.0, 10.0], "iscrowd": 1},
            ann(60, 6, 1, [1.0, 1.0, 5.0, 5.0]),
            ann(80, 8, 2, [1.5, 2.0, 5.0, 5.0]),
            ann(99, 999, 1, [1.0, 1.0, 5.0, 5.0]),     // unknown image
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "traffic light"}],
    })
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
}

fn fixture(data: &Value) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    fs::create_dir_all(root.join("val2017")).unwrap();
    for name in ["1.jpg", "2.jpg", "4.jpg", "5.jpg", "6.jpg", "8.jpg"] {
        fs::write(root.join("val2017").join(name), b"jpeg bytes").unwrap();
    }
    fs::write(root.join("instances.json"), data.to_string()).unwrap();
    Fixture { _dir: dir, root }
}

fn options(root: &Path) -> CocoOptions {
    CocoOptions {
        instances: root.join("instances.json"),
        images_dir: root.join("val2017"),
        out: root.join("val.jsonl"),
        geometry: GeometryChoice::BBox,
        desc_map: None,
        max_objects: Some(3),
        keep_empty: false,
        progress: Progress::OFF,
    }
}

fn lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn objects(record: &Value) -> Vec<(String, Vec<f64>, u64)> {
    record["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let b = o["bbox_2d"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            (o["desc"].as_str().unwrap().to_string(), b, o["ann_id"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn records_objects_order_and_counters_match_the_policy() {
    let f = fixture(&instances());
    let report = convert_coco(&options(&f.root)).unwrap();
    let records = lines(&f.root.join("val.jsonl"));

    // Image-id order; only images 1, 2 and 8 survive.
    let ids: Vec<_> = records.iter().map(|r| r["image_id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 8]);
    assert_eq!(records[0]["images"], json!(["val2017/1.jpg"]));
    assert_eq!(
        (records[0]["width"].clone(), records[0]["height"].clone()),
        (json!(640), json!(480))
    );
    assert_eq!(records[2]["images"], json!(["val2017/8.jpg"]), "LVIS coco_url file name");

    // Canonical order by (y1, x1); ties keep annotation-id order.
    let person = |b: [f64; 4], id| ("person".to_string(), b.to_vec(), id);
    let light = |b: [f64; 4], id| ("traffic light".to_string(), b.to_vec(), id);
    assert_eq!(
        objects(&records[0]),
        [
            light([10., 10., 15., 15.], 11),
            person([5., 50., 15., 60.], 12),
            person([100., 50., 120., 80.], 10)
        ]
    );
    assert_eq!(
        objects(&records[1]),
        [
            person([0., 0., 640., 10.], 20),
            light([300., 200., 340., 240.], 21),
            person([300., 200., 310., 210.], 22)
        ]
    );
    assert_eq!(records[1]["objects"][0]["category_id"], json!(1));

    let expected = CocoReport {
        instances: f.root.join("instances.json"),
        output: f.root.join("val.jsonl"),
        images_total: 8,
        images_written: 3,
        images_no_file_name: 1,
        images_invalid_size: 1,
        images_missing_file: 1,
        images_empty: 1,
        images_over_max_objects: 1,
        anns_total: 20,
        objects_written: 7,
        anns_crowd: 2,
        anns_missing_bbox: 1,
        anns_empty_bbox: 1,
        anns_outside_image: 1,
        anns_unknown_category: 1,
        anns_unknown_image: 1,
        anns_on_dropped_images: 6, // image 3 (1) + image 4 (4) + image 6 (1)
        ..Default::default()
    };
    assert_eq!(report, expected);
    let skipped = report.anns_crowd
        + report.anns_missing_bbox
        + report.anns_empty_bbox
        + report.anns_outside_image
        + report.anns_unknown_category
        + report.anns_unknown_image
        + report.anns_on_dropped_images;
    assert_eq!(
        report.objects_written + skipped,
        report.anns_total,
        "every annotation accounted for"
    );

    let written: Value =
        serde_json::from_str(&fs::read_to_string(f.root.join("val.report.json")).unwrap()).unwrap();
    assert_eq!(written, serde_json::to_value(&report).unwrap());
}

#[test]
fn keep_empty_writes_images_without_objects() {
    let f = fixture(&instances());
    let report = convert_coco(&CocoOptions { keep_empty: true, ..options(&f.root) }).unwrap();
    assert_eq!((report.images_empty, report.images_written), (0, 4));
    let records = lines(&f.root.join("val.jsonl"));
    assert_eq!(records[2]["image_id"], json!(5));
    assert_eq!(records[2]["objects"], json!([]));
}

#[test]
fn the_desc_map_renames_categories_and_rejects_unknown_names() {
    let f = fixture(&instances());
    fs::write(f.root.join("map.json"), r#"{"traffic light": "signal"}"#).unwrap();
    let opts = CocoOptions { desc_map: Some(f.root.join("map.json")), ..options(&f.root) };
    let report = convert_coco(&opts).unwrap();
    assert_eq!(report.descs_mapped, 3);
    assert_eq!(lines(&f.root.join("val.jsonl"))[0]["objects"][0]["desc"], json!("signal"));

    fs::write(f.root.join("map.json"), r#"{"trafic light": "signal"}"#).unwrap();
    let err = convert_coco(&opts).unwrap_err();
    assert!(err.what().contains("\"trafic light\""), "{err}");
}

#[test]
fn a_category_name_that_is_not_a_valid_desc_needs_a_desc_map() {
    let mut data = instances();
    data["categories"][1]["name"] = json!("light, traffic");
    let f = fixture(&data);
    let err = convert_coco(&options(&f.root)).unwrap_err();
    assert!(err.what().contains("category 2"), "{err}");
    assert!(err.hint_text().unwrap().contains("--desc-map"), "{err:?}");
}

#[test]
fn polygons_are_kept_when_single_and_fall_back_to_boxes_with_counters() {
    let seg = |v: Value| json!({"id": 0, "image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 20.0, 20.0], "segmentation": v});
    let mut data = instances();
    let mut anns = vec![];
    for (id, s) in [
        (1, json!([[10.0, 10.0, 30.0, 10.0, 20.0, 30.0]])),
        (2, json!([[10.0, 10.0, 30.0, 10.0, 20.0, 30.0], [1.0, 1.0, 2.0, 1.0, 1.0, 2.0]])),
        (3, json!({"counts": "abc", "size": [480, 640]})),
        (4, json!([[10.0, 10.0, 30.0]])),
        (5, json!([[600.0, 400.0, 640.0, 400.0, 640.0, 480.0]])),
    ] {
        let mut a = seg(s);
        a["id"] = json!(id);
        anns.push(a);
    }
    data["annotations"] = Value::Array(anns);
    let f = fixture(&data);
    let opts =
        CocoOptions { geometry: GeometryChoice::Poly, max_objects: None, ..options(&f.root) };
    let report = convert_coco(&opts).unwrap();
    assert_eq!(report.polys_written, 2);
    assert_eq!(report.polys_multi_part_as_bbox, 1);
    assert_eq!(report.polys_rle_as_bbox, 1);
    assert_eq!(report.polys_invalid_as_bbox, 1);
    assert_eq!(report.poly_vertices_clamped, 2, "(640, 400) and (640, 480)");
    let record = &lines(&f.root.join("val.jsonl"))[0];
    let polys: Vec<_> =
        record["objects"].as_array().unwrap().iter().filter_map(|o| o.get("poly")).collect();
    assert_eq!(polys[0], &json!([10, 10, 30, 10, 20, 30]));
    assert_eq!(polys[1], &json!([600, 400, 639, 400, 639, 479]));
}

#[test]
fn images_outside_the_output_directory_are_refused() {
    let f = fixture(&instances());
    let out_dir = f.root.join("elsewhere");
    let err = convert_coco(&CocoOptions { out: out_dir.join("val.jsonl"), ..options(&f.root) })
        .unwrap_err();
    assert!(err.what().contains("not inside the output's directory"), "{err}");
}
