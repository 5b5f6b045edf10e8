//! Cross-field checks that run before any work starts.
//!
//! Each check protects the training objective from a silent change (a rollout that cannot fit its
//! context, a pack that cannot hold one image, a batch that does not divide) or rejects a value
//! outside its meaningful range. All violations are reported together, each located at the key
//! that was written (or marked "default" when the offending value is a default).

use super::schema::{BoxParam, Channel, Config, Decoding, RolloutBackend, Stage, TuningMode};
use super::yaml::{Node, Origin};
use crate::device::{DEVICE_GRAMMAR, DeviceSpec};
use crate::error::Error;

/// Run every check; returns all violations.
pub fn check(cfg: &Config, tree: &Node) -> Vec<Error> {
    let mut v = Violations { tree, errors: Vec::new() };
    let r = &cfg.rollout;
    if r.max_new_tokens >= r.max_model_len {
        v.push(
            "rollout.max_new_tokens",
            format!(
                "rollout.max_new_tokens ({}) must be smaller than rollout.max_model_len ({}): the prompt needs room too",
                r.max_new_tokens, r.max_model_len
            ),
            "raise rollout.max_model_len or lower rollout.max_new_tokens",
        );
    }
    if cfg.packing.max_length > r.max_model_len {
        v.push(
            "rollout.max_model_len",
            format!(
                "rollout.max_model_len ({}) is smaller than packing.max_length ({}): a training sequence could not be rolled out",
                r.max_model_len, cfg.packing.max_length
            ),
            "set rollout.max_model_len >= packing.max_length",
        );
    }
    let factor = u64::from(cfg.template.image_factor.max(1));
    let max_image_tokens = cfg.template.max_pixels / (factor * factor);
    if max_image_tokens as usize >= cfg.packing.max_length {
        v.push(
            "packing.max_length",
            format!(
                "packing.max_length ({}) cannot hold one sample: an image of template.max_pixels ({}) alone takes {} tokens",
                cfg.packing.max_length, cfg.template.max_pixels, max_image_tokens
            ),
            "raise packing.max_length or lower template.max_pixels",
        );
    }
    if cfg.template.image_factor == 0 {
        v.push(
            "template.image_factor",
            "template.image_factor must be positive".into(),
            "use 32 for Qwen3-VL (patch 16 × merge 2)",
        );
    }
    let t = &cfg.train;
    if t.micro_batch == 0 {
        v.push(
            "train.micro_batch",
            "train.micro_batch must be at least 1".into(),
            "set train.micro_batch: 1",
        );
    }
    if t.accumulation == Some(0) {
        v.push(
            "train.accumulation",
            "train.accumulation must be at least 1".into(),
            "set train.accumulation: 1",
        );
    }
    if let Some(ebs) = t.effective_batch_size {
        if t.micro_batch > 0 && ebs % t.micro_batch != 0 {
            v.push(
                "train.effective_batch_size",
                format!(
                    "train.effective_batch_size ({ebs}) is not divisible by train.micro_batch ({})",
                    t.micro_batch
                ),
                "make the effective batch a multiple of the micro batch",
            );
        } else if let Some(acc) = t.accumulation
            && acc * t.micro_batch != ebs
        {
            v.push(
                "train.accumulation",
                format!(
                    "train.accumulation ({acc}) × train.micro_batch ({}) = {} disagrees with train.effective_batch_size ({ebs})",
                    t.micro_batch,
                    acc * t.micro_batch
                ),
                "set only one of train.accumulation and train.effective_batch_size",
            );
        }
    }
    if t.max_steps == 0 {
        v.push(
            "train.max_steps",
            "train.max_steps must be at least 1".into(),
            "set a positive step count",
        );
    }
    if r.backend != RolloutBackend::Embedded && r.servers.is_empty() {
        v.push(
            "rollout.servers",
            format!("rollout.backend is {:?} but rollout.servers is empty", r.backend).to_lowercase(),
            "list at least one server (`servers: [{url: http://127.0.0.1:8000}]`) or use backend: embedded",
        );
    }
    adapter(&mut v, cfg);
    if r.decode_batch_size == 0 {
        v.push(
            "rollout.decode_batch_size",
            "rollout.decode_batch_size must be at least 1".into(),
            "set it to 1 or more",
        );
    }
    decoding(&mut v, "rollout.decoding", &r.decoding);
    decoding(&mut v, "eval.decoding", &cfg.eval.decoding);
    if cfg.eval.batch_size == 0 {
        v.push("eval.batch_size", "eval.batch_size must be at least 1".into(), "e.g. 4");
    }
    if cfg.optim.min_lr < 0.0 || !cfg.optim.min_lr.is_finite() {
        v.push("optim.min_lr", "optim.min_lr must be finite and >= 0".into(), "e.g. 1e-6, or 0");
    }
    // The stage-2 section applies to stage 2 only: written under stage 1 it would be ignored.
    if cfg.train.stage == Stage::Stage1 && tree.get("stage2").is_some() {
        v.push(
            "stage2",
            "the stage2 section is set but train.stage is stage1: it would be ignored".into(),
            "set train.stage: stage2, or remove the stage2 section",
        );
    }
    if !(t.collective_timeout_s > 0.0 && t.collective_timeout_s.is_finite()) {
        v.push(
            "train.collective_timeout_s",
            format!(
                "train.collective_timeout_s ({}) must be a positive number of seconds (0 would wait forever)",
                t.collective_timeout_s
            ),
            "e.g. 1800; it must exceed the longest evaluation of a multi-process run",
        );
    }
    // The memory knobs act on the stage-1 step only: under stage 2 they would do nothing.
    if cfg.train.stage == Stage::Stage2 {
        if t.logit_chunk_rows > 0 {
            v.push(
                "train.logit_chunk_rows",
                "train.logit_chunk_rows applies to stage-1 steps only; a stage-2 run would ignore it".into(),
                "remove it from the stage-2 config (stage-2 steps compute their logits at once)",
            );
        }
        if t.gradient_checkpointing {
            v.push(
                "train.gradient_checkpointing",
                "train.gradient_checkpointing applies to stage-1 steps only; a stage-2 run would ignore it".into(),
                "remove it from the stage-2 config",
            );
        }
    }
    // A recomputed layer must reproduce its forward pass exactly; adapter dropout would draw new masks.
    if t.gradient_checkpointing
        && cfg.model.tuning.mode != TuningMode::Full
        && cfg.model.tuning.adapter.dropout > 0.0
    {
        v.push(
            "model.tuning.adapter.dropout",
            format!(
                "model.tuning.adapter.dropout ({}) > 0 with train.gradient_checkpointing: the recomputed layers would draw other dropout masks than the forward pass",
                cfg.model.tuning.adapter.dropout
            ),
            "set model.tuning.adapter.dropout: 0, or train.gradient_checkpointing: false",
        );
    }
    if !(r.timeout_s > 0.0 && r.timeout_s.is_finite()) {
        v.push("rollout.timeout_s", "rollout.timeout_s must be positive".into(), "e.g. 240");
    }
    let p = &cfg.packing;
    if !(0.0..=1.0).contains(&p.min_fill) {
        v.push(
            "packing.min_fill",
            format!("packing.min_fill ({}) must be in [0, 1]", p.min_fill),
            "use 0 to keep every pack",
        );
    }
    if p.max_length == 0 {
        v.push("packing.max_length", "packing.max_length must be positive".into(), "e.g. 4096");
    }
    let c = &cfg.objective.coord;
    if !(c.temperature > 0.0 && c.temperature.is_finite()) {
        v.push(
            "objective.coord.temperature",
            "objective.coord.temperature must be positive".into(),
            "use 1.0 for plain softmax",
        );
    }
    if !(c.soft_ce.sigma > 0.0 && c.soft_ce.sigma.is_finite()) {
        v.push(
            "objective.coord.soft_ce.sigma",
            "objective.coord.soft_ce.sigma must be positive".into(),
            "e.g. 1.5 bins",
        );
    }
    if [c.soft_ce.weight, c.w1.weight, c.gate.weight, c.hard_ce.weight].iter().all(|w| *w == 0.0) {
        v.push(
            "objective.coord",
            "every objective.coord term has weight 0: coordinate tokens would receive no loss".into(),
            "set objective.coord.hard_ce.weight and gate.weight to 1 with temperature 1 for plain full-vocabulary cross-entropy",
        );
    }
    for (key, w) in [
        ("objective.text_ce", cfg.objective.text_ce),
        ("objective.coord.soft_ce.weight", c.soft_ce.weight),
        ("objective.coord.w1.weight", c.w1.weight),
        ("objective.coord.gate.weight", c.gate.weight),
        ("objective.coord.hard_ce.weight", c.hard_ce.weight),
        ("objective.token_weights.struct", cfg.objective.token_weights.structure),
        ("objective.token_weights.desc", cfg.objective.token_weights.desc),
        ("objective.token_weights.closure", cfg.objective.token_weights.closure),
        ("optim.weight_decay", cfg.optim.weight_decay),
        ("optim.grad_clip", cfg.optim.grad_clip),
        ("optim.lr.language", cfg.optim.lr.language),
        ("optim.lr.vision", cfg.optim.lr.vision),
        ("optim.lr.merger", cfg.optim.lr.merger),
        ("optim.lr.coord_rows", cfg.optim.lr.coord_rows),
    ] {
        if !(w >= 0.0 && w.is_finite()) {
            v.push(
                key,
                format!("{key} ({w}) must be finite and >= 0"),
                "weights, rates and clips are non-negative",
            );
        }
    }
    if !(0.0..1.0).contains(&cfg.optim.warmup) {
        v.push(
            "optim.warmup",
            format!("optim.warmup ({}) must be a fraction in [0, 1)", cfg.optim.warmup),
            "e.g. 0.03 = 3% of train.max_steps",
        );
    }
    let [b1, b2] = cfg.optim.betas;
    if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
        v.push("optim.betas", "optim.betas must both be in [0, 1)".into(), "e.g. [0.9, 0.999]");
    }
    if !(cfg.optim.eps > 0.0 && cfg.optim.eps.is_finite()) {
        v.push("optim.eps", "optim.eps must be positive".into(), "e.g. 1e-8");
    }
    stage2(&mut v, cfg);
    if cfg.eval.iou.is_empty() {
        v.push("eval.iou", "eval.iou needs at least one threshold".into(), "e.g. [0.3, 0.5]");
    }
    for (i, t) in cfg.eval.iou.iter().enumerate() {
        if !(*t > 0.0 && *t <= 1.0) {
            v.push(
                "eval.iou",
                format!("eval.iou[{i}] ({t}) must be in (0, 1]"),
                "IoU thresholds are fractions",
            );
        }
    }
    let pr = &cfg.prompt;
    if pr.system.is_some() && pr.system_file.is_some() {
        v.push(
            "prompt.system_file",
            "prompt.system and prompt.system_file are both set".into(),
            "keep one of them",
        );
    }
    if pr.user.is_some() && pr.user_file.is_some() {
        v.push(
            "prompt.user_file",
            "prompt.user and prompt.user_file are both set".into(),
            "keep one of them",
        );
    }
    let dev = cfg.model.device.as_str();
    if DeviceSpec::parse(dev).is_none() {
        v.push("model.device", format!("model.device `{dev}` is not a device"), DEVICE_GRAMMAR);
    }
    v.errors
}

