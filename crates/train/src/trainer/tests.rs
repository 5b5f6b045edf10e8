//! Trainer invariants on a tiny model and a few synthetic images (CPU, f32).

use super::*;
use crate::metrics::event_files;
use crate::objective::WindowCounts;
use coordexp_core::config;
use coordexp_core::config::schema::ObjectOrdering;
use coordexp_demo::{self as demo, Arch};
use coordexp_model::grads::Grads;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tch::{Device, Kind, Tensor};

pub(super) struct Fixture {
    pub(super) dir: tempfile::TempDir,
    pub(super) config: PathBuf,
}

/// A tiny demo setup (12 train, 4 val images) and a config that extends it with `extra` YAML.
pub(super) fn fixture(extra: &str) -> Fixture {
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
    pub(super) fn loaded(&self) -> Loaded {
        config::load(&self.config).unwrap()
    }

    pub(super) fn run_dir(&self) -> PathBuf {
        self.dir.path().join("runs").join("t")
    }

    /// Append `extra` YAML to the config.
    fn append_config(&self, extra: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, format!("{text}{extra}")).unwrap();
    }
}

/// Everything the invariance tests build micro-batches from.
pub(super) struct Parts {
    pub(super) session: Session,
    pub(super) split: coordexp_rollout::Split,
    pub(super) samples: Vec<coordexp_text::EncodedSample>,
    pub(super) model: Qwen3VL,
    pub(super) objective: Stage1Objective,
}

pub(super) fn parts(f: &Fixture) -> Parts {
    let loaded = f.loaded();
    let cfg = &loaded.config;
    let session = Session::open(cfg, None, Some(1)).unwrap();
    let split = session.load_split("train", cfg.data.train.as_ref().unwrap(), None).unwrap();
    let samples = split
        .encode_train(&session.encoder, cfg.prompt.field_order, ObjectOrdering::Sorted, 0)
        .unwrap();
    let model = session.load_model(&session.model_src).unwrap();
    let objective = Stage1Objective::new(&cfg.objective, coord_ids(&session), Device::Cpu);
    Parts { session, split, samples, model, objective }
}

impl Parts {
    fn micro(&self, ids: &[usize]) -> Stage1Batch {
        let vision = self.session.vision(&self.model);
        let list: Vec<_> = ids
            .iter()
            .map(|&i| (i as u64, &self.samples[i], self.split.items[i].pixels.as_slice()))
            .collect();
        Stage1Batch::build(&list, &self.objective, &vision, Device::Cpu).unwrap()
    }

    /// Loss and gradients of a window made of `micro` micro-batches.
    fn loss_and_grads(&self, micro: &[Stage1Batch]) -> (f64, Vec<Tensor>) {
        let window: WindowCounts = micro.iter().map(Stage1Batch::counts).sum();
        backward_window(&self.model, micro, |mb, g| {
            mb.loss(&self.model, &self.objective, &window, g)
        })
    }
}

/// Zero every gradient, run `loss` for each micro-batch and backward it; the summed value and
/// each parameter's gradient (zeros where none arrived).
pub(super) fn backward_window<M>(
    model: &Qwen3VL,
    micro: &[M],
    loss: impl Fn(&M, &mut Grads<'_>) -> Result<MicroLoss>,
) -> (f64, Vec<Tensor>) {
    let params = model.named_parameters().unwrap();
    let tensors: Vec<Tensor> = params.iter().map(|(_, t, _)| t.shallow_clone()).collect();
    let trained: Vec<Tensor> =
        tensors.iter().filter(|t| t.requires_grad()).map(Tensor::shallow_clone).collect();
    for t in &tensors {
        let mut t = t.shallow_clone();
        t.zero_grad();
    }
    let mut total = 0.0;
    let mut early = Vec::new();
    for mb in micro {
        let mut g = Grads::new(&trained);
        let l = loss(mb, &mut g).unwrap();
        total += scalar(&l.total).unwrap();
        if l.total.requires_grad() {
            l.total.backward();
        }
        early.push(g.into_vec());
    }
    let mut k = 0;
    let grads = tensors
        .iter()
        .map(|t| {
            let g = t.grad();
            let mut g = if g.defined() { g.copy() } else { t.zeros_like() };
            if t.requires_grad() {
                for e in early.iter().filter_map(|e| e[k].as_ref()) {
                    g += e;
                }
                k += 1;
            }
            g
        })
        .collect();
    (total, grads)
}

pub(super) fn max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs().max().double_value(&[])).fold(0.0, f64::max)
}

