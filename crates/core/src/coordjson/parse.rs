//! Strict and salvage CoordJSON parsing (one hand-written scanner for both modes).
//!
//! Container: `{` `"objects"` `:` `[` records separated by `,` `]` `}`, whitespace allowed
//! between tokens. A record is found by brace matching (string-aware), then parsed field by
//! field. A bad record is classified by the first failing check, in this order:
//!
//! 1. syntax (strings, `:`, separators, brackets) → `other`; a `<` that is not a valid
//!    coordinate token (wildcard, > 999, malformed) → `bad_token`;
//! 2. a key other than `desc`/`bbox_2d`/`poly` → `unexpected_keys`;
//! 3. `desc` missing or repeated → `missing_desc`;
//! 4. not exactly one geometry key → `unexpected_keys`;
//! 5. fields in the wrong order → `order_violation`;
//! 6. `desc` not a string, or empty after trimming → `missing_desc`;
//! 7. geometry not an array → `wrong_arity`; an element that is not a bare token (a number, a
//!    quoted token) → `bad_token`;
//! 8. `bbox_2d` without 4 values, `poly` odd or with fewer than 6 → `wrong_arity`.
//!
//! Salvage mode differs only at the container level: it tries each `{` from the left until one
//! opens an `objects` container whose separators are intact, keeps valid records, drops invalid
//! ones with their reason, and treats running out of text as truncation (the unfinished last
//! record is dropped and reported as [`Parsed::incomplete_tail`]). A separator error rejects the
//! whole container, because once separators are wrong the record boundaries are guesses.

use super::scan::{Bad, Str, Text, unescape};
use super::{FieldOrder, IM_END, Span};
use crate::Error;
use crate::norm1000::Bin;
use crate::record::{Geometry, Polygon};
use memchr::arch::all::packedpair::HeuristicFrequencyRank;
use memchr::memmem;
use std::fmt;
use std::sync::LazyLock;

/// Why a record was dropped (salvage) or rejected (strict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Wrong number of coordinates, or a geometry that is not an array.
    WrongArity,
    /// `desc` missing, repeated, not a string or empty.
    MissingDesc,
    /// A key outside `desc`/`bbox_2d`/`poly`, or not exactly one geometry key.
    UnexpectedKeys,
    /// Fields not in the expected [`FieldOrder`].
    OrderViolation,
    /// A coordinate that is not a bare `<|coord_k|>` token with `k ≤ 999`.
    BadToken,
    /// Anything else (broken syntax inside the record).
    Other,
}

impl DropReason {
    /// Every reason, in report order.
    pub const ALL: [DropReason; 6] = [
        DropReason::WrongArity,
        DropReason::MissingDesc,
        DropReason::UnexpectedKeys,
        DropReason::OrderViolation,
        DropReason::BadToken,
        DropReason::Other,
    ];

    /// The stable `snake_case` code used in reports and metrics.
    pub fn code(self) -> &'static str {
        match self {
            DropReason::WrongArity => "wrong_arity",
            DropReason::MissingDesc => "missing_desc",
            DropReason::UnexpectedKeys => "unexpected_keys",
            DropReason::OrderViolation => "order_violation",
            DropReason::BadToken => "bad_token",
            DropReason::Other => "other",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A valid record and where its parts are in the text.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedObject {
    /// Position in the `objects` array, counting dropped records too.
    pub index: usize,
    /// The description, unescaped and trimmed.
    pub desc: String,
    /// The geometry, coordinates in text order.
    pub geometry: Geometry<Bin>,
    /// The record, `{` through `}`.
    pub span: Span,
    /// The `desc` value: the JSON string literal including its quotes.
    pub desc_span: Span,
    /// The coordinate array, `[` through `]`.
    pub geometry_span: Span,
    /// Each coordinate token, in order.
    pub coord_spans: Vec<Span>,
}

/// A record that was dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Position in the `objects` array.
    pub index: usize,
    pub reason: DropReason,
    /// What was wrong, for logs.
    pub message: String,
    /// The record, `{` through `}`.
    pub span: Span,
}

/// What a parse found. From [`parse_strict`], `dropped` is always empty, `truncated` false and
/// `container` set.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    /// Valid records, in order.
    pub objects: Vec<ParsedObject>,
    /// Invalid records, in order.
    pub dropped: Vec<Dropped>,
    /// The text ended before the container closed.
    pub truncated: bool,
    /// The unfinished record at the end of truncated text (dropped, not in `dropped`).
    pub incomplete_tail: Option<Span>,
    /// The container from its `{` to its `}` (or to the end of the answer when truncated);
    /// `None` when no container was found (salvage only).
    pub container: Option<Span>,
    /// Byte offset just after the `[` that opens the objects array, when reached.
    pub array_open: Option<usize>,
}

