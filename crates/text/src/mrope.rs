//! Qwen3-VL multimodal rotary position ids, four rows per token.
//!
//! Row 0 is the plain text position `0..len` (the packed-attention bookkeeping row, never
//! rotated). Rows 1–3 are the (t, h, w) positions the rotary embedding uses, with the rule of
//! transformers' `Qwen3VLModel.get_rope_index`:
//! - a text token takes `p` in all three rows, then `p += 1`;
//! - an image with merged grid `(t, H', W')` starting at `p` gives its token `(ti, hi, wi)` the
//!   positions `(p + ti, p + hi, p + wi)`, row-major with `wi` fastest, then
//!   `p += max(H', W')` (a still image has `t = 1`).
//!
//! Every sample starts at 0; a packed sequence is the concatenation of its segments' rows, so
//! positions restart at every segment (attention is block-diagonal per segment as well).

use coordexp_core::{Error, Result};
use serde::Serialize;

/// An image's patch grid as HF's `image_grid_thw`: temporal patches, then rows and columns of
/// vision patches *before* the spatial merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct GridThw {
    pub t: u32,
    pub h: u32,
    pub w: u32,
}

impl GridThw {
    /// Language tokens the image becomes: `t·h·w / merge²`.
    pub fn tokens(&self, merge: u32) -> usize {
        (self.t as usize) * (self.h / merge) as usize * (self.w / merge) as usize
    }

    /// `[t, h, w]`, the row of `image_grid_thw`.
    pub fn to_array(self) -> [u32; 3] {
        [self.t, self.h, self.w]
    }
}

/// The four position rows of one sample.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct PositionIds {
    /// `[text, t, h, w]`, each as long as the sample.
    pub rows: [Vec<i64>; 4],
}

impl PositionIds {
    pub fn len(&self) -> usize {
        self.rows[0].len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows[0].is_empty()
    }

    /// Append another sample's rows (packing).
    pub fn extend(&mut self, other: &PositionIds) {
        for (dst, src) in self.rows.iter_mut().zip(&other.rows) {
            dst.extend_from_slice(src);
        }
    }
}

/// Position ids for `ids`, whose runs of `image_pad` tokens are the images of `grids`, in order.
pub fn position_ids(
    ids: &[u32],
    grids: &[GridThw],
    image_pad: u32,
    merge: u32,
) -> Result<PositionIds> {
    let n = ids.len();
    let mut rows: [Vec<i64>; 4] = std::array::from_fn(|_| Vec::with_capacity(n));
    rows[0].extend(0..n as i64);
    let mut next: i64 = 0;
    let mut i = 0;
    let mut grids_iter = grids.iter();
    while i < n {
        if ids[i] != image_pad {
            for row in &mut rows[1..] {
                row.push(next);
            }
            next += 1;
            i += 1;
            continue;
        }
        let grid = grids_iter.next().ok_or_else(|| {
            Error::runtime(format!("image-pad run at token {i} has no image grid"))
        })?;
        let (t, h, w) = (grid.t as i64, (grid.h / merge) as i64, (grid.w / merge) as i64);
        let count = (t * h * w) as usize;
        let run = ids[i..].iter().take_while(|&&id| id == image_pad).count();
        if run != count {
            return Err(Error::runtime(format!(
                "image-pad run at token {i} has {run} tokens, but its grid {}x{}x{} needs {count}",
                grid.t, grid.h, grid.w
            )));
        }
        for ti in 0..t {
            for hi in 0..h {
                for wi in 0..w {
                    rows[1].push(next + ti);
                    rows[2].push(next + hi);
                    rows[3].push(next + wi);
                }
            }
        }
        next += h.max(w);
        i += count;
    }
    if grids_iter.next().is_some() {
        return Err(Error::runtime("more image grids than image-pad runs in the ids"));
    }
    Ok(PositionIds { rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAD: u32 = 9;

    #[test]
    fn image_positions_follow_the_merged_grid_and_text_resumes_after_the_longer_side() {
        // 4 text tokens, a 64x96 image (grid 1x4x6 -> merged 2x3), 2 text tokens.
        let ids = [1, 2, 3, 4, PAD, PAD, PAD, PAD, PAD, PAD, 5, 6];
        let p = position_ids(&ids, &[GridThw { t: 1, h: 4, w: 6 }], PAD, 2).unwrap();
        assert_eq!(p.rows[0], (0..12).collect::<Vec<_>>());
        assert_eq!(p.rows[1], [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 7, 8]);
        assert_eq!(p.rows[2], [0, 1, 2, 3, 4, 4, 4, 5, 5, 5, 7, 8]);
        assert_eq!(p.rows[3], [0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn text_only_positions_are_the_same_in_every_row() {
        let p = position_ids(&[1, 2, 3], &[], PAD, 2).unwrap();
        for row in &p.rows {
            assert_eq!(row, &vec![0, 1, 2]);
        }
    }

    #[test]
    fn a_pad_run_that_disagrees_with_its_grid_is_an_error() {
        let err =
            position_ids(&[1, PAD, PAD, 2], &[GridThw { t: 1, h: 4, w: 4 }], PAD, 2).unwrap_err();
        assert!(err.what().contains("needs 4"), "{}", err.what());
        assert!(position_ids(&[1, 2], &[GridThw { t: 1, h: 2, w: 2 }], PAD, 2).is_err());
    }
}
