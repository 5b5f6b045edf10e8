//! Duplicate control: before any ground truth is consulted, collapse the anchor's repeated
//! objects so the clean prefix never teaches a duplicate burst (stage2_current §2.2).
//!
//! Why before matching: a model stuck in a loop writes the same object many times; matched
//! against ground truth, one copy would match and the rest would become false positives that
//! the prefix keeps as context. Removing them first (and later pushing them down with an
//! unlikelihood term, §2.8) fixes the behaviour at its source. Explorer rollouts protect genuine
//! crowds: several explorer-supported objects are not a burst.
//!
//! The rules (`dc.py` at the reference commit), all on the anchor's bbox-valid objects in
//! rollout order (an object's *position* in that list is its index here):
//! * descriptions compare after [`normalize_desc`] (lower-case, `_ / ( )` → space, whitespace
//!   collapsed and trimmed);
//! * `a`, `b` are **duplicate-like** iff same normalised description and (box IoU ≥
//!   `iou_threshold`, or centre distance ≤ `center_radius_scale · √max(1, min(area_a,
//!   area_b))`), all in bin units;
//! * **clusters** are the connected components of that relation with ≥ 2 members, numbered by
//!   their smallest member;
//! * **desc-aware explorer support** of an anchor object: +1 per explorer view in which it is
//!   paired by the one-to-one maximum-total-IoU association (lexicographic tie-break,
//!   [`crate::pairing`]) over pairs with equal normalised description and IoU ≥ the triage
//!   threshold `unlabeled_consistent_iou_threshold` (DESIGN "Stage 2 decisions" 7: this is the
//!   description-aware notion; triage has its own IoU-only one);
//! * a cluster is **exempt** if ≥ 2 members are supported ("explorer_supported") or, with
//!   `center_radius_scale > 0`, its largest pairwise centre distance exceeds `2.5 ·
//!   center_radius_scale · √max(1, largest member area)` ("spatially_spread");
//! * the **survivor** minimises `(−support, touches bin 0/999, index)`; in a non-exempt cluster
//!   every other member is **suppressed**; exempt and unclustered objects are kept;
//! * a suppressed object is attached to **boundary** `b` = number of kept objects with a smaller
//!   index (triage later remaps it, §3.2).

use crate::boxes;
use crate::pairing;
use crate::view::ViewObject;
use serde::{Deserialize, Serialize};

/// Exemption multiplier of the spread test (`dc.py:10`).
const SPREAD_EXEMPT_MULTIPLIER: f64 = 2.5;

/// Duplicate-control settings. `Default` is production (`_shared/objective_tuned.yaml:3-5`):
/// IoU 0.95, centre radius scale 0.8 (the schema defaults are 0.90 / 0.80).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DuplicateSettings {
    pub iou_threshold: f64,
    pub center_radius_scale: f64,
}

impl Default for DuplicateSettings {
    fn default() -> Self {
        DuplicateSettings { iou_threshold: 0.95, center_radius_scale: 0.8 }
    }
}

/// The reference's description normalisation (`src/common/semantic_desc.py:23-32`).
pub fn normalize_desc(desc: &str) -> String {
    let lowered = desc.trim().to_lowercase();
    let spaced: String =
        lowered.chars().map(|c| if matches!(c, '_' | '/' | '(' | ')') { ' ' } else { c }).collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One cluster of duplicate-like anchor objects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    /// Member object indices, ascending.
    pub members: Vec<usize>,
    /// The member that stays.
    pub survivor: usize,
    /// Exempt clusters keep every member.
    pub exempt: bool,
    /// `explorer_supported` and/or `spatially_spread`.
    pub exemption_reasons: Vec<&'static str>,
    /// Members removed (empty when exempt).
    pub suppressed: Vec<usize>,
    /// Largest pairwise centre distance, in bins.
    pub max_center_distance: f64,
}

/// A suppressed object and the clean-list boundary it interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Suppressed {
    /// Index of the suppressed object in the anchor view.
    pub object: usize,
    /// Number of kept objects before it.
    pub boundary: usize,
}

/// The settings echoed in reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateReportSettings {
    pub iou_threshold: f64,
    pub center_radius_scale: f64,
    /// The IoU threshold of desc-aware explorer support.
    pub support_iou_threshold: f64,
}

