//! Per-image seeds of the synthetic set, on the project's one generator
//! (`coordexp_core::seed::SplitMix64`), so a seed means the same dataset on every platform.
//!
//! Derivation: every image gets its own generator seeded with
//! `image_seed = mix(mix(seed ^ split_salt) ^ index)`, where `mix` is the SplitMix64 output
//! function applied to `x + 0x9E3779B97F4A7C15`, `split_salt` is the ASCII name of the split packed
//! into a `u64` (`"train"`, `"val"`) and `index` is the image's position in its split. An image
//! therefore depends only on `(seed, split, index)`: generation order, thread count and the size
//! of the other split never change it.

pub(crate) use coordexp_core::seed::{SplitMix64, mix};

/// The seed of image `index` of the split whose salt is `split_salt` (see the module docs).
pub(crate) fn image_seed(seed: u64, split_salt: u64, index: u64) -> u64 {
    mix(mix(seed ^ split_salt) ^ index)
}

/// `lo..=hi` on `u32`, the type the scene geometry works in.
pub(crate) fn range_u32(rng: &mut SplitMix64, lo: u32, hi: u32) -> u32 {
    rng.range(u64::from(lo), u64::from(hi)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_seeds_differ_across_splits_and_indices() {
        let a = image_seed(7, 1, 0);
        assert_ne!(a, image_seed(7, 2, 0));
        assert_ne!(a, image_seed(7, 1, 1));
        assert_ne!(a, image_seed(8, 1, 0));
        assert_eq!(a, image_seed(7, 1, 0));
    }
}
