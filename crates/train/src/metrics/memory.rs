//! The process's resident memory, for the `memory/*` metrics of each log line.
//!
//! Why resident memory: on a CPU every tensor lives in the process's pages, so the resident set
//! and its high-water mark *are* the training's memory (what `bench/memory` compares). The mark
//! is never reset (that would also reset what `getrusage` and `/usr/bin/time` report).
//! Linux only (`/proc/self/status`); elsewhere the metrics are absent.

use std::fs;

/// `(peak so far, current)` resident memory of the process in MiB, when the system reports it.
pub fn peak_and_current_mib() -> Option<(f64, f64)> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_and_the_resident_set_include_a_block_that_is_alive() {
        let block = vec![1u8; 256 << 20];
        let (peak, now) = peak_and_current_mib().expect("Linux reports /proc/self/status");
        std::hint::black_box(&block);
        assert!(now >= 256.0, "the resident set ({now} MiB) holds the 256 MiB block");
        assert!(peak >= now, "the peak ({peak} MiB) is at least the resident set ({now} MiB)");
    }
}
