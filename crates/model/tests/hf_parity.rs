//! Live parity with transformers 5.17 (the pinned venv) on tiny random Qwen3-VL configurations,
//! f32 on CPU: the oracle builds and saves the model, we load it, and logits, gradients, saved
//! checkpoints and greedy generation must agree.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use coordexp_model::attention::AttentionLayout;
use coordexp_model::config::ModelConfig;
use coordexp_model::generate::{
    Decoder, Generation, Job, Prompt, Sample, SamplingConfig, StopReason, generate, generate_jobs,
};
use coordexp_model::model::{ForwardInput, Qwen3VL};
use coordexp_model::vision::preprocess::ImageBatch;
use serde_json::json;
use tch::{Device, Kind, Tensor};

use common::{case_images, max_abs_diff, oracle, parity_config, read_case};

const TOL: f64 = 1e-4;

/// The untied model and its cases, built once per test process.
fn fixture() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hf_parity_untied");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = parity_config(false);
        oracle(&json!({
            "mode": "build", "seed": 3, "dir": dir, "config": cfg.to_json(),
            "cases": [
                {"name": "text", "parts": [37]},
                {"name": "one_image", "parts": [5, {"image": [64, 96]}, 9], "grad": true},
                {"name": "two_images", "parts": [3, {"image": [96, 64]}, 4, {"image": [64, 160]}, 6]},
                {"name": "pack_a", "parts": [4, {"image": [64, 64]}, 7]},
                {"name": "pack_b", "parts": [11]},
                {"name": "pack_c", "parts": [2, {"image": [32, 64]}, 5]},
            ],
        }));
        dir
    })
}

fn load(dir: &Path) -> Qwen3VL {
    Qwen3VL::load(dir, Kind::Float, Device::Cpu).unwrap()
}

/// Our logits [1, L, V] for one oracle case.
fn our_logits(model: &Qwen3VL, case: &HashMap<String, Tensor>) -> Tensor {
    let ids = &case["input_ids"];
    let images = case_images(model.config(), case);
    let layout = AttentionLayout::Causal;
    let input = ForwardInput {
        input_ids: ids,
        position_ids: &case["position_ids"],
        layout: &layout,
        images: images.as_ref(),
        inputs_embeds: None,
    };
    model.forward(&input).unwrap()
}

#[test]
fn logits_match_transformers_for_text_one_image_and_two_images() {
    let dir = fixture();
    let model = load(dir);
    for name in ["text", "one_image", "two_images"] {
        let case = read_case(&dir.join(format!("{name}.safetensors")));
        let d = max_abs_diff(&our_logits(&model, &case), &case["logits"]);
        let scale = case["logits"].abs().max().double_value(&[]);
        eprintln!("{name}: max |Δlogit| = {d:.2e} (max |logit| {scale:.2})");
        assert!(d <= TOL, "{name}: logits differ by {d}");
    }
}

#[test]
fn packed_samples_match_each_sample_run_alone() {
    let dir = fixture();
    let model = load(dir);
    let cases: Vec<_> = ["pack_a", "pack_b", "pack_c"]
        .iter()
        .map(|n| read_case(&dir.join(format!("{n}.safetensors"))))
        .collect();
    let ids = Tensor::cat(&cases.iter().map(|c| &c["input_ids"]).collect::<Vec<_>>(), 1);
    let pos = Tensor::cat(&cases.iter().map(|c| &c["position_ids"]).collect::<Vec<_>>(), 2);
    let images: Vec<ImageBatch> =
        cases.iter().filter_map(|c| case_images(model.config(), c)).collect();
    let images = ImageBatch::concat(&images);
    let mut cu = vec![0i64];
    for c in &cases {
        cu.push(cu.last().unwrap() + c["input_ids"].size()[1]);
    }
    let total = *cu.last().unwrap();
    let layouts = [
        ("masked", AttentionLayout::packed(&cu, total, Device::Cpu).unwrap()),
        ("per-segment", AttentionLayout::segments(&cu, total).unwrap()),
    ];
    for (how, layout) in &layouts {
        let input = ForwardInput {
            input_ids: &ids,
            position_ids: &pos,
            layout,
            images: images.as_ref(),
            inputs_embeds: None,
        };
        let packed = model.forward(&input).unwrap();
        for (i, c) in cases.iter().enumerate() {
            let part = packed.narrow(1, cu[i], cu[i + 1] - cu[i]);
            let alone = our_logits(&model, c);
            let d = max_abs_diff(&part, &c["logits"]);
            assert!(d <= TOL, "{how}: segment {i} vs transformers alone differs by {d}");
            assert!(max_abs_diff(&part, &alone) <= TOL, "{how}: segment {i} vs ours alone");
        }
    }
}