impl Parsed {
    /// True when a container was found.
    pub fn found(&self) -> bool {
        self.container.is_some()
    }

    /// Dropped records per reason (all reasons, zeros included).
    pub fn dropped_by_reason(&self) -> [(DropReason, usize); 6] {
        DropReason::ALL.map(|r| (r, self.dropped.iter().filter(|d| d.reason == r).count()))
    }
}

/// Why strict parsing failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrictError {
    /// The container itself is malformed (or the text is truncated).
    Container { offset: usize, message: String },
    /// Record `index` is invalid.
    Record { index: usize, reason: DropReason, message: String, span: Span },
}

impl fmt::Display for StrictError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StrictError::Container { offset, message } => {
                write!(f, "invalid CoordJSON at byte {offset}: {message}")
            }
            StrictError::Record { index, reason, message, .. } => {
                write!(f, "objects[{index}] invalid ({reason}): {message}")
            }
        }
    }
}

impl std::error::Error for StrictError {}

impl From<StrictError> for Error {
    fn from(e: StrictError) -> Self {
        Error::input(e.to_string()).hint(
            "CoordJSON is {\"objects\": [{\"desc\": \"...\", \"bbox_2d\": [<|coord_a|>, <|coord_b|>, \
             <|coord_c|>, <|coord_d|>]}, ...]} on one line with bare coordinate tokens",
        )
    }
}

/// Parse `text` exactly (see the module docs); `order: None` accepts either field order.
pub fn parse_strict(text: &str, order: Option<FieldOrder>) -> Result<Parsed, StrictError> {
    let t = answer(text);
    let start = t.ws(0);
    if t.at(start) != Some(b'{') {
        return Err(container_err(start, "expected `{` opening the CoordJSON container"));
    }
    let mut parser = Parser { t, order, strict: true, bins: Vec::new() };
    let parsed = parser.container(start).map_err(|f| match f {
        Fail::Reject(offset, message) => StrictError::Container { offset, message: message.into() },
        Fail::Strict(e) => e,
    })?;
    let end = parsed.container.map_or(t.end, |c| c.end);
    let rest = t.ws(end);
    if rest < t.end {
        return Err(container_err(rest, "unexpected text after the container"));
    }
    Ok(parsed)
}

/// Parse model output leniently (see the module docs); `order: None` accepts either field order
/// (evaluation), `Some(_)` drops records in the other order as `order_violation`.
pub fn parse_salvage(text: &str, order: Option<FieldOrder>) -> Parsed {
    let t = answer(text);
    let mut parser = Parser { t, order, strict: false, bins: Vec::new() };
    let mut from = 0;
    while let Some(p) = t.b.get(from..t.end).and_then(|r| memchr::memchr(b'{', r)) {
        let at = from + p;
        if let Ok(parsed) = parser.container(at) {
            return parsed;
        }
        from = at + 1;
    }
    Parsed::default()
}

/// The answer region: everything before the first `<|im_end|>`.
fn answer(text: &str) -> Text<'_> {
    static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| {
        memmem::FinderBuilder::new().build_forward_with_ranker(CoordTextRank, IM_END.as_bytes())
    });
    Text { b: text.as_bytes(), end: FINDER.find(text.as_bytes()).unwrap_or(text.len()) }
}

/// Byte frequencies of CoordJSON text for the `<|im_end|>` search: the default ranking thinks
/// `<`, `|` and `_` are rare, but every coordinate token has them, so the searcher would stop at
/// each token. Here they rank as common and the needle's letters `i`/`m` (absent from keys and
/// tokens) as rare.
struct CoordTextRank;