#[test]
fn a_packed_micro_batch_equals_the_same_samples_unpacked() {
    let f = fixture("");
    let p = parts(&f);
    let packed = p.micro(&[0, 1, 2]);
    let single = [p.micro(&[0]), p.micro(&[1]), p.micro(&[2])];
    let sum: WindowCounts = single.iter().map(Stage1Batch::counts).sum();
    assert_eq!(WindowCounts { micro_batches: 3, ..packed.counts() }, sum);
    let (la, ga) = p.loss_and_grads(std::slice::from_ref(&packed));
    let (lb, gb) = p.loss_and_grads(&single);
    assert!((la - lb).abs() <= 1e-5, "{la} vs {lb}");
    let d = max_diff(&ga, &gb);
    assert!(d <= 1e-5, "gradients differ by {d}");
    assert!(ga.iter().any(|g| g.abs().sum(Kind::Float).double_value(&[]) > 0.0));
}

#[test]
fn logits_in_pieces_give_the_losses_terms_and_gradients_of_all_rows_at_once() {
    // train.logit_chunk_rows: every piece is backwarded on its own and its hidden-state
    // gradient pushed through the decoder afterwards; the result is the plain step's up to
    // f32 summation order.
    let f = fixture("");
    let p = parts(&f);
    let window_of = |m: &[Stage1Batch]| m.iter().map(Stage1Batch::counts).sum::<WindowCounts>();
    let micro = |rows| vec![p.micro(&[0, 1, 2]).chunked(rows), p.micro(&[3, 4]).chunked(rows)];
    let plain = micro(0);
    let (la, ga) = p.loss_and_grads(&plain);
    for rows in [1, 5, 64] {
        let pieces = micro(rows);
        assert_eq!(window_of(&pieces), window_of(&plain));
        let (lb, gb) = p.loss_and_grads(&pieces);
        assert!((la - lb).abs() <= 1e-6 * la.abs(), "rows {rows}: loss {la} vs {lb}");
        let scale = ga.iter().map(|g| g.abs().max().double_value(&[])).fold(0.0, f64::max);
        let d = max_diff(&ga, &gb);
        assert!(d <= 1e-6 * scale, "rows {rows}: gradients differ by {d} (largest {scale})");
        let window = window_of(&plain);
        for (a, b) in plain.iter().zip(&pieces) {
            let params: Vec<Tensor> = Vec::new();
            let ta = a.loss(&p.model, &p.objective, &window, &mut Grads::new(&params)).unwrap();
            let tb = b.loss(&p.model, &p.objective, &window, &mut Grads::new(&params));
            // Without parameters to receive them the pieces still backward into their leaves.
            let tb = tb.unwrap();
            for ((name, x), (_, y)) in
                ta.terms.metrics().unwrap().into_iter().zip(tb.terms.metrics().unwrap())
            {
                assert!(
                    (x - y).abs() <= 1e-6 * x.abs().max(1e-3),
                    "rows {rows}: {name} {x} vs {y}"
                );
            }
        }
    }
    assert!(ga.iter().any(|g| g.abs().sum(Kind::Float).double_value(&[]) > 0.0));
}

