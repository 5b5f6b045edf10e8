//! The stage-1 objective against a live float64 PyTorch reference (the venv's torch): soft CE,
//! W1, gate, hard CE and text CE — values and gradients with respect to the logits — including
//! non-finite and out-of-range logits at coordinate positions.

use coordexp_core::config::schema::{
    CoordObjective, LossNorm, Objective, SoftCe, TokenWeights, Weight,
};
use coordexp_core::seed::mix;
use coordexp_text::TokenType::{self, *};
use coordexp_train::objective::{CoordIds, Stage1Objective, Supervised, WindowCounts};
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

const FIRST: i64 = 60;
const VOCAB: i64 = 1100;
const SCRIPT: &str = include_str!("oracle/stage1_objective.py");

/// Logits in [-4, 4) from a fixed hash, so both sides start from identical numbers.
fn base_logits(n: i64) -> Vec<Vec<f64>> {
    (0..n)
        .map(|r| {
            (0..VOCAB)
                .map(|c| {
                    let h = mix((r * VOCAB + c) as u64);
                    let u = (h >> 11) as f64 / (1u64 << 53) as f64;
                    ((u * 8.0 - 4.0) as f32) as f64
                })
                .collect()
        })
        .collect()
}

/// A logit overwritten with a non-finite or out-of-range value: (row, column, value).
type Special = (i64, i64, f64);

fn case() -> (Vec<i64>, Vec<TokenType>, Vec<Special>) {
    let c = |bin: i64| FIRST + bin;
    let targets = vec![5, c(0), 1070, c(999), c(3), 17, c(500), c(501), 2, c(996)];
    let types = vec![Struct, Coord, Desc, Coord, Coord, Desc, Coord, Coord, Closure, Coord];
    // Coordinate rows: NaN and +inf on coordinate logits, -inf and an overflowing finite value on
    // non-coordinate logits (all sanitised before the coordinate terms).
    let specials = vec![
        (1, c(7), f64::NAN),
        (3, c(998), f64::INFINITY),
        (4, 1080, f64::NEG_INFINITY),
        (6, 3, 2e4),
    ];
    (targets, types, specials)
}

fn type_name(t: TokenType) -> &'static str {
    match t {
        Struct => "struct",
        Desc => "desc",
        Closure => "closure",
        Coord => "coord",
        Prompt => "prompt",
        Image => "image",
    }
}

fn run_case(normalize: LossNorm) {
    let (targets, types, specials) = case();
    let logits = base_logits(targets.len() as i64);
    let cfg = Objective {
        normalize,
        text_ce: 1.3,
        token_weights: TokenWeights { structure: 1.0, desc: 2.0, closure: 0.5 },
        coord: CoordObjective {
            temperature: 0.9,
            soft_ce: SoftCe { weight: 1.0, sigma: 1.5, radius: Some(8) },
            w1: Weight { weight: 3.0 },
            gate: Weight { weight: 5.0 },
            hard_ce: Weight { weight: 0.7 },
        },
    };
    // The window is larger than this micro-batch (another micro-batch holds the rest).
    let window = WindowCounts::of(&types)
        + WindowCounts { structure: 3, desc: 1, closure: 0, coord: 4, micro_batches: 1 };

    let specials_json: Vec<Value> = specials
        .iter()
        .map(|(r, c, v)| json!([r, c, if v.is_nan() { "nan".into() } else { v.to_string() }]))
        .collect();
    let want = coordexp_testkit::run_python_json(
        SCRIPT,
        &json!({
            "logits": logits, "specials": specials_json, "targets": targets, "first": FIRST,
            "types": types.iter().map(|t| type_name(*t)).collect::<Vec<_>>(),
            "window": window,
            "cfg": {
                "normalize": match normalize {
                    LossNorm::PerGroup => "per_group",
                    LossNorm::PerToken => "per_token",
                    LossNorm::PerPackMean => "per_pack_mean",
                },
                "text_ce": cfg.text_ce,
                "token_weights": {"struct": 1.0, "desc": 2.0, "closure": 0.5},
                "temperature": 0.9, "sigma": 1.5, "radius": 8,
                "soft_ce": 1.0, "w1": 3.0, "gate": 5.0, "hard_ce": 0.7,
            },
        }),
    );

    // One term at weight 1 (the oracle's per-term values are unweighted), or the full config.
    let isolate = |term: &str| {
        if term == "total" {
            return cfg.clone();
        }
        let mut c = cfg.clone();
        c.text_ce = 0.0;
        c.coord.soft_ce.weight = 0.0;
        c.coord.w1.weight = 0.0;
        c.coord.gate.weight = 0.0;
        c.coord.hard_ce.weight = 0.0;
        *match term {
            "text_ce" => &mut c.text_ce,
            "soft_ce" => &mut c.coord.soft_ce.weight,
            "w1" => &mut c.coord.w1.weight,
            "gate" => &mut c.coord.gate.weight,
            _ => &mut c.coord.hard_ce.weight,
        } = 1.0;
        c
    };
    for term in ["text_ce", "soft_ce", "w1", "gate", "hard_ce", "total"] {
        let flat: Vec<f32> = logits.iter().flatten().map(|v| *v as f32).collect();
        let z = Tensor::from_slice(&flat).reshape([targets.len() as i64, VOCAB]);
        for (r, c, v) in &specials {
            let _ = z.get(*r).get(*c).fill_(*v);
        }
        let z = z.set_requires_grad(true);
        let obj = Stage1Objective::new(&isolate(term), CoordIds::new(FIRST as u32), Device::Cpu);
        let loss = obj
            .loss_of_rows(&Supervised { logits: &z, targets: &targets, types: &types }, &window)
            .unwrap();
        loss.total.backward();

        let got = loss.total.double_value(&[]);
        let expect = want[term]["value"].as_f64().unwrap();
        assert!(
            (got - expect).abs() <= 2e-5 * expect.abs().max(1.0),
            "{normalize:?} {term}: value {got} vs torch {expect}"
        );
        let grad = Vec::<f32>::try_from(z.grad().to_kind(Kind::Float).flatten(0, -1)).unwrap();
        let expect_grad: Vec<f64> = want[term]["grad"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        let worst = grad
            .iter()
            .zip(&expect_grad)
            .enumerate()
            .map(|(i, (g, e))| ((f64::from(*g) - e).abs(), i))
            .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
        assert!(
            worst.0 < 2e-6,
            "{normalize:?} {term}: gradient differs by {} at flat index {}",
            worst.0,
            worst.1
        );
        for (r, c, _) in &specials {
            assert_eq!(
                grad[(r * VOCAB + c) as usize],
                0.0,
                "{term}: no gradient through a sanitised logit"
            );
        }
    }
}

#[test]
fn stage1_terms_match_pytorch_in_value_and_gradient_per_group() {
    run_case(LossNorm::PerGroup);
}

#[test]
fn stage1_terms_match_pytorch_in_value_and_gradient_per_token() {
    run_case(LossNorm::PerToken);
}

#[test]
fn stage1_terms_match_pytorch_in_value_and_gradient_per_pack_mean() {
    run_case(LossNorm::PerPackMean);
}
