//! HTTP rollout backends: `rollout.backend: openai` (`POST /v1/chat/completions`, vLLM's
//! `return_token_ids`) and `swift` (`POST /infer/` with `return_details`), against
//! `coordexp serve`, vLLM or ms-swift servers.
//!
//! Why these rules (the reference crashed the step on any server hiccup, DESIGN "where we
//! differ"): a rollout is side-effect free, so a failed call is resent; a call that keeps
//! failing must not take healthy requests down with it; and a request that fails for good
//! becomes its own `Err`, which the trainer trains as an invalid rollout and counts.
//!
//! - **Assignment**: request `i` of `N` goes to server `⌊i·S/N⌋` (contiguous chunks, as
//!   ms-swift's client does), so the same step sends the same requests to the same servers.
//! - **Calls**: `openai` sends one request (its `n` samples) per call; `swift` groups
//!   neighbouring requests with equal settings and consecutive seeds into one `/infer/` call
//!   (the protocol has one seed per call: request `i` gets `seed + i`), else one per call. Up
//!   to `concurrency` calls per server are in flight (the server batches them).
//! - **Timeouts**: connect `min(10 s, rollout.timeout_s)`, the whole call `rollout.timeout_s`.
//! - **Retries**: a timeout, a transport error or a 5xx is resent up to `rollout.retries`
//!   times with exponential backoff (base 0.5 s, at most 8 s, or the server's `Retry-After`).
//! - **Split on failure**: a multi-request call that still fails (5xx, 4xx, a malformed or
//!   wrong-length answer, a timeout) is bisected and each half sent on its own, down to single
//!   requests; a single request that fails gets its own `Err`. A transport failure (refused,
//!   reset) after the retries, or a single request timing out, marks the server down for the
//!   rest of the call: its remaining requests fail at once with that error instead of
//!   waiting out every timeout again.
//! - **Answers**: ids are authoritative, prompt ids lose left padding, the weight version comes
//!   from the answer (`weight_version`, else the `x-coordexp-weight-version` header, else the
//!   last synced version); see `wire`.
//! - **Weights**: [`HttpBackend::sync_weights`] writes the model to the sync directory as
//!   safetensors and has every server load it (`POST /v1/weights`); afterwards an answer from
//!   other weights (a server restarted with its base weights) triggers one re-sync of that
//!   server and one resend, then [`BackendError::StaleWeights`].

mod wire;

#[cfg(test)]
mod tests;

use coordexp_core::config::schema::{Config, RolloutBackend as BackendKind};
use coordexp_core::{Error, Result};
use coordexp_model::model::Qwen3VL;
use coordexp_text::Encoder;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{BackendError, RequestResult, RolloutBackend, RolloutRequest, SyncReport};
use crate::serve::VERSION_HEADER;
use wire::ParseRules;

/// Which protocol the servers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `POST /v1/chat/completions` with `return_token_ids`.
    OpenAi,
    /// `POST /infer/` with `return_details`.
    Swift,
}

/// Settings of an [`HttpBackend`] (see [`backend_from_config`] for the config mapping).
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub protocol: Protocol,
    /// Base URLs (`http://host:port`).
    pub servers: Vec<String>,
    /// The whole call's deadline (connect: at most 10 s of it).
    pub timeout: Duration,
    /// Resends of a call after a timeout, transport error or 5xx.
    pub retries: u32,
    /// The first backoff; doubled per retry up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Calls in flight per server.
    pub concurrency: usize,
    /// Most requests in one `/infer/` call.
    pub max_call: usize,
    /// Where [`HttpBackend::sync_weights`] writes the model (a directory the servers can read).
    pub sync_dir: Option<PathBuf>,
}

impl HttpOptions {
    /// Defaults: 240 s, 2 retries from 0.5 s to 8 s, 4 calls per server, 64 requests per call.
    pub fn new(protocol: Protocol, servers: Vec<String>) -> HttpOptions {
        HttpOptions {
            protocol,
            servers,
            timeout: Duration::from_secs(240),
            retries: 2,
            backoff: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            concurrency: 4,
            max_call: 64,
            sync_dir: None,
        }
    }
}

