//! One-to-one association of anchor objects with one explorer view's objects: maximum total
//! IoU, ties broken towards the lexicographically smallest pair list.
//!
//! Both support notions of the reference use this rule — the description-aware support of
//! duplicate control (stage2_current §2.2, `dc.py:337-476`) and the IoU-only association of
//! triage (§3.2, `rm/matching.py:228-336`) — they differ only in which pairs are candidates.
//! The tie-break matters: with duplicated boxes many assignments share the best total, and which
//! anchor gets the explorer's vote decides which anchor survives or stays shielded.
//!
//! The rule, exactly as the reference runs it (with its tolerance `1e-9`):
//! * `best` = the maximum total weight of a one-to-one pairing of the candidates; if
//!   `best ≤ 1e-9` there are no pairs;
//! * walk the candidates in `(anchor, explorer)` order and take the first `p` for which
//!   `w(p) + best(pairs after p sharing neither side with p) = best` (within `1e-9`); recurse on
//!   those remaining pairs. The result is the lexicographically smallest sorted pair list among
//!   the optimal pairings.
//!
//! The maximum is computed with core's assignment solver (the reference uses scipy in triage and
//! an exact branch-and-bound in duplicate control; both return the maximum). To keep duplicate
//! bursts cheap, each step first solves once for an optimal pairing `M`: every candidate after
//! `min(M)` is never reached (that pair itself is feasible: `M ∖ {min M}` completes it), and an
//! earlier candidate whose weight plus an upper bound of the rest falls short is skipped without
//! solving.

use coordexp_core::assign::{CostMatrix, Goal, solve};

/// The reference's tolerance on totals.
pub const TOL: f64 = 1e-9;

/// A candidate pair `(anchor, explorer, weight)`.
pub type Candidate = (usize, usize, f64);

/// The lexicographically smallest maximum-weight one-to-one pairing of `candidates` (see the
/// module docs), as `(anchor, explorer)` pairs in ascending order. Duplicate pairs keep their
/// first weight; non-finite or negative weights are ignored.
pub fn lexicographic_max_pairs(candidates: &[Candidate]) -> Vec<(usize, usize)> {
    let mut cands: Vec<Candidate> =
        candidates.iter().copied().filter(|c| c.2.is_finite() && c.2 >= 0.0).collect();
    cands.sort_by_key(|c| (c.0, c.1));
    cands.dedup_by_key(|c| (c.0, c.1));
    let (mut best, mut optimal) = max_weight(&cands);
    let mut out = Vec::new();
    while best > TOL {
        let Some(&first) = optimal.iter().min_by_key(|c| (c.0, c.1)) else { break };
        let mut chosen = None;
        for &p in cands.iter().take_while(|c| (c.0, c.1) < (first.0, first.1)) {
            let rest = after(&cands, p);
            if p.2 + upper_bound(&rest) < best - TOL {
                continue;
            }
            let (rest_best, rest_optimal) = max_weight(&rest);
            if (p.2 + rest_best - best).abs() <= TOL {
                chosen = Some((p, rest, rest_best, rest_optimal));
                break;
            }
        }
        let (p, rest, rest_best, rest_optimal) = chosen.unwrap_or_else(|| {
            let rest_optimal: Vec<Candidate> =
                optimal.iter().copied().filter(|c| (c.0, c.1) != (first.0, first.1)).collect();
            let rest_best = rest_optimal.iter().map(|c| c.2).sum();
            (first, after(&cands, first), rest_best, rest_optimal)
        });
        out.push((p.0, p.1));
        cands = rest;
        best = rest_best;
        optimal = rest_optimal;
    }
    out
}

/// The candidates after `p` in pair order that share neither side with it.
fn after(cands: &[Candidate], p: Candidate) -> Vec<Candidate> {
    cands.iter().copied().filter(|c| c.0 != p.0 && c.1 != p.1 && (c.0, c.1) > (p.0, p.1)).collect()
}

/// `min(Σ_anchor max w, Σ_explorer max w)`: no pairing of `cands` weighs more.
fn upper_bound(cands: &[Candidate]) -> f64 {
    use std::collections::BTreeMap;
    let mut by_a: BTreeMap<usize, f64> = BTreeMap::new();
    let mut by_e: BTreeMap<usize, f64> = BTreeMap::new();
    for &(a, e, w) in cands {
        let x = by_a.entry(a).or_insert(0.0);
        *x = x.max(w);
        let y = by_e.entry(e).or_insert(0.0);
        *y = y.max(w);
    }
    by_a.values().sum::<f64>().min(by_e.values().sum::<f64>())
}

