//! LoRA and DoRA against peft, live (`crates/model/tests/oracle/peft_adapter.py`, the venv's
//! peft on transformers' Qwen3-VL), f32 on CPU:
//! - an adapter written by peft loads here with peft's logits and adapter gradients;
//! - an adapter written here loads in peft with our logits;
//! - `coordexp model merge`'s directory loads in transformers with the same logits;
//! - a fresh adapter computes exactly the base model.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use coordexp_model::adapter::{AdapterKind, AdapterSpec, Targets, merge_dir};
use coordexp_model::attention::AttentionLayout;
use coordexp_model::model::{ForwardInput, Qwen3VL};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use common::{case_images, max_abs_diff, oracle, parity_config, read_case};

const TOL: f64 = 1e-4;
const PEFT: &str = include_str!("oracle/peft_adapter.py");

/// A base model (untied, every component) and one image case, built by transformers once.
fn base() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("adapters_base");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        oracle(&json!({
            "mode": "build", "seed": 5, "dir": dir, "config": parity_config(false).to_json(),
            "cases": [{"name": "case", "parts": [5, {"image": [64, 96]}, 9]}],
        }));
        dir
    })
}

fn peft(request: serde_json::Value) -> serde_json::Value {
    coordexp_testkit::run_python_json(PEFT, &request)
}

fn load(dir: &Path) -> Qwen3VL {
    Qwen3VL::load(dir, Kind::Float, Device::Cpu).unwrap()
}

fn logits(model: &Qwen3VL, case: &HashMap<String, Tensor>) -> Tensor {
    let images = case_images(model.config(), case);
    let layout = AttentionLayout::Causal;
    model
        .forward(&ForwardInput {
            input_ids: &case["input_ids"],
            position_ids: &case["position_ids"],
            layout: &layout,
            images: images.as_ref(),
            inputs_embeds: None,
        })
        .unwrap()
}

fn case_path() -> PathBuf {
    base().join("case.safetensors")
}

#[test]
fn peft_lora_and_dora_adapters_load_with_peft_logits_and_adapter_gradients() {
    // The third case trains the head and every module ending in `norm` in full beside LoRA.
    let saved = json!(["lm_head", "norm"]);
    for (kind, dora, save) in
        [("lora", false, json!(null)), ("dora", true, json!(null)), ("lora+saved", false, saved)]
    {
        let tmp = tempfile::tempdir().unwrap();
        let (adapter, out) = (tmp.path().join("adapter"), tmp.path().join("out.safetensors"));
        let answer = peft(json!({
            "mode": "build", "base": base(), "case": case_path(), "adapter": adapter,
            "out": out, "r": 4, "alpha": 8, "targets": "all-linear", "dora": dora, "seed": 11,
            "modules_to_save": save,
        }));
        let mut model = load(base());
        let file = model.load_adapter(&adapter).unwrap();
        assert_eq!(file.spec.kind, if dora { AdapterKind::Dora } else { AdapterKind::Lora });
        let params = model.adapter_parameters().unwrap();
        let modules = params.iter().filter(|(n, _, _)| n.ends_with("lora_A.weight")).count();
        assert_eq!(answer["adapted"].as_u64(), Some(modules as u64), "{kind}: adapted modules");
        let full: Vec<&str> =
            params.iter().map(|p| p.0.as_str()).filter(|n| !n.contains(".lora_")).collect();
        if save.is_null() {
            assert!(full.is_empty(), "{kind}: {full:?}");
        } else {
            // The head, the final norm, every decoder layer's norms and the mergers' norms.
            assert!(full.contains(&"lm_head.weight"), "{full:?}");
            assert!(full.contains(&"model.language_model.layers.0.input_layernorm.weight"));
            assert!(full.contains(&"model.visual.merger.norm.bias"), "{full:?}");
            assert!(params.iter().all(|p| p.1.requires_grad()));
        }
        assert!(modules > 20, "{kind}: all-linear covers vision, merger and decoder ({modules})");

        let theirs = read_case(&out);
        let case = read_case(&case_path());
        let ours = logits(&model, &case);
        let d = max_abs_diff(&ours, &theirs["logits"]);
        eprintln!("{kind}: max |Δlogit| vs peft = {d:.2e}");
        assert!(d <= TOL, "{kind}: logits differ from peft by {d}");

        let loss = (ours * &theirs["loss_weight"]).sum(Kind::Float);
        let tensors: Vec<&Tensor> = params.iter().map(|(_, t, _)| t).collect();
        let grads = Tensor::run_backward(&[&loss], &tensors, false, false);
        let expected = theirs.keys().filter(|k| k.starts_with("grad.")).count();
        assert_eq!(params.len(), expected, "{kind}: adapter tensor count differs from peft");
        let mut worst = (0.0, String::new());
        for ((name, _, _), g) in params.iter().zip(&grads) {
            let want = theirs
                .get(&format!("grad.{name}"))
                .unwrap_or_else(|| panic!("{kind}: peft has no gradient for {name}"));
            let scale = want.abs().max().double_value(&[]).max(1e-6);
            let rel = max_abs_diff(g, want) / scale;
            if rel > worst.0 {
                worst = (rel, name.clone());
            }
        }
        eprintln!(
            "{kind}: worst relative adapter-gradient difference {:.2e} at {}",
            worst.0, worst.1
        );
        assert!(worst.0 <= TOL, "{kind}: gradient of {} differs by {}", worst.1, worst.0);
    }
}

