//! The generation engine of `coordexp serve`: one thread that owns the model.
//!
//! Why one thread: the model's tensors (and libtorch's intra-op thread pool) live in one place,
//! so HTTP handler threads never touch them; they submit [`GenJob`]s and wait for the answer
//! with their deadline. Why batching here: `generate` is KV-cached and batched, so the engine
//! gathers waiting jobs with identical sampling settings into calls of up to
//! `rollout.decode_batch_size` rows (a job with `n` samples is `n` rows, sample `j` seeded
//! `seed + j`), oldest job first. Weight reloads are queued like jobs and run between batches:
//! jobs already started finish on the old weights, so every job's samples come from one weight
//! version, which is reported with them.
//!
//! The boundary is deliberately small ([`EngineHandle::submit`], [`EngineHandle::reload`],
//! [`EngineHandle::stop`]) so a continuous-batching engine with prefill sharing can replace
//! this one without touching the HTTP layer.

use coordexp_core::{Error, Result};
use coordexp_model::ParamInit;
use coordexp_model::generate::{Generation, Job, Prompt, Sample, SamplingConfig, generate_jobs};
use coordexp_model::model::Qwen3VL;
use coordexp_model::vision::preprocess::ImageBatch;
use coordexp_model::weights;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tch::Tensor;

use crate::session::Session;
use crate::split::Pixels;

/// One prompt to sample `seeds.len()` times.
pub struct GenJob {
    pub ids: Vec<i64>,
    /// The four position rows (text, then mRoPE t/h/w), each `ids.len()` long, row-major.
    pub positions: Vec<i64>,
    pub pixels: Vec<Pixels>,
    pub sampling: SamplingConfig,
    /// One row per seed.
    pub seeds: Vec<u64>,
}

/// The samples of one job and the weights that produced them.
#[derive(Debug)]
pub struct GenOutput {
    pub samples: Vec<Generation>,
    pub weight_version: u64,
}

/// Why a submission did not produce samples.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineError {
    /// The queue holds `max_queue` requests already.
    Full { max_queue: usize },
    /// The deadline passed before the samples were ready.
    Timeout,
    /// Generation failed (the message says why).
    Failed(String),
    /// The engine is shutting down or has stopped.
    Stopped,
}

enum Msg {
    Jobs(Vec<Slot>),
    Reload { dir: PathBuf, version: u64, reply: Sender<std::result::Result<f64, String>> },
    Stop,
}

/// A job inside the engine.
struct Slot {
    job: GenJob,
    index: usize,
    deadline: Instant,
    reply: Sender<(usize, std::result::Result<GenOutput, EngineError>)>,
    cancelled: Arc<AtomicBool>,
}

/// Where handler threads submit work; cheap to share.
pub struct EngineHandle {
    tx: Mutex<Sender<Msg>>,
    pending: Arc<AtomicUsize>,
    max_queue: usize,
    version: Arc<AtomicU64>,
    alive: Arc<AtomicBool>,
}

