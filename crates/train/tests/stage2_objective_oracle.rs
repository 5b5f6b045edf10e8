//! Live parity of the stage-2 objective (channel A: token CE, SmoothL1 + CIoU on the expected
//! box, the log-size term, the coordinate regularisers and the text gate) with a float64
//! PyTorch implementation of `stage2_current.md` §4: every term's value and the gradient of the
//! total with respect to the logits.

use coordexp_core::config::schema::{Channel, Stage2Objective as Config};
use coordexp_core::seed::SplitMix64;
use coordexp_train::objective::CoordIds;
use coordexp_train::objective::stage2::{Stage2Objective, Supervision, TextKind};
use serde_json::json;
use tch::{Device, Kind, Tensor};

const SCRIPT: &str = include_str!("oracle/stage2_objective.py");
const FIRST: i64 = 40;
const VOCAB: i64 = FIRST + 1000 + 25;

/// Twelve rows: text targets of both kinds, two boxes (8 coordinate slots, one with a wide
/// spread and one sharp), gate rows.
fn case() -> (Tensor, Supervision) {
    let mut rng = SplitMix64::new(20_261_206);
    let rows = 14i64;
    let vals: Vec<f32> = (0..rows * VOCAB).map(|_| (rng.unit() as f32 - 0.5) * 6.0).collect();
    let z = Tensor::from_slice(&vals).view([rows, VOCAB]);
    // Sharpen the coordinate rows around plausible bins.
    let bins = [100i64, 200, 400, 500, 600, 610, 900, 990];
    for (i, b) in bins.iter().enumerate() {
        let row = 4 + i as i64;
        let _ = z.get(row).get(FIRST + b + (i as i64 % 3) * 7).fill_(9.0);
    }
    let sup = Supervision {
        text_rows: vec![0, 1, 2, 3, 12, 13],
        text_targets: vec![3, 1050, 7, 11, 1060, 2],
        text_weights: vec![1.0, 2.5, 1.0, 0.5, 1.0, 1.0],
        text_kinds: vec![
            TextKind::Struct,
            TextKind::Desc,
            TextKind::Struct,
            TextKind::Desc,
            TextKind::Struct,
            TextKind::Struct,
        ],
        coord_rows: (4..12).collect(),
        coord_bins: bins.to_vec(),
        coord_weights: vec![1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0],
        boxes: vec![([0, 1, 2, 3], 1.0), ([4, 5, 6, 7], 2.0)],
        gate_rows: vec![0, 1, 2, 3, 12],
        ul_rows: vec![],
        ul_tokens: vec![],
    };
    (z, sup)
}

#[test]
fn channel_a_terms_and_gradients_match_pytorch() {
    let (z, sup) = case();
    let mut cfg = Config::default();
    cfg.token_ce.weight = 1.0;
    cfg.coord_reg.temperature = 0.9;
    cfg.coord_reg.target_sigma = 1.5;
    cfg.coord_reg.target_truncate = Some(8);
    cfg.bbox_geo.weight = 1.5;
    let obj = Stage2Objective::new(&cfg, CoordIds::new(FIRST as u32), Device::Cpu);
    let z = z.set_requires_grad(true);
    let index = sup.rows();
    let loss = obj.loss(Channel::A, &sup, &index, &z, &sup.counts()).unwrap();
    loss.total.backward();

    let c = &cfg.coord_reg;
    let want = coordexp_testkit::run_python_json(
        SCRIPT,
        &json!({
            "first": FIRST,
            "logits": Vec::<Vec<f32>>::try_from(z.detach()).unwrap(),
            "text_rows": sup.text_rows, "text_targets": sup.text_targets,
            "text_weights": sup.text_weights,
            "text_kinds": sup.text_kinds.iter().map(|k| if *k == TextKind::Desc { "desc" } else { "struct" }).collect::<Vec<_>>(),
            "coord_rows": sup.coord_rows, "coord_bins": sup.coord_bins,
            "coord_weights": sup.coord_weights,
            "box_slots": sup.boxes.iter().map(|(s, _)| s.to_vec()).collect::<Vec<_>>(),
            "box_weights": sup.boxes.iter().map(|(_, w)| *w).collect::<Vec<_>>(),
            "gate_rows": sup.gate_rows,
            "cfg": {
                "temperature": c.temperature, "sigma": c.target_sigma, "radius": 8,
                "smoothl1": cfg.bbox_geo.smoothl1_weight, "ciou": cfg.bbox_geo.ciou_weight,
                "log_wh": cfg.bbox_size_aux.log_wh_weight, "coord_ce": c.coord_ce_weight,
                "soft_ce": c.soft_ce_weight, "w1": c.w1_weight, "gate": c.coord_gate_weight,
                "text_gate": c.text_gate_weight,
                "modules": {"token_ce": cfg.token_ce.weight, "bbox_geo": cfg.bbox_geo.weight,
                            "bbox_size_aux": cfg.bbox_size_aux.weight, "coord_reg": c.weight},
            },
        }),
    );
    for (name, expect) in want["terms"].as_object().unwrap() {
        let got = loss.terms.get(name).unwrap();
        let e = expect.as_f64().unwrap();
        assert!((got - e).abs() <= 2e-5 * e.abs().max(1e-3), "{name}: {got} vs torch {e}");
    }
    let total = loss.total.double_value(&[]);
    let e = want["total"].as_f64().unwrap();
    assert!((total - e).abs() <= 2e-5 * e.abs().max(1.0), "total {total} vs {e}");
    let grad: Vec<f32> = Vec::try_from(z.grad().to_kind(Kind::Float).flatten(0, -1)).unwrap();
    let expect: Vec<f64> = want["grad"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let worst =
        grad.iter().zip(&expect).map(|(g, e)| (f64::from(*g) - e).abs()).fold(0.0, f64::max);
    assert!(worst < 5e-6, "gradient differs by {worst}");
}