impl HeuristicFrequencyRank for CoordTextRank {
    fn rank(&self, byte: u8) -> u8 {
        match byte {
            b'i' | b'm' => 0,
            b'<' | b'|' | b'_' | b'>' | b'e' | b'n' | b'd' => 255,
            _ => 128,
        }
    }
}

fn container_err(offset: usize, message: &str) -> StrictError {
    StrictError::Container { offset, message: message.to_owned() }
}

/// Why a container attempt stopped.
enum Fail {
    /// Not a usable container (salvage tries the next `{`; strict reports it).
    Reject(usize, &'static str),
    /// A strict-mode error with full detail.
    Strict(StrictError),
}

/// A record-level failure: reason and message.
struct RecordFail(DropReason, String);

impl RecordFail {
    fn new(reason: DropReason, message: impl Into<String>) -> Self {
        RecordFail(reason, message.into())
    }
}

impl From<Bad> for RecordFail {
    fn from(b: Bad) -> Self {
        match b {
            Bad::Syntax(what, at) => {
                RecordFail::new(DropReason::Other, format!("{what} at byte {at}"))
            }
            Bad::Token(e, at) => RecordFail::new(DropReason::BadToken, format!("{e} at byte {at}")),
        }
    }
}

/// Which field a key names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Desc,
    BBox,
    Poly,
}

struct Parser<'a> {
    t: Text<'a>,
    order: Option<FieldOrder>,
    strict: bool,
    /// Scratch for the current record's coordinates, reused across records.
    bins: Vec<Bin>,
}

impl Parser<'_> {
    /// Parse the container whose `{` is at `p`.
    fn container(&mut self, p: usize) -> Result<Parsed, Fail> {
        let t = self.t;
        let mut out = Parsed { container: Some(Span::new(p, t.end)), ..Parsed::default() };
        // `{ "objects" : [` — running out of text while this prefix still matches is truncation.
        let mut i = t.ws(p + 1);
        match t.at(i) {
            None => return self.truncated(out, i, "the text ends inside the container"),
            Some(b'"') => {}
            Some(_) => return Err(Fail::Reject(i, "expected the key \"objects\"")),
        }
        match t.string(i) {
            Str::Done { end, escaped } => {
                let raw = &t.b[i + 1..end - 1];
                let is_objects = if escaped {
                    std::str::from_utf8(raw).is_ok_and(|s| unescape(s) == "objects")
                } else {
                    raw == b"objects"
                };
                if !is_objects {
                    return Err(Fail::Reject(i, "expected the key \"objects\""));
                }
                i = end;
            }
            Str::Eof if b"objects".starts_with(&t.b[i + 1..t.end]) => {
                return self.truncated(out, t.end, "the text ends inside the container");
            }
            Str::Eof | Str::Invalid(_) => {
                return Err(Fail::Reject(i, "expected the key \"objects\""));
            }
        }
        for (expected, what) in
            [(b':', "expected `:` after \"objects\""), (b'[', "expected `[` after \"objects\":")]
        {
            i = t.ws(i);
            match t.at(i) {
                None => return self.truncated(out, i, "the text ends inside the container"),
                Some(c) if c == expected => i += 1,
                Some(_) => return Err(Fail::Reject(i, what)),
            }
        }
        out.array_open = Some(i);
        let mut index = 0;
        let mut after_comma = false;
        loop {
            i = t.ws(i);
            match t.at(i) {
                None => return self.truncated(out, i, "the text ends inside the objects array"),
                Some(b']') if after_comma && self.strict => {
                    return Err(Fail::Reject(i, "trailing `,` before `]`"));
                }
                Some(b']') => {
                    i += 1;
                    break;
                }
                Some(b'{') => {}
                Some(_) if after_comma || index == 0 => {
                    return Err(Fail::Reject(i, "expected a record `{` in the objects array"));
                }
                Some(_) => return Err(Fail::Reject(i, "expected `,` or `]` after a record")),
            }
            if index > 0 && !after_comma {
                return Err(Fail::Reject(i, "expected `,` between records"));
            }
            let Some(end) = t.object_end(i) else {
                out.incomplete_tail = Some(Span::new(i, t.end));
                let msg = "the text ends inside a record (truncated output)";
                return self.truncated(out, i, msg);
            };
            let span = Span::new(i, end);
            match self.record(index, span) {
                Ok(obj) => out.objects.push(obj),
                Err(RecordFail(reason, message)) if self.strict => {
                    return Err(Fail::Strict(StrictError::Record { index, reason, message, span }));
                }
                Err(RecordFail(reason, message)) => {
                    out.dropped.push(Dropped { index, reason, message, span })
                }
            }
            index += 1;
            i = t.ws(end);
            after_comma = t.at(i) == Some(b',');
            if after_comma {
                i += 1;
            }
        }
        i = t.ws(i);
        match t.at(i) {
            None => self.truncated(out, i, "the text ends before the container's closing `}`"),
            Some(b'}') => {
                out.container = Some(Span::new(p, i + 1));
                Ok(out)
            }
            Some(_) => Err(Fail::Reject(
                i,
                "expected `}` closing the container (its only key is \"objects\")",
            )),
        }
    }

    /// Salvage: accept what was found and flag truncation. Strict: an error.
    fn truncated(&self, mut out: Parsed, at: usize, message: &'static str) -> Result<Parsed, Fail> {
        if self.strict {
            return Err(Fail::Reject(at, message));
        }
        out.truncated = true;
        Ok(out)
    }

    /// Parse record `index` at `span` (from `{` to just after its matching `}`).
    fn record(&mut self, index: usize, span: Span) -> Result<ParsedObject, RecordFail> {
        // Scan within the record only; the closing brace is at span.end - 1.
        let (s, t) = (span.start, Text { b: self.t.b, end: span.end - 1 });
        self.bins.clear();
        let mut f = Fields::default();
        let mut i = t.ws(s + 1);
        if t.at(i).is_some() {
            loop {
                if t.at(i) != Some(b'"') {
                    return Err(RecordFail::new(
                        DropReason::Other,
                        format!("expected a field name at byte {i}"),
                    ));
                }
                let (key_end, key) = match t.string(i) {
                    Str::Done { end, escaped } => (end, key_of(&t.b[i + 1..end - 1], escaped)),
                    _ => {
                        return Err(RecordFail::new(
                            DropReason::Other,
                            format!("unterminated field name at byte {i}"),
                        ));
                    }
                };
                let key_span = Span::new(i, key_end);
                i = t.ws(key_end);
                if t.at(i) != Some(b':') {
                    return Err(RecordFail::new(
                        DropReason::Other,
                        format!("missing `:` after a field name at byte {i}"),
                    ));
                }
                i = t.ws(i + 1);
                i = f.value(&t, key, key_span, i, &mut self.bins)?;
                i = t.ws(i);
                match t.at(i) {
                    Some(b',') => i = t.ws(i + 1),
                    None => break,
                    Some(_) => {
                        return Err(RecordFail::new(
                            DropReason::Other,
                            format!("expected `,` or `}}` after a field at byte {i}"),
                        ));
                    }
                }
            }
        }
        f.finish(self.t.b, &self.bins, self.order, index, span)
    }
}