#[test]
fn our_adapters_load_in_peft_and_merge_into_a_transformers_model_with_the_same_logits() {
    let case = read_case(&case_path());
    for (name, kind) in [("lora", AdapterKind::Lora), ("dora", AdapterKind::Dora)] {
        let tmp = tempfile::tempdir().unwrap();
        let mut model = load(base());
        let spec = AdapterSpec {
            kind,
            r: 3,
            alpha: 6.0,
            dropout: 0.0,
            targets: Targets::Modules(vec!["q_proj".into(), "down_proj".into(), "qkv".into()]),
            skip: Vec::new(),
            modules_to_save: vec!["lm_head".into(), "merger.norm".into()],
        };
        tch::manual_seed(3);
        let adapted = model.attach_adapters(&spec).unwrap();
        assert_eq!(
            adapted.len(),
            3 * 2 + 3,
            "q_proj and down_proj of three layers, qkv of three blocks"
        );
        // Non-trivial adapters: B (and DoRA's magnitude) away from their identity values.
        tch::no_grad(|| {
            for (n, t, _) in model.adapter_parameters().unwrap() {
                let noise = Tensor::randn(t.size(), (Kind::Float, Device::Cpu));
                if n.ends_with("lora_B.weight") {
                    t.shallow_clone().copy_(&(noise * 0.05));
                } else if n.ends_with("lora_magnitude_vector") {
                    t.shallow_clone().copy_(&(&t * (noise * 0.1 + 1.0)));
                } else {
                    // A saved module's own parameter.
                    t.shallow_clone().copy_(&(&t + noise * 0.05));
                }
            }
        });
        let ours = tch::no_grad(|| logits(&model, &case));
        let adapter = tmp.path().join("adapter");
        model.save_adapter(&adapter, Some(&base().display().to_string())).unwrap();

        let out = tmp.path().join("peft.safetensors");
        peft(
            json!({"mode": "logits", "base": base(), "adapter": adapter, "case": case_path(), "out": out}),
        );
        let d = max_abs_diff(&ours, &read_case(&out)["logits"]);
        eprintln!("{name}: our adapter in peft: max |Δlogit| = {d:.2e}");
        assert!(d <= TOL, "{name}: peft computes other logits from our adapter ({d})");

        // The adapter directory alone loads as its base with the adapter merged in.
        let alone = tch::no_grad(|| logits(&load(&adapter), &case));
        assert!(max_abs_diff(&ours, &alone) <= TOL, "{name}: adapter-only directory");

        let merged = tmp.path().join("merged");
        let r = merge_dir(base(), &adapter, &merged).unwrap();
        assert_eq!(r.modules, adapted.len());
        let out = tmp.path().join("merged.safetensors");
        peft(json!({"mode": "logits", "base": merged, "case": case_path(), "out": out}));
        let d = max_abs_diff(&ours, &read_case(&out)["logits"]);
        eprintln!("{name}: merged directory in transformers: max |Δlogit| = {d:.2e}");
        assert!(d <= TOL, "{name}: the merged model computes other logits ({d})");
        let d = max_abs_diff(&ours, &tch::no_grad(|| logits(&load(&merged), &case)));
        assert!(d <= TOL, "{name}: merged directory loaded here ({d})");
    }
}

#[test]
fn a_fresh_adapter_computes_the_base_model_exactly_and_saving_writes_merged_weights() {
    let case = read_case(&case_path());
    let mut model = load(base());
    let before = tch::no_grad(|| logits(&model, &case));
    for kind in [AdapterKind::Lora, AdapterKind::Dora] {
        let mut m = load(base());
        let spec = AdapterSpec {
            kind,
            r: 2,
            alpha: 4.0,
            dropout: 0.0,
            targets: Targets::AllLinear,
            skip: Vec::new(),
            modules_to_save: Vec::new(),
        };
        m.attach_adapters(&spec).unwrap();
        let d = max_abs_diff(&before, &tch::no_grad(|| logits(&m, &case)));
        // LoRA adds exactly zero; DoRA rescales by m/‖W‖ = 1 up to rounding.
        let tol = if kind == AdapterKind::Lora { 0.0 } else { 1e-5 };
        assert!(d <= tol, "{kind:?}: a fresh adapter changed the logits by {d}");
        assert!(m.named_parameters().unwrap().iter().all(|(_, t, _)| !t.requires_grad()));
        assert!(m.adapter_parameters().unwrap().iter().all(|(_, t, _)| t.requires_grad()));
        assert!(m.attach_adapters(&spec).is_err(), "attaching twice is refused");
    }
    // With a changed adapter, `save` writes the weights the model computes with.
    let spec = AdapterSpec {
        kind: AdapterKind::Lora,
        r: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: Targets::AllLinear,
        skip: Vec::new(),
        modules_to_save: Vec::new(),
    };
    model.attach_adapters(&spec).unwrap();
    tch::no_grad(|| {
        for (n, t, _) in model.adapter_parameters().unwrap() {
            if n.ends_with("lora_B.weight") {
                t.shallow_clone()
                    .copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.05));
            }
        }
    });
    let adapted = tch::no_grad(|| logits(&model, &case));
    let tmp = tempfile::tempdir().unwrap();
    model.save(tmp.path(), u64::MAX).unwrap();
    let saved = tch::no_grad(|| logits(&load(tmp.path()), &case));
    assert!(max_abs_diff(&adapted, &saved) <= TOL);
    assert!(max_abs_diff(&adapted, &before) > 1e-3, "the adapter changed the model");
}