#[test]
fn gradients_of_a_fixed_loss_match_transformers_for_every_parameter() {
    let dir = fixture();
    let model = load(dir);
    let case = read_case(&dir.join("one_image.safetensors"));
    let loss = (our_logits(&model, &case) * &case["loss_weight"]).sum(Kind::Float);
    loss.backward();
    let params = model.named_parameters().unwrap();
    let expected: Vec<&String> = case.keys().filter(|k| k.starts_with("grad.")).collect();
    assert_eq!(params.len(), expected.len(), "parameter count differs from transformers");
    let mut worst = (0.0, String::new());
    for (name, p, _) in &params {
        let theirs =
            case.get(&format!("grad.{name}")).unwrap_or_else(|| panic!("no HF grad for {name}"));
        let ours = p.grad();
        assert!(ours.defined(), "{name} received no gradient");
        let scale = theirs.abs().max().double_value(&[]).max(1e-6);
        let rel = max_abs_diff(&ours, theirs) / scale;
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
    }
    eprintln!("worst relative gradient difference {:.2e} at {}", worst.0, worst.1);
    assert!(worst.0 <= TOL, "worst relative gradient difference {} at {}", worst.0, worst.1);
}

#[test]
fn a_checkpoint_we_save_loads_in_transformers_with_identical_logits() {
    let dir = fixture();
    let mut model = load(dir);
    // Perturb every parameter so the saved file cannot be a byte copy of the oracle's.
    tch::no_grad(|| {
        for (i, (_, p, _)) in model.named_parameters().unwrap().iter().enumerate() {
            let mut p = p.shallow_clone();
            let _ = p.g_add_scalar_(1e-3 * ((i % 7) as f64 - 3.0));
        }
    });
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hf_parity_saved");
    let _ = std::fs::remove_dir_all(&out);
    // A small shard limit forces the sharded layout with an index.
    model.save(&out, 200_000).unwrap();
    assert!(out.join("model.safetensors.index.json").exists());
    let case_path = dir.join("two_images.safetensors");
    let theirs_path = out.join("hf_logits.safetensors");
    oracle(&json!({"mode": "logits", "dir": out, "case": case_path, "out": theirs_path}));
    let theirs = read_case(&theirs_path);
    let ours = our_logits(&model, &read_case(&case_path));
    assert!(max_abs_diff(&ours, &theirs["logits"]) <= TOL);
    // And it loads back into our model bit for bit.
    let again = load(&out);
    let model_ref: &mut Qwen3VL = &mut model;
    for ((n1, a, _), (n2, b, _)) in
        model_ref.named_parameters().unwrap().iter().zip(again.named_parameters().unwrap())
    {
        assert_eq!(n1, &n2);
        assert_eq!(max_abs_diff(a, &b), 0.0, "{n1}");
    }
    let _ = ModelConfig::from_file(&out).unwrap();
}

/// A tied-head model (the CoordExp layout) with two prompts of different lengths.
fn generation_fixture() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hf_parity_tied");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        oracle(&json!({
            "mode": "build", "seed": 11, "dir": dir, "config": parity_config(true).to_json(),
            // Wider weights than HF's 0.02 so greedy decoding does not collapse into repeating
            // one token, which would make the comparison weak.
            "init_std": 0.3,
            "cases": [
                {"name": "gen_a", "parts": [6, {"image": [64, 96]}, 5]},
                {"name": "gen_b", "parts": [9]},
            ],
        }));
        dir
    })
}

