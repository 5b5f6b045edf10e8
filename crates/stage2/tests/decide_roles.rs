//! `decide` on hand-built rollouts, one per role and abnormal case of stage2_current §2–§3:
//! what lands in the target, with which role and weights, and what is counted.

use coordexp_core::coordjson::{FieldOrder, parse_strict};
use coordexp_core::norm1000::Bin;
use coordexp_core::record::{Desc, Geometry, Object, Polygon};
use coordexp_stage2::target::CoordTarget;
use coordexp_stage2::{InsertionOrder, Label, Role, Settings, decide};
use std::ops::Range;

const DF: FieldOrder = FieldOrder::DescFirst;

fn bins(c: [u16; 4]) -> [Bin; 4] {
    c.map(|k| Bin::new(k).unwrap())
}

fn record(desc: &str, c: [u16; 4], order: FieldOrder) -> String {
    let toks: Vec<String> = c.iter().map(|&k| Bin::new(k).unwrap().token()).collect();
    let geom = format!("\"bbox_2d\": [{}]", toks.join(", "));
    match order {
        FieldOrder::DescFirst => format!("{{\"desc\": \"{desc}\", {geom}}}"),
        FieldOrder::GeometryFirst => format!("{{{geom}, \"desc\": \"{desc}\"}}"),
    }
}

fn rollout(objects: &[(&str, [u16; 4])]) -> String {
    rollout_in(objects, DF)
}

fn rollout_in(objects: &[(&str, [u16; 4])], order: FieldOrder) -> String {
    let recs: Vec<String> = objects.iter().map(|(d, c)| record(d, *c, order)).collect();
    format!("{{\"objects\": [{}]}}", recs.join(", "))
}

fn gt_box(desc: &str, c: [u16; 4]) -> Object<Bin> {
    Object::new(Desc::new(desc).unwrap(), Geometry::BBox(bins(c)))
}

fn gt_poly(desc: &str, pts: &[[u16; 2]]) -> Object<Bin> {
    let p = Polygon::new(
        pts.iter().map(|[x, y]| [Bin::new(*x).unwrap(), Bin::new(*y).unwrap()]).collect(),
    )
    .unwrap();
    Object::new(Desc::new(desc).unwrap(), Geometry::Poly(p))
}

/// A toy whole-string tokenizer: coordinate tokens, letter runs, single other bytes.
fn toy_tokenize(s: &str) -> coordexp_core::Result<Vec<(u32, Range<usize>)>> {
    let b = s.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        let start = i;
        if s[i..].starts_with("<|coord_") {
            i += s[i..].find("|>").map_or(1, |k| k + 2);
        } else if b[i].is_ascii_alphabetic() {
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
        } else {
            i += 1;
        }
        let id =
            s[start..i].bytes().fold(7u32, |h, c| h.wrapping_mul(131).wrapping_add(u32::from(c)));
        out.push((id, start..i));
    }
    Ok(out)
}

#[test]
fn a_matched_anchor_is_supervised_towards_its_ground_truth_box_with_its_description() {
    let gt = [gt_box("red circle", [100, 100, 300, 300])];
    let d = decide(
        &rollout(&[("Red_Circle", [102, 100, 300, 298])]),
        &[],
        &gt,
        &Settings::default(),
        DF,
    );
    assert_eq!(d.matching.pairs, vec![[0, 0]]);
    assert_eq!(d.triage.labels, vec![Label::MatchedClean { gt: 0 }]);
    let e = &d.target.entries[0];
    assert_eq!(e.role, Role::Matched { clean: 0, gt: 0, desc_agrees: true });
    assert!(e.in_prefix);
    assert_eq!(e.desc_weight, 1.0, "normalised descriptions agree: CE on the description");
    assert_eq!(
        e.coord_target,
        Some(CoordTarget { bins: bins([100, 100, 300, 300]).to_vec(), weight: 1.0 })
    );
    assert_eq!(d.target.entries.len(), 1, "nothing missed");
    assert_eq!(d.counters.matched, 1);
    assert_eq!(d.counters.fn_count, 0);
    // The prefix keeps the model's own words and bins.
    assert!(d.target.text.contains("\"Red_Circle\""));
    assert!(d.target.text.contains(&Bin::new(102).unwrap().token()));
}

