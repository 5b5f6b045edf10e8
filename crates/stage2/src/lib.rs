//! coordexp-stage2: what channel B of stage 2 makes of a rollout, as pure data (no tensors).
//!
//! Channel B lets the model write its own answer (a greedy *anchor* and sampled *explorers*),
//! then decides — before any forward pass — what to teach from it: which of its objects are
//! trustworthy context, which ground truth it missed, which repeats to push down. Everything
//! here is a deterministic function of the rollout texts, the ground truth and [`Settings`], so
//! it is tested without a model and printed by a debugging command as JSON.
//!
//! The pipeline of [`decide`], one module per step (stage2_current.md §2–§3):
//! 1. [`view`] — rollout text → bbox-valid objects and counted drops (§2.1; stage2_rollout §3.5).
//! 2. [`dup`] — duplicate control on the anchor, explorer-protected (§2.2).
//! 3. [`matching`] — Hungarian on mask IoU ([`mask`]) for the clean anchors and each explorer
//!    view (§2.3; stage2_rollout §3.7); [`pairing`] holds the one-to-one association shared by
//!    duplicate support and triage.
//! 4. [`triage`] — matched / shielded / dead, recovered ground truth, pseudo-positives (§3).
//! 5. [`target`] — the clean prefix, FN injection and per-byte roles and weights (§2.4–§2.7).
//! 6. [`unlikelihood`] — the duplicate-burst alternatives (§2.8); [`unlikelihood::resolve`]
//!    finds their divergent tokens given a tokenizer.

pub mod boxes;
pub mod dup;
pub mod mask;
pub mod matching;
pub mod pairing;
pub mod target;
pub mod triage;
pub mod unlikelihood;
pub mod view;

pub use dup::{DuplicateSettings, Duplicates, normalize_desc};
pub use matching::{MatchSettings, Matching};
pub use target::{InsertionOrder, Role, Target, TokenKind, TokenWeight};
pub use triage::{Label, Triage};
pub use unlikelihood::{Tokenize, UlTargets};
pub use view::{DropKind, View, ViewObject};

use coordexp_core::coordjson::FieldOrder;
use coordexp_core::norm1000::Bin;
use coordexp_core::record::{Geometry, Object};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Pseudo-positive mode (`stage2_ab.channel_b.pseudo_positive`, §3.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PseudoPositiveSettings {
    pub enabled: bool,
    /// Coordinate weight of a selected pseudo-positive, in (0, 1).
    pub coord_weight: f64,
}

impl Default for PseudoPositiveSettings {
    fn default() -> Self {
        PseudoPositiveSettings { enabled: false, coord_weight: 0.5 }
    }
}

/// Every knob of channel B's decisions. `Default` is the reference's production configuration
/// (stage2_current §2.2, §2.3, §3.3, §3.4, §4.7; `base.yaml`, `_shared/objective_tuned.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Duplicate control: IoU 0.95, centre radius scale 0.8.
    pub duplicate: DuplicateSettings,
    /// IoU threshold of explorer support and triage association (base 0.9).
    pub unlabeled_consistent_iou_threshold: f64,
    /// Matching: top-k 5, gate 0.5, resolution 256, fp 1.0, fn 1.2.
    pub matching: MatchSettings,
    /// Where missed ground truth goes (default `tail_append`).
    pub insertion_order: InsertionOrder,
    /// `g` = `rollout_global_prefix_struct_ce_weight` (1.0).
    pub global_prefix_weight: f64,
    /// `rollout_fn_desc_weight` (1.0).
    pub fn_desc_weight: f64,
    /// `recovered_ground_truth_weight_multiplier` (2.0; ≥ 1).
    pub recovered_gt_weight_multiplier: f64,
    /// Off by default.
    pub pseudo_positive: PseudoPositiveSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            duplicate: DuplicateSettings::default(),
            unlabeled_consistent_iou_threshold: 0.9,
            matching: MatchSettings::default(),
            insertion_order: InsertionOrder::TailAppend,
            global_prefix_weight: 1.0,
            fn_desc_weight: 1.0,
            recovered_gt_weight_multiplier: 2.0,
            pseudo_positive: PseudoPositiveSettings::default(),
        }
    }
}