/// Diagnostics of the raw anchor list (`dup/raw/*`, stage2_current §6).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct RawDuplicateMetrics {
    pub max_desc_count: usize,
    /// Share of objects touching bin 0 or 999.
    pub saturation_rate: f64,
    pub duplicate_like_max_cluster_size: usize,
    pub desc_entropy: f64,
    /// Pairs with box IoU ≥ 0.9 and the same normalised description.
    pub near_iou90_pairs_same_desc_count: usize,
    /// Pairs with box IoU ≥ 0.9.
    pub near_iou90_pairs_any_desc_count: usize,
}

/// What duplicate control decided for one anchor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Duplicates {
    pub settings: DuplicateReportSettings,
    pub clusters: Vec<Cluster>,
    /// Suppressed object indices, ascending.
    pub suppressed: Vec<usize>,
    /// Kept object indices, ascending: the clean anchor list.
    pub kept: Vec<usize>,
    /// Each suppressed object with its pre-triage boundary.
    pub boundaries: Vec<Suppressed>,
    /// Desc-aware explorer support per anchor object.
    pub support: Vec<usize>,
    pub raw: RawDuplicateMetrics,
}

impl Duplicates {
    /// Clusters that are exempt.
    pub fn exempt_clusters(&self) -> usize {
        self.clusters.iter().filter(|c| c.exempt).count()
    }
}

/// Precomputed geometry of one object.
struct Item {
    desc: String,
    bbox: [f64; 4],
    center: (f64, f64),
    area: f64,
}

fn items(objects: &[ViewObject]) -> Vec<Item> {
    objects
        .iter()
        .map(|o| {
            let bbox = boxes::xyxy(&o.bbox);
            Item {
                desc: normalize_desc(&o.desc),
                bbox,
                center: boxes::center(&bbox),
                area: boxes::area(&bbox),
            }
        })
        .collect()
}

fn duplicate_like(a: &Item, b: &Item, s: &DuplicateSettings) -> bool {
    if a.desc != b.desc {
        return false;
    }
    if boxes::iou(&a.bbox, &b.bbox) >= s.iou_threshold {
        return true;
    }
    let reference = a.area.min(b.area).max(1.0).sqrt();
    boxes::center_distance(a.center, b.center) <= s.center_radius_scale * reference
}

/// Connected components of size ≥ 2 of the duplicate-like relation, members ascending,
/// components ordered by their smallest member.
fn clusters(items: &[Item], s: &DuplicateSettings) -> Vec<Vec<usize>> {
    let n = items.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..n {
        for j in i + 1..n {
            if duplicate_like(&items[i], &items[j], s) {
                let (ri, rj) = (root(&mut parent, i), root(&mut parent, j));
                if ri != rj {
                    parent[ri.max(rj)] = ri.min(rj);
                }
            }
        }
    }
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        let r = root(&mut parent, i);
        groups[r].push(i);
    }
    let mut out: Vec<Vec<usize>> = groups.into_iter().filter(|g| g.len() >= 2).collect();
    out.sort_by_key(|g| g[0]);
    out
}

/// Desc-aware explorer support of every anchor object (module docs).
pub fn desc_aware_support(
    anchor: &[ViewObject],
    explorers: &[&[ViewObject]],
    support_iou_threshold: f64,
) -> Vec<usize> {
    let a = items(anchor);
    let mut support = vec![0; anchor.len()];
    for view in explorers {
        let e = items(view);
        let mut cands = Vec::new();
        for (i, ai) in a.iter().enumerate() {
            for (j, ej) in e.iter().enumerate() {
                if ai.desc != ej.desc {
                    continue;
                }
                let iou = boxes::iou(&ai.bbox, &ej.bbox);
                if iou >= support_iou_threshold {
                    cands.push((i, j, iou));
                }
            }
        }
        for (i, _) in pairing::lexicographic_max_pairs(&cands) {
            support[i] += 1;
        }
    }
    support
}

