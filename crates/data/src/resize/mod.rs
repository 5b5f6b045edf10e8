//! Offline smart resize: the size rule and the materialisation of resized datasets.

mod policy;

pub use policy::{MAX_ASPECT_RATIO, ResizePolicy};
