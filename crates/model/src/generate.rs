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
#[derive(Debug, Clone)]
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
/// batching on a [`Decoder`]): jobs are admitted in order as soon as their samples fit in free
/// rows, each job's prompt is prefilled once for all its samples, and a row that finishes (stop
/// id or its `max_new_tokens`) frees its slot at once. When nothing waits and at most half the
/// rows are busy, the cache shrinks to the busy rows. Returns the generations per job, per
/// sample.
///
/// Each row is independent of the others: the same seed gives the same tokens whatever shares
/// the batch (up to float rounding of batched matrix products).
pub fn generate_jobs(
    model: &Qwen3VL,
    jobs: &[Job<'_>],
    slots: usize,
) -> Result<Vec<Vec<Generation>>, Error> {
    let mut out: Vec<Vec<Generation>> =
        jobs.iter().map(|j| j.samples.iter().map(|_| Generation::empty()).collect()).collect();
    let mut queue: std::collections::VecDeque<usize> = (0..jobs.len()).collect();
    let widest = jobs.iter().map(|j| j.samples.len()).max().unwrap_or(0);
    let total: usize = jobs.iter().map(|j| j.samples.len()).sum();
    for j in jobs {
        j.check()?;
    }
    // One cache large enough for every job, so it never grows mid-run.
    let columns = jobs.iter().map(Job::columns).max().unwrap_or(0);
    let mut decoder = Decoder::new(slots.max(widest).min(total), columns);
    decoder.reserve_columns(model, columns);
    while !queue.is_empty() || decoder.busy() > 0 {
        // Admit the next jobs whose samples all fit in the free rows, prefilled together.
        let mut free = decoder.free();
        let mut group = Vec::new();
        while let Some(&j) = queue.front() {
            let k = jobs[j].samples.len();
            if k > free {
                break;
            }
            free -= k;
            group.push((jobs[j].clone(), j));
            queue.pop_front();
        }
        let mut finished = decoder.admit(model, &group)?;
        if queue.is_empty() {
            decoder.compact(model);
        }
        finished.extend(decoder.step(model)?);
        for (j, k, g) in finished {
            out[j][k] = g;
        }
    }
    Ok(out)
}

impl Job<'_> {
    /// Refuse what the decoder cannot run: bad sampling settings, an empty prompt with
    /// samples, position ids that are not `[3 or 4, prompt length]`.
    pub fn check(&self) -> Result<(), Error> {
        for s in &self.samples {
            s.cfg.validate()?;
        }
        if self.prompt.ids.is_empty() && !self.samples.is_empty() {
            return Err(Error::input("an empty prompt cannot be continued"));
        }
        let (n, s) = (self.prompt.ids.len() as i64, self.prompt.position_ids.size());
        if s.len() != 2 || (s[0] != 3 && s[0] != 4) || s[1] != n {
            return Err(Error::input(format!(
                "position_ids must be [3 or 4, {n}] for a prompt of {n} tokens, got {s:?}"
            )));
        }
        Ok(())
    }

    /// Cache columns the longest of its samples needs.
    fn columns(&self) -> usize {
        self.prompt.ids.len() + self.samples.iter().map(|s| s.cfg.max_new_tokens).max().unwrap_or(0)
    }
}

/// A continuous-batching decoder that outlives any one set of jobs: up to `slots` rows decode
/// together, jobs are admitted into free rows whenever the caller has them (between steps), and
/// each finished row is handed back with its caller's tag. [`generate_jobs`] runs it over a
/// fixed list; `coordexp serve` keeps one alive and admits requests as they arrive.
///
/// The decoder holds no model: every call takes the one to run, so a server can swap weights
/// between requests (only while no row is busy — a row's cache belongs to the weights that
/// wrote it).
pub struct Decoder<T> {
    slots: usize,
    /// The most columns the cache grows to (unless one job alone needs more).
    max_columns: usize,
    cache: Option<KvCache>,
    rows: Vec<Option<Row<T>>>,
}

/// A busy row of the decoder: whose sample it decodes and where it stands.
struct Row<T> {
    tag: T,
    sample: usize,
    sampler: RowSampler,
    /// mRoPE position of the first generated token (`max(prompt positions) + 1`).
    next_pos: i64,
    prompt_len: i64,
    /// Cache columns this row holds (its prompt, then its fed tokens).
    len: i64,
    /// The last chosen token, fed at the next step.
    last: i64,
    out: Generation,
}

/// A harmless filler for idle rows and padding: any id that is not an image pad.
fn pad_id(model: &Qwen3VL) -> i64 {
    if model.config().image_token_id == 0 { 1 } else { 0 }
}

impl<T: Copy> Decoder<T> {
    /// A decoder of at most `slots` rows (at least one) whose cache grows to at most
    /// `max_columns` columns (a server's context length) unless one job alone needs more; the
    /// cache is made on first use.
    pub fn new(slots: usize, max_columns: usize) -> Self {
        Decoder { slots: slots.max(1), max_columns, cache: None, rows: Vec::new() }
    }

