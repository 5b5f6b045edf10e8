//! Batched, KV-cached autoregressive generation for inference and embedded rollouts.
//!
//! Prompts of different lengths are left-padded into one batch; padding is masked out of every
//! attention call (a padded query still sees itself, so no row is fully masked and no NaN can
//! appear). Each prompt brings its own mRoPE position ids (computed by the text crate exactly
//! as for training); the new tokens continue from `max(prompt positions) + 1` on all three axes,
//! which is how transformers continues after an image.
//!
//! Token choice follows transformers' processor order — repetition penalty, then temperature,
//! top-k, top-p — and runs on the host in f64 with a SplitMix64 stream seeded by each prompt's
//! own seed, so a seed gives the same tokens on CPU and GPU and regardless of which other
//! prompts share the batch. The returned log-probability of each token is taken from the *raw* model distribution
//! (log-softmax of the unprocessed logits), the quantity confidence scores are built from.

use coordexp_core::Error;
use coordexp_core::seed::SplitMix64;
use tch::{Device, Kind, Tensor};

use crate::attention::AttentionLayout;
use crate::model::{ForwardInput, Qwen3VL};
use crate::text::cache::KvCache;
use crate::vision::preprocess::ImageBatch;

/// How tokens are chosen and when generation ends.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// 0 means greedy (argmax, first index on ties); otherwise logits are divided by it.
    pub temperature: f64,
    /// Nucleus sampling mass in (0, 1]; 1 disables it.
    pub top_p: f64,
    /// Keep the k most likely tokens; 0 disables it.
    pub top_k: usize,
    /// > 1 discourages tokens already in the prompt or the output; 1 disables it.
    pub repetition_penalty: f64,
    pub max_new_tokens: usize,
    /// Generation of a prompt ends after emitting one of these (e.g. `<|im_end|>`).
    pub stop_ids: Vec<i64>,
}

impl SamplingConfig {
    pub fn greedy(max_new_tokens: usize, stop_ids: Vec<i64>) -> Self {
        SamplingConfig {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            max_new_tokens,
            stop_ids,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |what: String| Err(Error::input(what).at("sampling config"));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature {} must be ≥ 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!("repetition_penalty {} must be > 0", self.repetition_penalty));
        }
        Ok(())
    }
}

/// One prompt: its ids, its mRoPE position ids [3|4, L], its images (in pad-token order) and
/// the seed of its random stream (used only when sampling).
#[derive(Debug)]
pub struct Prompt<'a> {
    pub ids: &'a [i64],
    pub position_ids: &'a Tensor,
    pub images: Option<&'a ImageBatch>,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop id was emitted (it is the last token).
    StopToken,
    MaxNewTokens,
}

/// What one prompt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub tokens: Vec<i64>,
    /// Raw-model log-probability of each token.
    pub logprobs: Vec<f32>,
    pub stop: StopReason,
}