/// A submitted request: wait for it with [`Ticket::wait`]. Dropping it cancels the rows not
/// yet started and frees its queue place.
pub struct Ticket {
    rx: Receiver<(usize, std::result::Result<GenOutput, EngineError>)>,
    jobs: usize,
    cancelled: Arc<AtomicBool>,
    pending: Arc<AtomicUsize>,
    deadline: Instant,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ticket {
    /// Every job's output in submission order, or the first failure; [`EngineError::Timeout`]
    /// once the deadline passes (the engine then skips the rows it has not started).
    pub fn wait(self) -> std::result::Result<Vec<GenOutput>, EngineError> {
        let mut out: Vec<Option<GenOutput>> = (0..self.jobs).map(|_| None).collect();
        let mut left = self.jobs;
        while left > 0 {
            let now = Instant::now();
            if now >= self.deadline {
                return Err(EngineError::Timeout);
            }
            match self.rx.recv_timeout(self.deadline - now) {
                Ok((i, Ok(o))) => {
                    if let Some(slot) = out.get_mut(i) {
                        if slot.is_none() {
                            left -= 1;
                        }
                        *slot = Some(o);
                    }
                }
                Ok((_, Err(e))) => return Err(e),
                Err(RecvTimeoutError::Timeout) => return Err(EngineError::Timeout),
                Err(RecvTimeoutError::Disconnected) => return Err(EngineError::Stopped),
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
}

impl EngineHandle {
    /// Queue `jobs` as one request (one queue place) with `deadline`.
    pub fn submit(
        &self,
        jobs: Vec<GenJob>,
        deadline: Instant,
    ) -> std::result::Result<Ticket, EngineError> {
        if !self.alive.load(Ordering::SeqCst) {
            return Err(EngineError::Stopped);
        }
        let mut cur = self.pending.load(Ordering::SeqCst);
        loop {
            if cur >= self.max_queue {
                return Err(EngineError::Full { max_queue: self.max_queue });
            }
            match self.pending.compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let (tx, rx) = mpsc::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let n = jobs.len();
        let ticket = Ticket {
            rx,
            jobs: n,
            cancelled: cancelled.clone(),
            pending: self.pending.clone(),
            deadline,
        };
        let slots = jobs
            .into_iter()
            .enumerate()
            .map(|(index, job)| Slot {
                job,
                index,
                deadline,
                reply: tx.clone(),
                cancelled: cancelled.clone(),
            })
            .collect();
        let sent = match self.tx.lock() {
            Ok(s) => s.send(Msg::Jobs(slots)).is_ok(),
            Err(_) => false,
        };
        if !sent {
            return Err(EngineError::Stopped);
        }
        Ok(ticket)
    }

    /// Load the weights in `dir` between batches and call them `version`; the seconds the
    /// load took, or why it failed (the old weights keep serving).
    pub fn reload(&self, dir: PathBuf, version: u64) -> std::result::Result<f64, String> {
        let (reply, rx) = mpsc::channel();
        let sent = match self.tx.lock() {
            Ok(s) => s.send(Msg::Reload { dir, version, reply }).is_ok(),
            Err(_) => false,
        };
        if !sent {
            return Err("the engine has stopped".into());
        }
        rx.recv().unwrap_or_else(|_| Err("the engine stopped during the reload".into()))
    }

    /// The version of the weights serving now.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// False once the engine thread has ended (or died).
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Requests queued or generating.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Ask the engine to finish every queued job and end.
    pub fn stop(&self) {
        if let Ok(s) = self.tx.lock() {
            let _ = s.send(Msg::Stop);
        }
    }
}

/// Start the engine thread on `session`: it loads the weights of `model_dir` and reports
/// readiness (or the load error) before this returns.
pub fn start(
    session: Session,
    opts: &super::ServeOptions,
    batch_rows: usize,
) -> Result<(EngineHandle, JoinHandle<()>)> {
    let (model_dir, adapter) = (opts.model.clone(), opts.adapter.clone());
    let (max_queue, version) = (opts.max_queue, opts.weight_version);
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let version = Arc::new(AtomicU64::new(version));
    let alive = Arc::new(AtomicBool::new(true));
    let (v, a) = (version.clone(), alive.clone());
    let thread = std::thread::Builder::new()
        .name("coordexp-engine".into())
        .spawn(move || {
            if session.device == tch::Device::Cpu {
                tch::set_num_threads(session.threads as i32);
            }
            let loaded = session.load_model(&model_dir).and_then(|mut m| {
                if let Some(a) = &adapter {
                    m.load_adapter(a)?;
                }
                Ok(m)
            });
            let model = match loaded {
                Ok(m) => {
                    let _ = ready_tx.send(Ok(()));
                    m
                }
                Err(e) => {
                    a.store(false, Ordering::SeqCst);
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut engine =
                Engine { session, model, rx, batch_rows: batch_rows.max(1), version: v };
            engine.run();
            a.store(false, Ordering::SeqCst);
        })
        .map_err(|e| Error::runtime(format!("cannot start the engine thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            let _ = thread.join();
            return Err(Error::runtime("the engine thread ended while loading the model"));
        }
    }
    let handle = EngineHandle {
        tx: Mutex::new(tx),
        pending: Arc::new(AtomicUsize::new(0)),
        max_queue: max_queue.max(1),
        version,
        alive,
    };
    Ok((handle, thread))
}

/// A job being worked on: its tensors (built once) and its finished rows.
struct Active {
    slot: Slot,
    positions: Option<Tensor>,
    images: Option<ImageBatch>,
    next_row: usize,
    done: Vec<Option<Generation>>,
    version: u64,
}

impl Active {
    fn started(&self) -> bool {
        self.next_row > 0
    }
    fn rows(&self) -> usize {
        self.slot.job.seeds.len()
    }
}

struct Engine {
    session: Session,
    model: Qwen3VL,
    rx: Receiver<Msg>,
    batch_rows: usize,
    version: Arc<AtomicU64>,
}

type ReloadReply = Sender<std::result::Result<f64, String>>;

impl Engine {
    fn run(&mut self) {
        let mut active: Vec<Active> = Vec::new();
        let mut reloads: Vec<(PathBuf, u64, ReloadReply)> = Vec::new();
        let mut stopping = false;
        loop {
            // Take everything that arrived; block briefly only when idle.
            let idle = active.is_empty() && reloads.is_empty();
            let first = if idle {
                match self.rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        stopping = true;
                        None
                    }
                }
            } else {
                None
            };
            for msg in first.into_iter().chain(std::iter::from_fn(|| self.rx.try_recv().ok())) {
                match msg {
                    Msg::Jobs(slots) => active.extend(slots.into_iter().map(|slot| Active {
                        done: (0..slot.job.seeds.len()).map(|_| None).collect(),
                        slot,
                        positions: None,
                        images: None,
                        next_row: 0,
                        version: 0,
                    })),
                    Msg::Reload { dir, version, reply } => reloads.push((dir, version, reply)),
                    Msg::Stop => stopping = true,
                }
            }
            // Drop jobs nobody waits for, and those whose deadline passed before they started.
            let now = Instant::now();
            active.retain(|a| {
                if a.slot.cancelled.load(Ordering::SeqCst) {
                    return false;
                }
                if !a.started() && now >= a.slot.deadline {
                    let _ = a.slot.reply.send((a.slot.index, Err(EngineError::Timeout)));
                    return false;
                }
                true
            });
            // Reload once every started job has finished on the old weights.
            if !reloads.is_empty() && !active.iter().any(Active::started) {
                for (dir, version, reply) in reloads.drain(..) {
                    let _ = reply.send(self.reload(&dir, version));
                }
                continue;
            }
            let batch = pick_batch(&active, self.batch_rows, !reloads.is_empty());
            if batch.is_empty() {
                if stopping && active.is_empty() && reloads.is_empty() {
                    return;
                }
                continue;
            }
            self.run_batch(&mut active, &batch);
            // Send every finished job, keeping the others in arrival order.
            let mut k = 0;
            while k < active.len() {
                if active[k].done.iter().all(Option::is_some) {
                    let a = active.remove(k);
                    let samples = a.done.into_iter().flatten().collect();
                    let out = GenOutput { samples, weight_version: a.version };
                    let _ = a.slot.reply.send((a.slot.index, Ok(out)));
                } else {
                    k += 1;
                }
            }
        }
    }

    fn run_batch(&mut self, active: &mut [Active], batch: &[(usize, usize)]) {
        // Build each job's tensors once; a job whose inputs fail is answered alone.
        let mut failed = false;
        for &(ai, _) in batch {
            let a = &mut active[ai];
            if a.positions.is_some() {
                continue;
            }
            let built = catch_unwind(AssertUnwindSafe(|| self.tensors(&a.slot.job)))
                .unwrap_or_else(|p| {
                    Err(Error::runtime(format!(
                        "preparing the inputs panicked: {}",
                        panic_text(&p)
                    )))
                });
            match built {
                Ok((p, im)) => {
                    a.positions = Some(p);
                    a.images = im;
                }
                Err(e) => {
                    failed = true;
                    fail(a, e.report());
                }
            }
        }
        if failed {
            return; // the others are picked again next round
        }
        // One engine job per request in the batch: its rows share one prefill, each with its
        // own seed; requests with other settings share the batch.
        let mut jobs: Vec<Job<'_>> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for &(ai, row) in batch {
            let a = &active[ai];
            let (Some(position_ids), Some(&seed)) =
                (a.positions.as_ref(), a.slot.job.seeds.get(row))
            else {
                continue;
            };
            let sample = Sample { seed, cfg: &a.slot.job.sampling };
            match owner.last() {
                Some(&last) if last == ai => {
                    jobs.last_mut().into_iter().for_each(|j| j.samples.push(sample))
                }
                _ => {
                    owner.push(ai);
                    jobs.push(Job {
                        prompt: Prompt {
                            ids: &a.slot.job.ids,
                            position_ids,
                            images: a.images.as_ref(),
                            seed,
                        },
                        samples: vec![sample],
                    });
                }
            }
        }
        let model = &self.model;
        let rows = batch.len();
        let result = match catch_unwind(AssertUnwindSafe(|| generate_jobs(model, &jobs, rows))) {
            Ok(Ok(g)) => {
                let g: Vec<Generation> = g.into_iter().flatten().collect();
                if g.len() == batch.len() {
                    Ok(g)
                } else {
                    Err(format!("generate returned {} rows for {}", g.len(), batch.len()))
                }
            }
            Ok(Err(e)) => Err(e.report()),
            Err(p) => Err(format!("the engine panicked: {}", panic_text(&p))),
        };
        drop(jobs);
        match result {
            Ok(gens) => {
                let version = self.version.load(Ordering::SeqCst);
                for (&(ai, row), g) in batch.iter().zip(gens) {
                    let a = &mut active[ai];
                    if !a.started() {
                        a.version = version; // every row of a job runs on these weights
                    }
                    if let Some(slot) = a.done.get_mut(row) {
                        *slot = Some(g);
                    }
                    a.next_row = a.next_row.max(row + 1);
                }
            }
            Err(msg) => {
                tracing::error!("generation failed: {msg}");
                for &(ai, _) in batch {
                    fail(&active[ai], msg.clone());
                }
            }
        }
    }

    fn tensors(&self, job: &GenJob) -> Result<(Tensor, Option<ImageBatch>)> {
        let n = job.ids.len() as i64;
        if job.positions.len() != 4 * job.ids.len() {
            return Err(Error::runtime("position rows do not match the prompt length"));
        }
        let positions = Tensor::from_slice(&job.positions).view([4, n]);
        let images = ImageBatch::concat(&self.session.vision(&self.model).patchify(&job.pixels)?);
        Ok((positions, images))
    }

    fn reload(&mut self, dir: &std::path::Path, version: u64) -> std::result::Result<f64, String> {
        let start = Instant::now();
        let config = self.model.config().clone();
        let fresh = Qwen3VL::new(&config, self.model.kind(), self.model.device(), ParamInit::Zeros);
        let loaded = catch_unwind(AssertUnwindSafe(|| {
            weights::load(fresh.var_store(), dir, config.tie_word_embeddings)
        }));
        match loaded {
            Ok(Ok(())) => {
                self.model = fresh;
                self.version.store(version, Ordering::SeqCst);
                let secs = start.elapsed().as_secs_f64();
                tracing::info!(
                    "weights {} loaded as version {version} in {secs:.2} s",
                    dir.display()
                );
                Ok(secs)
            }
            Ok(Err(e)) => Err(e.report()),
            Err(p) => Err(format!("loading the weights panicked: {}", panic_text(&p))),
        }
    }
}

/// The rows of the next batch: `(active index, row)`, at most `rows`, oldest jobs first,
/// whatever their sampling settings (each row samples on its own); while a reload waits, only
/// jobs already started.
fn pick_batch(active: &[Active], rows: usize, started_only: bool) -> Vec<(usize, usize)> {
    let eligible = |a: &Active| a.next_row_left() && (!started_only || a.started());
    let mut out = Vec::new();
    for (ai, a) in active.iter().enumerate() {
        if !eligible(a) {
            continue;
        }
        for row in a.next_row..a.rows() {
            if out.len() == rows {
                return out;
            }
            out.push((ai, row));
        }
    }
    out
}

impl Active {
    fn next_row_left(&self) -> bool {
        self.next_row < self.rows()
    }
}

/// Answer a job with a failure and drop the rest of its request.
fn fail(a: &Active, msg: String) {
    if !a.slot.cancelled.swap(true, Ordering::SeqCst) {
        let _ = a.slot.reply.send((a.slot.index, Err(EngineError::Failed(msg))));
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
