//! Progress of long work, one grammar for every command: a bar on a terminal, a periodic line
//! on stderr otherwise (logs of batch jobs still show that work moves), nothing with
//! `--no-progress`.
//!
//! Why here: the data layer, evaluation, inference and serving all run long loops, and none of
//! them should decide how progress is shown; they get a [`Progress`] (the user's choice) and
//! start a [`Task`] per loop. A task is `Sync`, so parallel loops count into the same one.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Seconds between two progress lines when stderr is not a terminal, unless
/// `COORDEXP_PROGRESS_SECS` says otherwise (a log that wants more or fewer lines; 0 prints a
/// line per update).
const LINE_EVERY: Duration = Duration::from_secs(10);

fn line_every() -> Duration {
    static EVERY: OnceLock<Duration> = OnceLock::new();
    *EVERY.get_or_init(|| {
        std::env::var("COORDEXP_PROGRESS_SECS")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(LINE_EVERY, Duration::from_secs_f64)
    })
}

/// Whether (and how) a command shows progress; `Copy`, passed down to the code that loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    enabled: bool,
    /// Lines even on a terminal (tests of the line format).
    force_lines: bool,
}

impl Progress {
    /// No progress at all (library callers, tests, `--no-progress`).
    pub const OFF: Progress = Progress { enabled: false, force_lines: false };

    /// Progress as the terminal allows: a bar on a terminal, lines otherwise.
    pub fn new(enabled: bool) -> Progress {
        Progress { enabled, force_lines: false }
    }

    /// Periodic lines whatever stderr is.
    pub fn lines() -> Progress {
        Progress { enabled: true, force_lines: true }
    }

    pub fn enabled(self) -> bool {
        self.enabled
    }

    /// Start counting `label` towards `total` units (`None`: unknown total). `unit` names what
    /// is counted in lines (`images`, `records`, `bytes`).
    pub fn task(self, label: &str, total: Option<u64>, unit: &'static str) -> Task {
        let show = if !self.enabled {
            Show::Off
        } else if !self.force_lines && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            let template = match (total, unit) {
                (Some(_), "bytes") => "{msg} [{bar:30}] {bytes}/{total_bytes} eta {eta}",
                (Some(_), _) => "{msg} [{bar:30}] {pos}/{len} eta {eta}",
                (None, "bytes") => "{spinner} {msg} {bytes}",
                (None, _) => "{spinner} {msg} {pos}",
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            Show::Bar(bar)
        } else {
            // The first line is due one interval after the start.
            Show::Lines { last: Mutex::new(Instant::now()), printed: AtomicU64::new(0) }
        };
        Task {
            label: label.to_string(),
            unit,
            total,
            done: AtomicU64::new(0),
            started: Instant::now(),
            show,
        }
    }
}

enum Show {
    Off,
    Bar(ProgressBar),
    Lines { last: Mutex<Instant>, printed: AtomicU64 },
}

/// One loop's progress (see [`Progress::task`]). Finish it with [`Task::finish`]; a task
/// dropped unfinished (an error) clears its bar without a final line.
pub struct Task {
    label: String,
    unit: &'static str,
    total: Option<u64>,
    done: AtomicU64,
    started: Instant,
    show: Show,
}

impl Task {
    /// A task that shows nothing.
    pub fn off() -> Task {
        Progress::OFF.task("", None, "")
    }

    /// `n` more units done.
    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        match &self.show {
            Show::Off => {}
            Show::Bar(b) => b.inc(n),
            Show::Lines { last, printed } => {
                let now = Instant::now();
                let Ok(mut last) = last.try_lock() else { return };
                if now.duration_since(*last) >= line_every() {
                    *last = now;
                    printed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("{}", self.line(done));
                }
            }
        }
    }

    /// Units done so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// The progress line: `label: 120/400 images (30%), 12.0 images/s, eta 23 s`.
    pub fn line(&self, done: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = done as f64 / secs.max(1e-9);
        let (done_s, rate_s) = if self.unit == "bytes" {
            (mib(done), format!("{:.1} MiB/s", rate / (1 << 20) as f64))
        } else {
            (done.to_string(), format!("{rate:.1} {}/s", self.unit))
        };
        match self.total {
            Some(total) if total > 0 => {
                let total_s = if self.unit == "bytes" {
                    mib(total)
                } else {
                    format!("{total} {}", self.unit)
                };
                let eta = if rate > 0.0 {
                    format!(", eta {:.0} s", total.saturating_sub(done) as f64 / rate)
                } else {
                    String::new()
                };
                format!(
                    "{}: {done_s}/{total_s} ({:.0}%), {rate_s}{eta}",
                    self.label,
                    100.0 * done as f64 / total as f64
                )
            }
            _ => format!("{}: {done_s} {}, {rate_s}", self.label, self.unit),
        }
    }

    /// The work is done: the bar is cleared; in line mode a last line is printed when an
    /// earlier one was (a short task stays silent).
    pub fn finish(&self) {
        match &self.show {
            Show::Off => {}
            Show::Bar(b) => b.finish_and_clear(),
            Show::Lines { printed, .. } => {
                if printed.load(Ordering::Relaxed) > 0 {
                    eprintln!("{} (done in {:.1} s)", self.line(self.done()), self.elapsed());
                }
            }
        }
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Show::Bar(b) = &self.show {
            b.finish_and_clear();
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_off_task_counts_but_shows_nothing_and_lines_state_rate_and_eta() {
        let t = Progress::OFF.task("validate", Some(400), "records");
        t.inc(100);
        t.inc(20);
        assert_eq!(t.done(), 120);
        t.finish();
        let l = Progress::lines().task("resize", Some(400), "images");
        let line = l.line(120);
        assert!(line.starts_with("resize: 120/400 images (30%), "), "{line}");
        assert!(line.contains(" images/s, eta "), "{line}");
        let b = Progress::lines().task("stats", Some(4 << 20), "bytes");
        assert!(b.line(1 << 20).starts_with("stats: 1.0 MiB/4.0 MiB (25%)"), "{}", b.line(1 << 20));
        let u = Progress::lines().task("infer", None, "records");
        assert!(u.line(7).starts_with("infer: 7 records, "), "{}", u.line(7));
    }

    #[test]
    fn a_task_is_shared_by_parallel_workers() {
        let t = Progress::lines().task("images", Some(4000), "images");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..1000).for_each(|_| t.inc(1)));
            }
        });
        assert_eq!(t.done(), 4000);
    }
}