#[test]
fn a_matched_anchor_with_another_description_has_its_description_masked() {
    let gt = [gt_box("red circle", [100, 100, 300, 300])];
    let d = decide(
        &rollout(&[("blue square", [100, 100, 300, 300])]),
        &[],
        &gt,
        &Settings::default(),
        DF,
    );
    let e = &d.target.entries[0];
    assert_eq!(e.role, Role::Matched { clean: 0, gt: 0, desc_agrees: false });
    assert_eq!(e.desc_weight, 0.0);
    assert_eq!(e.struct_weight, 1.0);
    assert!(e.coord_target.is_some());
}

#[test]
fn missed_ground_truth_is_injected_after_the_prefix_in_index_order() {
    let gt = [
        gt_box("tree", [600, 600, 700, 700]),
        gt_box("red circle", [100, 100, 300, 300]),
        gt_box("car", [10, 800, 90, 900]),
    ];
    let settings =
        Settings { fn_desc_weight: 1.5, global_prefix_weight: 0.5, ..Settings::default() };
    let d = decide(&rollout(&[("red circle", [100, 100, 300, 300])]), &[], &gt, &settings, DF);
    let roles: Vec<Role> = d.target.entries.iter().map(|e| e.role).collect();
    assert_eq!(
        roles,
        vec![
            Role::Matched { clean: 0, gt: 1, desc_agrees: true },
            Role::Fn { gt: 0, recovered: false },
            Role::Fn { gt: 2, recovered: false },
        ]
    );
    let fn0 = &d.target.entries[1];
    assert!(!fn0.in_prefix);
    assert_eq!((fn0.struct_weight, fn0.desc_weight), (1.0, 1.5));
    assert_eq!(
        fn0.coord_target,
        Some(CoordTarget { bins: bins([600, 600, 700, 700]).to_vec(), weight: 1.0 })
    );
    assert_eq!(d.target.entries[0].desc_weight, 0.5, "prefix description weight is g");
    assert_eq!(&d.target.text[d.target.prefix_end..d.target.prefix_end + 2], ", ");
    assert!(d.target.prefix_end < fn0.span.start);
    assert_eq!(d.matching.fn_gt, vec![0, 2]);
}

#[test]
fn a_dead_anchor_leaves_the_prefix_and_is_counted() {
    let gt = [gt_box("red circle", [100, 100, 300, 300])];
    let text = rollout(&[("ghost", [600, 600, 700, 700]), ("red circle", [100, 100, 300, 300])]);
    let d = decide(&text, &[], &gt, &Settings::default(), DF);
    assert_eq!(d.triage.labels, vec![Label::Dead, Label::MatchedClean { gt: 0 }]);
    assert_eq!(d.triage.retained, vec![1]);
    assert!(!d.target.text.contains("ghost"));
    assert_eq!(d.target.entries.len(), 1);
    assert_eq!(d.target.entries[0].role, Role::Matched { clean: 1, gt: 0, desc_agrees: true });
    assert_eq!((d.counters.dead_anchor, d.counters.fp, d.counters.gt_backed), (1, 1, 1));
}

#[test]
fn an_explorer_supported_unmatched_anchor_is_shielded_context_without_targets() {
    let gt = [gt_box("red circle", [100, 100, 300, 300])];
    let anchor = rollout(&[("lamp", [600, 600, 700, 700]), ("red circle", [100, 100, 300, 300])]);
    let explorer = rollout(&[("lamp post", [600, 601, 700, 700])]);
    let d = decide(&anchor, &[&explorer], &gt, &Settings::default(), DF);
    assert_eq!(d.triage.labels[0], Label::Shielded);
    assert_eq!(d.triage.support[0], 1, "IoU-only association ignores the description");
    let e = &d.target.entries[0];
    assert_eq!(e.role, Role::Shielded { clean: 0, support: 1, support_rate: 1.0 });
    assert_eq!((e.struct_weight, e.desc_weight), (1.0, 0.0));
    assert_eq!(e.coord_target, None, "pseudo-positive mode off: no coordinate target");
    assert_eq!(d.counters.unlabeled_consistent, 1);
    // With pseudo-positive on, a shielded anchor gets its own box at coord_weight × rate.
    let mut s = Settings::default();
    s.pseudo_positive.enabled = true;
    let d = decide(&anchor, &[&explorer, "{\"objects\": []}"], &gt, &s, DF);
    let e = &d.target.entries[0];
    assert_eq!(e.role, Role::Shielded { clean: 0, support: 1, support_rate: 0.5 });
    assert_eq!(
        e.coord_target,
        Some(CoordTarget { bins: bins([600, 600, 700, 700]).to_vec(), weight: 0.25 })
    );
}