/// Generate continuations for a batch of prompts.
pub fn generate(
    model: &Qwen3VL,
    prompts: &[Prompt<'_>],
    cfg: &SamplingConfig,
) -> Result<Vec<Generation>, Error> {
    cfg.validate()?;
    let device = model.device();
    let b = prompts.len() as i64;
    if b == 0 || cfg.max_new_tokens == 0 {
        return Ok(prompts
            .iter()
            .map(|_| Generation {
                tokens: vec![],
                logprobs: vec![],
                stop: StopReason::MaxNewTokens,
            })
            .collect());
    }
    let l = prompts.iter().map(|p| p.ids.len()).max().unwrap_or(0) as i64;
    if prompts.iter().any(|p| p.ids.is_empty()) {
        return Err(Error::input("an empty prompt cannot be continued"));
    }
    let capacity = l + cfg.max_new_tokens as i64;
    // A harmless filler for padded slots: any id that is not an image pad.
    let pad_id = if model.config().image_token_id == 0 { 1 } else { 0 };

    let mut ids = vec![pad_id; (b * l) as usize];
    let mut valid = vec![false; (b * capacity) as usize];
    let mut rows = Vec::with_capacity(prompts.len());
    let mut next_pos = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let n = p.ids.len() as i64;
        let off = (i as i64 * l + l - n) as usize;
        ids[off..off + n as usize].copy_from_slice(p.ids);
        let vrow = i * capacity as usize;
        valid[vrow + (l - n) as usize..vrow + capacity as usize].fill(true);
        let s = p.position_ids.size();
        if s.len() != 2 || (s[0] != 3 && s[0] != 4) || s[1] != n {
            return Err(Error::input(format!(
                "prompt {i}: position_ids must be [3 or 4, {n}], got {s:?}"
            )));
        }
        let pos = p.position_ids.narrow(0, s[0] - 3, 3).to_kind(Kind::Int64).to_device(Device::Cpu);
        next_pos.push(pos.max().int64_value(&[]) + 1);
        rows.push(Tensor::cat(&[Tensor::zeros([3, l - n], (Kind::Int64, Device::Cpu)), pos], 1));
    }
    let positions = Tensor::stack(&rows, 1).to_device(device); // [3, B, L]
    let ids_t = Tensor::from_slice(&ids).view([b, l]).to_device(device);
    let valid_t = Tensor::from_slice(&valid).view([b, capacity]).to_device(device);
    let parts: Vec<ImageBatch> = prompts
        .iter()
        .filter_map(|p| {
            p.images.map(|im| ImageBatch {
                patches: im.patches.shallow_clone(),
                grid_thw: im.grid_thw.clone(),
            })
        })
        .collect();
    let images = ImageBatch::concat(&parts);

    let _guard = tch::no_grad_guard();
    let mut cache = KvCache::new(&model.config().text, b, capacity, model.kind(), device);
    let prefill_mask = {
        let q = Tensor::arange(l, (Kind::Int64, device));
        let causal = q.unsqueeze(0).le_tensor(&q.unsqueeze(1)); // [L, L] j ≤ i
        let keys = valid_t.narrow(1, 0, l).view([b, 1, 1, l]);
        let diag = Tensor::eye(l, (Kind::Bool, device));
        causal.logical_and(&keys).logical_or(&diag).view([b, 1, l, l])
    };
    let layout = AttentionLayout::Masked(prefill_mask);
    let input = ForwardInput {
        input_ids: &ids_t,
        position_ids: &positions,
        layout: &layout,
        images: images.as_ref(),
        inputs_embeds: None,
    };
    let hidden = model.forward_inner(&input, Some(&mut cache))?;
    let mut logits = model.logits(&hidden.narrow(1, l - 1, 1)).squeeze_dim(1);

    let mut samplers: Vec<RowSampler> =
        prompts.iter().map(|p| RowSampler::new(cfg, p.seed, p.ids)).collect();
    let mut out: Vec<Generation> = prompts
        .iter()
        .map(|_| Generation { tokens: vec![], logprobs: vec![], stop: StopReason::MaxNewTokens })
        .collect();
    let mut done = vec![false; prompts.len()];
    for step in 0..cfg.max_new_tokens as i64 {
        let host = logits.to_kind(Kind::Float).to_device(Device::Cpu);
        let mut chosen = Vec::with_capacity(prompts.len());
        for (i, sampler) in samplers.iter_mut().enumerate() {
            if done[i] {
                chosen.push(pad_id);
                continue;
            }
            let row: Vec<f32> = Vec::try_from(host.get(i as i64))
                .map_err(|e| Error::runtime(format!("cannot read logits: {e}")))?;
            let (tok, lp) = sampler.choose(&row);
            out[i].tokens.push(tok);
            out[i].logprobs.push(lp);
            if cfg.stop_ids.contains(&tok) {
                out[i].stop = StopReason::StopToken;
                done[i] = true;
            }
            chosen.push(tok);
        }
        if done.iter().all(|&d| d) || step + 1 == cfg.max_new_tokens as i64 {
            break;
        }
        let step_ids = Tensor::from_slice(&chosen).view([b, 1]).to_device(device);
        let pos: Vec<i64> = next_pos.iter().map(|p| p + step).collect();
        let step_pos =
            Tensor::from_slice(&pos).view([1, b, 1]).expand([3, b, 1], false).to_device(device);
        let t = cache.len() + 1;
        let layout = AttentionLayout::Masked(valid_t.narrow(1, 0, t).view([b, 1, 1, t]));
        let input = ForwardInput {
            input_ids: &step_ids,
            position_ids: &step_pos,
            layout: &layout,
            images: None,
            inputs_embeds: None,
        };
        logits = model.logits(&model.forward_inner(&input, Some(&mut cache))?).squeeze_dim(1);
    }
    Ok(out)
}

/// Token choice for one prompt: its penalty history and its random stream.
struct RowSampler<'c> {
    cfg: &'c SamplingConfig,
    rng: SplitMix64,
    /// Tokens seen so far (prompt + output), for the repetition penalty.
    seen: std::collections::BTreeSet<i64>,
}

impl<'c> RowSampler<'c> {
    fn new(cfg: &'c SamplingConfig, seed: u64, prompt: &[i64]) -> Self {
        let seen = if cfg.repetition_penalty != 1.0 {
            prompt.iter().copied().collect()
        } else {
            Default::default()
        };
        RowSampler { cfg, rng: SplitMix64::new(seed), seen }
    }

