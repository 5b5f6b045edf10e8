//! Throughput of the text parsers on deterministic synthetic inputs:
//!
//! * CoordJSON salvage (and strict) parsing of 1,000,000 model outputs, cycling through a pool
//!   of 10,000 distinct outputs (clean, truncated, with broken records, with trailing text);
//! * JSONL validation and reading of a 100,000-record file.
//!
//! Run in release: `cargo run --release -p coordexp-core --example bench_parse [-- N_OUTPUTS N_RECORDS]`.

use coordexp_core::coordjson::{self, FieldOrder};
use coordexp_core::norm1000::Bin;
use coordexp_core::record::{self, Desc, Geometry, Object, Polygon};
use coordexp_core::seed::SplitMix64 as Rng;
use std::io::Write;
use std::time::Instant;

const DESCS: [&str; 8] = [
    "person",
    "red circle",
    "dining table",
    "traffic light",
    "dog",
    "bow_(weapon)",
    "café chair",
    "猫",
];

fn bin(rng: &mut Rng) -> Bin {
    Bin::new(rng.below(1000) as u16).unwrap_or(Bin::MIN)
}

fn object(rng: &mut Rng) -> Object<Bin> {
    let desc = Desc::new(DESCS[rng.below(DESCS.len() as u64) as usize]).expect("valid desc");
    let geometry = if rng.below(5) == 0 {
        let n = 3 + rng.below(8) as usize;
        Geometry::Poly(Polygon::new((0..n).map(|_| [bin(rng), bin(rng)]).collect()).expect("≥3"))
    } else {
        let (a, b, c, d) = (bin(rng), bin(rng), bin(rng), bin(rng));
        Geometry::BBox([a.min(b), c.min(d), a.max(b), c.max(d)])
    };
    Object::new(desc, geometry)
}

/// One model output: mostly clean, sometimes truncated, with a broken record, or with text
/// around it.
fn model_output(rng: &mut Rng) -> String {
    let n = rng.below(16) as usize;
    let objects: Vec<_> = (0..n).map(|_| object(rng)).collect();
    let mut text = coordjson::render(&objects, FieldOrder::DescFirst);
    match rng.below(10) {
        0 => {
            let mut cut = text.len() * (1 + rng.below(9) as usize) / 10;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        1 => text = text.replacen("<|coord_", "<|coord_1", 1),
        2 => text.push_str("<|im_end|>trailing text {\"objects\": []}"),
        _ => {}
    }
    text
}

fn bench_coordjson(outputs: usize) {
    let mut rng = Rng::new(17);
    let pool: Vec<String> = (0..10_000).map(|_| model_output(&mut rng)).collect();
    let pool_bytes: usize = pool.iter().map(String::len).sum();
    let bytes = pool_bytes as f64 / pool.len() as f64 * outputs as f64;
    for (name, strict) in [("salvage", false), ("strict", true)] {
        let (mut objects, mut dropped, mut truncated, mut failed) =
            (0usize, 0usize, 0usize, 0usize);
        let t = Instant::now();
        for text in pool.iter().cycle().take(outputs) {
            if strict {
                match coordjson::parse_strict(text, Some(FieldOrder::DescFirst)) {
                    Ok(p) => objects += p.objects.len(),
                    Err(_) => failed += 1,
                }
            } else {
                let p = coordjson::parse_salvage(text, Some(FieldOrder::DescFirst));
                objects += p.objects.len();
                dropped += p.dropped.len();
                truncated += usize::from(p.truncated);
                failed += usize::from(!p.found());
            }
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "coordjson {name:7} {outputs} outputs ({:.0} MB): {s:.3} s, {:.0} outputs/s, {:.2} us/output, \
             {:.0} MB/s; objects {objects}, dropped {dropped}, truncated {truncated}, failed {failed}",
            bytes / 1e6,
            outputs as f64 / s,
            s / outputs as f64 * 1e6,
            bytes / 1e6 / s,
        );
    }
}

fn bench_records(records: usize) -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.jsonl");
    let mut rng = Rng::new(23);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for i in 0..records {
        let n = rng.below(12) as usize;
        let objs: Vec<String> = (0..n)
            .map(|_| {
                let (x, y) = (rng.below(600), rng.below(440));
                let (w, h) = (1 + rng.below(40), 1 + rng.below(40));
                format!(
                    r#"{{"desc": "{}", "bbox_2d": [{x}, {y}, {}, {}], "category_id": {}}}"#,
                    DESCS[rng.below(DESCS.len() as u64) as usize],
                    x + w,
                    y + h,
                    rng.below(80)
                )
            })
            .collect();
        writeln!(
            f,
            r#"{{"images": ["images/{i:06}.jpg"], "width": 640, "height": 480, "objects": [{}], "image_id": {i}}}"#,
            objs.join(", ")
        )?;
    }
    f.flush()?;
    drop(f);
    let mb = std::fs::metadata(&path)?.len() as f64 / 1e6;
    let t = Instant::now();
    let report = record::validate_file(&path).map_err(|e| std::io::Error::other(e.to_string()))?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "validate {records} records ({mb:.0} MB): {s:.3} s, {:.0} records/s, {:.0} MB/s, issues {}",
        records as f64 / s,
        mb / s,
        report.issues().len()
    );
    let t = Instant::now();
    let read = record::read_records(&path).map_err(|e| std::io::Error::other(e.to_string()))?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "read_records {} records: {s:.3} s, {:.0} records/s",
        read.len(),
        read.len() as f64 / s
    );
    let t = Instant::now();
    let lines: usize = read.iter().map(|(_, r)| r.to_json_line().len()).sum();
    let s = t.elapsed().as_secs_f64();
    println!("to_json_line {} records ({:.0} MB): {s:.3} s", read.len(), lines as f64 / 1e6);
    Ok(())
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let outputs = args.next().and_then(Result::ok).unwrap_or(1_000_000);
    let records = args.next().and_then(Result::ok).unwrap_or(100_000);
    bench_coordjson(outputs);
    bench_records(records)
}