/// The stage-2 section's ranges and combinations (checked whatever the stage, so a stage-2 config
/// is valid before it is used).
fn stage2(v: &mut Violations<'_>, cfg: &Config) {
    let s = &cfg.stage2;
    let o = &s.objective;
    let b = &s.channel_b;
    let nonneg = [
        ("stage2.objective.token_ce.weight", o.token_ce.weight),
        ("stage2.objective.token_ce.desc_ce_weight", o.token_ce.desc_ce_weight),
        ("stage2.objective.token_ce.rollout_fn_desc_weight", o.token_ce.rollout_fn_desc_weight),
        (
            "stage2.objective.token_ce.rollout_global_prefix_struct_ce_weight",
            o.token_ce.rollout_global_prefix_struct_ce_weight,
        ),
        ("stage2.objective.duplicate_ul.weight", o.duplicate_ul.weight),
        ("stage2.objective.bbox_geo.weight", o.bbox_geo.weight),
        ("stage2.objective.bbox_geo.smoothl1_weight", o.bbox_geo.smoothl1_weight),
        ("stage2.objective.bbox_geo.ciou_weight", o.bbox_geo.ciou_weight),
        ("stage2.objective.bbox_geo.center_weight", o.bbox_geo.center_weight),
        ("stage2.objective.bbox_geo.size_weight", o.bbox_geo.size_weight),
        ("stage2.objective.bbox_size_aux.weight", o.bbox_size_aux.weight),
        ("stage2.objective.bbox_size_aux.log_wh_weight", o.bbox_size_aux.log_wh_weight),
        (
            "stage2.objective.bbox_size_aux.oversize_penalty_weight",
            o.bbox_size_aux.oversize_penalty_weight,
        ),
        ("stage2.objective.coord_reg.weight", o.coord_reg.weight),
        ("stage2.objective.coord_reg.coord_ce_weight", o.coord_reg.coord_ce_weight),
        ("stage2.objective.coord_reg.soft_ce_weight", o.coord_reg.soft_ce_weight),
        ("stage2.objective.coord_reg.w1_weight", o.coord_reg.w1_weight),
        ("stage2.objective.coord_reg.coord_gate_weight", o.coord_reg.coord_gate_weight),
        ("stage2.objective.coord_reg.text_gate_weight", o.coord_reg.text_gate_weight),
        ("stage2.channel_b.matching.fp_cost", b.matching.fp_cost),
        ("stage2.channel_b.matching.fn_cost", b.matching.fn_cost),
        (
            "stage2.channel_b.duplicate_control.center_radius_scale",
            b.duplicate_control.center_radius_scale,
        ),
    ];
    for (key, w) in nonneg {
        if !(w >= 0.0 && w.is_finite()) {
            v.push(
                key,
                format!("{key} ({w}) must be finite and >= 0"),
                "weights and costs are non-negative",
            );
        }
    }
    for (key, x) in [
        ("stage2.schedule.b_ratio", s.schedule.b_ratio),
        ("stage2.channel_b.matching.gate", b.matching.gate),
        ("stage2.channel_b.duplicate_control.iou_threshold", b.duplicate_control.iou_threshold),
        (
            "stage2.channel_b.triage.unlabeled_consistent_iou_threshold",
            b.triage.unlabeled_consistent_iou_threshold,
        ),
    ] {
        if !(0.0..=1.0).contains(&x) {
            v.push(key, format!("{key} ({x}) must be in [0, 1]"), "it is a fraction");
        }
    }
    let ratio = s.schedule.b_ratio;
    let runs = [(Channel::A, ratio < 1.0), (Channel::B, ratio > 0.0)];
    let modules = [
        (o.token_ce.weight, &o.token_ce.channels),
        (o.duplicate_ul.weight, &o.duplicate_ul.channels),
        (o.bbox_geo.weight, &o.bbox_geo.channels),
        (o.bbox_size_aux.weight, &o.bbox_size_aux.channels),
        (o.coord_reg.weight, &o.coord_reg.channels),
    ];
    for (channel, scheduled) in runs {
        if scheduled && !modules.iter().any(|(w, c)| *w > 0.0 && c.contains(&channel)) {
            v.push(
                "stage2.objective",
                format!("channel {channel:?} runs (b_ratio {ratio}) but no objective module with a positive weight applies to it"),
                "list the channel under the `channels` of at least one module (e.g. token_ce)",
            );
        }
    }
    if o.duplicate_ul.channels.contains(&Channel::A) {
        v.push(
            "stage2.objective.duplicate_ul.channels",
            "the duplicate-burst unlikelihood needs rollouts: it applies to channel B only".into(),
            "set channels: [B]",
        );
    }
    let c = &o.coord_reg;
    if !(c.temperature > 0.0 && c.temperature.is_finite()) {
        v.push("stage2.objective.coord_reg.temperature", "must be positive".into(), "e.g. 1.0");
    }
    if !(c.target_sigma > 0.0 && c.target_sigma.is_finite()) {
        v.push("stage2.objective.coord_reg.target_sigma", "must be positive".into(), "e.g. 2.0");
    }
    if o.bbox_geo.parameterization == BoxParam::CenterSize
        && o.bbox_geo.center_weight == 0.0
        && o.bbox_geo.size_weight == 0.0
    {
        v.push(
            "stage2.objective.bbox_geo.parameterization",
            "center_size needs center_weight or size_weight above 0".into(),
            "set one of them, or use parameterization: xyxy",
        );
    }
    let t = &b.triage;
    if t.num_rollouts == 0 {
        v.push(
            "stage2.channel_b.triage.num_rollouts",
            "num_rollouts must be at least 1 (the greedy anchor)".into(),
            "use 2: one anchor and one explorer (the reference's setting)",
        );
    }
    if t.num_rollouts > 1 && !(t.explorer.temperature > 0.0 && t.explorer.temperature.is_finite()) {
        v.push(
            "stage2.channel_b.triage.explorer.temperature",
            "explorers must sample (temperature > 0): a greedy explorer repeats the anchor and can only confirm it".into(),
            "e.g. 0.7",
        );
    }
    if b.pseudo_positive.enabled && t.num_rollouts < 2 {
        v.push(
            "stage2.channel_b.triage.num_rollouts",
            "pseudo-positive mode needs explorers (num_rollouts >= 2)".into(),
            "the reference uses 4 with pseudo-positive on",
        );
    }
    decoding(
        v,
        "stage2.channel_b.triage.explorer",
        &Decoding {
            temperature: t.explorer.temperature,
            top_p: t.explorer.top_p,
            top_k: t.explorer.top_k,
            repetition_penalty: 1.0,
        },
    );
    if !(t.recovered_ground_truth_weight_multiplier >= 1.0
        && t.recovered_ground_truth_weight_multiplier.is_finite())
    {
        v.push(
            "stage2.channel_b.triage.recovered_ground_truth_weight_multiplier",
            "must be >= 1".into(),
            "the reference uses 2.0",
        );
    }
    if !(1..=16384).contains(&b.matching.mask_resolution) {
        v.push(
            "stage2.channel_b.matching.mask_resolution",
            format!("mask_resolution ({}) must be in 1..=16384", b.matching.mask_resolution),
            "the reference uses 256",
        );
    }
    if b.matching.candidate_top_k == 0 {
        v.push("stage2.channel_b.matching.candidate_top_k", "must be at least 1".into(), "e.g. 5");
    }
    let cw = b.pseudo_positive.coord_weight;
    if !(cw > 0.0 && cw < 1.0) {
        v.push(
            "stage2.channel_b.pseudo_positive.coord_weight",
            format!("coord_weight ({cw}) must be in (0, 1)"),
            "e.g. 0.5",
        );
    }
}

