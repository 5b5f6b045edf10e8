//! A serde `Deserializer` over located YAML nodes.
//!
//! Deserializing through our own node tree (instead of a YAML crate's serde support) is what
//! makes the config strict *and* helpful: when serde asks for a struct it tells us the struct's
//! field names, so every key that is not one of them is rejected with its full dotted path, its
//! `file:line`, the closest known key, or a migration message for keys we renamed. Every other
//! error (wrong type, unknown enum value, missing field) is stamped with the path and line of the
//! node it happened at. Unknown keys are collected rather than returned one by one, so a config
//! with three typos reports all three.

use super::migrate;
use super::yaml::{Entry, Node, Value};
use crate::error::Error;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use std::cell::RefCell;
use std::fmt;

/// A serde error carrying our located [`Error`].
#[derive(Debug)]
pub struct DeError(pub Error);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(Error::input(msg.to_string()))
    }
}

/// Problems found while walking the tree that do not stop the walk (unknown keys).
#[derive(Default)]
pub struct Collected {
    pub errors: RefCell<Vec<Error>>,
}

pub struct NodeDe<'a> {
    node: &'a Node,
    path: String,
    collected: &'a Collected,
}

impl<'a> NodeDe<'a> {
    pub fn root(node: &'a Node, collected: &'a Collected) -> Self {
        NodeDe { node, path: String::new(), collected }
    }

    fn locate(&self, e: DeError) -> DeError {
        if e.0.location().is_some() {
            return e;
        }
        let at = if self.path.is_empty() {
            self.node.origin.to_string()
        } else {
            format!("{} ({})", self.node.origin, self.path)
        };
        DeError(e.0.at(at))
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }

    fn expected(&self, what: &str) -> DeError {
        let shown = if self.path.is_empty() {
            "the config root".to_string()
        } else {
            format!("`{}`", self.path)
        };
        self.locate(DeError(Error::input(format!(
            "expected {what} for {shown}, found {}",
            self.node.value.kind()
        ))))
    }

    fn reject_unknown(&self, entry: &Entry, fields: &[&str]) {
        let path = self.child_path(&entry.key);
        let at = format!("{} ({path})", entry.key_origin);
        let err = match migrate::lookup(&path) {
            Some(message) => {
                Error::input(format!("key `{path}` is no longer supported")).at(at).hint(message)
            }
            None => {
                let e = Error::input(format!("unknown key `{}`", entry.key)).at(at);
                match closest(&entry.key, fields) {
                    Some(best) => e.hint(format!("did you mean `{}`?", self.child_path(best))),
                    None if fields.is_empty() => e.hint("this section takes no keys"),
                    None => e.hint(format!(
                        "known keys here: {}",
                        fields.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
                    )),
                }
            }
        };
        self.collected.errors.borrow_mut().push(err);
    }
}

