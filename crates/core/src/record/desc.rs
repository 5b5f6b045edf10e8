//! Object descriptions (`desc`) and the rules that keep them safe to render.
//!
//! A description is rendered verbatim inside the CoordJSON answer, whose separators are `", "`
//! and `": "`. A description containing those separators (or their space-padded cousins), a line
//! break or a double space would make the target text ambiguous to read back and tokenize
//! inconsistently, so such descriptions are rejected at the data boundary instead of being
//! silently rewritten. Surrounding whitespace is not meaningful and is trimmed.

use std::fmt;

/// Substrings a description may not contain: each reads like a CoordJSON separator or is
/// irregular spacing.
pub const FORBIDDEN_PATTERNS: [&str; 7] = [" ,", ", ", " /", "/ ", " :", ": ", "  "];

/// A validated object description: trimmed, non-empty, no control characters, none of
/// [`FORBIDDEN_PATTERNS`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Desc(String);

/// Why a description was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DescError {
    /// Empty after trimming whitespace.
    Empty,
    /// Contains a control character (line breaks and tabs included).
    ControlChar(char),
    /// Contains one of [`FORBIDDEN_PATTERNS`].
    Pattern(&'static str),
    /// Contains `<|`, the opening of a special token: the tokenizer would read `<|im_end|>` or
    /// `<|coord_5|>` inside a description as a control token and change the training target.
    SpecialTokenMarker,
}

impl Desc {
    /// Trim `raw` and check the rules.
    pub fn new(raw: &str) -> Result<Desc, DescError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(DescError::Empty);
        }
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Err(DescError::ControlChar(c));
        }
        if let Some(p) = FORBIDDEN_PATTERNS.iter().find(|p| text.contains(*p)) {
            return Err(DescError::Pattern(p));
        }
        if text.contains("<|") {
            return Err(DescError::SpecialTokenMarker);
        }
        Ok(Desc(text.to_owned()))
    }

    /// The description text (already trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Desc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for DescError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DescError::Empty => write!(f, "desc is empty after trimming whitespace"),
            DescError::ControlChar(c) => {
                write!(f, "desc contains the control character U+{:04X}", u32::from(*c))
            }
            DescError::Pattern(p) => write!(f, "desc contains the separator-like pattern {p:?}"),
            DescError::SpecialTokenMarker => {
                write!(f, "desc contains \"<|\", which the tokenizer reads as a special token")
            }
        }
    }
}

impl std::error::Error for DescError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_token_markers_are_rejected() {
        assert_eq!(Desc::new("a <|coord_5|> b"), Err(DescError::SpecialTokenMarker));
        assert_eq!(Desc::new("x<|im_end|>"), Err(DescError::SpecialTokenMarker));
        assert!(Desc::new("a|b <c>").is_ok());
    }

    #[test]
    fn descriptions_are_trimmed() {
        assert_eq!(Desc::new("  red circle ").unwrap().as_str(), "red circle");
    }

    #[test]
    fn punctuation_without_padding_is_allowed() {
        for ok in ["bow_(weapon)", "a/b", "person,standing", "x:y", "näive café", "猫"] {
            assert!(Desc::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn empty_control_and_separator_like_descriptions_are_rejected() {
        assert_eq!(Desc::new("   "), Err(DescError::Empty));
        assert_eq!(Desc::new("a\tb"), Err(DescError::ControlChar('\t')));
        assert_eq!(Desc::new("a\nb"), Err(DescError::ControlChar('\n')));
        assert_eq!(Desc::new("a\u{0}b"), Err(DescError::ControlChar('\u{0}')));
        assert_eq!(Desc::new("person, standing"), Err(DescError::Pattern(", ")));
        assert_eq!(Desc::new("a  b"), Err(DescError::Pattern("  ")));
        assert_eq!(Desc::new("a / b"), Err(DescError::Pattern(" /")));
        assert_eq!(Desc::new("key: value"), Err(DescError::Pattern(": ")));
    }
}
