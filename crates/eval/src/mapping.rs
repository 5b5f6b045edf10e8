//! Description → category mapping.
//!
//! A detection-as-text model names objects in free text, while AP needs a fixed category per
//! detection. The category set is either the distinct ground-truth descriptions or a fixed list
//! (e.g. COCO-80, [`Categories::from_file`]). A [`DescMapper`] turns a predicted description into
//! a category or declares it *unmapped*; unmapped predictions are counted, listed and kept out of
//! AP by the caller ([`MappingStats`]). The trait exists so that an embedding-based mapper can be
//! added without touching the evaluation.
//!
//! [`LexicalMapper`] tries, in order:
//! 1. **exact**: the trimmed description equals a category name;
//! 2. **normalised**: equal after [`normalize`] (lower case, `_ - / ( ) , .` as spaces, collapsed
//!    whitespace) or after undoing a regular plural of the last word (`cars`, `buses`, `boxes`,
//!    `berries`);
//! 3. **synonym**: equal after replacing the phrase by its canonical name from the synonym table
//!    (`data/synonyms.tsv`: `man` → `person`, `sofa` → `couch`, …).
//!
//! Category names go through the same steps, so `"People"` in the ground truth and `"person"` in a
//! prediction meet. When two categories claim the same lookup key, the one whose own name is
//! closer (exact form before plural form before synonym) wins, then the lower id; every such
//! collision is recorded ([`LexicalMapper::collisions`]) so the report can show it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use coordexp_core::{Error, Result};
use serde_json::Value;

/// A category id, 1-based in the order categories were first seen (COCO-style ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CategoryId(u32);

impl CategoryId {
    /// The id as written in COCO files.
    pub fn get(self) -> u64 {
        u64::from(self.0)
    }

    fn index(self) -> usize {
        self.0 as usize - 1
    }
}

/// The category set: distinct names, each with a [`CategoryId`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Categories {
    names: Vec<String>,
    by_name: HashMap<String, CategoryId>,
}

impl Categories {
    /// Categories from names in order; names are trimmed, repeats keep their first id.
    pub fn from_names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        let mut c = Categories::default();
        for n in names {
            c.insert(n.as_ref());
        }
        c
    }

    /// Add `name` (trimmed) if new; returns its id either way.
    pub fn insert(&mut self, name: &str) -> CategoryId {
        let name = name.trim();
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = CategoryId(self.names.len() as u32 + 1);
        self.names.push(name.to_owned());
        self.by_name.insert(name.to_owned(), id);
        id
    }

    /// Read a fixed category list: a JSON array of names, a JSON array of `{"name": …}` objects,
    /// a COCO file (its `categories`), or plain text with one name per line (blank lines and
    /// lines starting with `#` ignored). Ids follow the order of the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("read the categories", path, &e))?;
        let trimmed = text.trim_start();
        if !(trimmed.starts_with('[') || trimmed.starts_with('{')) {
            let names =
                text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
            return Self::non_empty(Categories::from_names(names), path);
        }
        let hint = "use a JSON array of names, of {\"name\": …} objects, a COCO file with \
                    `categories`, or a text file with one name per line";
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            Error::input(format!("invalid JSON in the categories file: {e}"))
                .at(format!("{}:{}:{}", path.display(), e.line(), e.column()))
                .hint(hint)
        })?;
        let list = match &value {
            Value::Array(a) => a,
            Value::Object(o) => match o.get("categories") {
                Some(Value::Array(a)) => a,
                _ => {
                    return Err(Error::input("the categories file has no `categories` array")
                        .at(path.display().to_string())
                        .hint(hint));
                }
            },
            _ => {
                return Err(Error::input(
                    "the categories file is neither a JSON array nor an object",
                )
                .at(path.display().to_string())
                .hint(hint));
            }
        };
        let mut c = Categories::default();
        for (i, item) in list.iter().enumerate() {
            let name = match item {
                Value::String(s) => s.as_str(),
                Value::Object(o) => match o.get("name") {
                    Some(Value::String(s)) => s.as_str(),
                    _ => {
                        return Err(Error::input(format!("category {i} has no string `name`"))
                            .at(path.display().to_string())
                            .hint(hint));
                    }
                },
                _ => {
                    return Err(Error::input(format!(
                        "category {i} is neither a name nor an object"
                    ))
                    .at(path.display().to_string())
                    .hint(hint));
                }
            };
            c.insert(name);
        }
        Self::non_empty(c, path)
    }

    fn non_empty(c: Categories, path: &Path) -> Result<Self> {
        if c.is_empty() {
            return Err(Error::input("the categories file lists no category")
                .at(path.display().to_string()));
        }
        Ok(c)
    }

    /// The id of a category name (exact, after trimming).
    pub fn id(&self, name: &str) -> Option<CategoryId> {
        self.by_name.get(name.trim()).copied()
    }

    /// The name of `id`.
    pub fn name(&self, id: CategoryId) -> &str {
        &self.names[id.index()]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// `(id, name)` in id order.
    pub fn iter(&self) -> impl Iterator<Item = (CategoryId, &str)> {
        self.names.iter().enumerate().map(|(i, n)| (CategoryId(i as u32 + 1), n.as_str()))
    }
}

