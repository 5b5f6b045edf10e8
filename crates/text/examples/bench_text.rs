//! Text-pipeline benchmark (driven by `bench/text/run.sh`): render + tokenize + label a JSONL
//! file of records, single-threaded and on every core, then plan the packs of 1M lengths.
//!
//! usage: bench_text MODEL_DIR RECORDS.jsonl PROMPTS_OUT.json [PLAN_SAMPLES]
//!
//! Writes the prompts it used to PROMPTS_OUT.json (the Python baseline renders the same ones) and
//! prints one JSON object: timings, tokens, and a SHA-256 over every sample's ids and labels so
//! the baseline can prove it produced the same tokens.

use coordexp_core::config::schema::{FieldOrder, Packing, Prompt, Template};
use coordexp_core::prompt::Prompts;
use coordexp_core::record::Record;
use coordexp_text::{Answer, Encoder, ModelDir, Turn, plan};
use sha2::{Digest, Sha256};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err(
            "usage: bench_text MODEL_DIR RECORDS.jsonl PROMPTS_OUT.json [PLAN_SAMPLES]".into()
        );
    }
    let plan_samples: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let model = ModelDir::load(std::path::Path::new(&args[1]))?;
    let prompts = Prompts::resolve(&Prompt::default())?;
    std::fs::write(
        &args[3],
        serde_json::json!({"system": prompts.system, "user": prompts.user}).to_string(),
    )?;
    let text = std::fs::read_to_string(&args[2])?;
    let records: Vec<Record> = text
        .lines()
        .enumerate()
        .map(|(i, l)| Record::from_json_line(l).map_err(|p| format!("line {}: {p:?}", i + 1)))
        .collect::<Result<_, _>>()?;
    let encoder = Encoder::new(model, prompts, &Template::default())?;

    // Single thread: answer text + spans, render, tokenize, labels, types, positions.
    let t0 = Instant::now();
    let mut hasher = Sha256::new();
    let mut tokens = 0usize;
    for r in &records {
        let answer = Answer::from_record(r, FieldOrder::DescFirst)?;
        let images = vec![r.size(); r.images().len()];
        let s = encoder.encode(&images, Turn::Train(&answer))?;
        tokens += s.len();
        for id in &s.input_ids {
            hasher.update(id.to_le_bytes());
        }
        for l in &s.labels {
            hasher.update(l.to_le_bytes());
        }
    }
    let single_s = t0.elapsed().as_secs_f64();
    let checksum: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();

    // Every core: one encoder clone (own memo) per thread over a contiguous chunk.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t1 = Instant::now();
    let chunk = records.len().div_ceil(threads).max(1);
    let parallel_tokens: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = records
            .chunks(chunk)
            .map(|part| {
                let enc = encoder.clone();
                scope.spawn(move || -> Result<usize, String> {
                    let mut n = 0;
                    for r in part {
                        let answer = Answer::from_record(r, FieldOrder::DescFirst)
                            .map_err(|e| e.report())?;
                        let images = vec![r.size(); r.images().len()];
                        n += enc
                            .encode(&images, Turn::Train(&answer))
                            .map_err(|e| e.report())?
                            .len();
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err("thread panicked".into())))
            .sum::<Result<usize, String>>()
    })?;
    let parallel_s = t1.elapsed().as_secs_f64();
    assert_eq!(parallel_tokens, tokens);

    // Packing plan over PLAN_SAMPLES lengths drawn like the encoded lengths above.
    let lens: Vec<u32> = {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        (0..plan_samples)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                300 + ((s >> 33) % 1500) as u32
            })
            .collect()
    };
    let cfg = Packing { max_length: 4096, ..Packing::default() };
    let t2 = Instant::now();
    let p = plan(&lens, &cfg, 17)?;
    let plan_s = t2.elapsed().as_secs_f64();

    println!(
        "{}",
        serde_json::json!({
            "records": records.len(),
            "tokens": tokens,
            "single_thread_s": single_s,
            "threads": threads,
            "parallel_s": parallel_s,
            "ids_labels_sha256": checksum,
            "plan_samples": plan_samples,
            "plan_s": plan_s,
            "plan_packs": p.len(),
            "plan_mean_fill": p.stats().mean_fill,
            "plan_checksum": p.checksum(),
        })
    );
    Ok(())
}
