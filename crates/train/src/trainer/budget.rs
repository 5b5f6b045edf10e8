//! Fitting the learning-rate schedule into a wall-clock deadline (the demo's time budget).
//!
//! The step count of a time-budgeted run is planned from a short throughput probe, but a shared
//! machine can slow down mid-run; a schedule that the deadline cuts off never anneals, and the
//! last, lowest-rate steps are worth the most. So while a deadline is set, the trainer projects
//! the mean wall time per step so far (evaluations and checkpoints included) onto the time left
//! and, when the planned steps no longer fit, shortens the schedule to the steps that do. The
//! schedule only ever shrinks (raising the total would raise the rate again), and each
//! shortening is logged and counted in the run's summary.

use std::time::Instant;

/// Steps in this process before the first projection (the first steps are warm-up noise).
const MIN_STEPS: u64 = 20;
/// Shrink only when the projection misses the plan by more than this fraction, so the rate is
/// not nudged every step.
const SLACK: f64 = 0.01;
/// The share of the time left that the projection plans with: the pace drifts, and a
/// schedule that ends a little early anneals fully, one cut by the deadline does not.
const MARGIN: f64 = 0.98;

/// The projection state of one run with a deadline.
pub struct Budget {
    deadline: Instant,
    started: Instant,
    first_step: u64,
}

impl Budget {
    /// Start projecting at `now`, before optimizer step `step + 1`.
    pub fn new(deadline: Instant, now: Instant, step: u64) -> Budget {
        Budget { deadline, started: now, first_step: step }
    }

    /// The new total step count when `total` no longer fits before the deadline, after `step`
    /// steps at `now`; `None` while it fits (or too few steps were measured to tell).
    pub fn refit(&self, now: Instant, step: u64, total: u64) -> Option<u64> {
        let done = step.saturating_sub(self.first_step);
        if done < MIN_STEPS || step >= total {
            return None;
        }
        let per_step = now.saturating_duration_since(self.started).as_secs_f64() / done as f64;
        let left = self.deadline.saturating_duration_since(now);
        let fits = step + (MARGIN * left.as_secs_f64() / per_step.max(1e-9)).floor() as u64;
        ((fits as f64) < total as f64 * (1.0 - SLACK)).then(|| fits.max(step + 1))
    }
}

/// How far a schedule was shortened (for the summary and the log).
pub fn describe_shortened(planned: u64, total: u64) -> String {
    format!("the schedule was shortened from {planned} to {total} steps to fit the time budget")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(start: Instant, secs: f64) -> Instant {
        start + Duration::from_secs_f64(secs)
    }

    #[test]
    fn a_run_on_pace_keeps_its_schedule() {
        let t0 = Instant::now();
        let b = Budget::new(at(t0, 100.0), t0, 0);
        // 50 steps in 10 s: 50 + 0.98 · 90 s / 0.2 s = 491 fit.
        assert_eq!(b.refit(at(t0, 10.0), 50, 480), None);
        assert_eq!(b.refit(at(t0, 10.0), 50, 495), None, "within the slack");
        assert_eq!(b.refit(at(t0, 10.0), 50, 500), Some(491));
    }

    #[test]
    fn a_slowed_run_shrinks_to_the_steps_that_fit() {
        let t0 = Instant::now();
        let b = Budget::new(at(t0, 100.0), t0, 0);
        // 50 steps in 20 s (half the planned pace): 50 + 0.98 · 80 s / 0.4 s = 246.
        assert_eq!(b.refit(at(t0, 20.0), 50, 500), Some(246));
    }

    #[test]
    fn resumed_steps_and_the_first_steps_are_not_projected() {
        let t0 = Instant::now();
        let b = Budget::new(at(t0, 100.0), t0, 1000);
        assert_eq!(b.refit(at(t0, 50.0), 1010, 5000), None, "too few steps measured");
        // 100 steps in 50 s after step 1000: 1100 + 0.98 · 50 s / 0.5 s = 1198.
        assert_eq!(b.refit(at(t0, 50.0), 1100, 5000), Some(1198));
    }

    #[test]
    fn past_the_deadline_the_total_is_the_next_step() {
        let t0 = Instant::now();
        let b = Budget::new(at(t0, 10.0), t0, 0);
        assert_eq!(b.refit(at(t0, 30.0), 40, 500), Some(41));
        assert_eq!(b.refit(at(t0, 30.0), 500, 500), None, "already done");
    }
}
