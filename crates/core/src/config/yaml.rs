//! YAML → a tree of located nodes.
//!
//! Every node remembers the file and line it was written at, so that any later complaint (an
//! unknown key, a wrong type, a coherence violation) can point at the exact place, even after
//! `extends:` merged several files. Scalars are resolved with the YAML 1.2 core schema (so `1e-4`
//! is a number, `yes` is a string), and quoted scalars are always strings.

use crate::error::{Error, Result};
use std::path::Path;
use std::sync::Arc;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a node was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A YAML value with its origin. Mapping keys keep their own origin (the line of the key).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Insertion-ordered; keys are unique (duplicates are rejected at parse time).
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_origin: Origin,
    pub node: Node,
}

impl Value {
    /// A short noun for error messages ("a mapping", "an integer", …).
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }
}

/// Parse one YAML document. An empty file is an empty mapping.
pub fn parse(src: &str, file: &Path) -> Result<Node> {
    let file: Arc<str> = Arc::from(file.display().to_string());
    let mut builder = Builder {
        file: file.clone(),
        stack: Vec::new(),
        anchors: Vec::new(),
        docs: Vec::new(),
        error: None,
    };
    let mut parser = Parser::new_from_str(src);
    if let Err(e) = parser.load(&mut builder, true) {
        return Err(Error::input(format!("invalid YAML: {}", e.info()))
            .at(format!("{}:{}:{}", file, e.marker().line(), e.marker().col() + 1))
            .hint("fix the YAML syntax (indentation, quotes, `key: value` pairs)"));
    }
    if let Some(e) = builder.error {
        return Err(e);
    }
    match builder.docs.len() {
        0 => Ok(Node { value: Value::Map(Vec::new()), origin: Origin { file, line: 1 } }),
        1 => Ok(builder.docs.pop().unwrap_or_else(|| unreachable_node(&file))),
        n => Err(Error::input(format!("expected one YAML document, found {n}"))
            .at(file.to_string())
            .hint("remove the extra `---` document separators")),
    }
}

fn unreachable_node(file: &Arc<str>) -> Node {
    Node { value: Value::Null, origin: Origin { file: file.clone(), line: 1 } }
}

enum Frame {
    Seq {
        origin: Origin,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        origin: Origin,
        anchor: usize,
        entries: Vec<Entry>,
        pending_key: Option<(String, Origin)>,
    },
}

struct Builder {
    file: Arc<str>,
    stack: Vec<Frame>,
    anchors: Vec<(usize, Node)>,
    docs: Vec<Node>,
    error: Option<Error>,
}

impl Builder {
    fn origin(&self, mark: Marker) -> Origin {
        Origin { file: self.file.clone(), line: mark.line() }
    }