/// The checks of one decoding section (`rollout.decoding`, `eval.decoding`).
fn decoding(v: &mut Violations<'_>, key: &str, d: &Decoding) {
    if !(d.top_p > 0.0 && d.top_p <= 1.0) {
        v.push(
            &format!("{key}.top_p"),
            format!("{key}.top_p ({}) must be in (0, 1]", d.top_p),
            "use 1.0 to disable nucleus sampling",
        );
    }
    if !(d.temperature >= 0.0 && d.temperature.is_finite()) {
        v.push(
            &format!("{key}.temperature"),
            format!("{key}.temperature must be finite and >= 0"),
            "use 0 for greedy decoding",
        );
    }
    if !(d.repetition_penalty > 0.0 && d.repetition_penalty.is_finite()) {
        v.push(
            &format!("{key}.repetition_penalty"),
            format!("{key}.repetition_penalty must be positive"),
            "use 1.0 to disable it",
        );
    }
    if d.top_k == 0 || d.top_k < -1 {
        v.push(
            &format!("{key}.top_k"),
            format!("{key}.top_k ({}) must be -1 (off) or positive", d.top_k),
            "use -1 to disable top-k",
        );
    }
}

struct Violations<'a> {
    tree: &'a Node,
    errors: Vec<Error>,
}

