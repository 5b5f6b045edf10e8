//! The pipeline map tells the truth about the repository.

use coordexp_audit::map::{BOUNDARIES, Boundary, TestRef, verify};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn every_module_key_and_test_of_the_map_exists() {
    let problems = verify(&root(), BOUNDARIES);
    assert!(problems.is_empty(), "the pipeline map is stale:\n{}", problems.join("\n"));
    assert!(BOUNDARIES.len() >= 10);
    // Every live check of the audit is reachable from the map.
    for id in [
        "records",
        "images",
        "template",
        "coord_vocab",
        "lengths",
        "packing",
        "eval_join",
        "stage2",
    ] {
        assert!(BOUNDARIES.iter().any(|b| b.audited_by.contains(&id)), "{id}");
    }
}

#[test]
fn a_missing_path_an_unknown_key_and_an_undefined_test_are_each_caught() {
    let bogus = [Boundary {
        name: "bogus",
        invariant: "",
        modules: &["crates/text/src/encode.rs", "crates/text/src/no_such_file.rs"],
        keys: &["packing.max_length", "packing.max_len", "stage2.channel_b.triage.num_rollouts"],
        tests: &[
            TestRef {
                file: "crates/text/src/plan.rs",
                name: "plan_is_a_pure_function_of_lengths_config_and_seed",
            },
            TestRef { file: "crates/text/src/plan.rs", name: "plan_is_a_pure_function" },
            TestRef { file: "crates/text/tests/nope.rs", name: "x" },
        ],
        artifacts: &[],
        audited_by: &[],
    }];
    let problems = verify(&root(), &bogus);
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(problems[0].contains("crates/text/src/no_such_file.rs does not exist"));
    assert!(problems[1].contains("packing.max_len is not a key"));
    assert!(problems[2].contains("has no `fn plan_is_a_pure_function`"));
    assert!(problems[3].contains("crates/text/tests/nope.rs cannot be read"));
}
