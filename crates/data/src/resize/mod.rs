//! Offline smart resize: the size rule ([`ResizePolicy`]) and the materialisation of a resized
//! dataset ([`resize_dataset`]).

mod materialize;
mod policy;

pub use materialize::{JPEG_QUALITY, ResizeJob, ResizeReport, resize_dataset};
pub use policy::{MAX_ASPECT_RATIO, ResizePolicy};
