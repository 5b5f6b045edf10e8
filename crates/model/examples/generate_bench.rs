//! Generation throughput of our KV-cached engine (see bench/generate/README.md).
//!
//!   generate_bench --model bench|demo --batch B --new-tokens N [--rounds R] [--config-out FILE]
//!   generate_bench --model bench|demo --batch B --new-tokens N --rollouts P [--rounds R]
//!
//! B prompts of the same shape (8 text tokens, one 128×128 image — 16 image tokens — and 40 text
//! tokens), greedy, exactly N new tokens each (no stop token). Prints one JSON line per round:
//! {"impl": "coordexp", "batch": B, "tokens_per_s": B·N / seconds, …}. The architecture is written
//! to FILE so transformers builds exactly the same model.
//!
//! `--rollouts P`: the shape of a stage-2 step instead — P prompts, each with a greedy anchor and
//! a sampled explorer (temperature 1), a stop set of 1/32 of the vocabulary so answers end at
//! different lengths (at most N tokens), B rows at a time. Two ways, one JSON line each per round:
//! "per_view" (the anchors, then the explorers, in calls of B rows: the embedded backend before
//! jobs) and "jobs" (one call: a job per prompt, its two samples sharing one prefill, rows
//! refilled as they finish).

use std::time::Instant;

use coordexp_model::ParamInit;
use coordexp_model::config::{ModelConfig, SpecialIds};
use coordexp_model::generate::{Job, Prompt, Sample, SamplingConfig, generate, generate_jobs};
use coordexp_model::model::Qwen3VL;
use coordexp_model::vision::preprocess::{ImageBatch, PixelNorm, patchify_rgb};
use tch::{Device, Kind, Tensor};

/// The 5.4M-parameter bench model (hidden 256, 4 layers, 16k vocabulary) or the demo's shape
/// (hidden 128, 4 layers, a 1.6k vocabulary).
fn config(which: &str) -> Result<ModelConfig, String> {
    let (vocab, hidden, inter, heads, kv, head_dim, mrope, vh, vi, vheads, vdepth) = match which {
        "bench" => (16384, 256, 768, 4, 2, 64, [12, 10, 10], 128, 512, 4, 4),
        "demo" => (1600, 128, 384, 4, 2, 32, [6, 5, 5], 96, 256, 3, 3),
        other => return Err(format!("unknown --model {other} (bench|demo)")),
    };
    let special = SpecialIds {
        image_pad: vocab - 4,
        video_pad: vocab - 3,
        vision_start: vocab - 6,
        vision_end: vocab - 5,
    };
    let mut c = ModelConfig::tiny(vocab, special);
    c.text.hidden_size = hidden;
    c.text.intermediate_size = inter;
    c.text.num_hidden_layers = 4;
    c.text.num_attention_heads = heads;
    c.text.num_key_value_heads = kv;
    c.text.head_dim = head_dim;
    c.text.mrope_section = mrope;
    c.vision.depth = vdepth;
    c.vision.hidden_size = vh;
    c.vision.intermediate_size = vi;
    c.vision.num_heads = vheads;
    c.vision.out_hidden_size = hidden;
    c.vision.deepstack_visual_indexes = vec![0, vdepth - 1];
    Ok(c)
}