/// Classify a field name.
fn key_of(raw: &[u8], escaped: bool) -> Option<Key> {
    let decoded;
    let name: &[u8] = if escaped {
        decoded = std::str::from_utf8(raw).map(unescape).unwrap_or_default();
        decoded.as_bytes()
    } else {
        raw
    };
    match name {
        b"desc" => Some(Key::Desc),
        b"bbox_2d" => Some(Key::BBox),
        b"poly" => Some(Key::Poly),
        _ => None,
    }
}

/// A scanned geometry array: the span of every element and the index of the first element
/// that is not a bare token. The bins themselves go to the parser's scratch buffer.
struct Elements {
    spans: Vec<Span>,
    first_non_token: Option<usize>,
}

/// What the field scan of one record found.
#[derive(Default)]
struct Fields {
    first_unexpected: Option<Span>,
    desc_count: usize,
    geometry_count: usize,
    first_key: Option<Key>,
    /// The first `desc` value: its span and, for a string, whether it has escapes.
    desc: Option<(Span, Option<bool>)>,
    /// The first geometry: key, value span, and the elements when the value is an array.
    geometry: Option<(Key, Span, Option<Elements>)>,
}

impl Fields {
    /// Scan the value of field `key` at `i`; returns the position after it.
    fn value(
        &mut self,
        t: &Text,
        key: Option<Key>,
        key_span: Span,
        i: usize,
        bins: &mut Vec<Bin>,
    ) -> Result<usize, RecordFail> {
        if let Some(k) = key {
            self.first_key.get_or_insert(k);
        }
        match key {
            None => {
                self.first_unexpected.get_or_insert(key_span);
                Ok(t.skip_value(i)?)
            }
            Some(Key::Desc) => {
                self.desc_count += 1;
                let scanned = if t.at(i) == Some(b'"') { Some(t.string(i)) } else { None };
                let (end, escaped) = match scanned {
                    Some(Str::Done { end, escaped }) => (end, Some(escaped)),
                    Some(Str::Eof) => {
                        return Err(RecordFail::new(
                            DropReason::Other,
                            format!("unterminated string at byte {i}"),
                        ));
                    }
                    Some(Str::Invalid(at)) => {
                        return Err(RecordFail::new(
                            DropReason::Other,
                            format!("invalid character or escape in a string at byte {at}"),
                        ));
                    }
                    None => (t.skip_value(i)?, None),
                };
                self.desc.get_or_insert((Span::new(i, end), escaped));
                Ok(end)
            }
            Some(k) => {
                self.geometry_count += 1;
                if self.geometry.is_some() || t.at(i) != Some(b'[') {
                    let end = t.skip_value(i)?;
                    self.geometry.get_or_insert((k, Span::new(i, end), None));
                    return Ok(end);
                }
                let (end, elems) = coordinate_array(t, i, bins)?;
                self.geometry = Some((k, Span::new(i, end), Some(elems)));
                Ok(end)
            }
        }
    }

