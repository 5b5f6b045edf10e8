//! `coordexp serve` end to end: the built binary on a tiny demo model, driven by the real
//! `openai` Python client, by raw HTTP for the ms-swift protocol, and by the HTTP rollout
//! backends (weight sync, faults injected with `COORDEXP_SERVE_FAULTS`, a crash and restart).
//! Servers bind 127.0.0.1 on free ports; every wait is bounded; a `Server` kills its process
//! when dropped.

use coordexp_core::config::schema::{
    Config, Decoding, RolloutBackend as Kind, Server as ServerCfg,
};
use coordexp_core::config::{self};
use coordexp_demo::{self as demo, Arch};
use coordexp_model::model::Qwen3VL;
use coordexp_rollout::backend::{
    Embedded, HttpBackend, RequestResult, Rollout, RolloutBackend, RolloutRequest,
    backend_from_config,
};
use coordexp_rollout::{Item, Session, Split};
use coordexp_text::Turn;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;

const MAX_TOKENS: usize = 12;

struct Fixture {
    dir: tempfile::TempDir,
    config: PathBuf,
    model: PathBuf,
    val: PathBuf,
}

/// A tiny demo (model, data, config) and a config with a `rollout` section.
fn fixture() -> Fixture {
    fixture_with_timeout(60)
}

/// The same with `rollout.timeout_s` (the server's request deadline).
fn fixture_with_timeout(timeout_s: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let prepared = demo::prepare(&dir.path().join("demo"), 8, 4, 5, &Arch::TEST).unwrap();
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "extends: {}\nrollout:\n  max_new_tokens: {MAX_TOKENS}\n  max_model_len: 2048\n  decode_batch_size: 4\n  timeout_s: {timeout_s}\n  retries: 2\n",
            prepared.config.display()
        ),
    )
    .unwrap();
    let model = dir.path().join("demo/model");
    let val = dir.path().join("demo/data/val.jsonl");
    Fixture { dir, config, model, val }
}

/// A `coordexp serve` process.
struct Server {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(fx: &Fixture, port: u16, faults: Option<&str>, args: &[&str]) -> Server {
        let n =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let ready = fx.dir.path().join(format!("ready-{n}"));
        let log = fx.dir.path().join(format!("server-{n}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordexp"));
        cmd.args([
            "serve",
            "--model",
            fx.model.to_str().unwrap(),
            "--config",
            fx.config.to_str().unwrap(),
        ])
        .args([
            "--port",
            &port.to_string(),
            "--ready-file",
            ready.to_str().unwrap(),
            "--no-progress",
        ])
        .args(args)
        .env("COORDEXP_CPU_THREADS", "1")
        .env_remove("COORDEXP_SERVE_FAULTS")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        if let Some(f) = faults {
            cmd.env("COORDEXP_SERVE_FAULTS", f);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(addr) = std::fs::read_to_string(&ready) {
                return Server { child, addr: addr.trim().to_string(), log };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "coordexp serve exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "coordexp serve did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (bounded) for the process to end by itself.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the server did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sigterm(&self) {
        let ok =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }
}

/// One raw HTTP/1.1 request; status, lower-cased headers, body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize =
        headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).unwrap();
    (status, headers, String::from_utf8(buf).unwrap())
}

fn header<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// The learner: session, model, the first validation records.
struct Learner {
    cfg: Config,
    session: Session,
    model: Qwen3VL,
    split: Split,
}

fn learner(fx: &Fixture) -> Learner {
    let cfg = config::load(&fx.config).unwrap().config;
    let session = Session::open(&cfg, Some(&fx.model), Some(1)).unwrap();
    let split = session.load_split("val", &fx.val, Some(3)).unwrap();
    let model = session.load_model(&fx.model).unwrap();
    Learner { cfg, session, model, split }
}

impl Learner {
    fn prompt_ids(&self, item: &Item) -> Vec<i64> {
        let s = self.session.encoder.encode(&item.sizes(), Turn::Generate).unwrap();
        s.input_ids.iter().map(|&i| i64::from(i)).collect()
    }

    /// Greedy rollouts of the embedded backend (the learner's own decoding).
    fn greedy(&self, prompts: &[Vec<i64>]) -> Vec<Rollout> {
        let mut e = Embedded {
            model: &self.model,
            encoder: &self.session.encoder,
            vision: self.session.vision(&self.model),
            stop_ids: self.session.stop_ids().unwrap(),
            batch_size: 4,
            weight_version: 0,
        };
        let reqs = self.requests(prompts, 100);
        e.generate(&reqs).unwrap().into_iter().map(|r| r.unwrap().remove(0)).collect()
    }

    fn requests<'a>(&'a self, prompts: &'a [Vec<i64>], seed: u64) -> Vec<RolloutRequest<'a>> {
        self.split
            .items
            .iter()
            .zip(prompts)
            .enumerate()
            .map(|(k, (item, p))| RolloutRequest {
                item,
                prompt_ids: p,
                decoding: Decoding::default(),
                max_new_tokens: MAX_TOKENS,
                seed: seed + k as u64,
                n: 1,
            })
            .collect()
    }

    fn all_prompts(&self) -> Vec<Vec<i64>> {
        self.split.items.iter().map(|i| self.prompt_ids(i)).collect()
    }

