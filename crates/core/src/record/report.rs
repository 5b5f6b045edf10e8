//! Problems found in records, located per line, and the per-file validation report.
//!
//! Validation collects every problem in a file rather than stopping at the first, because a
//! dataset is usually fixed in one pass over all of its errors. Each problem carries a stable
//! [`Reason`] code so that the summary can count them and scripts can match on them; the report
//! is shared with the image checks of `coordexp-data`, which push their own located issues into
//! the same list.

use crate::Error;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Stable reason codes for every way a record (or its image) can be invalid.
///
/// The `snake_case` code returned by [`Reason::code`] is part of the CLI output and must not
/// change once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The line is not valid JSON (or not UTF-8).
    MalformedJson,
    /// The line is valid JSON but not an object.
    NotAnObject,
    /// A required top-level key (`images`, `width`, `height`, `objects`) is absent.
    MissingField,
    /// `images` is not a non-empty list of non-empty strings.
    InvalidImages,
    /// `width` / `height` is not a positive integer.
    InvalidSize,
    /// `objects` is not a list.
    ObjectsNotList,
    /// An `objects[i]` entry is not a JSON object.
    ObjectNotMap,
    /// `desc` is absent or not a string.
    MissingDesc,
    /// `desc` is empty after trimming.
    EmptyDesc,
    /// `desc` contains a control character.
    DescControlChar,
    /// `desc` contains a separator-like whitespace pattern.
    DescPattern,
    /// Neither `bbox_2d` nor `poly`.
    NoGeometry,
    /// Both `bbox_2d` and `poly`.
    TwoGeometries,
    /// A removed key (`bbox`, `polygon`, `line`, `line_points`).
    LegacyKey,
    /// A geometry value that is not a list.
    GeometryNotList,
    /// `bbox_2d` without exactly 4 values.
    WrongArity,
    /// `poly` with an odd number of values.
    OddPoly,
    /// `poly` with fewer than 3 points.
    PolyTooShort,
    /// A coordinate that is neither a number nor a string (nested list, null, bool, object).
    BadCoordinate,
    /// A string coordinate that is not a `<|coord_k|>` token.
    BadToken,
    /// The wildcard token `<|coord_*|>`.
    WildcardToken,
    /// A token above `<|coord_999|>`.
    TokenOutOfRange,
    /// NaN, ±Infinity or a number too large for `f64`.
    NonFinite,
    /// Pixel numbers and coordinate tokens in the same record.
    MixedCoordinates,
    /// `x2 < x1` or `y2 < y1`.
    InvertedBox,
    /// A pixel coordinate outside `[0, W] × [0, H]`.
    OutsideImage,
    /// `poly_points` disagrees with the polygon (or is set on a box).
    PolyPointsMismatch,
    /// An extra key that collides with a contract key (only when building records in code).
    ReservedKey,
    /// The image file does not exist (image checks of `coordexp-data`).
    ImageMissing,
    /// The image file cannot be opened or decoded (image checks).
    ImageUnreadable,
    /// The image's true size differs from the record's `width`/`height` (image checks).
    ImageSizeMismatch,
    /// A side is not a multiple of 32 (image checks).
    NotMultipleOf32,
    /// `width · height` exceeds the pixel budget (image checks).
    ExceedsMaxPixels,
}

impl Reason {
    /// Every reason, in summary order.
    pub const ALL: [Reason; 33] = [
        Reason::MalformedJson,
        Reason::NotAnObject,
        Reason::MissingField,
        Reason::InvalidImages,
        Reason::InvalidSize,
        Reason::ObjectsNotList,
        Reason::ObjectNotMap,
        Reason::MissingDesc,
        Reason::EmptyDesc,
        Reason::DescControlChar,
        Reason::DescPattern,
        Reason::NoGeometry,
        Reason::TwoGeometries,
        Reason::LegacyKey,
        Reason::GeometryNotList,
        Reason::WrongArity,
        Reason::OddPoly,
        Reason::PolyTooShort,
        Reason::BadCoordinate,
        Reason::BadToken,
        Reason::WildcardToken,
        Reason::TokenOutOfRange,
        Reason::NonFinite,
        Reason::MixedCoordinates,
        Reason::InvertedBox,
        Reason::OutsideImage,
        Reason::PolyPointsMismatch,
        Reason::ReservedKey,
        Reason::ImageMissing,
        Reason::ImageUnreadable,
        Reason::ImageSizeMismatch,
        Reason::NotMultipleOf32,
        Reason::ExceedsMaxPixels,
    ];

