use super::*;
use TokenType::*;

const FIRST: u32 = 50;
const VOCAB: i64 = 1100;

/// Eight supervised positions: text of every type and coordinate slots, including edge bins.
fn batch() -> (Vec<i64>, Vec<TokenType>) {
    let f = i64::from(FIRST);
    let targets = vec![3, f + 500, 7, f, f + 999, 1060, f + 12, 9];
    let types = vec![Struct, Coord, Desc, Coord, Coord, Desc, Coord, Closure];
    (targets, types)
}

/// Random logits from the test's own stream: libtorch's global generator is shared by the tests
/// running in parallel, so two draws after one `manual_seed` may differ.
fn logits(seed: i64) -> Tensor {
    let mut rng = coordexp_core::seed::SplitMix64::new(seed as u64);
    // Sums of uniforms: roughly normal, scale ≈ 3.
    let v: Vec<f32> = (0..8 * VOCAB)
        .map(|_| ((0..4).map(|_| rng.unit()).sum::<f64>() - 2.0) as f32 * 5.2)
        .collect();
    Tensor::from_slice(&v).view([8, VOCAB]).set_requires_grad(true)
}

fn objective(edit: impl FnOnce(&mut Objective)) -> Stage1Objective {
    let mut cfg = Objective::default();
    cfg.coord.temperature = 0.9;
    cfg.coord.hard_ce.weight = 0.5;
    edit(&mut cfg);
    Stage1Objective::new(&cfg, CoordIds::new(FIRST), Device::Cpu)
}