    fn backend(&self, kind: Kind, url: &str, sync: Option<&Path>) -> HttpBackend {
        let mut cfg = self.cfg.clone();
        cfg.rollout.backend = kind;
        cfg.rollout.servers = vec![ServerCfg { url: url.to_string() }];
        backend_from_config(&cfg, &self.session.encoder, sync).unwrap()
    }

    fn image_path(&self, k: usize) -> PathBuf {
        let img = &self.split.items[k].record.images()[0];
        coordexp_data::images::resolve_image(&self.split.path, img)
    }
}

fn kinds(results: &[RequestResult]) -> Vec<&'static str> {
    results.iter().map(|r| r.as_ref().map_or_else(|e| e.kind(), |_| "ok")).collect()
}

/// A PNG whose size is not a multiple of the patch factor.
fn bad_png(dir: &Path) -> PathBuf {
    let p = dir.join("bad.png");
    image::RgbImage::from_pixel(100, 100, image::Rgb([9, 9, 9])).save(&p).unwrap();
    p
}

const OPENAI_SCRIPT: &str = r#"
import base64, json, sys
import openai
from openai import OpenAI
a = json.load(sys.stdin)
c = OpenAI(base_url=a["url"] + "/v1", api_key="none", max_retries=0, timeout=120)
def uri(p):
    return "data:image/png;base64," + base64.b64encode(open(p, "rb").read()).decode()
