use super::*;
use coordexp_core::config::schema::{GroupLr, Schedule};

fn cfg() -> Optim {
    Optim {
        weight_decay: 0.1,
        warmup: 0.25,
        schedule: Schedule::Cosine,
        grad_clip: 0.5,
        ..Optim::default()
    }
}

fn params(seed: i64) -> Vec<(String, Tensor)> {
    tch::manual_seed(seed);
    let p =
        |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu)).set_requires_grad(true);
    vec![
        ("model.visual.blocks.0.attn.qkv.weight".into(), p(&[3, 4])),
        ("model.visual.merger.linear_fc1.weight".into(), p(&[4, 2])),
        ("model.language_model.layers.0.mlp.up_proj.weight".into(), p(&[2, 5])),
        ("model.language_model.norm.weight".into(), p(&[5])),
    ]
}

/// A deterministic loss whose gradient changes from step to step.
fn backward(ps: &[(String, Tensor)], step: u64) {
    let loss = ps
        .iter()
        .enumerate()
        .map(|(i, (_, t))| {
            ((t * (i as f64 + 1.0) - step as f64 * 0.1).pow_tensor_scalar(2.0)).sum(Kind::Float)
        })
        .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
    loss.backward();
}

fn values(ps: &[(String, Tensor)]) -> Vec<Vec<f32>> {
    ps.iter().map(|(_, t)| Vec::<f32>::try_from(t.detach().flatten(0, -1)).unwrap()).collect()
}