fn loss_of(
    obj: &Stage1Objective,
    z: &Tensor,
    targets: &[i64],
    types: &[TokenType],
    w: &WindowCounts,
) -> Stage1Loss {
    obj.loss_of_rows(&Supervised { logits: z, targets, types }, w).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn two_micro_batches_of_four_equal_one_of_eight_in_loss_and_gradients() {
    let (targets, types) = batch();
    let one = WindowCounts::of(&types);
    let two = WindowCounts::of(&types[..4]) + WindowCounts::of(&types[4..]);
    for normalize in [LossNorm::PerGroup, LossNorm::PerToken] {
        let obj = objective(|c| c.normalize = normalize);
        let whole = logits(1);
        let full = loss_of(&obj, &whole, &targets, &types, &one);
        full.total.backward();

        let halves = logits(1);
        let a = halves.narrow(0, 0, 4);
        let b = halves.narrow(0, 4, 4);
        let la = loss_of(&obj, &a, &targets[..4], &types[..4], &two);
        let mut lb = loss_of(&obj, &b, &targets[4..], &types[4..], &two);
        let summed = &la.total + &lb.total;
        summed.backward();

        let (x, y) = (full.total.double_value(&[]), summed.double_value(&[]));
        assert!((x - y).abs() < 1e-5 * x.abs().max(1.0), "{normalize:?}: {x} vs {y}");
        assert!(max_abs_diff(&whole.grad(), &halves.grad()) < 1e-7, "{normalize:?}");
        lb.terms.accumulate(&la.terms).unwrap();
        let (m_full, m_acc) = (full.terms.metrics().unwrap(), lb.terms.metrics().unwrap());
        for ((name, u), (_, v)) in m_full.iter().zip(&m_acc) {
            // A percentile is per micro-batch by definition (the reference's), not additive.
            if name.ends_with("_p90") {
                continue;
            }
            assert!((u - v).abs() < 1e-5 * u.abs().max(1.0), "{name}: {u} vs {v}");
        }
    }
}

#[test]
fn per_pack_mean_averages_each_micro_batch_mean_and_differs_from_the_window_rule() {
    // Two packs of very different sizes: the reference's per-pack mean weighs the short pack's
    // tokens more; our window rule weighs every token the same.
    let (targets, types) = batch();
    let (ta, tb) = ((&targets[..2], &types[..2]), (&targets[2..], &types[2..]));
    let window = WindowCounts::of(ta.1) + WindowCounts::of(tb.1);
    let z = logits(7);
    let (za, zb) = (z.narrow(0, 0, 2), z.narrow(0, 2, 6));
    let pack = objective(|c| c.normalize = LossNorm::PerPackMean);
    let group = objective(|c| c.normalize = LossNorm::PerGroup);
    let value =
        |o: &Stage1Objective, z: &Tensor, (t, ty): (&[i64], &[TokenType]), w: WindowCounts| {
            loss_of(o, z, t, ty, &w).total.double_value(&[])
        };
    let per_pack = value(&pack, &za, ta, window) + value(&pack, &zb, tb, window);
    // Each pack's own mean (a window of one pack under the group rule), then their average.
    let own_a = value(&group, &za, ta, WindowCounts::of(ta.1));
    let own_b = value(&group, &zb, tb, WindowCounts::of(tb.1));
    assert!((per_pack - (own_a + own_b) / 2.0).abs() < 1e-6, "{per_pack} vs {own_a}, {own_b}");
    let windowed = value(&group, &za, ta, window) + value(&group, &zb, tb, window);
    assert!((per_pack - windowed).abs() > 1e-3, "the rules agree here: {per_pack}");
}

#[test]
fn plain_cross_entropy_is_hard_ce_plus_gate_at_temperature_one() {
    let (targets, types) = batch();
    let window = WindowCounts::of(&types);
    let obj = objective(|c| {
        c.coord.temperature = 1.0;
        c.coord.soft_ce.weight = 0.0;
        c.coord.w1.weight = 0.0;
        c.coord.gate.weight = 1.0;
        c.coord.hard_ce.weight = 1.0;
        c.text_ce = 0.0;
    });
    let z = logits(2);
    let got = loss_of(&obj, &z, &targets, &types, &window).total.double_value(&[]);
    let coord_rows = Tensor::from_slice(&[1i64, 3, 4, 6]);
    let coord_targets = Tensor::from_slice(&[targets[1], targets[3], targets[4], targets[6]]);
    let want =
        z.index_select(0, &coord_rows).cross_entropy_for_logits(&coord_targets).double_value(&[]);
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}

#[test]
fn per_token_normalisation_divides_every_term_by_all_supervised_tokens() {
    let (targets, types) = batch();
    let window = WindowCounts::of(&types);
    let z = logits(3);
    let text_only = |n| {
        objective(|c| {
            c.normalize = n;
            c.coord.soft_ce.weight = 0.0;
            c.coord.w1.weight = 0.0;
            c.coord.gate.weight = 0.0;
            c.coord.hard_ce.weight = 1e-30;
        })
    };
    let g = loss_of(&text_only(LossNorm::PerGroup), &z, &targets, &types, &window);
    let t = loss_of(&text_only(LossNorm::PerToken), &z, &targets, &types, &window);
    let ratio = t.total.double_value(&[]) / g.total.double_value(&[]);
    assert!((ratio - 4.0 / 8.0).abs() < 1e-6, "4 text tokens of 8 supervised: {ratio}");
    assert_eq!(
        g.terms.get("loss/text_ce").unwrap(),
        t.terms.get("loss/text_ce").unwrap(),
        "metrics stay per-group means"
    );
}

#[test]
fn token_weights_scale_their_type_and_keep_the_token_denominator() {
    let (targets, types) = batch();
    let window = WindowCounts::of(&types);
    let z = logits(4);
    let desc_only = |desc: f64| {
        objective(|c| {
            c.token_weights.structure = 0.0;
            c.token_weights.closure = 0.0;
            c.token_weights.desc = desc;
            c.coord.soft_ce.weight = 0.0;
            c.coord.w1.weight = 0.0;
            c.coord.gate.weight = 0.0;
            c.coord.hard_ce.weight = 1e-30;
        })
    };
    let one = loss_of(&desc_only(1.0), &z, &targets, &types, &window);
    let two = loss_of(&desc_only(2.0), &z, &targets, &types, &window);
    let (a, b) = (one.total.double_value(&[]), two.total.double_value(&[]));
    assert!((b - 2.0 * a).abs() < 1e-5 * b, "{a} {b}");
    // The desc-only total is the summed desc CE over the 4 text tokens of the window.
    let desc_mean = one.terms.get("text_ce/desc").unwrap();
    assert!((a - desc_mean * 2.0 / 4.0).abs() < 1e-5, "{a} vs {desc_mean}");
}

#[test]
fn non_finite_coordinate_logits_give_a_finite_loss_and_no_gradient_there() {
    let (targets, types) = batch();
    let window = WindowCounts::of(&types);
    let obj = objective(|_| {});
    let z = tch::no_grad(|| {
        let z = logits(5).detach();
        let f = i64::from(FIRST);
        let _ = z.get(1).get(f + 3).fill_(f64::NAN);
        let _ = z.get(3).get(f + 7).fill_(f64::INFINITY);
        let _ = z.get(4).get(2).fill_(f64::NEG_INFINITY);
        z
    })
    .set_requires_grad(true);
    let l = loss_of(&obj, &z, &targets, &types, &window);
    assert!(l.total.double_value(&[]).is_finite());
    l.total.backward();
    let g = z.grad();
    assert!(g.isfinite().all().int64_value(&[]) == 1);
    let f = i64::from(FIRST);
    for (r, c) in [(1, f + 3), (3, f + 7), (4, 2)] {
        assert_eq!(g.double_value(&[r, c]), 0.0, "gradient at sanitised logit ({r}, {c})");
    }
}

#[test]
fn disagreeing_types_and_targets_are_errors_naming_the_position() {
    let (mut targets, types) = batch();
    let window = WindowCounts::of(&types);
    let obj = objective(|_| {});
    let z = logits(6);
    targets[2] = i64::from(FIRST) + 4; // desc position with a coordinate target
    let e = obj.loss_of_rows(&Supervised { logits: &z, targets: &targets, types: &types }, &window);
    let e = e.err().unwrap();
    assert!(e.what().contains("bin 4"), "{}", e.report());
    assert_eq!(e.location(), Some("supervised position 2"));

    let (targets, mut types) = batch();
    types[0] = Prompt;
    let e = obj.loss_of_rows(&Supervised { logits: &z, targets: &targets, types: &types }, &window);
    assert!(e.err().unwrap().what().contains("never supervised"));

    let (targets, types) = batch();
    let small = WindowCounts::of(&types[..4]);
    let e = obj.loss_of_rows(&Supervised { logits: &z, targets: &targets, types: &types }, &small);
    assert!(e.err().unwrap().what().contains("more supervised tokens than its window"));
}

#[test]
fn a_batch_without_coordinates_or_text_has_zero_for_that_group() {
    let obj = objective(|_| {});
    let z = logits(7).narrow(0, 0, 1);
    let window = WindowCounts::of(&[Struct]);
    let l = loss_of(&obj, &z, &[3], &[Struct], &window);
    assert_eq!(l.terms.get("loss/w1").unwrap(), 0.0);
    assert!(l.total.double_value(&[]) > 0.0);
}

#[test]
fn grouped_logits_give_the_same_loss_and_gradients_as_all_rows() {
    let (targets, types) = batch();
    let window = WindowCounts::of(&types);
    let obj = objective(|_| {});
    let z = logits(8);
    let rows = loss_of(&obj, &z, &targets, &types, &window);
    rows.total.backward();

    let pos = obj.positions(&targets, &types).unwrap();
    assert_eq!((pos.text_rows(), pos.coord_rows()), (&[0, 2, 5, 7][..], &[1, 3, 4, 6][..]));
    let base = z.detach();
    let pick = |r: &[i64]| base.index(&[Some(Tensor::from_slice(r))]).set_requires_grad(true);
    let (text, coord) = (pick(pos.text_rows()), pick(pos.coord_rows()));
    let grouped = obj.loss(&pos, &text, &coord, &window).unwrap();
    grouped.total.backward();
    assert_eq!(rows.total.double_value(&[]), grouped.total.double_value(&[]));
    let g = z.grad();
    let text_rows = Tensor::from_slice(pos.text_rows());
    assert_eq!(max_abs_diff(&g.index(&[Some(text_rows)]), &text.grad()), 0.0);

    let wrong = text.narrow(0, 0, 3);
    let e = obj.loss(&pos, &wrong, &coord, &window).err().unwrap();
    assert!(e.what().contains("expected [4, vocab]"), "{}", e.report());
    let empty = Tensor::zeros([0], (Kind::Float, Device::Cpu));
    let coord_only = obj.positions(&targets[1..2], &types[1..2]).unwrap();
    assert!(obj.loss(&coord_only, &empty, &coord.narrow(0, 0, 1), &window).is_ok());
}