#[test]
fn well_supported_anchors_become_one_pseudo_positive_per_component() {
    let anchor = rollout(&[
        ("lamp", [600, 600, 700, 700]),
        ("Lamp", [600, 600, 700, 701]),
        ("sign", [100, 100, 200, 200]),
    ]);
    let explorer = rollout(&[
        ("lamp", [600, 600, 700, 700]),
        ("lamp", [600, 600, 700, 701]),
        ("sign", [100, 100, 200, 200]),
    ]);
    let mut s = Settings::default();
    s.pseudo_positive.enabled = true;
    let d = decide(&anchor, &[&explorer, &explorer, &explorer], &[], &s, DF);
    // The two lamps are explorer-supported duplicates (exempt cluster), then one component.
    assert!(d.duplicates.clusters[0].exempt);
    assert_eq!(d.triage.labels, vec![Label::PseudoPositive, Label::Demoted, Label::PseudoPositive]);
    let w: Vec<Option<f64>> =
        d.target.entries.iter().map(|e| e.coord_target.as_ref().map(|t| t.weight)).collect();
    assert_eq!(w, vec![Some(0.5), None, Some(0.5)]);
    assert_eq!(
        (d.counters.pseudo_positive_selected, d.counters.pseudo_positive_cluster_demoted),
        (2, 1)
    );
    assert_eq!(d.counters.pseudo_positive_candidate, 3);
}

#[test]
fn a_duplicate_burst_is_suppressed_and_yields_an_unlikelihood_target_at_its_divergence() {
    let gt = [gt_box("car", [100, 100, 300, 300]), gt_box("tree", [600, 600, 800, 800])];
    let anchor = rollout(&[
        ("car", [100, 100, 300, 300]),
        ("car", [100, 100, 300, 301]),
        ("car", [100, 100, 300, 300]),
        ("tree", [600, 600, 800, 800]),
    ]);
    let d = decide(&anchor, &[], &gt, &Settings::default(), DF);
    assert_eq!(d.duplicates.suppressed, vec![1, 2]);
    assert_eq!(d.clean.iter().map(|c| c.object).collect::<Vec<_>>(), vec![0, 3]);
    assert_eq!((d.counters.n_clusters_suppressed, d.counters.n_objects_suppressed), (1, 2));
    assert_eq!(d.target.text.matches("car").count(), 1);
    assert_eq!(d.unlikelihood.len(), 2);
    for c in &d.unlikelihood {
        assert_eq!(c.boundary, 1);
        assert!(c.alternative.starts_with(&d.target.text[..c.boundary_byte]));
    }
    let ul = d.unlikelihood_targets(&toy_tokenize).unwrap();
    // Both duplicates diverge at the same place: after the car, the clean text moves on to the
    // tree and the alternatives repeat the car — one target after deduplication.
    assert_eq!(ul.targets.len(), 1);
    assert_eq!(ul.boundaries, 1);
    assert_eq!(ul.skipped_no_divergence, 0);
    let clean = toy_tokenize(&d.target.text).unwrap();
    let t = ul.targets[0];
    assert_eq!(&d.target.text[clean[t.rel_pos].1.clone()], "tree");
    assert_eq!(t.token_id, toy_tokenize("car").unwrap()[0].0);
}

#[test]
fn a_garbage_rollout_is_invalid_and_every_ground_truth_is_injected() {
    let gt = [gt_box("car", [100, 100, 300, 300]), gt_box("tree", [600, 600, 800, 800])];
    let d = decide("I cannot see any objects }{ [", &[], &gt, &Settings::default(), DF);
    assert!(d.anchor.invalid);
    assert_eq!(d.counters.invalid_rollout, 1);
    assert_eq!((d.counters.n_drop_invalid, d.counters.n_valid_pred), (0, 0));
    assert!(d.target.text.starts_with("{\"objects\": [{"));
    assert_eq!(d.target.prefix_end, "{\"objects\": [".len());
    assert_eq!(d.target.entries.len(), 2);
    assert!(d.target.entries.iter().all(|e| matches!(e.role, Role::Fn { .. }) && !e.in_prefix));
}

