//! coordexp-core: the pure-data heart of coordexp.
//!
//! It owns the vocabulary every other crate speaks — errors, geometry and norm1000 coordinates,
//! the JSONL record contract, CoordJSON, linear assignment, and the strict YAML config — and it
//! never depends on a tensor library, so its tests run in seconds.

pub mod assign;
pub mod config;
pub mod coordjson;
pub mod device;
pub mod digest;
pub mod error;
pub mod geometry;
pub mod norm1000;
pub mod progress;
pub mod prompt;
pub mod record;
pub mod seed;

pub use error::{Error, ErrorKind, Result};