/// Which rule mapped a description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MatchRule {
    Exact,
    Normalized,
    Synonym,
}

impl MatchRule {
    /// The report name of the rule.
    pub fn name(self) -> &'static str {
        match self {
            MatchRule::Exact => "exact",
            MatchRule::Normalized => "normalized",
            MatchRule::Synonym => "synonym",
        }
    }
}

/// A successful mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    pub category: CategoryId,
    pub rule: MatchRule,
}

/// Maps a predicted description to a category; `None` means unmapped.
pub trait DescMapper {
    fn map(&self, desc: &str) -> Option<Mapped>;
}

/// The synonym table: normalised alias → normalised canonical name.
#[derive(Debug, Clone, Default)]
pub struct Synonyms {
    canonical: HashMap<String, String>,
}

/// The table shipped with coordexp (`crates/eval/data/synonyms.tsv`).
const BUILTIN_SYNONYMS: &str = include_str!("../data/synonyms.tsv");

impl Synonyms {
    /// The shipped table.
    pub fn builtin() -> Result<Self> {
        Self::parse(BUILTIN_SYNONYMS, "crates/eval/data/synonyms.tsv")
    }

    /// Parse `alias<TAB>canonical` lines (`#` comments and blank lines skipped). Rejects
    /// malformed lines, repeated aliases and chains (a canonical name that is also an alias).
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let mut canonical = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{source}:{}", i + 1);
            let Some((alias, target)) = line.split_once('\t') else {
                return Err(Error::input("a synonym line needs `alias<TAB>canonical`").at(at));
            };
            let (alias, target) = (normalize(alias), normalize(target));
            if alias.is_empty() || target.is_empty() || target.contains('\t') {
                return Err(Error::input("a synonym line needs `alias<TAB>canonical`").at(at));
            }
            if canonical.insert(alias.clone(), target).is_some() {
                return Err(Error::input(format!("synonym alias `{alias}` is listed twice")).at(at));
            }
        }
        if let Some(t) = canonical.values().find(|t| canonical.contains_key(*t)) {
            return Err(Error::input(format!("synonym target `{t}` is itself an alias"))
                .at(source.to_owned())
                .hint("point every alias directly at the final canonical name"));
        }
        Ok(Synonyms { canonical })
    }

    fn get(&self, normalized: &str) -> Option<&str> {
        self.canonical.get(normalized).map(String::as_str)
    }
}

/// Lower-case, turn `_ - / ( ) , .` into spaces, collapse whitespace, trim.
pub fn normalize(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| if matches!(c, '_' | '-' | '/' | '(' | ')' | ',' | '.') { ' ' } else { c })
        .collect::<String>()
        .to_lowercase();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Singular candidates of a normalised phrase, by regular plural rules on its last word.
/// Several candidates may be produced because spelling alone cannot tell `buses → bus` from
/// `vases → vase`; the category side produces the same candidates, so the right pair meets.
fn singular_forms(phrase: &str) -> Vec<String> {
    let (head, last) = match phrase.rsplit_once(' ') {
        Some((h, l)) => (format!("{h} "), l),
        None => (String::new(), phrase),
    };
    let mut out = Vec::new();
    if last.chars().count() > 3 && !last.ends_with("ss") {
        if let Some(stem) = last.strip_suffix("ies") {
            out.push(format!("{head}{stem}y"));
        }
        if let Some(stem) = last.strip_suffix("es") {
            out.push(format!("{head}{stem}"));
        }
        if let Some(stem) = last.strip_suffix('s') {
            out.push(format!("{head}{stem}"));
        }
    }
    out
}

