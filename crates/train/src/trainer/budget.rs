//! Fitting the learning-rate schedule into a wall-clock deadline (the demo's time budget).
//!
//! The step count of a time-budgeted run is planned from a short throughput probe, but the pace
//! of a machine drifts: shared with other jobs it slows down mid-run, and a schedule that the
//! deadline cuts off never anneals (the last, lowest-rate steps are worth the most); freed of
//! them it speeds up, and a schedule that ends early leaves budget unused. So while a deadline
//! is set, the trainer projects the mean wall time per step so far (evaluations and checkpoints
//! included) onto the time left and re-fits the schedule's total: down to the steps that fit
//! whenever the plan no longer fits, up to them only during the first half of the schedule and
//! by at least 5 % (a longer cosine raises the rate again; early on the raise is small). Every
//! re-fit is logged and reported in the run's summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the trainer reads the time: the deadline check, step timing and the projection. Tests
/// inject a clock that advances by a fixed amount per reading, so nothing depends on how fast
/// the machine is.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that starts at a fixed instant and advances by `tick` at every reading.
pub struct TickClock {
    start: Instant,
    tick: Duration,
    readings: AtomicU64,
}

impl TickClock {
    pub fn new(start: Instant, tick: Duration) -> TickClock {
        TickClock { start, tick, readings: AtomicU64::new(0) }
    }
}

impl Clock for TickClock {
    fn now(&self) -> Instant {
        let n = self.readings.fetch_add(1, Ordering::Relaxed);
        self.start + self.tick.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// Steps in this process before the first projection (the first steps are warm-up noise:
/// measured, a projection after 20 steps shrank a schedule by 14 % that later grew back).
const MIN_STEPS: u64 = 50;
/// Shrink only when the projection misses the plan by more than this fraction, so the rate is
/// not nudged every step.
const SLACK: f64 = 0.01;
/// Grow only when the projection exceeds the plan by more than this fraction.
const GROW: f64 = 0.05;
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

    /// The new total step count when the schedule of `total` steps should be re-fitted, after
    /// `step` steps at `now`; `None` while it fits (or too few steps were measured to tell).
    pub fn refit(&self, now: Instant, step: u64, total: u64) -> Option<u64> {
        let done = step.saturating_sub(self.first_step);
        if done < MIN_STEPS || step >= total {
            return None;
        }
        let per_step = now.saturating_duration_since(self.started).as_secs_f64() / done as f64;
        let left = self.deadline.saturating_duration_since(now);
        let fits = step + (MARGIN * left.as_secs_f64() / per_step.max(1e-9)).floor() as u64;
        let (fits_f, total_f) = (fits as f64, total as f64);
        if fits_f < total_f * (1.0 - SLACK) {
            Some(fits.max(step + 1))
        } else if 2 * step < total && fits_f > total_f * (1.0 + GROW) {
            Some(fits)
        } else {
            None
        }
    }
}

/// A re-fitted schedule, for the summary and the log.
pub fn describe_refit(planned: u64, total: u64) -> String {
    let how = if total < planned { "shortened" } else { "lengthened" };
    format!("the schedule was {how} from {planned} to {total} steps to fit the time budget")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, secs: f64) -> Instant {
        start + Duration::from_secs_f64(secs)
    }

    #[test]
    fn a_tick_clock_advances_by_its_tick_per_reading() {
        let t0 = Instant::now();
        let c = TickClock::new(t0, Duration::from_millis(30));
        assert_eq!(c.now(), t0);
        assert_eq!(c.now(), t0 + Duration::from_millis(30));
        assert_eq!(c.now(), t0 + Duration::from_millis(60));
    }

    #[test]
    fn a_run_ahead_of_pace_grows_in_its_first_half_only() {
        let t0 = Instant::now();
        let b = Budget::new(at(t0, 100.0), t0, 0);
        // 100 steps in 10 s: 100 + 0.98 · 90 s / 0.1 s = 982 fit.
        assert_eq!(b.refit(at(t0, 10.0), 100, 500), Some(982));
        assert_eq!(b.refit(at(t0, 10.0), 100, 950), None, "within 5 %");
        assert_eq!(b.refit(at(t0, 10.0), 100, 150), None, "past half of the schedule");
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
        assert_eq!(b.refit(at(t0, 50.0), 1040, 5000), None, "too few steps measured");
        // 100 steps in 50 s after step 1000: 1100 + 0.98 · 50 s / 0.5 s = 1198.
        assert_eq!(b.refit(at(t0, 50.0), 1100, 5000), Some(1198));
    }

    #[test]
    fn past_the_deadline_the_total_is_the_next_step() {
        let t0 = Instant::now();
        let b = Budget::new(at(t0, 10.0), t0, 0);
        assert_eq!(b.refit(at(t0, 30.0), 60, 500), Some(61));
        assert_eq!(b.refit(at(t0, 30.0), 500, 500), None, "already done");
    }
}
