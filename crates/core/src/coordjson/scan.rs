//! Byte-level scanning primitives for CoordJSON: whitespace, JSON strings, bare coordinate
//! tokens, brace matching and skipping arbitrary values. Every function is bounded by
//! [`Text::end`], never indexes out of range and never recurses (nesting depth is unbounded in
//! model output).

use crate::norm1000::{self, Bin, TokenError};

/// The bytes being scanned and the exclusive end of the region that may be read.
#[derive(Clone, Copy)]
pub(super) struct Text<'a> {
    pub b: &'a [u8],
    pub end: usize,
}

/// Why a value could not be scanned.
pub(super) enum Bad {
    /// Not well-formed (unterminated, mismatched brackets, stray character, …).
    Syntax(&'static str, usize),
    /// A `<` that does not start a valid coordinate token.
    Token(TokenError, usize),
}

/// Result of scanning a JSON string starting at its opening quote.
pub(super) enum Str {
    /// Position just after the closing quote, and whether the string has escapes.
    Done { end: usize, escaped: bool },
    /// The region ends inside the string.
    Eof,
    /// A raw control character or an invalid escape at this position.
    Invalid(usize),
}

impl<'a> Text<'a> {
    /// The byte at `i`, if inside the region.
    #[inline]
    pub fn at(&self, i: usize) -> Option<u8> {
        if i < self.end { self.b.get(i).copied() } else { None }
    }

    /// First non-whitespace position at or after `i` (JSON whitespace).
    #[inline]
    pub fn ws(&self, mut i: usize) -> usize {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.at(i) {
            i += 1;
        }
        i
    }

    /// The readable region.
    #[inline]
    fn region(&self) -> &'a [u8] {
        self.b.get(..self.end).unwrap_or(self.b)
    }

    /// Scan the JSON string whose opening quote is at `i`.
    pub fn string(&self, i: usize) -> Str {
        let region = self.region();
        let mut j = i + 1;
        let mut escaped = false;
        loop {
            let Some(rest) = region.get(j..) else { return Str::Eof };
            let stop = memchr::memchr2(b'"', b'\\', rest);
            let plain = &rest[..stop.unwrap_or(rest.len())];
            if let Some(c) = plain.iter().position(|&c| c < 0x20) {
                return Str::Invalid(j + c);
            }
            let Some(off) = stop else { return Str::Eof };
            let k = j + off;
            if region[k] == b'"' {
                return Str::Done { end: k + 1, escaped };
            }
            escaped = true;
            match region.get(k + 1) {
                None => return Str::Eof,
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j = k + 2,
                Some(b'u') => {
                    for h in 2..6 {
                        match region.get(k + h) {
                            None => return Str::Eof,
                            Some(c) if c.is_ascii_hexdigit() => {}
                            Some(_) => return Str::Invalid(k),
                        }
                    }
                    j = k + 6;
                }
                Some(_) => return Str::Invalid(k),
            }
        }
    }

    /// Position just after the `}` matching the `{` at `i`, counting only braces outside
    /// strings; `None` when the region ends first (a truncated record).
    pub fn object_end(&self, i: usize) -> Option<usize> {
        let region = self.region();
        let mut depth = 0usize;
        let mut j = i;
        loop {
            let k = j + memchr::memchr3(b'"', b'{', b'}', region.get(j..)?)?;
            match region[k] {
                b'"' => {
                    // Skip the string; an invalid escape is left for the record parser.
                    let mut m = k + 1;
                    loop {
                        let q = m + memchr::memchr2(b'"', b'\\', region.get(m..)?)?;
                        if region[q] == b'"' {
                            j = q + 1;
                            break;
                        }
                        m = q + 2;
                    }
                }
                b'{' => {
                    depth += 1;
                    j = k + 1;
                }
                _ => {
                    if depth <= 1 {
                        return Some(k + 1);
                    }
                    depth -= 1;
                    j = k + 1;
                }
            }
        }
    }

    /// The coordinate token at `i` (which holds `<`).
    #[inline]
    pub fn token(&self, i: usize) -> Result<(Bin, usize), Bad> {
        let region = self.b.get(i..self.end).unwrap_or(&[]);
        norm1000::parse_token_prefix(region).map(|(b, n)| (b, i + n)).map_err(|e| Bad::Token(e, i))
    }

