//! A tiny demo setup for scripts and device checks: synthetic data, a fresh model of the test
//! architecture and the demo's configs.
//!
//!   cargo run --release -p coordexp-demo --example prepare -- OUT [TRAIN_IMAGES] [VAL_IMAGES]

use coordexp_demo::{Arch, prepare};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().ok_or("usage: prepare OUT [TRAIN_IMAGES] [VAL_IMAGES]")?);
    let count = |a: Option<String>, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(a.map(|s| s.parse()).transpose()?.unwrap_or(default))
    };
    let train = count(args.next(), 16)?;
    let val = count(args.next(), 2)?;
    let prepared = prepare(&out, train, val, 5, &Arch::TEST)?;
    println!("{}", prepared.config.display());
    Ok(())
}