/// One prompt: ids and its [3, L] mRoPE positions (get_rope_index's rule for one image).
fn prompt(c: &ModelConfig, row: i64) -> (Vec<i64>, Tensor) {
    let (gh, gw) = (128 / 32, 128 / 32);
    let mut ids = Vec::new();
    let mut pos: [Vec<i64>; 3] = Default::default();
    let mut next = 0;
    let mut push = |id: i64, t: i64, h: i64, w: i64, ids: &mut Vec<i64>| {
        ids.push(id);
        pos[0].push(t);
        pos[1].push(h);
        pos[2].push(w);
    };
    for k in 0..8 {
        push(10 + (k * 37 + row) % 500, next, next, next, &mut ids);
        next += 1;
    }
    push(c.vision_start_token_id, next, next, next, &mut ids);
    next += 1;
    for r in 0..gh {
        for q in 0..gw {
            push(c.image_token_id, next, next + r, next + q, &mut ids);
        }
    }
    next += gh.max(gw);
    push(c.vision_end_token_id, next, next, next, &mut ids);
    next += 1;
    for k in 0..40 {
        push(10 + (k * 7919 + row * 31) % 1000, next, next, next, &mut ids);
        next += 1;
    }
    let l = ids.len() as i64;
    (ids, Tensor::from_slice(&pos.concat()).view([3, l]))
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let which = arg(&args, "--model", "bench");
    let c = config(&which)?;
    let config_out = arg(&args, "--config-out", "");
    if !config_out.is_empty() {
        std::fs::write(&config_out, serde_json::to_string_pretty(&c.to_json())?)?;
        return Ok(());
    }
    let batch: i64 = arg(&args, "--batch", "8").parse()?;
    let new_tokens: usize = arg(&args, "--new-tokens", "64").parse()?;
    let rounds: usize = arg(&args, "--rounds", "1").parse()?;
    tch::manual_seed(0);
    let model = Qwen3VL::new(&c, Kind::Float, Device::Cpu, ParamInit::Normal { std: 0.02 });
    let rgb: Vec<u8> = (0..128 * 128 * 3).map(|i| (i * 131 % 251) as u8).collect();
    let image: ImageBatch = patchify_rgb(&rgb, 128, 128, &c.vision, &PixelNorm::QWEN3_VL)?;
    let rollouts: usize = arg(&args, "--rollouts", "0").parse()?;
    if rollouts > 0 {
        return rollout_rounds(
            &model,
            &c,
            &image,
            &which,
            batch as usize,
            new_tokens,
            rollouts,
            rounds,
        );
    }
    let prompts: Vec<(Vec<i64>, Tensor)> = (0..batch).map(|r| prompt(&c, r)).collect();
    let run = || -> Result<f64, Box<dyn std::error::Error>> {
        let ps: Vec<Prompt<'_>> = prompts
            .iter()
            .map(|(ids, pos)| Prompt { ids, position_ids: pos, images: Some(&image), seed: 0 })
            .collect();
        let t0 = Instant::now();
        let out = generate(&model, &ps, &SamplingConfig::greedy(new_tokens, vec![]))?;
        let secs = t0.elapsed().as_secs_f64();
        let made: usize = out.iter().map(|g| g.tokens.len()).sum();
        if made != batch as usize * new_tokens {
            return Err(format!(
                "generated {made} tokens, expected {}",
                batch as usize * new_tokens
            )
            .into());
        }
        Ok(secs)
    };
    run()?; // warm-up
    for _ in 0..rounds {
        let secs = run()?;
        println!(
            "{}",
            serde_json::json!({
                "impl": "coordexp", "model": which, "batch": batch, "new_tokens": new_tokens,
                "prompt_tokens": prompts[0].0.len(), "seconds": secs,
                "tokens_per_s": (batch as usize * new_tokens) as f64 / secs,
                "threads": tch::get_num_threads(),
            })
        );
    }
    Ok(())
}

/// The `--rollouts` mode (see the module docs).
#[allow(clippy::too_many_arguments)]
fn rollout_rounds(
    model: &Qwen3VL,
    c: &ModelConfig,
    image: &ImageBatch,
    which: &str,
    rows: usize,
    new_tokens: usize,
    n: usize,
    rounds: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let stops: Vec<i64> = (10..10 + c.text.vocab_size / 32).collect();
    let anchor = SamplingConfig::greedy(new_tokens, stops.clone());
    let explorer = SamplingConfig { temperature: 1.0, ..anchor.clone() };
    let prompts: Vec<(Vec<i64>, Tensor)> = (0..n as i64).map(|r| prompt(c, r)).collect();
    let at = |k: usize, seed: u64| Prompt {
        ids: &prompts[k].0,
        position_ids: &prompts[k].1,
        images: Some(image),
        seed,
    };
    for round in 0..=rounds {
        for way in ["per_view", "jobs"] {
            let t0 = Instant::now();
            let made: usize = if way == "per_view" {
                let mut made = 0;
                for (cfg, seed) in [(&anchor, 0), (&explorer, 1)] {
                    let all: Vec<Prompt<'_>> = (0..n).map(|k| at(k, seed + k as u64)).collect();
                    for chunk in all.chunks(rows) {
                        made += generate(model, chunk, cfg)?
                            .iter()
                            .map(|g| g.tokens.len())
                            .sum::<usize>();
                    }
                }
                made
            } else {
                let jobs: Vec<Job<'_>> = (0..n)
                    .map(|k| Job {
                        prompt: at(k, 0),
                        samples: vec![
                            Sample { seed: k as u64, cfg: &anchor },
                            Sample { seed: 1 + k as u64, cfg: &explorer },
                        ],
                    })
                    .collect();
                generate_jobs(model, &jobs, rows)?.iter().flatten().map(|g| g.tokens.len()).sum()
            };
            let secs = t0.elapsed().as_secs_f64();
            if round > 0 {
                println!(
                    "{}",
                    serde_json::json!({
                        "impl": way, "model": which, "rows": rows, "prompts": n,
                        "new_tokens": made, "seconds": secs, "tokens_per_s": made as f64 / secs,
                    })
                );
            }
        }
    }
    Ok(())
}
