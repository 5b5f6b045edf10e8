//! Live parity of `coordexp_core::assign` with `scipy.optimize.linear_sum_assignment`.
//!
//! Hundreds of random rectangular matrices (continuous costs, heavy ties, large magnitudes, both
//! goals) go to scipy in one call. The solver mirrors scipy's scan order and tie rule, so we
//! require the very same pairs, not merely an equally good total.

use coordexp_core::assign::{CostMatrix, Goal, solve};
use coordexp_core::seed::SplitMix64 as Rng;
use serde_json::{Value, json};

const ORACLE: &str = r#"
import json, sys
import numpy as np
from scipy.optimize import linear_sum_assignment
out = []
for case in json.load(sys.stdin):
    c = np.array(case["cost"], dtype=np.float64).reshape(case["rows"], case["cols"])
    r, k = linear_sum_assignment(c, maximize=case["maximize"])
    total = 0.0
    for i, j in zip(r.tolist(), k.tolist()):
        total += float(c[i, j])
    out.append({"pairs": [[int(i), int(j)] for i, j in zip(r, k)], "total": total})
print(json.dumps(out))
"#;

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Uniform in [-5, 5): the optimum is unique almost surely.
    Continuous,
    /// Integers in 0..3: many co-optimal assignments, so tie-breaking is exercised.
    SmallIntegers,
    /// Magnitudes up to 1e12 with mixed signs.
    Large,
    /// Mostly zero with a few ones: the shape of an IoU-threshold match matrix.
    Sparse,
}

fn cases() -> Vec<(CostMatrix, Goal, Kind)> {
    let mut rng = Rng::new(20_260_401);
    let kinds = [Kind::Continuous, Kind::SmallIntegers, Kind::Large, Kind::Sparse];
    let mut out = Vec::new();
    for i in 0..480 {
        let kind = kinds[i % kinds.len()];
        let (rows, cols) = if i % 10 == 9 {
            (1 + rng.below(60) as usize, 1 + rng.below(60) as usize)
        } else {
            (1 + rng.below(12) as usize, 1 + rng.below(12) as usize)
        };
        let goal = if (i / 4) % 2 == 0 { Goal::Minimize } else { Goal::Maximize };
        let m = CostMatrix::from_fn(rows, cols, |_, _| match kind {
            Kind::Continuous => rng.unit() * 10.0 - 5.0,
            Kind::SmallIntegers => rng.below(3) as f64,
            Kind::Large => (rng.unit() * 2.0 - 1.0) * 1e12,
            Kind::Sparse => {
                if rng.below(4) == 0 {
                    1.0
                } else {
                    0.0
                }
            }
        })
        .unwrap();
        out.push((m, goal, kind));
    }
    out
}

#[test]
fn assignments_and_totals_equal_scipy_on_random_rectangular_matrices() {
    let cases = cases();
    let payload: Vec<Value> = cases
        .iter()
        .map(|(m, goal, _)| {
            let cost: Vec<f64> = (0..m.rows())
                .flat_map(|r| (0..m.cols()).map(move |c| (r, c)))
                .map(|(r, c)| m.get(r, c).unwrap())
                .collect();
            json!({"rows": m.rows(), "cols": m.cols(), "cost": cost,
                   "maximize": *goal == Goal::Maximize})
        })
        .collect();
    let expected = coordexp_testkit::run_python_json(ORACLE, &Value::Array(payload));
    let expected = expected.as_array().unwrap();
    assert_eq!(expected.len(), cases.len());

    for (i, ((m, goal, kind), want)) in cases.iter().zip(expected).enumerate() {
        let got = solve(m, *goal);
        let want_pairs: Vec<(usize, usize)> = want["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as usize))
            .collect();
        let want_total = want["total"].as_f64().unwrap();
        let ctx = format!("case {i} ({kind:?}, {}x{}, {goal:?})", m.rows(), m.cols());
        assert_eq!(got.total(m), want_total, "{ctx}: total differs");
        assert_eq!(got.pairs(), want_pairs.as_slice(), "{ctx}: pairs differ");
    }
}
