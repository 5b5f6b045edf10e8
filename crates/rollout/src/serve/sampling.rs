//! Sampling fields of a request (OpenAI / vLLM names, also ms-swift's `request_config`) and the
//! post-processing of a generation into what a response reports: text, token ids, log-probs,
//! finish and stop reasons.
//!
//! Unset decoding fields take the served config's `rollout.decoding` (the server's "generation
//! config", like vLLM's model defaults), so a client that sends nothing gets the run's own
//! settings. Fields the engine cannot honour (penalties, `min_p`, `top_logprobs` > 0) are a 400
//! rather than silently ignored. Stop strings that are one token are stop ids; longer ones cut
//! the output after generation (the engine knows only stop ids).

use coordexp_core::config::schema::Decoding;
use coordexp_model::generate::{Generation, SamplingConfig, StopReason};
use coordexp_text::Encoder;
use serde_json::{Map, Value, json};

use super::http::ApiError;
use crate::predict::{decode_with_coords, sampling};

/// The most samples one request may ask for.
pub const MAX_N: usize = 64;

/// What a request asks of the sampler and of the response.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub decoding: Decoding,
    pub max_tokens: Option<usize>,
    pub n: usize,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<i64>,
    pub ignore_eos: bool,
    pub logprobs: bool,
    pub skip_special_tokens: bool,
    pub return_token_ids: bool,
    pub tokens_as_ids: bool,
}

fn field<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn number(o: &Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("`{key}` must be a number, got {v}"))),
    }
}

fn integer(o: &Map<String, Value>, key: &str) -> Result<Option<i64>, ApiError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => {
            v.as_i64().or_else(|| v.as_u64().map(|u| u as i64)).map(Some).ok_or_else(|| {
                ApiError::bad_request(format!("`{key}` must be an integer, got {v}"))
            })
        }
    }
}

fn boolean(o: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("`{key}` must be true or false, got {v}"))
        }),
    }
}

/// Parse the sampling fields of `o`; unset decoding fields take `defaults`.
pub fn parse(o: &Map<String, Value>, defaults: &Decoding) -> Result<Sampling, ApiError> {
    let mut d = defaults.clone();
    if let Some(t) = number(o, "temperature")? {
        if t < 0.0 {
            return Err(ApiError::bad_request(format!(
                "`temperature` {t} must be ≥ 0 (0 = greedy)"
            )));
        }
        d.temperature = t;
    }
    if let Some(p) = number(o, "top_p")? {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::bad_request(format!("`top_p` {p} must be in (0, 1]")));
        }
        d.top_p = p;
    }
    if let Some(k) = integer(o, "top_k")? {
        if k < -1 {
            return Err(ApiError::bad_request(format!(
                "`top_k` {k} must be ≥ 1, or 0 / -1 for off"
            )));
        }
        d.top_k = if k == 0 { -1 } else { k };
    }
    if let Some(r) = number(o, "repetition_penalty")? {
        if r <= 0.0 {
            return Err(ApiError::bad_request(format!("`repetition_penalty` {r} must be > 0")));
        }
        d.repetition_penalty = r;
    }
    for key in ["presence_penalty", "frequency_penalty", "min_p"] {
        if number(o, key)?.is_some_and(|x| x != 0.0) {
            return Err(ApiError::bad_request(format!(
                "`{key}` is not supported by this server's engine; leave it unset or 0"
            )));
        }
    }
    if integer(o, "top_logprobs")?.is_some_and(|k| k > 0) {
        return Err(ApiError::bad_request(
            "`top_logprobs` > 0 is not supported: the engine keeps the log-prob of the chosen token only (ask `logprobs: true`)",
        ));
    }
    let max_tokens = match integer(o, "max_completion_tokens")?.or(integer(o, "max_tokens")?) {
        None => None,
        Some(m) if m >= 1 => Some(m as usize),
        Some(m) => return Err(ApiError::bad_request(format!("`max_tokens` {m} must be ≥ 1"))),
    };
    let n = match integer(o, "n")? {
        None => 1,
        Some(n) if (1..=MAX_N as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::bad_request(format!("`n` {n} must be between 1 and {MAX_N}")));
        }
    };
    // Seeds are 64-bit streams; a negative int64 seed maps to its two's complement.
    let seed = match field(o, "seed") {
        None => None,
        Some(v) => {
            Some(v.as_u64().or_else(|| v.as_i64().map(|s| s as u64)).ok_or_else(|| {
                ApiError::bad_request(format!("`seed` must be an integer, got {v}"))
            })?)
        }
    };
    let stop = match field(o, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str().map(String::from).ok_or_else(|| {
                    ApiError::bad_request("`stop` must be a string or a list of strings")
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::bad_request("`stop` must be a string or a list of strings"));
        }
    };
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::bad_request("`stop` strings must not be empty"));
    }
    let stop_token_ids = match field(o, "stop_token_ids") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_i64().filter(|i| *i >= 0).ok_or_else(|| {
                    ApiError::bad_request("`stop_token_ids` must be a list of token ids")
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::bad_request("`stop_token_ids` must be a list of token ids"));
        }
    };
    // `logprobs` is a bool (OpenAI, swift); vLLM's completions API also takes an int.
    let logprobs = match field(o, "logprobs") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(k)) => k.as_i64().is_some_and(|k| k >= 0),
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "`logprobs` must be true or false, got {v}"
            )));
        }
    };
    Ok(Sampling {
        decoding: d,
        max_tokens,
        n,
        seed,
        stop,
        stop_token_ids,
        ignore_eos: boolean(o, "ignore_eos")?.unwrap_or(false),
        logprobs,
        skip_special_tokens: boolean(o, "skip_special_tokens")?.unwrap_or(true),
        return_token_ids: boolean(o, "return_token_ids")?.unwrap_or(false)
            || boolean(o, "return_details")?.unwrap_or(false),
        tokens_as_ids: boolean(o, "return_tokens_as_token_ids")?.unwrap_or(false),
    })
}

