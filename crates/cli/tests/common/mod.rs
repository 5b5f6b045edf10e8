//! What the CLI behaviour tests share: running the built binary and reading its output.

use std::path::Path;
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

/// `torchrun --standalone --nproc-per-node 2 --no-python coordexp train CONFIG` (torchrun from
/// the venv's Python, `COORDEXP_PYTHON_ORACLE`), which must succeed.
#[allow(dead_code)] // not every test binary launches ranks
pub fn torchrun_train(config: &Path) {
    let python = std::env::var("COORDEXP_PYTHON_ORACLE").unwrap_or_else(|_| "python3".into());
    let o = Command::new(python)
        .args(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"])
        .arg("--no-python")
        .arg(env!("CARGO_BIN_EXE_coordexp"))
        .args(["--no-progress", "train", config.to_str().unwrap()])
        .env("COORDEXP_CPU_THREADS", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// True for a metric that depends on what was trained (losses, terms, counters), false for
/// timings, the process's memory and throughputs.
#[allow(dead_code)] // not every test binary compares runs
pub fn is_trained_metric(name: &str) -> bool {
    !name.starts_with("time/")
        && !name.starts_with("memory/")
        && !name.contains("tok/s")
        && !name.contains("per_s")
}
