//! Rendering a resolved config back to YAML, optionally annotated with provenance.

use super::coherence::origin_of;
use super::schema::{Config, Stage, TuningMode};
use super::yaml::Node;
use serde_json::Value;

/// YAML with a `# file:line` (or `# default`) comment on every leaf.
pub fn render(cfg: &Config, tree: &Node) -> String {
    let mut out = String::new();
    write_map(&to_value(cfg), "", 0, Some(tree), &mut out);
    out
}

/// Plain YAML of the resolved config.
pub fn render_plain(cfg: &Config) -> String {
    let mut out = String::new();
    write_map(&to_value(cfg), "", 0, None, &mut out);
    out
}

/// The resolved tree without the sections that do not apply (a stored config must load back,
/// and coherence refuses them): `stage2` under stage 1, `model.tuning.adapter` under full
/// tuning.
fn to_value(cfg: &Config) -> Value {
    // Serializing plain data structs to a JSON value cannot fail (no maps with non-string keys).
    let mut v = serde_json::to_value(cfg).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        if cfg.train.stage == Stage::Stage1 {
            map.remove("stage2");
        }
        if cfg.model.tuning.mode == TuningMode::Full
            && let Some(Value::Object(tuning)) =
                map.get_mut("model").and_then(|m| m.get_mut("tuning"))
        {
            tuning.remove("adapter");
        }
    }
    v
}

fn write_map(v: &Value, path: &str, depth: usize, tree: Option<&Node>, out: &mut String) {
    let Value::Object(map) = v else { return };
    for (key, child) in map {
        let child_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        let indent = "  ".repeat(depth);
        match child {
            Value::Object(m) if !m.is_empty() => {
                out.push_str(&format!("{indent}{key}:\n"));
                write_map(child, &child_path, depth + 1, tree, out);
            }
            leaf => {
                out.push_str(&format!("{indent}{key}: {}", scalar(leaf)));
                if let Some(tree) = tree {
                    match origin_of(tree, &child_path) {
                        Some(o) => out.push_str(&format!("  # {o}")),
                        None => out.push_str("  # default"),
                    }
                }
                out.push('\n');
            }
        }
    }
}

/// A JSON rendering is valid YAML flow syntax for every leaf we have (strings are quoted).
fn scalar(v: &Value) -> String {
    match v {
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Array(items) => {
            format!("[{}]", items.iter().map(scalar).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;
    use std::path::Path;

    #[test]
    fn plain_render_parses_back_to_the_same_config() {
        let cfg = Config::default();
        let text = render_plain(&cfg);
        let again = crate::config::from_str(&text, "resolved.yaml").unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn written_leaves_show_their_file_and_defaults_say_so() {
        let tree = parse("train:\n  max_steps: 5\n", Path::new("x.yaml")).unwrap();
        let text = render(&Config::default(), &tree);
        assert!(text.contains("max_steps: 2000  # x.yaml:2"), "{text}");
        assert!(text.contains("micro_batch: 1  # default"), "{text}");
    }
}