    /// Skip one value of any kind starting at `i` (already past whitespace): a string, a
    /// coordinate token, a scalar, or a nested array / object (brackets must match).
    pub fn skip_value(&self, i: usize) -> Result<usize, Bad> {
        match self.at(i) {
            Some(b'"') => self.skip_string(i),
            Some(b'<') => self.token(i).map(|(_, end)| end),
            Some(b'{' | b'[') => self.skip_nested(i),
            Some(c) if is_scalar_byte(c) => Ok(self.skip_scalar(i)),
            Some(_) => Err(Bad::Syntax("unexpected character where a value should start", i)),
            None => Err(Bad::Syntax("the record ends where a value should start", i)),
        }
    }

    fn skip_string(&self, i: usize) -> Result<usize, Bad> {
        match self.string(i) {
            Str::Done { end, .. } => Ok(end),
            Str::Eof => Err(Bad::Syntax("unterminated string", i)),
            Str::Invalid(at) => Err(Bad::Syntax("invalid character or escape in a string", at)),
        }
    }

    fn skip_scalar(&self, mut i: usize) -> usize {
        while self.at(i).is_some_and(is_scalar_byte) {
            i += 1;
        }
        i
    }

    /// Skip a nested array / object with an explicit stack of expected closers.
    fn skip_nested(&self, i: usize) -> Result<usize, Bad> {
        let mut stack: Vec<u8> = Vec::new();
        let mut j = i;
        loop {
            j = self.ws(j);
            match self.at(j) {
                None => return Err(Bad::Syntax("unterminated array or object", j)),
                Some(b'{') => {
                    stack.push(b'}');
                    j += 1;
                }
                Some(b'[') => {
                    stack.push(b']');
                    j += 1;
                }
                Some(c @ (b'}' | b']')) => {
                    if stack.pop() != Some(c) {
                        return Err(Bad::Syntax("mismatched bracket", j));
                    }
                    j += 1;
                    if stack.is_empty() {
                        return Ok(j);
                    }
                }
                Some(b',' | b':') => j += 1,
                Some(_) => j = self.skip_value(j)?,
            }
        }
    }
}

/// Bytes that may form a bare scalar (number, `true`, `false`, `null`, or a malformed word).
#[inline]
fn is_scalar_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.')
}

/// Decode the body of a JSON string already checked by [`Text::string`] (without its quotes).
/// Unpaired surrogate escapes decode to U+FFFD.
pub(super) fn unescape(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hi = hex4(&mut chars);
                let code = if (0xD800..0xDC00).contains(&hi) {
                    let mut look = chars.clone();
                    if look.next() == Some('\\') && look.next() == Some('u') {
                        let lo = hex4(&mut look);
                        if (0xDC00..0xE000).contains(&lo) {
                            chars = look;
                            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                        } else {
                            0xFFFD
                        }
                    } else {
                        0xFFFD
                    }
                } else {
                    hi
                };
                out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn hex4(chars: &mut std::str::Chars<'_>) -> u32 {
    (0..4).fold(0, |acc, _| acc * 16 + chars.next().and_then(|c| c.to_digit(16)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Text<'_> {
        Text { b: s.as_bytes(), end: s.len() }
    }

    #[test]
    fn brace_matching_ignores_braces_inside_strings() {
        let s = r#"{"desc": "a}{\"b", "x": {"y": 1}} tail"#;
        assert_eq!(text(s).object_end(0), Some(s.find(" tail").unwrap()));
        assert_eq!(text(r#"{"desc": "a"#).object_end(0), None);
    }

    #[test]
    fn strings_report_eof_and_invalid_escapes() {
        assert!(matches!(text(r#""ab\"c" "#).string(0), Str::Done { end: 7, escaped: true }));
        assert!(matches!(text(r#""ab"#).string(0), Str::Eof));
        assert!(matches!(text(r#""a\qb""#).string(0), Str::Invalid(2)));
        assert!(matches!(text("\"a\nb\"").string(0), Str::Invalid(2)));
    }

    #[test]
    fn nested_values_are_skipped_without_recursion() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(text(&deep).skip_value(0).ok(), Some(deep.len()));
        assert!(text("[1, {\"a\": [2]}}").skip_value(0).is_err());
    }

    #[test]
    fn unescape_handles_short_unicode_and_surrogate_escapes() {
        assert_eq!(unescape(r#"a\"b\\c\/d\n\u00e9\ud83d\ude00"#), "a\"b\\c/d\né😀");
        assert_eq!(unescape(r#"\ud83d"#), "\u{FFFD}");
    }
}