def msgs(url):
    return [{"role": "system", "content": a["system"]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": a["user"]}]}]
extra = {"return_token_ids": True, "top_k": -1, "repetition_penalty": 1.0, "skip_special_tokens": False}
models = c.models.list()
name = models.data[0].id
full = c.chat.completions.create(model=name, messages=msgs(uri(a["image"])), temperature=0,
                                  max_tokens=a["max_tokens"], seed=3, logprobs=True, extra_body=extra)
path = c.chat.completions.create(model=name, messages=msgs("file://" + a["image"]), temperature=0,
                                  max_tokens=a["max_tokens"], extra_body=extra)
stream = c.chat.completions.create(model=name, messages=msgs(a["image"]), temperature=0,
                                    max_tokens=a["max_tokens"], stream=True,
                                    stream_options={"include_usage": True}, extra_body=extra)
text, finish, usage, chunks = "", None, None, 0
for ch in stream:
    chunks += 1
    if ch.usage:
        usage = ch.usage.model_dump()
    for choice in ch.choices:
        if choice.delta.content:
            text += choice.delta.content
        if choice.finish_reason:
            finish = choice.finish_reason
errors = {}
for key, m in [("size", msgs(uri(a["bad_image"]))), ("role", [{"role": "tool", "content": "x"}])]:
    try:
        c.chat.completions.create(model=name, messages=m, max_tokens=2)
        errors[key] = None
    except openai.BadRequestError as e:
        errors[key] = {"status": e.status_code, "message": e.message}
print(json.dumps({"models": [m.id for m in models.data], "full": full.model_dump(),
                  "path": path.model_dump(), "stream": {"text": text, "finish": finish,
                  "usage": usage, "chunks": chunks}, "errors": errors}))
"#;

#[test]
fn the_openai_client_gets_the_learners_prompt_ids_and_greedy_tokens() {
    let fx = fixture();
    let server = Server::start(&fx, 0, None, &[]);
    let l = learner(&fx);
    let prompts = l.all_prompts();
    let greedy = l.greedy(&prompts);
    let p = l.session.encoder.prompts();
    let out = coordexp_testkit::run_python_json(
        OPENAI_SCRIPT,
        &json!({
            "url": server.url(),
            "image": l.image_path(0).to_str().unwrap(),
            "bad_image": bad_png(fx.dir.path()).to_str().unwrap(),
            "system": p.system,
            "user": p.user,
            "max_tokens": MAX_TOKENS,
        }),
    );
    assert_eq!(out["models"], json!(["model"]));
    let full = &out["full"];
    assert_eq!(full["object"], "chat.completion");
    assert_eq!(
        full["prompt_token_ids"],
        json!(prompts[0]),
        "the learner's Encoder::encode(sizes, Generate)"
    );
    let choice = &full["choices"][0];
    assert_eq!(choice["token_ids"], json!(greedy[0].tokens), "the learner's greedy tokens");
    assert_eq!(choice["message"]["role"], "assistant");
    let lp = choice["logprobs"]["content"].as_array().unwrap();
    assert_eq!(lp.len(), greedy[0].tokens.len());
    for (e, want) in lp.iter().zip(&greedy[0].logprobs) {
        assert!((e["logprob"].as_f64().unwrap() - f64::from(*want)).abs() < 1e-4);
    }
    let usage = &full["usage"];
    assert_eq!(usage["prompt_tokens"], json!(prompts[0].len()));
    assert_eq!(usage["completion_tokens"], json!(greedy[0].tokens.len()));
    assert_eq!(full["weight_version"], 0);
    // The same record sent as a file:// URL, and streamed with a plain path.
    assert_eq!(out["path"]["choices"][0]["token_ids"], choice["token_ids"]);
    assert_eq!(out["path"]["prompt_token_ids"], full["prompt_token_ids"]);
    let stream = &out["stream"];
    assert_eq!(stream["text"], choice["message"]["content"]);
    assert_eq!(stream["finish"], choice["finish_reason"]);
    assert_eq!(stream["usage"]["completion_tokens"], usage["completion_tokens"]);
    assert!(stream["chunks"].as_u64().unwrap() >= 3);
    // Client mistakes are 400s with a message that names the problem.
    let size = &out["errors"]["size"];
    assert_eq!(size["status"], 400);
    assert!(
        size["message"].as_str().unwrap().contains("100x100 is not a multiple of 32"),
        "{size}"
    );
    assert!(out["errors"]["role"]["message"].as_str().unwrap().contains("`tool` is not supported"));
    assert!(server.log().contains("POST /v1/chat/completions 200"), "{}", server.log());
}

#[test]
fn the_swift_protocol_over_raw_http() {
    let fx = fixture();
    let server = Server::start(&fx, 0, None, &["--max-body-mb", "1"]);
    let l = learner(&fx);
    let prompts = l.all_prompts();
    let greedy = l.greedy(&prompts);
    let a = server.addr.as_str();
    for path in ["/health", "/health/"] {
        let (s, h, b) = http(a, "GET", path, "");
        assert_eq!(s, 200);
        assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["status"], "ok");
        assert_eq!(header(&h, "x-coordexp-weight-version"), Some("0"));
    }
    let (s, _, b) = http(a, "GET", "/get_world_size/", "");
    assert_eq!(
        (s, serde_json::from_str::<Value>(&b).unwrap()["world_size"].clone()),
        (200, json!(1))
    );
    let (s, _, b) = http(a, "POST", "/get_engine_type/", "");
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["engine_type"], "LLMEngine");
    // /infer/ with return_details: swift's body (unknown keys ignored), images by path, with
    // <image> tags and top-level images, and as content parts; seeds seed + i.
    let p = l.session.encoder.prompts();
    let req = |k: usize, tags: bool| {
        let img = l.image_path(k).display().to_string();
        if tags {
            json!({"messages": [{"role": "system", "content": p.system},
                                {"role": "user", "content": format!("<image>{}", p.user)}],
                   "images": [img]})
        } else {
            json!({"messages": [{"role": "system", "content": p.system},
                                {"role": "user", "content": [{"type": "image", "image": img},
                                                             {"type": "text", "text": p.user}]}]})
        }
    };
    let body = json!({
        "infer_requests": [req(0, true), req(1, false)],
        "request_config": {"n": 1, "max_tokens": MAX_TOKENS, "temperature": 0, "top_p": 1, "top_k": -1,
                           "repetition_penalty": 1.0, "stop": ["<|im_end|>"], "return_details": true, "seed": 11},
        "metrics": null, "template": null, "use_tqdm": null, "adapter_request": null,
    });
    for path in ["/infer/", "/infer"] {
        let (s, h, b) = http(a, "POST", path, &body.to_string());
        assert_eq!(s, 200, "{b}");
        assert_eq!(header(&h, "x-coordexp-weight-version"), Some("0"));
        let items: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(items.as_array().unwrap().len(), 2);
        for k in 0..2 {
            let r = &items[k]["response"];
            assert_eq!(r["prompt_token_ids"], json!(prompts[k]), "item {k}");
            assert_eq!(r["choices"][0]["token_ids"], json!(greedy[k].tokens), "item {k}");
            assert_eq!(r["weight_version"], 0);
            assert_eq!(r["object"], "chat.completion");
        }
    }
    // NCCL weight endpoints fail fast, naming ours.
    for path in ["/init_communicator/", "/update_named_param/", "/update_flattened_params"] {
        let (s, _, b) = http(a, "POST", path, "{}");
        assert_eq!(s, 501, "{path}");
        let e: Value = serde_json::from_str(&b).unwrap();
        assert!(e["error"]["message"].as_str().unwrap().contains("POST /v1/weights"), "{b}");
    }
    for path in ["/reset_prefix_cache/", "/close_communicator"] {
        assert_eq!(http(a, "POST", path, "").0, 200);
    }
    // Client errors: 404, 405, 400 (JSON, schema, image), 413.
    let (s, _, b) = http(a, "GET", "/nope", "");
    assert_eq!(s, 404);
    assert!(
        serde_json::from_str::<Value>(&b).unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("routes:")
    );
    assert_eq!(http(a, "GET", "/infer/", "").0, 405);
    let (s, _, b) = http(a, "POST", "/infer/", "{\"infer_requests\": [");
    assert_eq!(s, 400);
    assert!(b.contains("not valid JSON"), "{b}");
    let (s, _, b) = http(a, "POST", "/infer/", "{\"infer_requests\": [{\"messages\": 3}]}");
    assert_eq!(s, 400);
    assert!(b.contains("infer_requests[0]"), "{b}");
    let bad = bad_png(fx.dir.path()).display().to_string();
    let body = json!({"infer_requests": [{"messages": [{"role": "user", "content": [{"type": "image", "image": bad}]}]}]});
    let (s, _, b) = http(a, "POST", "/infer/", &body.to_string());
    assert_eq!(s, 400);
    assert!(b.contains("not a multiple of 32") && b.contains("coordexp data resize"), "{b}");
    let (s, _, _) = http(a, "POST", "/v1/chat/completions", &"x".repeat(2 << 20));
    assert_eq!(s, 413);
    assert!(!server.log().contains(" 500 "), "{}", server.log());
}