/// What the backend did so far (for logs, metrics and tests).
#[derive(Debug, Default)]
pub struct HttpStats {
    /// HTTP calls sent (resends included).
    pub calls: AtomicU64,
    pub retries: AtomicU64,
    /// Failed multi-request calls split in two.
    pub bisections: AtomicU64,
    /// Servers re-synced after a stale answer.
    pub resyncs: AtomicU64,
}

/// Rollouts from HTTP servers (see the module docs for the rules).
pub struct HttpBackend {
    opts: HttpOptions,
    agent: ureq::Agent,
    system: String,
    user: String,
    stop_ids: Vec<i64>,
    pad_ids: Vec<i64>,
    /// The version of the last successful sync (the one answers must carry).
    synced: Option<(PathBuf, u64)>,
    pub stats: HttpStats,
}

/// The HTTP backend of `cfg` (`rollout.backend: openai | swift`, `rollout.servers`,
/// `rollout.timeout_s`, `rollout.retries`, `rollout.decode_batch_size` calls in flight per
/// server), speaking the learner's conversation (`encoder`'s prompts) with the learner's stop
/// ids. `sync_dir`: where weight syncs write the model (shared with the servers).
pub fn backend_from_config(
    cfg: &Config,
    encoder: &Encoder,
    sync_dir: Option<&Path>,
) -> Result<HttpBackend> {
    let r = &cfg.rollout;
    let protocol = match r.backend {
        BackendKind::Openai => Protocol::OpenAi,
        BackendKind::Swift => Protocol::Swift,
        BackendKind::Embedded => {
            return Err(Error::input(
                "rollout.backend is embedded: there is no HTTP backend to build",
            )
            .at("rollout.backend")
            .hint("use openai or swift with rollout.servers, or roll out in-process"));
        }
    };
    if !(r.timeout_s.is_finite() && r.timeout_s > 0.0) {
        return Err(Error::input(format!("rollout.timeout_s is {}", r.timeout_s))
            .at("rollout.timeout_s")
            .hint("set a positive number of seconds"));
    }
    let mut opts = HttpOptions::new(protocol, r.servers.iter().map(|s| s.url.clone()).collect());
    opts.timeout = Duration::from_secs_f64(r.timeout_s.min(1e7));
    opts.retries = r.retries;
    opts.concurrency = r.decode_batch_size.max(1) as usize;
    opts.sync_dir = sync_dir.map(Path::to_path_buf);
    HttpBackend::new(opts, encoder)
}

impl HttpBackend {
    /// A backend speaking `encoder`'s conversation with its stop ids.
    pub fn new(opts: HttpOptions, encoder: &Encoder) -> Result<HttpBackend> {
        let stop_ids = crate::session::stop_ids(encoder)?;
        let tok = encoder.model().tokenizer();
        let pad_ids = tok.token_to_id("<|endoftext|>").map(i64::from).into_iter().collect();
        let prompts = encoder.prompts();
        HttpBackend::with_parts(
            opts,
            prompts.system.clone(),
            prompts.user.clone(),
            stop_ids,
            pad_ids,
        )
    }

    /// A backend from its parts (tests without a model directory).
    pub fn with_parts(
        mut opts: HttpOptions,
        system: String,
        user: String,
        stop_ids: Vec<i64>,
        pad_ids: Vec<i64>,
    ) -> Result<HttpBackend> {
        if opts.servers.is_empty() {
            return Err(Error::input("no rollout server is configured")
                .at("rollout.servers")
                .hint("list at least one: `servers: [{url: http://127.0.0.1:8000}]`"));
        }
        for s in &mut opts.servers {
            if !s.starts_with("http://") {
                return Err(Error::input(format!(
                    "rollout server URL `{s}` is not http://HOST:PORT"
                ))
                .at("rollout.servers")
                .hint("write the base URL, e.g. http://127.0.0.1:8000 (https is not supported)"));
            }
            let base = s.trim_end_matches('/');
            let base = base.strip_suffix("/v1").unwrap_or(base);
            *s = base.to_string();
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(opts.timeout.min(Duration::from_secs(10))))
            .max_idle_connections_per_host(opts.concurrency.max(1) * 2)
            .build();
        Ok(HttpBackend {
            opts,
            agent: config.into(),
            system,
            user,
            stop_ids,
            pad_ids,
            synced: None,
            stats: HttpStats::default(),
        })
    }