/// A maximum-weight one-to-one pairing of `cands` (sorted, unique pairs): its total (summed in
/// anchor order) and its pairs.
fn max_weight(cands: &[Candidate]) -> (f64, Vec<Candidate>) {
    if cands.is_empty() {
        return (0.0, Vec::new());
    }
    let mut rows: Vec<usize> = cands.iter().map(|c| c.0).collect();
    rows.dedup();
    let mut cols: Vec<usize> = cands.iter().map(|c| c.1).collect();
    cols.sort_unstable();
    cols.dedup();
    let mut weight = vec![None; rows.len() * cols.len()];
    for &c in cands {
        if let (Ok(r), Ok(k)) = (rows.binary_search(&c.0), cols.binary_search(&c.1)) {
            weight[r * cols.len() + k] = Some(c);
        }
    }
    let Ok(m) = CostMatrix::from_fn(rows.len(), cols.len(), |r, k| {
        weight[r * cols.len() + k].map_or(0.0, |c| c.2)
    }) else {
        return (0.0, Vec::new());
    };
    let mut total = 0.0;
    let mut pairs = Vec::new();
    for &(r, k) in solve(&m, Goal::Maximize).pairs() {
        if let Some(c) = weight[r * cols.len() + k] {
            total += c.2;
            pairs.push(c);
        }
    }
    (total, pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coordexp_core::seed::SplitMix64;

    /// The reference algorithm literally: brute-force maximum, then the greedy walk.
    fn brute_best(cands: &[Candidate]) -> f64 {
        fn rec(c: &[Candidate], i: usize, ua: &mut Vec<usize>, ue: &mut Vec<usize>) -> f64 {
            if i == c.len() {
                return 0.0;
            }
            let skip = rec(c, i + 1, ua, ue);
            let (a, e, w) = c[i];
            if ua.contains(&a) || ue.contains(&e) {
                return skip;
            }
            ua.push(a);
            ue.push(e);
            let take = w + rec(c, i + 1, ua, ue);
            ua.pop();
            ue.pop();
            skip.max(take)
        }
        rec(cands, 0, &mut Vec::new(), &mut Vec::new())
    }

    fn reference(cands: &[Candidate]) -> Vec<(usize, usize)> {
        let best = brute_best(cands);
        if best <= TOL {
            return Vec::new();
        }
        let mut ordered = cands.to_vec();
        ordered.sort_by_key(|c| (c.0, c.1));
        for &p in &ordered {
            let rest = after(&ordered, p);
            if (p.2 + brute_best(&rest) - best).abs() <= TOL {
                let mut out = vec![(p.0, p.1)];
                out.extend(reference(&rest));
                return out;
            }
        }
        Vec::new()
    }

    #[test]
    fn equal_weights_pick_the_lexicographically_smallest_pairs() {
        let c = [(0, 0, 1.0), (0, 1, 1.0), (1, 0, 1.0), (1, 1, 1.0)];
        assert_eq!(lexicographic_max_pairs(&c), vec![(0, 0), (1, 1)]);
        let c = [(0, 1, 1.0), (1, 0, 1.0), (1, 1, 1.0)];
        assert_eq!(lexicographic_max_pairs(&c), vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn total_weight_wins_over_lexicographic_order() {
        // (0,0) is smallest but pairing it loses 0.95 + 0.95 vs 0.96 + 0.99.
        let c = [(0, 0, 0.95), (0, 1, 0.96), (1, 0, 0.99)];
        assert_eq!(lexicographic_max_pairs(&c), vec![(0, 1), (1, 0)]);
        // One explorer object wanted by two anchors: the better IoU takes it.
        let c = [(0, 0, 0.97), (1, 0, 0.99)];
        assert_eq!(lexicographic_max_pairs(&c), vec![(1, 0)]);
    }

    #[test]
    fn no_candidates_no_pairs() {
        assert!(lexicographic_max_pairs(&[]).is_empty());
        assert!(lexicographic_max_pairs(&[(0, 0, 0.0)]).is_empty());
    }

    #[test]
    fn equals_the_literal_reference_walk_on_random_tied_candidates() {
        let mut rng = SplitMix64::new(7);
        for case in 0..600 {
            let (na, ne) = (1 + rng.below(5) as usize, 1 + rng.below(5) as usize);
            let levels = [0.9, 0.95, 1.0, 0.925];
            let mut cands = Vec::new();
            for a in 0..na {
                for e in 0..ne {
                    if rng.below(3) != 0 {
                        let w = if case % 2 == 0 {
                            levels[rng.below(4) as usize]
                        } else {
                            0.85 + 0.15 * rng.unit()
                        };
                        cands.push((a, e, w));
                    }
                }
            }
            assert_eq!(lexicographic_max_pairs(&cands), reference(&cands), "{cands:?}");
        }
    }

    #[test]
    fn a_large_identical_burst_pairs_in_index_order() {
        let n = 120;
        let cands: Vec<Candidate> = (0..n).flat_map(|a| (0..n).map(move |e| (a, e, 1.0))).collect();
        let pairs = lexicographic_max_pairs(&cands);
        assert_eq!(pairs, (0..n).map(|i| (i, i)).collect::<Vec<_>>());
    }
}