#[test]
fn both_backends_roll_out_like_the_learner_and_weight_sync_reloads_between_batches() {
    let fx = fixture();
    let server = Server::start(&fx, 0, None, &[]);
    let l = learner(&fx);
    let prompts = l.all_prompts();
    let greedy = l.greedy(&prompts);
    for kind in [Kind::Openai, Kind::Swift] {
        let mut b = l.backend(kind, &server.url(), None);
        let out = b.generate(&l.requests(&prompts, 100)).unwrap();
        for (k, r) in out.iter().enumerate() {
            let r = &r.as_ref().unwrap()[0];
            assert_eq!(r.prompt_ids, prompts[k], "{kind:?} {k}");
            assert_eq!(r.tokens, greedy[k].tokens, "{kind:?} {k}");
            assert_eq!(r.stop, greedy[k].stop);
            assert_eq!(r.weight_version, 0);
        }
    }
    // Change the learner's weights (negate the final norm), sync as version 5: the server now
    // answers like the changed learner, and says version 5.
    for (name, t) in l.model.var_store().variables() {
        if name == "model.language_model.norm.weight" {
            let mut t = t.set_requires_grad(false);
            let _ = t.f_neg_().unwrap();
        }
    }
    let changed = l.greedy(&prompts);
    assert_ne!(changed[0].tokens, greedy[0].tokens, "the change matters");
    let sync = fx.dir.path().join("sync");
    let mut b = l.backend(Kind::Openai, &server.url(), Some(&sync));
    let report = b.sync_weights(&l.model, 5).unwrap().unwrap();
    assert_eq!((report.version, report.servers), (5, 1));
    assert!(report.save_s >= 0.0 && report.reload_s > 0.0);
    println!("weight sync: save {:.3} s, reload {:.3} s", report.save_s, report.reload_s);
    let out = b.generate(&l.requests(&prompts, 100)).unwrap();
    for (k, r) in out.iter().enumerate() {
        let r = &r.as_ref().unwrap()[0];
        assert_eq!((r.tokens.clone(), r.weight_version), (changed[k].tokens.clone(), 5), "{k}");
    }
    let (_, h, b) = http(&server.addr, "GET", "/v1/weights", "");
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["version"], 5);
    assert_eq!(header(&h, "x-coordexp-weight-version"), Some("5"));
    // A directory without weights is a 400 that keeps the old weights.
    let empty = fx.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (s, _, b) = http(
        &server.addr,
        "POST",
        "/v1/weights",
        &json!({"path": empty, "version": 6}).to_string(),
    );
    assert_eq!(s, 400);
    assert!(b.contains("no *.safetensors"), "{b}");
    assert_eq!(
        http(&server.addr, "GET", "/health", "")
            .1
            .iter()
            .find(|(k, _)| k == "x-coordexp-weight-version")
            .unwrap()
            .1,
        "5"
    );
}

#[test]
fn injected_faults_give_the_backend_the_right_per_request_results() {
    let fx = fixture();
    // Generation requests are numbered in arrival order; the backend sends one at a time.
    let faults = "status:500@1,malformed@3,prompt_ids@4,delay:3s@5-6,count@7,status:503@8";
    let server = Server::start(&fx, 0, Some(faults), &[]);
    let l = learner(&fx);
    let prompts = l.all_prompts();
    let mut b = l.backend(Kind::Openai, &server.url(), None);
    let one = |b: &mut HttpBackend| b.generate(&l.requests(&prompts[..1], 100)).unwrap();
    let calls = |b: &HttpBackend| b.stats.calls.load(std::sync::atomic::Ordering::SeqCst);
    // 1: 500 → resent (2) → ok.
    assert_eq!(kinds(&one(&mut b)), vec!["ok"]);
    assert_eq!(calls(&b), 2);
    // 3: malformed → protocol, not resent.
    assert_eq!(kinds(&one(&mut b)), vec!["protocol"]);
    assert_eq!(calls(&b), 3);
    // 4: foreign prompt ids → a rollout whose prompt ids differ (the trainer drops it).
    let r = one(&mut b);
    assert_ne!(r[0].as_ref().unwrap()[0].prompt_ids, prompts[0]);
    // 5, 6: slower than the backend's 2 s → timeout after one resend.
    let mut fast = l.backend(Kind::Openai, &server.url(), None);
    let mut o = fast.options().clone();
    o.timeout = Duration::from_secs(2);
    o.retries = 1;
    o.backoff = Duration::from_millis(10);
    fast = HttpBackend::new(o, &l.session.encoder).unwrap();
    assert_eq!(kinds(&one(&mut fast)), vec!["timeout"]);
    assert_eq!(calls(&fast), 2);
    // 7: one choice short → protocol.
    assert_eq!(kinds(&one(&mut b)), vec!["protocol"]);
    // 8: 503 → resent (9) → ok.
    assert_eq!(kinds(&one(&mut b)), vec!["ok"]);
    assert!(server.log().contains("POST /v1/chat/completions 503"));
}

#[test]
fn swift_wrong_count_is_bisected_and_the_server_deadline_is_a_504() {
    let fx = fixture();
    let server = Server::start(&fx, 0, Some("count@1"), &[]);
    let l = learner(&fx);
    let prompts = l.all_prompts();
    let greedy = l.greedy(&prompts);
    let mut b = l.backend(Kind::Swift, &server.url(), None);
    let out = b.generate(&l.requests(&prompts, 100)).unwrap();
    assert_eq!(kinds(&out), vec!["ok"; 3]);
    for (k, r) in out.iter().enumerate() {
        assert_eq!(r.as_ref().unwrap()[0].tokens, greedy[k].tokens, "never zipped wrongly: {k}");
    }
    assert_eq!(b.stats.bisections.load(std::sync::atomic::Ordering::SeqCst), 1);
    drop(server);
    // A request that waits past the server's deadline (rollout.timeout_s: 1) is a 504.
    let fx = fixture_with_timeout(1);
    let server = Server::start(&fx, 0, Some("delay:1500ms@1"), &[]);
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let (s, h, b) = http(&server.addr, "POST", "/v1/chat/completions", &body.to_string());
    assert_eq!(s, 504, "{b}");
    assert!(b.contains("deadline"), "{b}");
    assert!(header(&h, "x-coordexp-weight-version").is_some());
    let (s, _, _) = http(&server.addr, "POST", "/v1/chat/completions", &body.to_string());
    assert_eq!(s, 200);
}

