//! Batched, KV-cached autoregressive generation for inference and embedded rollouts.
//!
//! Prompts of different lengths are left-padded into one batch; padding is masked out of every
//! attention call (a padded query still sees itself, so no row is fully masked and no NaN can
//! appear). Each prompt brings its own mRoPE position ids (computed by the text crate exactly
//! as for training); the new tokens continue from `max(prompt positions) + 1` on all three axes,
//! which is how transformers continues after an image.
//!
//! Token choice follows transformers' processor order — repetition penalty, then temperature,
//! top-k, top-p. Sampling rows draw on the host in f64 from a SplitMix64 stream seeded by each
//! sample's own seed, so a seed gives the same tokens on CPU and GPU and regardless of which
//! other prompts share the batch (up to float rounding of the batched logits); plain greedy rows
//! pick on the device (argmax, first index on ties). The returned log-probability of each token
//! is taken from the *raw* model distribution (log-softmax of the unprocessed logits), the
//! quantity confidence scores are built from.

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
#[derive(Debug, Clone)]
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

/// A prompt and the samples to draw from it: the prompt is prefilled once and every sample
/// continues from that prefill in a row of its own, with its own seed and settings.
#[derive(Debug)]
pub struct Job<'a> {
    pub prompt: Prompt<'a>,
    pub samples: Vec<Sample<'a>>,
}

/// One continuation of a [`Job`]'s prompt.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub seed: u64,
    pub cfg: &'a SamplingConfig,
}

