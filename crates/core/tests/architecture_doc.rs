//! ARCHITECTURE.md tells the truth about the tree: every repository path it names exists.

use std::path::Path;

/// Backticked words of `text` that look like repository paths.
fn named_paths(text: &str) -> Vec<String> {
    const ROOTS: [&str; 9] = [
        "crates/",
        "bin/",
        "scripts/",
        "build-support/",
        "fuzz/",
        "configs/",
        "bench/",
        "tests/",
        ".ci/",
    ];
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| ROOTS.iter().any(|r| w.starts_with(r)))
        .filter(|w| !w.contains(' ') && !w.contains('*') && !w.contains('<'))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_path_named_in_architecture_md_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let paths = named_paths(&text);
    assert!(paths.len() > 50, "the code map names too few paths: {}", paths.len());
    let missing: Vec<&String> = paths.iter().filter(|p| !root.join(p).exists()).collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md names paths that do not exist: {missing:?}");
}

#[test]
fn every_crate_has_a_section_in_architecture_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            text.contains(&format!("### `crates/{name}`")),
            "crates/{name} has no section in ARCHITECTURE.md"
        );
    }
}
