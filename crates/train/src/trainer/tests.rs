//! Trainer invariants on a tiny model and a few synthetic images (CPU, f32).

use super::batch::scalar;
use super::*;
use crate::demo::{self, Arch};
use coordexp_core::config::schema::ObjectOrdering;
use tch::Tensor;

struct Fixture {
    dir: tempfile::TempDir,
    config: PathBuf,
}

/// A tiny demo setup (12 train, 4 val images) and a config that extends it with `extra` YAML.
fn fixture(extra: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let prepared = demo::prepare(&out, 12, 4, 3, &Arch::TEST).unwrap();
    let config = dir.path().join("test.yaml");
    let base = prepared.config.display();
    let runs = dir.path().join("runs").display().to_string();
    std::fs::write(
        &config,
        format!(
            "extends: {base}\nrun:\n  name: t\n  output_dir: {runs:?}\npacking:\n  max_length: 512\n{extra}"
        ),
    )
    .unwrap();
    Fixture { dir, config }
}

impl Fixture {
    fn loaded(&self) -> Loaded {
        config::load(&self.config).unwrap()
    }
}

use coordexp_core::config;

/// Everything the invariance tests build micro-batches from.
struct Parts {
    split: Split,
    samples: Vec<coordexp_text::EncodedSample>,
    model: Qwen3VL,
    objective: Stage1Objective,
    norm: PixelNorm,
}

fn parts(f: &Fixture) -> Parts {
    let loaded = f.loaded();
    let cfg = &loaded.config;
    let path = cfg.model.path.clone().unwrap();
    let model_dir = ModelDir::load(&path).unwrap();
    let encoder =
        Encoder::new(model_dir.clone(), Prompts::resolve(&cfg.prompt).unwrap(), &cfg.template)
            .unwrap();
    let split = Split::load("train", cfg.data.train.as_ref().unwrap(), None, 1 << 20).unwrap();
    let samples =
        split.encode_train(&encoder, cfg.prompt.field_order, ObjectOrdering::Sorted, 0).unwrap();
    let (model, objective, _) = build_model(cfg, &path, &model_dir, Device::Cpu).unwrap();
    Parts { split, samples, model, objective, norm: PixelNorm::from_model_dir(&path).unwrap() }
}

impl Parts {
    fn micro(&self, ids: &[usize]) -> MicroBatch {
        let vision = VisionInput { config: &self.model.config().vision, norm: self.norm };
        let list: Vec<_> = ids
            .iter()
            .map(|&i| (i as u64, &self.samples[i], self.split.items[i].pixels.as_slice()))
            .collect();
        MicroBatch::build(&list, &self.objective, &vision, Device::Cpu).unwrap()
    }

    /// Loss and gradients of a window made of `micro` micro-batches.
    fn loss_and_grads(&self, micro: &[MicroBatch]) -> (f64, Vec<Tensor>) {
        let params = self.model.named_parameters();
        for (_, t, _) in &params {
            let mut t = t.shallow_clone();
            t.zero_grad();
        }
        let window: WindowCounts = micro.iter().map(MicroBatch::counts).sum();
        let mut total = 0.0;
        for mb in micro {
            let loss = mb.loss(&self.model, &self.objective, &window).unwrap();
            total += scalar(&loss.total).unwrap();
            loss.total.backward();
        }
        let grads = params
            .iter()
            .map(|(_, t, _)| {
                let g = t.grad();
                if g.defined() { g.copy() } else { t.zeros_like() }
            })
            .collect();
        (total, grads)
    }
}

fn max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs().max().double_value(&[])).fold(0.0, f64::max)
}

