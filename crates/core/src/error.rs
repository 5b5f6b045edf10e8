//! The one error type every coordexp boundary returns.
//!
//! An error says *what* went wrong, *where* (a `file:line`, a dotted config key, a record index …)
//! and, when we know one, a *hint* with the remedy. Its [`ErrorKind`] decides the process exit
//! code: bad input (usage, config, data) exits 2, a runtime failure exits 1. Keeping this in one
//! small type means the CLI can print every failure in the same two-line layout:
//!
//! ```text
//! error: unknown key `lerning_rate` at configs/demo/stage1.yaml:12 (train.lerning_rate)
//! hint: did you mean `train.learning_rate`?
//! ```

use std::fmt;

/// Who is at fault, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's input is wrong: CLI usage, a config file, a data file. Exit code 2.
    Input,
    /// The input was fine but the work failed (I/O, numerics, a crashed server). Exit code 1.
    Runtime,
}

/// A located, actionable error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    what: String,
    at: Option<String>,
    hint: Option<String>,
    /// Further problems found in the same pass (e.g. every unknown key of a config file), so the
    /// user fixes them in one round instead of one run per error.
    also: Vec<Error>,
}

/// Shorthand used across the workspace.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error in user-supplied input (exit code 2).
    pub fn input(what: impl Into<String>) -> Self {
        Error { kind: ErrorKind::Input, what: what.into(), at: None, hint: None, also: Vec::new() }
    }

    /// A failure while doing valid work (exit code 1).
    pub fn runtime(what: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Runtime,
            what: what.into(),
            at: None,
            hint: None,
            also: Vec::new(),
        }
    }

    /// Combine several problems into one error; `None` when the list is empty.
    pub fn many(errors: Vec<Error>) -> Option<Self> {
        let mut it = errors.into_iter();
        let mut first = it.next()?;
        first.also.extend(it);
        Some(first)
    }

    /// Every problem carried by this error, the first one included.
    pub fn all(&self) -> impl Iterator<Item = &Error> {
        std::iter::once(self).chain(self.also.iter())
    }

    /// Attach the location: `file:line`, a dotted key, `record 17`, …
    #[must_use]
    pub fn at(mut self, at: impl Into<String>) -> Self {
        self.at = Some(at.into());
        self
    }

    /// Attach the remedy.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Attach a hint only if none is set yet (callers higher up may know less than callees).
    #[must_use]
    pub fn or_hint(self, hint: impl Into<String>) -> Self {
        if self.hint.is_some() { self } else { self.hint(hint) }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    pub fn location(&self) -> Option<&str> {
        self.at.as_deref()
    }

    pub fn hint_text(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Process exit code: 2 when any carried problem is an input error, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.all().any(|e| e.kind == ErrorKind::Input) { 2 } else { 1 }
    }

    /// An I/O error on `path`, classified: a missing or unreadable input file is the user's to fix.
    pub fn io(action: &str, path: &std::path::Path, err: &std::io::Error) -> Self {
        let e = match err.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                Error::input(format!("cannot {action} {}: {err}", path.display()))
            }
            _ => Error::runtime(format!("cannot {action} {}: {err}", path.display())),
        };
        match err.kind() {
            std::io::ErrorKind::NotFound => e.hint("check the path (relative paths are resolved from the current directory unless documented otherwise)"),
            std::io::ErrorKind::PermissionDenied => e.hint("check the file permissions"),
            _ => e,
        }
    }
}

impl fmt::Display for Error {
    /// `what at where`; the hint is rendered separately by [`Error::report`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{} at {}", self.what, at),
            None => write!(f, "{}", self.what),
        }
    }
}

impl Error {
    /// The full user-facing report: `error: …` and, when known, `hint: …` on the next line.
    pub fn report(&self) -> String {
        let one = |e: &Error| match &e.hint {
            Some(h) => format!("error: {e}\nhint: {h}"),
            None => format!("error: {e}"),
        };
        let mut out: Vec<String> = self.all().map(one).collect();
        if out.len() > 1 {
            out.push(format!("{} problems found", out.len()));
        }
        out.join("\n")
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors_exit_2_and_runtime_errors_exit_1() {
        assert_eq!(Error::input("x").exit_code(), 2);
        assert_eq!(Error::runtime("x").exit_code(), 1);
    }

    #[test]
    fn report_has_location_and_hint_lines() {
        let e = Error::input("unknown key `a.b`").at("f.yaml:3").hint("did you mean `a.c`?");
        assert_eq!(e.report(), "error: unknown key `a.b` at f.yaml:3\nhint: did you mean `a.c`?");
    }

    #[test]
    fn many_reports_every_problem_and_exits_2_if_any_is_input() {
        let e = Error::many(vec![Error::runtime("a"), Error::input("b").hint("h")]).unwrap();
        assert_eq!(e.report(), "error: a\nerror: b\nhint: h\n2 problems found");
        assert_eq!(e.exit_code(), 2);
        assert!(Error::many(vec![]).is_none());
    }

    #[test]
    fn or_hint_keeps_the_more_specific_hint() {
        let e = Error::input("x").hint("specific").or_hint("generic");
        assert_eq!(e.hint_text(), Some("specific"));
    }
}