    /// The stable `snake_case` code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::NotAnObject => "not_an_object",
            Reason::MissingField => "missing_field",
            Reason::InvalidImages => "invalid_images",
            Reason::InvalidSize => "invalid_size",
            Reason::ObjectsNotList => "objects_not_list",
            Reason::ObjectNotMap => "object_not_map",
            Reason::MissingDesc => "missing_desc",
            Reason::EmptyDesc => "empty_desc",
            Reason::DescControlChar => "desc_control_char",
            Reason::DescPattern => "desc_pattern",
            Reason::NoGeometry => "no_geometry",
            Reason::TwoGeometries => "two_geometries",
            Reason::LegacyKey => "legacy_key",
            Reason::GeometryNotList => "geometry_not_list",
            Reason::WrongArity => "wrong_arity",
            Reason::OddPoly => "odd_poly",
            Reason::PolyTooShort => "poly_too_short",
            Reason::BadCoordinate => "bad_coordinate",
            Reason::BadToken => "bad_token",
            Reason::WildcardToken => "wildcard_token",
            Reason::TokenOutOfRange => "token_out_of_range",
            Reason::NonFinite => "non_finite",
            Reason::MixedCoordinates => "mixed_coordinates",
            Reason::InvertedBox => "inverted_box",
            Reason::OutsideImage => "outside_image",
            Reason::PolyPointsMismatch => "poly_points_mismatch",
            Reason::ReservedKey => "reserved_key",
            Reason::ImageMissing => "image_missing",
            Reason::ImageUnreadable => "image_unreadable",
            Reason::ImageSizeMismatch => "image_size_mismatch",
            Reason::NotMultipleOf32 => "not_multiple_of_32",
            Reason::ExceedsMaxPixels => "exceeds_max_pixels",
        }
    }

    /// The default remedy for this reason (a [`Problem`] may carry a more specific one).
    pub fn default_hint(self) -> &'static str {
        match self {
            Reason::MalformedJson => {
                "each line must be one complete JSON object (UTF-8); NaN/Infinity are not JSON"
            }
            Reason::NotAnObject => "each line must be a JSON object {\"images\": [...], ...}",
            Reason::MissingField => {
                "a record needs \"images\", \"width\", \"height\" and \"objects\" (objects may be [])"
            }
            Reason::InvalidImages => {
                "write \"images\": [\"images/name.jpg\"] (paths relative to the JSONL file)"
            }
            Reason::InvalidSize => {
                "width and height are the image's pixel size as JSON integers, e.g. 640 (not 640.0)"
            }
            Reason::ObjectsNotList => "write \"objects\": [ ... ] (an empty list is valid)",
            Reason::ObjectNotMap => {
                "each object is {\"desc\": \"...\", \"bbox_2d\": [x1, y1, x2, y2]}"
            }
            Reason::MissingDesc => "give every object a string \"desc\", e.g. \"red circle\"",
            Reason::EmptyDesc => "give every object a non-empty description",
            Reason::DescControlChar => "remove line breaks, tabs and other control characters",
            Reason::DescPattern => {
                "descriptions may not contain \", \" \" ,\" \": \" \" :\" \"/ \" \" /\" or double \
                 spaces (they read like CoordJSON separators), nor \"<|\" (special tokens); e.g. \
                 cut at the first , / :"
            }
            Reason::NoGeometry => "give every object exactly one of \"bbox_2d\" or \"poly\"",
            Reason::TwoGeometries => "keep exactly one of \"bbox_2d\" or \"poly\" per object",
            Reason::LegacyKey => {
                "use \"bbox_2d\" ([x1, y1, x2, y2]) or \"poly\" (flat [x1, y1, ...])"
            }
            Reason::GeometryNotList => "geometry values are flat lists of numbers or tokens",
            Reason::WrongArity => "bbox_2d is exactly [x1, y1, x2, y2]",
            Reason::OddPoly => "poly is a flat list of x, y pairs: [x1, y1, x2, y2, ...]",
            Reason::PolyTooShort => {
                "a polygon needs at least 3 points; use bbox_2d for smaller shapes"
            }
            Reason::BadCoordinate => {
                "coordinates are pixel numbers or \"<|coord_k|>\" strings; lists must be flat"
            }
            Reason::BadToken => "token coordinates are strings \"<|coord_k|>\" with k in 0..=999",
            Reason::WildcardToken => {
                "<|coord_*|> never denotes a position; use <|coord_0|>..<|coord_999|>"
            }
            Reason::TokenOutOfRange => "bins run from <|coord_0|> to <|coord_999|>",
            Reason::NonFinite => "replace NaN/Infinity with real coordinates or drop the object",
            Reason::MixedCoordinates => {
                "a record uses pixel numbers everywhere or tokens everywhere; re-export one of them"
            }
            Reason::InvertedBox => "boxes are [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2",
            Reason::OutsideImage => {
                "clamp coordinates to the image: 0 <= x <= width, 0 <= y <= height"
            }
            Reason::PolyPointsMismatch => {
                "poly_points must equal len(poly)/2 and only appear with poly"
            }
            Reason::ReservedKey => "extra keys may not reuse contract keys",
            Reason::ImageMissing => "check the image path (relative to the JSONL file)",
            Reason::ImageUnreadable => "re-export the image as PNG or JPEG",
            Reason::ImageSizeMismatch => {
                "the record's width/height must be the image's true size; re-run `coordexp data resize`"
            }
            Reason::NotMultipleOf32 => "resize offline with `coordexp data resize` (factor 32)",
            Reason::ExceedsMaxPixels => "resize offline with `coordexp data resize --max-pixels N`",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One problem inside a record, located by a dotted field path such as `objects[2].bbox_2d`
/// (empty for the whole line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted field path, e.g. `objects[2].bbox_2d[1]`; empty when the whole line is at fault.
    pub path: String,
    /// Stable reason code.
    pub reason: Reason,
    /// What is wrong, naming the offending value.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl Problem {
    /// A problem with the reason's default hint.
    pub fn new(path: impl Into<String>, reason: Reason, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            reason,
            message: message.into(),
            hint: reason.default_hint().to_owned(),
        }
    }

    /// Replace the default hint with a more specific remedy.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }

    /// `path: message`, or just the message for whole-line problems.
    pub fn describe(&self) -> String {
        if self.path.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.path, self.message)
        }
    }

    /// Turn into the workspace error, located at `location` (e.g. `data.jsonl:17`).
    pub fn into_error(self, location: impl Into<String>) -> Error {
        Error::input(self.describe()).at(location).hint(self.hint)
    }
}