    /// The record checks after the field scan, in precedence order (module docs, 2–8), and
    /// the parsed object when they pass.
    fn finish(
        self,
        b: &[u8],
        bins: &[Bin],
        order: Option<FieldOrder>,
        index: usize,
        span: Span,
    ) -> Result<ParsedObject, RecordFail> {
        use DropReason::*;
        if let Some(k) = self.first_unexpected {
            let name = String::from_utf8_lossy(&b[k.start..k.end]);
            return Err(RecordFail::new(UnexpectedKeys, format!("unexpected key {name}")));
        }
        if self.desc_count != 1 {
            let msg = match self.desc_count {
                0 => "missing \"desc\"".to_owned(),
                n => format!("\"desc\" appears {n} times"),
            };
            return Err(RecordFail::new(MissingDesc, msg));
        }
        if self.geometry_count != 1 {
            let msg = match self.geometry_count {
                0 => "no geometry key (bbox_2d or poly)",
                _ => "more than one geometry key; a record has exactly one of bbox_2d or poly",
            };
            return Err(RecordFail::new(UnexpectedKeys, msg));
        }
        // Both counts are 1, so both values were recorded.
        let (Some((desc_span, desc_escaped)), Some((key, geometry_span, elems))) =
            (self.desc, self.geometry)
        else {
            return Err(RecordFail::new(Other, "field scan lost a value"));
        };
        if let Some(order) = order {
            let ok = match order {
                FieldOrder::DescFirst => self.first_key == Some(Key::Desc),
                FieldOrder::GeometryFirst => matches!(self.first_key, Some(Key::BBox | Key::Poly)),
            };
            if !ok {
                return Err(RecordFail::new(
                    OrderViolation,
                    format!("fields are not in {} order", order.as_str()),
                ));
            }
        }
        let Some(escaped) = desc_escaped else {
            return Err(RecordFail::new(MissingDesc, "\"desc\" is not a string"));
        };
        let body = std::str::from_utf8(&b[desc_span.start + 1..desc_span.end - 1])
            .map_err(|_| RecordFail::new(Other, "\"desc\" is not valid UTF-8"))?;
        let desc = if escaped {
            let d = unescape(body);
            if d.trim().len() == d.len() { d } else { d.trim().to_owned() }
        } else {
            body.trim().to_owned()
        };
        if desc.is_empty() {
            return Err(RecordFail::new(MissingDesc, "\"desc\" is empty"));
        }
        let name = if key == Key::BBox { "bbox_2d" } else { "poly" };
        let Some(elems) = elems else {
            return Err(RecordFail::new(
                WrongArity,
                format!("{name} is not an array of coordinate tokens"),
            ));
        };
        if let Some(j) = elems.first_non_token {
            return Err(RecordFail::new(
                BadToken,
                format!(
                    "{name}[{j}] is not a bare coordinate token \
                     (quoted tokens and numbers are not coordinates)"
                ),
            ));
        }
        let n = bins.len();
        let geometry = match key {
            Key::BBox => match *bins {
                [a, b, c, d] => Geometry::BBox([a, b, c, d]),
                _ => {
                    return Err(RecordFail::new(
                        WrongArity,
                        format!("bbox_2d needs 4 coordinates, got {n}"),
                    ));
                }
            },
            _ => n
                .is_multiple_of(2)
                .then(|| Polygon::new(bins.chunks_exact(2).map(|p| [p[0], p[1]]).collect()))
                .flatten()
                .map(Geometry::Poly)
                .ok_or_else(|| {
                    RecordFail::new(
                        WrongArity,
                        format!("poly needs an even number (at least 6) of coordinates, got {n}"),
                    )
                })?,
        };
        let coord_spans = elems.spans;
        Ok(ParsedObject { index, desc, geometry, span, desc_span, geometry_span, coord_spans })
    }
}