#[test]
fn recomputed_layers_give_the_losses_and_gradients_of_the_plain_step_tower_trained_or_frozen() {
    // train.gradient_checkpointing, alone and with logit pieces: the forward pass keeps layer
    // and block inputs only and the backward pass recomputes them one at a time.
    let f = fixture("");
    let p = parts(&f);
    let micro = |rows, recompute| {
        [vec![0, 1, 2], vec![3, 4]]
            .iter()
            .map(|ids| p.micro(ids).chunked(rows).recomputed(recompute))
            .collect::<Vec<_>>()
    };
    let tower: Vec<Tensor> = p
        .model
        .named_parameters()
        .unwrap()
        .into_iter()
        .filter(|(_, _, g)| *g == coordexp_model::model::ParamGroup::Vision)
        .map(|(_, t, _)| t)
        .collect();
    assert!(!tower.is_empty());
    for frozen in [false, true] {
        for t in &tower {
            let _ = t.shallow_clone().set_requires_grad(!frozen);
        }
        let (la, ga) = p.loss_and_grads(&micro(0, false));
        let scale = ga.iter().map(|g| g.abs().max().double_value(&[])).fold(0.0, f64::max);
        let tower_moves =
            ga.iter().zip(p.model.named_parameters().unwrap()).any(|(g, (_, _, grp))| {
                grp == coordexp_model::model::ParamGroup::Vision
                    && g.abs().sum(Kind::Float).double_value(&[]) > 0.0
            });
        assert_eq!(tower_moves, !frozen, "the tower gets gradients only when it is trained");
        for rows in [0, 4] {
            let (lb, gb) = p.loss_and_grads(&micro(rows, true));
            assert!(
                (la - lb).abs() <= 1e-6 * la.abs(),
                "frozen {frozen} rows {rows}: {la} vs {lb}"
            );
            let d = max_diff(&ga, &gb);
            assert!(
                d <= 1e-6 * scale,
                "frozen {frozen} rows {rows}: gradients differ by {d} ({scale})"
            );
        }
    }
    for t in &tower {
        let _ = t.shallow_clone().set_requires_grad(true);
    }
}

#[test]
fn counting_a_micro_batch_without_building_it_gives_the_built_counts() {
    // What a rank counts for the micro-batches another rank computes.
    let f = fixture("");
    let p = parts(&f);
    for ids in [vec![0], vec![1, 2, 3], vec![4, 5, 6, 7, 8]] {
        let list: Vec<_> = ids
            .iter()
            .map(|&i| (i as u64, &p.samples[i], p.split.items[i].pixels.as_slice()))
            .collect();
        let counted = Stage1Batch::count(&list);
        assert_eq!(counted, p.micro(&ids).counts(), "samples {ids:?}");
        assert!(counted.supervised() > 0);
    }
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

pub(super) const NO_EVAL: &str = "data:\n  val: null\ntrain:\n  max_steps: 6\n  log_every: 1\n  eval_every: 0\n  save_every: 3\n  keep_last: 0\n";

pub(super) fn quiet() -> TrainOptions {
    TrainOptions { progress: false, ..TrainOptions::default() }
}

pub(super) fn resume(dir: &Path) -> TrainOptions {
    TrainOptions { resume: Some(dir.to_path_buf()), ..quiet() }
}

/// Every file under `dir` with its bytes.
pub(super) fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

pub(super) fn copy_tree(src: &Path, dst: &Path) {
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

/// The `step` of every record of `metrics.jsonl` with `mode`.
pub(super) fn logged_steps(run: &Path, mode: &str) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["mode"] == mode)
        .map(|v| v["step"].as_u64().unwrap())
        .collect()
}

/// A copy of `run` as it was after step `step` (later checkpoints removed).
pub(super) fn copy_at(run: &Path, to: &Path, step: u64) -> PathBuf {
    copy_tree(run, to);
    for (s, p) in Checkpoints::new(&to.join("checkpoints")).list().unwrap() {
        if s > step {
            std::fs::remove_dir_all(p).unwrap();
        }
    }
    to.to_path_buf()
}

use crate::checkpoint::Checkpoints;