impl Violations<'_> {
    fn push(&mut self, key: &str, what: String, hint: &str) {
        let at = match origin_of(self.tree, key) {
            Some(o) => format!("{o} ({key})"),
            None => format!("{key} (default value)"),
        };
        self.errors.push(Error::input(what).at(at).hint(hint));
    }
}

/// The origin of the entry at dotted `path` in the merged tree (the key's line), if written.
pub fn origin_of(tree: &Node, path: &str) -> Option<Origin> {
    let mut node = tree;
    let mut origin = None;
    for key in path.split('.') {
        let entry = node.get(key)?;
        origin = Some(entry.key_origin.clone());
        node = &entry.node;
    }
    origin
}

/// `model.tuning.adapter`: meaningful values, and only with an adapter mode.
fn adapter(v: &mut Violations<'_>, cfg: &Config) {
    let t = &cfg.model.tuning;
    let a = &t.adapter;
    let adapters = t.mode != TuningMode::Full;
    if !adapters {
        let written = v
            .tree
            .get("model")
            .and_then(|m| m.node.get("tuning"))
            .and_then(|t| t.node.get("adapter"))
            .is_some();
        if written {
            v.push(
                "model.tuning.adapter",
                "model.tuning.adapter is set but model.tuning.mode is full: it would be ignored"
                    .into(),
                "set model.tuning.mode: lora or dora, or remove the adapter section",
            );
        }
        return;
    }
    if a.r == 0 {
        v.push("model.tuning.adapter.r", "the adapter rank r must be at least 1".into(), "e.g. 16");
    }
    if !(a.alpha.is_finite() && a.alpha > 0.0) {
        v.push("model.tuning.adapter.alpha", "alpha must be positive".into(), "e.g. 32 (2·r)");
    }
    if !(0.0..1.0).contains(&a.dropout) {
        v.push(
            "model.tuning.adapter.dropout",
            "dropout must be in [0, 1)".into(),
            "e.g. 0.0 or 0.1",
        );
    }
    let all = a.target_modules.iter().any(|m| m == "all-linear");
    if a.target_modules.is_empty() || (all && a.target_modules.len() > 1) {
        v.push(
            "model.tuning.adapter.target_modules",
            "target_modules must be [all-linear] alone or a non-empty list of module names".into(),
            "e.g. [all-linear] or [q_proj, k_proj, v_proj, o_proj]",
        );
    }
}
