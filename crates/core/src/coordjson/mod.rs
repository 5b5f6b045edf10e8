//! CoordJSON: the assistant's answer format, rendered for training targets and parsed back from
//! model output.
//!
//! ```text
//! {"objects": [{"desc": "red circle", "bbox_2d": [<|coord_16|>, <|coord_43|>, <|coord_470|>, <|coord_837|>]}]}
//! ```
//!
//! It is JSON except that coordinates are **bare** coordinate tokens, so each coordinate is a
//! single vocabulary item the model emits and the losses can find. The text is one line with
//! `", "` and `": "` separators; a record holds exactly `desc` and one geometry (`bbox_2d` or
//! `poly`) in a fixed [`FieldOrder`].
//!
//! * [`render`] produces the canonical text (the training target).
//! * [`parse_strict`] accepts exactly the grammar (whitespace between tokens allowed) and fails
//!   on the first deviation, naming the record index and the reason.
//! * [`parse_salvage`] reads model output: it finds the first container from the left, keeps
//!   every valid record, drops invalid ones with a [`DropReason`], drops an unfinished last
//!   record and flags the output `truncated`.
//!
//! Both parsers ignore everything from the first `<|im_end|>` on (the end-of-turn token is not
//! part of the answer), allocate only for the results, and return byte [`Span`]s of every
//! record, description and coordinate token so later stages can map them onto tokens.

mod parse;
mod render;
mod scan;

pub use crate::config::schema::FieldOrder;
pub use parse::{
    DropReason, Dropped, Parsed, ParsedObject, StrictError, parse_salvage, parse_strict,
};
pub use render::{render, render_into, render_object_into, write_json_string};

/// The end-of-turn marker; text from here on is not part of the answer.
pub const IM_END: &str = "<|im_end|>";

/// A half-open byte range `start..end` into the parsed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// `start..end`.
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The spanned text (empty if the span does not fit `text` or splits a character).
    pub fn of<'a>(&self, text: &'a str) -> &'a str {
        text.get(self.start..self.end).unwrap_or("")
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// True for an empty span.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FieldOrder {
    /// The config / CLI spelling: `desc_first` or `geometry_first`.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldOrder::DescFirst => "desc_first",
            FieldOrder::GeometryFirst => "geometry_first",
        }
    }

    /// Parse the config / CLI spelling.
    pub fn parse(s: &str) -> Option<FieldOrder> {
        match s {
            "desc_first" => Some(FieldOrder::DescFirst),
            "geometry_first" => Some(FieldOrder::GeometryFirst),
            _ => None,
        }
    }
}
