//! `extends:` resolution and merging.
//!
//! Rules (documented in README "Configuration"):
//! - `extends:` is a string or a list of strings; each path is relative to the directory of the
//!   file that names it (absolute paths are used as-is), never to the current directory.
//! - Bases are fully resolved first, merged in list order (later bases win), and the file itself
//!   is merged last, so the leaf always wins.
//! - Mappings merge key by key; every other value (lists, scalars, `null`) replaces.
//! - A cycle is an error naming the chain; a diamond (two bases sharing a base) is fine.

use super::yaml::{self, Entry, Node, Origin, Value};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Read `path`, resolve its `extends:` chain and return the merged tree.
pub fn load_tree(path: &Path) -> Result<Node> {
    load_rec(path, &mut Vec::new(), None)
}

fn load_rec(path: &Path, chain: &mut Vec<PathBuf>, named_at: Option<&Origin>) -> Result<Node> {
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        let err = Error::io("read config", path, &e);
        match named_at {
            Some(o) => err.at(o.to_string()).hint(format!(
                "`extends:` paths are relative to the file that names them ({})",
                Path::new(&*o.file).parent().map(|p| p.display().to_string()).unwrap_or_default()
            )),
            None => err,
        }
    })?;
    if let Some(pos) = chain.iter().position(|p| p == &canonical) {
        let cycle: Vec<String> = chain[pos..]
            .iter()
            .chain(std::iter::once(&canonical))
            .map(|p| p.display().to_string())
            .collect();
        let mut err = Error::input(format!("`extends:` cycle: {}", cycle.join(" -> ")));
        if let Some(o) = named_at {
            err = err.at(o.to_string());
        }
        return Err(err.hint("remove one of the `extends:` entries that closes the loop"));
    }
    let src =
        std::fs::read_to_string(&canonical).map_err(|e| Error::io("read config", path, &e))?;
    let mut node = yaml::parse(&src, &lexical_normalize(path))?;
    let entries = match &mut node.value {
        Value::Map(entries) => entries,
        Value::Null => {
            node.value = Value::Map(Vec::new());
            match &mut node.value {
                Value::Map(entries) => entries,
                _ => return Err(Error::runtime("internal: config root is not a mapping")),
            }
        }
        other => {
            return Err(Error::input(format!(
                "a config file must be a mapping, found {}",
                other.kind()
            ))
            .at(node.origin.to_string())
            .hint("write `section: {key: value}` entries at the top level"));
        }
    };
    let extends = entries.iter().position(|e| e.key == "extends").map(|i| entries.remove(i));
    let Some(extends) = extends else {
        return Ok(node);
    };
    let bases = extends_paths(&extends)?;
    // Read through the canonical directory, but label locations with the path as the user would
    // write it (`configs/base.yaml`, not `/abs/configs/demo/../base.yaml`).
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    chain.push(canonical);
    let mut merged: Option<Node> = None;
    for (base, origin) in bases {
        let base_path =
            if Path::new(&base).is_absolute() { PathBuf::from(&base) } else { dir.join(&base) };
        let base_node = load_rec(&base_path, chain, Some(&origin))?;
        merged = Some(match merged {
            None => base_node,
            Some(acc) => merge(acc, base_node),
        });
    }
    chain.pop();
    Ok(match merged {
        None => node,
        Some(acc) => merge(acc, node),
    })
}

fn extends_paths(entry: &Entry) -> Result<Vec<(String, Origin)>> {
    let bad = |origin: &Origin, found: &str| {
        Error::input(format!("`extends` must be a path or a list of paths, found {found}"))
            .at(origin.to_string())
            .hint("write `extends: base.yaml` or `extends: [a.yaml, b.yaml]`")
    };
    match &entry.node.value {
        Value::Null => Ok(Vec::new()),
        Value::Str(s) => Ok(vec![(s.clone(), entry.key_origin.clone())]),
        Value::Seq(items) => items
            .iter()
            .map(|n| match &n.value {
                Value::Str(s) => Ok((s.clone(), n.origin.clone())),
                other => Err(bad(&n.origin, other.kind())),
            })
            .collect(),
        other => Err(bad(&entry.key_origin, other.kind())),
    }
}