/// Parse the array at `i` (which holds `[`) element by element: bare tokens go to `bins`, other
/// values are remembered as non-coordinates (reported later, after the key checks). A malformed
/// `<` literal fails immediately as `bad_token`.
fn coordinate_array(
    t: &Text,
    i: usize,
    bins: &mut Vec<Bin>,
) -> Result<(usize, Elements), RecordFail> {
    let mut elems = Elements { spans: Vec::with_capacity(4), first_non_token: None };
    let mut j = t.ws(i + 1);
    if t.at(j) == Some(b']') {
        return Ok((j + 1, elems));
    }
    loop {
        let end = if t.at(j) == Some(b'<') {
            let (bin, end) = t.token(j)?;
            bins.push(bin);
            end
        } else {
            elems.first_non_token.get_or_insert(elems.spans.len());
            bins.push(Bin::MIN);
            t.skip_value(j)?
        };
        elems.spans.push(Span::new(j, end));
        j = t.ws(end);
        match t.at(j) {
            Some(b',') => j = t.ws(j + 1),
            Some(b']') => return Ok((j + 1, elems)),
            _ => {
                return Err(RecordFail::new(
                    DropReason::Other,
                    format!("expected `,` or `]` in a coordinate array at byte {j}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DropReason::*;

    const OK: &str =
        r#"{"desc": "ok", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}"#;
    const DF: Option<FieldOrder> = Some(FieldOrder::DescFirst);

    fn salvage(s: &str) -> Parsed {
        parse_salvage(s, DF)
    }

    fn reasons(p: &Parsed) -> Vec<DropReason> {
        p.dropped.iter().map(|d| d.reason).collect()
    }

    fn k(v: u16) -> Bin {
        Bin::new(v).unwrap()
    }

    #[test]
    fn strict_parses_the_canonical_text_with_spans() {
        let text = r#"{"objects": [{"desc": "a \"b\"", "bbox_2d": [<|coord_5|>, <|coord_120|>, <|coord_300|>, <|coord_700|>]}, {"desc": "t", "poly": [<|coord_4|>, <|coord_1|>, <|coord_3|>, <|coord_6|>, <|coord_9|>, <|coord_6|>]}]}"#;
        let p = parse_strict(text, DF).unwrap();
        assert_eq!(p.objects.len(), 2);
        let o = &p.objects[0];
        assert_eq!(o.desc, "a \"b\"");
        assert_eq!(o.geometry, Geometry::BBox([k(5), k(120), k(300), k(700)]));
        assert_eq!(o.desc_span.of(text), r#""a \"b\"""#);
        assert_eq!(o.coord_spans[1].of(text), "<|coord_120|>");
        assert!(
            o.geometry_span.of(text).starts_with("[<|coord_5|>")
                && o.geometry_span.of(text).ends_with("|>]")
        );
        assert!(o.span.of(text).starts_with("{\"desc\"") && o.span.of(text).ends_with("]}"));
        assert_eq!(p.objects[1].index, 1);
        assert_eq!(p.container, Some(Span::new(0, text.len())));
        assert_eq!(p.array_open, Some(text.find('[').unwrap() + 1));
        assert!(!p.truncated && p.dropped.is_empty());
    }

    #[test]
    fn strict_accepts_compact_spacing_and_leading_zeros() {
        let text = r#"  {"objects":[{"desc":"a","bbox_2d":[<|coord_001|>,<|coord_2|>,<|coord_3|>,<|coord_4|>]}]}  "#;
        let p = parse_strict(text, DF).unwrap();
        assert_eq!(p.objects[0].geometry, Geometry::BBox([k(1), k(2), k(3), k(4)]));
    }

    #[test]
    fn strict_errors_name_the_record_index_and_reason() {
        let text = format!(r#"{{"objects": [{OK}, {{"desc": "x", "bbox_2d": [<|coord_1|>]}}]}}"#);
        let e = parse_strict(&text, DF).unwrap_err();
        assert_eq!(
            e.to_string(),
            "objects[1] invalid (wrong_arity): bbox_2d needs 4 coordinates, got 1"
        );
    }

    #[test]
    fn strict_rejects_junk_truncation_extra_keys_and_trailing_commas() {
        for bad in [
            format!(r#"{{"objects": [{OK}]}} trailing"#),
            format!(r#"Answer: {{"objects": [{OK}]}}"#),
            format!(r#"{{"objects": [{OK}]"#),
            format!(r#"{{"objects": [{OK}], "x": 1}}"#),
            format!(r#"{{"objects": [{OK},]}}"#),
            format!(r#"{{"objects": [{OK} {OK}]}}"#),
            r#"{"things": []}"#.to_owned(),
            String::new(),
        ] {
            assert!(matches!(parse_strict(&bad, DF), Err(StrictError::Container { .. })), "{bad}");
        }
    }

    #[test]
    fn text_after_im_end_is_ignored() {
        let text = format!(r#"{{"objects": [{OK}]}}<|im_end|>garbage {{"#);
        assert_eq!(parse_strict(&text, DF).unwrap().objects.len(), 1);
        let p = salvage(r#"<|im_end|>{"objects": []}"#);
        assert!(!p.found());
    }

    #[test]
    fn salvage_drops_invalid_records_and_the_truncated_tail() {
        let text = format!(
            r#"{{"objects": [{OK}, {{"desc": "b", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>]}}, {{"desc": "tail", "bbox_2d": [<|coord_8|>"#
        );
        let p = salvage(&text);
        assert_eq!(p.objects.len(), 1);
        assert_eq!(reasons(&p), vec![WrongArity]);
        assert!(p.truncated);
        assert_eq!(
            p.incomplete_tail.map(|s| s.of(&text)),
            Some(r#"{"desc": "tail", "bbox_2d": [<|coord_8|>"#)
        );
        assert_eq!(p.dropped_by_reason()[0], (WrongArity, 1));
    }

    #[test]
    fn salvage_truncation_cases_from_the_reference() {
        for (text, objects) in [
            (format!(r#"{{"objects": [{OK}]"#), 1),
            (format!(r#"{{"objects": [{OK},"#), 1),
            (r#"{"objects": ["#.to_owned(), 0),
            ("{".to_owned(), 0),
            (r#"{"obj"#.to_owned(), 0),
        ] {
            let p = salvage(&text);
            assert!(p.found() && p.truncated, "{text}");
            assert_eq!(p.objects.len(), objects, "{text}");
        }
    }

    #[test]
    fn salvage_rejects_containers_with_broken_separators_or_extra_keys() {
        for text in
            [format!(r#"{{"objects": [{OK} {OK}]}}"#), format!(r#"{{"objects": [{OK}], "x": 1}}"#)]
        {
            assert!(!salvage(&text).found(), "{text}");
        }
        assert!(!salvage("<|im_end|> no json container").found());
        assert!(!salvage("").found());
    }

    #[test]
    fn salvage_takes_the_first_container_from_the_left() {
        let text = format!(r#"Answer: {{"objects": [{OK}]}} {{"objects": []}}"#);
        let p = salvage(&text);
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.container.map(|c| c.start), Some(8));
        let p = salvage(r#"{"foo": 1} {"objects": []}"#);
        assert!(p.found() && p.objects.is_empty() && !p.truncated);
        assert_eq!(p.container.map(|c| c.start), Some(11));
    }

    #[test]
    fn salvage_accepts_a_trailing_comma() {
        let p = salvage(&format!(r#"{{"objects": [{OK}, ]}}"#));
        assert!(p.found() && !p.truncated);
        assert_eq!(p.objects.len(), 1);
    }

    #[test]
    fn descs_with_brackets_inside_strings_parse() {
        let text = r#"{"objects": [{"desc": "a ]} b {", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}]}"#;
        assert_eq!(salvage(text).objects[0].desc, "a ]} b {");
    }

    fn one(record: &str) -> Parsed {
        salvage(&format!(r#"{{"objects": [{record}]}}"#))
    }

    #[test]
    fn invalid_coordinates_are_bad_tokens() {
        for coords in [
            "<|coord_*|>, <|coord_1|>, <|coord_2|>, <|coord_3|>",
            "<|coord_1000|>, <|coord_1|>, <|coord_2|>, <|coord_3|>",
            r#""<|coord_1|>", <|coord_1|>, <|coord_2|>, <|coord_3|>"#,
            "1, 2, 3, 4",
            "<|coord_1, <|coord_1|>, <|coord_2|>, <|coord_3|>",
        ] {
            let p = one(&format!(r#"{{"desc": "a", "bbox_2d": [{coords}]}}"#));
            assert_eq!(reasons(&p), vec![BadToken], "{coords}");
        }
    }

    #[test]
    fn reason_precedence_follows_the_documented_order() {
        let cases = [
            // order violation outranks the empty desc and the wrong arity
            (
                r#"{"bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>], "desc": "   "}"#,
                OrderViolation,
            ),
            (
                r#"{"desc": "a", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>], "score": 1}"#,
                UnexpectedKeys,
            ),
            (r#"{"bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}"#, MissingDesc),
            (
                r#"{"desc": "a", "desc": "b", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}"#,
                MissingDesc,
            ),
            (r#"{"desc": "a"}"#, UnexpectedKeys),
            (
                r#"{"desc": "a", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>], "poly": []}"#,
                UnexpectedKeys,
            ),
            (
                r#"{"desc": 3, "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}"#,
                MissingDesc,
            ),
            (
                r#"{"desc": "  ", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}"#,
                MissingDesc,
            ),
            (r#"{"desc": "a", "bbox_2d": "x"}"#, WrongArity),
            (
                r#"{"desc": "a", "poly": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>, <|coord_5|>]}"#,
                WrongArity,
            ),
            (
                r#"{"desc": "a", "poly": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}"#,
                WrongArity,
            ),
            (
                r#"{"desc": "a" "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}"#,
                Other,
            ),
            (
                r#"{"desc": "a", "bbox_2d": [<|coord_1|>, <|coord_2|> <|coord_3|>, <|coord_4|>]}"#,
                Other,
            ),
            (
                r#"{"desc": "a", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>}"#,
                Other,
            ),
            (
                r#"{desc: "a", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}"#,
                Other,
            ),
            (r#"{}"#, MissingDesc),
        ];
        for (record, want) in cases {
            assert_eq!(reasons(&one(record)), vec![want], "{record}");
        }
    }

    #[test]
    fn either_order_is_accepted_without_an_order_rule() {
        let text = r#"{"objects": [{"bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>], "desc": "g"}, {"desc": "d", "poly": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>, <|coord_5|>, <|coord_6|>]}]}"#;
        assert_eq!(parse_salvage(text, None).objects.len(), 2);
        assert_eq!(parse_salvage(text, Some(FieldOrder::GeometryFirst)).objects.len(), 1);
        assert_eq!(parse_salvage(text, DF).objects.len(), 1);
    }

    #[test]
    fn kept_and_dropped_records_keep_their_array_indices() {
        let text = format!(r#"{{"objects": [{{"desc": ""}}, {OK}]}}"#);
        let p = salvage(&text);
        assert_eq!(p.dropped[0].index, 0);
        assert_eq!(p.objects[0].index, 1);
    }

    #[test]
    fn escaped_keys_and_unicode_descs_are_decoded() {
        let text = r#"{"\u006fbjects": [{"d\u0065sc": "caf\u00e9 猫", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}]}"#;
        assert_eq!(parse_strict(text, DF).unwrap().objects[0].desc, "café 猫");
    }
}
