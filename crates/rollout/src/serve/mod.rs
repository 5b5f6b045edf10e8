//! `coordexp serve`: rollouts over HTTP, for stage 2 at scale and for any OpenAI client.
//!
//! Why a server of our own: stage 2 compares the prompt ids a rollout server used with the
//! learner's encoding and drops every sample that differs, and vLLM or ms-swift only agree with
//! the learner when their image processor is configured never to resize and their template is
//! the model's. `coordexp serve` encodes with the learner's own [`coordexp_text::Encoder`], so
//! the ids agree by construction, loads trained weights from a safetensors directory between
//! batches (no NCCL), and reports with every answer the weight version that produced it.
//!
//! It speaks two protocols on one port (every route also with a trailing slash):
//!
//! | route | protocol | behaviour |
//! |---|---|---|
//! | `GET /health` | both | `{"status": "ok", "weight_version": N}`; 503 once the engine has died |
//! | `GET /v1/models` | OpenAI | the one served model |
//! | `POST /v1/chat/completions` | OpenAI + vLLM extras | JSON or SSE (`stream: true`, ends with `data: [DONE]`); `return_token_ids` adds `token_ids` per choice and `prompt_token_ids` |
//! | `GET /get_world_size` | ms-swift | `{"world_size": 1}` |
//! | `POST /get_engine_type` | ms-swift | `{"engine_type": "LLMEngine", …}` |
//! | `POST /infer` | ms-swift | a list of `RolloutOutput`s in request order; `return_details` adds the ids |
//! | `POST /reset_prefix_cache`, `/close_communicator`, … | ms-swift | 200 (no cache to reset) |
//! | `POST /init_communicator`, `/update_named_param`, `/update_flattened_params`, … | ms-swift NCCL | **501** at once, naming `/v1/weights` (a 200 would hang a swift client in its collective) |
//! | `POST /v1/weights` | ours | `{"path": DIR, "version": N}`: load `DIR/*.safetensors` once the requests already started have finished (new ones wait), serve them as version `N` |
//! | `GET /v1/weights` | ours | `{"version": N}` |
//!
//! Every response carries the header `x-coordexp-weight-version`; generation responses also
//! carry a `weight_version` field (the version of the weights that produced *that* answer).
//!
//! Load control: at most `max_queue` generation requests wait or run at once (the next one gets
//! 503 with `Retry-After`), each has a deadline of `rollout.timeout_s` from its arrival (504
//! when it passes; the engine skips rows it has not started), SIGTERM / SIGINT stop accepting,
//! finish the requests in flight and return (a second signal exits at once). One log line per
//! request: method, route, status, latency, prompt and completion tokens.
//!
//! Layout: [`engine`] (the model thread, replaceable), [`prompt`] (messages → the learner's
//! encoding), [`sampling`] (request fields → sampler; generation → response fields), [`chat`]
//! and [`swift`] (the two protocols), [`http`] (replies and errors), [`faults`] (test-only
//! fault injection through `COORDEXP_SERVE_FAULTS`).

pub mod chat;
pub mod engine;
pub mod faults;
pub mod http;
pub mod prompt;
pub mod sampling;
pub mod swift;

use coordexp_core::config::schema::{Config, Decoding};
use coordexp_core::config::{self as config_loader};
use coordexp_core::seed::SplitMix64;
use coordexp_core::{Error, Result};
use coordexp_text::Encoder;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use faults::{FAULTS_ENV, Fault, Faults};

use crate::infer::RESOLVED_CONFIG;
use crate::session::Session;
use engine::{EngineError, EngineHandle};
use http::{ApiError, Reply};

/// The header that names the weight version behind a response.
pub const VERSION_HEADER: &str = "x-coordexp-weight-version";