/// A [`Problem`] on a given 1-based line of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub problem: Problem,
}

impl Issue {
    /// The issue rendered as `FILE:LINE: path: message`.
    pub fn render(&self, file: &Path) -> String {
        format!("{}:{}: {}", file.display(), self.line, self.problem.describe())
    }
}

/// The outcome of validating one JSONL file: every located issue plus counts per reason.
///
/// Other checks (image existence and sizes) extend a report with [`ValidationReport::push`];
/// the summary and the exit status always reflect everything pushed.
#[derive(Debug, Clone)]
pub struct ValidationReport {
    file: PathBuf,
    records: usize,
    blank_lines: usize,
    issues: Vec<Issue>,
    counts: BTreeMap<Reason, usize>,
}

impl ValidationReport {
    /// An empty report for `file`.
    pub fn new(file: impl Into<PathBuf>) -> Self {
        ValidationReport {
            file: file.into(),
            records: 0,
            blank_lines: 0,
            issues: Vec::new(),
            counts: BTreeMap::new(),
        }
    }

    /// Count one non-blank line that was checked.
    pub fn count_record(&mut self) {
        self.records += 1;
    }

    /// Count one blank line (skipped, not a record).
    pub fn count_blank_line(&mut self) {
        self.blank_lines += 1;
    }