    /// Pick the next token from raw logits; returns it with its raw log-probability.
    fn choose(&mut self, raw: &[f32]) -> (i64, f32) {
        let cfg = self.cfg;
        let mut s: Vec<f64> = raw.iter().map(|&x| x as f64).collect();
        if cfg.repetition_penalty != 1.0 {
            for &t in &self.seen {
                if let Some(x) = s.get_mut(t as usize) {
                    *x = if *x < 0.0 {
                        *x * cfg.repetition_penalty
                    } else {
                        *x / cfg.repetition_penalty
                    };
                }
            }
        }
        let tok = if cfg.temperature == 0.0 { argmax(&s) } else { self.sample(&mut s) };
        if cfg.repetition_penalty != 1.0 {
            self.seen.insert(tok as i64);
        }
        (tok as i64, log_softmax_at(raw, tok))
    }

    fn sample(&mut self, s: &mut [f64]) -> usize {
        let cfg = self.cfg;
        s.iter_mut().for_each(|x| *x /= cfg.temperature);
        if cfg.top_k > 0 && cfg.top_k < s.len() {
            let mut sorted: Vec<f64> = s.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[cfg.top_k - 1];
            s.iter_mut().filter(|x| **x < kth).for_each(|x| *x = f64::NEG_INFINITY);
        }
        if cfg.top_p < 1.0 {
            // Drop the least likely tokens whose cumulative mass stays ≤ 1 − top_p; never the top one.
            let probs = softmax(s);
            let mut order: Vec<usize> = (0..s.len()).collect();
            order.sort_by(|&a, &b| s[a].total_cmp(&s[b]));
            let mut cum = 0.0;
            for &i in &order[..order.len() - 1] {
                cum += probs[i];
                if cum > 1.0 - cfg.top_p {
                    break;
                }
                s[i] = f64::NEG_INFINITY;
            }
        }
        let probs = softmax(s);
        let u = self.rng.unit();
        let mut cum = 0.0;
        let mut last = argmax(s);
        for (i, p) in probs.iter().enumerate() {
            if *p > 0.0 {
                last = i;
                cum += p;
                if u < cum {
                    return i;
                }
            }
        }
        last
    }
}

fn argmax(s: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in s.iter().enumerate() {
        if *x > s[best] {
            best = i;
        }
    }
    best
}

fn softmax(s: &[f64]) -> Vec<f64> {
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|x| x / z).collect()
}

fn log_softmax_at(raw: &[f32], i: usize) -> f32 {
    let m = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = raw.iter().map(|&x| (x as f64 - m).exp()).sum();
    (raw[i] as f64 - m - z.ln()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SamplingConfig {
        SamplingConfig { temperature: 1.0, ..SamplingConfig::greedy(4, vec![]) }
    }

    #[test]
    fn greedy_takes_the_first_maximum_and_reports_the_raw_log_probability() {
        let c = SamplingConfig::greedy(1, vec![]);
        let mut s = RowSampler::new(&c, 0, &[]);
        let (t, lp) = s.choose(&[0.0, 2.0, 2.0, 1.0]);
        assert_eq!(t, 1);
        let z = (1.0f64 + 2.0 * 2f64.exp() + 1f64.exp()).ln();
        assert!((lp as f64 - (2.0 - z)).abs() < 1e-6);
    }

    #[test]
    fn top_k_of_one_and_a_tiny_top_p_are_greedy() {
        let logits = [0.3f32, 1.5, -0.2, 1.4, 0.0];
        for c in [SamplingConfig { top_k: 1, ..cfg() }, SamplingConfig { top_p: 1e-6, ..cfg() }] {
            let mut s = RowSampler::new(&c, 0, &[]);
            for _ in 0..20 {
                assert_eq!(s.choose(&logits).0, 1);
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_samples_and_sampling_follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let draw = |seed| {
            let c = cfg();
            let mut s = RowSampler::new(&c, seed, &[]);
            (0..4000).map(|_| s.choose(&logits).0).collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
        let ones = draw(5).iter().filter(|&&t| t == 1).count() as f64 / 4000.0;
        assert!((ones - 0.75).abs() < 0.03, "{ones}");
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens() {
        let c = SamplingConfig { repetition_penalty: 4.0, ..SamplingConfig::greedy(1, vec![]) };
        // Token 0 (seen, 2.0 → 0.5) loses to token 1 (1.0).
        let mut s = RowSampler::new(&c, 0, &[0]);
        assert_eq!(s.choose(&[2.0, 1.0, -1.0]).0, 1);
        // Now 1 is seen too: 0.5 vs 0.25 vs −1 → 0.
        assert_eq!(s.choose(&[2.0, 1.0, -1.0]).0, 0);
    }

    #[test]
    fn invalid_sampling_settings_are_rejected() {
        assert!(SamplingConfig { top_p: 0.0, ..cfg() }.validate().is_err());
        assert!(SamplingConfig { temperature: -1.0, ..cfg() }.validate().is_err());
        assert!(SamplingConfig { repetition_penalty: 0.0, ..cfg() }.validate().is_err());
    }
}
