//! The generation engine of `coordexp serve`: one thread that owns the model.
//!
//! Why one thread: the model's tensors (and libtorch's intra-op thread pool) live in one place,
//! so HTTP handler threads never touch them; they submit [`GenJob`]s and wait for the answer
//! with their deadline. Why continuous batching: the engine keeps one [`Decoder`] of up to
//! `rollout.decode_batch_size` rows alive and, before every decode step, admits the oldest
//! waiting samples into the rows that finished — a request that arrives while others decode
//! starts at the next step instead of waiting for the whole batch (a job with `n` samples is
//! `n` rows sharing one prefill, sample `j` seeded `seed + j`; requests with any settings share
//! the rows). Weight reloads wait until every started job has finished on the old weights —
//! no new job starts meanwhile — so every job's samples come from one weight version, which is
//! reported with them.
//!
//! The boundary is deliberately small ([`EngineHandle::submit`], [`EngineHandle::reload`],
//! [`EngineHandle::stop`]): the HTTP layer knows nothing of rows or steps.

use coordexp_core::{Error, Result};
use coordexp_model::ParamInit;
use coordexp_model::generate::{Decoder, Generation, Job, Prompt, Sample, SamplingConfig};
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

/// A submitted request: wait for it with [`Ticket::wait`]. Dropping it cancels its rows (those
/// decoding leave the decoder at the engine's next turn) and frees its queue place.
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

    /// Load the weights in `dir` once the jobs already started have finished (no new job
    /// starts meanwhile) and call them `version`; the seconds the load took, or why it failed
    /// (the old weights keep serving).
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
    max_model_len: usize,
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
            let mut engine = Engine {
                session,
                model,
                rx,
                batch_rows: batch_rows.max(1),
                max_columns: max_model_len,
                version: v,
            };
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

/// A job being worked on: its tensors (built once), how many of its rows were admitted and
/// its finished rows.
struct Active {
    /// The engine's name for it, the tag of its rows in the decoder.
    id: u64,
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
    /// The context length: the most cache columns a row needs.
    max_columns: usize,
    version: Arc<AtomicU64>,
}

type ReloadReply = Sender<std::result::Result<f64, String>>;

/// A decoder row's tag: the job's id and the job row of its first sample.
type RowTag = (u64, usize);

