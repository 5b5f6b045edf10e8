//! AdamW with parameter groups, warmup + cosine and global-norm clipping against a live
//! `torch.optim.AdamW` + `LambdaLR` + `clip_grad_norm_` (the venv's torch), step by step.

use coordexp_core::config::schema::{GroupLr, Module, Optim, Schedule};
use coordexp_core::seed::mix;
use coordexp_train::optim::{AdamW, groups};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

const SCRIPT: &str = include_str!("oracle/adamw.py");
const STEPS: u64 = 6;

/// Deterministic values in [-1, 1) scaled by `scale`.
fn values(seed: u64, n: usize, scale: f64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let u =
                (mix(seed.wrapping_mul(1_000_003) + i as u64) >> 11) as f64 / (1u64 << 53) as f64;
            ((u * 2.0 - 1.0) * scale) as f32
        })
        .collect()
}

fn key_name(name: &str) -> String {
    let k = groups::group_of(name).unwrap();
    format!("{:?}/{}", k.module, if k.decay { "decay" } else { "no_decay" })
}

#[test]
fn adamw_groups_schedule_and_clipping_match_torch_step_by_step() {
    let shapes: Vec<(&str, Vec<i64>)> = vec![
        ("model.visual.blocks.0.attn.qkv.weight", vec![3, 4]),
        ("model.visual.blocks.0.attn.qkv.bias", vec![4]),
        ("model.visual.merger.linear_fc1.weight", vec![4, 2]),
        ("model.language_model.layers.0.mlp.up_proj.weight", vec![2, 5]),
        ("model.language_model.norm.weight", vec![5]),
        ("model.language_model.coord_offset.embed", vec![3, 2]),
        // Never reached by a gradient: skipped by both (torch: grad None).
        ("lm_head.weight", vec![2, 2]),
    ];
    let cfg = Optim {
        weight_decay: 0.1,
        warmup: 0.34,
        schedule: Schedule::Cosine,
        grad_clip: 0.5,
        lr: GroupLr { vision: 1e-2, merger: 3e-2, language: 2e-2, coord_rows: 5e-2 },
        ..Optim::default()
    };

    let init: Vec<(String, Vec<f32>)> = shapes
        .iter()
        .enumerate()
        .map(|(i, (n, s))| {
            (n.to_string(), values(i as u64, s.iter().product::<i64>() as usize, 1.0))
        })
        .collect();
    let params: Vec<(String, Tensor)> = init
        .iter()
        .zip(&shapes)
        .map(|((n, v), (_, s))| {
            (n.clone(), Tensor::from_slice(v).reshape(s).set_requires_grad(true))
        })
        .collect();
    // Gradient scales: some steps exceed the clip norm (0.5), some do not.
    let scales = [0.05, 2.0, 0.1, 1.0, 0.02, 3.0];
    let grads: Vec<BTreeMap<String, Vec<f32>>> = (0..STEPS as usize)
        .map(|k| {
            shapes[..shapes.len() - 1]
                .iter()
                .enumerate()
                .map(|(i, (n, s))| {
                    let numel = s.iter().product::<i64>() as usize;
                    (n.to_string(), values(100 + (k * 10 + i) as u64, numel, scales[k] / 3.0))
                })
                .collect()
        })
        .collect();

    let mut opt =
        AdamW::new(params.iter().map(|(n, t)| (n.clone(), t.shallow_clone())), &cfg, &[], STEPS)
            .unwrap();
    let lr_of = |m: Module| match m {
        Module::Vision => cfg.lr.vision,
        Module::Merger => cfg.lr.merger,
        Module::Language => cfg.lr.language,
        Module::CoordRows => cfg.lr.coord_rows,
    };
    let mut lr = Map::new();
    let mut wd = Map::new();
    for (n, _) in &shapes {
        let k = groups::group_of(n).unwrap();
        lr.insert(key_name(n), json!(lr_of(k.module)));
        wd.insert(key_name(n), json!(if k.decay { cfg.weight_decay } else { 0.0 }));
    }
    let trace = coordexp_testkit::run_python_json(
        SCRIPT,
        &json!({
            "params": init.iter().map(|(n, v)| {
                let s = &shapes.iter().find(|(m, _)| m == n).unwrap().1;
                let t = Tensor::from_slice(v).reshape(s);
                (n.clone(), tensor_json(&t))
            }).collect::<Map<String, Value>>(),
            "groups": shapes.iter().map(|(n, _)| (n.to_string(), json!(key_name(n)))).collect::<Map<String, Value>>(),
            "lr": lr, "weight_decay": wd,
            "betas": cfg.betas, "eps": cfg.eps, "clip": cfg.grad_clip,
            "factors": (0..=STEPS).map(|s| opt.schedule().factor(s)).collect::<Vec<_>>(),
            "grads": grads.iter().map(|g| g.iter().map(|(n, v)| {
                let s = &shapes.iter().find(|(m, _)| m == n).unwrap().1;
                (n.clone(), tensor_json(&Tensor::from_slice(v).reshape(s)))
            }).collect::<Map<String, Value>>()).collect::<Vec<_>>(),
        }),
    );

    let mut clipped_steps = 0;
    for (k, step_grads) in grads.iter().enumerate() {
        opt.zero_grad();
        let loss = params
            .iter()
            .filter_map(|(n, t)| {
                let g = step_grads.get(n)?;
                Some((t * Tensor::from_slice(g).reshape(t.size())).sum(Kind::Float))
            })
            .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
        loss.backward();
        let stats = opt.step().unwrap();
        assert_eq!(stats.without_grad, 1, "lm_head.weight has no gradient");
        clipped_steps += usize::from(stats.clipped);
        let want = &trace[k];
        let norm = want["norm"].as_f64().unwrap();
        assert!(
            (stats.grad_norm - norm).abs() <= 1e-6 * norm.max(1.0),
            "step {k}: norm {} vs {norm}",
            stats.grad_norm
        );
        for (n, t) in &params {
            let got = Vec::<f32>::try_from(t.detach().flatten(0, -1)).unwrap();
            let exp: Vec<f64> = flatten(&want["params"][n]);
            let worst =
                got.iter().zip(&exp).map(|(g, e)| (f64::from(*g) - e).abs()).fold(0.0, f64::max);
            assert!(worst <= 1e-6, "step {}: {n} differs from torch by {worst}", k + 1);
        }
    }
    assert!(
        clipped_steps >= 2 && clipped_steps < STEPS as usize,
        "the case exercises both branches"
    );
}

fn tensor_json(t: &Tensor) -> Value {
    let flat = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    match t.size()[..] {
        [_] => json!(flat),
        [_, c] => json!(flat.chunks(c as usize).collect::<Vec<_>>()),
        _ => unreachable!("the test uses 1-D and 2-D parameters"),
    }
}

fn flatten(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flatten).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        _ => panic!("not numeric: {v}"),
    }
}
