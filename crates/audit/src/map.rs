//! The pipeline map: every boundary of
//! `data → template → tokens → pack → forward / loss masks → objective → rollouts → eval →
//! artifacts`, with the modules that own it, the config keys it reads, the tests that lock it
//! and the artifacts it writes.
//!
//! The table is data, not prose, so it can be checked: [`verify`] fails on a module path that
//! does not exist, a config key that is not a key of the schema
//! (`coordexp_core::config::schema::Config`, the `stage2` section included) and a test that is
//! not a `fn <name>` of the file named for it (the crate's `map` test runs it on this
//! repository). When code moves, the map must move with it.

use coordexp_core::config::schema::Config;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// A test that locks a boundary: its function name and the file that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TestRef {
    /// Repository path of the file that defines the test.
    pub file: &'static str,
    /// The test function's name (`fn <name>` in `file`).
    pub name: &'static str,
}

/// One boundary of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Boundary {
    /// Short name, in pipeline order.
    pub name: &'static str,
    /// What crosses the boundary and what must hold there.
    pub invariant: &'static str,
    /// Owning modules: repository paths (files or directories).
    pub modules: &'static [&'static str],
    /// Config keys the boundary reads (dotted; keys of `Config`).
    pub keys: &'static [&'static str],
    /// Tests that lock the boundary.
    pub tests: &'static [TestRef],
    /// What the boundary writes into a run directory (`runs/<name>/…`); empty for none.
    pub artifacts: &'static [&'static str],
    /// The live checks of `coordexp audit` that inspect this boundary (ids of [`crate::Check`]).
    pub audited_by: &'static [&'static str],
}

const fn t(file: &'static str, name: &'static str) -> TestRef {
    TestRef { file, name }
}

const CORE_CONFIG_TESTS: &str = "crates/core/tests/config.rs";
const RECORD_TESTS: &str = "crates/core/tests/record_contract.rs";
const ENCODE_TESTS: &str = "crates/text/tests/encode_invariants.rs";
const PARITY_TESTS: &str = "crates/text/tests/parity_hf.rs";
const TRAINER_TESTS: &str = "crates/train/src/trainer/tests.rs";
const STAGE2_TRAINER_TESTS: &str = "crates/train/src/trainer/tests_stage2.rs";
const TRAIN_E2E: &str = "crates/cli/tests/train_e2e.rs";
const EVAL_CLI: &str = "crates/cli/tests/eval_cli.rs";
const DECIDE_ROLES: &str = "crates/stage2/tests/decide_roles.rs";
const AUDIT_TESTS: &str = "crates/audit/tests/audit_checks.rs";

