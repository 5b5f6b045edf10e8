//! One module per top-level subcommand.

pub mod audit;
pub mod config;
pub mod data;
pub mod demo;
pub mod eval;
pub mod infer;
pub mod inspect;
pub mod model;
pub mod report;
pub mod serve;
pub mod train;
