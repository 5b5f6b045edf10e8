//! Test support shared by the workspace's oracle tests.
//!
//! Oracle tests compare our results with the reference Python tools (transformers, pycocotools,
//! scipy, torch) *live*, by running a short script with the interpreter of the project's pinned
//! virtual environment. The environment is created by `scripts/setup.sh`; `bin/test` exports its
//! interpreter as `COORDEXP_PYTHON_ORACLE`. A missing oracle is a test failure, never a skip: a
//! parity test that silently does nothing would be a test that cannot fail.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The venv interpreter. Panics with instructions when the environment is not set up, because a
/// parity test without its oracle must fail loudly.
pub fn oracle_python() -> PathBuf {
    if let Some(p) = std::env::var_os("COORDEXP_PYTHON_ORACLE") {
        return PathBuf::from(p);
    }
    // Same derivation as scripts/setup.sh, so `cargo test` works in a shell where the venv exists.
    let out = Command::new("bash")
        .arg("-c")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/setup.sh --print-env | sed -n \"s/^export COORDEXP_PYTHON_ORACLE='\\(.*\\)'$/\\1/p\""))
        .output();
    match out {
        Ok(o) if o.status.success() && !o.stdout.is_empty() => {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string())
        }
        _ => panic!(
            "the Python oracle is not available: run tests through `bin/test` (or run \
             scripts/setup.sh and export COORDEXP_PYTHON_ORACLE)"
        ),
    }
}

/// Run `script` with the oracle interpreter, feeding `stdin`, and return its stdout.
/// Panics (failing the test) with the script's stderr if it exits non-zero.
pub fn run_python(script: &str, stdin: &str) -> String {
    let mut child = Command::new(oracle_python())
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the Python oracle: {e}"));
    if let Some(mut s) = child.stdin.take() {
        s.write_all(stdin.as_bytes()).unwrap_or_else(|e| panic!("writing oracle stdin: {e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("oracle did not finish: {e}"));
    assert!(
        out.status.success(),
        "oracle script failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("oracle printed non-UTF-8: {e}"))
}

/// Run `script` with JSON on stdin and parse the JSON it prints.
pub fn run_python_json(script: &str, input: &serde_json::Value) -> serde_json::Value {
    let out = run_python(script, &input.to_string());
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("oracle printed invalid JSON ({e}): {out}"))
}

/// Arbitrary JSON trees for parser property tests: `leaf` values, nested up to `depth` levels in
/// arrays and objects whose keys come from `key` (favour the keys the parser looks for).
pub fn json_tree(
    key: impl proptest::strategy::Strategy<Value = String> + Clone + 'static,
    leaf: impl proptest::strategy::Strategy<Value = serde_json::Value> + 'static,
    depth: u32,
    size: u32,
) -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::Value;
    leaf.prop_recursive(depth, size, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// GPT-2's byte-to-character table (byte-level BPE vocabularies spell every byte as one
/// printable character): what the tiny tokenizers of the test fixtures are written with.
pub fn byte_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).collect();
    bs.extend(0xA1..=0xAC);
    bs.extend(0xAE..=0xFF);
    let mut map = vec!['\0'; 256];
    for &b in &bs {
        map[b as usize] = char::from_u32(b).unwrap_or('\0');
    }
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            map[b as usize] = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
        }
    }
    map
}