/// Lookup keys of a text, most specific first, with the rule each key stands for and its rank
/// (0 = the normalised text itself, 1 = a singular form, 2 = a synonym).
fn lookup_keys(text: &str, synonyms: &Synonyms) -> Vec<(String, MatchRule, u8)> {
    let n = normalize(text);
    let mut plain = vec![n.clone()];
    plain.extend(singular_forms(&n));
    let mut keys: Vec<(String, MatchRule, u8)> = Vec::new();
    for (i, k) in plain.iter().enumerate() {
        keys.push((k.clone(), MatchRule::Normalized, u8::from(i > 0)));
    }
    for k in &plain {
        if let Some(c) = synonyms.get(k) {
            keys.push((c.to_owned(), MatchRule::Synonym, 2));
        }
    }
    let mut seen = std::collections::HashSet::new();
    keys.retain(|(k, _, _)| seen.insert(k.clone()));
    keys
}

/// Exact, then normalised, then synonym matching (see the module docs).
#[derive(Debug, Clone)]
pub struct LexicalMapper {
    categories: Categories,
    synonyms: Synonyms,
    /// Lookup key → (rank of the key for its category, category).
    index: HashMap<String, (u8, CategoryId)>,
    collisions: BTreeMap<String, Vec<CategoryId>>,
}

impl LexicalMapper {
    /// Index `categories` with the given synonym table.
    pub fn new(categories: Categories, synonyms: Synonyms) -> Self {
        let mut index: HashMap<String, (u8, CategoryId)> = HashMap::new();
        let mut collisions: BTreeMap<String, Vec<CategoryId>> = BTreeMap::new();
        for (id, name) in categories.iter() {
            for (key, _, rank) in lookup_keys(name, &synonyms) {
                match index.get(&key) {
                    Some(&(r, other)) if r <= rank => {
                        if r == rank && other != id {
                            let ids = collisions.entry(key).or_insert_with(|| vec![other]);
                            ids.push(id);
                        }
                    }
                    _ => {
                        index.insert(key, (rank, id));
                    }
                }
            }
        }
        LexicalMapper { categories, synonyms, index, collisions }
    }

    /// The category set this mapper maps onto.
    pub fn categories(&self) -> &Categories {
        &self.categories
    }

    /// Lookup keys claimed by more than one category at the same rank; the first id listed
    /// wins.
    pub fn collisions(&self) -> &BTreeMap<String, Vec<CategoryId>> {
        &self.collisions
    }
}

impl DescMapper for LexicalMapper {
    fn map(&self, desc: &str) -> Option<Mapped> {
        if let Some(category) = self.categories.id(desc) {
            return Some(Mapped { category, rule: MatchRule::Exact });
        }
        lookup_keys(desc, &self.synonyms).into_iter().find_map(|(key, rule, _)| {
            self.index.get(&key).map(|&(_, category)| Mapped { category, rule })
        })
    }
}

/// Counts of mapping outcomes over all predictions, and the unmapped descriptions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappingStats {
    by_rule: BTreeMap<MatchRule, u64>,
    unmapped: HashMap<String, u64>,
    unmapped_total: u64,
}

impl MappingStats {
    /// Record the outcome for one prediction with description `desc`.
    pub fn record(&mut self, desc: &str, outcome: Option<Mapped>) {
        match outcome {
            Some(m) => *self.by_rule.entry(m.rule).or_default() += 1,
            None => {
                self.unmapped_total += 1;
                *self.unmapped.entry(desc.to_owned()).or_default() += 1;
            }
        }
    }

    /// Predictions mapped by `rule`.
    pub fn mapped_by(&self, rule: MatchRule) -> u64 {
        self.by_rule.get(&rule).copied().unwrap_or(0)
    }

    /// Predictions whose description mapped to no category.
    pub fn unmapped_total(&self) -> u64 {
        self.unmapped_total
    }

    /// Distinct unmapped descriptions.
    pub fn unmapped_distinct(&self) -> usize {
        self.unmapped.len()
    }

