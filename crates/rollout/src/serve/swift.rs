//! `POST /infer/`: the ms-swift rollout protocol (`swift rollout`, the reference's client).
//!
//! The body is `{"infer_requests": [{messages, images?}], "request_config": {...}}` (unknown
//! keys such as `metrics`, `template`, `use_tqdm`, `adapter_request` are ignored); the answer
//! is a JSON list, one `RolloutOutput` per request in request order:
//! `{"response": ChatCompletionResponse, "messages": null, "response_token_ids": [], …}`.
//! With `return_details` the response holds `prompt_token_ids` and each choice `token_ids`
//! (ending with the stop id when one ended generation). Seeds follow swift's synchronous
//! engine: request `i` of a call seeded `s` samples with `s + i` (with `n` samples,
//! `s + i·n + j`). `max_tokens` larger than the context allows is clamped, as swift does.
//! Any invalid request fails the whole call with a 400 naming it (`infer_requests[i]`), so a
//! client that bisects failing calls isolates it.

use serde_json::{Map, Value, json};
use std::time::Instant;

use super::chat::{malformed, policy, pre_faults, reported_version, run, usage};
use super::engine::GenJob;
use super::http::{ApiError, Reply};
use super::prompt;
use super::sampling::{self, Finished};
use super::{Ctx, Fault, unix_now};

pub(crate) fn infer(ctx: &Ctx, body: &Value, received: Instant) -> Result<Reply, ApiError> {
    let (_, faults) = ctx.next_generation();
    pre_faults(&faults)?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let requests = obj.get("infer_requests").and_then(Value::as_array).ok_or_else(|| {
        ApiError::bad_request("`infer_requests` must be a list of {messages, images?} objects")
    })?;
    let empty = Map::new();
    let config = match obj.get("request_config") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ApiError::bad_request("`request_config` must be an object or null")),
    };
    let s = sampling::parse(config, &ctx.decoding)
        .map_err(|e| ApiError { message: format!("request_config: {}", e.message), ..e })?;
    let seed = s.seed.unwrap_or_else(|| ctx.random_seed());
    let encoder = ctx.encoder()?;
    let mut jobs = Vec::with_capacity(requests.len());
    let mut prompts = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let at =
            |e: ApiError| ApiError { message: format!("infer_requests[{i}]: {}", e.message), ..e };
        let messages = r.get("messages").ok_or_else(|| {
            ApiError::bad_request(format!("infer_requests[{i}] has no `messages`"))
        })?;
        let conv = prompt::parse_messages(messages, r.get("images")).map_err(at)?;
        let enc = prompt::encode(&encoder, &conv, &policy(ctx)).map_err(at)?;
        let max_new = ctx.max_new(enc.ids.len(), s.max_tokens, true).map_err(at)?;
        let first = seed.wrapping_add((i * s.n) as u64);
        prompts.push(enc.ids.clone());
        jobs.push(GenJob {
            ids: enc.ids,
            positions: enc.positions,
            pixels: enc.pixels,
            sampling: s.config(&encoder, max_new, &ctx.stop_ids),
            seeds: (0..s.n as u64).map(|j| first.wrapping_add(j)).collect(),
        });
    }
    let outs = if jobs.is_empty() { Vec::new() } else { run(ctx, jobs, received, &faults)? };
    let version =
        reported_version(&faults, outs.first().map_or(ctx.version(), |o| o.weight_version));
    if faults.contains(&Fault::Malformed) {
        return Ok(malformed(version));
    }
    let mut items = Vec::with_capacity(outs.len());
    let (mut prompt_total, mut completion_total) = (0, 0);
    for (out, mut prompt_ids) in outs.into_iter().zip(prompts) {
        let finished = out
            .samples
            .into_iter()
            .map(|g| sampling::finish(&encoder, &s, g))
            .collect::<Result<Vec<Finished>, _>>()?;
        if faults.contains(&Fault::PromptIds)
            && let Some(last) = prompt_ids.last_mut()
        {
            *last += 1;
        }
        let completion: usize = finished.iter().map(|f| f.tokens.len()).sum();
        prompt_total += prompt_ids.len();
        completion_total += completion;
        let choices: Vec<Value> = finished
            .iter()
            .enumerate()
            .map(|(j, f)| {
                json!({
                    "index": j,
                    "message": {"role": "assistant", "content": f.text, "tool_calls": null},
                    "finish_reason": f.finish_reason,
                    "logprobs": if s.logprobs { sampling::logprobs_json(&encoder, f, s.tokens_as_ids) } else { Value::Null },
                    "token_ids": if s.return_token_ids { json!(f.tokens) } else { Value::Null },
                })
            })
            .collect();
        let mut response = json!({
            "model": ctx.model_name,
            "choices": choices,
            "usage": usage(prompt_ids.len(), completion),
            "id": ctx.next_id().to_string(),
            "object": "chat.completion",
            "created": unix_now(),
            "weight_version": reported_version(&faults, out.weight_version),
        });
        if s.return_token_ids {
            response["prompt_token_ids"] = json!(prompt_ids);
        }
        items.push(json!({
            "response": response,
            "messages": null,
            "response_token_ids": [],
            "response_loss_mask": [],
            "rollout_infos": {},
        }));
    }
    if faults.contains(&Fault::Count) {
        items.pop();
    }
    Ok(Reply::json(200, &Value::Array(items), version).with_tokens(prompt_total, completion_total))
}