    /// Rows decoding now.
    pub fn busy(&self) -> usize {
        self.rows.iter().filter(|r| r.is_some()).count()
    }

    /// Samples that can be admitted now.
    pub fn free(&self) -> usize {
        self.slots - self.busy()
    }

    /// Make every row's cache hold at least `columns` tokens. A cache that must grow takes half
    /// again its size if that is more (within `max_columns`), so a stream of ever longer
    /// prompts copies it rarely.
    fn reserve_columns(&mut self, model: &Qwen3VL, columns: usize) {
        let columns = columns as i64;
        let ceiling = (self.max_columns as i64).max(columns);
        match &mut self.cache {
            Some(c) if c.capacity() >= columns => {}
            Some(c) => {
                c.grow(self.rows.len() as i64, (c.capacity() * 3 / 2).clamp(columns, ceiling))
            }
            None => {
                let (kind, device) = (model.kind(), model.device());
                let text = &model.config().text;
                self.cache =
                    Some(KvCache::new(text, self.rows.len() as i64, columns, kind, device));
            }
        }
    }

    /// Make `n` more rows (idle) at the end of the cache.
    fn add_rows(&mut self, model: &Qwen3VL, n: usize) {
        self.reserve_columns(model, 1);
        if let Some(c) = &mut self.cache {
            c.grow(self.rows.len() as i64 + n as i64, c.capacity());
        }
        self.rows.extend((0..n).map(|_| None));
    }

    /// When at most half the rows are busy, keep only those: at the tail of the work (nothing
    /// waits to be admitted) idle rows only cost time, and an idle decoder keeps no cache
    /// memory. [`Decoder::admit`] makes rows again when it needs them.
    pub fn compact(&mut self, model: &Qwen3VL) {
        let busy = self.busy();
        if busy == self.rows.len() || busy * 2 > self.rows.len() {
            return;
        }
        let keep: Vec<i64> =
            (0..self.rows.len()).filter(|&i| self.rows[i].is_some()).map(|i| i as i64).collect();
        if let Some(c) = &mut self.cache {
            c.keep_rows(&Tensor::from_slice(&keep).to_device(model.device()));
        }
        self.rows.retain(Option::is_some);
    }

    /// Free the rows whose tag `drop` selects (nobody waits for them any more).
    pub fn cancel(&mut self, mut drop: impl FnMut(&T) -> bool) {
        for r in &mut self.rows {
            if r.as_ref().is_some_and(|row| drop(&row.tag)) {
                *r = None;
            }
        }
    }