/// Generate continuations for a batch of prompts (one row each, all with `cfg`).
pub fn generate(
    model: &Qwen3VL,
    prompts: &[Prompt<'_>],
    cfg: &SamplingConfig,
) -> Result<Vec<Generation>, Error> {
    let jobs: Vec<Job<'_>> = prompts
        .iter()
        .map(|p| Job { prompt: p.clone(), samples: vec![Sample { seed: p.seed, cfg }] })
        .collect();
    let out = generate_jobs(model, &jobs, prompts.len())?;
    Ok(out.into_iter().flatten().collect())
}

/// Generate every sample of every job with at most `slots` rows decoding at once (continuous
/// batching): jobs are admitted in order as soon as their samples fit in free rows, each job's
/// prompt is prefilled once for all its samples, and a row that finishes (stop id or its
/// `max_new_tokens`) frees its slot at once. When nothing waits and fewer than half the rows
/// are busy, the cache shrinks to the busy rows. Returns the generations per job, per sample.
///
/// Each row is independent of the others: the same seed gives the same tokens whatever shares
/// the batch (up to float rounding of batched matrix products).
pub fn generate_jobs(
    model: &Qwen3VL,
    jobs: &[Job<'_>],
    slots: usize,
) -> Result<Vec<Vec<Generation>>, Error> {
    for j in jobs {
        for s in &j.samples {
            s.cfg.validate()?;
        }
        if j.prompt.ids.is_empty() && !j.samples.is_empty() {
            return Err(Error::input("an empty prompt cannot be continued"));
        }
    }
    let mut out: Vec<Vec<Generation>> =
        jobs.iter().map(|j| j.samples.iter().map(|_| Generation::empty()).collect()).collect();
    let mut queue: std::collections::VecDeque<usize> = (0..jobs.len())
        .filter(|&j| jobs[j].samples.iter().any(|s| s.cfg.max_new_tokens > 0))
        .collect();
    let Some(widest) = queue.iter().map(|&j| jobs[j].samples.len()).max() else {
        return Ok(out);
    };
    let total: usize = queue.iter().map(|&j| jobs[j].samples.len()).sum();
    let slots = slots.max(widest).min(total);
    let capacity = queue
        .iter()
        .map(|&j| {
            let job = &jobs[j];
            job.prompt.ids.len()
                + job.samples.iter().map(|s| s.cfg.max_new_tokens).max().unwrap_or(0)
        })
        .max()
        .unwrap_or(0) as i64;
    let device = model.device();
    let _guard = tch::no_grad_guard();
    let mut engine = Engine {
        model,
        cache: KvCache::new(&model.config().text, slots as i64, capacity, model.kind(), device),
        rows: (0..slots).map(|_| None).collect(),
        pad_id: if model.config().image_token_id == 0 { 1 } else { 0 },
    };
    while !queue.is_empty() || engine.busy() > 0 {
        // Admit the next jobs whose samples all fit in the free rows, prefilled together.
        let mut free = engine.rows.iter().filter(|r| r.is_none()).count();
        let mut group = Vec::new();
        while let Some(&j) = queue.front() {
            let k = jobs[j].samples.len();
            if k > free {
                break;
            }
            free -= k;
            group.push(j);
            queue.pop_front();
        }
        if !group.is_empty() {
            engine.admit(jobs, &group, &mut out)?;
        }
        if queue.is_empty() && engine.busy() > 0 && engine.busy() * 2 <= engine.rows.len() {
            engine.shrink();
        }
        if engine.busy() > 0 {
            engine.step(jobs, &mut out)?;
        }
    }
    Ok(out)
}

/// A busy row of the engine: which sample it decodes and where it stands.
struct Row<'c> {
    job: usize,
    sample: usize,
    sampler: RowSampler<'c>,
    /// mRoPE position of the first generated token (`max(prompt positions) + 1`).
    next_pos: i64,
    /// Cache columns this row holds (its prompt, then its fed tokens).
    len: i64,
    /// The last chosen token, fed at the next step.
    last: i64,
}

/// The continuous-batching engine's state: the model, the slot cache and its rows.
struct Engine<'m, 'c> {
    model: &'m Qwen3VL,
    cache: KvCache,
    rows: Vec<Option<Row<'c>>>,
    /// A harmless filler for idle rows: any id that is not an image pad.
    pad_id: i64,
}

impl<'c> Engine<'_, 'c> {
    fn busy(&self) -> usize {
        self.rows.iter().filter(|r| r.is_some()).count()
    }

    /// Prefill the prompts of `group` (left-padded into one batch), choose every sample's first
    /// token from its prompt's last logits, and seat the samples that go on in free rows.
    fn admit(
        &mut self,
        jobs: &'c [Job<'c>],
        group: &[usize],
        out: &mut [Vec<Generation>],
    ) -> Result<(), Error> {
        let model = self.model;
        let device = model.device();
        let b = group.len() as i64;
        let l = group.iter().map(|&j| jobs[j].prompt.ids.len()).max().unwrap_or(0) as i64;
        let mut ids = vec![self.pad_id; (b * l) as usize];
        let mut valid = vec![false; (b * l) as usize];
        let mut rows = Vec::with_capacity(group.len());
        let mut next_pos = Vec::with_capacity(group.len());
        for (i, &j) in group.iter().enumerate() {
            let p = &jobs[j].prompt;
            let n = p.ids.len() as i64;
            let off = (i as i64 * l + l - n) as usize;
            ids[off..off + n as usize].copy_from_slice(p.ids);
            valid[off..off + n as usize].fill(true);
            let s = p.position_ids.size();
            if s.len() != 2 || (s[0] != 3 && s[0] != 4) || s[1] != n {
                return Err(Error::input(format!(
                    "prompt {j}: position_ids must be [3 or 4, {n}], got {s:?}"
                )));
            }
            let pos =
                p.position_ids.narrow(0, s[0] - 3, 3).to_kind(Kind::Int64).to_device(Device::Cpu);
            next_pos.push(pos.max().int64_value(&[]) + 1);
            rows.push(Tensor::cat(
                &[Tensor::zeros([3, l - n], (Kind::Int64, Device::Cpu)), pos],
                1,
            ));
        }
        let positions = Tensor::stack(&rows, 1).to_device(device); // [3, B, L]
        let ids_t = Tensor::from_slice(&ids).view([b, l]).to_device(device);
        let valid_t = Tensor::from_slice(&valid).view([b, l]).to_device(device);
        let parts: Vec<ImageBatch> = group
            .iter()
            .filter_map(|&j| {
                jobs[j].prompt.images.map(|im| ImageBatch {
                    patches: im.patches.shallow_clone(),
                    grid_thw: im.grid_thw.clone(),
                })
            })
            .collect();
        let images = ImageBatch::concat(&parts);
        let mut prefill = KvCache::new(&model.config().text, b, l, model.kind(), device);
        let mask = {
            let q = Tensor::arange(l, (Kind::Int64, device));
            let causal = q.unsqueeze(0).le_tensor(&q.unsqueeze(1)); // [L, L] j ≤ i
            let keys = valid_t.view([b, 1, 1, l]);
            let diag = Tensor::eye(l, (Kind::Bool, device));
            causal.logical_and(&keys).logical_or(&diag).view([b, 1, l, l])
        };
        let layout = AttentionLayout::Masked(mask);
        let input = ForwardInput {
            input_ids: &ids_t,
            position_ids: &positions,
            layout: &layout,
            images: images.as_ref(),
            inputs_embeds: None,
        };
        let hidden = model.forward_inner(&input, Some(&mut prefill))?;
        let logits = model.logits(&hidden.narrow(1, l - 1, 1)).squeeze_dim(1);
        let mut picks = Picks::new(&logits);
        for (i, &j) in group.iter().enumerate() {
            let job = &jobs[j];
            let n = job.prompt.ids.len() as i64;
            for (k, sample) in job.samples.iter().enumerate() {
                if sample.cfg.max_new_tokens == 0 {
                    continue;
                }
                let mut sampler = RowSampler::new(sample.cfg, sample.seed, job.prompt.ids);
                let tok = picks.choose(i as i64, &mut sampler)?;
                let g = &mut out[j][k];
                if g.push(tok, sample.cfg) {
                    continue;
                }
                let slot = self.rows.iter().position(Option::is_none).ok_or_else(|| {
                    Error::runtime("no free row for an admitted sample (a bug in admission)")
                })?;
                self.cache.put_prefix(slot as i64, &prefill, i as i64, l - n, n);
                let last = tok.0;
                self.rows[slot] =
                    Some(Row { job: j, sample: k, sampler, next_pos: next_pos[i], len: n, last });
            }
        }
        Ok(())
    }

    /// Keep only the busy rows (the tail of the work: nothing waits to be admitted).
    fn shrink(&mut self) {
        let keep: Vec<i64> =
            (0..self.rows.len()).filter(|&i| self.rows[i].is_some()).map(|i| i as i64).collect();
        let index = Tensor::from_slice(&keep).to_device(self.model.device());
        self.cache.keep_rows(&index);
        self.rows.retain(Option::is_some);
    }

    /// Feed every busy row its last token and choose its next one; finished rows leave.
    fn step(&mut self, jobs: &[Job<'_>], out: &mut [Vec<Generation>]) -> Result<(), Error> {
        let model = self.model;
        let device = model.device();
        let b = self.rows.len() as i64;
        let mut ids = Vec::with_capacity(self.rows.len());
        let mut pos = Vec::with_capacity(self.rows.len());
        let mut cols = Vec::with_capacity(self.rows.len());
        for r in &self.rows {
            match r {
                Some(r) => {
                    ids.push(r.last);
                    // Tokens generated so far minus the one being fed.
                    pos.push(r.next_pos + r.len - jobs[r.job].prompt.ids.len() as i64);
                    cols.push(r.len);
                }
                None => {
                    ids.push(self.pad_id);
                    pos.push(0);
                    cols.push(0);
                }
            }
        }
        let width = cols.iter().copied().max().unwrap_or(0) + 1;
        self.cache.set_columns(&cols, width);
        // Row i sees its own columns 0..=cols[i] (an idle row sees the one it writes).
        let seen = Tensor::arange(width, (Kind::Int64, device))
            .view([1, width])
            .le_tensor(&Tensor::from_slice(&cols).to_device(device).view([b, 1]))
            .view([b, 1, 1, width]);
        let step_ids = Tensor::from_slice(&ids).view([b, 1]).to_device(device);
        let step_pos =
            Tensor::from_slice(&pos).view([1, b, 1]).expand([3, b, 1], false).to_device(device);
        let layout = AttentionLayout::Masked(seen);
        let input = ForwardInput {
            input_ids: &step_ids,
            position_ids: &step_pos,
            layout: &layout,
            images: None,
            inputs_embeds: None,
        };
        let logits =
            model.logits(&model.forward_inner(&input, Some(&mut self.cache))?).squeeze_dim(1);
        let mut picks = Picks::new(&logits);
        for (i, slot) in self.rows.iter_mut().enumerate() {
            let Some(r) = slot else { continue };
            let tok = picks.choose(i as i64, &mut r.sampler)?;
            r.len += 1;
            r.last = tok.0;
            let cfg = r.sampler.cfg;
            if out[r.job][r.sample].push(tok, cfg) {
                *slot = None;
            }
        }
        Ok(())
    }
}