impl Sampling {
    /// The engine's sampler settings: the chat format's stop ids (unless `ignore_eos`), the
    /// request's stop ids and its one-token stop strings.
    pub fn config(&self, encoder: &Encoder, max_new: usize, chat_stop: &[i64]) -> SamplingConfig {
        let mut ids: Vec<i64> = if self.ignore_eos { Vec::new() } else { chat_stop.to_vec() };
        ids.extend(&self.stop_token_ids);
        ids.extend(self.single_token_stops(encoder));
        ids.sort_unstable();
        ids.dedup();
        sampling(&self.decoding, max_new, ids)
    }

    fn single_token_stops(&self, encoder: &Encoder) -> Vec<i64> {
        let tok = encoder.model().tokenizer();
        self.stop.iter().filter_map(|s| tok.token_to_id(s).map(i64::from)).collect()
    }

    /// Stop strings the engine cannot stop at by itself (longer than one token).
    fn text_stops(&self, encoder: &Encoder) -> Vec<&str> {
        let tok = encoder.model().tokenizer();
        self.stop.iter().filter(|s| tok.token_to_id(s).is_none()).map(String::as_str).collect()
    }
}

/// One generated sample as a response reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The token ids, ending with the stop id when one ended generation.
    pub tokens: Vec<i64>,
    pub logprobs: Vec<f32>,
    pub text: String,
    pub finish_reason: &'static str,
    /// The stop id or stop string that ended generation (vLLM's `stop_reason`).
    pub stop_reason: Value,
}

/// Text, finish reason and stop-string truncation of one generation.
pub fn finish(encoder: &Encoder, s: &Sampling, g: Generation) -> Result<Finished, ApiError> {
    let text_of = |ids: &[i64]| {
        decode_with_coords(encoder, ids, &[])
            .map(|(t, _)| t)
            .map_err(|e| ApiError::server(format!("cannot decode generated tokens: {}", e.what())))
    };
    let stopped = g.stop == StopReason::StopToken && !g.tokens.is_empty();
    let shown = |ids: &[i64], stopped: bool| -> usize {
        if stopped && s.skip_special_tokens { ids.len().saturating_sub(1) } else { ids.len() }
    };
    let mut tokens = g.tokens;
    let mut logprobs = g.logprobs;
    let mut text = text_of(&tokens[..shown(&tokens, stopped)])?;
    let mut finish_reason = if stopped { "stop" } else { "length" };
    let mut stop_reason = if stopped { json!(tokens.last()) } else { Value::Null };
    let stops = s.text_stops(encoder);
    if let Some(first) = stops.iter().filter_map(|st| text.find(st).map(|p| (p, *st))).min() {
        // The fewest tokens whose text holds a stop string (prefix texts only grow).
        let holds = |k: usize| -> Result<bool, ApiError> {
            let t = text_of(&tokens[..k])?;
            Ok(stops.iter().any(|st| t.contains(st)))
        };
        let (mut lo, mut hi) = (1, shown(&tokens, stopped));
        while lo < hi {
            let mid = (lo + hi) / 2;
            if holds(mid)? { hi = mid } else { lo = mid + 1 }
        }
        tokens.truncate(hi);
        logprobs.truncate(hi);
        let t = text_of(&tokens)?;
        let (pos, stop) =
            stops.iter().filter_map(|st| t.find(st).map(|p| (p, *st))).min().unwrap_or(first);
        text = t[..pos].to_string();
        finish_reason = "stop";
        stop_reason = json!(stop);
    }
    Ok(Finished { tokens, logprobs, text, finish_reason, stop_reason })
}