#[test]
fn a_server_killed_mid_run_and_restarted_is_recovered_with_a_resync() {
    let fx = fixture();
    let server = Server::start(&fx, 0, Some("crash@2"), &[]);
    let port = server.port();
    let l = learner(&fx);
    let prompts = l.all_prompts();
    let sync = fx.dir.path().join("sync");
    let mut b = l.backend(Kind::Openai, &server.url(), Some(&sync));
    let mut o = b.options().clone();
    o.retries = 6;
    o.backoff = Duration::from_millis(250);
    o.backoff_max = Duration::from_secs(4);
    o.concurrency = 1;
    o.sync_dir = Some(sync.clone());
    b = HttpBackend::new(o, &l.session.encoder).unwrap();
    b.sync_weights(&l.model, 3).unwrap();
    let first = b.generate(&l.requests(&prompts[..1], 100)).unwrap();
    assert_eq!(first[0].as_ref().unwrap()[0].weight_version, 3);
    // Request 2 crashes the server; a new one (base weights, version 0) comes up on the port.
    let restarted = std::thread::scope(|s| {
        let fx = &fx;
        let h = s.spawn(move || {
            let mut server = server;
            let status = server.wait_exit(Duration::from_secs(60));
            assert_eq!(status.code(), Some(86), "the injected crash");
            drop(server);
            Server::start(fx, port, None, &[])
        });
        let out = b.generate(&l.requests(&prompts[..1], 100)).unwrap();
        (out, h.join().unwrap())
    });
    let (out, server) = restarted;
    assert_eq!(kinds(&out), vec!["ok"], "{:?}\n{}", out, server.log());
    assert_eq!(out[0].as_ref().unwrap()[0].weight_version, 3, "re-synced after the restart");
    assert!(b.stats.retries.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(b.stats.resyncs.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_0_and_a_full_queue_is_503() {
    let fx = fixture();
    let mut server = Server::start(&fx, 0, Some("hold:1500ms@1"), &["--max-queue", "1"]);
    let addr = server.addr.clone();
    let body =
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).to_string();
    let in_flight = {
        let (addr, body) = (addr.clone(), body.clone());
        std::thread::spawn(move || http(&addr, "POST", "/v1/chat/completions", &body))
    };
    std::thread::sleep(Duration::from_millis(500));
    // The one queue place is held: the next request is told to come back.
    let (s, h, b) = http(&addr, "POST", "/v1/chat/completions", &body);
    assert_eq!(s, 503, "{b}");
    assert_eq!(header(&h, "retry-after"), Some("1"));
    server.sigterm();
    let (s, _, b) = in_flight.join().unwrap();
    assert_eq!(s, 200, "{b}");
    let status = server.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", server.log());
    assert!(server.log().contains("stopping"), "{}", server.log());
}

/// Continuous batching across HTTP requests: a short request that arrives while a long one is
/// decoding joins the running rows at the next step and is answered long before the long one
/// ends (an engine that ran each batch to its end would make it wait for the long request).
#[test]
fn a_request_arriving_mid_generation_joins_the_running_batch_and_finishes_first() {
    let fx = fixture();
    let server = Server::start(&fx, 0, None, &[]);
    let started = Instant::now();
    let ask = |max_tokens: usize| {
        let addr = server.addr.clone();
        let body = json!({"messages": [{"role": "user", "content": "hi"}],
                          "max_tokens": max_tokens, "ignore_eos": true, "return_token_ids": true});
        std::thread::spawn(move || {
            let (status, _, b) = http(&addr, "POST", "/v1/chat/completions", &body.to_string());
            assert_eq!(status, 200, "{b}");
            let v: Value = serde_json::from_str(&b).unwrap();
            (v["choices"][0]["token_ids"].as_array().unwrap().len(), started.elapsed())
        })
    };
    let long = ask(1900);
    // Long enough for the long request to be decoding (it takes ≈ 0.4 s on a fast machine).
    std::thread::sleep(Duration::from_millis(50));
    let short = ask(2);
    let (short_tokens, short_done) = short.join().unwrap();
    let (long_tokens, long_done) = long.join().unwrap();
    assert_eq!((short_tokens, long_tokens), (2, 1900));
    eprintln!("short answered at {short_done:?}, long at {long_done:?}");
    assert!(
        short_done < long_done,
        "the short request ({short_done:?}) waited for the long one ({long_done:?}):\n{}",
        server.log()
    );
}

/// Latency percentiles of `total` chat requests sent by `clients` concurrent clients.
fn load(
    addr: &str,
    clients: usize,
    total: usize,
    image: &Path,
    p: (&str, &str),
) -> (f64, f64, usize) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let lat = Mutex::new(Vec::new());
    let bad = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= total {
                    break;
                }
                let body = json!({
                    "messages": [{"role": "system", "content": p.0},
                                 {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image.display().to_string()}},
                                                              {"type": "text", "text": p.1}]}],
                    "max_tokens": 8, "temperature": 0.7, "seed": k,
                });
                let t = Instant::now();
                let (status, _, _) = http(addr, "POST", "/v1/chat/completions", &body.to_string());
                lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
                if status != 200 {
                    bad.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let mut v = lat.into_inner().unwrap();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (pct(0.5), pct(0.99), bad.into_inner())
}

