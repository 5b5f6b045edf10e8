//! Test-only fault injection for `coordexp serve` (a testing aid, not a feature).
//!
//! Why in the server: the HTTP rollout backends must survive a misbehaving server (a timeout, a
//! 5xx, a malformed or short answer, foreign prompt ids, stale weights, a crash), and the only
//! honest test of that is a real server that misbehaves on cue. The faults are read from the
//! environment variable `COORDEXP_SERVE_FAULTS` only when it is set (or given to
//! [`super::ServeOptions::faults`] by an in-process test); an unset variable costs nothing.
//!
//! Grammar: comma-separated rules `ACTION[@WHEN]`, applied to generation requests
//! (`POST /v1/chat/completions`, `POST /infer/`) counted from 1 in arrival order:
//!
//! | action | effect |
//! |---|---|
//! | `delay:DUR` | sleep `DUR` (`500ms`, `2s`) before the request is queued (its deadline runs) |
//! | `hold:DUR` | once queued, keep the queue place `DUR` before waiting (fills the queue) |
//! | `status:CODE` | answer `CODE` with a JSON error instead of generating |
//! | `malformed` | answer 200 with a truncated JSON body |
//! | `count` | answer one item (infer) / one choice (chat) too few |
//! | `prompt_ids` | answer with the last prompt id changed |
//! | `version:N` | report weight version `N` instead of the served one |
//! | `crash` | exit the process at once (code 86): every open connection is reset |
//!
//! `WHEN`: `K` (the K-th request), `K-M` (K to M), `K+` (K and later); no `@` means every
//! request. Example: `COORDEXP_SERVE_FAULTS=status:500@1-2,delay:3s@5,crash@9`.

use coordexp_core::{Error, Result};
use std::time::Duration;

/// What a fault does to one generation request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Delay(Duration),
    Hold(Duration),
    Status(u16),
    Malformed,
    Count,
    PromptIds,
    Version(u64),
    Crash,
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    fault: Fault,
    first: u64,
    last: u64,
}

/// Parsed fault rules (empty: no fault).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    rules: Vec<Rule>,
}

/// The environment variable the CLI reads.
pub const FAULTS_ENV: &str = "COORDEXP_SERVE_FAULTS";

impl Faults {
    /// No fault.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// The rules of `COORDEXP_SERVE_FAULTS`, or none when it is unset.
    pub fn from_env() -> Result<Faults> {
        match std::env::var(FAULTS_ENV) {
            Ok(v) => Faults::parse(&v).map_err(|e| e.at(FAULTS_ENV)),
            Err(_) => Ok(Faults::none()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Parse the rule grammar of the module docs.
    pub fn parse(text: &str) -> Result<Faults> {
        let mut rules = Vec::new();
        for raw in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (action, when) = match raw.split_once('@') {
                Some((a, w)) => (a, Some(w)),
                None => (raw, None),
            };
            let (first, last) = match when {
                None => (1, u64::MAX),
                Some(w) => parse_when(w).ok_or_else(|| bad(raw, "WHEN is K, K-M or K+"))?,
            };
            let (name, arg) = match action.split_once(':') {
                Some((n, a)) => (n, Some(a)),
                None => (action, None),
            };
            let fault = match (name, arg) {
                ("delay", Some(d)) => Fault::Delay(
                    parse_duration(d).ok_or_else(|| bad(raw, "a delay is 500ms or 2s"))?,
                ),
                ("hold", Some(d)) => {
                    Fault::Hold(parse_duration(d).ok_or_else(|| bad(raw, "a hold is 500ms or 2s"))?)
                }
                ("status", Some(c)) => Fault::Status(
                    c.parse::<u16>()
                        .ok()
                        .filter(|c| (400..600).contains(c))
                        .ok_or_else(|| bad(raw, "a status is 400..599"))?,
                ),
                ("version", Some(v)) => {
                    Fault::Version(v.parse().map_err(|_| bad(raw, "a version is an integer"))?)
                }
                ("malformed", None) => Fault::Malformed,
                ("count", None) => Fault::Count,
                ("prompt_ids", None) => Fault::PromptIds,
                ("crash", None) => Fault::Crash,
                _ => return Err(bad(raw, "unknown action")),
            };
            rules.push(Rule { fault, first, last });
        }
        Ok(Faults { rules })
    }

    /// The faults of the `k`-th generation request (1-based), in rule order.
    pub fn for_request(&self, k: u64) -> Vec<Fault> {
        self.rules.iter().filter(|r| r.first <= k && k <= r.last).map(|r| r.fault.clone()).collect()
    }
}

fn bad(rule: &str, why: &str) -> Error {
    Error::input(format!("bad fault rule `{rule}`: {why}")).hint(
        "rules are ACTION[@WHEN] separated by commas: delay:500ms, hold:1s, status:500, malformed, count, prompt_ids, version:N, crash; WHEN is K, K-M or K+",
    )
}

fn parse_when(w: &str) -> Option<(u64, u64)> {
    if let Some(k) = w.strip_suffix('+') {
        return Some((k.parse().ok()?, u64::MAX));
    }
    if let Some((a, b)) = w.split_once('-') {
        let (a, b) = (a.parse().ok()?, b.parse().ok()?);
        return (a <= b).then_some((a, b));
    }
    let k = w.parse().ok()?;
    Some((k, k))
}

fn parse_duration(d: &str) -> Option<Duration> {
    if let Some(ms) = d.strip_suffix("ms") {
        return ms.parse::<u64>().ok().map(Duration::from_millis);
    }
    let s = d.strip_suffix('s')?.parse::<f64>().ok()?;
    (0.0..1e6).contains(&s).then(|| Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_select_requests_by_number() {
        let f = Faults::parse("status:500@1-2, delay:1500ms@3, crash@9+, malformed").unwrap();
        assert_eq!(f.for_request(1), vec![Fault::Status(500), Fault::Malformed]);
        assert_eq!(
            f.for_request(3),
            vec![Fault::Delay(Duration::from_millis(1500)), Fault::Malformed]
        );
        assert_eq!(f.for_request(10), vec![Fault::Crash, Fault::Malformed]);
        assert!(Faults::parse("").unwrap().is_empty());
        assert_eq!(
            Faults::parse("version:7@2,count@4,prompt_ids@5,delay:2s").unwrap().for_request(2),
            vec![Fault::Version(7), Fault::Delay(Duration::from_secs(2))]
        );
    }

    #[test]
    fn bad_rules_name_the_rule_and_the_grammar() {
        for bad in ["explode", "status:200", "delay:soon", "crash@x", "count@5-2", "version:x"] {
            let e = Faults::parse(bad).unwrap_err();
            assert!(e.what().contains(bad), "{bad}: {}", e.what());
            assert!(e.hint_text().unwrap().contains("ACTION[@WHEN]"));
        }
    }
}