/// Run duplicate control on the anchor's objects, with explorer views as support.
pub fn control(
    anchor: &[ViewObject],
    explorers: &[&[ViewObject]],
    settings: &DuplicateSettings,
    support_iou_threshold: f64,
) -> Duplicates {
    let it = items(anchor);
    let support = desc_aware_support(anchor, explorers, support_iou_threshold);
    let groups = clusters(&it, settings);
    let raw = raw_metrics(anchor, &it, &groups);
    let mut suppressed = Vec::new();
    let mut out_clusters = Vec::new();
    for members in groups {
        let mut max_center_distance: f64 = 0.0;
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                max_center_distance =
                    max_center_distance.max(boxes::center_distance(it[i].center, it[j].center));
            }
        }
        let largest = members.iter().map(|&i| it[i].area).fold(f64::NEG_INFINITY, f64::max);
        let spread_radius =
            SPREAD_EXEMPT_MULTIPLIER * settings.center_radius_scale * largest.max(1.0).sqrt();
        let mut reasons = Vec::new();
        if members.iter().filter(|&&i| support[i] > 0).count() >= 2 {
            reasons.push("explorer_supported");
        }
        if settings.center_radius_scale > 0.0 && max_center_distance > spread_radius {
            reasons.push("spatially_spread");
        }
        let survivor = members
            .iter()
            .copied()
            .min_by_key(|&i| {
                (std::cmp::Reverse(support[i]), boxes::touches_border(&anchor[i].bbox), i)
            })
            .unwrap_or(members[0]);
        let exempt = !reasons.is_empty();
        let dropped: Vec<usize> = if exempt {
            Vec::new()
        } else {
            members.iter().copied().filter(|&i| i != survivor).collect()
        };
        suppressed.extend(&dropped);
        out_clusters.push(Cluster {
            members,
            survivor,
            exempt,
            exemption_reasons: reasons,
            suppressed: dropped,
            max_center_distance,
        });
    }
    suppressed.sort_unstable();
    let kept: Vec<usize> =
        (0..anchor.len()).filter(|i| suppressed.binary_search(i).is_err()).collect();
    let boundaries = suppressed
        .iter()
        .map(|&s| Suppressed { object: s, boundary: kept.partition_point(|&k| k < s) })
        .collect();
    Duplicates {
        settings: DuplicateReportSettings {
            iou_threshold: settings.iou_threshold,
            center_radius_scale: settings.center_radius_scale,
            support_iou_threshold,
        },
        clusters: out_clusters,
        suppressed,
        kept,
        boundaries,
        support,
        raw,
    }
}