#[test]
fn a_bounded_load_test_answers_every_request_without_a_5xx() {
    let fx = fixture();
    let server = Server::start(&fx, 0, None, &[]);
    let l = learner(&fx);
    let p = l.session.encoder.prompts();
    let image = l.image_path(0);
    let (p50, p99, bad) = load(&server.addr, 64, 64, &image, (&p.system, &p.user));
    println!("load: 64 concurrent requests: p50 {p50:.0} ms, p99 {p99:.0} ms");
    assert_eq!(bad, 0, "{}", server.log());
    for clients in [1, 8, 32] {
        let total = (clients * 2).max(8);
        let (p50, p99, bad) = load(&server.addr, clients, total, &image, (&p.system, &p.user));
        println!("load: {clients} client(s), {total} requests: p50 {p50:.0} ms, p99 {p99:.0} ms");
        assert_eq!(bad, 0);
    }
    assert!(!server.log().contains("completions 5"), "no 5xx:\n{}", server.log());
}

/// A stage-2 training config on the fixture's data and model, writing its run under `out`:
/// the shipped `configs/stage2/demo.yaml` with `backend: embedded`, else the shipped
/// `configs/stage2/server.yaml` with `backend` (`openai`, `swift`) against `url`.
fn stage2_config(fx: &Fixture, backend: &str, url: &str, out: &str) -> PathBuf {
    stage2_config_with(fx, backend, url, out, 0, 60.0, 4)
}

/// [`stage2_config`] with `rollout.retries`, `rollout.timeout_s` and
/// `rollout.decode_batch_size` (an HTTP backend's calls in flight per server).
fn stage2_config_with(
    fx: &Fixture,
    backend: &str,
    url: &str,
    out: &str,
    retries: u32,
    timeout_s: f64,
    in_flight: u32,
) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let demo = fx.dir.path().join("demo");
    let (base, servers) = if backend == "embedded" {
        ("configs/stage2/demo.yaml", String::new())
    } else {
        ("configs/stage2/server.yaml", format!("  servers: [{{url: {url:?}}}]\n"))
    };
    let path = fx.dir.path().join(format!("{out}.yaml"));
    std::fs::write(
        &path,
        format!(
            "extends: {:?}\nrun:\n  name: demo-stage2\n  output_dir: {:?}\ndata:\n  train: {:?}\n  val: null\n\
             model:\n  path: {:?}\npacking:\n  max_length: 512\n\
             train:\n  max_steps: 4\n  log_every: 1\n  eval_every: 0\n  save_every: 1\n  keep_last: 4\n\
             rollout:\n  backend: {backend}\n  max_new_tokens: {MAX_TOKENS}\n  retries: {retries}\n  timeout_s: {timeout_s}\n  decode_batch_size: {in_flight}\n{servers}",
            repo.join(base),
            fx.dir.path().join(out),
            demo.join("data/train.jsonl"),
            fx.model,
        ),
    )
    .unwrap();
    path
}

/// `coordexp train CONFIG`; its train metric lines by step.
fn train_metrics(config: &Path, run_dir: &Path) -> Vec<Value> {
    let o = common::coordexp(&["train", config.to_str().unwrap(), "--no-progress"]);
    assert!(o.status.success(), "coordexp train failed:\n{}", common::text(&o));
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["mode"] == "train")
        .collect()
}

/// The metrics that depend on what was trained (losses, terms, channel-B counters), without
/// timings, the process's memory and the weight-sync and HTTP counters that only an HTTP
/// backend has.
fn trained_metrics(v: &Value) -> Vec<(String, f64)> {
    v["metrics"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| {
            common::is_trained_metric(k)
                && *k != "rollout/weight_syncs"
                && !k.starts_with("rollout/http_")
        })
        .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
        .collect()
}