/// How to serve (everything else comes from the config).
pub struct ServeOptions {
    /// The model directory (tokenizer, template, config.json, weights).
    pub model: PathBuf,
    /// A PEFT LoRA/DoRA adapter applied on top of `model` at start-up (a later weight sync
    /// replaces both).
    pub adapter: Option<PathBuf>,
    pub host: String,
    /// 0 picks a free port (see `ready_file` / `on_ready`).
    pub port: u16,
    /// Generation requests queued or running at once; more get 503 + `Retry-After`.
    pub max_queue: usize,
    /// Largest request body (and image file) accepted, in bytes.
    pub max_body_bytes: usize,
    /// Deadline of a request from its arrival; `None`: `rollout.timeout_s`.
    pub timeout: Option<Duration>,
    /// The name `/v1/models` reports; `None`: the model directory's name.
    pub model_name: Option<String>,
    /// Image paths must lie under this directory; `None`: any readable path.
    pub image_root: Option<PathBuf>,
    /// The weight version of the model directory's weights.
    pub weight_version: u64,
    /// Written with `HOST:PORT` once the server accepts requests (tests and launchers).
    pub ready_file: Option<PathBuf>,
    /// Called with the bound address once the server accepts requests.
    pub on_ready: Option<Box<dyn FnOnce(SocketAddr) + Send>>,
    /// Set to true to shut down gracefully (in-process use); SIGTERM/SIGINT set it too when
    /// `handle_signals`.
    pub stop: Arc<AtomicBool>,
    pub handle_signals: bool,
    /// Start-up lines and a periodic status line (every 30 s) besides the per-request lines.
    pub progress: bool,
    pub faults: Faults,
}

impl ServeOptions {
    /// Defaults for `model`: 127.0.0.1:8000, 256 queued requests, 64 MiB bodies.
    pub fn new(model: impl Into<PathBuf>) -> ServeOptions {
        ServeOptions {
            model: model.into(),
            adapter: None,
            host: "127.0.0.1".into(),
            port: 8000,
            max_queue: 256,
            max_body_bytes: 64 << 20,
            timeout: None,
            model_name: None,
            image_root: None,
            weight_version: 0,
            ready_file: None,
            on_ready: None,
            stop: Arc::new(AtomicBool::new(false)),
            handle_signals: false,
            progress: true,
            faults: Faults::none(),
        }
    }
}

/// What a serving session did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ServeSummary {
    pub address: String,
    pub requests: u64,
    pub generation_requests: u64,
    pub status_2xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub weight_version: u64,
    pub seconds: f64,
}

/// Load the config for `serve`: `config` when given, else the model directory's
/// `config.resolved.yaml` (a checkpoint), else the defaults; also where it came from.
pub fn load_config(config: Option<&Path>, model: &Path) -> Result<(Config, String)> {
    if let Some(p) = config {
        return Ok((config_loader::load(p)?.config, p.display().to_string()));
    }
    let stored = model.join(RESOLVED_CONFIG);
    if stored.is_file() {
        return Ok((config_loader::load(&stored)?.config, stored.display().to_string()));
    }
    Ok((Config::default(), "defaults".into()))
}

/// `coordexp serve`: load the config (see [`load_config`]) and [`serve`].
pub fn serve_with(config: Option<&Path>, opts: ServeOptions) -> Result<ServeSummary> {
    let (cfg, from) = load_config(config, &opts.model)?;
    tracing::info!("settings from {from}");
    serve(&cfg, opts)
}

/// State shared by the handler threads.
pub(crate) struct Ctx {
    pub model_name: String,
    pub model_path: String,
    encoder: Mutex<Encoder>,
    pub engine: EngineHandle,
    pub stop_ids: Vec<i64>,
    pub max_model_len: usize,
    pub default_max_tokens: usize,
    pub decoding: Decoding,
    pub max_body: usize,
    pub timeout: Duration,
    pub faults: Faults,
    pub image_root: Option<PathBuf>,
    pub created: u64,
    stopping: AtomicBool,
    gen_counter: AtomicU64,
    next_id: AtomicU64,
    seeds: Mutex<SplitMix64>,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    s2: AtomicU64,
    s4: AtomicU64,
    s5: AtomicU64,
    prompt: AtomicU64,
    completion: AtomicU64,
}

impl Ctx {
    /// A fresh encoder for one request (cheap: shared tokenizer and template).
    pub fn encoder(&self) -> Result<Encoder, ApiError> {
        self.encoder
            .lock()
            .map(|e| e.clone())
            .map_err(|_| ApiError::server("the encoder lock is poisoned"))
    }

    /// A seed for a request that did not send one.
    pub fn random_seed(&self) -> u64 {
        self.seeds.lock().map(|mut s| s.next_u64()).unwrap_or(0)
    }

