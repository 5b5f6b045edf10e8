//! Writes the setup of the training-memory benchmark (`bench/memory/run.sh`): the demo's
//! synthetic data, a narrow Qwen3-VL (hidden 256, 8 layers) whose vocabulary is padded to
//! 152,670 ids (Qwen3-VL's with the 1,000 coordinate tokens; the demo tokenizer's ids are the
//! first ones), and one config per variant, each training on 4,096-token packs.
//!
//! `cargo run --release -p coordexp-train --example memory_setup -- OUT_DIR`

use coordexp_demo::{self as demo, Arch};
use coordexp_model::ParamInit;
use coordexp_model::config::ModelConfig;
use coordexp_model::model::Qwen3VL;
use std::path::PathBuf;
use tch::{Device, Kind};

const VOCAB: i64 = 152_670;
const ARCH: Arch = Arch {
    hidden: 256,
    layers: 8,
    heads: 4,
    kv_heads: 2,
    intermediate: 768,
    vision_hidden: 96,
    vision_depth: 3,
    vision_heads: 3,
    vision_intermediate: 256,
};

/// (name, train.logit_chunk_rows, train.gradient_checkpointing)
const VARIANTS: [(&str, u32, bool); 5] = [
    ("plain", 0, false),
    ("chunked", 256, false),
    ("recompute", 0, true),
    ("both", 256, true),
    ("both-64", 64, true),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).ok_or("usage: memory_setup OUT_DIR")?);
    let prepared = demo::prepare(&out, 300, 4, 11, &ARCH)?;
    let model_dir = out.join("model");
    let config = model_dir.join("config.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config)?)?;
    json["text_config"]["vocab_size"] = VOCAB.into();
    let padded = ModelConfig::from_json(&json, "config.json")?;
    tch::manual_seed(11);
    let model = Qwen3VL::new(&padded, Kind::Float, Device::Cpu, ParamInit::Normal { std: 0.02 });
    model.save(&model_dir, u64::MAX)?;
    for (name, chunk, recompute) in VARIANTS {
        let text = format!(
            "extends: {}\nrun: {{name: {name}, output_dir: {:?}}}\n\
             data: {{val: null}}\n\
             model: {{tuning: {{freeze: []}}}}\n\
             packing: {{max_length: 4096}}\n\
             rollout: {{max_model_len: 8192}}\n\
             optim: {{warmup: 0.0}}\n\
             train: {{max_steps: 4, micro_batch: 1, accumulation: 1, log_every: 1, eval_every: 0, \
             save_every: 0, logit_chunk_rows: {chunk}, gradient_checkpointing: {recompute}}}\n",
            prepared.config.display(),
            out.join("runs").display().to_string(),
        );
        std::fs::write(out.join(format!("{name}.yaml")), text)?;
    }
    println!("{}", out.display());
    Ok(())
}
