//! The hand-written TensorBoard event file reads back with an independent Python reader that
//! checks every record's framing and masked CRC32C and decodes the protobuf.

use coordexp_train::metrics::EventWriter;
use serde_json::json;

#[test]
fn event_files_read_back_with_valid_checksums_and_scalars() {
    let d = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(d.path()).unwrap();
    w.scalars("train", 1, &[("loss", 2.5), ("lr", 1e-4)]).unwrap();
    w.scalars("train", 2, &[("loss", 2.25)]).unwrap();
    w.scalars("eval", 300, &[("AP50", 0.375)]).unwrap();
    let name = w.path().file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    drop(w);

    let events = coordexp_testkit::run_python_json(
        include_str!("oracle/tfevents_reader.py"),
        &json!({"path": d.path().join(&name)}),
    );
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["file_version"], "brain.Event:2");
    assert!(events[0]["wall_time"].as_f64().unwrap() > 1.6e9);
    let lr = f64::from(1e-4f32);
    assert_eq!(events[1]["step"], 1);
    assert_eq!(events[1]["values"], json!([["train/loss", 2.5], ["train/lr", lr]]));
    assert_eq!(events[2]["values"], json!([["train/loss", 2.25]]));
    assert_eq!(events[3]["step"], 300);
    assert_eq!(events[3]["values"], json!([["eval/AP50", 0.375]]));
}
