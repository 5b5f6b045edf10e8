//! The live checks, one module each.

pub(crate) mod eval_join;
pub(crate) mod images;
pub(crate) mod lengths;
pub mod packing;
pub(crate) mod records;
pub(crate) mod stage2;
pub(crate) mod template;
pub(crate) mod vocab;
