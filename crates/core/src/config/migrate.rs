//! Keys that existed under another name (in earlier coordexp configs or in the reference system
//! whose configs users port) and where their meaning lives now. A renamed key gets this message
//! instead of a generic "unknown key", because a typo suggestion would send the user the wrong way.

/// `(dotted path as written, what to write instead)`.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "training",
        "the section is called `train` (steps, batches, eval/save cadence); learning rates and weight decay live in `optim`",
    ),
    (
        "custom",
        "`custom.*` is gone: data paths are in `data`, prompt options in `prompt`, coordinate losses in `objective.coord`",
    ),
    ("rollout_matching", "the section is called `rollout`"),
    ("stage2_ab", "the section is called `stage2`"),
    (
        "global_max_length",
        "use `packing.max_length` (and `rollout.max_model_len` for the rollout engine)",
    ),
    (
        "train.learning_rate",
        "learning rates are per parameter group: `optim.lr.language`, `optim.lr.vision`, `optim.lr.merger`, `optim.lr.coord_rows`",
    ),
    (
        "train.lr",
        "learning rates are per parameter group: `optim.lr.language`, `optim.lr.vision`, `optim.lr.merger`, `optim.lr.coord_rows`",
    ),
    ("optim.learning_rate", "write `optim.lr.language` (and the other groups under `optim.lr`)"),
    ("train.weight_decay", "moved to `optim.weight_decay`"),
    ("train.gradient_accumulation_steps", "renamed to `train.accumulation`"),
    ("train.per_device_train_batch_size", "renamed to `train.micro_batch`"),
    ("train.packing_length", "renamed to `packing.max_length`"),
    ("train.packing", "packing options live in the `packing` section"),
    ("prompt.object_field_order", "renamed to `prompt.field_order`"),
    ("data.train_jsonl", "renamed to `data.train`"),
    ("data.val_jsonl", "renamed to `data.val`"),
    ("data.sample_limit", "use `data.train_limit` / `data.val_limit`"),
    (
        "objective.coord_soft_ce_w1",
        "the terms are separate now: `objective.coord.soft_ce`, `objective.coord.w1`, `objective.coord.gate`",
    ),
    (
        "rollout.temperature",
        "decoding options live in `rollout.decoding` (`temperature`, `top_p`, `top_k`, `repetition_penalty`)",
    ),
    ("rollout.top_p", "decoding options live in `rollout.decoding`"),
    ("rollout.top_k", "decoding options live in `rollout.decoding`"),
    ("stage2.bbox_l1_weight", "renamed to `stage2.objective.bbox_geo.smoothl1_weight`"),
    ("stage2.bbox_giou_weight", "replaced by `stage2.objective.bbox_geo.ciou_weight` (CIoU)"),
    ("stage2.geometry", "moved to `stage2.objective.bbox_geo` (`smoothl1_weight`, `ciou_weight`)"),
    ("stage2.b_ratio", "moved to `stage2.schedule.b_ratio`"),
    ("stage2.channel_b.fn_desc_ce", "moved to `stage2.objective.token_ce.rollout_fn_desc_weight`"),
    (
        "stage2.channel_a",
        "channel A is one teacher-forced pass on the ground truth now: the self-context iteration (`n_softctx_iter`, `softctx_*`, `ctx_embed`) is gone — the reference's ablation lowered mAP and F1 with every extra pass (step 600: mAP 0.447 / F1 0.649 at 1 pass, 0.402 / 0.477 at 2, 0.322 / 0.333 at 4) while doubling the forward time; its losses are configured in `stage2.objective`",
    ),
    (
        "stage2.n_softctx_iter",
        "retired: channel A is one teacher-forced pass (the reference's ablation: every extra self-context pass lowered mAP and F1 and doubled the forward time)",
    ),
    (
        "stage2.softctx_grad_mode",
        "retired with the self-context iteration: channel A is one teacher-forced pass",
    ),
    (
        "stage2.softctx_temperature",
        "retired with the self-context iteration; the expectation decode uses temperature 1 (`stage2.objective.coord_reg.temperature` applies to the coordinate terms)",
    ),
    (
        "stage2.coord_ctx_embed_mode",
        "retired with the self-context iteration: no coordinate slot is re-fed with soft embeddings",
    ),
    (
        "stage2.coord_decode_mode",
        "retired: boxes are decoded by expectation (softmax over the 1,000 coordinate logits, · k/999), the only mode the current contract keeps",
    ),
    (
        "stage2.channel_b.duplicate_iou_threshold",
        "the flat duplicate keys are grouped now: `stage2.channel_b.duplicate_control.iou_threshold`",
    ),
    (
        "stage2.channel_b.duplicate_center_radius_scale",
        "the flat duplicate keys are grouped now: `stage2.channel_b.duplicate_control.center_radius_scale`",
    ),
    (
        "stage2.channel_b.center_radius_scale",
        "moved to `stage2.channel_b.duplicate_control.center_radius_scale`",
    ),
    (
        "stage2.objective.token_ce.struct_ce_weight",
        "retired: structure tokens take weight 1 in channel A and `rollout_global_prefix_struct_ce_weight` in the channel-B prefix",
    ),
    (
        "stage2.objective.token_ce.stop_signal_damping",
        "retired: the closure tokens are supervised with weight max(w, 1)",
    ),
    (
        "stage2.pipeline",
        "the modules are keys of `stage2.objective` (`token_ce`, `duplicate_ul`, `bbox_geo`, `bbox_size_aux`, `coord_reg`)",
    ),
];

/// The migration message for `path`, if the key was renamed or removed on purpose.
pub fn lookup(path: &str) -> Option<&'static str> {
    MIGRATIONS.iter().find(|(old, _)| *old == path).map(|(_, msg)| *msg)
}

#[cfg(test)]
mod tests {
    #[test]
    fn migration_paths_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (p, _) in super::MIGRATIONS {
            assert!(seen.insert(*p), "duplicate migration entry {p}");
        }
    }
}