/// The `dup/raw/*` diagnostics (`dc.py:287-334`).
fn raw_metrics(anchor: &[ViewObject], it: &[Item], groups: &[Vec<usize>]) -> RawDuplicateMetrics {
    let n = it.len();
    if n == 0 {
        return RawDuplicateMetrics::default();
    }
    // Counts in first-occurrence order (the order Python's Counter iterates).
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for item in it {
        match counts.iter_mut().find(|(d, _)| *d == item.desc) {
            Some((_, c)) => *c += 1,
            None => counts.push((&item.desc, 1)),
        }
    }
    let mut entropy = 0.0;
    for &(_, c) in &counts {
        let p = c as f64 / n as f64;
        entropy -= p * p.max(1e-12).ln();
    }
    let (mut same, mut any) = (0, 0);
    for i in 0..n {
        for j in i + 1..n {
            if boxes::iou(&it[i].bbox, &it[j].bbox) >= 0.90 {
                any += 1;
                if it[i].desc == it[j].desc {
                    same += 1;
                }
            }
        }
    }
    RawDuplicateMetrics {
        max_desc_count: counts.iter().map(|c| c.1).max().unwrap_or(0),
        saturation_rate: anchor.iter().filter(|o| boxes::touches_border(&o.bbox)).count() as f64
            / n as f64,
        duplicate_like_max_cluster_size: groups.iter().map(Vec::len).max().unwrap_or(1),
        desc_entropy: entropy,
        near_iou90_pairs_same_desc_count: same,
        near_iou90_pairs_any_desc_count: any,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coordexp_core::norm1000::Bin;

    fn obj(desc: &str, c: [u16; 4]) -> ViewObject {
        ViewObject {
            array_index: 0,
            desc: desc.to_owned(),
            bbox: c.map(|k| Bin::new(k).unwrap()),
            span: 0..0,
        }
    }

    #[test]
    fn descriptions_normalise_like_the_reference() {
        assert_eq!(normalize_desc("  Traffic_Light/(Red)  "), "traffic light red");
        assert_eq!(normalize_desc("a\t\tb"), "a b");
        assert_eq!(normalize_desc("()"), "");
    }

    #[test]
    fn a_burst_of_identical_boxes_keeps_its_first_member_and_suppresses_the_rest() {
        let a = [
            obj("car", [10, 10, 100, 100]),
            obj("Car", [10, 10, 100, 100]),
            obj("tree", [500, 500, 600, 600]),
            obj("car", [11, 10, 100, 100]),
        ];
        let d = control(&a, &[], &DuplicateSettings::default(), 0.9);
        assert_eq!(d.clusters.len(), 1);
        assert_eq!(d.clusters[0].members, vec![0, 1, 3]);
        assert_eq!(d.clusters[0].survivor, 0);
        assert_eq!(d.suppressed, vec![1, 3]);
        assert_eq!(d.kept, vec![0, 2]);
        assert_eq!(
            d.boundaries,
            vec![Suppressed { object: 1, boundary: 1 }, Suppressed { object: 3, boundary: 2 }]
        );
        assert_eq!(d.raw.max_desc_count, 3);
        assert_eq!(d.raw.duplicate_like_max_cluster_size, 3);
    }

    #[test]
    fn different_descriptions_are_never_duplicates() {
        let a = [obj("car", [10, 10, 100, 100]), obj("truck", [10, 10, 100, 100])];
        let d = control(&a, &[], &DuplicateSettings::default(), 0.9);
        assert!(d.clusters.is_empty() && d.suppressed.is_empty());
        assert_eq!(d.raw.near_iou90_pairs_any_desc_count, 1);
        assert_eq!(d.raw.near_iou90_pairs_same_desc_count, 0);
    }

    #[test]
    fn near_centres_are_duplicates_even_with_low_iou() {
        // IoU 0.81 < 0.95, centre distance 5 ≤ 0.8·√(90·90).
        let a = [obj("car", [10, 10, 100, 100]), obj("car", [15, 10, 105, 100])];
        let d = control(&a, &[], &DuplicateSettings::default(), 0.9);
        assert_eq!(d.suppressed, vec![1]);
    }

    #[test]
    fn explorer_support_picks_the_survivor_and_two_supported_members_exempt_the_cluster() {
        let a = [obj("car", [10, 10, 100, 100]), obj("car", [12, 10, 100, 100])];
        // One explorer confirms member 1 only: it survives.
        let e1 = [obj("car", [12, 10, 100, 100])];
        let d = control(&a, &[&e1], &DuplicateSettings::default(), 0.9);
        assert_eq!(d.support, vec![0, 1]);
        assert_eq!(d.clusters[0].survivor, 1);
        assert_eq!(d.suppressed, vec![0]);
        assert_eq!(d.boundaries, vec![Suppressed { object: 0, boundary: 0 }]);
        // An explorer with two matching objects supports both: exempt.
        let e2 = [obj("car", [10, 10, 100, 100]), obj("car", [12, 10, 100, 100])];
        let d = control(&a, &[&e2], &DuplicateSettings::default(), 0.9);
        assert!(d.clusters[0].exempt);
        assert_eq!(d.clusters[0].exemption_reasons, vec!["explorer_supported"]);
        assert!(d.suppressed.is_empty());
    }

    #[test]
    fn border_touching_members_lose_the_survivor_tie() {
        let a = [obj("car", [0, 10, 100, 100]), obj("car", [1, 10, 100, 100])];
        let d = control(&a, &[], &DuplicateSettings::default(), 0.9);
        assert_eq!(d.clusters[0].survivor, 1);
    }

    #[test]
    fn a_spread_chain_of_small_boxes_is_exempt() {
        // Each neighbour is within 0.8·√area of the next, but the chain spans far.
        let a: Vec<ViewObject> =
            (0..6).map(|i| obj("dot", [10 + 8 * i, 10, 20 + 8 * i, 20])).collect();
        let d = control(&a, &[], &DuplicateSettings::default(), 0.9);
        assert_eq!(d.clusters.len(), 1);
        assert_eq!(d.clusters[0].exemption_reasons, vec!["spatially_spread"]);
        assert!(d.suppressed.is_empty());
    }
}