#[test]
fn stage2_training_against_coordexp_serve_repeats_the_embedded_run_and_syncs_every_b_step() {
    let fx = fixture();
    let server = Server::start(&fx, 0, None, &[]);
    let embedded = train_metrics(
        &stage2_config(&fx, "embedded", "", "embedded"),
        &fx.dir.path().join("embedded/demo-stage2"),
    );
    assert_eq!(embedded.len(), 4, "one line per step");
    let b_steps =
        embedded.iter().filter(|v| v["metrics"].get("stage2/raw_rollouts").is_some()).count();
    assert!(b_steps >= 2, "the schedule has channel-B steps after training: {embedded:?}");
    for kind in ["openai", "swift"] {
        let run_dir = fx.dir.path().join(kind).join("demo-stage2");
        let served = train_metrics(&stage2_config(&fx, kind, &server.url(), kind), &run_dir);
        assert_eq!(served.len(), embedded.len());
        for (e, s) in embedded.iter().zip(&served) {
            assert_eq!(trained_metrics(s), trained_metrics(e), "{kind}: step {}", e["step"]);
            let b = e["metrics"].get("stage2/raw_rollouts").is_some();
            // Every B step follows an update, so every B step syncs the weights first.
            let syncs = s["metrics"].get("rollout/weight_syncs").and_then(Value::as_f64);
            assert_eq!(syncs, b.then_some(1.0), "{kind}: step {}", e["step"]);
            if b {
                assert!(s["metrics"]["time/weight_sync_s"].as_f64().unwrap() > 0.0);
            }
        }
        assert!(run_dir.join("rollout_sync").is_dir(), "the default sync directory");
    }
    // The server now holds the weights the last B step rolled out from: the learner's after
    // the step before it. Its greedy answers repeat that checkpoint's, log-probabilities
    // included, and differ from the starting weights' (so the comparison has teeth).
    let (_, h, _) = http(&server.addr, "GET", "/health", "");
    let last_b = embedded.iter().rev().find(|v| v["metrics"].get("stage2/raw_rollouts").is_some());
    let version = last_b.unwrap()["step"].as_u64().unwrap() - 1;
    assert_eq!(header(&h, "x-coordexp-weight-version"), Some(version.to_string().as_str()));
    let start = learner(&fx);
    let ckpt = fx.dir.path().join(format!("embedded/demo-stage2/checkpoints/step-{version}"));
    let trained = Learner { model: start.session.load_model(&ckpt).unwrap(), ..learner(&fx) };
    let prompts = trained.all_prompts();
    let want = trained.greedy(&prompts);
    let before = start.greedy(&prompts);
    let mut backend = trained.backend(Kind::Openai, &server.url(), None);
    let got = backend.generate(&trained.requests(&prompts, 100)).unwrap();
    // Batch composition may move a log-probability by float rounding; training moved them far
    // more.
    let max_diff = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max)
    };
    let mut moved = 0.0f32;
    for (k, r) in got.iter().enumerate() {
        let r = &r.as_ref().unwrap()[0];
        assert_eq!(r.weight_version, version);
        assert_eq!(r.tokens, want[k].tokens, "{k}");
        let d = max_diff(&r.logprobs, &want[k].logprobs);
        assert!(d <= 1e-4, "{k}: served log-probs differ from the learner's by {d}");
        if r.tokens == before[k].tokens {
            moved = moved.max(max_diff(&r.logprobs, &before[k].logprobs));
        } else {
            moved = f32::INFINITY;
        }
    }
    eprintln!("log-prob change from training: {moved}");
    assert!(moved > 1e-3, "training barely changed the weights ({moved}): the check is blind");
}

#[test]
fn stage2_on_two_ranks_against_coordexp_serve_repeats_the_embedded_run() {
    // Rank 0 alone syncs the server and sends every request; rank 1 gets the answers.
    let fx = fixture();
    let server = Server::start(&fx, 0, None, &[]);
    let embedded = train_metrics(
        &stage2_config(&fx, "embedded", "", "embedded"),
        &fx.dir.path().join("embedded/demo-stage2"),
    );
    common::torchrun_train(&stage2_config(&fx, "openai", &server.url(), "ranks"));
    let run_dir = fx.dir.path().join("ranks/demo-stage2");
    let ranks: Vec<Value> = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["mode"] == "train")
        .collect();
    assert_eq!(ranks.len(), embedded.len());
    let mut b_steps = 0;
    for (e, r) in embedded.iter().zip(&ranks) {
        let (want, got) = (trained_metrics(e), trained_metrics(r));
        let names = |m: &[(String, f64)]| m.iter().map(|p| p.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&want), names(&got), "step {}", e["step"]);
        for ((name, u), (_, v)) in want.iter().zip(&got) {
            // Sums over two ranks add in another order than one process.
            assert!(
                (u - v).abs() <= 1e-5 * u.abs().max(1e-6),
                "step {} {name}: {u} vs {v}",
                e["step"]
            );
        }
        if e["metrics"].get("stage2/raw_rollouts").is_some() {
            b_steps += 1;
            assert_eq!(r["metrics"]["rollout/weight_syncs"].as_f64(), Some(1.0));
        }
    }
    assert!(b_steps >= 2);
    // One weight load per B step: rank 0 alone syncs.
    assert_eq!(server.log().matches("loaded as version").count(), b_steps, "{}", server.log());
}

#[test]
fn failed_rollout_requests_train_as_invalid_rollouts_counted_by_kind() {
    let fx = fixture();
    // Requests are numbered in arrival order; with retries 0 each failure is final.
    let server = Server::start(&fx, 0, Some("status:400@1-2,malformed@3,prompt_ids@4"), &[]);
    let run_dir = fx.dir.path().join("faults/demo-stage2");
    let lines = train_metrics(&stage2_config(&fx, "openai", &server.url(), "faults"), &run_dir);
    let sum = |k: &str| -> f64 {
        lines.iter().filter_map(|v| v["metrics"].get(k).and_then(Value::as_f64)).sum()
    };
    assert_eq!(sum("rollout/backend_fallback/status"), 2.0, "{lines:?}");
    assert_eq!(sum("rollout/backend_fallback/protocol"), 1.0, "the malformed answer");
    // Foreign prompt ids: the sample cannot be trained on the learner's prompt, so it is dropped.
    assert_eq!(sum("stage2_ab/channel_b/prompt_tok_mismatch"), 1.0);
    for v in &lines {
        assert!(v["metrics"]["loss"].as_f64().unwrap().is_finite(), "{v}");
    }
}

