//! What the CLI behaviour tests share: running the built binary and reading its output.

use std::process::{Command, Output};

/// Run `coordexp ARGS` with one libtorch thread (tests run in parallel).
pub fn coordexp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coordexp"))
        .args(args)
        .env("COORDEXP_CPU_THREADS", "1")
        .output()
        .unwrap()
}

/// Standard output and error together.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