    /// The `n` most frequent unmapped descriptions, most frequent first, ties by text.
    pub fn top_unmapped(&self, n: usize) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self.unmapped.iter().map(|(k, &c)| (k.as_str(), c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper(names: &[&str]) -> LexicalMapper {
        LexicalMapper::new(Categories::from_names(names), Synonyms::builtin().unwrap())
    }

    fn mapped(m: &LexicalMapper, desc: &str) -> Option<(&'static str, String)> {
        m.map(desc).map(|x| (x.rule.name(), m.categories().name(x.category).to_owned()))
    }

    #[test]
    fn builtin_synonym_table_parses_without_chains() {
        let s = Synonyms::builtin().unwrap();
        assert_eq!(s.get("sofa"), Some("couch"));
        assert_eq!(s.get("tv monitor"), Some("tv"));
    }

    #[test]
    fn exact_wins_and_is_case_sensitive() {
        let m = mapper(&["Car", "car"]);
        assert_eq!(mapped(&m, "car"), Some(("exact", "car".into())));
        assert_eq!(mapped(&m, " Car "), Some(("exact", "Car".into())));
        // Both normalise to `car`: a collision, resolved to the first id and recorded.
        assert_eq!(mapped(&m, "CAR"), Some(("normalized", "Car".into())));
        assert_eq!(m.collisions().len(), 1);
    }

    #[test]
    fn case_whitespace_punctuation_and_plurals_normalise() {
        let m = mapper(&["traffic light", "bus", "vase", "box", "strawberry", "glass", "skis"]);
        assert_eq!(mapped(&m, "Traffic  Light"), Some(("normalized", "traffic light".into())));
        assert_eq!(mapped(&m, "traffic_lights"), Some(("normalized", "traffic light".into())));
        assert_eq!(mapped(&m, "buses"), Some(("normalized", "bus".into())));
        assert_eq!(mapped(&m, "vases"), Some(("normalized", "vase".into())));
        assert_eq!(mapped(&m, "boxes"), Some(("normalized", "box".into())));
        assert_eq!(mapped(&m, "strawberries"), Some(("normalized", "strawberry".into())));
        assert_eq!(mapped(&m, "glasses"), Some(("normalized", "glass".into())));
        assert_eq!(mapped(&m, "Skis"), Some(("normalized", "skis".into())));
        assert_eq!(mapped(&m, "ski"), Some(("normalized", "skis".into())));
        assert_eq!(mapped(&m, "glas"), None);
    }

    #[test]
    fn plural_category_names_meet_singular_predictions() {
        let m = mapper(&["apples"]);
        assert_eq!(mapped(&m, "apple"), Some(("normalized", "apples".into())));
    }

    #[test]
    fn synonyms_map_both_ways() {
        let m = mapper(&["person", "couch"]);
        assert_eq!(mapped(&m, "man"), Some(("synonym", "person".into())));
        assert_eq!(mapped(&m, "Women"), Some(("synonym", "person".into())));
        assert_eq!(mapped(&m, "sofas"), Some(("synonym", "couch".into())));
        // A ground-truth category written as an alias still meets the canonical word.
        let m = mapper(&["people"]);
        assert_eq!(mapped(&m, "person"), Some(("normalized", "people".into())));
    }

    #[test]
    fn a_category_own_name_beats_another_category_synonym() {
        let m = mapper(&["person", "man"]);
        assert_eq!(mapped(&m, "man"), Some(("exact", "man".into())));
        assert_eq!(mapped(&m, "Man"), Some(("normalized", "man".into())));
        assert!(m.collisions().is_empty());
    }

    #[test]
    fn unknown_descriptions_are_unmapped_and_ranked() {
        let m = mapper(&["dog"]);
        let mut stats = MappingStats::default();
        for d in ["dog", "unicorn", "dragon", "unicorn", "Dogs"] {
            stats.record(d, m.map(d));
        }
        assert_eq!(stats.mapped_by(MatchRule::Exact), 1);
        assert_eq!(stats.mapped_by(MatchRule::Normalized), 1);
        assert_eq!(stats.unmapped_total(), 3);
        assert_eq!(stats.top_unmapped(5), vec![("unicorn", 2), ("dragon", 1)]);
        assert_eq!(stats.top_unmapped(1), vec![("unicorn", 2)]);
    }

    #[test]
    fn category_files_in_every_supported_shape() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("a.txt", "# coco\nperson\n\nbicycle\n"),
            ("b.json", r#"["person", "bicycle"]"#),
            ("c.json", r#"[{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}]"#),
            (
                "d.json",
                r#"{"categories": [{"id": 1, "name": "person"}, {"id": 7, "name": "bicycle"}]}"#,
            ),
        ];
        for (name, text) in cases {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let c = Categories::from_file(&p).unwrap();
            let names: Vec<_> = c.iter().map(|(_, n)| n.to_owned()).collect();
            assert_eq!(names, ["person", "bicycle"], "{name}");
        }
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"[{"id": 1}]"#).unwrap();
        assert!(Categories::from_file(&bad).unwrap_err().what().contains("category 0"));
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "# nothing\n").unwrap();
        assert!(Categories::from_file(&empty).is_err());
    }
}
