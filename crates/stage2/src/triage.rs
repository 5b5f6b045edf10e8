//! Anchor/explorer triage: which unmatched anchor objects stay in the prefix, and which missed
//! ground truths the explorers found (stage2_current §3.2–§3.4).
//!
//! Why: an anchor object that matches no ground truth is either a hallucination or an object the
//! annotation lacks. Sampled explorer rollouts vote: an object they reproduce (without it being
//! ground truth in their view, and without it shadowing a matched anchor) is *shielded* — kept as
//! unsupervised context — and one nobody reproduces is *dead* and leaves the prefix (DESIGN
//! "Stage 2 decisions" 2, as in the reference's code, §2.4). Ground truth the anchor missed but
//! an explorer matched is a *recovered* FN, weighted up (§3.3).
//!
//! Rules (`tb.py:382-623` at the reference commit):
//! * **Association** per explorer view: clean anchors and the view's bbox-valid objects paired
//!   one-to-one by box IoU alone (no description test), IoU ≥
//!   `unlabeled_consistent_iou_threshold`, maximum total IoU, lexicographic tie-break
//!   ([`crate::pairing`]). This is the IoU-only support notion (DESIGN decision 7).
//! * **Support** of an unmatched anchor: +1 per view where it is associated, its partner is not
//!   ground-truth matched in that view, and the anchor has no IoU ≥ the same threshold with any
//!   ground-truth-matched anchor. `support_rate = support / explorer views` (0 with no views).
//!   (The reference's LVIS `verified_positive/negative` override, which forces such anchors
//!   dead, needs per-object LVIS statuses our records do not carry; it is not reproduced.)
//! * **Labels**: matched anchors are *matched_clean*; unmatched with support 0 are *dead*; the
//!   rest are *shielded*.
//! * **Pseudo-positive** (optional, §3.4): shielded anchors with support ≥ 2 and rate ≥ 2/3 are
//!   candidates; candidates are linked when their box IoU ≥ the duplicate-control
//!   `iou_threshold`; per connected component the winner minimises `(−rate, index)` and becomes
//!   *pseudo_positive*; the others stay shielded but are *cluster-demoted*.
//! * **Recovered FN**: a ground truth matched in ≥ 1 explorer view but not by the anchor; its
//!   support counts the views that matched it.
//! * **Boundaries**: duplicate control attached each suppressed object to a boundary among the
//!   clean anchors; after dead anchors leave, boundary `b` becomes the number of non-dead clean
//!   anchors before it (§3.2 last bullet), so the unlikelihood term still fires when the
//!   survivor itself died.

use crate::boxes;
use crate::dup::Suppressed;
use crate::matching::Matching;
use crate::pairing;
use crate::view::ViewObject;
use serde::Serialize;

/// What triage made of one clean anchor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "label", rename_all = "snake_case")]
pub enum Label {
    /// Matched to ground truth `gt` (gt-backed).
    MatchedClean { gt: usize },
    /// Unmatched, explorer-supported: kept as context.
    Shielded,
    /// Unmatched, well supported, the winner of its candidate component (pseudo-positive mode).
    PseudoPositive,
    /// A pseudo-positive candidate that lost its component: shielded, no coordinate target.
    Demoted,
    /// Unmatched and unsupported: leaves the prefix.
    Dead,
}

/// A ground truth the anchor missed and explorers matched.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Recovered {
    pub gt: usize,
    /// Explorer views that matched it.
    pub support: usize,
    pub support_rate: f64,
}

/// The triage outcome for one sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Triage {
    /// Per clean anchor.
    pub labels: Vec<Label>,
    /// IoU-only explorer support per clean anchor (0 for matched anchors).
    pub support: Vec<usize>,
    pub support_rate: Vec<f64>,
    /// Per explorer view, the `[clean anchor, explorer object]` association.
    pub association: Vec<Vec<[usize; 2]>>,
    /// Pseudo-positive candidates (clean indices, ascending); empty unless enabled.
    pub pseudo_positive_candidates: Vec<usize>,
    /// Ground truths recovered by explorers, ascending.
    pub recovered: Vec<Recovered>,
    /// Per explorer view, its objects that no ground truth matched.
    pub dead_explorer_objects: Vec<Vec<usize>>,
    /// Clean anchors that stay in the prefix (not dead), ascending.
    pub retained: Vec<usize>,
    /// Suppressed duplicates with their boundary remapped onto `retained`.
    pub suppressed: Vec<Suppressed>,
    /// Number of explorer views (invalid ones included: they vote with zero objects).
    pub explorer_views: usize,
}

