//! Rollout backends: where stage 2's generations come from.
//!
//! A backend turns requests (a record, the learner's prompt ids, decoding settings, a seed and
//! a sample count `n`) into rollouts (generated token ids, their log-probs, why generation
//! stopped, the prompt ids the backend actually used and the weight version that produced
//! them). The trainer does not care whether the model runs in-process ([`Embedded`]) or behind
//! an HTTP server; it compares the backend's prompt ids with its own encoding and the weight
//! version with its own, and turns every [`BackendError`] into a counted, deterministic
//! fallback or a retry (`BackendError::retryable`).
//!
//! Seeds: sample `j` of a request seeded `s` draws from the stream seeded `s + j` (wrapping),
//! so a request's samples differ from each other and never depend on batching.

mod embedded;
pub mod http;

pub use embedded::Embedded;
pub use http::{HttpBackend, HttpOptions, Protocol, backend_from_config};

use coordexp_core::Error;
use coordexp_core::config::schema::Decoding;
use coordexp_model::generate::StopReason;
use coordexp_model::model::Qwen3VL;
use std::fmt;

use crate::split::Item;

/// One prompt to roll out `n` times.
#[derive(Clone)]
pub struct RolloutRequest<'a> {
    /// The record: its pixels (embedded engine) and image paths (servers).
    pub item: &'a Item,
    /// The learner's encoding of the generation prompt; servers must use exactly these ids.
    pub prompt_ids: &'a [i64],
    pub decoding: Decoding,
    pub max_new_tokens: usize,
    /// Sample `j` uses the stream seeded `seed + j`.
    pub seed: u64,
    /// Samples of this prompt (≥ 1).
    pub n: usize,
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub tokens: Vec<i64>,
    /// Raw-model log-probability of each token.
    pub logprobs: Vec<f32>,
    pub stop: StopReason,
    /// The prompt ids the backend generated from (compared with the learner's).
    pub prompt_ids: Vec<i64>,
    /// The weights that produced this rollout (the trainer's optimizer step count at sync).
    pub weight_version: u64,
}

/// Why a backend call failed.
#[derive(Debug, Clone)]
pub enum BackendError {
    /// No complete answer within the deadline.
    Timeout { seconds: f64 },
    /// Connection refused, reset or dropped.
    Transport(String),
    /// The server answered with a non-success HTTP status.
    Status { code: u16, body: String },
    /// The server answered 200 with something that is not a valid answer (malformed JSON,
    /// wrong item count, missing token ids).
    Protocol(String),
    /// The in-process engine failed (e.g. out of memory); not a transport problem.
    Engine(Error),
    /// The server answered with weights other than the last synced ones (e.g. it restarted
    /// with its base weights) and a re-sync did not fix it.
    StaleWeights { expected: u64, got: u64 },
}

impl BackendError {
    /// True when the same request may succeed if sent again: timeouts, transport errors and
    /// 5xx statuses. A 4xx, a protocol violation or an engine failure would fail again.
    pub fn retryable(&self) -> bool {
        match self {
            BackendError::Timeout { .. } | BackendError::Transport(_) => true,
            BackendError::Status { code, .. } => *code >= 500,
            BackendError::Protocol(_)
            | BackendError::Engine(_)
            | BackendError::StaleWeights { .. } => false,
        }
    }

    /// The short name used in counters (`rollout/backend_error/<kind>`).
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Timeout { .. } => "timeout",
            BackendError::Transport(_) => "transport",
            BackendError::Status { .. } => "status",
            BackendError::Protocol(_) => "protocol",
            BackendError::Engine(_) => "engine",
            BackendError::StaleWeights { .. } => "stale_weights",
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Timeout { seconds } => write!(f, "no answer within {seconds} s"),
            BackendError::Transport(why) => write!(f, "transport error: {why}"),
            BackendError::Status { code, body } => write!(f, "HTTP {code}: {body}"),
            BackendError::Protocol(why) => write!(f, "invalid answer: {why}"),
            BackendError::Engine(e) => write!(f, "generation failed: {}", e.report()),
            BackendError::StaleWeights { expected, got } => write!(
                f,
                "the server generated with weight version {got}, not the synced version {expected}"
            ),
        }
    }
}

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Error {
        match e {
            BackendError::Engine(e) => e,
            other => Error::runtime(format!("rollout backend: {other}")),
        }
    }
}

/// The `n` rollouts of one request, or why that request failed for good (after the backend's
/// own retries): the trainer falls back deterministically for it and counts the failure.
pub type RequestResult = Result<Vec<Rollout>, BackendError>;

/// What one weight sync cost.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncReport {
    pub version: u64,
    /// Seconds writing the safetensors directory.
    pub save_s: f64,
    /// Seconds until every server had loaded it (the slowest server).
    pub reload_s: f64,
    pub servers: usize,
}

/// Where rollouts come from.
pub trait RolloutBackend {
    /// A name for logs and the manifest (`embedded`, `openai`, `swift`).
    fn name(&self) -> &'static str;

    /// One result per request, in request order. An `Err` of the whole call means the backend
    /// cannot work at all (e.g. the in-process engine failed) and training must stop; a failed
    /// request is an `Err` in its own slot.
    fn generate(
        &mut self,
        requests: &[RolloutRequest<'_>],
    ) -> Result<Vec<RequestResult>, BackendError>;

    /// Make later rollouts come from `model`'s current weights, called `version` (the
    /// trainer's optimizer step): call it after each optimizer step. The embedded backend
    /// shares the weights and only records the version (`Ok(None)`); an HTTP backend writes
    /// the safetensors to its sync directory and has every server load them (`Ok(Some(cost))`).
    /// An `Err` means the servers may still hold older weights.
    fn sync_weights(
        &mut self,
        model: &Qwen3VL,
        version: u64,
    ) -> Result<Option<SyncReport>, BackendError> {
        let _ = (model, version);
        Ok(None)
    }

    /// What the backend has done so far, as cumulative named counts (HTTP calls, retries,
    /// bisections, re-syncs); the trainer logs their increase per step. None by default.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_timeouts_and_server_errors_retry_and_the_rest_do_not() {
        let status = |code| BackendError::Status { code, body: String::new() };
        assert!(BackendError::Timeout { seconds: 1.0 }.retryable());
        assert!(BackendError::Transport("reset".into()).retryable());
        assert!(status(500).retryable() && status(503).retryable());
        assert!(!status(400).retryable() && !status(404).retryable());
        assert!(!BackendError::Protocol("wrong count".into()).retryable());
        assert!(!BackendError::Engine(Error::runtime("oom")).retryable());
        let stale = BackendError::StaleWeights { expected: 3, got: 0 };
        assert!(!stale.retryable());
        assert_eq!(stale.kind(), "stale_weights");
        assert!(stale.to_string().contains("version 0, not the synced version 3"));
    }
}
