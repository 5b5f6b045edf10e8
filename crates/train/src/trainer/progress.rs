//! What the trainer reports between log steps: the averaged window metrics, throughput, and the
//! progress bar.
//!
//! Each optimizer step contributes its window's loss terms (already means over the window), its
//! rate, gradient norm and token counts; a log step writes their average since the previous log
//! step to `metrics.jsonl` and TensorBoard. The bar (loss, lr, tokens/s, ETA) draws only on a
//! terminal; elsewhere each log step becomes one `info` line instead.

use super::step::StepOutcome;
use crate::metrics::memory;
use crate::objective::LossTerms;
use coordexp_core::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Instant;

/// Sums since the last log step.
///
/// Loss terms are grouped by objective (their name list): a term is averaged over the steps
/// that produced it, so a plan that alternates step kinds logs each kind's terms as the mean
/// of its own steps. Host counters are summed (see [`Interval::take`]).
pub struct Interval {
    steps: u64,
    /// Steps that trained (the denominators of `loss` and `grad_norm`).
    trained: u64,
    loss: f64,
    /// Accumulated terms per objective, with the number of steps that added to each.
    terms: Vec<(LossTerms, u64)>,
    counters: Vec<(String, f64)>,
    lr: f64,
    grad_norm: f64,
    clipped: u64,
    tokens: u64,
    supervised: u64,
    samples: u64,
    started: Instant,
}

impl Interval {
    pub fn new(now: Instant) -> Interval {
        Interval {
            steps: 0,
            trained: 0,
            loss: 0.0,
            terms: Vec::new(),
            counters: Vec::new(),
            lr: 0.0,
            grad_norm: 0.0,
            clipped: 0,
            tokens: 0,
            supervised: 0,
            samples: 0,
            started: now,
        }
    }

    /// Add one optimizer step.
    pub fn add(&mut self, out: StepOutcome, lr: f64) -> Result<()> {
        self.steps += 1;
        if out.trained {
            self.trained += 1;
            self.loss += out.loss;
            self.grad_norm += out.stats.grad_norm;
            self.clipped += u64::from(out.stats.clipped);
        }
        for t in out.terms {
            match self.terms.iter_mut().find(|(acc, _)| acc.names() == t.names()) {
                Some((acc, n)) => {
                    acc.accumulate(&t)?;
                    *n += 1;
                }
                None => self.terms.push((t, 1)),
            }
        }
        for (name, v) in out.counters {
            match self.counters.iter_mut().find(|(n, _)| *n == name) {
                Some((_, acc)) => *acc += v,
                None => self.counters.push((name, v)),
            }
        }
        self.lr = lr;
        self.tokens += out.tokens;
        self.supervised += out.supervised;
        self.samples += out.samples;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.steps == 0
    }

    /// The averaged metrics at `now`, and a fresh interval.
    pub fn take(&mut self, epoch: f64, now: Instant) -> Result<Vec<(String, f64)>> {
        let n = self.steps.max(1) as f64;
        let trained = self.trained.max(1) as f64;
        let secs = now.saturating_duration_since(self.started).as_secs_f64().max(1e-9);
        let loss = if self.trained == 0 { f64::NAN } else { self.loss / trained };
        let mut out: Vec<(String, f64)> = vec![("loss".to_string(), loss)];
        for (t, count) in &self.terms {
            for (k, v) in t.metrics()? {
                out.push((k.to_string(), v / *count as f64));
            }
        }
        // Host counters: `time/*` as seconds per step, the rest summed over the interval; every
        // `<x>_rate_num` / `<x>_rate_den` pair also as `<x>_rate` and every `<x>_sum` /
        // `<x>_count` pair as `<x>_mean` — recomputed from numerator and denominator after
        // summing, never an average of ratios (DESIGN "Stage 2 decisions" 4).
        let counters = std::mem::take(&mut self.counters);
        for (name, v) in &counters {
            let v = if name.starts_with("time/") { v / n } else { *v };
            out.push((name.clone(), v));
        }
        let partner = |suffix: &str, base: &str| {
            counters
                .iter()
                .find(|(k, _)| k.strip_suffix(suffix) == Some(base))
                .map_or(0.0, |(_, d)| *d)
        };
        let ratio = |num: f64, den: f64| if den > 0.0 { num / den } else { 0.0 };
        for (name, num) in &counters {
            if let Some(base) = name.strip_suffix("_rate_num") {
                out.push((format!("{base}_rate"), ratio(*num, partner("_rate_den", base))));
            } else if let Some(base) = name.strip_suffix("_sum")
                && counters.iter().any(|(k, _)| k.strip_suffix("_count") == Some(base))
            {
                out.push((format!("{base}_mean"), ratio(*num, partner("_count", base))));
            }
        }
        out.extend(
            [
                ("lr", self.lr),
                ("grad_norm", self.grad_norm / trained),
                ("clipped_frac", self.clipped as f64 / trained),
                ("tokens_per_s", self.tokens as f64 / secs),
                ("samples_per_s", self.samples as f64 / secs),
                ("supervised_tokens_per_step", self.supervised as f64 / n),
                ("epoch", epoch),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        // The process's resident memory: its peak so far and now.
        if let Some((peak, current)) = memory::peak_and_current_mib() {
            out.push(("memory/peak_rss_mib".to_string(), peak));
            out.push(("memory/rss_mib".to_string(), current));
        }
        *self = Interval::new(now);
        Ok(out)
    }
}

/// The progress bar (hidden off-terminal or when disabled).
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    pub fn new(total: u64, done: u64, enabled: bool) -> Bar {
        let target =
            if enabled { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        let style =
            ProgressStyle::with_template("{spinner} step {pos}/{len} [{bar:30}] {msg} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_position(done);
        Bar { bar }
    }

    /// True when nothing is drawn (not a terminal, or disabled).
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    pub fn step(&self, loss: f64, lr: f64, tokens_per_s: f64) {
        self.bar.set_message(format!("loss {loss:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s"));
        self.bar.inc(1);
    }

    /// A new total step count (the schedule was re-fitted).
    pub fn set_total(&self, total: u64) {
        self.bar.set_length(total);
    }

    /// Print a line above the bar (or to stderr when hidden).
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            tracing::info!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