    /// Prefill the prompts of `jobs` (left-padded into one batch), choose every sample's first
    /// token from its prompt's last logits, and seat the samples that go on in free rows.
    /// Returns the samples already finished (`(tag, sample, generation)`): those with
    /// `max_new_tokens` 0 or whose first token stops them. The samples must fit in
    /// [`Decoder::free`] rows.
    pub fn admit(
        &mut self,
        model: &Qwen3VL,
        jobs: &[(Job<'_>, T)],
    ) -> Result<Vec<(T, usize, Generation)>, Error> {
        let mut finished = Vec::new();
        for (j, tag) in jobs {
            j.check()?;
            for (k, s) in j.samples.iter().enumerate() {
                if s.cfg.max_new_tokens == 0 {
                    finished.push((*tag, k, Generation::empty()));
                }
            }
        }
        let jobs: Vec<&(Job<'_>, T)> = jobs
            .iter()
            .filter(|(j, _)| j.samples.iter().any(|s| s.cfg.max_new_tokens > 0))
            .collect();
        if jobs.is_empty() {
            return Ok(finished);
        }
        let seats: usize = jobs.iter().map(|(j, _)| j.samples.len()).sum();
        if seats > self.free() {
            return Err(Error::runtime(format!(
                "{seats} samples admitted with {} free rows (a bug in the caller)",
                self.free()
            )));
        }
        let idle = self.rows.iter().filter(|r| r.is_none()).count();
        if idle < seats {
            // At least double (up to `slots`): rows added one request at a time would copy the
            // cache at every admission.
            let rows = self.rows.len();
            let target = (rows + seats - idle).max(2 * rows).min(self.slots);
            self.add_rows(model, target - rows);
        }
        self.reserve_columns(model, jobs.iter().map(|(j, _)| j.columns()).max().unwrap_or(0));
        let device = model.device();
        let pad = pad_id(model);
        let b = jobs.len() as i64;
        let l = jobs.iter().map(|(j, _)| j.prompt.ids.len()).max().unwrap_or(0) as i64;
        let mut ids = vec![pad; (b * l) as usize];
        let mut valid = vec![false; (b * l) as usize];
        let mut rows = Vec::with_capacity(jobs.len());
        let mut next_pos = Vec::with_capacity(jobs.len());
        for (i, (job, _)) in jobs.iter().enumerate() {
            let p = &job.prompt;
            let n = p.ids.len() as i64;
            let off = (i as i64 * l + l - n) as usize;
            ids[off..off + n as usize].copy_from_slice(p.ids);
            valid[off..off + n as usize].fill(true);
            let s = p.position_ids.size(); // checked: [3 or 4, n]
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
        let parts: Vec<ImageBatch> = jobs
            .iter()
            .filter_map(|(j, _)| {
                j.prompt.images.map(|im| ImageBatch {
                    patches: im.patches.shallow_clone(),
                    grid_thw: im.grid_thw.clone(),
                })
            })
            .collect();
        let images = ImageBatch::concat(&parts);
        let _guard = tch::no_grad_guard();
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
        for (i, (job, tag)) in jobs.iter().enumerate() {
            let n = job.prompt.ids.len() as i64;
            for (k, sample) in job.samples.iter().enumerate() {
                if sample.cfg.max_new_tokens == 0 {
                    continue;
                }
                let mut sampler = RowSampler::new(sample.cfg, sample.seed, job.prompt.ids);
                let tok = picks.choose(i as i64, &mut sampler)?;
                let mut out = Generation::empty();
                if out.push(tok, sample.cfg) {
                    finished.push((*tag, k, out));
                    continue;
                }
                let slot = self.rows.iter().position(Option::is_none).ok_or_else(|| {
                    Error::runtime("no free row for an admitted sample (a bug in admission)")
                })?;
                if let Some(cache) = &mut self.cache {
                    cache.put_prefix(slot as i64, &prefill, i as i64, l - n, n);
                }
                self.rows[slot] = Some(Row {
                    tag: *tag,
                    sample: k,
                    sampler,
                    next_pos: next_pos[i],
                    prompt_len: n,
                    len: n,
                    last: tok.0,
                    out,
                });
            }
        }
        Ok(finished)
    }

    /// Feed every busy row its last token and choose its next one; finished rows leave and are
    /// returned as `(tag, sample, generation)`. Nothing happens when no row is busy.
    pub fn step(&mut self, model: &Qwen3VL) -> Result<Vec<(T, usize, Generation)>, Error> {
        let (Some(cache), true) = (&mut self.cache, self.rows.iter().any(Option::is_some)) else {
            return Ok(Vec::new());
        };
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
                    pos.push(r.next_pos + r.len - r.prompt_len);
                    cols.push(r.len);
                }
                None => {
                    ids.push(pad_id(model));
                    pos.push(0);
                    cols.push(0);
                }
            }
        }
        let width = cols.iter().copied().max().unwrap_or(0) + 1;
        cache.set_columns(&cols, width);
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
        let _guard = tch::no_grad_guard();
        let logits = model.logits(&model.forward_inner(&input, Some(cache))?).squeeze_dim(1);
        let mut picks = Picks::new(&logits);
        let mut finished = Vec::new();
        for (i, slot) in self.rows.iter_mut().enumerate() {
            let Some(r) = slot else { continue };
            let tok = picks.choose(i as i64, &mut r.sampler)?;
            r.len += 1;
            r.last = tok.0;
            if r.out.push(tok, &r.sampler.cfg)
                && let Some(r) = slot.take()
            {
                finished.push((r.tag, r.sample, r.out));
            }
        }
        Ok(finished)
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

    fn choose(&mut self, row: i64, sampler: &mut RowSampler) -> Result<(i64, f32), Error> {
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
struct RowSampler {
    cfg: SamplingConfig,
    rng: SplitMix64,
    /// Tokens seen so far (prompt + output), for the repetition penalty.
    seen: std::collections::BTreeSet<i64>,
}

impl RowSampler {
    fn new(cfg: &SamplingConfig, seed: u64, prompt: &[i64]) -> Self {
        let seen = if cfg.repetition_penalty != 1.0 {
            prompt.iter().copied().collect()
        } else {
            Default::default()
        };
        RowSampler { cfg: cfg.clone(), rng: SplitMix64::new(seed), seen }
    }

    /// Pick the next token from raw logits; returns it with its raw log-probability.
    fn choose(&mut self, raw: &[f32]) -> (i64, f32) {
        let (temperature, penalty) = (self.cfg.temperature, self.cfg.repetition_penalty);
        let mut s: Vec<f64> = raw.iter().map(|&x| x as f64).collect();
        if penalty != 1.0 {
            for &t in &self.seen {
                if let Some(x) = s.get_mut(t as usize) {
                    *x = if *x < 0.0 { *x * penalty } else { *x / penalty };
                }
            }
        }
        let tok = if temperature == 0.0 { argmax(&s) } else { self.sample(&mut s) };
        if penalty != 1.0 {
            self.seen.insert(tok as i64);
        }
        (tok as i64, log_softmax_at(raw, tok))
    }

    fn sample(&mut self, s: &mut [f64]) -> usize {
        let cfg = &self.cfg;
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