/// The generation fixture's case files.
fn generation_cases(dir: &Path) -> Vec<PathBuf> {
    ["gen_a", "gen_b"].iter().map(|n| dir.join(format!("{n}.safetensors"))).collect()
}

/// Each case's prompt ids, images and [3, L] position ids.
type PromptParts = (Vec<Vec<i64>>, Vec<Option<ImageBatch>>, Vec<Tensor>);

/// Case `i` of `parts` as a prompt seeded `seed`.
fn prompt_of(parts: &PromptParts, i: usize, seed: u64) -> Prompt<'_> {
    Prompt { ids: &parts.0[i], position_ids: &parts.2[i], images: parts.1[i].as_ref(), seed }
}

fn generation_inputs(model: &Qwen3VL, paths: &[PathBuf]) -> PromptParts {
    let cases: Vec<_> = paths.iter().map(|p| read_case(p)).collect();
    let ids = cases.iter().map(|c| Vec::try_from(c["input_ids"].flatten(0, -1)).unwrap()).collect();
    let images = cases.iter().map(|c| case_images(model.config(), c)).collect();
    let pos = cases.iter().map(|c| c["position_ids"].squeeze_dim(1)).collect();
    (ids, images, pos)
}

#[test]
fn greedy_generation_of_32_tokens_matches_transformers_batched_with_left_padding() {
    let dir = generation_fixture();
    let model = load(dir);
    assert!(model.config().tie_word_embeddings);
    let paths = generation_cases(dir);
    let theirs = oracle(&json!({
        "mode": "generate", "dir": dir, "cases": paths, "max_new_tokens": 32, "pad_id": 0,
    }));
    let (ids, images, pos) = generation_inputs(&model, &paths);
    let prompts: Vec<Prompt<'_>> = (0..paths.len())
        .map(|i| Prompt {
            ids: &ids[i],
            position_ids: &pos[i],
            images: images[i].as_ref(),
            seed: 0,
        })
        .collect();
    let cfg = SamplingConfig::greedy(32, vec![]);
    let ours = generate(&model, &prompts, &cfg).unwrap();
    for (i, g) in ours.iter().enumerate() {
        let want: Vec<i64> =
            theirs["tokens"][i].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(g.tokens, want, "prompt {i}");
        let distinct: std::collections::BTreeSet<_> = want.iter().collect();
        assert!(distinct.len() > 8, "degenerate oracle output {want:?}");
        assert_eq!(g.logprobs.len(), 32);
        assert!(g.logprobs.iter().all(|&lp| lp <= 0.0 && lp.is_finite()));
        // Batching is invisible: the prompt alone gives the same tokens.
        let alone = generate(&model, &prompts[i..=i], &cfg).unwrap();
        assert_eq!(alone[0].tokens, g.tokens, "prompt {i} alone");
    }
    // A stop id ends a prompt early and is its last token.
    let stop = ours[1].tokens[3];
    let first = ours[1].tokens.iter().position(|&t| t == stop).unwrap();
    let stopped = generate(&model, &prompts[1..], &SamplingConfig::greedy(32, vec![stop])).unwrap();
    assert_eq!(stopped[0].tokens, ours[1].tokens[..=first].to_vec());
    assert_eq!(stopped[0].stop, StopReason::StopToken);
}