impl Settings {
    /// Every problem with these settings (empty when usable), each naming its field. [`decide`]
    /// never panics on bad settings, but its results are meaningless with them.
    pub fn check(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut unit = |name: &str, v: f64| {
            if !(0.0..=1.0).contains(&v) {
                out.push(format!("{name} must be in [0, 1], got {v}"));
            }
        };
        unit("duplicate.iou_threshold", self.duplicate.iou_threshold);
        unit("unlabeled_consistent_iou_threshold", self.unlabeled_consistent_iou_threshold);
        unit("matching.gate", self.matching.gate);
        let mut nonneg = |name: &str, v: f64| {
            if !(v.is_finite() && v >= 0.0) {
                out.push(format!("{name} must be a finite number >= 0, got {v}"));
            }
        };
        nonneg("duplicate.center_radius_scale", self.duplicate.center_radius_scale);
        nonneg("matching.fp_cost", self.matching.fp_cost);
        nonneg("matching.fn_cost", self.matching.fn_cost);
        nonneg("global_prefix_weight", self.global_prefix_weight);
        nonneg("fn_desc_weight", self.fn_desc_weight);
        if !(self.recovered_gt_weight_multiplier.is_finite()
            && self.recovered_gt_weight_multiplier >= 1.0)
        {
            out.push(format!(
                "recovered_gt_weight_multiplier must be >= 1, got {}",
                self.recovered_gt_weight_multiplier
            ));
        }
        if !(1..=mask::MAX_RESOLUTION).contains(&self.matching.mask_resolution) {
            out.push(format!(
                "matching.mask_resolution must be in 1..={}, got {}",
                mask::MAX_RESOLUTION,
                self.matching.mask_resolution
            ));
        }
        let cw = self.pseudo_positive.coord_weight;
        if !(cw > 0.0 && cw < 1.0) {
            out.push(format!("pseudo_positive.coord_weight must be in (0, 1), got {cw}"));
        }
        out
    }

    fn target_weights(&self) -> target::TargetWeights {
        target::TargetWeights {
            global_prefix_weight: self.global_prefix_weight,
            fn_desc_weight: self.fn_desc_weight,
            recovered_gt_weight_multiplier: self.recovered_gt_weight_multiplier,
            pseudo_positive: self.pseudo_positive.enabled,
            pseudo_positive_coord_weight: self.pseudo_positive.coord_weight,
        }
    }
}

/// A rollout view in reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewSummary {
    pub invalid: bool,
    pub truncated: bool,
    /// Records the parser accepted (boxes and polygons).
    pub parsed_records: usize,
    /// Bbox-valid objects.
    pub objects: usize,
    #[serde(rename = "N_drop_invalid")]
    pub n_drop_invalid: usize,
}

impl ViewSummary {
    fn of(v: &View) -> Self {
        ViewSummary {
            invalid: v.invalid,
            truncated: v.truncated,
            parsed_records: v.parsed_records,
            objects: v.objects.len(),
            n_drop_invalid: v.n_drop_invalid(),
        }
    }
}

/// A clean anchor (duplicate-control survivor) in reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CleanObject {
    /// Index in the anchor view (what `duplicates` refers to).
    pub object: usize,
    /// Position in the rollout's `objects` array.
    pub array_index: usize,
    pub desc: String,
    #[serde(rename = "bbox_2d", with = "serde_bins")]
    pub bbox: [Bin; 4],
}