impl Engine {
    fn run(&mut self) {
        let mut active: Vec<Active> = Vec::new();
        let mut reloads: Vec<(PathBuf, u64, ReloadReply)> = Vec::new();
        let mut decoder = self.decoder();
        let mut next_id = 0u64;
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
                    Msg::Jobs(slots) => {
                        for slot in slots {
                            next_id += 1;
                            active.push(Active {
                                id: next_id,
                                done: (0..slot.job.seeds.len()).map(|_| None).collect(),
                                slot,
                                positions: None,
                                images: None,
                                next_row: 0,
                                version: 0,
                            });
                        }
                    }
                    Msg::Reload { dir, version, reply } => reloads.push((dir, version, reply)),
                    Msg::Stop => stopping = true,
                }
            }
            // Drop jobs nobody waits for (their rows too), and those whose deadline passed
            // before they started.
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
            decoder.cancel(|(id, _)| !active.iter().any(|a| a.id == *id));
            // Reload once every started job has finished on the old weights.
            if !reloads.is_empty() && !active.iter().any(Active::started) {
                for (dir, version, reply) in reloads.drain(..) {
                    let _ = reply.send(self.reload(&dir, version));
                }
                continue;
            }
            if let Err(msg) = self.admit(&mut active, &mut decoder, !reloads.is_empty()) {
                decoder = self.abandon(&active, msg);
            }
            send_finished(&mut active); // jobs whose every row ended at its first token
            let model = &self.model;
            if decoder.busy() == 0 {
                // An idle decoder keeps no cache memory.
                let compacted = guarded("the engine", || {
                    decoder.compact(model);
                    Ok(())
                });
                if let Err(msg) = compacted {
                    decoder = self.abandon(&active, msg);
                }
                if stopping && active.is_empty() && reloads.is_empty() {
                    return;
                }
                continue;
            }
            let waiting = active.iter().any(Active::next_row_left);
            let stepped = guarded("the engine", || {
                if !waiting {
                    decoder.compact(model);
                }
                decoder.step(model)
            });
            match stepped {
                Ok(finished) => record(&mut active, finished),
                Err(msg) => decoder = self.abandon(&active, msg),
            }
            send_finished(&mut active);
        }
    }

    fn decoder(&self) -> Decoder<RowTag> {
        Decoder::new(self.batch_rows, self.max_columns)
    }

    /// After the decoder failed: answer every job with rows in it with the failure and start
    /// again from an empty decoder (the old one's cache may be half-changed; dropping it also
    /// frees its memory after an allocation failure).
    fn abandon(&self, active: &[Active], msg: String) -> Decoder<RowTag> {
        tracing::error!("generation failed: {msg}");
        for a in active.iter().filter(|a| a.started() && !a.finished()) {
            fail(a, msg.clone());
        }
        self.decoder()
    }

    /// Admit the oldest waiting samples into the decoder's free rows (while a reload waits,
    /// only samples of jobs already started). A job whose inputs fail is answered alone; an
    /// error of the decoder itself (its prefill) is returned.
    fn admit(
        &self,
        active: &mut [Active],
        decoder: &mut Decoder<RowTag>,
        started_only: bool,
    ) -> std::result::Result<(), String> {
        let mut free = decoder.free();
        let mut picked: Vec<(usize, usize)> = Vec::new(); // (active index, samples)
        for (ai, a) in active.iter_mut().enumerate() {
            if free == 0 {
                break;
            }
            if !a.next_row_left() || (started_only && !a.started()) {
                continue;
            }
            if a.positions.is_none() {
                let built = guarded("preparing the inputs", || {
                    let (positions, images) = self.tensors(&a.slot.job)?;
                    let cfg = &a.slot.job.sampling;
                    let prompt = Prompt {
                        ids: &a.slot.job.ids,
                        position_ids: &positions,
                        images: images.as_ref(),
                        seed: 0,
                    };
                    Job { prompt, samples: vec![Sample { seed: 0, cfg }] }.check()?;
                    Ok((positions, images))
                });
                match built {
                    Ok((p, im)) => {
                        a.positions = Some(p);
                        a.images = im;
                    }
                    Err(msg) => {
                        fail(a, msg);
                        continue;
                    }
                }
            }
            let n = (a.rows() - a.next_row).min(free);
            free -= n;
            picked.push((ai, n));
        }
        if picked.is_empty() {
            return Ok(());
        }
        // One engine job per request: its admitted rows share one prefill, each with its seed.
        let jobs: Vec<(Job<'_>, RowTag)> = picked
            .iter()
            .filter_map(|&(ai, n)| {
                let a = &active[ai];
                let seeds = a.slot.job.seeds.get(a.next_row..a.next_row + n)?;
                let cfg = &a.slot.job.sampling;
                let prompt = Prompt {
                    ids: &a.slot.job.ids,
                    position_ids: a.positions.as_ref()?,
                    images: a.images.as_ref(),
                    seed: *seeds.first()?,
                };
                let samples = seeds.iter().map(|&seed| Sample { seed, cfg }).collect();
                Some((Job { prompt, samples }, (a.id, a.next_row)))
            })
            .collect();
        if jobs.len() != picked.len() {
            return Err("a picked job lost its inputs (a bug in the engine)".into());
        }
        let model = &self.model;
        let finished = guarded("the engine", || decoder.admit(model, &jobs))?;
        drop(jobs);
        let version = self.version.load(Ordering::SeqCst);
        for &(ai, n) in &picked {
            let a = &mut active[ai];
            if !a.started() {
                a.version = version; // every row of a job runs on these weights
            }
            a.next_row += n;
        }
        record(active, finished);
        Ok(())
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
        guarded("loading the weights", || {
            weights::load(fresh.var_store(), dir, config.tie_word_embeddings)
        })?;
        self.model = fresh;
        self.version.store(version, Ordering::SeqCst);
        let secs = start.elapsed().as_secs_f64();
        tracing::info!("weights {} loaded as version {version} in {secs:.2} s", dir.display());
        Ok(secs)
    }
}

impl Active {
    fn next_row_left(&self) -> bool {
        self.next_row < self.rows()
    }

    fn finished(&self) -> bool {
        self.done.iter().all(Option::is_some)
    }
}

/// Put finished rows in their jobs' places.
fn record(active: &mut [Active], finished: Vec<(RowTag, usize, Generation)>) {
    for ((id, first), k, g) in finished {
        if let Some(a) = active.iter_mut().find(|a| a.id == id)
            && let Some(slot) = a.done.get_mut(first + k)
        {
            *slot = Some(g);
        }
    }
}

/// Send every job whose rows are all finished, keeping the others in arrival order.
fn send_finished(active: &mut Vec<Active>) {
    let mut k = 0;
    while k < active.len() {
        if active[k].finished() {
            let a = active.remove(k);
            let samples = a.done.into_iter().flatten().collect();
            let out = GenOutput { samples, weight_version: a.version };
            let _ = a.slot.reply.send((a.slot.index, Ok(out)));
        } else {
            k += 1;
        }
    }
}

/// Answer a job with a failure and drop the rest of its request.
fn fail(a: &Active, msg: String) {
    if !a.slot.cancelled.swap(true, Ordering::SeqCst) {
        let _ = a.slot.reply.send((a.slot.index, Err(EngineError::Failed(msg))));
    }
}

/// Run `f`, turning its error, or its panic (named by `what`), into the message a failed job
/// is answered with.
fn guarded<R>(what: &str, f: impl FnOnce() -> Result<R>) -> std::result::Result<R, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.report()),
        Err(p) => Err(format!("{what} panicked: {}", panic_text(&p))),
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
