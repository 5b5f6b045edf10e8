//! Converters from public annotation formats to pixel-coordinate JSONL records.
//!
//! Every converter writes records whose objects are in the canonical order of [`crate::order`]
//! and skips nothing without a named counter in its report.

mod coco;

pub use coco::{CocoOptions, CocoReport, GeometryChoice, convert_coco};
