//! norm1000: the one quantizer between pixel coordinates and the 1000 coordinate bins.
//!
//! A bin `k ∈ 0..=999` stands for the normalized position `k/999` (both image edges are
//! representable). Pixel → bin divides by `max(1, W−1)` (x) or `max(1, H−1)` (y) and multiplies
//! by 999; bin → pixel is the inverse. Every conversion in coordexp goes through this module so
//! that training targets, rollouts and evaluation can never disagree about rounding:
//!
//! * box corners: `floor` for `x1`/`y1`, `ceil` for `x2`/`y2`, clamp to `0..=999`, then a
//!   collapsed edge is nudged open by one bin — a box never quantizes to zero width;
//! * polygon vertices: round half to even (`f64::round_ties_even`, what the reference's Python
//!   `round` does), and a value outside `0..=999` is an error, never a silent clamp;
//! * bin → pixel: `k/999 · max(1, W−1)`, continuous for evaluation, or rounded half to even and
//!   clamped to `[0, W−1]` when an integer pixel is needed.
//!
//! Coordinate token text is `<|coord_k|>` with `k` in plain decimal; parsing also accepts 1–4
//! digits with leading zeros (`<|coord_007|>` is bin 7) and rejects values above 999 and the
//! vocabulary's wildcard `<|coord_*|>`, which no data or model output may use.

use crate::geometry::ImageSize;
use std::fmt;

/// Number of coordinate bins.
pub const NUM_BINS: usize = 1000;

/// One coordinate bin, `0..=999`. The only way to build one checks the range, so a `Bin` in hand
/// is always a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bin(u16);

impl Bin {
    /// Bin 0 (the left / top image edge).
    pub const MIN: Bin = Bin(0);
    /// Bin 999 (the right / bottom image edge).
    pub const MAX: Bin = Bin(999);

    /// `None` when `k > 999`.
    pub const fn new(k: u16) -> Option<Bin> {
        if k <= 999 { Some(Bin(k)) } else { None }
    }

    /// The bin index `k`.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// Every bin, `0..=999` in order.
    pub fn all() -> impl Iterator<Item = Bin> {
        (0..NUM_BINS as u16).map(Bin)
    }

    /// The normalized position `k/999` in `[0, 1]`.
    pub fn normalized(self) -> f64 {
        f64::from(self.0) / 999.0
    }

    /// The token text `<|coord_k|>`.
    pub fn token(self) -> String {
        let mut s = String::with_capacity(14);
        self.write_token(&mut s);
        s
    }

    /// Append the token text to `out` without an intermediate allocation (the renderer's path).
    pub fn write_token(self, out: &mut String) {
        out.push_str(TOKEN_PREFIX);
        let k = self.0;
        if k >= 100 {
            out.push(char::from(b'0' + (k / 100) as u8));
        }
        if k >= 10 {
            out.push(char::from(b'0' + (k / 10 % 10) as u8));
        }
        out.push(char::from(b'0' + (k % 10) as u8));
        out.push_str(TOKEN_SUFFIX);
    }

    /// Parse exactly one token, e.g. `<|coord_42|>` or `<|coord_042|>`.
    pub fn parse_token(text: &str) -> Result<Bin, TokenError> {
        match parse_token_prefix(text.as_bytes()) {
            Ok((bin, len)) if len == text.len() => Ok(bin),
            Ok(_) => Err(TokenError::Malformed),
            Err(e) => Err(e),
        }
    }
}

const TOKEN_PREFIX: &str = "<|coord_";
/// The vocabulary's wildcard literal, which vocabulary expansion adds before `<|coord_0|>`; no
/// data or model output may use it as a position.
pub const COORD_WILDCARD: &str = "<|coord_*|>";
const TOKEN_SUFFIX: &str = "|>";