/// The boundaries, in pipeline order.
pub static BOUNDARIES: &[Boundary] = &[
    Boundary {
        name: "config",
        invariant: "a config that loads has no unknown key anywhere (dotted path, file:line, suggestion or migration) and passes every coherence check; a stage-1 config carries no stage2 section",
        modules: &[
            "crates/core/src/config/mod.rs",
            "crates/core/src/config/yaml.rs",
            "crates/core/src/config/load.rs",
            "crates/core/src/config/de.rs",
            "crates/core/src/config/migrate.rs",
            "crates/core/src/config/schema.rs",
            "crates/core/src/config/coherence.rs",
            "crates/core/src/config/show.rs",
        ],
        keys: &[
            "train.stage",
            "rollout.max_new_tokens",
            "rollout.max_model_len",
            "packing.max_length",
            "template.max_pixels",
            "train.effective_batch_size",
            "stage2",
        ],
        tests: &[
            t(CORE_CONFIG_TESTS, "every_shipped_config_loads"),
            t(CORE_CONFIG_TESTS, "unknown_keys_are_rejected_at_every_depth"),
            t(
                CORE_CONFIG_TESTS,
                "misspelling_any_key_of_the_demo_config_is_rejected_with_path_line_and_suggestion",
            ),
            t(CORE_CONFIG_TESTS, "renamed_key_gets_a_migration_message"),
            t(CORE_CONFIG_TESTS, "coherence_violation_is_reported_at_the_offending_key"),
            t(CORE_CONFIG_TESTS, "show_annotates_values_with_their_source_file"),
            t("crates/core/src/config/de.rs", "all_unknown_keys_are_reported_not_just_the_first"),
            t("crates/core/src/config/load.rs", "a_cycle_is_an_error_naming_the_chain"),
            t("crates/core/src/config/show.rs", "plain_render_parses_back_to_the_same_config"),
        ],
        artifacts: &["runs/<name>/config.resolved.yaml"],
        audited_by: &[],
    },
    Boundary {
        name: "data contract",
        invariant: "every record is valid (all-pixel or all-bin coordinates, boxes ordered, inside the image); its image exists with exactly the record's size, sides multiples of template.image_factor, within the pixel budget: nothing is resized at training time",
        modules: &[
            "crates/core/src/record/mod.rs",
            "crates/core/src/record/check.rs",
            "crates/core/src/record/json.rs",
            "crates/core/src/record/reader.rs",
            "crates/core/src/record/report.rs",
            "crates/core/src/norm1000.rs",
            "crates/core/src/geometry.rs",
            "crates/data/src/images.rs",
            "crates/rollout/src/split.rs",
        ],
        keys: &[
            "data.train",
            "data.val",
            "data.train_limit",
            "data.val_limit",
            "template.max_pixels",
            "template.image_factor",
        ],
        tests: &[
            t(RECORD_TESTS, "every_problem_in_a_file_is_collected_with_a_summary"),
            t(RECORD_TESTS, "mixing_numbers_and_tokens_is_rejected_within_and_across_objects"),
            t(RECORD_TESTS, "pixel_coordinates_outside_the_image_are_rejected"),
            t("crates/core/src/norm1000.rs", "reference_worked_examples_640x480"),
            t("crates/core/src/norm1000.rs", "quantization_is_monotone"),
            t(
                "crates/data/src/images.rs",
                "a_record_size_that_disagrees_with_the_file_is_a_meta_only_rescale",
            ),
            t("crates/data/src/images.rs", "sizes_off_the_grid_or_over_budget_name_the_field"),
            t(TRAIN_E2E, "an_image_whose_size_differs_from_its_record_stops_the_run"),
            t(TRAIN_E2E, "an_image_over_the_pixel_budget_stops_the_run"),
            t(AUDIT_TESTS, "an_image_of_the_wrong_size_fails_the_image_check_at_its_line"),
        ],
        artifacts: &["runs/<name>/manifest.json (data fingerprints)"],
        audited_by: &["records", "images"],
    },
    Boundary {
        name: "prompt + chat template",
        invariant: "the model's own template renders the conversation; the generation prompt is a prefix of the training render, followed by exactly the answer text and a special end-of-turn token",
        modules: &[
            "crates/core/src/prompt.rs",
            "crates/core/src/coordjson/render.rs",
            "crates/text/src/messages.rs",
            "crates/text/src/template.rs",
            "crates/text/src/model_dir.rs",
        ],
        keys: &[
            "model.path",
            "prompt.variant",
            "prompt.field_order",
            "prompt.object_ordering",
            "prompt.system",
            "prompt.system_file",
            "prompt.user",
            "prompt.user_file",
        ],
        tests: &[
            t("crates/core/src/prompt.rs", "builtin_prompts_follow_the_field_order"),
            t(
                "crates/core/src/coordjson/render.rs",
                "desc_first_matches_the_reference_text_byte_for_byte",
            ),
            t("crates/text/src/template.rs", "blocks_are_trimmed_like_transformers"),
            t("crates/text/src/template.rs", "tojson_matches_python_json_dumps"),
            t(ENCODE_TESTS, "generation_prompt_has_no_labels_and_ends_at_the_assistant_header"),
            t(PARITY_TESTS, "ids_grids_and_positions_match_transformers_single_and_packed"),
            t(AUDIT_TESTS, "a_template_that_adds_a_space_after_the_answer_fails_template_drift"),
        ],
        artifacts: &["runs/<name>/manifest.json (prompts)", "runs/<name>/checkpoints/step-<N>/"],
        audited_by: &["template"],
    },
    Boundary {
        name: "tokens",
        invariant: "ids, labels, types and positions have equal lengths; only the answer and its end-of-turn token are supervised; the coordinate tokens are 1,000 contiguous special ids, each one id, untouched by the normaliser, and appear in record order",
        modules: &[
            "crates/text/src/encode.rs",
            "crates/text/src/tokenize.rs",
            "crates/text/src/vocab.rs",
            "crates/text/src/sample.rs",
            "crates/text/src/mrope.rs",
        ],
        keys: &["template.max_pixels", "template.image_factor", "prompt.field_order"],
        tests: &[
            t(ENCODE_TESTS, "only_the_answer_and_its_end_of_turn_token_are_supervised"),
            t(ENCODE_TESTS, "coordinate_tokens_appear_exactly_in_record_order"),
            t(ENCODE_TESTS, "token_types_follow_the_coordjson_spans"),
            t(ENCODE_TESTS, "image_pad_count_equals_the_grid_and_images_are_unsupervised"),
            t(ENCODE_TESTS, "a_gap_in_the_coordinate_ids_is_rejected_with_the_expand_vocab_hint"),
            t(ENCODE_TESTS, "piecewise_memoized_tokenization_equals_whole_text_tokenization"),
            t(PARITY_TESTS, "coordinate_vocabulary_of_the_real_tokenizer_satisfies_the_contract"),
            t(
                "crates/text/src/mrope.rs",
                "image_positions_follow_the_merged_grid_and_text_resumes_after_the_longer_side",
            ),
            t(
                AUDIT_TESTS,
                "a_coordinate_token_missing_from_the_tokenizer_fails_the_vocabulary_check",
            ),
        ],
        artifacts: &["runs/<name>/manifest.json (tokenizer fingerprint, coordinate ids)"],
        audited_by: &["coord_vocab", "template", "lengths"],
    },
    Boundary {
        name: "packing",
        invariant: "a plan is a pure, checksummed function of lengths, packing config and epoch seed; no sample is split or exceeds the capacity; attention is block-diagonal by cu_seqlens, positions restart at 0 per segment, no label crosses a segment",
        modules: &[
            "crates/text/src/plan.rs",
            "crates/text/src/batch.rs",
            "crates/core/src/seed.rs",
        ],
        keys: &[
            "packing.enabled",
            "packing.max_length",
            "packing.min_fill",
            "packing.on_overflow",
            "run.seed",
        ],
        tests: &[
            t("crates/text/src/plan.rs", "packs_never_split_a_sample_and_never_exceed_capacity"),
            t("crates/text/src/plan.rs", "plan_is_a_pure_function_of_lengths_config_and_seed"),
            t("crates/text/src/plan.rs", "checksum_is_sha256_of_the_compact_json_plan"),
            t("crates/text/src/plan.rs", "oversize_samples_error_or_become_singletons"),
            t(ENCODE_TESTS, "packed_positions_restart_at_every_segment"),
            t(ENCODE_TESTS, "a_plan_over_encoded_lengths_packs_every_sample_once"),
            t(AUDIT_TESTS, "a_sample_longer_than_the_pack_fails_the_length_check_at_its_line"),
            t(AUDIT_TESTS, "a_tampered_pack_breaks_each_packing_invariant"),
        ],
        artifacts: &["runs/<name>/manifest.json (packing_plan_checksum)"],
        audited_by: &["packing", "lengths"],
    },
    Boundary {
        name: "forward / loss masks",
        invariant: "logits and gradients equal transformers' on the parity model; a packed micro-batch gives the losses of its samples run alone; parameter groups come from one classifier",
        modules: &[
            "crates/rollout/src/inputs.rs",
            "crates/model/src/attention.rs",
            "crates/model/src/model.rs",
            "crates/model/src/adapter.rs",
            "crates/model/src/text/",
            "crates/model/src/vision/",
            "crates/model/src/grads.rs",
            "crates/train/src/optim/groups.rs",
        ],
        keys: &[
            "model.dtype",
            "model.device",
            "model.tuning.freeze",
            "model.tuning.mode",
            "model.tuning.adapter.r",
            "model.tuning.adapter.alpha",
            "model.tuning.adapter.dropout",
            "model.tuning.adapter.target_modules",
            "model.tuning.adapter.init_from",
            "model.coord_offsets.enabled",
            "model.coord_offsets.tie_head",
            "train.logit_chunk_rows",
            "train.gradient_checkpointing",
        ],
        tests: &[
            t("crates/model/tests/hf_parity.rs", "packed_samples_match_each_sample_run_alone"),
            t(
                "crates/model/tests/hf_parity.rs",
                "logits_match_transformers_for_text_one_image_and_two_images",
            ),
            t(
                "crates/model/tests/hf_parity.rs",
                "gradients_of_a_fixed_loss_match_transformers_for_every_parameter",
            ),
            t("crates/model/tests/gradients.rs", "every_trainable_parameter_receives_a_gradient"),
            t(TRAINER_TESTS, "a_packed_micro_batch_equals_the_same_samples_unpacked"),
            t("crates/train/src/optim/groups.rs", "qwen3_vl_names_land_in_their_groups"),
            t(
                "crates/model/tests/adapters.rs",
                "peft_lora_and_dora_adapters_load_with_peft_logits_and_adapter_gradients",
            ),
            t(
                "crates/model/tests/adapters.rs",
                "our_adapters_load_in_peft_and_merge_into_a_transformers_model_with_the_same_logits",
            ),
            t(
                TRAINER_TESTS,
                "lora_and_dora_runs_train_only_adapters_agree_across_workers_and_resume_bit_identically",
            ),
            t(
                TRAINER_TESTS,
                "coordinate_offsets_train_with_frozen_rows_resume_exactly_and_fold_on_export",
            ),
            t(
                "crates/model/src/grads.rs",
                "a_loss_cut_at_a_leaf_and_pushed_back_has_the_gradient_of_the_uncut_loss",
            ),
            t(
                TRAINER_TESTS,
                "logits_in_pieces_give_the_losses_terms_and_gradients_of_all_rows_at_once",
            ),
            t(
                TRAINER_TESTS,
                "recomputed_layers_give_the_losses_and_gradients_of_the_plain_step_tower_trained_or_frozen",
            ),
        ],
        artifacts: &[
            "runs/<name>/checkpoints/step-<N>/ (HF layout; PEFT adapter layout for lora/dora)",
        ],
        audited_by: &["packing"],
    },
    Boundary {
        name: "objective (stage 1)",
        invariant: "text CE plus soft CE, W1, gate and hard CE on the coordinate logits; the window loss does not depend on packing, micro-batch split, worker count or process count (unless per_pack_mean)",
        modules: &[
            "crates/train/src/objective/mod.rs",
            "crates/train/src/objective/terms.rs",
            "crates/train/src/objective/coord.rs",
            "crates/train/src/objective/window.rs",
            "crates/train/src/trainer/stage1.rs",
            "crates/train/src/trainer/step.rs",
            "crates/train/src/trainer/workers.rs",
            "crates/train/src/optim/",
            "crates/dist/src/lib.rs",
        ],
        keys: &[
            "objective.text_ce",
            "objective.token_weights.desc",
            "objective.normalize",
            "objective.coord.temperature",
            "objective.coord.soft_ce.sigma",
            "objective.coord.soft_ce.radius",
            "objective.coord.w1.weight",
            "objective.coord.gate.weight",
            "objective.coord.hard_ce.weight",
            "train.micro_batch",
            "train.accumulation",
            "optim.lr.coord_rows",
            "optim.grad_clip",
            "train.collective_timeout_s",
        ],
        tests: &[
            t(
                "crates/train/tests/objective_oracle.rs",
                "stage1_terms_match_pytorch_in_value_and_gradient_per_group",
            ),
            t(
                "crates/train/tests/objective_oracle.rs",
                "stage1_terms_match_pytorch_in_value_and_gradient_per_pack_mean",
            ),
            t(
                "crates/train/src/objective/tests.rs",
                "two_micro_batches_of_four_equal_one_of_eight_in_loss_and_gradients",
            ),
            t(
                "crates/train/tests/objective_config.rs",
                "every_coordinate_weight_zero_is_rejected_with_a_remedy",
            ),
            t(TRAINER_TESTS, "two_workers_give_the_losses_of_one_bit_for_bit_and_resume_with_them"),
            t(TRAINER_TESTS, "window_gradients_equal_one_backward_per_micro_batch"),
            t(
                "crates/train/tests/optim_oracle.rs",
                "adamw_groups_schedule_and_clipping_match_torch_step_by_step",
            ),
            t(
                "crates/cli/tests/dist.rs",
                "torchrun_with_two_ranks_repeats_the_one_process_losses_and_weights",
            ),
            t(
                "crates/cli/tests/dist.rs",
                "a_killed_rank_stops_the_other_at_once_with_an_error_naming_it",
            ),
        ],
        artifacts: &["runs/<name>/metrics.jsonl", "runs/<name>/events.out.tfevents.*"],
        audited_by: &[],
    },
    Boundary {
        name: "objective (stage 2)",
        invariant: "channel A or B per optimizer step by the b-ratio plan; token_ce, bbox_geo (SmoothL1 + CIoU), bbox_size_aux, coord_reg and duplicate-burst unlikelihood, each on its channels; the window loss does not depend on packing or accumulation; a rollout whose prompt ids differ from the learner's is dropped and counted",
        modules: &[
            "crates/train/src/objective/stage2.rs",
            "crates/train/src/trainer/stage2/mod.rs",
            "crates/train/src/trainer/stage2/channel_b.rs",
            "crates/train/src/trainer/stage2/segment.rs",
            "crates/train/src/trainer/stage2/supervise.rs",
        ],
        keys: &[
            "stage2.schedule.b_ratio",
            "stage2.objective.token_ce.weight",
            "stage2.objective.bbox_geo.smoothl1_weight",
            "stage2.objective.bbox_geo.ciou_weight",
            "stage2.objective.bbox_size_aux.log_wh_weight",
            "stage2.objective.coord_reg.coord_gate_weight",
            "stage2.objective.duplicate_ul.weight",
        ],
        tests: &[
            t(
                "crates/train/src/objective/stage2.rs",
                "smooth_l1_is_half_square_inside_one_and_linear_outside",
            ),
            t(
                "crates/train/src/objective/stage2.rs",
                "ciou_loss_is_zero_for_equal_boxes_and_grows_with_distance",
            ),
            t(
                "crates/train/tests/stage2_objective_oracle.rs",
                "channel_a_terms_and_gradients_match_pytorch",
            ),
            t(
                STAGE2_TRAINER_TESTS,
                "a_stage2_run_trains_both_channels_and_logs_their_terms_and_rollout_counters",
            ),
            t(
                STAGE2_TRAINER_TESTS,
                "samples_whose_prompt_ids_differ_are_dropped_and_counted_and_training_goes_on",
            ),
            t(
                STAGE2_TRAINER_TESTS,
                "a_stage2_window_loss_does_not_depend_on_packing_or_accumulation",
            ),
            t("crates/cli/tests/stage2_cli.rs", "the_shipped_stage2_demo_config_trains"),
        ],
        artifacts: &["runs/<name>/metrics.jsonl"],
        audited_by: &["stage2"],
    },
    Boundary {
        name: "rollouts",
        invariant: "a greedy anchor and seeded explorers per prompt, with token ids, log-probs and stop reason; transport errors retry with bounded backoff, then fall back with counters; rollouts fit rollout.max_model_len",
        modules: &[
            "crates/rollout/src/backend/mod.rs",
            "crates/rollout/src/backend/embedded.rs",
            "crates/rollout/src/backend/http/mod.rs",
            "crates/rollout/src/predict.rs",
            "crates/model/src/generate.rs",
        ],
        keys: &[
            "rollout.backend",
            "rollout.servers",
            "rollout.max_new_tokens",
            "rollout.max_model_len",
            "rollout.decode_batch_size",
            "rollout.decoding.temperature",
            "rollout.timeout_s",
            "rollout.retries",
            "rollout.sync_dir",
            "stage2.channel_b.triage.num_rollouts",
            "stage2.channel_b.triage.explorer.temperature",
        ],
        tests: &[
            t(
                "crates/rollout/src/backend/mod.rs",
                "transport_timeouts_and_server_errors_retry_and_the_rest_do_not",
            ),
            t(
                "crates/cli/tests/serve.rs",
                "a_server_killed_mid_run_and_restarted_is_retried_resynced_and_trains_like_the_embedded_run",
            ),
            t(
                "crates/cli/tests/serve.rs",
                "a_stale_weight_version_is_refused_after_one_resync_per_step_and_counted",
            ),
            t(
                "crates/model/src/generate.rs",
                "the_same_seed_gives_the_same_samples_and_sampling_follows_the_distribution",
            ),
            t(
                "crates/model/tests/hf_parity.rs",
                "greedy_generation_of_32_tokens_matches_transformers_batched_with_left_padding",
            ),
            t(AUDIT_TESTS, "stage2_max_new_tokens_shorter_than_an_answer_fails_the_stage2_check"),
            t(AUDIT_TESTS, "an_unreachable_server_fails_the_stage2_check"),
        ],
        artifacts: &["runs/<name>/metrics.jsonl (rollout counters)"],
        audited_by: &["lengths", "stage2", "server_prompt_tokens"],
    },
    Boundary {
        name: "channel B (rollout → target)",
        invariant: "a deterministic function of the texts, the ground truth and the settings; never panics on any text; the target strict-parses back to exactly the retained anchors plus the injected ground truth",
        modules: &[
            "crates/stage2/src/lib.rs",
            "crates/stage2/src/view.rs",
            "crates/stage2/src/dup.rs",
            "crates/stage2/src/boxes.rs",
            "crates/stage2/src/mask.rs",
            "crates/stage2/src/matching.rs",
            "crates/stage2/src/pairing.rs",
            "crates/stage2/src/triage.rs",
            "crates/stage2/src/target.rs",
            "crates/stage2/src/unlikelihood.rs",
        ],
        keys: &[
            "stage2.channel_b.insertion_order",
            "stage2.channel_b.duplicate_control.iou_threshold",
            "stage2.channel_b.duplicate_control.center_radius_scale",
            "stage2.channel_b.triage.unlabeled_consistent_iou_threshold",
            "stage2.channel_b.triage.recovered_ground_truth_weight_multiplier",
            "stage2.channel_b.matching.candidate_top_k",
            "stage2.channel_b.matching.gate",
            "stage2.channel_b.matching.mask_resolution",
            "stage2.channel_b.pseudo_positive.enabled",
            "stage2.objective.token_ce.rollout_global_prefix_struct_ce_weight",
        ],
        tests: &[
            t(
                DECIDE_ROLES,
                "a_matched_anchor_is_supervised_towards_its_ground_truth_box_with_its_description",
            ),
            t(DECIDE_ROLES, "missed_ground_truth_is_injected_after_the_prefix_in_index_order"),
            t(DECIDE_ROLES, "a_dead_anchor_leaves_the_prefix_and_is_counted"),
            t(
                DECIDE_ROLES,
                "a_duplicate_burst_is_suppressed_and_yields_an_unlikelihood_target_at_its_divergence",
            ),
            t(DECIDE_ROLES, "a_garbage_rollout_is_invalid_and_every_ground_truth_is_injected"),
            t(
                "crates/stage2/tests/decide_props.rs",
                "decide_never_panics_and_its_target_parses_back_to_retained_plus_fn",
            ),
            t("crates/stage2/tests/decide_props.rs", "production_defaults_pass_their_own_check"),
            t(
                "crates/stage2/tests/mask_pycocotools.rs",
                "mask_iou_and_run_lengths_equal_pycocotools_on_random_boxes_and_polygons",
            ),
            t(
                "crates/stage2/tests/matching_oracle.rs",
                "matching_equals_an_independent_scipy_pycocotools_implementation",
            ),
            t(
                "crates/stage2/src/view.rs",
                "truncation_keeps_complete_records_and_does_not_count_the_tail",
            ),
            t("crates/stage2/src/target.rs", "token_weights_follow_the_role_table"),
        ],
        artifacts: &[],
        audited_by: &["stage2"],
    },
    Boundary {
        name: "eval",
        invariant: "predictions join ground truth by identity (id, else image path), never by position; COCO AP equals pycocotools; parse failures, unknown images and unmapped descriptions are counted",
        modules: &[
            "crates/eval/src/preds/mod.rs",
            "crates/eval/src/preds/gt.rs",
            "crates/eval/src/preds/input.rs",
            "crates/eval/src/preds/report.rs",
            "crates/eval/src/coco.rs",
            "crates/eval/src/f1.rs",
            "crates/eval/src/mapping.rs",
            "crates/train/src/trainer/evaluate.rs",
            "crates/rollout/src/infer.rs",
        ],
        keys: &[
            "data.val",
            "data.val_limit",
            "eval.limit",
            "eval.max_new_tokens",
            "eval.iou",
            "eval.decoding.temperature",
            "eval.batch_size",
        ],
        tests: &[
            t(EVAL_CLI, "empty_ground_truth_before_a_perfect_prediction_scores_perfect"),
            t(EVAL_CLI, "ids_take_precedence_and_unknown_predictions_are_reported"),
            t(EVAL_CLI, "two_predictions_for_one_image_exit_2_with_both_lines"),
            t("crates/eval/src/preds/input.rs", "id_takes_precedence_over_image"),
            t(
                "crates/eval/tests/coco_parity.rs",
                "all_twelve_stats_lines_and_per_category_ap_equal_pycocotools",
            ),
            t(
                "crates/eval/tests/preds_oracle.rs",
                "coco_stats_and_f1_counts_equal_an_independent_python_implementation",
            ),
            t(AUDIT_TESTS, "two_id_less_val_records_sharing_an_image_fail_the_join_check"),
        ],
        artifacts: &[
            "runs/<name>/eval/gt.jsonl",
            "runs/<name>/eval/step-<N>/metrics.json",
            "runs/<name>/eval/step-<N>/predictions.jsonl",
        ],
        audited_by: &["eval_join", "lengths"],
    },
    Boundary {
        name: "artifacts",
        invariant: "the run directory holds the resolved config, a manifest (versions, git SHA and dirty flag, seeds, data and tokenizer fingerprints, plan checksum), metrics, TensorBoard events and atomic checkpoints; a resume checks everything before writing a byte",
        modules: &[
            "crates/train/src/trainer/run_dir.rs",
            "crates/train/src/trainer/run.rs",
            "crates/train/src/checkpoint.rs",
            "crates/train/src/manifest.rs",
            "crates/train/src/metrics/jsonl.rs",
            "crates/train/src/metrics/tensorboard.rs",
        ],
        keys: &[
            "run.name",
            "run.output_dir",
            "run.seed",
            "train.log_every",
            "train.eval_every",
            "train.save_every",
            "train.keep_last",
        ],
        tests: &[
            t(
                "crates/train/src/checkpoint.rs",
                "a_write_failing_midway_leaves_no_checkpoint_and_no_debris",
            ),
            t("crates/train/src/checkpoint.rs", "prune_keeps_the_newest_in_step_order"),
            t(
                "crates/train/src/manifest.rs",
                "jsonl_fingerprint_counts_records_and_hashes_every_byte",
            ),
            t(
                "crates/train/src/manifest.rs",
                "git_state_reads_this_checkout_and_outside_one_is_none",
            ),
            t(TRAINER_TESTS, "resuming_at_step_n_repeats_the_losses_of_the_uninterrupted_run"),
            t(
                TRAINER_TESTS,
                "changed_data_or_config_refuse_a_resume_unless_allowed_and_the_change_is_recorded",
            ),
            t(
                "crates/train/src/metrics/jsonl.rs",
                "records_are_flushed_lines_with_null_for_non_finite_values",
            ),
            t(
                "crates/train/tests/tensorboard_readback.rs",
                "event_files_read_back_with_valid_checksums_and_scalars",
            ),
            t(
                TRAIN_E2E,
                "thirty_steps_lower_the_loss_and_write_every_artifact_that_infer_and_eval_read",
            ),
            t(AUDIT_TESTS, "provenance_fingerprints_the_data_and_the_tokenizer"),
        ],
        artifacts: &[
            "runs/<name>/config.resolved.yaml",
            "runs/<name>/manifest.json",
            "runs/<name>/metrics.jsonl",
            "runs/<name>/events.out.tfevents.*",
            "runs/<name>/checkpoints/step-<N>/",
            "runs/<name>/eval/",
        ],
        audited_by: &[],
    },
];