#[test]
fn a_truncated_rollout_keeps_its_complete_records_and_drops_the_cut_one() {
    let gt = [gt_box("car", [100, 100, 300, 300])];
    let full = rollout(&[("car", [100, 100, 300, 300]), ("tree", [600, 600, 800, 800])]);
    let cut = &full[..full.len() - 30];
    let d = decide(cut, &[], &gt, &Settings::default(), DF);
    assert!(d.anchor.truncated && !d.anchor.invalid);
    assert_eq!(d.counters.anchor_parse_truncated, 1);
    assert_eq!(d.clean.len(), 1);
    assert_eq!(d.counters.n_drop_invalid, 0, "the unfinished tail is not an invalid drop");
    assert_eq!(d.dropped.len(), 1);
    assert_eq!(d.target.entries.len(), 1);
    assert!(d.target.text.ends_with("]}"));
}

#[test]
fn with_no_ground_truth_unsupported_predictions_all_die() {
    let d = decide(&rollout(&[("car", [100, 100, 300, 300])]), &[], &[], &Settings::default(), DF);
    assert_eq!(d.target.text, "{\"objects\": []}");
    assert_eq!((d.counters.fp, d.counters.dead_anchor, d.counters.gt_objects), (1, 1, 0));
}

#[test]
fn an_empty_rollout_is_valid_and_injects_every_ground_truth() {
    let gt = [gt_box("car", [100, 100, 300, 300])];
    let d = decide("{\"objects\": []}", &[], &gt, &Settings::default(), DF);
    assert!(!d.anchor.invalid);
    assert_eq!(d.counters.invalid_rollout, 0);
    assert_eq!(d.target.entries.len(), 1);
    assert!(matches!(d.target.entries[0].role, Role::Fn { gt: 0, recovered: false }));
}

#[test]
fn polygon_ground_truth_matches_on_its_mask_and_is_injected_as_a_polygon() {
    let gt = [
        gt_poly("roof", &[[100, 300], [200, 150], [300, 300]]),
        gt_poly("pond", &[[600, 600], [800, 600], [800, 800], [600, 800]]),
    ];
    // The box around the triangle has mask IoU ≈ 0.37 with it: gate at 0.3.
    let mut s = Settings::default();
    s.matching.gate = 0.3;
    let d = decide(&rollout(&[("roof", [100, 100, 300, 300])]), &[], &gt, &s, DF);
    assert_eq!(d.matching.pairs, vec![[0, 0]]);
    let m = &d.target.entries[0];
    // The matched box is supervised towards the polygon's bounding box.
    assert_eq!(
        m.coord_target.as_ref().map(|t| t.bins.clone()),
        Some(bins([100, 150, 300, 300]).to_vec())
    );
    let f = &d.target.entries[1];
    assert!(matches!(f.role, Role::Fn { gt: 1, .. }));
    assert_eq!(f.coords.len(), 8);
    assert_eq!(f.coord_target.as_ref().map(|t| t.bins.len()), Some(8));
    let p = parse_strict(&d.target.text, Some(DF)).unwrap();
    assert!(matches!(p.objects[1].geometry, Geometry::Poly(_)));
    // At the production gate the triangle does not pass: the box is an unsupported FP.
    let d = decide(&rollout(&[("roof", [100, 100, 300, 300])]), &[], &gt, &Settings::default(), DF);
    assert!(d.matching.pairs.is_empty());
}

