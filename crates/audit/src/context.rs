//! What every check shares: the config with its origins, the options, progress lines.

use crate::AuditOptions;
use crate::report::Setting;
use coordexp_core::config::{Config, Loaded, origin_of};
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct Ctx<'a> {
    pub loaded: &'a Loaded,
    pub cfg: &'a Config,
    pub opts: &'a AuditOptions,
    pub progress: Progress,
    values: Value,
}

impl<'a> Ctx<'a> {
    pub fn new(loaded: &'a Loaded, opts: &'a AuditOptions) -> Ctx<'a> {
        Ctx {
            loaded,
            cfg: &loaded.config,
            opts,
            progress: Progress::new(opts.progress),
            // Plain data structs always serialize; a failure would only blank the values shown.
            values: serde_json::to_value(&loaded.config).unwrap_or(Value::Null),
        }
    }

    /// The resolved value of dotted `key` and where it comes from (`file:line` or `default`).
    pub fn setting(&self, key: &str) -> Setting {
        let value = key
            .split('.')
            .try_fold(&self.values, |v, k| v.get(k))
            .map(show_value)
            .unwrap_or_else(|| "(not a key)".into());
        let origin = match origin_of(&self.loaded.tree, key) {
            Some(o) => o.to_string(),
            None => "default".into(),
        };
        Setting { key: key.into(), value, origin }
    }

    /// [`Ctx::setting`] for each key.
    pub fn settings(&self, keys: &[&str]) -> Vec<Setting> {
        keys.iter().map(|k| self.setting(k)).collect()
    }

    /// `key = value (origin)`, for evidence and messages.
    pub fn describe(&self, key: &str) -> String {
        let s = self.setting(key);
        format!("{} = {} ({})", s.key, s.value, s.origin)
    }
}

/// Characters of a value shown before it is cut (a long inline prompt would swamp a report).
const SHOWN_CHARS: usize = 160;

/// A JSON value as a config reader would write it: strings bare, the rest as JSON; a long
/// value is cut, with its full length said.
fn show_value(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text,
    }
}

/// Progress lines on stderr (`audit: …`), rate-limited; silent when off.
pub(crate) struct Progress {
    on: bool,
    last: Mutex<Instant>,
}

const EVERY: Duration = Duration::from_secs(2);

impl Progress {
    fn new(on: bool) -> Progress {
        Progress { on, last: Mutex::new(Instant::now()) }
    }

    /// Always printed (when on): the start of a phase.
    pub fn note(&self, msg: &str) {
        if self.on {
            eprintln!("audit: {msg}");
            if let Ok(mut last) = self.last.lock() {
                *last = Instant::now();
            }
        }
    }

    /// Printed at most every two seconds: `what done/total` (`what done` when `total` is 0).
    pub fn tick(&self, what: &str, done: usize, total: usize) {
        if !self.on {
            return;
        }
        let Ok(mut last) = self.last.lock() else { return };
        if last.elapsed() >= EVERY {
            *last = Instant::now();
            if total == 0 {
                eprintln!("audit: {what} {done}");
            } else {
                eprintln!("audit: {what} {done}/{total}");
            }
        }
    }
}