/// Every dotted key of the config schema: sections and leaves, `stage2` included (a stage-1
/// config's resolved tree omits that section; the schema has it).
pub fn schema_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    if let Ok(v) = serde_json::to_value(Config::default()) {
        collect_keys(&v, "", &mut keys);
    }
    keys
}

fn collect_keys(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            collect_keys(child, &key, out);
            out.insert(key);
        }
    }
}

/// Check `boundaries` against the repository at `root`: every module path exists, every key
/// is a key of the config schema, every test is a `fn <name>` of its file. Returns one line
/// per problem (empty when the map is true).
pub fn verify(root: &Path, boundaries: &[Boundary]) -> Vec<String> {
    let keys = schema_keys();
    let mut problems = Vec::new();
    for b in boundaries {
        for m in b.modules {
            if !root.join(m).exists() {
                problems.push(format!("{}: module {m} does not exist", b.name));
            }
        }
        for k in b.keys {
            if !keys.contains(*k) {
                problems
                    .push(format!("{}: config key {k} is not a key of the config schema", b.name));
            }
        }
        for test in b.tests {
            match std::fs::read_to_string(root.join(test.file)) {
                Err(e) => problems.push(format!(
                    "{}: test file {} cannot be read ({e}) for test {}",
                    b.name, test.file, test.name
                )),
                Ok(src) if !defines_fn(&src, test.name) => {
                    problems.push(format!("{}: {} has no `fn {}`", b.name, test.file, test.name))
                }
                Ok(_) => {}
            }
        }
        if b.modules.is_empty() {
            problems.push(format!("{}: no owning module", b.name));
        }
        if b.tests.is_empty() {
            problems.push(format!("{}: no locking test", b.name));
        }
    }
    problems
}

/// `src` holds `fn <name>` followed by a character that cannot continue an identifier.
fn defines_fn(src: &str, name: &str) -> bool {
    let needle = format!("fn {name}");
    src.match_indices(&needle).any(|(i, _)| {
        let after = src[i + needle.len()..].chars().next();
        let before = src[..i].chars().next_back();
        !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fn_names_match_whole_identifiers_only() {
        let src = "fn alpha_beta() {}\nasync fn gamma<T>() {}\n";
        assert!(defines_fn(src, "alpha_beta"));
        assert!(defines_fn(src, "gamma"));
        assert!(!defines_fn(src, "alpha"));
        assert!(!defines_fn(src, "beta"));
    }

    #[test]
    fn schema_keys_hold_sections_leaves_and_the_stage2_section() {
        let keys = schema_keys();
        for k in ["packing", "packing.max_length", "stage2.channel_b.triage.num_rollouts"] {
            assert!(keys.contains(k), "{k}");
        }
        assert!(!keys.contains("packing.max_len"));
    }
}