    /// Add a located problem.
    pub fn push(&mut self, line: usize, problem: Problem) {
        *self.counts.entry(problem.reason).or_default() += 1;
        self.issues.push(Issue { line, problem });
    }

    /// The validated file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Non-blank lines checked.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Blank lines skipped.
    pub fn blank_lines(&self) -> usize {
        self.blank_lines
    }

    /// Every issue, in the order found.
    pub fn issues(&self) -> &[Issue] {
        &self.issues
    }

    /// Issue counts per reason (only reasons that occurred).
    pub fn counts(&self) -> &BTreeMap<Reason, usize> {
        &self.counts
    }

    /// Number of distinct lines with at least one issue.
    pub fn records_with_issues(&self) -> usize {
        self.issues.iter().map(|i| i.line).collect::<HashSet<_>>().len()
    }

    /// True when no issue was found.
    pub fn is_clean(&self) -> bool {
        self.issues.is_empty()
    }

    /// Every issue as `FILE:LINE: path: message` followed by an indented `hint:` line, then the
    /// summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for issue in &self.issues {
            out.push_str(&issue.render(&self.file));
            out.push_str("\n  hint: ");
            out.push_str(&issue.problem.hint);
            out.push('\n');
        }
        out.push_str(&self.summary());
        out
    }

    /// `N records, M with issues, K issues` plus one `  reason: count` line per reason.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{}: {} records, {} with issues, {} issues",
            self.file.display(),
            self.records,
            self.records_with_issues(),
            self.issues.len()
        );
        if self.blank_lines > 0 {
            out.push_str(&format!(", {} blank lines skipped", self.blank_lines));
        }
        out.push('\n');
        for (reason, n) in &self.counts {
            out.push_str(&format!("  {reason}: {n}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_unique_and_snake_case() {
        let codes: HashSet<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
        assert!(codes.iter().all(|c| {
            c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_' || ch.is_ascii_digit())
        }));
    }

    #[test]
    fn report_counts_every_pushed_issue_and_distinct_lines() {
        let mut r = ValidationReport::new("d.jsonl");
        r.count_record();
        r.count_record();
        r.push(1, Problem::new("objects[0].desc", Reason::EmptyDesc, "desc is empty"));
        r.push(1, Problem::new("width", Reason::InvalidSize, "bad"));
        r.push(2, Problem::new("width", Reason::InvalidSize, "bad"));
        assert_eq!(r.records_with_issues(), 2);
        assert_eq!(r.counts()[&Reason::InvalidSize], 2);
        let text = r.render();
        assert!(text.contains("d.jsonl:1: objects[0].desc: desc is empty\n  hint: "));
        assert!(text.contains("2 records, 2 with issues, 3 issues"));
        assert!(text.contains("  invalid_size: 2\n"));
    }

    #[test]
    fn problem_becomes_a_located_input_error() {
        let e = Problem::new("objects[2].bbox_2d", Reason::WrongArity, "expected 4 numbers, got 5")
            .into_error("d.jsonl:3");
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "objects[2].bbox_2d: expected 4 numbers, got 5 at d.jsonl:3");
        assert_eq!(e.hint_text(), Some(Reason::WrongArity.default_hint()));
    }
}
