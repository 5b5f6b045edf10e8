//! Forward+backward throughput of our Qwen3-VL on one packed batch (see bench/model/README.md).
//!
//!   fwd_bwd --device cpu|cuda --dtype f32|bf16 --steps N --attention segments|masked
//!           --config-out FILE
//!
//! Prints one JSON line: {"impl": "coordexp", "tokens_per_s": …, …}. The architecture is written
//! to FILE so the transformers side builds exactly the same model.

use std::time::Instant;

use coordexp_model::ParamInit;
use coordexp_model::attention::AttentionLayout;
use coordexp_model::config::{ModelConfig, SpecialIds};
use coordexp_model::model::{ForwardInput, Qwen3VL};
use coordexp_model::vision::preprocess::{PixelNorm, patchify_rgb};
use tch::{Device, Kind, Tensor};

/// hidden 256, 4 layers; a 16k vocabulary so the head is real work without dominating.
fn bench_config() -> ModelConfig {
    let mut c = ModelConfig::tiny(
        16384,
        SpecialIds { image_pad: 16380, video_pad: 16381, vision_start: 16378, vision_end: 16379 },
    );
    c.text.hidden_size = 256;
    c.text.intermediate_size = 768;
    c.text.num_hidden_layers = 4;
    c.text.num_attention_heads = 4;
    c.text.num_key_value_heads = 2;
    c.text.head_dim = 64;
    c.text.mrope_section = [12, 10, 10];
    c.vision.depth = 4;
    c.vision.hidden_size = 128;
    c.vision.intermediate_size = 512;
    c.vision.num_heads = 4;
    c.vision.out_hidden_size = 256;
    c.vision.num_position_embeddings = 2304;
    c.vision.deepstack_visual_indexes = vec![1, 3];
    c
}

/// One pack of `total` tokens: segment 0 holds the 256×256 image, then text-only segments.
/// Returns ids [1, L], mRoPE positions [3, 1, L] (per-segment rule), cu_seqlens.
fn pack(c: &ModelConfig, total: i64, segments: i64) -> (Tensor, Tensor, Vec<i64>) {
    let seg_len = total / segments;
    let (gh, gw) = (256 / 32, 256 / 32); // merged grid of a 256×256 image
    let mut ids = Vec::new();
    let mut pos: [Vec<i64>; 3] = Default::default();
    let mut cu = vec![0];
    for s in 0..segments {
        let len = if s + 1 == segments { total - seg_len * (segments - 1) } else { seg_len };
        let mut next = 0;
        let mut push = |id: i64, t: i64, h: i64, w: i64, ids: &mut Vec<i64>| {
            ids.push(id);
            pos[0].push(t);
            pos[1].push(h);
            pos[2].push(w);
        };
        let mut n = 0;
        if s == 0 {
            for k in 0..4 {
                push(100 + k, next, next, next, &mut ids);
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
            n = 4 + 1 + gh * gw + 1;
        }
        for k in n..len {
            push(1000 + (k * 7919 + s * 31) % 15000, next, next, next, &mut ids);
            next += 1;
        }
        cu.push(ids.len() as i64);
    }
    let l = ids.len() as i64;
    let flat: Vec<i64> = pos.concat();
    (Tensor::from_slice(&ids).view([1, l]), Tensor::from_slice(&flat).view([3, 1, l]), cu)
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
    let device = coordexp_model::runtime::parse_device(&arg(&args, "--device", "cpu"))
        .ok_or("bad --device")?;
    let kind = match arg(&args, "--dtype", "f32").as_str() {
        "bf16" => Kind::BFloat16,
        "f32" => Kind::Float,
        other => return Err(format!("bad --dtype {other}").into()),
    };
    let steps: usize = arg(&args, "--steps", "3").parse()?;
    let total: i64 = arg(&args, "--tokens", "2048").parse()?;
    let c = bench_config();
    let config_out = arg(&args, "--config-out", "");
    if !config_out.is_empty() {
        std::fs::write(&config_out, serde_json::to_string_pretty(&c.to_json())?)?;
    }
    if steps == 0 {
        return Ok(());
    }
    tch::manual_seed(0);
    let model = Qwen3VL::new(&c, kind, device, ParamInit::Normal { std: 0.02 });
    let rgb: Vec<u8> = (0..256 * 256 * 3).map(|i| (i * 131 % 251) as u8).collect();
    let images = patchify_rgb(&rgb, 256, 256, &c.vision, &PixelNorm::QWEN3_VL)?.to_device(device);
    let (ids, pos, cu) = pack(&c, total, 4);
    let (ids, pos) = (ids.to_device(device), pos.to_device(device));
    let layout = match arg(&args, "--attention", "segments").as_str() {
        "segments" => AttentionLayout::segments(&cu, total)?,
        "masked" => AttentionLayout::packed(&cu, total, device)?,
        other => return Err(format!("bad --attention {other} (segments|masked)").into()),
    };
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let step = || -> Result<f64, Box<dyn std::error::Error>> {
        let input = ForwardInput {
            input_ids: &ids,
            position_ids: &pos,
            layout: &layout,
            images: Some(&images),
            inputs_embeds: None,
        };
        let logits = model.forward(&input)?;
        let l = logits.size()[1];
        let loss = logits
            .narrow(1, 0, l - 1)
            .reshape([l - 1, -1])
            .to_kind(Kind::Float)
            .log_softmax(-1, Kind::Float)
            .nll_loss(&ids.narrow(1, 1, l - 1).reshape([-1]));
        loss.backward();
        for (_, p, _) in model.named_parameters().unwrap() {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        Ok(loss.double_value(&[]))
    };
    step()?; // warm-up
    sync();
    let t0 = Instant::now();
    let mut loss = 0.0;
    for _ in 0..steps {
        loss = step()?;
    }
    sync();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "impl": format!("coordexp ({})", arg(&args, "--attention", "segments")), "device": format!("{device:?}"), "dtype": format!("{kind:?}"),
            "tokens": total, "steps": steps, "seconds": secs,
            "tokens_per_s": (total as f64) * steps as f64 / secs, "threads": tch::get_num_threads(),
            "loss": loss,
        })
    );
    Ok(())
}
