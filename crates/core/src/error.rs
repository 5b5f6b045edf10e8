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
}

/// Shorthand used across the workspace.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error in user-supplied input (exit code 2).
    pub fn input(what: impl Into<String>) -> Self {
        Error { kind: ErrorKind::Input, what: what.into(), at: None, hint: None }
    }

    /// A failure while doing valid work (exit code 1).
    pub fn runtime(what: impl Into<String>) -> Self {
        Error { kind: ErrorKind::Runtime, what: what.into(), at: None, hint: None }
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

    /// Process exit code for this error: 2 for input errors, 1 for runtime failures.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::Input => 2,
            ErrorKind::Runtime => 1,
        }
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
        match &self.hint {
            Some(h) => format!("error: {self}\nhint: {h}"),
            None => format!("error: {self}"),
        }
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
    fn or_hint_keeps_the_more_specific_hint() {
        let e = Error::input("x").hint("specific").or_hint("generic");
        assert_eq!(e.hint_text(), Some("specific"));
    }
}
