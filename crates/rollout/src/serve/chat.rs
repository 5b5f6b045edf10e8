//! `POST /v1/chat/completions`: the OpenAI protocol with vLLM's extras (`return_token_ids` with
//! `prompt_token_ids`, `return_tokens_as_token_ids`, `top_k`, `repetition_penalty`,
//! `stop_token_ids`, `ignore_eos`, `skip_special_tokens`), as JSON or as server-sent events.
//!
//! Streaming sends the role, then each choice's whole text, then its finish reason, then the
//! usage when `stream_options.include_usage`, then `data: [DONE]` — the engine answers a job
//! when it is complete, so the events are written together (tokens are not streamed one by
//! one). `content` keeps the coordinate tokens as their literals (they are
//! the answer) and drops the end-of-turn token unless `skip_special_tokens: false`.

use serde_json::{Map, Value, json};
use std::time::Instant;

use super::engine::{GenJob, GenOutput};
use super::http::{ApiError, Reply};
use super::prompt::{self, ImagePolicy};
use super::sampling::{self, Finished};
use super::{Ctx, Fault, engine_error, unix_now};

/// Faults that act before the request is read (crash, delay, injected status).
pub(crate) fn pre_faults(faults: &[Fault]) -> Result<(), ApiError> {
    for f in faults {
        match f {
            Fault::Crash => {
                tracing::error!("injected fault: crashing");
                std::process::exit(86);
            }
            Fault::Delay(d) => std::thread::sleep(*d),
            Fault::Status(code) => {
                return Err(ApiError::new(
                    *code,
                    "injected_fault",
                    format!("fault injected by COORDEXP_SERVE_FAULTS (status {code})"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The version a response reports (the `version:N` fault overrides it).
pub(crate) fn reported_version(faults: &[Fault], real: u64) -> u64 {
    faults
        .iter()
        .find_map(|f| if let Fault::Version(v) = f { Some(*v) } else { None })
        .unwrap_or(real)
}

/// A malformed 200 answer (the `malformed` fault).
pub(crate) fn malformed(version: u64) -> Reply {
    Reply::raw(200, b"{\"id\": \"x\", \"choices\": [".to_vec(), "application/json", version)
}

/// Queue `jobs` with the request's deadline and wait for them.
pub(crate) fn run(
    ctx: &Ctx,
    jobs: Vec<GenJob>,
    received: Instant,
    faults: &[Fault],
) -> Result<Vec<GenOutput>, ApiError> {
    let deadline = received + ctx.timeout;
    let ticket = ctx.engine.submit(jobs, deadline).map_err(|e| engine_error(e, ctx.timeout))?;
    for f in faults {
        if let Fault::Hold(d) = f {
            std::thread::sleep(*d);
        }
    }
    ticket.wait().map_err(|e| engine_error(e, ctx.timeout))
}

pub(crate) fn policy(ctx: &Ctx) -> ImagePolicy<'_> {
    ImagePolicy { root: ctx.image_root.as_deref(), max_bytes: ctx.max_body }
}

pub(crate) fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// One choice of a chat completion (non-streaming).
pub(crate) fn choice_json(
    ctx: &Ctx,
    encoder: &coordexp_text::Encoder,
    s: &sampling::Sampling,
    j: usize,
    f: &Finished,
) -> Value {
    let _ = ctx;
    json!({
        "index": j,
        "message": {"role": "assistant", "content": f.text, "tool_calls": []},
        "logprobs": if s.logprobs { sampling::logprobs_json(encoder, f, s.tokens_as_ids) } else { Value::Null },
        "finish_reason": f.finish_reason,
        "stop_reason": f.stop_reason,
        "token_ids": if s.return_token_ids { json!(f.tokens) } else { Value::Null },
    })
}

pub(crate) fn handle(ctx: &Ctx, body: &Value, received: Instant) -> Result<Reply, ApiError> {
    let (_, faults) = ctx.next_generation();
    pre_faults(&faults)?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let messages =
        obj.get("messages").ok_or_else(|| ApiError::bad_request("`messages` is required"))?;
    let conv = prompt::parse_messages(messages, None)?;
    let s = sampling::parse(obj, &ctx.decoding)?;
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(ApiError::bad_request(format!("`stream` must be true or false, got {v}")));
        }
    };
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let encoder = ctx.encoder()?;
    let enc = prompt::encode(&encoder, &conv, &policy(ctx))?;
    let max_new = ctx.max_new(enc.ids.len(), s.max_tokens, false)?;
    let seed = s.seed.unwrap_or_else(|| ctx.random_seed());
    let seeds = (0..s.n as u64).map(|j| seed.wrapping_add(j)).collect();
    let mut prompt_ids = enc.ids.clone();
    let job = GenJob {
        ids: enc.ids,
        positions: enc.positions,
        pixels: enc.pixels,
        sampling: s.config(&encoder, max_new, &ctx.stop_ids),
        seeds,
    };
    let out = run(ctx, vec![job], received, &faults)?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::server("the engine returned no output"))?;
    let version = reported_version(&faults, out.weight_version);
    if faults.contains(&Fault::Malformed) {
        return Ok(malformed(version));
    }
    let mut finished = out
        .samples
        .into_iter()
        .map(|g| sampling::finish(&encoder, &s, g))
        .collect::<Result<Vec<_>, _>>()?;
    if faults.contains(&Fault::Count) {
        finished.pop();
    }
    if faults.contains(&Fault::PromptIds)
        && let Some(last) = prompt_ids.last_mut()
    {
        *last += 1;
    }
    let completion: usize = finished.iter().map(|f| f.tokens.len()).sum();
    let prompt_len = prompt_ids.len();
    let id = format!("chatcmpl-{}", ctx.next_id());
    let created = unix_now();
    let prompt_ids_json = if s.return_token_ids { json!(prompt_ids) } else { Value::Null };
    if stream {
        let base = |choices: Value| {
            let mut m = Map::new();
            m.insert("id".into(), json!(id));
            m.insert("object".into(), json!("chat.completion.chunk"));
            m.insert("created".into(), json!(created));
            m.insert("model".into(), json!(ctx.model_name));
            m.insert("weight_version".into(), json!(version));
            m.insert("choices".into(), choices);
            m
        };
        let mut events = Vec::new();
        let mut first = base(json!(
            (0..finished.len())
                .map(|j| json!({"index": j, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}))
                .collect::<Vec<_>>()
        ));
        if s.return_token_ids {
            first.insert("prompt_token_ids".into(), prompt_ids_json.clone());
        }
        events.push(Value::Object(first));
        for (j, f) in finished.iter().enumerate() {
            let mut c = json!({
                "index": j,
                "delta": {"content": f.text},
                "logprobs": if s.logprobs { sampling::logprobs_json(&encoder, f, s.tokens_as_ids) } else { Value::Null },
                "finish_reason": null,
            });
            if s.return_token_ids {
                c["token_ids"] = json!(f.tokens);
            }
            events.push(Value::Object(base(json!([c]))));
            events.push(Value::Object(base(json!([{
                "index": j, "delta": {}, "logprobs": null,
                "finish_reason": f.finish_reason, "stop_reason": f.stop_reason,
            }]))));
        }
        if include_usage {
            let mut u = base(json!([]));
            u.insert("usage".into(), usage(prompt_len, completion));
            events.push(Value::Object(u));
        }
        let mut body = String::new();
        for e in events {
            body.push_str("data: ");
            body.push_str(&e.to_string());
            body.push_str("\n\n");
        }
        body.push_str("data: [DONE]\n\n");
        let mut r = Reply::raw(200, body.into_bytes(), "text/event-stream", version);
        r.headers.push(("Cache-Control", "no-cache".into()));
        return Ok(r.with_tokens(prompt_len, completion));
    }
    let choices: Vec<Value> =
        finished.iter().enumerate().map(|(j, f)| choice_json(ctx, &encoder, &s, j, f)).collect();
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": ctx.model_name,
        "choices": choices,
        "usage": usage(prompt_len, completion),
        "prompt_token_ids": prompt_ids_json,
        "weight_version": version,
    });
    Ok(Reply::json(200, &body, version).with_tokens(prompt_len, completion))
}