/// Per-sample counters, named after the reference's metric keys (stage2_current §6).
/// Rates are given as numerator and denominator, never pre-divided (DESIGN decision 4).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Counters {
    /// `stage2_ab/channel_b/invalid_rollout`: the anchor had no usable container.
    pub invalid_rollout: usize,
    /// Anchor truncated (`rollout/parse_truncated` counts anchor + explorers).
    pub anchor_parse_truncated: usize,
    pub explorer_parse_truncated: usize,
    /// Explorer views without a usable container (they vote with zero objects; in
    /// pseudo-positive mode the reference's `invalid_rollout_policy` applies to them).
    pub invalid_explorer_rollouts: usize,
    /// `strict_drop/N_valid_pred`: bbox-valid anchor objects.
    #[serde(rename = "N_valid_pred")]
    pub n_valid_pred: usize,
    /// `strict_drop/N_drop_invalid`: anchor drops, each once.
    #[serde(rename = "N_drop_invalid")]
    pub n_drop_invalid: usize,
    /// `strict_drop/reason/<r>`, non-zero reasons only.
    pub drop_reasons: BTreeMap<String, usize>,
    /// `stage2/drop_poly`, `drop_unknown`, `drop_bbox_invalid`.
    pub drop_poly: usize,
    pub drop_unknown: usize,
    pub drop_bbox_invalid: usize,
    /// `dup/*`.
    #[serde(rename = "N_raw_bbox_valid")]
    pub n_raw_bbox_valid: usize,
    #[serde(rename = "N_clean_accepted")]
    pub n_clean_accepted: usize,
    #[serde(rename = "N_clusters_total")]
    pub n_clusters_total: usize,
    #[serde(rename = "N_clusters_exempt")]
    pub n_clusters_exempt: usize,
    #[serde(rename = "N_clusters_suppressed")]
    pub n_clusters_suppressed: usize,
    #[serde(rename = "N_objects_suppressed")]
    pub n_objects_suppressed: usize,
    /// Matching of the clean anchors.
    pub gt_objects: usize,
    pub matched: usize,
    #[serde(rename = "fn")]
    pub fn_count: usize,
    pub fp: usize,
    pub gating_rejections: usize,
    pub matched_maskiou_sum: f64,
    pub matched_maskiou_count: usize,
    /// Of the FN, how many were recovered by explorers.
    pub fn_recovered: usize,
    /// `train/triage/*`.
    pub gt_backed: usize,
    pub unlabeled_consistent: usize,
    pub dead_anchor: usize,
    pub dead_anchor_rate_den: usize,
    pub explorer_only_dead: usize,
    pub explorer_only_dead_rate_den: usize,
    pub pseudo_positive_candidate: usize,
    pub pseudo_positive_subthreshold: usize,
    pub pseudo_positive_selected: usize,
    pub pseudo_positive_cluster_demoted: usize,
    pub pseudo_positive_support_rate_num: usize,
    pub pseudo_positive_support_rate_den: usize,
    pub pseudo_positive_selected_support_rate_num: usize,
    pub pseudo_positive_selected_support_rate_den: usize,
    pub recovered_ground_truth: usize,
    pub recovered_ground_truth_rate_num: usize,
    pub recovered_ground_truth_rate_den: usize,
    pub explorer_views: usize,
    /// Clean anchors kept in the prefix (matched + shielded).
    pub retained: usize,
    /// Object entries in the target: retained anchors and injected FN.
    pub target_objects: usize,
    /// Duplicate-burst candidates (suppressed duplicates placed at a boundary).
    pub ul_candidates: usize,
}