impl Generation {
    fn empty() -> Generation {
        Generation { tokens: vec![], logprobs: vec![], stop: StopReason::MaxNewTokens }
    }

    /// Record a chosen token; true when the row is finished (a stop id, or `max_new_tokens`).
    fn push(&mut self, (tok, lp): (i64, f32), cfg: &SamplingConfig) -> bool {
        self.tokens.push(tok);
        self.logprobs.push(lp);
        if cfg.stop_ids.contains(&tok) {
            self.stop = StopReason::StopToken;
            return true;
        }
        self.tokens.len() >= cfg.max_new_tokens
    }
}

/// The token choices of one forward pass: plain greedy rows (no repetition penalty) are
/// decided on the device — argmax and log-sum-exp per row, two numbers to the host — and only
/// rows that sample or penalise bring their logits to the host.
struct Picks<'t> {
    logits: &'t Tensor,
    /// Per row: (argmax, raw log-probability of it), computed on first use.
    greedy: Option<(Vec<i64>, Vec<f32>)>,
}

impl<'t> Picks<'t> {
    fn new(logits: &'t Tensor) -> Self {
        Picks { logits, greedy: None }
    }

    fn choose(&mut self, row: i64, sampler: &mut RowSampler<'_>) -> Result<(i64, f32), Error> {
        let read = |e: tch::TchError| Error::runtime(format!("cannot read logits: {e}"));
        if sampler.cfg.temperature == 0.0 && sampler.cfg.repetition_penalty == 1.0 {
            if self.greedy.is_none() {
                let l = self.logits.to_kind(Kind::Float);
                let (_, best) = l.max_dim(1, true);
                let lp = l.gather(1, &best, false) - l.logsumexp([1i64].as_slice(), true);
                let best =
                    Vec::<i64>::try_from(best.view([-1]).to_device(Device::Cpu)).map_err(read)?;
                let lp =
                    Vec::<f32>::try_from(lp.view([-1]).to_device(Device::Cpu)).map_err(read)?;
                self.greedy = Some((best, lp));
            }
            if let Some((best, lp)) = &self.greedy {
                return Ok((best[row as usize], lp[row as usize]));
            }
        }
        let raw: Vec<f32> =
            Vec::try_from(self.logits.get(row).to_kind(Kind::Float).to_device(Device::Cpu))
                .map_err(read)?;
        Ok(sampler.choose(&raw))
    }
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