/// Remove `.` and `name/..` components without touching the file system (labels only).
fn lexical_normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() { PathBuf::from(".") } else { out.iter().collect() }
}

/// Merge `over` onto `base`: mappings merge recursively; anything else in `over` replaces.
pub fn merge(base: Node, over: Node) -> Node {
    match (base.value, over.value) {
        (Value::Map(mut base_entries), Value::Map(over_entries)) => {
            for o in over_entries {
                match base_entries.iter().position(|b| b.key == o.key) {
                    Some(i) => {
                        let b = base_entries.remove(i);
                        let node = merge(b.node, o.node);
                        base_entries
                            .insert(i, Entry { key: o.key, key_origin: o.key_origin, node });
                    }
                    None => base_entries.push(o),
                }
            }
            Node { value: Value::Map(base_entries), origin: over.origin }
        }
        (_, value) => Node { value, origin: over.origin },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, text).unwrap();
        p
    }

    fn at<'a>(n: &'a Node, path: &str) -> &'a Node {
        path.split('.').fold(n, |n, k| &n.get(k).unwrap_or_else(|| panic!("no {k}")).node)
    }

    #[test]
    fn later_bases_win_and_the_leaf_wins_last() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.yaml", "x: {p: 1, q: 1, r: 1}\n");
        write(d.path(), "b.yaml", "x: {q: 2, r: 2}\n");
        let leaf = write(d.path(), "leaf.yaml", "extends: [a.yaml, b.yaml]\nx: {r: 3}\n");
        let n = load_tree(&leaf).unwrap();
        assert_eq!(at(&n, "x.p").value, Value::Int(1));
        assert_eq!(at(&n, "x.q").value, Value::Int(2));
        assert_eq!(at(&n, "x.r").value, Value::Int(3));
        assert!(at(&n, "x.p").origin.file.ends_with("a.yaml"));
        assert!(at(&n, "x.r").origin.file.ends_with("leaf.yaml"));
    }

    #[test]
    fn lists_and_null_replace_instead_of_merging() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.yaml", "l: [1, 2, 3]\nm: {k: 1}\n");
        let leaf = write(d.path(), "leaf.yaml", "extends: base.yaml\nl: [9]\nm: null\n");
        let n = load_tree(&leaf).unwrap();
        match &at(&n, "l").value {
            Value::Seq(items) => assert_eq!(items.len(), 1),
            v => panic!("{v:?}"),
        }
        assert_eq!(at(&n, "m").value, Value::Null);
    }

    #[test]
    fn extends_paths_are_relative_to_the_naming_file_not_the_cwd() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "configs/base/common.yaml", "k: 7\n");
        let leaf = write(d.path(), "configs/exp/leaf.yaml", "extends: ../base/common.yaml\n");
        // The test process cwd is the crate dir, which is unrelated to the temp dir.
        let n = load_tree(&leaf).unwrap();
        assert_eq!(at(&n, "k").value, Value::Int(7));
    }

    #[test]
    fn a_cycle_is_an_error_naming_the_chain() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.yaml", "extends: b.yaml\n");
        write(d.path(), "b.yaml", "extends: a.yaml\n");
        let e = load_tree(&d.path().join("a.yaml")).unwrap_err();
        assert!(e.what().contains("cycle"), "{e}");
        assert!(e.what().contains("a.yaml -> ") && e.what().contains("b.yaml"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn a_diamond_is_not_a_cycle() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "root.yaml", "k: 1\n");
        write(d.path(), "l.yaml", "extends: root.yaml\n");
        write(d.path(), "r.yaml", "extends: root.yaml\n");
        let leaf = write(d.path(), "leaf.yaml", "extends: [l.yaml, r.yaml]\n");
        assert!(load_tree(&leaf).is_ok());
    }

    #[test]
    fn a_missing_base_names_the_extends_line() {
        let d = tempfile::tempdir().unwrap();
        let leaf = write(d.path(), "leaf.yaml", "a: 1\nextends: nope.yaml\n");
        let e = load_tree(&leaf).unwrap_err();
        assert!(e.what().contains("nope.yaml"), "{e}");
        assert!(e.location().unwrap().ends_with("leaf.yaml:2"), "{e:?}");
        assert_eq!(e.exit_code(), 2);
    }
}