#[test]
fn sorted_insertion_merges_fn_by_top_left_while_tail_append_appends() {
    let gt = [gt_box("top", [500, 10, 600, 50]), gt_box("car", [100, 500, 300, 700])];
    let anchor = rollout(&[("car", [100, 500, 300, 700])]);
    let tail = decide(&anchor, &[], &gt, &Settings::default(), DF);
    let sorted = decide(
        &anchor,
        &[],
        &gt,
        &Settings { insertion_order: InsertionOrder::Sorted, ..Settings::default() },
        DF,
    );
    let roles =
        |d: &coordexp_stage2::Decision| d.target.entries.iter().map(|e| e.role).collect::<Vec<_>>();
    assert_eq!(
        roles(&tail),
        vec![
            Role::Matched { clean: 0, gt: 1, desc_agrees: true },
            Role::Fn { gt: 0, recovered: false }
        ]
    );
    assert_eq!(
        roles(&sorted),
        vec![
            Role::Fn { gt: 0, recovered: false },
            Role::Matched { clean: 0, gt: 1, desc_agrees: true }
        ]
    );
    assert_eq!(sorted.target.prefix_end + 2, sorted.target.text.len(), "sorted: the tail is `]}}`");
    assert!(sorted.target.entries.iter().all(|e| e.in_prefix));
    assert_eq!(sorted.target.entries[0].desc_weight, 1.0, "FN description keeps its weight");
    assert_eq!(tail.target.boundaries.len(), 2);
    assert_eq!(sorted.target.boundaries.len(), 3);
}

#[test]
fn geometry_first_rollouts_are_read_and_written_geometry_first() {
    let gt = [gt_box("car", [100, 100, 300, 300]), gt_box("tree", [600, 600, 800, 800])];
    let anchor = rollout_in(&[("car", [100, 100, 300, 300])], FieldOrder::GeometryFirst);
    let d = decide(&anchor, &[], &gt, &Settings::default(), FieldOrder::GeometryFirst);
    assert_eq!(d.matching.pairs, vec![[0, 0]]);
    assert!(d.target.text.starts_with("{\"objects\": [{\"bbox_2d\": ["));
    assert!(parse_strict(&d.target.text, Some(FieldOrder::GeometryFirst)).is_ok());
    // The same text read desc-first is all order violations.
    let d = decide(&anchor, &[], &gt, &Settings::default(), DF);
    assert_eq!(d.counters.drop_reasons.get("order_violation"), Some(&1));
}

#[test]
fn ground_truth_an_explorer_found_is_a_recovered_fn_with_the_multiplier() {
    let gt = [gt_box("car", [100, 100, 300, 300]), gt_box("tree", [600, 600, 800, 800])];
    let anchor = rollout(&[("car", [100, 100, 300, 300])]);
    let explorer = rollout(&[("tree", [600, 600, 800, 800])]);
    let d = decide(&anchor, &[&explorer], &gt, &Settings::default(), DF);
    let f = &d.target.entries[1];
    assert_eq!(f.role, Role::Fn { gt: 1, recovered: true });
    assert_eq!((f.struct_weight, f.desc_weight), (1.0, 2.0));
    assert_eq!(f.coord_target.as_ref().map(|t| t.weight), Some(2.0));
    assert_eq!((d.counters.recovered_ground_truth, d.counters.fn_recovered), (1, 1));
}

#[test]
fn the_debug_json_has_every_documented_key() {
    let gt = [gt_box("car", [100, 100, 300, 300])];
    let anchor = rollout(&[("car", [100, 100, 300, 300]), ("car", [100, 100, 300, 300])]);
    let d = decide(&anchor, &[], &gt, &Settings::default(), DF);
    let v = serde_json::to_value(&d).unwrap();
    for path in [
        "/clean/0/desc",
        "/clean/0/bbox_2d/3",
        "/dropped",
        "/duplicates/settings/iou_threshold",
        "/duplicates/settings/center_radius_scale",
        "/duplicates/clusters/0/members",
        "/duplicates/clusters/0/survivor",
        "/duplicates/clusters/0/exempt",
        "/duplicates/suppressed/0",
        "/matching/settings/candidate_top_k",
        "/matching/settings/gate",
        "/matching/settings/mask_resolution",
        "/matching/settings/fp_cost",
        "/matching/settings/fn_cost",
        "/matching/pairs/0/1",
        "/matching/fn",
        "/matching/fp",
        "/matching/gating_rejections",
        "/target/text",
        "/target/entries/0/role/kind",
        "/unlikelihood/0/alternative",
        "/counters/N_drop_invalid",
    ] {
        assert!(v.pointer(path).is_some(), "missing {path} in {v:#}");
    }
    assert_eq!(v.pointer("/clean/0/bbox_2d"), Some(&serde_json::json!([100, 100, 300, 300])));
}