#[test]
fn groups_split_modules_and_decay_and_exclude_frozen_and_tied_parameters() {
    let mut ps = params(0);
    let embed = Tensor::ones([6, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    ps.push(("model.language_model.embed_tokens.weight".into(), embed.shallow_clone()));
    ps.push(("lm_head.weight".into(), embed));
    let opt = AdamW::new(ps, &cfg(), &[Module::Vision], 8).unwrap();
    let s = opt.summary();
    let keys: Vec<(Module, bool, usize)> =
        s.iter().map(|g| (g.module, g.decay, g.tensors)).collect();
    assert_eq!(
        keys,
        vec![(Module::Merger, true, 1), (Module::Language, true, 2), (Module::Language, false, 1)]
    );
    assert_eq!(s[0].lr, Optim::default().lr.merger);
    assert_eq!((s[1].weight_decay, s[2].weight_decay), (0.1, 0.0));
    assert_eq!(opt.excluded().frozen, vec!["model.visual.blocks.0.attn.qkv.weight".to_string()]);
    assert_eq!(
        opt.excluded().shared,
        vec![(
            "lm_head.weight".to_string(),
            "model.language_model.embed_tokens.weight".to_string()
        )]
    );
}

#[test]
fn resuming_from_saved_state_continues_the_identical_trajectory() {
    let straight = params(1);
    let mut a = AdamW::new(straight.clone_shallow(), &cfg(), &[], 8).unwrap();
    for step in 0..6 {
        a.zero_grad();
        backward(&straight, step);
        a.step().unwrap();
    }

    let resumed = params(1);
    let mut b = AdamW::new(resumed.clone_shallow(), &cfg(), &[], 8).unwrap();
    for step in 0..3 {
        b.zero_grad();
        backward(&resumed, step);
        b.step().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    b.save(dir.path()).unwrap();
    // A fresh optimizer over the same (restored) weights.
    let mut c = AdamW::new(resumed.clone_shallow(), &cfg(), &[], 8).unwrap();
    c.load(dir.path()).unwrap();
    assert_eq!(c.steps(), 3);
    for step in 3..6 {
        c.zero_grad();
        backward(&resumed, step);
        c.step().unwrap();
    }
    assert_eq!(values(&straight), values(&resumed), "bit-identical on CPU");
}

#[test]
fn loading_state_of_another_model_is_an_error_naming_the_parameter() {
    let ps = params(2);
    let opt = AdamW::new(ps.clone_shallow(), &cfg(), &[], 8).unwrap();
    let dir = tempfile::tempdir().unwrap();
    opt.save(dir.path()).unwrap();
    let mut other = AdamW::new(ps.into_iter().take(3), &cfg(), &[], 8).unwrap();
    let e = other.load(dir.path()).unwrap_err();
    assert!(e.what().contains("language.no_decay"), "{}", e.report());
    assert!(e.hint_text().unwrap().contains("same model"));
}

#[test]
fn a_non_finite_gradient_stops_the_step_and_leaves_the_weights() {
    let ps = params(3);
    let mut opt = AdamW::new(ps.clone_shallow(), &cfg(), &[], 8).unwrap();
    let before = values(&ps);
    (&ps[0].1 * f64::NAN).sum(Kind::Float).backward();
    let e = opt.step().unwrap_err();
    assert!(e.what().contains("gradient norm is NaN at optimizer step 1"), "{}", e.report());
    assert_eq!(values(&ps), before);
    assert_eq!(opt.steps(), 0);
}

#[test]
fn parameters_without_gradient_are_counted_and_left_alone() {
    let ps = params(4);
    let mut opt = AdamW::new(ps.clone_shallow(), &cfg(), &[], 8).unwrap();
    let before = values(&ps);
    ps[2].1.sum(Kind::Float).backward();
    let s = opt.step().unwrap();
    assert_eq!(s.without_grad, 3);
    let after = values(&ps);
    assert_eq!(after[0], before[0]);
    assert_ne!(after[2], before[2]);
}

trait CloneShallow {
    fn clone_shallow(&self) -> Vec<(String, Tensor)>;
}

impl CloneShallow for Vec<(String, Tensor)> {
    fn clone_shallow(&self) -> Vec<(String, Tensor)> {
        self.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect()
    }
}

#[test]
fn bf16_parameters_train_through_f32_masters_that_a_resume_restores() {
    // Updates of ~1e-4 on weights near 1: bf16 alone (8 bits of mantissa) cannot absorb them,
    // the f32 master accumulates them and the parameter follows once they add up.
    let make = || {
        let t = Tensor::ones([4], (Kind::BFloat16, Device::Cpu)).set_requires_grad(true);
        vec![("model.language_model.layers.0.mlp.up_proj.weight".to_string(), t)]
    };
    let lr = GroupLr { language: 1e-4, vision: 1e-4, merger: 1e-4, coord_rows: 1e-4 };
    let cfg = Optim { lr, weight_decay: 0.0, warmup: 0.0, grad_clip: 0.0, ..cfg() };
    let run = |ps: &[(String, Tensor)], opt: &mut AdamW, steps: std::ops::Range<u64>| {
        for s in steps {
            opt.zero_grad();
            let loss = (&ps[0].1.to_kind(Kind::Float) * 1.0).sum(Kind::Float);
            loss.backward();
            assert_eq!(opt.step().unwrap().step, s + 1);
        }
    };
    let ps = make();
    let mut opt = AdamW::new(ps.clone_shallow(), &cfg, &[], 200).unwrap();
    run(&ps, &mut opt, 0..100);
    let v = Vec::<f32>::try_from(ps[0].1.to_kind(Kind::Float)).unwrap();
    assert!(v.iter().all(|&x| x < 0.995), "the bf16 weights moved through the master: {v:?}");
    assert_eq!(ps[0].1.kind(), Kind::BFloat16);

    // Save at 100, resume, and continue: the same trajectory as without the interruption.
    let dir = tempfile::tempdir().unwrap();
    opt.save(dir.path()).unwrap();
    run(&ps, &mut opt, 100..150);
    let straight = Vec::<f32>::try_from(ps[0].1.to_kind(Kind::Float)).unwrap();
    let again = make();
    let mut resumed = AdamW::new(again.clone_shallow(), &cfg, &[], 200).unwrap();
    resumed.load(dir.path()).unwrap();
    run(&again, &mut resumed, 100..150);
    assert_eq!(Vec::<f32>::try_from(again[0].1.to_kind(Kind::Float)).unwrap(), straight);
}