/// Everything channel B decided for one sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub settings: Settings,
    pub field_order: FieldOrder,
    pub anchor: ViewSummary,
    pub explorers: Vec<ViewSummary>,
    /// The duplicate-control survivors, in rollout order; `matching` and `triage` index this
    /// list.
    pub clean: Vec<CleanObject>,
    /// The anchor's dropped records.
    pub dropped: Vec<view::DroppedRecord>,
    pub duplicates: Duplicates,
    /// Clean anchors vs ground truth.
    pub matching: Matching,
    /// Each explorer view's objects vs ground truth.
    pub explorer_matching: Vec<Matching>,
    pub triage: Triage,
    pub target: Target,
    /// Duplicate-burst alternatives; resolve them with [`unlikelihood::resolve`].
    pub unlikelihood: Vec<unlikelihood::Candidate>,
    pub counters: Counters,
    /// The parsed anchor view (not serialised; objects are in `clean` and `duplicates`).
    #[serde(skip)]
    pub anchor_view: View,
    /// The parsed explorer views (not serialised).
    #[serde(skip)]
    pub explorer_views: Vec<View>,
}

impl Decision {
    /// Resolve the duplicate-burst unlikelihood targets with a whole-string tokenizer.
    pub fn unlikelihood_targets(&self, tokenize: Tokenize<'_>) -> coordexp_core::Result<UlTargets> {
        unlikelihood::resolve(&self.target.text, &self.unlikelihood, tokenize)
    }
}

/// Decide channel B for one sample: `anchor` and `explorers` are the rollouts' decoded answer
/// texts, `gt` the record's objects (in bins, boxes or polygons), `order` the prompt's field
/// order. Never panics, whatever the texts.
pub fn decide(
    anchor: &str,
    explorers: &[&str],
    gt: &[Object<Bin>],
    settings: &Settings,
    order: FieldOrder,
) -> Decision {
    let anchor_view = View::parse(anchor, order);
    let explorer_views: Vec<View> = explorers.iter().map(|t| View::parse(t, order)).collect();
    let explorer_objects: Vec<&[ViewObject]> =
        explorer_views.iter().map(|v| v.objects.as_slice()).collect();
    let gt_geometry: Vec<Geometry<Bin>> = gt.iter().map(|o| o.geometry.clone()).collect();

    // §2.2 duplicate control, then §2.3 matching of the survivors and of every explorer view.
    let duplicates = dup::control(
        &anchor_view.objects,
        &explorer_objects,
        &settings.duplicate,
        settings.unlabeled_consistent_iou_threshold,
    );
    let clean: Vec<ViewObject> =
        duplicates.kept.iter().map(|&i| anchor_view.objects[i].clone()).collect();
    let clean_boxes: Vec<[Bin; 4]> = clean.iter().map(|o| o.bbox).collect();
    let anchor_match = matching::hungarian(&clean_boxes, &gt_geometry, &settings.matching);
    let explorer_matching: Vec<Matching> = explorer_objects
        .iter()
        .map(|objs| {
            let b: Vec<[Bin; 4]> = objs.iter().map(|o| o.bbox).collect();
            matching::hungarian(&b, &gt_geometry, &settings.matching)
        })
        .collect();

    // §3 triage; duplicate boundaries are expressed in clean-list positions first.
    let triage = triage::triage(
        &clean,
        &anchor_match,
        &explorer_objects,
        &explorer_matching,
        &duplicates.boundaries,
        &triage::TriageSettings {
            unlabeled_consistent_iou_threshold: settings.unlabeled_consistent_iou_threshold,
            duplicate_iou_threshold: settings.duplicate.iou_threshold,
            pseudo_positive: settings.pseudo_positive.enabled,
        },
    );

    // §2.5 the target: retained anchors with their roles, then the missed ground truth.
    let anchors: Vec<target::AnchorEntry<'_>> = triage
        .retained
        .iter()
        .map(|&i| {
            let (support, support_rate) = (triage.support[i], triage.support_rate[i]);
            let (role, gt_box) = match triage.labels[i] {
                Label::MatchedClean { gt: g } => {
                    let agrees = gt.get(g).is_some_and(|o| {
                        normalize_desc(o.desc.as_str()) == normalize_desc(&clean[i].desc)
                    });
                    (
                        Role::Matched { clean: i, gt: g, desc_agrees: agrees },
                        gt_geometry.get(g).map(boxes::extent_bins),
                    )
                }
                Label::PseudoPositive => {
                    (Role::PseudoPositive { clean: i, support, support_rate }, None)
                }
                Label::Demoted => (Role::Demoted { clean: i, support, support_rate }, None),
                // `retained` holds no dead anchor; the arm only keeps the match total.
                Label::Shielded | Label::Dead => {
                    (Role::Shielded { clean: i, support, support_rate }, None)
                }
            };
            target::AnchorEntry { role, desc: &clean[i].desc, bbox: clean[i].bbox, gt_box }
        })
        .collect();
    let fns: Vec<target::FnEntry<'_>> = anchor_match
        .fn_gt
        .iter()
        .filter_map(|&g| {
            gt.get(g).map(|o| target::FnEntry {
                gt: g,
                desc: o.desc.as_str(),
                geometry: &o.geometry,
                recovered: triage.is_recovered(g),
            })
        })
        .collect();
    let target =
        target::build(&anchors, &fns, &settings.target_weights(), settings.insertion_order, order);

    // §2.8 the duplicate-burst alternatives.
    let duplicates_placed: Vec<unlikelihood::Duplicate<'_>> = triage
        .suppressed
        .iter()
        .filter_map(|s| {
            anchor_view.objects.get(s.object).map(|o| unlikelihood::Duplicate {
                object: s.object,
                boundary: s.boundary,
                desc: &o.desc,
                bbox: o.bbox,
            })
        })
        .collect();
    let ul = unlikelihood::candidates(&target, &duplicates_placed, order);

    let counters = counters(
        &anchor_view,
        &explorer_views,
        &duplicates,
        &anchor_match,
        &triage,
        &target,
        gt.len(),
        ul.len(),
    );
    Decision {
        settings: settings.clone(),
        field_order: order,
        anchor: ViewSummary::of(&anchor_view),
        explorers: explorer_views.iter().map(ViewSummary::of).collect(),
        clean: duplicates
            .kept
            .iter()
            .zip(&clean)
            .map(|(&object, o)| CleanObject {
                object,
                array_index: o.array_index,
                desc: o.desc.clone(),
                bbox: o.bbox,
            })
            .collect(),
        dropped: anchor_view.dropped.clone(),
        duplicates,
        matching: anchor_match,
        explorer_matching,
        triage,
        target,
        unlikelihood: ul,
        counters,
        anchor_view,
        explorer_views,
    }
}