#[test]
fn a_packed_micro_batch_equals_the_same_samples_unpacked() {
    let f = fixture("");
    let p = parts(&f);
    let packed = p.micro(&[0, 1, 2]);
    let single = [p.micro(&[0]), p.micro(&[1]), p.micro(&[2])];
    assert_eq!(packed.counts(), single.iter().map(MicroBatch::counts).sum());
    let (la, ga) = p.loss_and_grads(std::slice::from_ref(&packed));
    let (lb, gb) = p.loss_and_grads(&single);
    assert!((la - lb).abs() <= 1e-5, "{la} vs {lb}");
    let d = max_diff(&ga, &gb);
    assert!(d <= 1e-5, "gradients differ by {d}");
    assert!(ga.iter().any(|g| g.abs().sum(Kind::Float).double_value(&[]) > 0.0));
}

#[test]
fn two_micro_batches_of_four_equal_one_of_eight() {
    let f = fixture("");
    let p = parts(&f);
    let (la, ga) = p.loss_and_grads(&[p.micro(&[0, 1, 2, 3]), p.micro(&[4, 5, 6, 7])]);
    let (lb, gb) = p.loss_and_grads(&[p.micro(&[0, 1, 2, 3, 4, 5, 6, 7])]);
    assert!((la - lb).abs() <= 1e-5, "{la} vs {lb}");
    let d = max_diff(&ga, &gb);
    assert!(d <= 1e-5, "gradients differ by {d}");
}

const NO_EVAL: &str = "data:\n  val: null\ntrain:\n  max_steps: 6\n  log_every: 1\n  eval_every: 0\n  save_every: 3\n  keep_last: 0\n";

fn quiet() -> TrainOptions {
    TrainOptions { progress: false, ..TrainOptions::default() }
}