#[test]
fn resuming_at_step_n_repeats_the_losses_of_the_uninterrupted_run() {
    let f = fixture(NO_EVAL);
    let full = train(&f.loaded(), quiet()).unwrap();
    assert_eq!(full.steps, 6);
    assert_eq!(full.step_losses.len(), 6);
    let copy = copy_at(&full.run_dir, &f.dir.path().join("copy"), 3);
    let resumed = train(&f.loaded(), resume(&copy)).unwrap();
    assert_eq!(resumed.run_dir, copy);
    assert_eq!(resumed.step_losses, full.step_losses[3..].to_vec());
    // metrics.jsonl reads as one run: steps 1..6 once each.
    assert_eq!(logged_steps(&copy, "train"), vec![1, 2, 3, 4, 5, 6]);
    // TensorBoard too: the interrupted run's steps 4–6 were dropped from its event file.
    let mut steps = Vec::new();
    for file in event_files(&copy).unwrap() {
        steps.extend(crate::metrics::scalar_steps(&std::fs::read(file).unwrap()));
    }
    steps.sort();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6], "no step twice in TensorBoard");
    let manifest = crate::manifest::RunManifest::read(&copy.join("manifest.json")).unwrap();
    assert_eq!(manifest.resumes.len(), 1);
    assert_eq!(manifest.resumes[0].from_step, 3);
}

#[test]
fn resuming_a_finished_run_does_nothing_and_touches_no_file() {
    let f = fixture(NO_EVAL);
    let full = train(&f.loaded(), quiet()).unwrap();
    let before = snapshot(&full.run_dir);
    let again = train(&f.loaded(), resume(&full.run_dir)).unwrap();
    assert!(again.nothing_to_do);
    assert_eq!((again.steps, again.total_steps), (6, 6));
    assert!(again.step_losses.is_empty());
    assert_eq!(snapshot(&full.run_dir), before, "a finished run is left exactly as it was");
}

#[test]
fn resuming_an_earlier_checkpoint_while_later_ones_exist_is_refused_before_any_change() {
    let f = fixture(NO_EVAL);
    let full = train(&f.loaded(), quiet()).unwrap();
    let before = snapshot(&full.run_dir);
    let err = train(&f.loaded(), resume(&full.run_dir.join("checkpoints/step-3"))).err().unwrap();
    assert_eq!(err.exit_code(), 2);
    assert!(err.what().contains("later checkpoints"), "{}", err.what());
    assert!(err.what().contains("step-6"), "{}", err.what());
    assert!(err.hint_text().unwrap().contains("--resume"));
    assert_eq!(snapshot(&full.run_dir), before, "nothing was touched");
}

#[test]
fn changed_data_or_config_refuse_a_resume_unless_allowed_and_the_change_is_recorded() {
    let f = fixture(NO_EVAL);
    let full = train(&f.loaded(), quiet()).unwrap();
    let copy = copy_at(&full.run_dir, &f.dir.path().join("copy"), 3);
    let before = snapshot(&copy);

    // A changed training file (one record dropped).
    let train_path = f.loaded().config.data.train.clone().unwrap();
    let original = std::fs::read_to_string(&train_path).unwrap();
    let fewer: String = original.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&train_path, &fewer).unwrap();
    let err = train(&f.loaded(), resume(&copy)).err().unwrap();
    assert_eq!(err.exit_code(), 2);
    let text = err.report();
    assert!(text.contains("the train data"), "{text}");
    assert!(text.contains("--allow-changes"), "{text}");
    assert_eq!(snapshot(&copy), before, "a refused resume touches nothing");
    std::fs::write(&train_path, &original).unwrap();

    // A changed learning rate.
    f.append_config("optim:\n  lr: {language: 1.0e-3}\n");
    let err = train(&f.loaded(), resume(&copy)).err().unwrap();
    assert!(err.report().contains("optim.lr.language"), "{}", err.report());
    assert_eq!(snapshot(&copy), before);
    let allowed =
        train(&f.loaded(), TrainOptions { allow_changes: true, ..resume(&copy) }).unwrap();
    assert_eq!(allowed.steps, 6);
    let manifest = crate::manifest::RunManifest::read(&copy.join("manifest.json")).unwrap();
    let changes = &manifest.resumes.last().unwrap().changes;
    assert!(changes.iter().any(|c| c.starts_with("optim.lr.language")), "{changes:?}");
}

