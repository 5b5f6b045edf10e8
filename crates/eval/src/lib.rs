//! coordexp-eval: evaluation of detection-as-text models.
//!
//! COCO AP/AR comes from the `hotcoco` engine (pycocotools-exact); this crate owns what a model
//! that *writes* its detections needs around it.
//!
//! - [`coco`]: run the engine on COCO files or in-memory datasets, report the 12 statistics in the
//!   pycocotools layout.

pub mod coco;
pub mod f1;
pub mod mapping;
pub mod preds;