/// The OpenAI `logprobs` object of a sample: one entry per token id.
pub fn logprobs_json(encoder: &Encoder, f: &Finished, as_ids: bool) -> Value {
    let tok = encoder.model().tokenizer();
    let vocab = encoder.model().vocab();
    let content: Vec<Value> = f
        .tokens
        .iter()
        .enumerate()
        .map(|(k, &id)| {
            let token = if as_ids {
                format!("token_id:{id}")
            } else {
                u32::try_from(id)
                    .ok()
                    .and_then(|u| match vocab.bin(u) {
                        Some(bin) => Some(bin.token()),
                        None => tok.decode(&[u], false).ok(),
                    })
                    .unwrap_or_default()
            };
            let lp = f.logprobs.get(k).copied().map(f64::from).filter(|x| x.is_finite());
            json!({
                "token": token,
                "logprob": lp.unwrap_or(-9999.0).max(-9999.0),
                "bytes": token.as_bytes(),
                "top_logprobs": [],
            })
        })
        .collect();
    json!({ "content": content })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn unset_fields_take_the_served_decoding_and_set_ones_are_checked() {
        let defaults = Decoding { temperature: 0.0, top_p: 0.9, top_k: 5, repetition_penalty: 1.1 };
        let s = parse(&obj(json!({})), &defaults).unwrap();
        assert_eq!(s.decoding, defaults);
        assert_eq!((s.n, s.max_tokens, s.seed, s.logprobs), (1, None, None, false));
        let s = parse(
            &obj(json!({"temperature": 0.7, "top_k": -1, "top_p": 1, "n": 3, "seed": -1,
                        "max_tokens": 9, "stop": "]}", "logprobs": true, "return_token_ids": true})),
            &defaults,
        )
        .unwrap();
        assert_eq!(s.decoding.temperature, 0.7);
        assert_eq!(s.decoding.top_k, -1);
        assert_eq!((s.n, s.max_tokens, s.seed), (3, Some(9), Some(u64::MAX)));
        assert_eq!(s.stop, vec!["]}".to_string()]);
        assert!(s.logprobs && s.return_token_ids);
        assert_eq!(parse(&obj(json!({"top_k": 0})), &defaults).unwrap().decoding.top_k, -1);
        assert!(parse(&obj(json!({"return_details": true})), &defaults).unwrap().return_token_ids);
    }

    #[test]
    fn invalid_fields_are_400s_that_name_the_field() {
        let d = Decoding::default();
        for (v, needle) in [
            (json!({"temperature": -1}), "`temperature`"),
            (json!({"temperature": "hot"}), "`temperature` must be a number"),
            (json!({"top_p": 0}), "`top_p`"),
            (json!({"top_k": -2}), "`top_k`"),
            (json!({"repetition_penalty": 0}), "`repetition_penalty`"),
            (json!({"n": 0}), "`n`"),
            (json!({"n": 1000}), "`n`"),
            (json!({"max_tokens": 0}), "`max_tokens`"),
            (json!({"seed": 1.5}), "`seed`"),
            (json!({"stop": 3}), "`stop`"),
            (json!({"stop": [""]}), "`stop`"),
            (json!({"presence_penalty": 0.5}), "`presence_penalty`"),
            (json!({"top_logprobs": 2}), "`top_logprobs`"),
            (json!({"logprobs": "yes"}), "`logprobs`"),
            (json!({"stop_token_ids": [-1]}), "`stop_token_ids`"),
        ] {
            let e = parse(&obj(v.clone()), &d).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(needle), "{v}: {}", e.message);
        }
    }
}