    pub fn options(&self) -> &HttpOptions {
        &self.opts
    }

    /// The version answers must carry (after a sync), if any.
    pub fn synced_version(&self) -> Option<u64> {
        self.synced.as_ref().map(|(_, v)| *v)
    }

    /// Have every server load the safetensors in `dir` as `version` (they must read `dir`);
    /// the seconds the slowest server took.
    pub fn reload_all(
        &mut self,
        dir: &Path,
        version: u64,
    ) -> std::result::Result<f64, BackendError> {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let started = Instant::now();
        let this = &*self;
        let results: Vec<std::result::Result<(), BackendError>> = std::thread::scope(|s| {
            let handles: Vec<_> = this
                .opts
                .servers
                .iter()
                .map(|server| {
                    let dir = &dir;
                    s.spawn(move || this.reload_one(server, dir, version))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(BackendError::Transport("sync thread panicked".into()))
                    })
                })
                .collect()
        });
        for r in results {
            r?;
        }
        self.synced = Some((dir, version));
        Ok(started.elapsed().as_secs_f64())
    }

    fn reload_one(
        &self,
        server: &str,
        dir: &Path,
        version: u64,
    ) -> std::result::Result<(), BackendError> {
        let body = json!({"path": dir.display().to_string(), "version": version});
        let url = format!("{server}/v1/weights");
        let answer = self.with_retries(|| self.post(&url, &body))?;
        let got = answer.body.get("version").and_then(Value::as_u64);
        if got != Some(version) {
            return Err(BackendError::Protocol(format!(
                "{url} answered {} instead of version {version}",
                answer.body
            )));
        }
        Ok(())
    }

    /// Send the calls of each server, concurrently, and collect one result per request.
    fn run(&self, requests: &[RolloutRequest<'_>]) -> Vec<RequestResult> {
        let n = requests.len();
        let servers = self.opts.servers.len();
        // Images once per item (the anchor and the explorers share it).
        let mut uris: HashMap<
            *const crate::split::Item,
            std::result::Result<Vec<String>, BackendError>,
        > = HashMap::new();
        for r in requests {
            uris.entry(r.item as *const _).or_insert_with(|| wire::data_uris(r.item));
        }
        let messages: Vec<std::result::Result<Value, BackendError>> = requests
            .iter()
            .map(|r| match &uris[&(r.item as *const _)] {
                Ok(u) => Ok(wire::messages(&self.system, &self.user, u)),
                Err(e) => Err(e.clone()),
            })
            .collect();
        let results: Mutex<Vec<Option<RequestResult>>> = Mutex::new((0..n).map(|_| None).collect());
        let put = |i: usize, r: RequestResult| {
            if let Ok(mut g) = results.lock() {
                g[i] = Some(r);
            }
        };
        // Requests whose images could not be encoded fail alone.
        let mut per_server: Vec<Vec<usize>> = vec![Vec::new(); servers];
        for i in 0..n {
            match &messages[i] {
                Err(e) => put(i, Err(e.clone())),
                Ok(_) => per_server[i * servers / n.max(1)].push(i),
            }
        }
        // Per server: its queue of calls and its state; `concurrency` workers each.
        let plans: Vec<(Mutex<VecDeque<Vec<usize>>>, Server<'_>)> = per_server
            .into_iter()
            .enumerate()
            .filter(|(_, idx)| !idx.is_empty())
            .map(|(si, idx)| {
                let server = Server {
                    url: &self.opts.servers[si],
                    down: Mutex::new(None),
                    resynced: Mutex::new(None),
                };
                (Mutex::new(self.calls(requests, &idx).into()), server)
            })
            .collect();
        let workers = self.opts.concurrency.max(1);
        let (put, messages) = (&put, &messages);
        std::thread::scope(|s| {
            for (queue, server) in &plans {
                for _ in 0..workers {
                    s.spawn(move || {
                        loop {
                            let call = match queue.lock() {
                                Ok(mut q) => q.pop_front(),
                                Err(_) => None,
                            };
                            let Some(call) = call else { break };
                            self.execute(server, requests, messages, &call, true, put);
                        }
                    });
                }
            }
        });
        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(BackendError::Transport("the request was never sent".into()))
                })
            })
            .collect()
    }

    /// The calls of one server: single requests (openai), or runs of neighbours with equal
    /// settings and consecutive seeds (swift).
    fn calls(&self, requests: &[RolloutRequest<'_>], idx: &[usize]) -> Vec<Vec<usize>> {
        if self.opts.protocol == Protocol::OpenAi {
            return idx.iter().map(|&i| vec![i]).collect();
        }
        let mut out: Vec<Vec<usize>> = Vec::new();
        for &i in idx {
            let r = &requests[i];
            let joins = out.last().is_some_and(|call| {
                let (&first, &last) = (&call[0], &call[call.len() - 1]);
                let (f, l) = (&requests[first], &requests[last]);
                call.len() < self.opts.max_call.max(1)
                    && last + 1 == i
                    && f.decoding == r.decoding
                    && f.max_new_tokens == r.max_new_tokens
                    && f.n == r.n
                    && l.seed.wrapping_add(l.n as u64) == r.seed
            });
            match out.last_mut() {
                Some(call) if joins => call.push(i),
                _ => out.push(vec![i]),
            }
        }
        out
    }

    /// Send one call (with retries), bisect it on failure, re-sync on stale answers, and put
    /// every request's result.
    fn execute(
        &self,
        server: &Server<'_>,
        requests: &[RolloutRequest<'_>],
        messages: &[std::result::Result<Value, BackendError>],
        call: &[usize],
        may_resync: bool,
        put: &(dyn Fn(usize, RequestResult) + Sync),
    ) {
        if let Some(e) = server.down.lock().ok().and_then(|d| d.clone()) {
            for &i in call {
                put(i, Err(e.clone()));
            }
            return;
        }
        match self.with_retries(|| self.send(server.url, requests, messages, call)) {
            Ok(results) => {
                let mut stale = Vec::new();
                for (&i, r) in call.iter().zip(results) {
                    match (self.synced_version(), &r) {
                        (Some(v), Ok(rs)) if rs.iter().any(|x| x.weight_version != v) => {
                            let got =
                                rs.iter().map(|x| x.weight_version).find(|g| *g != v).unwrap_or(v);
                            stale.push((i, BackendError::StaleWeights { expected: v, got }));
                        }
                        _ => put(i, r),
                    }
                }
                if stale.is_empty() {
                    return;
                }
                let idx: Vec<usize> = stale.iter().map(|(i, _)| *i).collect();
                if may_resync && self.resync(server) {
                    for chunk in self.calls(requests, &idx) {
                        self.execute(server, requests, messages, &chunk, false, put);
                    }
                } else {
                    for (i, e) in stale {
                        put(i, Err(e));
                    }
                }
            }
            Err(e) => {
                let server_down = matches!(e, BackendError::Transport(_))
                    || (matches!(e, BackendError::Timeout { .. }) && call.len() == 1);
                if call.len() > 1 && !server_down {
                    self.stats.bisections.fetch_add(1, Ordering::SeqCst);
                    let (a, b) = call.split_at(call.len() / 2);
                    self.execute(server, requests, messages, a, may_resync, put);
                    self.execute(server, requests, messages, b, may_resync, put);
                    return;
                }
                if server_down {
                    tracing::warn!("rollout server {} is down for this step: {e}", server.url);
                    if let Ok(mut d) = server.down.lock() {
                        d.get_or_insert_with(|| e.clone());
                    }
                }
                for &i in call {
                    put(i, Err(e.clone()));
                }
            }
        }
    }

    /// Re-send the last sync to a server that answered with other weights (once per call of
    /// [`RolloutBackend::generate`]); true when it now holds them.
    fn resync(&self, server: &Server<'_>) -> bool {
        let Some((dir, version)) = &self.synced else { return false };
        // The lock is held through the reload: calls in flight that saw the same stale
        // server wait for this one re-sync and then resend, instead of failing.
        let Ok(mut done) = server.resynced.lock() else { return false };
        if let Some(ok) = *done {
            return ok;
        }
        self.stats.resyncs.fetch_add(1, Ordering::SeqCst);
        let ok = match self.reload_one(server.url, dir, *version) {
            Ok(()) => {
                tracing::warn!(
                    "rollout server {} had other weights: re-synced version {version}",
                    server.url
                );
                true
            }
            Err(e) => {
                tracing::warn!("re-syncing rollout server {} failed: {e}", server.url);
                false
            }
        };
        *done = Some(ok);
        ok
    }

    /// One HTTP call for `call` (request indices); the per-request results.
    fn send(
        &self,
        server: &str,
        requests: &[RolloutRequest<'_>],
        messages: &[std::result::Result<Value, BackendError>],
        call: &[usize],
    ) -> std::result::Result<Vec<RequestResult>, BackendError> {
        let msg = |i: usize| messages[i].clone();
        let rules = ParseRules {
            stop_ids: &self.stop_ids,
            pad_ids: &self.pad_ids,
            default_version: self.synced_version().unwrap_or(0),
        };
        match self.opts.protocol {
            Protocol::OpenAi => {
                let mut out = Vec::with_capacity(call.len());
                for &i in call {
                    let body = wire::openai_body(&requests[i], msg(i)?);
                    let a = self.post(&format!("{server}/v1/chat/completions"), &body)?;
                    out.push(wire::parse_completion(&a.body, requests[i].n, a.version, &rules));
                }
                Ok(out)
            }
            Protocol::Swift => {
                let rs: Vec<&RolloutRequest<'_>> = call.iter().map(|&i| &requests[i]).collect();
                let ms =
                    call.iter().map(|&i| msg(i)).collect::<std::result::Result<Vec<_>, _>>()?;
                let a = self.post(&format!("{server}/infer/"), &wire::swift_body(&rs, ms))?;
                let ns: Vec<usize> = rs.iter().map(|r| r.n).collect();
                wire::parse_swift(&a.body, &ns, a.version, &rules)
            }
        }
    }

    /// Run `f` until it succeeds, fails for good, or the retries are spent (backoff doubling
    /// from `backoff`, at most `backoff_max`, at least the server's `Retry-After`).
    fn with_retries<T>(
        &self,
        mut f: impl FnMut() -> std::result::Result<T, BackendError>,
    ) -> std::result::Result<T, BackendError> {
        let mut attempt = 0u32;
        loop {
            match f() {
                Ok(t) => return Ok(t),
                Err(e) if e.retryable() && attempt < self.opts.retries => {
                    let exp = self.opts.backoff.saturating_mul(1u32 << attempt.min(16));
                    let wait = exp.max(retry_after(&e)).min(self.opts.backoff_max);
                    tracing::debug!("retrying in {:.2} s after: {e}", wait.as_secs_f64());
                    std::thread::sleep(wait);
                    attempt += 1;
                    self.stats.retries.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// POST JSON; a 2xx JSON answer, or the error it amounts to.
    fn post(&self, url: &str, body: &Value) -> std::result::Result<Answer, BackendError> {
        self.stats.calls.fetch_add(1, Ordering::SeqCst);
        let timeout = self.opts.timeout;
        let timed_out = || BackendError::Timeout { seconds: timeout.as_secs_f64() };
        let req = self
            .agent
            .post(url)
            .header("Content-Type", "application/json")
            .config()
            .timeout_global(Some(timeout))
            .build();
        let mut resp = match req.send(body.to_string()) {
            Ok(r) => r,
            Err(ureq::Error::Timeout(_)) => return Err(timed_out()),
            Err(e) => return Err(BackendError::Transport(format!("{url}: {e}"))),
        };
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers().get(name).and_then(|h| h.to_str().ok()).map(str::trim).map(String::from)
        };
        let version = header(VERSION_HEADER).and_then(|v| v.parse::<u64>().ok());
        let retry = header("retry-after").and_then(|v| v.parse::<u64>().ok());
        let text = match resp.body_mut().with_config().limit(1 << 30).read_to_string() {
            Ok(t) => t,
            Err(ureq::Error::Timeout(_)) => return Err(timed_out()),
            Err(e) => {
                return Err(BackendError::Transport(format!("{url}: reading the answer: {e}")));
            }
        };
        if !(200..300).contains(&status) {
            let mut body: String = text.chars().take(2000).collect();
            if let Some(s) = retry {
                body = format!("{body} [retry-after: {s}]");
            }
            return Err(BackendError::Status { code: status, body });
        }
        let body = serde_json::from_str(&text).map_err(|e| {
            let head: String = text.chars().take(200).collect();
            BackendError::Protocol(format!("{url} answered invalid JSON ({e}): {head}"))
        })?;
        Ok(Answer { body, version })
    }
}

/// A server's state during one `generate` call.
struct Server<'a> {
    url: &'a str,
    /// Set when the server is considered down: the error its remaining requests get.
    down: Mutex<Option<BackendError>>,
    resynced: Mutex<Option<bool>>,
}

struct Answer {
    body: Value,
    version: Option<u64>,
}

/// The server's `Retry-After` (recorded in the status body), else zero.
fn retry_after(e: &BackendError) -> Duration {
    if let BackendError::Status { body, .. } = e
        && let Some((_, rest)) = body.rsplit_once("[retry-after: ")
        && let Ok(s) = rest.trim_end_matches(']').parse::<u64>()
    {
        return Duration::from_secs(s.min(120));
    }
    Duration::ZERO
}

impl RolloutBackend for HttpBackend {
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        vec![
            ("rollout/http_calls", get(&self.stats.calls)),
            ("rollout/http_retries", get(&self.stats.retries)),
            ("rollout/http_bisections", get(&self.stats.bisections)),
            ("rollout/http_resyncs", get(&self.stats.resyncs)),
        ]
    }

    fn name(&self) -> &'static str {
        match self.opts.protocol {
            Protocol::OpenAi => "openai",
            Protocol::Swift => "swift",
        }
    }

    fn generate(
        &mut self,
        requests: &[RolloutRequest<'_>],
    ) -> std::result::Result<Vec<RequestResult>, BackendError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.run(requests))
    }

    /// Write `model` to the sync directory and have every server load it as `version`.
    fn sync_weights(
        &mut self,
        model: &Qwen3VL,
        version: u64,
    ) -> std::result::Result<Option<SyncReport>, BackendError> {
        let dir = self.opts.sync_dir.clone().ok_or_else(|| {
            BackendError::Engine(
                Error::input("the HTTP rollout backend has no weight-sync directory")
                    .hint("give backend_from_config a sync directory that the servers can read"),
            )
        })?;
        let started = Instant::now();
        model.save(&dir, 4 << 30).map_err(BackendError::Engine)?;
        let save_s = started.elapsed().as_secs_f64();
        let reload_s = self.reload_all(&dir, version)?;
        tracing::info!(
            "weights version {version} synced to {} server(s): save {save_s:.2} s, load {reload_s:.2} s",
            self.opts.servers.len()
        );
        Ok(Some(SyncReport { version, save_s, reload_s, servers: self.opts.servers.len() }))
    }
}