#[test]
fn the_continuous_engine_shares_prefills_refills_freed_rows_and_keeps_rows_independent() {
    let dir = generation_fixture();
    let model = load(dir);
    let parts = generation_inputs(&model, &generation_cases(dir));
    let prompt = |i: usize, seed: u64| prompt_of(&parts, i, seed);
    let greedy = SamplingConfig::greedy(20, vec![]);
    let sampled = SamplingConfig { temperature: 1.0, top_k: 50, top_p: 0.9, ..greedy.clone() };
    let penalised = SamplingConfig { repetition_penalty: 1.3, ..greedy.clone() };
    // A greedy row that stops early (at its 4th token) and frees its slot.
    let first = generate(&model, &[prompt(1, 0)], &greedy).unwrap();
    let short = SamplingConfig::greedy(20, vec![first[0].tokens[3]]);
    let jobs = vec![
        Job {
            prompt: prompt(0, 0),
            samples: vec![
                Sample { seed: 0, cfg: &greedy },
                Sample { seed: 5, cfg: &sampled },
                Sample { seed: 6, cfg: &sampled },
                Sample { seed: 0, cfg: &penalised },
            ],
        },
        Job { prompt: prompt(1, 0), samples: vec![Sample { seed: 0, cfg: &short }] },
        Job { prompt: prompt(1, 0), samples: vec![Sample { seed: 7, cfg: &sampled }] },
        Job { prompt: prompt(0, 0), samples: vec![Sample { seed: 0, cfg: &greedy }; 2] },
    ];
    // Every sample on its own: one prompt, one row.
    let alone: Vec<Vec<_>> = jobs
        .iter()
        .map(|j| {
            j.samples
                .iter()
                .map(|s| {
                    let p = Prompt { seed: s.seed, ..j.prompt.clone() };
                    generate(&model, &[p], s.cfg).unwrap().remove(0)
                })
                .collect()
        })
        .collect();
    assert_ne!(alone[0][1].tokens, alone[0][2].tokens, "two seeds, two samples");
    assert_ne!(alone[0][0].tokens, alone[0][3].tokens, "the penalty changes the greedy path");
    assert_eq!(alone[1][0].tokens.len(), 4);
    assert_eq!(alone[1][0].stop, StopReason::StopToken);
    // Fewer rows than samples (jobs wait for free rows, freed rows are refilled, the tail
    // shrinks), and all at once: each sample as if alone.
    for slots in [4, 5, 16] {
        let out = generate_jobs(&model, &jobs, slots).unwrap();
        for (j, (got, want)) in out.iter().zip(&alone).enumerate() {
            for (k, (g, w)) in got.iter().zip(want).enumerate() {
                assert_eq!(g.tokens, w.tokens, "slots {slots}, job {j}, sample {k}");
                assert_eq!(g.stop, w.stop);
                let d = g.logprobs.iter().zip(&w.logprobs).map(|(a, b)| (a - b).abs());
                assert!(d.fold(0.0f32, f32::max) < 1e-4, "slots {slots}, job {j}, sample {k}");
            }
        }
    }
}