#[allow(clippy::too_many_arguments)]
fn counters(
    anchor: &View,
    explorers: &[View],
    dups: &Duplicates,
    m: &Matching,
    t: &Triage,
    target: &Target,
    gt_objects: usize,
    ul_candidates: usize,
) -> Counters {
    let with = |f: fn(&Label) -> bool| t.with_label(f);
    let shielded = with(|l| matches!(l, Label::Shielded | Label::Demoted));
    let selected = with(|l| matches!(l, Label::PseudoPositive));
    let views = t.explorer_views;
    let fn_recovered = target
        .entries
        .iter()
        .filter(|e| matches!(e.role, Role::Fn { recovered: true, .. }))
        .count();
    Counters {
        invalid_rollout: usize::from(anchor.invalid),
        anchor_parse_truncated: usize::from(anchor.truncated),
        explorer_parse_truncated: explorers.iter().filter(|v| v.truncated).count(),
        invalid_explorer_rollouts: explorers.iter().filter(|v| v.invalid).count(),
        n_valid_pred: anchor.objects.len(),
        n_drop_invalid: anchor.n_drop_invalid(),
        drop_reasons: anchor.drops_by_reason(),
        drop_poly: anchor.count(DropKind::PolyUnsupported),
        drop_unknown: anchor.count(DropKind::UnknownGeom),
        drop_bbox_invalid: anchor.count(DropKind::BboxInvalid),
        n_raw_bbox_valid: anchor.objects.len(),
        n_clean_accepted: dups.kept.len(),
        n_clusters_total: dups.clusters.len(),
        n_clusters_exempt: dups.exempt_clusters(),
        n_clusters_suppressed: dups.clusters.len() - dups.exempt_clusters(),
        n_objects_suppressed: dups.suppressed.len(),
        gt_objects,
        matched: m.pairs.len(),
        fn_count: m.fn_gt.len(),
        fp: m.fp.len(),
        gating_rejections: m.gating_rejections,
        matched_maskiou_sum: m.matched_maskiou_sum,
        matched_maskiou_count: m.matched_maskiou_count,
        fn_recovered,
        gt_backed: m.pairs.len(),
        unlabeled_consistent: shielded.len(),
        dead_anchor: with(|l| matches!(l, Label::Dead)).len(),
        dead_anchor_rate_den: t.labels.len(),
        explorer_only_dead: t.dead_explorer_objects.iter().map(Vec::len).sum(),
        explorer_only_dead_rate_den: explorers.iter().map(|v| v.objects.len()).sum(),
        pseudo_positive_candidate: t.pseudo_positive_candidates.len(),
        pseudo_positive_subthreshold: shielded.len(),
        pseudo_positive_selected: selected.len(),
        pseudo_positive_cluster_demoted: with(|l| matches!(l, Label::Demoted)).len(),
        pseudo_positive_support_rate_num: t
            .pseudo_positive_candidates
            .iter()
            .map(|&i| t.support[i])
            .sum(),
        pseudo_positive_support_rate_den: views * t.pseudo_positive_candidates.len(),
        pseudo_positive_selected_support_rate_num: selected.iter().map(|&i| t.support[i]).sum(),
        pseudo_positive_selected_support_rate_den: views * selected.len(),
        recovered_ground_truth: t.recovered.len(),
        recovered_ground_truth_rate_num: t.recovered.iter().map(|r| r.support).sum(),
        recovered_ground_truth_rate_den: views * t.recovered.len(),
        explorer_views: views,
        retained: t.retained.len(),
        target_objects: target.entries.len(),
        ul_candidates,
    }
}