#[test]
fn resuming_at_step_n_repeats_the_losses_of_the_uninterrupted_run() {
    let f = fixture(NO_EVAL);
    let full = train(&f.loaded(), quiet()).unwrap();
    assert_eq!(full.steps, 6);
    assert_eq!(full.step_losses.len(), 6);
    // A copy of the run as it was after step 3.
    let copy = f.dir.path().join("copy");
    copy_tree(&full.run_dir, &copy);
    std::fs::remove_dir_all(copy.join("checkpoints/step-6")).unwrap();
    let resumed =
        train(&f.loaded(), TrainOptions { resume: Some(copy.clone()), ..quiet() }).unwrap();
    assert_eq!(resumed.run_dir, copy);
    assert_eq!(resumed.step_losses, full.step_losses[3..].to_vec());
    // metrics.jsonl reads as one run: steps 1..6 once each.
    let text = std::fs::read_to_string(copy.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

#[test]
fn a_failed_checkpoint_write_leaves_no_checkpoint_and_resume_skips_debris() {
    let f = fixture(NO_EVAL);
    let run = train(&f.loaded(), quiet()).unwrap();
    let loaded = f.loaded();
    let cfg = &loaded.config;
    let path = cfg.model.path.clone().unwrap();
    let model_dir = ModelDir::load(&path).unwrap();
    let (model, _, optimizer) = build_model(cfg, &path, &model_dir, Device::Cpu).unwrap();
    let rd = RunDir { root: run.run_dir.clone() };
    let state = TrainerState { step: 7, ..TrainerState::start() };
    // The model files to copy are gone half-way through the write: the write fails.
    let err = rd
        .save_checkpoint(&model, &optimizer, &f.dir.path().join("gone"), "", &state, 0)
        .unwrap_err();
    assert!(err.what().contains("gone") || err.location().is_some_and(|l| l.contains("gone")));
    assert!(!rd.checkpoints().step_dir(7).exists());
    // A process killed mid-write leaves a hidden temporary directory: ignored, then removed.
    let debris = run.run_dir.join("checkpoints/.tmp-step-9.12345");
    std::fs::create_dir_all(&debris).unwrap();
    std::fs::write(debris.join("model.safetensors"), b"partial").unwrap();
    let (_, ckpt, state) = find_resume(&run.run_dir).unwrap();
    assert_eq!((ckpt.file_name().unwrap().to_str().unwrap(), state.step), ("step-6", 6));
    assert!(!debris.exists());
}

#[test]
fn a_non_finite_loss_stops_with_the_step_and_the_samples() {
    let f = fixture(&format!(
        "{NO_EVAL}optim:\n  lr: {{language: 1.0e+30, vision: 1.0e+30, merger: 1.0e+30, coord_rows: 1.0e+30}}\n  grad_clip: 0.0\n"
    ));
    let err = train(&f.loaded(), quiet()).err().unwrap();
    let text = format!("{} {}", err.what(), err.location().unwrap_or(""));
    assert!(text.contains("step"), "{text}");
    assert!(text.contains("train.jsonl:"), "{text}");
}

#[test]
fn two_workers_give_the_losses_of_one_bit_for_bit() {
    let f = fixture(&format!("{NO_EVAL}  accumulation: 3\n"));
    let run = |workers| {
        let plan = CpuPlan { workers, threads: 1 };
        let dir = f.dir.path().join("runs").join("t");
        let _ = std::fs::remove_dir_all(&dir);
        train(&f.loaded(), TrainOptions { cpu: Some(plan), ..quiet() }).unwrap().step_losses
    };
    let one = run(1);
    let two = run(2);
    assert_eq!(one.len(), 6);
    assert_eq!(one, two);
    assert!(one.iter().all(|(_, l)| l.is_finite()));
}

#[test]
fn window_gradients_equal_one_backward_per_micro_batch() {
    // The workers' explicit gradients (run_backward, summed in order) are the `.grad` values
    // that sequential `.backward()` calls accumulate.
    let f = fixture("");
    let p = parts(&f);
    let loaded = f.loaded();
    let cfg = &loaded.config;
    let micro = || vec![p.micro(&[0, 1]), p.micro(&[2, 3, 4]), p.micro(&[5])];
    let (loss, reference) = p.loss_and_grads(&micro());
    let path = cfg.model.path.clone().unwrap();
    let optimizer = crate::optim::AdamW::new(
        p.model.named_parameters().into_iter().map(|(n, t, _)| (n, t)),
        &cfg.optim,
        &cfg.model.tuning.freeze,
        10,
    )
    .unwrap();
    let coord = coord_ids(&ModelDir::load(&path).unwrap());
    let mut w =
        Workers::new(cfg, &p.model, &optimizer, coord, CpuPlan { workers: 2, threads: 1 }).unwrap();
    let window: WindowCounts = micro().iter().map(MicroBatch::counts).sum();
    let mut outs = w.run(micro(), &window, &p.model, &p.objective).unwrap();
    let total: f64 = outs.iter().map(|o| o.value).sum();
    assert_eq!(total, loss);
    let grads = workers::sum_in_order(&mut outs);
    let names: Vec<String> = p.model.named_parameters().into_iter().map(|(n, _, _)| n).collect();
    let mut compared = 0;
    for ((name, _), g) in optimizer.params().zip(&grads) {
        let i = names.iter().position(|n| n == name).unwrap();
        let g = g.as_ref().map_or_else(|| reference[i].zeros_like(), Tensor::shallow_clone);
        assert!(g.equal(&reference[i]), "gradient of {name} differs");
        compared += 1;
    }
    assert!(compared > 0);
}

#[test]
fn a_deadline_refits_the_schedule_to_the_steps_that_fit() {
    let f = fixture(
        "data:\n  val: null\ntrain:\n  max_steps: 100000\n  log_every: 1000\n  eval_every: 0\n  save_every: 0\n  keep_last: 0\n",
    );
    // ~30 ms a step here: ~300 steps fit, enough for the projection (after 50) even on a
    // loaded machine.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let run = train(&f.loaded(), TrainOptions { deadline: Some(deadline), ..quiet() }).unwrap();
    let (planned, total) = run.refitted.expect("100,000 steps cannot fit in 10 s");
    assert_eq!(planned, 100_000);
    assert!(total < planned, "{total}");
    assert!(run.steps <= total && run.steps >= 50, "{} of {total}", run.steps);
    assert!(run.step_losses.iter().all(|(_, l)| l.is_finite()));
    assert!(Instant::now() < deadline + std::time::Duration::from_secs(30));
}