/// The known field closest to `key`, if it is plausibly a typo of it.
fn closest<'f>(key: &str, fields: &[&'f str]) -> Option<&'f str> {
    let lower = key.to_ascii_lowercase();
    fields
        .iter()
        .map(|f| {
            (
                *f,
                strsim::normalized_damerau_levenshtein(&lower, f)
                    .max(strsim::jaro_winkler(&lower, f) - 0.15),
            )
        })
        .filter(|(_, score)| *score >= 0.6)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(f, _)| f)
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => {
                visitor.visit_seq(Seq { items: items.iter(), index: 0, parent: &self })
            }
            Value::Map(entries) => {
                visitor.visit_map(Map { entries: entries.iter().collect(), pos: 0, parent: &self })
            }
        };
        r.map_err(|e| self.locate(e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let entries = match &self.node.value {
            Value::Map(entries) => entries,
            _ => return Err(self.expected("a mapping")),
        };
        let mut known = Vec::with_capacity(entries.len());
        for entry in entries {
            if fields.contains(&entry.key.as_str()) {
                known.push(entry);
            } else {
                self.reject_unknown(entry, fields);
            }
        }
        visitor.visit_map(Map { entries: known, pos: 0, parent: &self }).map_err(|e| self.locate(e))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) => {
                let r: Result<V::Value, DeError> =
                    visitor.visit_enum(s.as_str().into_deserializer());
                r.map_err(|e| {
                    let e = self.locate(e);
                    match closest(s, variants) {
                        Some(best) => DeError(e.0.or_hint(format!("did you mean `{best}`?"))),
                        None => e,
                    }
                })
            }
            _ => Err(self.expected(&format!(
                "one of {}",
                variants.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

struct Seq<'p, 'a> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
    parent: &'p NodeDe<'a>,
}

impl<'de, 'p, 'a> SeqAccess<'de> for Seq<'p, 'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.next() else { return Ok(None) };
        let path = format!("{}[{}]", self.parent.path, self.index);
        self.index += 1;
        seed.deserialize(NodeDe { node, path, collected: self.parent.collected }).map(Some)
    }
}

struct Map<'p, 'a> {
    entries: Vec<&'a Entry>,
    pos: usize,
    parent: &'p NodeDe<'a>,
}

impl<'de, 'p, 'a> MapAccess<'de> for Map<'p, 'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.get(self.pos) {
            None => Ok(None),
            Some(entry) => {
                let key: de::value::StrDeserializer<'_, DeError> =
                    entry.key.as_str().into_deserializer();
                seed.deserialize(key).map(Some)
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some(entry) = self.entries.get(self.pos) else {
            return Err(DeError(Error::runtime("internal: map value requested past the end")));
        };
        self.pos += 1;
        let de = NodeDe {
            node: &entry.node,
            path: self.parent.child_path(&entry.key),
            collected: self.parent.collected,
        };
        seed.deserialize(de)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;
    use serde::Deserialize;
    use std::path::Path;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(default)]
    struct Inner {
        learning_rate: f64,
        steps: u32,
        mode: Mode,
        name: Option<String>,
    }
    impl Default for Inner {
        fn default() -> Self {
            Inner { learning_rate: 0.1, steps: 1, mode: Mode::Full, name: None }
        }
    }
    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Full,
        Lora,
    }
    #[derive(Deserialize, Debug, PartialEq, Default)]
    #[serde(default)]
    struct Root {
        train: Inner,
        list: Vec<u8>,
    }

    fn de(src: &str) -> (Result<Root, DeError>, Vec<Error>) {
        let node = parse(src, Path::new("c.yaml")).unwrap();
        let collected = Collected::default();
        let r = Root::deserialize(NodeDe::root(&node, &collected));
        (r, collected.errors.into_inner())
    }

    #[test]
    fn unknown_nested_key_names_path_line_and_suggestion() {
        let (_, errs) = de("train:\n  steps: 2\n  lerning_rate: 0.2\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].what(), "unknown key `lerning_rate`");
        assert_eq!(errs[0].location(), Some("c.yaml:3 (train.lerning_rate)"));
        assert_eq!(errs[0].hint_text(), Some("did you mean `train.learning_rate`?"));
    }

    #[test]
    fn all_unknown_keys_are_reported_not_just_the_first() {
        let (_, errs) = de("trian: {}\ntrain: {stepz: 1, modee: full}\n");
        assert_eq!(errs.len(), 3, "{errs:?}");
    }

    #[test]
    fn wrong_type_is_located() {
        let (r, _) = de("train:\n  steps: many\n");
        let e = r.unwrap_err().0;
        assert!(e.what().contains("invalid type"), "{e}");
        assert_eq!(e.location(), Some("c.yaml:2 (train.steps)"));
    }

    #[test]
    fn unknown_enum_value_suggests_the_closest_variant() {
        let (r, _) = de("train: {mode: lroa}\n");
        let e = r.unwrap_err().0;
        assert!(e.what().contains("unknown variant"), "{e}");
        assert_eq!(e.hint_text(), Some("did you mean `lora`?"));
    }

    #[test]
    fn integers_widen_to_floats_but_floats_do_not_narrow() {
        let (r, _) = de("train: {learning_rate: 1}\n");
        assert_eq!(r.unwrap().train.learning_rate, 1.0);
        let (r, _) = de("train: {steps: 1.5}\n");
        assert!(r.is_err());
    }

    #[test]
    fn list_elements_are_addressed_by_index() {
        let (r, _) = de("list: [1, 2, 300]\n");
        let e = r.unwrap_err().0;
        assert_eq!(e.location(), Some("c.yaml:1 (list[2])"));
    }
}