/// Serialise bins as plain integers (`[16, 43, 470, 837]`).
pub(crate) mod serde_bins {
    use coordexp_core::norm1000::Bin;
    use serde::Serializer;
    use serde::ser::SerializeSeq;

    pub fn serialize<S: Serializer, B: AsRef<[Bin]>>(bins: &B, s: S) -> Result<S::Ok, S::Error> {
        let bins = bins.as_ref();
        let mut seq = s.serialize_seq(Some(bins.len()))?;
        for b in bins {
            seq.serialize_element(&b.get())?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_to_production_and_fill_partial_input() {
        let s: Settings = serde_json::from_str(
            r#"{"duplicate": {"iou_threshold": 0.9}, "insertion_order": "sorted"}"#,
        )
        .unwrap();
        assert_eq!(s.duplicate, DuplicateSettings { iou_threshold: 0.9, center_radius_scale: 0.8 });
        assert_eq!(s.insertion_order, InsertionOrder::Sorted);
        assert_eq!(s.matching, MatchSettings::default());
        let d = Settings::default();
        assert_eq!(
            (d.duplicate.iou_threshold, d.unlabeled_consistent_iou_threshold, d.matching.fn_cost),
            (0.95, 0.9, 1.2)
        );
        assert_eq!(d.recovered_gt_weight_multiplier, 2.0);
        assert!(!d.pseudo_positive.enabled);
    }

    #[test]
    fn settings_reject_unknown_keys() {
        assert!(serde_json::from_str::<Settings>(r#"{"matching": {"top_k": 3}}"#).is_err());
        assert!(serde_json::from_str::<Settings>(r#"{"gate": 0.5}"#).is_err());
    }
}
