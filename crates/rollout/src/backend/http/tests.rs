//! The HTTP backends against a scripted server on 127.0.0.1 (no model): for every fault of
//! `rollout_protocols.md` §7 the per-request result (error kind) and the number of calls it
//! took. Every socket has a timeout and every loop is bounded; servers stop with their guard.

use super::*;
use crate::backend::{Rollout, RolloutBackend, RolloutRequest};
use crate::split::{Item, Pixels};
use coordexp_core::config::schema::Decoding;
use coordexp_core::record::Record;
use coordexp_model::generate::StopReason;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

const STOP: i64 = 9;

/// What the script answers to one call.
enum Script {
    /// A valid answer (built by the protocol helper) with this weight version.
    Ok(u64),
    Status(u16),
    /// Sleep, then answer validly.
    Delay(Duration),
    /// Close the connection without answering.
    Reset,
    Malformed,
    /// One item (swift) / one choice (openai) too few.
    Short,
    /// Valid, but the prompt ids differ.
    ForeignPrompt,
}

struct Mock {
    url: String,
    hits: Arc<AtomicUsize>,
    /// Bodies of every call, in arrival order.
    bodies: Arc<Mutex<Vec<(String, Value)>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

type ScriptFn = dyn Fn(usize, &str, &Value) -> Script + Send + Sync;

/// A server answering call `k` (0-based, all routes) with `script(k, path, body)`.
fn mock(script: impl Fn(usize, &str, &Value) -> Script + Send + Sync + 'static) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let script: Arc<ScriptFn> = Arc::new(script);
    let (h, b, s) = (hits.clone(), bodies.clone(), stop.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    let (h, b, script) = (h.clone(), b.clone(), script.clone());
                    std::thread::spawn(move || serve_conn(stream, &h, &b, &*script));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Mock { url, hits, bodies, stop }
}

fn serve_conn(
    stream: TcpStream,
    hits: &AtomicUsize,
    bodies: &Mutex<Vec<(String, Value)>>,
    script: &ScriptFn,
) {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    for _ in 0..1000 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let k = hits.fetch_add(1, Ordering::SeqCst);
        bodies.lock().unwrap().push((path.clone(), body.clone()));
        let (status, text, version) = match script(k, &path, &body) {
            Script::Ok(v) => (200, answer(&path, &body, v, false, 0), v),
            Script::Delay(d) => {
                std::thread::sleep(d);
                (200, answer(&path, &body, 0, false, 0), 0)
            }
            Script::Status(c) => {
                (c, format!("{{\"error\": {{\"message\": \"injected {c}\"}}}}"), 0)
            }
            Script::Reset => return,
            Script::Malformed => (200, "{\"choices\": [".to_string(), 0),
            Script::Short => (200, answer(&path, &body, 0, false, 1), 0),
            Script::ForeignPrompt => (200, answer(&path, &body, 0, true, 0), 0),
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nx-coordexp-weight-version: {version}\r\n\r\n",
            text.len()
        );
        if stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(text.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

/// A valid answer to `body` on `path`: prompt ids [1, 2, 3] (or foreign), each sample's
/// tokens `[seed % 100, STOP]`; `short` drops that many items / choices.
fn answer(path: &str, body: &Value, version: u64, foreign: bool, short: usize) -> String {
    let prompt = if foreign { json!([1, 2, 4]) } else { json!([0, 1, 2, 3]) };
    let completion = |seed: i64, n: u64, drop: usize| {
        let choices: Vec<Value> = (0..n.saturating_sub(drop as u64))
            .map(|j| {
                json!({"index": j, "finish_reason": "stop",
                       "token_ids": [(seed + j as i64).rem_euclid(100), STOP],
                       "logprobs": {"content": [{"logprob": -0.5}, {"logprob": -0.1}]}})
            })
            .collect();
        json!({"object": "chat.completion", "prompt_token_ids": prompt, "choices": choices,
               "weight_version": version})
    };
    if path.starts_with("/v1/weights") {
        return json!({"version": body["version"]}).to_string();
    }
    if path.starts_with("/infer") {
        let cfg = &body["request_config"];
        let (seed, n) = (cfg["seed"].as_i64().unwrap_or(0), cfg["n"].as_u64().unwrap_or(1));
        let reqs = body["infer_requests"].as_array().map_or(0, Vec::len);
        let items: Vec<Value> = (0..reqs.saturating_sub(short))
            .map(|i| json!({"response": completion(seed + (i as i64) * n as i64, n, 0)}))
            .collect();
        return Value::Array(items).to_string();
    }
    let (seed, n) = (body["seed"].as_i64().unwrap_or(0), body["n"].as_u64().unwrap_or(1));
    completion(seed, n, short).to_string()
}

fn item() -> Item {
    let record = Record::from_json_line(
        r#"{"images": ["a.png"], "width": 32, "height": 32, "objects": [{"desc": "cat", "bbox_2d": [1, 2, 30, 31]}]}"#,
    )
    .unwrap();
    Item {
        line: 1,
        record,
        pixels: vec![Pixels { width: 32, height: 32, rgb: vec![128; 32 * 32 * 3] }],
    }
}

fn requests<'a>(item: &'a Item, prompt: &'a [i64], seeds: &[u64]) -> Vec<RolloutRequest<'a>> {
    seeds
        .iter()
        .map(|&seed| RolloutRequest {
            item,
            prompt_ids: prompt,
            decoding: Decoding::default(),
            max_new_tokens: 8,
            seed,
            n: 1,
        })
        .collect()
}

fn backend(protocol: Protocol, servers: &[&Mock], retries: u32, timeout_ms: u64) -> HttpBackend {
    let mut o = HttpOptions::new(protocol, servers.iter().map(|m| m.url.clone()).collect());
    o.retries = retries;
    o.timeout = Duration::from_millis(timeout_ms);
    o.backoff = Duration::from_millis(5);
    o.backoff_max = Duration::from_millis(20);
    o.concurrency = 2;
    HttpBackend::with_parts(o, "S".into(), "U".into(), vec![STOP], vec![0]).unwrap()
}

fn kinds(results: &[RequestResult]) -> Vec<&'static str> {
    results.iter().map(|r| r.as_ref().map_or_else(|e| e.kind(), |_| "ok")).collect()
}

#[test]
fn valid_answers_become_rollouts_with_ids_seeds_and_the_server_version() {
    for protocol in [Protocol::OpenAi, Protocol::Swift] {
        let m = mock(|_, _, _| Script::Ok(4));
        let it = item();
        let prompt = [1, 2, 3];
        let mut b = backend(protocol, &[&m], 2, 5000);
        let out = b.generate(&requests(&it, &prompt, &[10, 11, 12, 40])).unwrap();
        let rollouts: Vec<&Rollout> = out.iter().map(|r| &r.as_ref().unwrap()[0]).collect();
        assert_eq!(rollouts[0].tokens, vec![10, STOP]);
        assert_eq!(rollouts[3].tokens, vec![40, STOP], "{protocol:?}: each request its own seed");
        assert!(rollouts.iter().all(|r| r.prompt_ids == prompt && r.weight_version == 4));
        assert!(rollouts.iter().all(|r| r.stop == StopReason::StopToken && r.logprobs.len() == 2));
        let bodies = m.bodies.lock().unwrap();
        match protocol {
            // One call per request, every sampling field sent.
            Protocol::OpenAi => {
                assert_eq!(bodies.len(), 4);
                let (path, body) = &bodies[0];
                assert_eq!(path, "/v1/chat/completions");
                for key in
                    ["temperature", "top_p", "top_k", "repetition_penalty", "seed", "max_tokens"]
                {
                    assert!(body.get(key).is_some(), "{key} missing");
                }
                assert_eq!(body["return_token_ids"], true);
                let content = &body["messages"][1]["content"];
                assert!(
                    content[0]["image_url"]["url"]
                        .as_str()
                        .unwrap()
                        .starts_with("data:image/png;base64,")
                );
                assert_eq!(content[1]["text"], "U");
            }
            // Consecutive seeds share one /infer/ call; the seed jump starts another.
            Protocol::Swift => {
                assert_eq!(bodies.len(), 2, "{bodies:?}");
                let mut sizes: Vec<usize> = bodies
                    .iter()
                    .map(|(_, b)| b["infer_requests"].as_array().unwrap().len())
                    .collect();
                sizes.sort();
                assert_eq!(sizes, vec![1, 3]);
                assert!(
                    bodies
                        .iter()
                        .all(|(p, b)| p == "/infer/"
                            && b["request_config"]["return_details"] == true)
                );
            }
        }
    }
}

#[test]
fn requests_split_across_servers_in_contiguous_chunks() {
    let (a, b) = (mock(|_, _, _| Script::Ok(0)), mock(|_, _, _| Script::Ok(0)));
    let it = item();
    let mut be = backend(Protocol::OpenAi, &[&a, &b], 0, 5000);
    let out = be.generate(&requests(&it, &[1, 2, 3], &[1, 2, 3, 4, 5])).unwrap();
    assert!(out.iter().all(Result::is_ok));
    let seeds = |m: &Mock| -> Vec<i64> {
        m.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b["seed"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let (mut sa, mut sb) = (seeds(&a), seeds(&b));
    sa.sort();
    sb.sort();
    assert_eq!((sa, sb), (vec![1, 2, 3], vec![4, 5]));
}

#[test]
fn a_5xx_is_retried_with_backoff_then_succeeds_or_fails_as_status() {
    // Two 500s, then answers: within 2 retries.
    let m = mock(|k, _, _| if k < 2 { Script::Status(500) } else { Script::Ok(0) });
    let it = item();
    let mut b = backend(Protocol::OpenAi, &[&m], 2, 5000);
    let out = b.generate(&requests(&it, &[1, 2, 3], &[7])).unwrap();
    assert_eq!(kinds(&out), vec!["ok"]);
    assert_eq!(m.hits.load(Ordering::SeqCst), 3);
    assert_eq!(b.stats.retries.load(Ordering::SeqCst), 2);
    // Always 503: 1 + retries calls, then Err(Status 503) for that request.
    let m = mock(|_, _, _| Script::Status(503));
    let mut b = backend(Protocol::OpenAi, &[&m], 3, 5000);
    let out = b.generate(&requests(&it, &[1, 2, 3], &[7])).unwrap();
    assert!(matches!(out[0], Err(BackendError::Status { code: 503, .. })));
    assert_eq!(m.hits.load(Ordering::SeqCst), 4);
}

#[test]
fn a_4xx_is_not_retried() {
    let m = mock(|_, _, _| Script::Status(400));
    let it = item();
    let mut b = backend(Protocol::OpenAi, &[&m], 3, 5000);
    let out = b.generate(&requests(&it, &[1, 2, 3], &[7])).unwrap();
    assert!(
        matches!(&out[0], Err(BackendError::Status { code: 400, body }) if body.contains("injected 400"))
    );
    assert_eq!(m.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn a_delay_past_the_timeout_is_a_timeout_after_every_retry_and_marks_the_server_down() {
    let m = mock(|_, _, _| Script::Delay(Duration::from_millis(800)));
    let it = item();
    let mut b = backend(Protocol::OpenAi, &[&m], 1, 200);
    b.opts.concurrency = 1;
    let t = Instant::now();
    let out = b.generate(&requests(&it, &[1, 2, 3], &[1, 2, 3])).unwrap();
    assert_eq!(kinds(&out), vec!["timeout"; 3]);
    // The first request: 1 + 1 retry; the others fail at once (server down for this call).
    assert_eq!(m.hits.load(Ordering::SeqCst), 2);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn a_connection_reset_is_a_transport_error_after_the_retries() {
    let m = mock(|k, _, _| if k < 1 { Script::Reset } else { Script::Ok(0) });
    let it = item();
    let mut b = backend(Protocol::OpenAi, &[&m], 2, 5000);
    let out = b.generate(&requests(&it, &[1, 2, 3], &[1])).unwrap();
    assert_eq!(kinds(&out), vec!["ok"], "a reset then an answer: recovered by a retry");
    let m = mock(|_, _, _| Script::Reset);
    let mut b = backend(Protocol::Swift, &[&m], 2, 5000);
    let out = b.generate(&requests(&it, &[1, 2, 3], &[1, 2, 3, 4])).unwrap();
    assert_eq!(kinds(&out), vec!["transport"; 4]);
    assert_eq!(m.hits.load(Ordering::SeqCst), 3, "one call, two resends, no bisection");
}

#[test]
fn a_refused_connection_is_a_transport_error() {
    let url = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut o = HttpOptions::new(Protocol::OpenAi, vec![url]);
    o.retries = 1;
    o.backoff = Duration::from_millis(5);
    let mut b = HttpBackend::with_parts(o, "S".into(), "U".into(), vec![STOP], vec![0]).unwrap();
    let it = item();
    let out = b.generate(&requests(&it, &[1, 2, 3], &[1, 2])).unwrap();
    assert_eq!(kinds(&out), vec!["transport"; 2]);
}

#[test]
fn malformed_json_and_a_wrong_count_are_protocol_errors_and_a_bad_call_is_bisected() {
    let it = item();
    // openai: malformed → protocol, not retried.
    let m = mock(|_, _, _| Script::Malformed);
    let mut b = backend(Protocol::OpenAi, &[&m], 3, 5000);
    let out = b.generate(&requests(&it, &[1, 2, 3], &[1])).unwrap();
    assert_eq!(kinds(&out), vec!["protocol"]);
    assert_eq!(m.hits.load(Ordering::SeqCst), 1);
    // openai: one choice short for n = 1 → protocol.
    let m = mock(|_, _, _| Script::Short);
    let mut b = backend(Protocol::OpenAi, &[&m], 3, 5000);
    assert_eq!(kinds(&b.generate(&requests(&it, &[1, 2, 3], &[1])).unwrap()), vec!["protocol"]);
    // swift: the 4-request call answers one item short; never zipped: bisected into
    // halves, and the halves (answered fully) succeed.
    let m = mock(|k, _, _| if k == 0 { Script::Short } else { Script::Ok(0) });
    let mut b = backend(Protocol::Swift, &[&m], 0, 5000);
    let out = b.generate(&requests(&it, &[1, 2, 3], &[1, 2, 3, 4])).unwrap();
    assert_eq!(kinds(&out), vec!["ok"; 4]);
    let r = out[3].as_ref().unwrap();
    assert_eq!(
        r[0].tokens,
        vec![4, STOP],
        "the right answer for the right request after the split"
    );
    assert_eq!(b.stats.bisections.load(Ordering::SeqCst), 1);
    assert_eq!(m.hits.load(Ordering::SeqCst), 3);
    // swift: one bad request (400 whenever it is in the call) only sinks itself.
    let m = mock(|_, _, body: &Value| {
        let seed = body["request_config"]["seed"].as_i64().unwrap_or(0);
        let n = body["infer_requests"].as_array().map_or(0, Vec::len) as i64;
        if (seed..seed + n).contains(&3) { Script::Status(400) } else { Script::Ok(0) }
    });
    let mut b = backend(Protocol::Swift, &[&m], 0, 5000);
    let out = b.generate(&requests(&it, &[1, 2, 3], &[1, 2, 3, 4])).unwrap();
    assert_eq!(kinds(&out), vec!["ok", "ok", "status", "ok"]);
    // 4 → 2+2 → the bad half → 1+1: five calls.
    assert_eq!(m.hits.load(Ordering::SeqCst), 5);
}

#[test]
fn foreign_prompt_ids_are_returned_for_the_trainer_to_compare() {
    let m = mock(|_, _, _| Script::ForeignPrompt);
    let it = item();
    let mut b = backend(Protocol::OpenAi, &[&m], 0, 5000);
    let out = b.generate(&requests(&it, &[1, 2, 3], &[1])).unwrap();
    let r = &out[0].as_ref().unwrap()[0];
    assert_eq!(r.prompt_ids, vec![1, 2, 4], "the server's ids, not the learner's");
}

#[test]
fn a_stale_version_after_a_sync_triggers_one_resync_then_is_stale_weights() {
    let it = item();
    let dir = tempfile::tempdir().unwrap();
    // The server answers version 0 (restarted with base weights) until it is re-synced.
    let synced = Arc::new(AtomicBool::new(false));
    let s2 = synced.clone();
    let m = mock(move |k, path, _| {
        if path.starts_with("/v1/weights") {
            if k > 0 {
                s2.store(true, Ordering::SeqCst);
            }
            return Script::Ok(0);
        }
        Script::Ok(if s2.load(Ordering::SeqCst) { 7 } else { 0 })
    });
    let mut b = backend(Protocol::OpenAi, &[&m], 0, 5000);
    b.reload_all(dir.path(), 7).unwrap();
    assert_eq!(b.synced_version(), Some(7));
    let out = b.generate(&requests(&it, &[1, 2, 3], &[1])).unwrap();
    assert_eq!(kinds(&out), vec!["ok"]);
    assert_eq!(out[0].as_ref().unwrap()[0].weight_version, 7);
    assert_eq!(b.stats.resyncs.load(Ordering::SeqCst), 1);
    // A server that stays stale: StaleWeights after the one re-sync.
    let m = mock(
        |_, path, _| if path.starts_with("/v1/weights") { Script::Ok(0) } else { Script::Ok(2) },
    );
    let mut b = backend(Protocol::OpenAi, &[&m], 0, 5000);
    b.reload_all(dir.path(), 7).unwrap();
    let out = b.generate(&requests(&it, &[1, 2, 3], &[1, 2])).unwrap();
    assert!(
        out.iter().all(|r| matches!(r, Err(BackendError::StaleWeights { expected: 7, got: 2 })))
    );
    let weights_calls =
        m.bodies.lock().unwrap().iter().filter(|(p, _)| p.starts_with("/v1/weights")).count();
    assert_eq!(weights_calls, 2, "the sync and one re-sync");
}

#[test]
fn a_server_killed_and_restarted_is_recovered_by_the_retries() {
    let it = item();
    // The port is closed for a while (the server is down), then the server is back.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let mut o = HttpOptions::new(Protocol::OpenAi, vec![format!("http://{addr}")]);
    o.retries = 4;
    o.backoff = Duration::from_millis(100);
    o.backoff_max = Duration::from_millis(400);
    let mut b = HttpBackend::with_parts(o, "S".into(), "U".into(), vec![STOP], vec![0]).unwrap();
    let restarted = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        let listener = TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok((stream, _)) = listener.accept() {
                let hits = AtomicUsize::new(0);
                let bodies = Mutex::new(Vec::new());
                serve_conn(stream, &hits, &bodies, &|_, _, _| Script::Ok(0));
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let out = b.generate(&requests(&it, &[1, 2, 3], &[1])).unwrap();
    assert_eq!(kinds(&out), vec!["ok"], "{out:?}");
    assert!(b.stats.retries.load(Ordering::SeqCst) >= 1);
    drop(b);
    let _ = restarted.join();
}

#[test]
fn config_mapping_and_bad_urls() {
    let mut o = HttpOptions::new(Protocol::OpenAi, vec!["127.0.0.1:8000".into()]);
    o.retries = 0;
    let e = HttpBackend::with_parts(o, "S".into(), "U".into(), vec![STOP], vec![]).err().unwrap();
    assert!(e.what().contains("is not http://HOST:PORT"), "{}", e.what());
    let o = HttpOptions::new(Protocol::OpenAi, vec![]);
    assert!(HttpBackend::with_parts(o, "S".into(), "U".into(), vec![STOP], vec![]).is_err());
    let o = HttpOptions::new(Protocol::OpenAi, vec!["http://h:1/v1/".into()]);
    let b = HttpBackend::with_parts(o, "S".into(), "U".into(), vec![STOP], vec![]).unwrap();
    assert_eq!(b.options().servers, vec!["http://h:1".to_string()]);
}