/// Why a piece of text is not a usable coordinate token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not of the form `<|coord_` + 1–4 digits + `|>`.
    Malformed,
    /// The vocabulary's wildcard `<|coord_*|>`: it exists in the tokenizer but never denotes a
    /// position.
    Wildcard,
    /// Well-formed but above 999 (e.g. `<|coord_1000|>`).
    OutOfRange(u16),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed => {
                write!(f, "not a coordinate token `<|coord_k|>` (k in 0..=999)")
            }
            TokenError::Wildcard => {
                write!(
                    f,
                    "the wildcard `<|coord_*|>` is not a coordinate (use <|coord_0|>..<|coord_999|>)"
                )
            }
            TokenError::OutOfRange(v) => {
                write!(f, "coordinate token value {v} is out of range 0..=999")
            }
        }
    }
}

impl std::error::Error for TokenError {}

/// Parse a token at the start of `bytes`, returning the bin and the number of bytes it spans.
///
/// This is the scanner entry point for CoordJSON parsing: it never looks past the token, so the
/// caller can continue scanning right after it.
pub fn parse_token_prefix(bytes: &[u8]) -> Result<(Bin, usize), TokenError> {
    let rest = bytes.strip_prefix(TOKEN_PREFIX.as_bytes()).ok_or(TokenError::Malformed)?;
    if rest.starts_with(b"*|>") {
        return Err(TokenError::Wildcard);
    }
    let digits = rest.iter().take(5).take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 4 || !rest[digits..].starts_with(TOKEN_SUFFIX.as_bytes()) {
        return Err(TokenError::Malformed);
    }
    let value = rest[..digits].iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    let bin = Bin::new(value).ok_or(TokenError::OutOfRange(value))?;
    Ok((bin, TOKEN_PREFIX.len() + digits + TOKEN_SUFFIX.len()))
}

/// Why a pixel coordinate has no bin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QuantizeError {
    /// NaN or ±infinity.
    NonFinite { value: f64 },
    /// The rounded bin falls outside `0..=999` (a polygon vertex beyond the image edge).
    OutOfRange { value: f64, extent: u32, bin: f64 },
}

impl fmt::Display for QuantizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            QuantizeError::NonFinite { value } => write!(f, "coordinate {value} is not finite"),
            QuantizeError::OutOfRange { value, extent, bin } => write!(
                f,
                "pixel coordinate {value} maps to bin {bin:.2}, outside 0..=999 \
                 (image extent {extent}, bins span pixels 0..={})",
                extent.saturating_sub(1).max(1)
            ),
        }
    }
}

impl std::error::Error for QuantizeError {}

/// The pixel → bin denominator for an axis of `extent` pixels: `max(1, extent − 1)`.
fn denominator(extent: u32) -> f64 {
    f64::from(extent.saturating_sub(1).max(1))
}

/// The unrounded bin position of pixel coordinate `value` on an axis of `extent` pixels
/// (`value / max(1, extent−1) · 999`).
pub fn bin_position(value: f64, extent: u32) -> f64 {
    value / denominator(extent) * 999.0
}

/// Quantize one generic coordinate (a polygon vertex component): round half to even, error when
/// the result is not a bin.
pub fn quantize_point(value: f64, extent: u32) -> Result<Bin, QuantizeError> {
    if !value.is_finite() {
        return Err(QuantizeError::NonFinite { value });
    }
    let bin = bin_position(value, extent);
    let k = bin.round_ties_even();
    if (0.0..=999.0).contains(&k) {
        Ok(Bin(k as u16))
    } else {
        Err(QuantizeError::OutOfRange { value, extent, bin })
    }
}

/// Quantize polygon vertices `[x, y]` on an image of `size`, one output vertex per input vertex
/// in the same order. On failure, reports the flat coordinate index (`2·vertex + axis`).
pub fn quantize_points(
    points: &[[f64; 2]],
    size: ImageSize,
) -> Result<Vec<[Bin; 2]>, (usize, QuantizeError)> {
    points
        .iter()
        .enumerate()
        .map(|(i, &[x, y])| {
            let bx = quantize_point(x, size.width()).map_err(|e| (2 * i, e))?;
            let by = quantize_point(y, size.height()).map_err(|e| (2 * i + 1, e))?;
            Ok([bx, by])
        })
        .collect()
}

