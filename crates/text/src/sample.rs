//! What one encoded sample is made of: ids, labels, token types, image grids.

use crate::mrope::{GridThw, PositionIds};
use coordexp_core::coordjson::{self, FieldOrder};
use coordexp_core::norm1000::Bin;
use coordexp_core::record::{Object, Objects, Record};
use coordexp_core::{Error, Result};
use serde::Serialize;
use std::ops::Range;

/// Label of a token that is not supervised (PyTorch's cross-entropy `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// What a token is, so losses and metrics can weight or count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum TokenType {
    /// Template text outside the assistant answer (system, user, headers); never supervised.
    Prompt = 0,
    /// An image placeholder (`<|image_pad|>`); never supervised.
    Image = 1,
    /// CoordJSON structure: braces, brackets, keys, separators.
    Struct = 2,
    /// An object description, its quotes included.
    Desc = 3,
    /// A coordinate token `<|coord_k|>`.
    Coord = 4,
    /// The answer's closing brace and the end-of-turn token: where the model learns to stop.
    Closure = 5,
}

impl TokenType {
    /// True for the types that carry a label.
    pub fn is_supervised(self) -> bool {
        !matches!(self, TokenType::Prompt | TokenType::Image)
    }
}

/// An assistant answer: the CoordJSON text and where its descriptions and coordinate tokens are.
///
/// The spans decide the token types (a token is `desc` when most of its bytes lie in a desc
/// span) and the coordinate order check (the coordinate tokens of the ids must be exactly the
/// answer's bins, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    text: String,
    descs: Vec<Range<usize>>,
    coords: Vec<(Range<usize>, Bin)>,
}

impl Answer {
    /// Check that the spans lie on character boundaries inside `text`, in order, without overlap.
    pub fn new(
        text: String,
        descs: Vec<Range<usize>>,
        coords: Vec<(Range<usize>, Bin)>,
    ) -> Result<Answer> {
        let mut all: Vec<&Range<usize>> =
            descs.iter().chain(coords.iter().map(|(r, _)| r)).collect();
        all.sort_by_key(|r| r.start);
        let mut end = 0;
        for r in all {
            if r.start < end
                || r.start > r.end
                || r.end > text.len()
                || !text.is_char_boundary(r.start)
                || !text.is_char_boundary(r.end)
            {
                return Err(Error::runtime(format!(
                    "answer span {r:?} is not a clean, non-overlapping range of the {}-byte answer",
                    text.len()
                )));
            }
            end = r.end;
        }
        for (r, bin) in &coords {
            if text[r.clone()] != bin.token() {
                return Err(Error::runtime(format!(
                    "answer span {r:?} holds {:?}, not {}",
                    &text[r.clone()],
                    bin.token()
                )));
            }
        }
        Ok(Answer { text, descs, coords })
    }

    /// The canonical CoordJSON answer for `objects`, with its spans read back by the strict
    /// parser (so the spans are those of the exact text the model is trained on).
    pub fn from_objects(objects: &[Object<Bin>], order: FieldOrder) -> Result<Answer> {
        let text = coordjson::render(objects, order);
        let parsed = coordjson::parse_strict(&text, Some(order)).map_err(|e| {
            Error::runtime(format!("the rendered CoordJSON does not parse back: {e}"))
        })?;
        if parsed.objects.len() != objects.len() {
            return Err(Error::runtime(format!(
                "the rendered CoordJSON parses back to {} records, not {}",
                parsed.objects.len(),
                objects.len()
            )));
        }
        let mut descs = Vec::with_capacity(objects.len());
        let mut coords = Vec::with_capacity(objects.len() * 4);
        for (o, p) in objects.iter().zip(&parsed.objects) {
            descs.push(p.desc_span.start..p.desc_span.end);
            let bins = o.geometry.coords();
            if bins.len() != p.coord_spans.len() {
                return Err(Error::runtime(
                    "rendered coordinates and parsed coordinates differ in number",
                ));
            }
            coords.extend(p.coord_spans.iter().zip(bins).map(|(s, b)| (s.start..s.end, b)));
        }
        Answer::new(text, descs, coords)
    }

    /// The answer for a record's objects (pixel coordinates are quantized with norm1000).
    pub fn from_record(record: &Record, order: FieldOrder) -> Result<Answer> {
        let binned = record.to_bins().map_err(|p| Error::input(p.describe()))?;
        match binned.objects() {
            Objects::Bins(objects) => Answer::from_objects(objects, order),
            Objects::Pixels(_) => {
                Err(Error::runtime("record still has pixel coordinates after quantization"))
            }
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn descs(&self) -> &[Range<usize>] {
        &self.descs
    }

    pub fn coords(&self) -> &[(Range<usize>, Bin)] {
        &self.coords
    }
}

/// One encoded conversation, ready to pack. All per-token vectors have the same length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EncodedSample {
    pub input_ids: Vec<u32>,
    /// `IGNORE_INDEX` except on the answer and its end-of-turn token, where it is the token id.
    pub labels: Vec<i64>,
    pub token_types: Vec<TokenType>,
    /// The four mRoPE rows, starting at 0.
    pub position_ids: PositionIds,
    /// One grid per image, in the order of the images in the text.
    pub image_grid_thw: Vec<GridThw>,
}

impl EncodedSample {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}