    /// The number of this generation request (1-based) and its faults.
    pub fn next_generation(&self) -> (u64, Vec<Fault>) {
        let k = self.gen_counter.fetch_add(1, Ordering::SeqCst) + 1;
        (k, self.faults.for_request(k))
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    pub fn version(&self) -> u64 {
        self.engine.version()
    }

    /// The completion budget of a prompt: `max_tokens` (clamped to the context when `clamp`,
    /// else an error past it) or the default, within `rollout.max_model_len`.
    pub fn max_new(
        &self,
        prompt_len: usize,
        asked: Option<usize>,
        clamp: bool,
    ) -> Result<usize, ApiError> {
        let room = self.max_model_len.saturating_sub(prompt_len);
        if room == 0 {
            return Err(ApiError::bad_request(format!(
                "the prompt has {prompt_len} tokens, at or above the context length {} (rollout.max_model_len)",
                self.max_model_len
            )));
        }
        match asked {
            None => Ok(self.default_max_tokens.min(room).max(1)),
            Some(m) if m <= room || clamp => Ok(m.min(room)),
            Some(m) => Err(ApiError::bad_request(format!(
                "this model's maximum context length is {} tokens; the prompt has {prompt_len} and max_tokens asks {m} more",
                self.max_model_len
            ))),
        }
    }
}

/// Map an engine failure to its HTTP answer.
pub(crate) fn engine_error(e: EngineError, timeout: Duration) -> ApiError {
    match e {
        EngineError::Full { max_queue } => {
            let mut a = ApiError::new(
                503,
                "overloaded_error",
                format!("the server has {max_queue} requests queued; retry later"),
            );
            a.retry_after = Some(Duration::from_secs(1));
            a
        }
        EngineError::Timeout => ApiError::new(
            504,
            "timeout_error",
            format!(
                "no answer within the server's deadline of {:.1} s (rollout.timeout_s); send fewer samples per request or raise the deadline",
                timeout.as_secs_f64()
            ),
        ),
        EngineError::Failed(m) => ApiError::server(format!("generation failed: {m}")),
        EngineError::Stopped => {
            let mut a = ApiError::new(503, "unavailable_error", "the server is shutting down");
            a.retry_after = Some(Duration::from_secs(1));
            a
        }
    }
}

/// Serve `cfg`'s rollout settings on the model of `opts` until `opts.stop` is set (or a
/// signal arrives when `opts.handle_signals`).
pub fn serve(cfg: &Config, opts: ServeOptions) -> Result<ServeSummary> {
    let start = Instant::now();
    let session = Session::open(cfg, Some(&opts.model), None)?;
    let stop_ids = session.stop_ids()?;
    let encoder = session.encoder.clone();
    let timeout = match opts.timeout {
        Some(t) => t,
        None => {
            let s = cfg.rollout.timeout_s;
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::input(format!("rollout.timeout_s is {s}"))
                    .at("rollout.timeout_s")
                    .hint("set a positive number of seconds"));
            }
            Duration::from_secs_f64(s.min(1e7))
        }
    };
    let batch = cfg.rollout.decode_batch_size.max(1) as usize;
    // Start-up progress: loading a real model takes a while; the ready line below ends it.
    if opts.progress {
        tracing::info!("loading the model from {} …", opts.model.display());
    }
    let (engine, engine_thread) =
        engine::start(session, &opts, batch, cfg.rollout.max_model_len.max(1))?;
    let server = tiny_http::Server::http((opts.host.as_str(), opts.port)).map_err(|e| {
        Error::input(format!("cannot listen on {}:{}: {e}", opts.host, opts.port))
            .hint("choose another --port (0 picks a free one) or stop the process using it")
    })?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| Error::runtime("the server is not listening on an IP address"))?;
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let model_name = opts.model_name.clone().unwrap_or_else(|| {
        opts.model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "coordexp".into())
    });
    let ctx = Arc::new(Ctx {
        model_name,
        model_path: opts.model.display().to_string(),
        encoder: Mutex::new(encoder),
        engine,
        stop_ids,
        max_model_len: cfg.rollout.max_model_len.max(1),
        default_max_tokens: cfg.rollout.max_new_tokens.max(1),
        decoding: cfg.rollout.decoding.clone(),
        max_body: opts.max_body_bytes.max(1024),
        timeout,
        faults: opts.faults.clone(),
        image_root: opts.image_root.clone(),
        created,
        stopping: AtomicBool::new(false),
        gen_counter: AtomicU64::new(0),
        next_id: AtomicU64::new(0),
        seeds: Mutex::new(SplitMix64::new(
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1),
        )),
        stats: Stats::default(),
    });

    let stop = opts.stop.clone();
    let mut signal_ids = Vec::new();
    if opts.handle_signals {
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            // A second signal while stopping exits at once.
            let ids = [
                signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone()),
                signal_hook::flag::register(sig, stop.clone()),
            ];
            for id in ids {
                signal_ids.push(id.map_err(|e| {
                    Error::runtime(format!("cannot install the signal handler: {e}"))
                })?);
            }
        }
    }

    if let Some(f) = &opts.ready_file {
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, addr.to_string())
            .and_then(|_| std::fs::rename(&tmp, f))
            .map_err(|e| Error::io("write", f, &e))?;
    }
    tracing::info!(
        "serving {} (weight version {}) on http://{addr} — OpenAI: /v1/chat/completions, ms-swift: /infer/, weights: POST /v1/weights",
        ctx.model_path,
        ctx.version()
    );
    if let Some(cb) = opts.on_ready {
        cb(addr);
    }

    let active = Arc::new(AtomicUsize::new(0));
    let max_handlers = opts.max_queue.max(1) + 64;
    let mut last_status = Instant::now();
    let mut accept_error = None;
    while !stop.load(Ordering::SeqCst) {
        let req = match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(r)) => r,
            Ok(None) => {
                if opts.progress && last_status.elapsed() >= Duration::from_secs(30) {
                    last_status = Instant::now();
                    let s = &ctx.stats;
                    tracing::info!(
                        "status: {} requests, {} queued, {} prompt / {} completion tokens, weight version {}",
                        s.requests.load(Ordering::SeqCst),
                        ctx.engine.pending(),
                        s.prompt.load(Ordering::SeqCst),
                        s.completion.load(Ordering::SeqCst),
                        ctx.version()
                    );
                }
                if !ctx.engine.alive() {
                    accept_error = Some(Error::runtime("the generation engine stopped"));
                    break;
                }
                continue;
            }
            Err(e) => {
                accept_error = Some(Error::runtime(format!("the server stopped accepting: {e}")));
                break;
            }
        };
        if active.load(Ordering::SeqCst) >= max_handlers {
            let mut e =
                ApiError::new(503, "overloaded_error", "too many open requests; retry later");
            e.retry_after = Some(Duration::from_secs(1));
            let (m, u) = (req.method().to_string(), req.url().to_string());
            finish(&ctx, req, &m, &u, Instant::now(), e.reply(ctx.version()));
            continue;
        }
        let guard = Active::enter(&active);
        let ctx2 = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("coordexp-http".into())
            .stack_size(4 << 20)
            .spawn(move || {
                let _guard = guard; // leaves even if the handler panics
                handle(&ctx2, req);
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a handler thread: {e}");
        }
    }

    // Graceful stop: no new requests; the ones in flight finish (bounded by their deadline).
    ctx.stopping.store(true, Ordering::SeqCst);
    drop(server);
    tracing::info!("stopping: waiting for {} request(s) in flight", active.load(Ordering::SeqCst));
    let wait_until = Instant::now() + timeout + Duration::from_secs(10);
    while active.load(Ordering::SeqCst) > 0 && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(20));
    }
    ctx.engine.stop();
    let _ = engine_thread.join();
    for id in signal_ids {
        signal_hook::low_level::unregister(id);
    }
    let s = &ctx.stats;
    let summary = ServeSummary {
        address: addr.to_string(),
        requests: s.requests.load(Ordering::SeqCst),
        generation_requests: ctx.gen_counter.load(Ordering::SeqCst),
        status_2xx: s.s2.load(Ordering::SeqCst),
        status_4xx: s.s4.load(Ordering::SeqCst),
        status_5xx: s.s5.load(Ordering::SeqCst),
        prompt_tokens: s.prompt.load(Ordering::SeqCst),
        completion_tokens: s.completion.load(Ordering::SeqCst),
        weight_version: ctx.version(),
        seconds: start.elapsed().as_secs_f64(),
    };
    match accept_error {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

/// One handler thread counted in `active` while it lives.
struct Active(Arc<AtomicUsize>);

impl Active {
    fn enter(count: &Arc<AtomicUsize>) -> Active {
        count.fetch_add(1, Ordering::SeqCst);
        Active(count.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answer one request on its own thread.
fn handle(ctx: &Ctx, mut req: tiny_http::Request) {
    let received = Instant::now();
    let method = req.method().to_string();
    let url = req.url().to_string();
    let reply = match dispatch(ctx, &method, http::route(&url), &mut req, received) {
        Ok(r) => r,
        Err(e) => e.reply(ctx.version()),
    };
    finish(ctx, req, &method, &url, received, reply);
}

/// Count, log and write a reply.
fn finish(ctx: &Ctx, req: tiny_http::Request, method: &str, url: &str, t0: Instant, reply: Reply) {
    let s = &ctx.stats;
    s.requests.fetch_add(1, Ordering::SeqCst);
    match reply.status {
        200..=299 => &s.s2,
        400..=499 => &s.s4,
        _ => &s.s5,
    }
    .fetch_add(1, Ordering::SeqCst);
    s.prompt.fetch_add(reply.tokens.0 as u64, Ordering::SeqCst);
    s.completion.fetch_add(reply.tokens.1 as u64, Ordering::SeqCst);
    tracing::info!(
        "{method} {} {} {:.0} ms prompt={} completion={}",
        http::route(url),
        reply.status,
        t0.elapsed().as_secs_f64() * 1000.0,
        reply.tokens.0,
        reply.tokens.1
    );
    http::respond(req, reply);
}

/// The NCCL weight-transfer routes of ms-swift / TRL: refused at once (see the module docs).
const NCCL_ROUTES: &[&str] = &[
    "/init_communicator",
    "/update_named_param",
    "/update_flattened_params",
    "/update_adapter_flattened_param",
    "/update_adapter_flattened_params",
    "/get_model_state_keys",
];

/// Cache and lifecycle routes of ms-swift that have nothing to do here: 200.
const NOOP_ROUTES: &[&str] = &[
    "/reset_prefix_cache",
    "/close_communicator",
    "/process_weights_after_loading",
    "/reset_encoder_cache",
    "/reset_mm_cache",
];

fn dispatch(
    ctx: &Ctx,
    method: &str,
    route: &str,
    req: &mut tiny_http::Request,
    received: Instant,
) -> Result<Reply, ApiError> {
    let v = ctx.version();
    let ok = |value: Value| Ok(Reply::json(200, &value, v));
    let wrong_method = |allowed: &str| {
        Err(ApiError::new(405, "method_not_allowed", format!("{route} takes {allowed}")))
    };
    match route {
        "/health" => match method {
            "GET" | "HEAD" if ctx.engine.alive() => {
                ok(json!({"status": "ok", "weight_version": v, "queued": ctx.engine.pending()}))
            }
            "GET" | "HEAD" => {
                Err(ApiError::new(503, "unavailable_error", "the engine has stopped"))
            }
            _ => wrong_method("GET"),
        },
        "/v1/models" => match method {
            "GET" => ok(json!({"object": "list", "data": [{
                "id": ctx.model_name,
                "object": "model",
                "created": ctx.created,
                "owned_by": "coordexp",
                "root": ctx.model_path,
                "max_model_len": ctx.max_model_len,
            }]})),
            _ => wrong_method("GET"),
        },
        "/v1/chat/completions" => match method {
            "POST" => {
                let body = http::parse_json(&http::read_body(req, ctx.max_body)?)?;
                chat::handle(ctx, &body, received)
            }
            _ => wrong_method("POST"),
        },
        "/infer" => match method {
            "POST" => {
                let body = http::parse_json(&http::read_body(req, ctx.max_body)?)?;
                swift::infer(ctx, &body, received)
            }
            _ => wrong_method("POST"),
        },
        "/get_world_size" => ok(json!({"world_size": 1})),
        "/get_engine_type" => ok(json!({
            "engine_type": "LLMEngine",
            "enable_multi_turn": false,
            "use_gym_env": false,
            "enable_lora": false,
        })),
        "/v1/weights" => match method {
            "GET" => ok(json!({"version": v})),
            "POST" => {
                let body = http::parse_json(&http::read_body(req, ctx.max_body)?)?;
                reload(ctx, &body)
            }
            _ => wrong_method("GET or POST"),
        },
        r if NOOP_ROUTES.contains(&r) => ok(json!({"message": "ok"})),
        r if NCCL_ROUTES.contains(&r) => Err(ApiError::new(
            501,
            "not_implemented",
            format!(
                "{r}: coordexp serve has no NCCL weight transfer; write the weights as safetensors to a directory the server can read and POST /v1/weights {{\"path\": DIR, \"version\": N}}"
            ),
        )),
        _ => Err(ApiError::not_found(format!(
            "no route {method} {route}; routes: GET /health, GET /v1/models, POST /v1/chat/completions, POST /infer/, GET /get_world_size/, POST /get_engine_type/, POST /v1/weights"
        ))),
    }
}

/// `POST /v1/weights {"path": DIR, "version": N}`.
fn reload(ctx: &Ctx, body: &Value) -> Result<Reply, ApiError> {
    let path = body.get("path").and_then(Value::as_str).ok_or_else(|| {
        ApiError::bad_request("send {\"path\": DIR, \"version\": N}: `path` is missing")
    })?;
    let version = body.get("version").and_then(Value::as_u64).ok_or_else(|| {
        ApiError::bad_request(
            "send {\"path\": DIR, \"version\": N}: `version` must be an integer ≥ 0",
        )
    })?;
    let dir = PathBuf::from(path);
    if !dir.is_dir() {
        return Err(ApiError::bad_request(format!(
            "{path} is not a directory the server can read (the server and the trainer need a shared filesystem)"
        )));
    }
    let has_weights = std::fs::read_dir(&dir)
        .map(|it| it.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".safetensors")))
        .unwrap_or(false);
    if !has_weights {
        return Err(ApiError::bad_request(format!(
            "{path} holds no *.safetensors file; write the model there first"
        )));
    }
    match ctx.engine.reload(dir, version) {
        Ok(seconds) => Ok(Reply::json(
            200,
            &json!({"version": version, "seconds": seconds, "path": path}),
            version,
        )),
        Err(m) => Err(ApiError::bad_request(format!(
            "cannot load the weights in {path} (the old weights keep serving): {m}"
        ))),
    }
}

/// Seconds since the Unix epoch (the `created` field).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Whatever a client sends, parsing answers (a value or a 4xx), never panics.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary JSON, biased towards the keys the parsers look at.
    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("role".to_string()),
            Just("content".to_string()),
            Just("type".to_string()),
            Just("text".to_string()),
            Just("image_url".to_string()),
            Just("url".to_string()),
            Just("image".to_string()),
            Just("temperature".to_string()),
            Just("top_k".to_string()),
            Just("n".to_string()),
            Just("seed".to_string()),
            Just("stop".to_string()),
            Just("max_tokens".to_string()),
            Just("logprobs".to_string()),
            "[a-z_]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            prop_oneof![
                Just("user".to_string()),
                Just("system".to_string()),
                Just("assistant".to_string()),
                Just("image_url".to_string()),
                Just("text".to_string()),
                Just("<image>".to_string()),
                Just("data:image/png;base64,iVBORw0KGgo=".to_string()),
                ".{0,12}",
            ]
            .prop_map(Value::from),
        ];
        coordexp_testkit::json_tree(key, leaf, 4, 48)
    }

    proptest! {
        #[test]
        fn message_and_sampling_parsers_never_panic(v in json_value(), images in json_value()) {
            if let Err(e) = prompt::parse_messages(&v, Some(&images)) {
                prop_assert!((400..500).contains(&e.status));
            }
            let _ = prompt::parse_messages(&v, None);
            if let Some(o) = v.as_object()
                && let Err(e) = sampling::parse(o, &Decoding::default())
            {
                prop_assert_eq!(e.status, 400);
            }
        }

        #[test]
        fn fault_rules_never_panic(text in ".{0,40}") {
            let _ = Faults::parse(&text);
        }

        #[test]
        fn routes_never_panic(url in ".{0,40}") {
            let r = http::route(&url);
            prop_assert!(!r.is_empty());
        }
    }
}
