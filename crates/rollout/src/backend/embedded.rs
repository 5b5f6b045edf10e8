//! The embedded backend: rollouts from the model the trainer is training, in-process.
//!
//! Every request's prompt is encoded by the learner's own encoder, so its prompt ids are the
//! learner's by construction (the check a server needs holds trivially). Requests with equal
//! decoding settings share `generate` calls of at most `batch_size` rows; a request with `n`
//! samples takes `n` rows, sample `j` seeded `seed + j`.

use coordexp_model::generate::{Prompt, generate};
use coordexp_model::model::Qwen3VL;
use coordexp_text::Encoder;

use super::{BackendError, RequestResult, Rollout, RolloutBackend, RolloutRequest, SyncReport};
use crate::inputs::VisionInput;
use crate::predict::{PromptInputs, sampling};

/// Rollouts from an in-process model.
pub struct Embedded<'m> {
    pub model: &'m Qwen3VL,
    pub encoder: &'m Encoder,
    pub vision: VisionInput<'m>,
    pub stop_ids: Vec<i64>,
    /// Rows per `generate` call.
    pub batch_size: usize,
    /// Stamped on every rollout: the trainer sets it to its optimizer step after each update
    /// (the weights are shared, so they are always current).
    pub weight_version: u64,
}

impl RolloutBackend for Embedded<'_> {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn generate(
        &mut self,
        requests: &[RolloutRequest<'_>],
    ) -> Result<Vec<RequestResult>, BackendError> {
        let mut out: Vec<Vec<Rollout>> = requests.iter().map(|r| Vec::with_capacity(r.n)).collect();
        // Rows: (request index, prompt inputs index, seed), grouped by equal settings.
        let inputs = requests
            .iter()
            .map(|r| PromptInputs::of(self.encoder, &self.vision, r.item))
            .collect::<Result<Vec<_>, _>>()
            .map_err(BackendError::Engine)?;
        let mut start = 0;
        while start < requests.len() {
            let key = (&requests[start].decoding, requests[start].max_new_tokens);
            let end = (start..requests.len())
                .find(|&i| (&requests[i].decoding, requests[i].max_new_tokens) != key)
                .unwrap_or(requests.len());
            let cfg = sampling(key.0, key.1, self.stop_ids.clone());
            let rows: Vec<(usize, u64)> =
                (start..end).flat_map(|i| (0..requests[i].n).map(move |j| (i, j as u64))).collect();
            for chunk in rows.chunks(self.batch_size.max(1)) {
                let prompts: Vec<Prompt<'_>> = chunk
                    .iter()
                    .map(|&(i, j)| inputs[i].prompt(requests[i].seed.wrapping_add(j)))
                    .collect();
                let generations =
                    generate(self.model, &prompts, &cfg).map_err(BackendError::Engine)?;
                for (&(i, _), g) in chunk.iter().zip(generations) {
                    out[i].push(Rollout {
                        tokens: g.tokens,
                        logprobs: g.logprobs,
                        stop: g.stop,
                        prompt_ids: inputs[i].ids.clone(),
                        weight_version: self.weight_version,
                    });
                }
            }
            start = end;
        }
        Ok(out.into_iter().map(Ok).collect())
    }

    /// The weights are shared: only the version changes.
    fn sync_weights(
        &mut self,
        _model: &Qwen3VL,
        version: u64,
    ) -> Result<Option<SyncReport>, BackendError> {
        self.weight_version = version;
        Ok(None)
    }
}
