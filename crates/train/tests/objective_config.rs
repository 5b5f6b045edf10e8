//! The objective's config keys: per-token-type weights and the normalisation parse strictly, and a
//! config that would leave coordinate tokens without any loss is rejected before training.

use coordexp_core::config::{self, schema::LossNorm};

#[test]
fn token_weights_and_normalisation_parse_from_yaml() {
    let c = config::from_str(
        "objective:\n  normalize: per_token\n  token_weights: {struct: 0.5, desc: 2.0}\n",
        "c.yaml",
    )
    .unwrap();
    assert_eq!(c.objective.normalize, LossNorm::PerToken);
    assert_eq!(c.objective.token_weights.structure, 0.5);
    assert_eq!(c.objective.token_weights.desc, 2.0);
    assert_eq!(c.objective.token_weights.closure, 1.0, "unset keys keep their default");
}

#[test]
fn every_coordinate_weight_zero_is_rejected_with_a_remedy() {
    let e = config::from_str(
        "objective:\n  coord:\n    soft_ce: {weight: 0}\n    w1: {weight: 0}\n    gate: {weight: 0}\n    hard_ce: {weight: 0}\n",
        "c.yaml",
    )
    .unwrap_err();
    assert!(e.what().contains("coordinate tokens would receive no loss"), "{}", e.report());
    assert!(e.hint_text().unwrap().contains("hard_ce"));
}

#[test]
fn a_negative_token_weight_is_rejected_at_its_key() {
    let e = config::from_str("objective:\n  token_weights: {desc: -1}\n", "c.yaml").unwrap_err();
    assert!(e.what().contains("objective.token_weights.desc"), "{}", e.report());
}
