//! Strict YAML config (in progress).
