//! The embedded backend: rollouts from the model the trainer is training, in-process.
//!
//! Every request's prompt is encoded by the learner's own encoder, so its prompt ids are the
//! learner's by construction (the check a server needs holds trivially). Requests for the same
//! record (a sample's anchor and explorers, whatever their decoding) become one job of the
//! continuous-batching engine: its prompt is prefilled once and each of its samples decodes in
//! a row of its own, `batch_size` rows at a time (more when one record alone has more samples);
//! a request with `n` samples takes `n` rows, sample `j` seeded `seed + j`.

use coordexp_model::generate::{Job, Sample, generate_jobs};
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
        // One job per record (first appearance order): the requests that share its prompt.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            let same = |g: &Vec<usize>| {
                let first = &requests[g[0]];
                std::ptr::eq(first.item, r.item) && first.prompt_ids == r.prompt_ids
            };
            match groups.iter_mut().find(|g| same(g)) {
                Some(g) => g.push(i),
                None => groups.push(vec![i]),
            }
        }
        let inputs = groups
            .iter()
            .map(|g| PromptInputs::of(self.encoder, &self.vision, requests[g[0]].item))
            .collect::<Result<Vec<_>, _>>()
            .map_err(BackendError::Engine)?;
        let configs: Vec<_> = requests
            .iter()
            .map(|r| sampling(&r.decoding, r.max_new_tokens, self.stop_ids.clone()))
            .collect();
        let jobs: Vec<Job<'_>> = groups
            .iter()
            .zip(&inputs)
            .map(|(g, input)| Job {
                prompt: input.prompt(0),
                samples: g
                    .iter()
                    .flat_map(|&i| {
                        let (r, cfg) = (&requests[i], &configs[i]);
                        (0..r.n).map(move |j| Sample { seed: r.seed.wrapping_add(j as u64), cfg })
                    })
                    .collect(),
            })
            .collect();
        let generations = generate_jobs(self.model, &jobs, self.batch_size.max(1))
            .map_err(BackendError::Engine)?;
        let mut out: Vec<Vec<Rollout>> = requests.iter().map(|r| Vec::with_capacity(r.n)).collect();
        for ((g, input), made) in groups.iter().zip(&inputs).zip(generations) {
            let mut made = made.into_iter();
            for &i in g {
                for g in made.by_ref().take(requests[i].n) {
                    out[i].push(Rollout {
                        tokens: g.tokens,
                        logprobs: g.logprobs,
                        stop: g.stop,
                        prompt_ids: input.ids.clone(),
                        weight_version: self.weight_version,
                    });
                }
            }
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
