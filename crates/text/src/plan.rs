//! The packing plan: which samples share a packed sequence, in which order, for one epoch.
//!
//! Best-fit-decreasing, fully specified so that a plan is a pure function of
//! (sample lengths, `packing` config, epoch seed) and can be checksummed:
//! 1. Tie order: a seeded Fisher–Yates permutation of the sample indices (SplitMix64 stream
//!    seeded with the epoch seed) ranks samples of equal length.
//! 2. Samples are taken longest first (ties by that rank). A sample longer than
//!    `max_length` is an error, or with `on_overflow: singleton` a pack of its own.
//! 3. Each sample goes into the *fullest* open pack it fits in (`load + len <= max_length`);
//!    among equally full packs, the one that reached that load most recently; if none fits, a
//!    new pack is opened. Samples are never split.
//! 4. Inside a pack, samples are ordered by index. Packs whose fill is below `min_fill` are
//!    dropped, and counted.
//! 5. The packs are shuffled by the same stream, so every epoch (seed) reorders them.
//!
//! The checksum is the SHA-256 of the packs in order, written as compact JSON
//! (`[[3,17],[5],...]`).

use coordexp_core::config::schema::{OnOverflow, Packing};
use coordexp_core::seed::SplitMix64;
use coordexp_core::{Error, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Counts describing a plan (they go into metrics and `coordexp inspect pack`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackStats {
    pub samples: usize,
    pub packs: usize,
    pub capacity: usize,
    /// Tokens in kept packs.
    pub tokens: u64,
    /// Kept tokens / (packs · capacity).
    pub mean_fill: f64,
    pub min_fill: f64,
    pub max_fill: f64,
    /// Samples longer than the capacity that became a pack of their own.
    pub oversize_singletons: usize,
    /// Packs below `min_fill`, dropped with their samples.
    pub dropped_packs: usize,
    pub dropped_samples: usize,
    pub dropped_tokens: u64,
}

/// One epoch's packs (sample indices) with statistics and checksum.
#[derive(Debug, Clone, PartialEq)]
pub struct PackPlan {
    samples: Vec<u32>,
    bounds: Vec<usize>,
    stats: PackStats,
    checksum: String,
}

impl PackPlan {
    /// Number of packs.
    pub fn len(&self) -> usize {
        self.bounds.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sample indices of pack `k`, ascending.
    pub fn pack(&self, k: usize) -> &[u32] {
        &self.samples[self.bounds[k]..self.bounds[k + 1]]
    }

    /// All packs in order.
    pub fn packs(&self) -> impl Iterator<Item = &[u32]> {
        self.bounds.windows(2).map(|w| &self.samples[w[0]..w[1]])
    }

    pub fn stats(&self) -> &PackStats {
        &self.stats
    }

    /// SHA-256 (hex) of the packs in order.
    pub fn checksum(&self) -> &str {
        &self.checksum
    }
}

/// The packing seed of `epoch` (the run's one epoch-seed derivation, `coordexp_core::seed`).
pub use coordexp_core::seed::epoch_seed;

/// Plan the packs of one epoch. `lengths[i]` is sample `i`'s token count, image tokens included.
pub fn plan(lengths: &[u32], cfg: &Packing, seed: u64) -> Result<PackPlan> {
    let cap = u32::try_from(cfg.max_length).ok().filter(|c| *c > 0).ok_or_else(|| {
        Error::input(format!("packing.max_length must be in 1..=2^32-1, got {}", cfg.max_length))
            .at("packing.max_length")
    })?;
    if !(0.0..=1.0).contains(&cfg.min_fill) {
        return Err(Error::input(format!(
            "packing.min_fill must be in [0, 1], got {}",
            cfg.min_fill
        ))
        .at("packing.min_fill"));
    }
    if lengths.len() > u32::MAX as usize {
        return Err(Error::input("more than 2^32 samples in one plan"));
    }
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<u32> = (0..lengths.len() as u32).collect();
    rng.shuffle(&mut order);
    // Sort key: longest first, then the permutation rank. One u64 per sample sorts fast.
    let mut keys: Vec<u64> = Vec::with_capacity(lengths.len());
    for (rank, &i) in order.iter().enumerate() {
        let len = lengths[i as usize];
        if len == 0 {
            return Err(Error::runtime(format!("sample {i} has no tokens")));
        }
        keys.push((u64::from(u32::MAX - len) << 32) | rank as u64);
    }
    keys.sort_unstable();

    let mut bins = Bins::new(cap);
    let mut singles: Vec<u32> = Vec::new();
    for key in keys {
        let i = order[(key & 0xFFFF_FFFF) as usize];
        let len = lengths[i as usize];
        if len > cap {
            match cfg.on_overflow {
                OnOverflow::Error => {
                    return Err(Error::input(format!(
                        "sample {i} has {len} tokens, more than packing.max_length = {cap}"
                    ))
                    .at("packing.max_length")
                    .hint("raise packing.max_length, shorten the sample (fewer objects), or set packing.on_overflow: singleton"));
                }
                OnOverflow::Singleton => singles.push(i),
            }
            continue;
        }
        bins.insert(i, len);
    }

    // Collect packs (samples ascending), drop underfilled ones, shuffle.
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); bins.loads.len()];
    for (i, b) in bins.assignment {
        members[b as usize].push(i);
    }
    let min_tokens = cfg.min_fill * f64::from(cap);
    let mut packs: Vec<(Vec<u32>, u64)> = Vec::with_capacity(members.len() + singles.len());
    let (mut dropped_packs, mut dropped_samples, mut dropped_tokens) = (0, 0, 0u64);
    for (mut m, load) in members.into_iter().zip(bins.loads) {
        if (load as f64) < min_tokens {
            dropped_packs += 1;
            dropped_samples += m.len();
            dropped_tokens += u64::from(load);
            continue;
        }
        m.sort_unstable();
        packs.push((m, u64::from(load)));
    }
    let oversize_singletons = singles.len();
    packs.extend(singles.into_iter().map(|i| (vec![i], u64::from(lengths[i as usize]))));
    rng.shuffle(&mut packs);

    let mut samples = Vec::with_capacity(lengths.len());
    let mut bounds = Vec::with_capacity(packs.len() + 1);
    bounds.push(0);
    let (mut tokens, mut min_fill, mut max_fill) = (0u64, f64::INFINITY, 0f64);
    let mut hasher = Sha256::new();
    hasher.update(b"[");
    for (k, (m, load)) in packs.iter().enumerate() {
        samples.extend_from_slice(m);
        bounds.push(samples.len());
        tokens += load;
        let fill = *load as f64 / f64::from(cap);
        min_fill = min_fill.min(fill);
        max_fill = max_fill.max(fill);
        hasher.update(if k == 0 { "[" } else { ",[" });
        let mut buf = String::with_capacity(m.len() * 8);
        for (j, i) in m.iter().enumerate() {
            if j > 0 {
                buf.push(',');
            }
            buf.push_str(&i.to_string());
        }
        hasher.update(buf.as_bytes());
        hasher.update(b"]");
    }
    hasher.update(b"]");
    let n_packs = packs.len();
    let stats = PackStats {
        samples: lengths.len(),
        packs: n_packs,
        capacity: cap as usize,
        tokens,
        mean_fill: if n_packs == 0 {
            0.0
        } else {
            tokens as f64 / (n_packs as f64 * f64::from(cap))
        },
        min_fill: if n_packs == 0 { 0.0 } else { min_fill },
        max_fill,
        oversize_singletons,
        dropped_packs,
        dropped_samples,
        dropped_tokens,
    };
    let checksum = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(PackPlan { samples, bounds, stats, checksum })
}

/// Open packs indexed by remaining capacity: one stack per remaining value plus a bitset of the
/// non-empty stacks, so "the fullest pack with room for `len`" is a short bitset scan.
struct Bins {
    loads: Vec<u32>,
    assignment: Vec<(u32, u32)>,
    by_room: Vec<Vec<u32>>,
    nonempty: Vec<u64>,
    cap: u32,
}

impl Bins {
    fn new(cap: u32) -> Bins {
        let slots = cap as usize + 1;
        Bins {
            loads: Vec::new(),
            assignment: Vec::new(),
            by_room: vec![Vec::new(); slots],
            nonempty: vec![0; slots.div_ceil(64)],
            cap,
        }
    }

    /// Smallest remaining capacity `>= len` that has an open pack.
    fn fitting_room(&self, len: u32) -> Option<usize> {
        let start = len as usize;
        let mut w = start / 64;
        let mut word = self.nonempty.get(w)? & (!0u64 << (start % 64));
        loop {
            if word != 0 {
                return Some(w * 64 + word.trailing_zeros() as usize);
            }
            w += 1;
            word = *self.nonempty.get(w)?;
        }
    }

    fn push_room(&mut self, room: u32, bin: u32) {
        if room == 0 {
            return; // a full pack never takes another sample
        }
        self.by_room[room as usize].push(bin);
        self.nonempty[room as usize / 64] |= 1 << (room % 64);
    }

    fn insert(&mut self, sample: u32, len: u32) {
        let bin = match self.fitting_room(len) {
            Some(room) => {
                let stack = &mut self.by_room[room];
                let bin = stack.pop().unwrap_or_default();
                if stack.is_empty() {
                    self.nonempty[room / 64] &= !(1 << (room % 64));
                }
                bin
            }
            None => {
                self.loads.push(0);
                (self.loads.len() - 1) as u32
            }
        };
        self.loads[bin as usize] += len;
        self.assignment.push((sample, bin));
        self.push_room(self.cap - self.loads[bin as usize], bin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_length: usize, min_fill: f64, on_overflow: OnOverflow) -> Packing {
        Packing { enabled: true, max_length, min_fill, on_overflow }
    }

    fn lengths(n: usize, seed: u64) -> Vec<u32> {
        let mut r = SplitMix64::new(seed);
        (0..n).map(|_| 50 + r.below(900) as u32).collect()
    }

    #[test]
    fn packs_never_split_a_sample_and_never_exceed_capacity() {
        let lens = lengths(5000, 1);
        let p = plan(&lens, &cfg(2048, 0.0, OnOverflow::Error), 7).unwrap();
        let mut seen = vec![0u8; lens.len()];
        for pack in p.packs() {
            let total: u32 = pack.iter().map(|&i| lens[i as usize]).sum();
            assert!(total <= 2048);
            assert!(pack.windows(2).all(|w| w[0] < w[1]), "samples ascending inside a pack");
            for &i in pack {
                seen[i as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1), "every sample in exactly one pack");
        assert_eq!(p.stats().tokens, lens.iter().map(|&l| u64::from(l)).sum::<u64>());
        assert!(p.stats().mean_fill > 0.95, "BFD packs tightly: {}", p.stats().mean_fill);
    }

    #[test]
    fn plan_is_a_pure_function_of_lengths_config_and_seed() {
        let lens = lengths(3000, 2);
        let c = cfg(4096, 0.0, OnOverflow::Error);
        let a = plan(&lens, &c, 11).unwrap();
        let b = plan(&lens, &c, 11).unwrap();
        assert_eq!(a, b);
        let other_epoch = plan(&lens, &c, 12).unwrap();
        assert_ne!(a.checksum(), other_epoch.checksum(), "epochs reshuffle");
    }

    #[test]
    fn checksum_is_sha256_of_the_compact_json_plan() {
        let p = plan(&[3, 5, 4], &cfg(8, 0.0, OnOverflow::Error), 0).unwrap();
        let json = serde_json::to_string(&p.packs().collect::<Vec<_>>()).unwrap();
        let digest: String =
            Sha256::digest(json.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(p.checksum(), digest);
    }

    #[test]
    fn best_fit_takes_the_fullest_pack_that_fits() {
        // Capacity 10: 6 and 5 open two packs (loads 6, 5); 4 fits both, goes to the fuller (6);
        // 3 then fits only the 5-pack.
        let p = plan(&[6, 5, 4, 3], &cfg(10, 0.0, OnOverflow::Error), 0).unwrap();
        let mut packs: Vec<Vec<u32>> = p.packs().map(<[u32]>::to_vec).collect();
        packs.sort();
        assert_eq!(packs, vec![vec![0, 2], vec![1, 3]]);
    }

    #[test]
    fn oversize_samples_error_or_become_singletons() {
        let err = plan(&[5, 20], &cfg(10, 0.0, OnOverflow::Error), 0).unwrap_err();
        assert!(err.what().contains("sample 1 has 20 tokens"), "{}", err.what());
        let p = plan(&[5, 20], &cfg(10, 0.0, OnOverflow::Singleton), 0).unwrap();
        assert_eq!(p.stats().oversize_singletons, 1);
        assert!(p.packs().any(|pk| pk == [1]));
    }

    #[test]
    fn underfilled_packs_are_dropped_and_counted() {
        let p = plan(&[9, 9, 2], &cfg(10, 0.5, OnOverflow::Error), 0).unwrap();
        // 9 | 9 | 2 -> the 2 fits nowhere (rooms are 1), opens a 20%-full pack: dropped.
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p.stats().dropped_packs, p.stats().dropped_samples, p.stats().dropped_tokens),
            (1, 1, 2)
        );
    }

    proptest::proptest! {
        #[test]
        fn any_plan_covers_each_sample_once_within_capacity(
            lens in proptest::collection::vec(1u32..300, 0..400),
            cap in 1usize..600,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let c = cfg(cap, 0.0, OnOverflow::Singleton);
            let p = plan(&lens, &c, seed).unwrap();
            let mut count = vec![0u32; lens.len()];
            for pack in p.packs() {
                let total: u32 = pack.iter().map(|&i| lens[i as usize]).sum();
                proptest::prop_assert!(total as usize <= cap || pack.len() == 1);
                for &i in pack {
                    count[i as usize] += 1;
                }
            }
            proptest::prop_assert!(count.iter().all(|&n| n == 1));
            proptest::prop_assert_eq!(p.clone(), plan(&lens, &c, seed).unwrap());
        }
    }

    #[test]
    fn empty_input_gives_an_empty_plan() {
        let p = plan(&[], &cfg(10, 0.0, OnOverflow::Error), 0).unwrap();
        assert!(p.is_empty());
        assert_eq!(p.stats().mean_fill, 0.0);
    }
}
