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
    ("stage2.bbox_l1_weight", "renamed to `stage2.geometry.smoothl1`"),
    ("stage2.bbox_giou_weight", "replaced by `stage2.geometry.ciou`"),
    ("stage2.n_softctx_iter", "moved to `stage2.channel_a.n_softctx_iter`"),
    ("stage2.b_ratio", "moved to `stage2.schedule.b_ratio`"),
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