#[test]
fn a_resumed_run_continues_the_re_fitted_schedule_of_its_checkpoint() {
    // A deadline re-fits 100,000 steps down to what fits (at step 50); the checkpoint at step
    // 60 keeps the re-fitted total and the planned warmup, so resuming it repeats the losses.
    let f = fixture(
        "data:\n  val: null\ntrain:\n  max_steps: 100000\n  log_every: 1000\n  eval_every: 0\n  save_every: 60\n  keep_last: 0\noptim:\n  warmup: 0.0001\n",
    );
    let t0 = Instant::now();
    let clock = Arc::new(TickClock::new(t0, Duration::from_millis(50)));
    let deadline = t0 + Duration::from_secs(10);
    let run =
        train(&f.loaded(), TrainOptions { deadline: Some(deadline), clock, ..quiet() }).unwrap();
    let (planned, total) = run.refitted.expect("100,000 steps cannot fit in 10 s of 50 ms ticks");
    assert_eq!((planned, run.total_steps), (100_000, total));
    assert!(total > 60, "{total}");
    assert_eq!(run.warmup_steps, 10, "ceil(0.0001 × 100,000): the planned warmup is kept");
    let (_, _, state) = find_resume(&run.run_dir).unwrap();
    assert_eq!((state.step, state.total_steps, state.warmup_steps), (run.steps, total, 10));
    let copy = copy_at(&run.run_dir, &f.dir.path().join("copy"), 60);
    let resumed = train(&f.loaded(), resume(&copy)).unwrap();
    assert_eq!(resumed.total_steps, total, "the re-fitted schedule, not the config's 100,000");
    let after: Vec<(u64, f64)> = run.step_losses.iter().copied().filter(|(s, _)| *s > 60).collect();
    assert_eq!(resumed.step_losses[..after.len()], after[..], "the uninterrupted run's losses");
}

#[test]
fn a_deadline_refits_the_schedule_to_the_steps_that_fit_by_an_injected_clock() {
    let f = fixture(
        "data:\n  val: null\ntrain:\n  max_steps: 100000\n  log_every: 1000\n  eval_every: 0\n  save_every: 0\n  keep_last: 0\n",
    );
    // Every clock reading advances 10 ms: the projection sees the same pace on any machine.
    let t0 = Instant::now();
    let run = |_: ()| {
        let _ = std::fs::remove_dir_all(f.run_dir());
        let clock = Arc::new(TickClock::new(t0, Duration::from_millis(10)));
        let deadline = Some(t0 + Duration::from_secs(10));
        train(&f.loaded(), TrainOptions { deadline, clock, ..quiet() }).unwrap()
    };
    let a = run(());
    let (planned, total) = a.refitted.expect("100,000 steps cannot fit in 10 s");
    assert_eq!(planned, 100_000);
    assert!(total < planned, "{total}");
    assert!(a.steps <= total && a.steps >= 50, "{} of {total}", a.steps);
    assert!(a.step_losses.iter().all(|(_, l)| l.is_finite()));
    let b = run(());
    assert_eq!((a.steps, a.refitted), (b.steps, b.refitted), "the same clock, the same re-fit");
}

