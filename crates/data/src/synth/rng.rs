//! The synthetic set's own small PRNG, so that a seed means the same dataset on every platform
//! and with every version of the `rand` ecosystem (we depend on none of it).
//!
//! Derivation: every image gets its own generator seeded with
//! `image_seed = mix(mix(seed ^ split_salt) ^ index)`, where `mix` is the SplitMix64 output
//! function applied to `x + 0x9E3779B97F4A7C15`, `split_salt` is the ASCII name of the split packed
//! into a `u64` (`"train"`, `"val"`) and `index` is the image's position in its split. An image
//! therefore depends only on `(seed, split, index)`: generation order, thread count and the size
//! of the other split never change it.

/// The SplitMix64 mixing step: a bijective, well-avalanching hash of one `u64`.
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of image `index` of the split whose salt is `split_salt` (see the module docs).
pub(crate) fn image_seed(seed: u64, split_salt: u64, index: u64) -> u64 {
    mix(mix(seed ^ split_salt) ^ index)
}

/// SplitMix64: tiny, fast and plenty for picking shapes and positions.
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let out = mix(self.state);
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        out
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for our tiny `n`).
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.next_u64() as u32) * u64::from(n)) >> 32) as u32
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_published_reference_sequence() {
        // First outputs of SplitMix64 seeded with 1234567 (Vigna's reference implementation).
        let mut rng = SplitMix64::new(1234567);
        assert_eq!(rng.next_u64(), 6457827717110365317);
        assert_eq!(rng.next_u64(), 3203168211198807973);
        assert_eq!(rng.next_u64(), 9817491932198370423);
    }

    #[test]
    fn image_seeds_differ_across_splits_and_indices() {
        let a = image_seed(7, 1, 0);
        assert_ne!(a, image_seed(7, 2, 0));
        assert_ne!(a, image_seed(7, 1, 1));
        assert_ne!(a, image_seed(8, 1, 0));
        assert_eq!(a, image_seed(7, 1, 0));
    }

    #[test]
    fn range_stays_inside_its_bounds() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..10_000 {
            let v = rng.range(5, 9);
            assert!((5..=9).contains(&v));
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