/// The sum of counter `k` over `lines`.
fn total(lines: &[Value], k: &str) -> f64 {
    lines.iter().filter_map(|v| v["metrics"].get(k).and_then(Value::as_f64)).sum()
}

/// Every fallback counter summed (`rollout/backend_fallback/*`).
fn fallbacks(lines: &[Value]) -> f64 {
    lines
        .iter()
        .flat_map(|v| v["metrics"].as_object().unwrap().iter())
        .filter(|(k, _)| k.starts_with("rollout/backend_fallback/"))
        .filter_map(|(_, v)| v.as_f64())
        .sum()
}

fn assert_finite_losses(lines: &[Value]) {
    for v in lines {
        assert!(v["metrics"]["loss"].as_f64().unwrap().is_finite(), "{v}");
    }
}

#[test]
fn a_delay_past_the_timeout_trains_that_step_as_invalid_rollouts_counted_as_timeouts() {
    let fx = fixture();
    // The first rollout request waits 30 s (a server thread sleeps); the learner gives up after
    // 5 s (no resend), a margin no normal request of this tiny model comes near.
    let server = Server::start(&fx, 0, Some("delay:30s@1"), &[]);
    // One call in flight: the server is down for the rest of that step once the first
    // request timed out, so every request of the step falls back, none of the next step.
    let cfg = stage2_config_with(&fx, "openai", &server.url(), "delay", 0, 5.0, 1);
    let lines = train_metrics(&cfg, &fx.dir.path().join("delay/demo-stage2"));
    let b: Vec<&Value> =
        lines.iter().filter(|v| v["metrics"].get("stage2/raw_rollouts").is_some()).collect();
    assert!(b.len() >= 2, "{lines:?}");
    let first = b[0]["metrics"]["stage2/raw_rollouts"].as_f64().unwrap();
    assert_eq!(total(&lines, "rollout/backend_fallback/timeout"), first, "{lines:?}");
    assert_eq!(fallbacks(&lines), first, "later steps roll out normally: {lines:?}");
    assert_finite_losses(&lines);
}

#[test]
fn a_wrong_item_count_is_never_zipped_and_trains_as_one_invalid_rollout() {
    let fx = fixture();
    // The first /infer/ answer is one item short: a protocol error, not a shifted zip.
    let server = Server::start(&fx, 0, Some("count@1"), &[]);
    let lines = train_metrics(
        &stage2_config(&fx, "swift", &server.url(), "count"),
        &fx.dir.path().join("count/demo-stage2"),
    );
    assert_eq!(total(&lines, "rollout/backend_fallback/protocol"), 1.0, "{lines:?}");
    assert_eq!(fallbacks(&lines), 1.0, "{lines:?}");
    assert_finite_losses(&lines);
}

#[test]
fn a_stale_weight_version_is_refused_after_one_resync_per_step_and_counted() {
    let fx = fixture();
    // Every answer claims weights the learner never sent.
    let server = Server::start(&fx, 0, Some("version:99@1+"), &[]);
    let lines = train_metrics(
        &stage2_config(&fx, "openai", &server.url(), "stale"),
        &fx.dir.path().join("stale/demo-stage2"),
    );
    let b_steps =
        lines.iter().filter(|v| v["metrics"].get("stage2/raw_rollouts").is_some()).count();
    assert!(b_steps >= 2, "{lines:?}");
    let views = total(&lines, "stage2/raw_rollouts");
    assert_eq!(total(&lines, "rollout/backend_fallback/stale_weights"), views, "{lines:?}");
    assert_eq!(total(&lines, "rollout/http_resyncs"), b_steps as f64, "{lines:?}");
    assert_finite_losses(&lines);
}

#[test]
fn a_server_killed_mid_run_and_restarted_is_retried_resynced_and_trains_like_the_embedded_run() {
    let fx = fixture();
    let embedded = train_metrics(
        &stage2_config(&fx, "embedded", "", "embedded"),
        &fx.dir.path().join("embedded/demo-stage2"),
    );
    // The second rollout request kills the server (every open connection is reset: four calls
    // are in flight); a new one (base weights, version 0) comes up on the same port while the
    // learner retries, and the calls that find it stale wait for one re-sync and resend.
    let server = Server::start(&fx, 0, Some("crash@2"), &[]);
    let (url, port) = (server.url(), server.port());
    let cfg = stage2_config_with(&fx, "openai", &url, "crash", 8, 60.0, 4);
    let (lines, restarted) = std::thread::scope(|s| {
        let fx = &fx;
        let restart = s.spawn(move || {
            let mut server = server;
            let status = server.wait_exit(Duration::from_secs(120));
            assert_eq!(status.code(), Some(86), "the injected crash");
            drop(server);
            Server::start(fx, port, None, &[])
        });
        let lines = train_metrics(&cfg, &fx.dir.path().join("crash/demo-stage2"));
        (lines, restart.join().unwrap())
    });
    assert!(total(&lines, "rollout/http_retries") >= 1.0, "{lines:?}");
    assert!(total(&lines, "rollout/http_resyncs") >= 1.0, "{lines:?}\n{}", restarted.log());
    assert_eq!(fallbacks(&lines), 0.0, "{lines:?}");
    assert_eq!(lines.len(), embedded.len());
    for (e, s) in embedded.iter().zip(&lines) {
        assert_eq!(trained_metrics(s), trained_metrics(e), "step {}", e["step"]);
    }
}
