//! The smart-resize size rule: which size an image must have before the model sees it.
//!
//! Qwen3-VL merges 16-pixel patches 2×2, so a side that is a multiple of 32 maps to whole vision
//! tokens, and the pixel budget bounds the token count (`(W/32)(H/32)`). The rule is the
//! reference's `smart_resize`, reproduced exactly because it decides every training image size:
//!
//! 1. an aspect ratio above 200 is refused;
//! 2. each side snaps to the nearest multiple of the factor (ties to even, at least one factor);
//! 3. over the budget: both sides scale by `β = √(H·W / max_pixels)`, are truncated to integers,
//!    then floored to the factor (at least one factor);
//! 4. under the minimum: both sides scale by `β = √(min_pixels / (H·W))`, are truncated, then
//!    ceiled to the factor.

use coordexp_core::Error;
use coordexp_core::geometry::ImageSize;

/// Largest accepted ratio between the long and the short side.
pub const MAX_ASPECT_RATIO: f64 = 200.0;

/// The factor and the pixel bounds of the size rule (reference defaults: 32, 4096, 786432).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizePolicy {
    factor: u32,
    min_pixels: u64,
    max_pixels: u64,
}

impl Default for ResizePolicy {
    fn default() -> Self {
        ResizePolicy { factor: 32, min_pixels: 32 * 32 * 4, max_pixels: 32 * 32 * 768 }
    }
}

impl ResizePolicy {
    /// A policy whose bounds can all be met: `factor ≥ 1`, `min_pixels ≤ max_pixels` and at least
    /// one factor × factor block fits in `max_pixels`.
    pub fn new(factor: u32, min_pixels: u64, max_pixels: u64) -> Result<Self, Error> {
        let block = u64::from(factor) * u64::from(factor);
        if factor == 0 || max_pixels < block || min_pixels > max_pixels {
            return Err(Error::input(format!(
                "impossible resize policy: factor {factor}, min_pixels {min_pixels}, max_pixels {max_pixels}"
            ))
            .hint("use factor ≥ 1 and factor² ≤ max_pixels, min_pixels ≤ max_pixels (defaults: 32, 4096, 786432)"));
        }
        Ok(ResizePolicy { factor, min_pixels, max_pixels })
    }

    pub fn factor(&self) -> u32 {
        self.factor
    }

    pub fn max_pixels(&self) -> u64 {
        self.max_pixels
    }

    /// Does `size` already satisfy the rule, i.e. would [`Self::target`] leave it unchanged?
    pub fn conforms(&self, size: ImageSize) -> bool {
        self.target(size).is_ok_and(|t| t == size)
    }

    /// The size an image of `size` is resized to (see the module docs for the rule).
    pub fn target(&self, size: ImageSize) -> Result<ImageSize, Error> {
        let (w, h) = (f64::from(size.width()), f64::from(size.height()));
        if w.max(h) / w.min(h) > MAX_ASPECT_RATIO {
            return Err(Error::input(format!(
                "image of {}x{} has an aspect ratio above {MAX_ASPECT_RATIO}",
                size.width(),
                size.height()
            ))
            .hint("crop the image or drop the record; the model cannot tile such a strip"));
        }
        let f = f64::from(self.factor);
        let snap = |v: f64| ((v / f).round_ties_even() * f).max(f);
        let (mut wb, mut hb) = (snap(w), snap(h));
        if wb * hb > self.max_pixels as f64 {
            let beta = (h * w / self.max_pixels as f64).sqrt();
            let down = |v: f64| (((v / beta).trunc() / f).floor() * f).max(f);
            (wb, hb) = (down(w), down(h));
        } else if wb * hb < self.min_pixels as f64 {
            let beta = (self.min_pixels as f64 / (h * w)).sqrt();
            let up = |v: f64| ((v * beta).trunc() / f).ceil() * f;
            (wb, hb) = (up(w), up(h));
        }
        ImageSize::new(wb as u32, hb as u32).ok_or_else(|| {
            Error::runtime(format!("smart resize of {}x{} produced an empty side", w, h))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn size(w: u32, h: u32) -> ImageSize {
        ImageSize::new(w, h).unwrap()
    }

    #[test]
    fn reference_examples_snap_to_the_documented_sizes() {
        let p = ResizePolicy::default();
        for ((w, h), (tw, th)) in [
            ((640, 480), (640, 480)),
            ((640, 427), (640, 416)),
            ((500, 496), (512, 512)),   // 15.5 rounds to 16
            ((640, 464), (640, 448)),   // 14.5 rounds to 14 (ties to even)
            ((1280, 960), (1024, 768)), // over budget
            ((1920, 1080), (1152, 640)),
            ((500, 333), (512, 320)),
        ] {
            assert_eq!(p.target(size(w, h)).unwrap(), size(tw, th), "{w}x{h}");
        }
    }

    #[test]
    fn tiny_images_grow_to_the_minimum_budget() {
        let p = ResizePolicy::default();
        // 20x20 = 400 px < 4096: beta = sqrt(4096/400) = 3.2 → 64x64.
        assert_eq!(p.target(size(20, 20)).unwrap(), size(64, 64));
    }

    #[test]
    fn extreme_aspect_ratios_are_refused() {
        let err = ResizePolicy::default().target(size(201, 1)).unwrap_err();
        assert!(err.what().contains("aspect ratio"), "{err}");
    }

    #[test]
    fn impossible_policies_are_refused() {
        assert!(ResizePolicy::new(0, 0, 100).is_err());
        assert!(ResizePolicy::new(32, 5000, 4096).is_err());
        assert!(ResizePolicy::new(32, 0, 1000).is_err());
        assert!(ResizePolicy::new(28, 3136, 1_003_520).is_ok());
    }

    proptest! {
        #[test]
        fn targets_are_multiples_of_the_factor_within_the_budget(w in 1u32..5000, h in 1u32..5000) {
            prop_assume!(w.max(h) as f64 / w.min(h) as f64 <= MAX_ASPECT_RATIO);
            let p = ResizePolicy::default();
            let t = p.target(size(w, h)).unwrap();
            prop_assert_eq!(t.width() % 32, 0);
            prop_assert_eq!(t.height() % 32, 0);
            prop_assert!(t.pixels() <= p.max_pixels());
        }

        #[test]
        fn targets_inside_the_bounds_are_fixed_points(w in 1u32..5000, h in 1u32..5000) {
            prop_assume!(w.max(h) as f64 / w.min(h) as f64 <= MAX_ASPECT_RATIO);
            let p = ResizePolicy::default();
            let t = p.target(size(w, h)).unwrap();
            prop_assume!(t.pixels() >= 4096);
            prop_assert!(p.conforms(t));
        }
    }
}