impl Triage {
    /// Clean anchors with a given label, ascending.
    pub fn with_label(&self, f: impl Fn(&Label) -> bool) -> Vec<usize> {
        self.labels.iter().enumerate().filter(|(_, l)| f(l)).map(|(i, _)| i).collect()
    }

    /// Whether ground truth `gt` was recovered by explorers.
    pub fn is_recovered(&self, gt: usize) -> bool {
        self.recovered.iter().any(|r| r.gt == gt)
    }
}

/// Triage settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TriageSettings {
    pub unlabeled_consistent_iou_threshold: f64,
    /// The duplicate-control IoU threshold (links pseudo-positive candidates).
    pub duplicate_iou_threshold: f64,
    pub pseudo_positive: bool,
}

/// Triage the clean anchors (`clean`, matched by `anchor_match`) against the explorer views
/// (`explorers[v]`, matched by `explorer_matches[v]`); `suppressed` carries duplicate
/// control's pre-triage boundaries.
pub fn triage(
    clean: &[ViewObject],
    anchor_match: &Matching,
    explorers: &[&[ViewObject]],
    explorer_matches: &[Matching],
    suppressed: &[Suppressed],
    settings: &TriageSettings,
) -> Triage {
    let thr = settings.unlabeled_consistent_iou_threshold;
    let n = clean.len();
    let boxes_c: Vec<[f64; 4]> = clean.iter().map(|o| boxes::xyxy(&o.bbox)).collect();
    let gt_of: Vec<Option<usize>> = (0..n).map(|i| anchor_match.gt_of(i)).collect();
    let gt_backed: Vec<usize> = (0..n).filter(|&i| gt_of[i].is_some()).collect();
    let shadows_gt_backed =
        |i: usize| gt_backed.iter().any(|&m| boxes::iou(&boxes_c[i], &boxes_c[m]) >= thr);

    let mut support = vec![0usize; n];
    let mut association = Vec::with_capacity(explorers.len());
    let mut dead_explorer_objects = Vec::with_capacity(explorers.len());
    for (v, view) in explorers.iter().enumerate() {
        let matched_in_view =
            |j: usize| explorer_matches.get(v).is_some_and(|m| m.gt_of(j).is_some());
        let boxes_e: Vec<[f64; 4]> = view.iter().map(|o| boxes::xyxy(&o.bbox)).collect();
        let mut cands = Vec::new();
        for (i, bc) in boxes_c.iter().enumerate() {
            for (j, be) in boxes_e.iter().enumerate() {
                let iou = boxes::iou(bc, be);
                if iou >= thr {
                    cands.push((i, j, iou));
                }
            }
        }
        let pairs = pairing::lexicographic_max_pairs(&cands);
        for &(i, j) in &pairs {
            if gt_of[i].is_none() && !matched_in_view(j) && !shadows_gt_backed(i) {
                support[i] += 1;
            }
        }
        association.push(pairs.iter().map(|&(i, j)| [i, j]).collect());
        dead_explorer_objects.push((0..view.len()).filter(|&j| !matched_in_view(j)).collect());
    }
    let views = explorers.len();
    let support_rate: Vec<f64> =
        support.iter().map(|&s| if views > 0 { s as f64 / views as f64 } else { 0.0 }).collect();

    let mut labels: Vec<Label> = (0..n)
        .map(|i| match gt_of[i] {
            Some(gt) => Label::MatchedClean { gt },
            None if support[i] == 0 => Label::Dead,
            None => Label::Shielded,
        })
        .collect();

    let mut candidates = Vec::new();
    if settings.pseudo_positive {
        candidates = (0..n)
            .filter(|&i| {
                labels[i] == Label::Shielded && support[i] >= 2 && support_rate[i] >= 2.0 / 3.0
            })
            .collect();
        for component in components(&candidates, |a, b| {
            boxes::iou(&boxes_c[a], &boxes_c[b]) >= settings.duplicate_iou_threshold
        }) {
            let winner = component
                .iter()
                .copied()
                .min_by(|&a, &b| support_rate[b].total_cmp(&support_rate[a]).then(a.cmp(&b)));
            for &i in &component {
                labels[i] = if Some(i) == winner { Label::PseudoPositive } else { Label::Demoted };
            }
        }
    }

    // Recovered ground truth: matched by some explorer view, not by the anchor.
    let anchor_gts: Vec<usize> = gt_of.iter().flatten().copied().collect();
    let mut recovered_support: std::collections::BTreeMap<usize, usize> = Default::default();
    for m in explorer_matches {
        let mut seen: Vec<usize> = m.pairs.iter().map(|p| p[1]).collect();
        seen.sort_unstable();
        seen.dedup();
        for gt in seen.into_iter().filter(|g| !anchor_gts.contains(g)) {
            *recovered_support.entry(gt).or_insert(0) += 1;
        }
    }
    let recovered = recovered_support
        .into_iter()
        .map(|(gt, s)| Recovered {
            gt,
            support: s,
            support_rate: if views > 0 { s as f64 / views as f64 } else { 0.0 },
        })
        .collect();

    let retained: Vec<usize> = (0..n).filter(|&i| labels[i] != Label::Dead).collect();
    // Boundary b (b clean anchors before) → non-dead anchors among those b.
    let remapped = suppressed
        .iter()
        .map(|s| Suppressed {
            object: s.object,
            boundary: retained.partition_point(|&r| r < s.boundary.min(n)),
        })
        .collect();

    Triage {
        labels,
        support,
        support_rate,
        association,
        pseudo_positive_candidates: candidates,
        recovered,
        dead_explorer_objects,
        retained,
        suppressed: remapped,
        explorer_views: views,
    }
}