    fn fail(&mut self, e: Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn insert(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.push((anchor, node.clone()));
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, pending_key, .. }) => match pending_key.take() {
                None => match node.value {
                    Value::Str(key) => *pending_key = Some((key, node.origin)),
                    // Plain scalars like `1:` or `true:` arrive typed; keys are names, so the
                    // text form is what the user meant only for strings.
                    other => {
                        let e = Error::input(format!(
                            "mapping keys must be strings, found {}",
                            other.kind()
                        ))
                        .at(node.origin.to_string())
                        .hint("quote the key or rename it");
                        self.fail(e);
                    }
                },
                Some((key, key_origin)) => {
                    if let Some(prev) = entries.iter().find(|e| e.key == key) {
                        let e = Error::input(format!(
                            "duplicate key `{key}` (first written at line {})",
                            prev.key_origin.line
                        ))
                        .at(key_origin.to_string())
                        .hint("remove one of the two entries");
                        self.fail(e);
                        return;
                    }
                    entries.push(Entry { key, key_origin, node });
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let origin = self.origin(mark);
                let value = if style != TScalarStyle::Plain || tag.is_some() {
                    Value::Str(text)
                } else {
                    resolve_plain(text)
                };
                self.insert(Node { value, origin }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                let origin = self.origin(mark);
                self.stack.push(Frame::Seq { origin, anchor, items: Vec::new() });
            }
            Event::MappingStart(anchor, _) => {
                let origin = self.origin(mark);
                self.stack.push(Frame::Map {
                    origin,
                    anchor,
                    entries: Vec::new(),
                    pending_key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq { origin, anchor, items }) => {
                    self.insert(Node { value: Value::Seq(items), origin }, anchor)
                }
                Some(Frame::Map { origin, anchor, entries, .. }) => {
                    self.insert(Node { value: Value::Map(entries), origin }, anchor)
                }
                None => {}
            },
            Event::Alias(id) => {
                let found =
                    self.anchors.iter().rev().find(|(a, _)| *a == id).map(|(_, n)| n.clone());
                match found {
                    Some(mut node) => {
                        node.origin = self.origin(mark);
                        self.insert(node, 0);
                    }
                    None => {
                        let e = Error::input("alias refers to an unknown anchor")
                            .at(self.origin(mark).to_string());
                        self.fail(e);
                    }
                }
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if is_core_int(&text)
        && let Ok(i) = text.parse::<i64>()
    {
        return Value::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    if is_core_float(&text)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text)
}

fn is_core_int(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_core_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (int.bytes().all(|b| b.is_ascii_digit()) && frac.bytes().all(|b| b.is_ascii_digit()))
                && (!int.is_empty() || !frac.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
        }
    };
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Result<Node> {
        parse(src, Path::new("t.yaml"))
    }

    #[test]
    fn scalars_follow_the_yaml_1_2_core_schema() {
        let n = p("a: 1e-4\nb: yes\nc: '3'\nd: ~\ne: 0x10\nf: -2\ng: .5\n").unwrap();
        let get = |k: &str| n.get(k).unwrap().node.value.clone();
        assert_eq!(get("a"), Value::Float(1e-4));
        assert_eq!(get("b"), Value::Str("yes".into()));
        assert_eq!(get("c"), Value::Str("3".into()));
        assert_eq!(get("d"), Value::Null);
        assert_eq!(get("e"), Value::Int(16));
        assert_eq!(get("f"), Value::Int(-2));
        assert_eq!(get("g"), Value::Float(0.5));
    }

    #[test]
    fn every_key_remembers_its_line() {
        let n = p("a:\n  b: 1\n  c:\n    d: 2\n").unwrap();
        let a = n.get("a").unwrap();
        assert_eq!(a.key_origin.line, 1);
        let c = a.node.get("c").unwrap();
        assert_eq!(c.key_origin.line, 3);
        assert_eq!(c.node.get("d").unwrap().key_origin.line, 4);
    }

    #[test]
    fn duplicate_keys_are_rejected_with_both_lines() {
        let e = p("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(e.what().contains("duplicate key `a`"), "{e}");
        assert!(e.what().contains("line 1"), "{e}");
        assert_eq!(e.location(), Some("t.yaml:3"));
    }

    #[test]
    fn syntax_errors_are_located() {
        let e = p("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.location().unwrap().starts_with("t.yaml:"), "{e}");
    }

    #[test]
    fn empty_file_is_an_empty_mapping() {
        assert_eq!(p("").unwrap().value, Value::Map(vec![]));
    }

    #[test]
    fn aliases_copy_the_anchored_value() {
        let n = p("a: &x {k: 1}\nb: *x\n").unwrap();
        assert_eq!(n.get("b").unwrap().node.get("k").unwrap().node.value, Value::Int(1));
    }

    #[test]
    fn garbage_never_panics() {
        for src in [
            "{",
            "]",
            "a: b: c",
            "- a\nb: c",
            "\t\t",
            "? [a]\n: b",
            "a: !!int x",
            "&a *a",
            "%YAML 9\n---\na",
            "\u{0}",
        ] {
            let _ = p(src);
        }
    }
}