/// Quantize a box `[x1, y1, x2, y2]`: floor the top-left corner, ceil the bottom-right one, clamp
/// to `0..=999`, and open a collapsed edge by one bin (`x2 = x1 + 1`, or at the right edge
/// `x1 = 998, x2 = 999`). The result always has `x1 < x2` and `y1 < y2`. Only non-finite input
/// fails; values beyond the image are clamped (boxes are clamped by contract, vertices are not).
pub fn quantize_bbox(b: [f64; 4], size: ImageSize) -> Result<[Bin; 4], QuantizeError> {
    if let Some(&value) = b.iter().find(|v| !v.is_finite()) {
        return Err(QuantizeError::NonFinite { value });
    }
    let clamp = |v: f64| v.clamp(0.0, 999.0) as u16;
    let x1 = clamp(bin_position(b[0], size.width()).floor());
    let y1 = clamp(bin_position(b[1], size.height()).floor());
    let x2 = clamp(bin_position(b[2], size.width()).ceil());
    let y2 = clamp(bin_position(b[3], size.height()).ceil());
    let (x1, x2) = open_edge(x1, x2);
    let (y1, y2) = open_edge(y1, y2);
    Ok([Bin(x1), Bin(y1), Bin(x2), Bin(y2)])
}

/// The collapsed-edge nudge: make `lo < hi` by moving the far edge, or the near one at bin 999.
fn open_edge(lo: u16, hi: u16) -> (u16, u16) {
    if hi > lo {
        (lo, hi)
    } else if lo < 999 {
        (lo, lo + 1)
    } else {
        (998, 999)
    }
}

/// Bin → continuous pixel coordinate: `k/999 · max(1, extent−1)` (what evaluation uses).
pub fn dequantize(bin: Bin, extent: u32) -> f64 {
    bin.normalized() * denominator(extent)
}

