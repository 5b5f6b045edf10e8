//! coordexp-model: Qwen3-VL on libtorch (through `tch`).
//!
//! For now it owns the tensor runtime facts the rest of the system records (device choice, CUDA
//! availability, thread count); the training-capable model lands here next (issue 6).

pub mod runtime;