#[test]
fn a_running_decoder_admits_jobs_between_steps_grows_shrinks_and_cancels_without_changing_a_row() {
    let dir = generation_fixture();
    let model = load(dir);
    let parts = generation_inputs(&model, &generation_cases(dir));
    let prompt = |i: usize, seed: u64| prompt_of(&parts, i, seed);
    let short = SamplingConfig::greedy(6, vec![]);
    let long = SamplingConfig::greedy(20, vec![]);
    let sampled = SamplingConfig { temperature: 1.0, top_k: 50, top_p: 0.9, ..long.clone() };
    let alone = |i: usize, s: Sample| generate(&model, &[prompt(i, s.seed)], s.cfg).unwrap();
    let mut got: HashMap<(u32, usize), Generation> = HashMap::new();
    let mut keep = |f: Vec<(u32, usize, Generation)>| {
        for (tag, k, g) in f {
            assert!(got.insert((tag, k), g).is_none(), "row ({tag}, {k}) finished twice");
        }
    };
    let mut dec: Decoder<u32> = Decoder::new(3, 64);
    assert!(dec.step(&model).unwrap().is_empty(), "an idle decoder does nothing");
    // A short job alone: one row, a cache just wide enough for it.
    let job1 = Job { prompt: prompt(0, 0), samples: vec![Sample { seed: 0, cfg: &short }] };
    keep(dec.admit(&model, &[(job1, 1)]).unwrap());
    for _ in 0..2 {
        keep(dec.step(&model).unwrap());
    }
    // Mid-flight, a longer job of two samples: the cache grows in rows and in columns.
    let job2 = Job {
        prompt: prompt(1, 7),
        samples: vec![Sample { seed: 7, cfg: &sampled }, Sample { seed: 0, cfg: &short }],
    };
    keep(dec.admit(&model, &[(job2, 2)]).unwrap());
    assert_eq!((dec.busy(), dec.free()), (3, 0));
    // Both short rows finish; one row is left, and the cache shrinks to it.
    while dec.busy() > 1 {
        keep(dec.step(&model).unwrap());
    }
    dec.compact(&model);
    assert_eq!((dec.busy(), dec.free()), (1, 2));
    // Rows are made again for a new job, which is then cancelled mid-way.
    let job3 = Job {
        prompt: prompt(0, 9),
        samples: vec![Sample { seed: 0, cfg: &long }, Sample { seed: 9, cfg: &sampled }],
    };
    keep(dec.admit(&model, &[(job3, 3)]).unwrap());
    assert_eq!(dec.busy(), 3);
    for _ in 0..3 {
        keep(dec.step(&model).unwrap());
    }
    dec.cancel(|&tag| tag == 3);
    assert_eq!(dec.busy(), 1);
    while dec.busy() > 0 {
        keep(dec.step(&model).unwrap());
    }
    let want = [
        ((1, 0), alone(0, Sample { seed: 0, cfg: &short })),
        ((2, 0), alone(1, Sample { seed: 7, cfg: &sampled })),
        ((2, 1), alone(1, Sample { seed: 0, cfg: &short })),
    ];
    assert_eq!(got.len(), want.len(), "the cancelled job's rows never finish: {:?}", got.keys());
    for (key, w) in want {
        let g = &got[&key];
        assert_eq!(g.tokens, w[0].tokens, "row {key:?}");
        assert_eq!(g.stop, w[0].stop);
        let d = g.logprobs.iter().zip(&w[0].logprobs).map(|(a, b)| (a - b).abs());
        assert!(d.fold(0.0f32, f32::max) < 1e-4, "row {key:?}");
    }
    assert_eq!(got[&(2, 0)].tokens.len(), 20);
}

/// bf16 against transformers in bf16. Both round every op's output to bf16; on the development
/// machine the logits came out identical (0.0 difference, against ~6e-3 from the f32 logits),
/// but kernels may accumulate in another order on other CPUs, so the documented tolerance is
/// bf16 precision: 2 % of the largest |logit|.
#[test]
fn bf16_logits_match_transformers_in_bf16_to_bf16_precision() {
    let dir = fixture();
    let model = Qwen3VL::load(dir, Kind::BFloat16, Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for name in ["text", "one_image"] {
        let case_path = dir.join(format!("{name}.safetensors"));
        let out = tmp.path().join(format!("{name}.bf16.safetensors"));
        oracle(
            &json!({"mode": "logits", "dir": dir, "case": case_path, "out": out, "dtype": "bf16"}),
        );
        let theirs = &read_case(&out)["logits"];
        let ours = tch::no_grad(|| our_logits(&model, &read_case(&case_path)));
        assert_eq!(ours.kind(), Kind::BFloat16);
        let d = max_abs_diff(&ours, theirs);
        let scale = theirs.abs().max().double_value(&[]);
        let f32_ref = &read_case(&case_path)["logits"];
        let to_f32 = max_abs_diff(&ours, f32_ref);
        eprintln!(
            "{name}: bf16 max |Δlogit| vs transformers bf16 = {d:.3e} (scale {scale:.2}, {:.2}%); vs f32 = {to_f32:.3e}",
            100.0 * d / scale
        );
        assert!(d <= 0.02 * scale, "{name}: bf16 logits differ by {d} (scale {scale})");
    }
}