/// Connected components of `nodes` under `linked`, in the order of each component's first
/// node in `nodes`.
fn components(nodes: &[usize], linked: impl Fn(usize, usize) -> bool) -> Vec<Vec<usize>> {
    let mut seen = vec![false; nodes.len()];
    let mut out = Vec::new();
    for start in 0..nodes.len() {
        if seen[start] {
            continue;
        }
        seen[start] = true;
        let mut stack = vec![start];
        let mut comp = Vec::new();
        while let Some(x) = stack.pop() {
            comp.push(nodes[x]);
            for y in 0..nodes.len() {
                if !seen[y] && linked(nodes[x], nodes[y]) {
                    seen[y] = true;
                    stack.push(y);
                }
            }
        }
        comp.sort_unstable();
        out.push(comp);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::{MatchSettings, hungarian};
    use coordexp_core::norm1000::Bin;
    use coordexp_core::record::Geometry;

    fn obj(c: [u16; 4]) -> ViewObject {
        ViewObject {
            array_index: 0,
            desc: "x".to_owned(),
            bbox: c.map(|k| Bin::new(k).unwrap()),
            span: 0..0,
        }
    }

    fn run(
        clean: &[ViewObject],
        gts: &[[u16; 4]],
        explorers: &[Vec<ViewObject>],
        pp: bool,
    ) -> Triage {
        let gts: Vec<Geometry<Bin>> =
            gts.iter().map(|c| Geometry::BBox(c.map(|k| Bin::new(k).unwrap()))).collect();
        let s = MatchSettings::default();
        let boxes = |v: &[ViewObject]| v.iter().map(|o| o.bbox).collect::<Vec<_>>();
        let am = hungarian(&boxes(clean), &gts, &s);
        let em: Vec<Matching> = explorers.iter().map(|v| hungarian(&boxes(v), &gts, &s)).collect();
        let views: Vec<&[ViewObject]> = explorers.iter().map(Vec::as_slice).collect();
        let settings = TriageSettings {
            unlabeled_consistent_iou_threshold: 0.9,
            duplicate_iou_threshold: 0.95,
            pseudo_positive: pp,
        };
        triage(clean, &am, &views, &em, &[Suppressed { object: 9, boundary: 2 }], &settings)
    }

    #[test]
    fn matched_supported_and_unsupported_anchors_get_their_labels() {
        let clean =
            [obj([100, 100, 200, 200]), obj([500, 500, 600, 600]), obj([800, 800, 900, 900])];
        let explorers = vec![vec![obj([500, 500, 600, 600])]];
        let t = run(&clean, &[[100, 100, 200, 200]], &explorers, false);
        assert_eq!(t.labels, vec![Label::MatchedClean { gt: 0 }, Label::Shielded, Label::Dead]);
        assert_eq!(t.support, vec![0, 1, 0]);
        assert_eq!(t.support_rate, vec![0.0, 1.0, 0.0]);
        assert_eq!(t.retained, vec![0, 1]);
        assert_eq!(t.association, vec![vec![[1, 0]]]);
        assert_eq!(t.dead_explorer_objects, vec![vec![0]]);
    }

    #[test]
    fn an_explorer_partner_that_is_ground_truth_gives_no_support() {
        // Anchor 1 loses the ground truth to anchor 0 (IoU 0.625 with it: no shadowing); the
        // explorer's copy of anchor 1 is alone in its view and matches that ground truth.
        let clean = [obj([100, 100, 200, 200]), obj([100, 100, 200, 260])];
        let explorers = vec![vec![obj([100, 100, 200, 260])]];
        let t = run(&clean, &[[100, 100, 200, 200]], &explorers, false);
        assert_eq!(t.labels, vec![Label::MatchedClean { gt: 0 }, Label::Dead]);
        assert_eq!(t.dead_explorer_objects, vec![Vec::<usize>::new()]);
        // Without that ground truth the same explorer object is a vote.
        let t = run(&clean, &[], &explorers, false);
        assert_eq!(t.labels[1], Label::Shielded);
    }

    #[test]
    fn anchors_shadowing_a_matched_anchor_get_no_support() {
        let clean = [obj([100, 100, 200, 200]), obj([100, 100, 200, 201])];
        let explorers = vec![vec![obj([100, 100, 200, 201])]];
        let t = run(&clean, &[[100, 100, 200, 200]], &explorers, false);
        assert_eq!(t.labels[1], Label::Dead);
    }

    #[test]
    fn explorers_recover_ground_truth_the_anchor_missed() {
        let clean = [obj([100, 100, 200, 200])];
        let explorers =
            vec![vec![obj([300, 300, 400, 400])], vec![obj([300, 300, 400, 400])], vec![]];
        let t = run(&clean, &[[100, 100, 200, 200], [300, 300, 400, 400]], &explorers, false);
        assert_eq!(t.recovered, vec![Recovered { gt: 1, support: 2, support_rate: 2.0 / 3.0 }]);
        assert!(t.is_recovered(1) && !t.is_recovered(0));
        assert_eq!(t.explorer_views, 3);
    }

    #[test]
    fn pseudo_positive_winner_per_component_and_demotion() {
        let clean =
            [obj([100, 100, 200, 200]), obj([100, 100, 200, 201]), obj([600, 600, 700, 700])];
        let e =
            vec![obj([100, 100, 200, 200]), obj([100, 100, 200, 201]), obj([600, 600, 700, 700])];
        let explorers = vec![e.clone(), e.clone(), e];
        let t = run(&clean, &[], &explorers, true);
        assert_eq!(t.pseudo_positive_candidates, vec![0, 1, 2]);
        assert_eq!(t.labels, vec![Label::PseudoPositive, Label::Demoted, Label::PseudoPositive]);
        let t = run(&clean, &[], &explorers.clone(), false);
        assert!(t.pseudo_positive_candidates.is_empty());
        assert_eq!(t.labels, vec![Label::Shielded; 3]);
    }

    #[test]
    fn suppression_boundaries_are_remapped_past_dead_anchors() {
        // Clean anchors 0 and 1 both die: boundary 2 becomes 0.
        let clean =
            [obj([100, 100, 200, 200]), obj([300, 300, 400, 400]), obj([600, 600, 700, 700])];
        let explorers = vec![vec![obj([600, 600, 700, 700])]];
        let t = run(&clean, &[], &explorers, false);
        assert_eq!(t.retained, vec![2]);
        assert_eq!(t.suppressed, vec![Suppressed { object: 9, boundary: 0 }]);
    }
}
