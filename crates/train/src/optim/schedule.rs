//! Learning-rate schedule: linear warmup, then cosine, linear or constant.
//!
//! The factor multiplying each group's base rate depends only on the number of optimizer steps
//! already taken `s` (so a resumed run needs no scheduler state):
//!
//! ```text
//! W = ceil(warmup · max_steps), T = max_steps
//! s < W:  (s + 1) / W                       (the first step already moves; none is wasted)
//! s ≥ W:  p = min(1, (s − W) / max(1, T − W))
//!         cosine: ½ (1 + cos(π p))   linear: 1 − p   constant: 1
//! ```
//!
//! A group's rate is `base · factor` during warmup and `m + (base − m) · factor` after it, with
//! `m = min(min_lr, base)` (HF's `cosine_with_min_lr`: the decay ends at `min_lr`, not 0).

use coordexp_core::config::schema::Schedule;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LrSchedule {
    pub kind: Schedule,
    pub warmup_steps: u64,
    pub total_steps: u64,
    /// The floor the decay ends at (`optim.min_lr`).
    pub min_lr: f64,
}

impl LrSchedule {
    /// `warmup` is a fraction of `total_steps` (the config's `optim.warmup`).
    pub fn new(kind: Schedule, warmup: f64, total_steps: u64, min_lr: f64) -> LrSchedule {
        // The tolerance keeps float noise (0.07 · 100 = 7.000000000000001) from adding a step.
        let warmup_steps = (warmup.max(0.0) * total_steps as f64 - 1e-9).ceil().max(0.0) as u64;
        LrSchedule { kind, warmup_steps, total_steps, min_lr }
    }

    /// The rate of a group of base rate `base` for the step taken after `completed` steps.
    pub fn rate(&self, base: f64, completed: u64) -> f64 {
        let f = self.factor(completed);
        if completed < self.warmup_steps {
            return base * f;
        }
        let floor = self.min_lr.min(base).max(0.0);
        floor + (base - floor) * f
    }

    /// The rate factor of the step taken after `completed` steps.
    pub fn factor(&self, completed: u64) -> f64 {
        let w = self.warmup_steps;
        if completed < w {
            return (completed + 1) as f64 / w as f64;
        }
        let span = self.total_steps.saturating_sub(w).max(1);
        let p = ((completed - w) as f64 / span as f64).min(1.0);
        match self.kind {
            Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
            Schedule::Linear => 1.0 - p,
            Schedule::Constant => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_ramps_from_the_first_step_then_cosine_decays() {
        let s = LrSchedule::new(Schedule::Cosine, 0.1, 100, 0.0);
        assert_eq!(s.warmup_steps, 10);
        assert_eq!(s.factor(0), 0.1);
        assert_eq!(s.factor(9), 1.0);
        assert_eq!(s.factor(10), 1.0);
        assert!((s.factor(55) - 0.5).abs() < 1e-12, "half way through the decay");
        assert!(s.factor(99) > 0.0, "the last step still moves");
        assert_eq!(s.factor(100), 0.0);
        assert_eq!(s.factor(1000), 0.0, "past the end stays at the end");
    }

    #[test]
    fn linear_constant_and_no_warmup() {
        let lin = LrSchedule::new(Schedule::Linear, 0.0, 10, 0.0);
        assert_eq!((lin.warmup_steps, lin.factor(0), lin.factor(5)), (0, 1.0, 0.5));
        let c = LrSchedule::new(Schedule::Constant, 0.03, 2000, 0.0);
        assert_eq!(c.warmup_steps, 60);
        assert_eq!((c.factor(59), c.factor(1999)), (1.0, 1.0));
        assert!((c.factor(29) - 0.5).abs() < 1e-12);
        assert_eq!(LrSchedule::new(Schedule::Constant, 0.07, 100, 0.0).warmup_steps, 7);
    }

    #[test]
    fn min_lr_is_the_floor_of_the_decay_and_never_raises_a_lower_base() {
        let s = LrSchedule::new(Schedule::Cosine, 0.1, 100, 1e-6);
        assert_eq!(s.rate(2e-4, 0), 2e-4 / 10.0, "warmup ramps the base rate");
        assert!((s.rate(2e-4, 10) - 2e-4).abs() < 1e-18);
        assert!((s.rate(2e-4, 100) - 1e-6).abs() < 1e-18, "the decay ends at min_lr");
        assert_eq!(s.rate(5e-7, 100), 5e-7, "a base below min_lr keeps its rate");
    }
}