#[test]
fn a_failed_checkpoint_write_leaves_no_checkpoint_and_resume_removes_debris() {
    let f = fixture(NO_EVAL);
    let run = train(&f.loaded(), quiet()).unwrap();
    let loaded = f.loaded();
    let cfg = &loaded.config;
    let p = parts(&f);
    let optimizer = build_optimizer(cfg, &p.model, 6).unwrap();
    let rd = RunDir { root: run.run_dir.clone() };
    let state = TrainerState { step: 7, ..TrainerState::start(6) };
    // The model files to copy are gone half-way through the write: the write fails.
    let err = rd
        .save_checkpoint(&p.model, &optimizer, &f.dir.path().join("gone"), "", &state, 0)
        .unwrap_err();
    assert!(err.what().contains("gone") || err.location().is_some_and(|l| l.contains("gone")));
    assert!(!rd.checkpoints().step_dir(7).exists());
    // A process killed mid-write leaves a hidden temporary directory: ignored by the lookup,
    // removed by a resume once its checks pass.
    let copy = copy_at(&run.run_dir, &f.dir.path().join("copy"), 3);
    let debris = copy.join("checkpoints/.tmp-step-9.12345");
    std::fs::create_dir_all(&debris).unwrap();
    std::fs::write(debris.join("model.safetensors"), b"partial").unwrap();
    let (_, ckpt, state) = find_resume(&copy).unwrap();
    assert_eq!((ckpt.file_name().unwrap().to_str().unwrap(), state.step), ("step-3", 3));
    assert!(debris.exists(), "finding the checkpoint reads only");
    train(&f.loaded(), resume(&copy)).unwrap();
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
fn two_workers_give_the_losses_of_one_bit_for_bit_and_resume_with_them() {
    let f = fixture(&format!("{NO_EVAL}  accumulation: 3\n"));
    let two = CpuPlan { workers: 2, threads: 1 };
    let run = |workers| {
        let plan = CpuPlan { workers, threads: 1 };
        let _ = std::fs::remove_dir_all(f.run_dir());
        train(&f.loaded(), TrainOptions { cpu: Some(plan), ..quiet() }).unwrap()
    };
    let one = run(1).step_losses;
    let full = run(2);
    assert_eq!(one.len(), 6);
    assert_eq!(one, full.step_losses);
    assert!(one.iter().all(|(_, l)| l.is_finite()));
    let copy = copy_at(&full.run_dir, &f.dir.path().join("copy"), 3);
    let resumed = train(&f.loaded(), TrainOptions { cpu: Some(two), ..resume(&copy) }).unwrap();
    assert_eq!(resumed.step_losses, one[3..].to_vec());
}

#[test]
fn a_resume_across_an_evaluation_repeats_the_evaluation_and_the_losses() {
    let f = fixture(
        "train:\n  max_steps: 6\n  log_every: 1\n  eval_every: 4\n  save_every: 3\n  keep_last: 0\neval:\n  limit: 2\n  max_new_tokens: 8\n",
    );
    let full = train(&f.loaded(), quiet()).unwrap();
    let names: Vec<&str> = full.evals.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["step-0", "step-4", "final"]);
    let copy = copy_at(&full.run_dir, &f.dir.path().join("copy"), 3);
    let resumed = train(&f.loaded(), resume(&copy)).unwrap();
    assert_eq!(resumed.step_losses, full.step_losses[3..].to_vec());
    let again: Vec<(&str, f64)> =
        resumed.evals.iter().map(|e| (e.name.as_str(), e.metrics.ap50)).collect();
    let first: Vec<(&str, f64)> =
        full.evals[1..].iter().map(|e| (e.name.as_str(), e.metrics.ap50)).collect();
    assert_eq!(again, first, "the resumed run evaluates step 4 and the end identically");
    assert_eq!(logged_steps(&copy, "eval"), vec![0, 4, 6]);
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
    let optimizer = build_optimizer(cfg, &p.model, 10).unwrap();
    let coord = coord_ids(&p.session);
    let mut w = Workers::new(cfg, &p.model, &optimizer, CpuPlan { workers: 2, threads: 1 }, |d| {
        Ok(Stage1Objective::new(&cfg.objective, coord, d))
    })
    .unwrap();
    let window: WindowCounts = micro().iter().map(Stage1Batch::counts).sum();
    let mut outs = w.run(micro(), &window, &p.model, &p.objective).unwrap();
    let total: f64 = outs.iter().map(|o| o.value).sum();
    assert_eq!(total, loss);
    let grads = sum_in_order(&mut outs);
    let names: Vec<String> =
        p.model.named_parameters().unwrap().into_iter().map(|(n, _, _)| n).collect();
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
fn the_coordinate_diagnostics_reach_the_metrics_log() {
    let f = fixture(NO_EVAL);
    let run = train(&f.loaded(), quiet()).unwrap();
    let text = std::fs::read_to_string(run.run_dir.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for key in [
        "coord_diag/acc_top5",
        "coord_diag/p_gt_mean",
        "coord_diag/margin_mean",
        "coord_diag/expected_bin_mae",
        "coord_diag/expected_bin_abs_err_p90",
        "coord_diag/w1_to_delta",
    ] {
        let v = first["metrics"][key].as_f64();
        assert!(v.is_some_and(f64::is_finite), "{key}: {:?}", first["metrics"][key]);
    }
}

#[test]
fn lora_and_dora_runs_train_only_adapters_agree_across_workers_and_resume_bit_identically() {
    for mode in ["lora", "dora"] {
        let f = fixture(&format!(
            "{NO_EVAL}  accumulation: 2\nmodel:\n  tuning:\n    mode: {mode}\n    adapter: {{r: 4, alpha: 8.0}}\n"
        ));
        let run = |workers| {
            let _ = std::fs::remove_dir_all(f.run_dir());
            let cpu = Some(CpuPlan { workers, threads: 1 });
            train(&f.loaded(), TrainOptions { cpu, ..quiet() }).unwrap()
        };
        let one = run(1).step_losses;
        let full = run(2);
        assert_eq!(one, full.step_losses, "{mode}: 1 and 2 workers");
        assert!(one.iter().all(|(_, l)| l.is_finite()));
        assert!(one.last().unwrap().1 < one[0].1, "{mode}: the adapters learn ({one:?})");

        // The checkpoint is the adapter in PEFT's layout, naming its base, without base weights.
        let ckpt = full.run_dir.join("checkpoints/step-6");
        for file in ["adapter_config.json", "adapter_model.safetensors", "config.json"] {
            assert!(ckpt.join(file).is_file(), "{mode}: no {file}");
        }
        assert!(!ckpt.join("model.safetensors").exists(), "{mode}: base weights were saved");
        let loaded = f.loaded();
        let session = Session::open(&loaded.config, None, Some(1)).unwrap();
        let base = session.load_model(&session.model_src).unwrap();
        let merged = session.load_model(&ckpt).unwrap();
        let changed = base
            .named_parameters()
            .unwrap()
            .iter()
            .zip(merged.named_parameters().unwrap())
            .filter(|((_, a, _), (_, b, _))| {
                max_diff(&[a.shallow_clone()], &[b.shallow_clone()]) > 0.0
            })
            .count();
        assert!(changed > 0, "{mode}: the adapter-only checkpoint loads merged");

        let copy = copy_at(&full.run_dir, &f.dir.path().join(format!("copy-{mode}")), 3);
        let resumed = train(&f.loaded(), resume(&copy)).unwrap();
        assert_eq!(resumed.step_losses, one[3..].to_vec(), "{mode}: resume");
    }
}

#[test]
fn modules_to_save_train_beside_lora_save_under_peft_names_and_resume_bit_identically() {
    let f = fixture(&format!(
        "{NO_EVAL}model:\n  tuning:\n    mode: lora\n    adapter: {{r: 4, alpha: 8.0, modules_to_save: [norm]}}\n"
    ));
    let full = train(&f.loaded(), quiet()).unwrap();
    let ckpt = full.run_dir.join("checkpoints/step-6");
    let saved = Tensor::read_safetensors(ckpt.join("adapter_model.safetensors")).unwrap();
    let key = "base_model.model.model.language_model.norm.weight";
    let trained = &saved.iter().find(|(n, _)| n == key).unwrap_or_else(|| panic!("no {key}")).1;
    let loaded = f.loaded();
    let session = Session::open(&loaded.config, None, Some(1)).unwrap();
    let base = session.load_model(&session.model_src).unwrap();
    let before = base.var_store().variables()["model.language_model.norm.weight"].shallow_clone();
    assert!(max_diff(&[before], &[trained.shallow_clone()]) > 0.0, "the saved module trained");
    let config = std::fs::read_to_string(ckpt.join("adapter_config.json")).unwrap();
    assert!(config.contains("\"modules_to_save\": [\n    \"norm\"\n  ]"), "{config}");

    let copy = copy_at(&full.run_dir, &f.dir.path().join("copy"), 3);
    let resumed = train(&f.loaded(), resume(&copy)).unwrap();
    assert_eq!(resumed.step_losses, full.step_losses[3..].to_vec());

    // Starting from that adapter with other modules_to_save would leave the norm frozen.
    let other = fixture(&format!(
        "{NO_EVAL}model:\n  tuning:\n    mode: lora\n    adapter: {{r: 4, alpha: 8.0, init_from: {ckpt:?}}}\n"
    ));
    let Err(e) = train(&other.loaded(), quiet()) else { panic!("other modules_to_save accepted") };
    assert!(e.to_string().contains("modules_to_save"), "{e}");

    // Coordinate offsets freeze the embedding rows that modules_to_save would train.
    let both = fixture(&format!(
        "{NO_EVAL}model:\n  coord_offsets: {{enabled: true}}\n  tuning:\n    mode: lora\n    adapter: {{modules_to_save: [embed_tokens]}}\n"
    ));
    let Err(e) = train(&both.loaded(), quiet()) else {
        panic!("coordinate offsets and a saved embedding were accepted")
    };
    assert!(e.to_string().contains("embed_tokens"), "{e}");
}

#[test]
fn coordinate_offsets_train_with_frozen_rows_resume_exactly_and_fold_on_export() {
    let f =
        fixture(&format!("{NO_EVAL}model:\n  coord_offsets: {{enabled: true, tie_head: true}}\n"));
    let full = train(&f.loaded(), quiet()).unwrap();
    assert!(full.step_losses.iter().all(|(_, l)| l.is_finite()));
    let ckpt = full.run_dir.join("checkpoints/step-6");
    assert!(ckpt.join("coord_offset.safetensors").is_file());

    let loaded = f.loaded();
    let session = Session::open(&loaded.config, None, Some(1)).unwrap();
    let base = session.load_model(&session.model_src).unwrap();
    let trained = session.load_model(&ckpt).unwrap();
    let offsets = trained.coord_offset().expect("the checkpoint's offsets are attached");
    assert!(offsets.embed.abs().max().double_value(&[]) > 0.0, "the offsets trained");
    let embed = "model.language_model.embed_tokens.weight";
    let rows = |m: &Qwen3VL| m.var_store().variables()[embed].shallow_clone();
    assert_eq!(rows(&base), rows(&trained), "the embedding rows stay frozen");

    // Exported, the offsets are folded into the rows: same logits, no offsets file.
    let export = f.dir.path().join("export");
    trained.save(&export, u64::MAX).unwrap();
    assert!(!export.join("coord_offset.safetensors").exists());
    let folded = session.load_model(&export).unwrap();
    assert!(folded.coord_offset().is_none());
    let ids = Tensor::from_slice(&[5i64, 20, 30]).view([1, 3]);
    let first = coord_ids(&session).first();
    let ids = ids + first;
    let logits = |m: &Qwen3VL| tch::no_grad(|| m.logits(&m.embed(&ids)));
    assert!(max_diff(&[logits(&trained)], &[logits(&folded)]) < 1e-5);
    assert!(max_diff(&[logits(&trained)], &[logits(&base)]) > 1e-4);

    let copy = copy_at(&full.run_dir, &f.dir.path().join("copy"), 3);
    let resumed = train(&f.loaded(), resume(&copy)).unwrap();
    assert_eq!(resumed.step_losses, full.step_losses[3..].to_vec());
}