/// Bin → integer pixel: the continuous value rounded half to even and clamped to
/// `[0, extent−1]`.
pub fn dequantize_rounded(bin: Bin, extent: u32) -> u32 {
    let max = extent.saturating_sub(1);
    let p = dequantize(bin, extent).round_ties_even();
    (p.max(0.0) as u32).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bin(k: u16) -> Bin {
        Bin::new(k).unwrap()
    }

    fn size(w: u32, h: u32) -> ImageSize {
        ImageSize::new(w, h).unwrap()
    }

    #[test]
    fn bin_construction_rejects_values_above_999() {
        assert_eq!(Bin::new(999), Some(Bin::MAX));
        assert_eq!(Bin::new(1000), None);
    }

    #[test]
    fn token_text_has_no_zero_padding() {
        assert_eq!(bin(0).token(), "<|coord_0|>");
        assert_eq!(bin(7).token(), "<|coord_7|>");
        assert_eq!(bin(42).token(), "<|coord_42|>");
        assert_eq!(bin(999).token(), "<|coord_999|>");
    }

    #[test]
    fn token_parsing_accepts_one_to_four_digits_with_leading_zeros() {
        assert_eq!(Bin::parse_token("<|coord_007|>"), Ok(bin(7)));
        assert_eq!(Bin::parse_token("<|coord_0999|>"), Ok(bin(999)));
        assert_eq!(Bin::parse_token("<|coord_0|>"), Ok(bin(0)));
    }

    #[test]
    fn token_parsing_rejects_out_of_range_wildcard_and_malformed_text() {
        assert_eq!(Bin::parse_token("<|coord_1000|>"), Err(TokenError::OutOfRange(1000)));
        assert_eq!(Bin::parse_token("<|coord_*|>"), Err(TokenError::Wildcard));
        for bad in [
            "<|coord_|>",
            "<|coord_00001|>",
            "<|coord_12|",
            "<|coord_-1|>",
            "<|coord_1 |>",
            "coord_1",
            "<|coord_12|>x",
            "",
        ] {
            assert_eq!(Bin::parse_token(bad), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn token_prefix_reports_its_length() {
        assert_eq!(parse_token_prefix(b"<|coord_12|>, <|coord_3|>"), Ok((bin(12), 12)));
    }

    #[test]
    fn reference_worked_examples_640x480() {
        let s = size(640, 480);
        assert_eq!(
            quantize_bbox([0.0, 0.0, 640.0, 480.0], s),
            Ok([bin(0), bin(0), bin(999), bin(999)])
        );
        assert_eq!(
            quantize_bbox([100.4, 50.2, 100.9, 50.3], s),
            Ok([bin(156), bin(104), bin(158), bin(105)])
        );
        let pts = quantize_points(&[[100.0, 50.0], [320.0, 240.0], [639.0, 479.0]], s).unwrap();
        assert_eq!(pts, vec![[bin(156), bin(104)], [bin(500), bin(501)], [bin(999), bin(999)]]);
        assert_eq!(dequantize_rounded(bin(500), 640), 320);
    }

    #[test]
    fn collapsed_box_edges_are_nudged_open() {
        let s = size(1000, 1000); // denominator 999: pixel v ↦ bin v exactly
        assert_eq!(quantize_bbox([5.0, 7.0, 5.0, 7.0], s), Ok([bin(5), bin(7), bin(6), bin(8)]));
        assert_eq!(
            quantize_bbox([999.0, 999.0, 999.0, 999.0], s),
            Ok([bin(998), bin(998), bin(999), bin(999)])
        );
    }

    #[test]
    fn box_corners_beyond_the_image_are_clamped() {
        let s = size(100, 100);
        assert_eq!(
            quantize_bbox([-5.0, -1.0, 150.0, 99.0], s),
            Ok([bin(0), bin(0), bin(999), bin(999)])
        );
    }

    #[test]
    fn points_round_half_to_even() {
        let s = size(1000, 1000);
        assert_eq!(quantize_point(0.5, s.width()), Ok(bin(0)));
        assert_eq!(quantize_point(1.5, s.width()), Ok(bin(2)));
        assert_eq!(quantize_point(2.5, s.width()), Ok(bin(2)));
    }

    #[test]
    fn points_outside_the_bin_range_are_errors_not_clamped() {
        assert!(matches!(quantize_point(640.0, 640), Err(QuantizeError::OutOfRange { .. })));
        assert!(matches!(quantize_point(-1.0, 640), Err(QuantizeError::OutOfRange { .. })));
        assert!(matches!(quantize_point(f64::NAN, 640), Err(QuantizeError::NonFinite { .. })));
        let err = quantize_points(&[[1.0, 1.0], [1.0, 900.0]], size(640, 480)).unwrap_err();
        assert_eq!(err.0, 3);
    }

    #[test]
    fn non_finite_box_corners_are_errors() {
        let s = size(10, 10);
        assert!(quantize_bbox([0.0, f64::INFINITY, 1.0, 1.0], s).is_err());
    }

    #[test]
    fn one_pixel_axis_uses_denominator_one() {
        assert_eq!(dequantize(Bin::MAX, 1), 1.0);
        assert_eq!(dequantize_rounded(Bin::MAX, 1), 0);
        assert_eq!(quantize_point(0.0, 1), Ok(Bin::MIN));
    }

    #[test]
    fn rounded_dequantization_is_the_clamped_nearest_pixel() {
        // k/999·d is never exactly x.5 for integer k, d (999 is odd), so ties cannot occur in
        // exact arithmetic; the contract is "nearest pixel, clamped to the image".
        for extent in [2u32, 3, 641, 1001, 2000] {
            for k in (0..1000).step_by(37) {
                let b = bin(k);
                let p = dequantize_rounded(b, extent);
                assert!(p < extent);
                assert!((f64::from(p) - dequantize(b, extent)).abs() <= 0.5);
            }
        }
    }

    proptest! {
        #[test]
        fn point_round_trip_error_is_at_most_half_a_bin(extent in 1u32..5000, t in 0.0f64..=1.0) {
            let d = f64::from(extent.saturating_sub(1).max(1));
            let v = t * d;
            let b = quantize_point(v, extent).unwrap();
            prop_assert!((dequantize(b, extent) - v).abs() <= d / 999.0 / 2.0 + 1e-9);
        }

        #[test]
        fn bins_survive_dequantize_then_quantize(extent in 1u32..5000, k in 0u16..1000) {
            let b = bin(k);
            prop_assert_eq!(quantize_point(dequantize(b, extent), extent), Ok(b));
        }

        #[test]
        fn bbox_round_trip_error_is_at_most_one_bin(
            w in 1u32..3000, h in 1u32..3000,
            a in 0.0f64..=1.0, b in 0.0f64..=1.0, c in 0.0f64..=1.0, d in 0.0f64..=1.0,
        ) {
            let s = size(w, h);
            let (dx, dy) = (f64::from(w.saturating_sub(1).max(1)), f64::from(h.saturating_sub(1).max(1)));
            let bx = [a.min(b) * dx, c.min(d) * dy, a.max(b) * dx, c.max(d) * dy];
            let q = quantize_bbox(bx, s).unwrap();
            let back = [dequantize(q[0], w), dequantize(q[1], h), dequantize(q[2], w), dequantize(q[3], h)];
            for i in 0..4 {
                let one_bin = if i % 2 == 0 { dx } else { dy } / 999.0;
                prop_assert!((back[i] - bx[i]).abs() <= one_bin + 1e-9, "corner {} {:?} {:?}", i, bx, back);
            }
        }

        #[test]
        fn quantization_is_monotone(extent in 1u32..5000, t1 in 0.0f64..=1.0, t2 in 0.0f64..=1.0) {
            let d = f64::from(extent.saturating_sub(1).max(1));
            let (lo, hi) = (t1.min(t2) * d, t1.max(t2) * d);
            prop_assert!(quantize_point(lo, extent).unwrap() <= quantize_point(hi, extent).unwrap());
            prop_assert!(dequantize_rounded(quantize_point(lo, extent).unwrap(), extent)
                <= dequantize_rounded(quantize_point(hi, extent).unwrap(), extent));
            let s = size(extent, extent);
            let q1 = quantize_bbox([lo, lo, hi, hi], s).unwrap();
            let q2 = quantize_bbox([hi, hi, hi + 1.0, hi + 1.0], s).unwrap();
            prop_assert!(q1[0] <= q2[0] && q1[1] <= q2[1]);
        }

        #[test]
        fn quantized_boxes_keep_corner_order_and_never_collapse(
            w in 1u32..3000, h in 1u32..3000,
            x1 in -100.0f64..3100.0, dx in 0.0f64..500.0, y1 in -100.0f64..3100.0, dy in 0.0f64..500.0,
        ) {
            let q = quantize_bbox([x1, y1, x1 + dx, y1 + dy], size(w, h)).unwrap();
            prop_assert!(q[0] < q[2] && q[1] < q[3]);
        }

        #[test]
        fn polygon_quantization_keeps_every_vertex_in_order(
            w in 1u32..3000, h in 1u32..3000,
            pts in proptest::collection::vec((0.0f64..=1.0, 0.0f64..=1.0), 3..40),
        ) {
            let s = size(w, h);
            let (dx, dy) = (f64::from(w.saturating_sub(1).max(1)), f64::from(h.saturating_sub(1).max(1)));
            let pixels: Vec<[f64; 2]> = pts.iter().map(|&(x, y)| [x * dx, y * dy]).collect();
            let bins = quantize_points(&pixels, s).unwrap();
            prop_assert_eq!(bins.len(), pixels.len());
            for (p, b) in pixels.iter().zip(&bins) {
                prop_assert_eq!(b[0], quantize_point(p[0], w).unwrap());
                prop_assert_eq!(b[1], quantize_point(p[1], h).unwrap());
            }
        }

        #[test]
        fn token_text_round_trips(k in 0u16..1000) {
            prop_assert_eq!(Bin::parse_token(&bin(k).token()), Ok(bin(k)));
        }
    }
}
