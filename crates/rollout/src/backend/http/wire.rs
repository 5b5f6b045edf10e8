//! Request bodies and answer parsing of the two HTTP protocols.
//!
//! Parsing follows the rules of `rollout_protocols.md` §7: token ids are authoritative (a
//! log-prob trace longer than the ids is cut, a shorter one kept); the prompt ids lose any
//! left padding; a generation that stopped on a stop id the server did not include gets it
//! back (when `stop_reason` names it), so HTTP rollouts look exactly like embedded ones; and a
//! list whose length is not the number of requests is never zipped.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coordexp_model::generate::StopReason;
use serde_json::{Value, json};

use crate::backend::{BackendError, RequestResult, Rollout, RolloutRequest};
use crate::split::Item;

/// What parsing needs besides the answer.
pub struct ParseRules<'a> {
    pub stop_ids: &'a [i64],
    pub pad_ids: &'a [i64],
    /// The version to assume when the server reports none (a plain vLLM server).
    pub default_version: u64,
}

/// The images of an item as PNG data URIs (fast compression: this is a transport).
pub fn data_uris(item: &Item) -> Result<Vec<String>, BackendError> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    item.pixels
        .iter()
        .map(|p| {
            let mut buf = Vec::new();
            PngEncoder::new_with_quality(&mut buf, CompressionType::Fast, FilterType::Sub)
                .write_image(&p.rgb, p.width, p.height, image::ExtendedColorType::Rgb8)
                .map_err(|e| {
                    BackendError::Engine(coordexp_core::Error::runtime(format!(
                        "cannot encode the image of record line {} as PNG: {e}",
                        item.line
                    )))
                })?;
            Ok(format!("data:image/png;base64,{}", STANDARD.encode(&buf)))
        })
        .collect()
}

/// The learner's conversation in the OpenAI message format: system text, then the user turn
/// with the images first and the instruction after (the learner's order).
pub fn messages(system: &str, user: &str, images: &[String]) -> Value {
    let mut content: Vec<Value> =
        images.iter().map(|u| json!({"type": "image_url", "image_url": {"url": u}})).collect();
    content.push(json!({"type": "text", "text": user}));
    json!([
        {"role": "system", "content": [{"type": "text", "text": system}]},
        {"role": "user", "content": content},
    ])
}

/// The sampling fields every request sends (all of them: unset fields would take the
/// server's defaults). Seeds go as int64 (two's complement), what vLLM accepts.
fn sampling_fields(r: &RolloutRequest<'_>, seed: u64) -> serde_json::Map<String, Value> {
    let d = &r.decoding;
    let mut m = serde_json::Map::new();
    m.insert("n".into(), json!(r.n));
    m.insert("max_tokens".into(), json!(r.max_new_tokens));
    m.insert("temperature".into(), json!(d.temperature));
    m.insert("top_p".into(), json!(d.top_p));
    m.insert("top_k".into(), json!(d.top_k));
    m.insert("repetition_penalty".into(), json!(d.repetition_penalty));
    m.insert("seed".into(), json!(seed as i64));
    m.insert("logprobs".into(), json!(true));
    m
}

/// `POST /v1/chat/completions` for one request.
pub fn openai_body(r: &RolloutRequest<'_>, messages: Value) -> Value {
    let mut m = sampling_fields(r, r.seed);
    m.insert("messages".into(), messages);
    m.insert("return_token_ids".into(), json!(true));
    m.insert("skip_special_tokens".into(), json!(false));
    m.insert("stream".into(), json!(false));
    Value::Object(m)
}

/// `POST /infer/` for consecutive requests (equal settings, seeds `first.seed + i·n`).
pub fn swift_body(requests: &[&RolloutRequest<'_>], messages: Vec<Value>) -> Value {
    let infer: Vec<Value> = messages.into_iter().map(|m| json!({"messages": m})).collect();
    let mut config = sampling_fields(requests[0], requests[0].seed);
    config.insert("return_details".into(), json!(true));
    json!({"infer_requests": infer, "request_config": Value::Object(config)})
}

/// Parse one chat completion (an OpenAI answer or one item of swift's list) for a request of
/// `n` samples; `header_version`: the `x-coordexp-weight-version` header of the answer.
pub fn parse_completion(
    v: &Value,
    n: usize,
    header_version: Option<u64>,
    rules: &ParseRules<'_>,
) -> RequestResult {
    let protocol = |m: String| Err(BackendError::Protocol(m));
    let v = v.get("response").filter(|r| r.is_object()).unwrap_or(v);
    if v.get("object").and_then(Value::as_str) == Some("error") || v.get("error").is_some() {
        let msg = v.get("message").or_else(|| v.get("error")).map(|m| m.to_string());
        return protocol(format!("the server answered an error: {}", msg.unwrap_or_default()));
    }
    let Some(choices) = v.get("choices").and_then(Value::as_array) else {
        return protocol("the answer has no `choices` list".into());
    };
    if choices.len() != n {
        return protocol(format!(
            "asked for {n} sample(s), the answer has {} choice(s)",
            choices.len()
        ));
    }
    let prompt = v
        .get("prompt_token_ids")
        .or_else(|| choices.first().and_then(|c| c.get("prompt_token_ids")))
        .and_then(ids);
    let Some(mut prompt) = prompt.filter(|p| !p.is_empty()) else {
        return protocol(
            "the answer has no `prompt_token_ids`; the server must support return_token_ids (vLLM ≥ 0.10.2, coordexp serve) or return_details (swift)".into(),
        );
    };
    let pad = prompt.iter().take_while(|t| rules.pad_ids.contains(t)).count();
    prompt.drain(..pad);
    let version = v
        .get("weight_version")
        .and_then(Value::as_u64)
        .or(header_version)
        .unwrap_or(rules.default_version);
    let mut ordered: Vec<&Value> = choices.iter().collect();
    ordered.sort_by_key(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0));
    let mut out = Vec::with_capacity(n);
    for (j, c) in ordered.into_iter().enumerate() {
        let Some(mut tokens) = c.get("token_ids").and_then(ids) else {
            return protocol(format!("choice {j} has no `token_ids` list of token ids"));
        };
        let mut logprobs: Vec<f32> = c
            .get("logprobs")
            .and_then(|l| l.get("content"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|e| e.get("logprob").and_then(Value::as_f64).unwrap_or(f64::NAN) as f32)
                    .collect()
            })
            .unwrap_or_default();
        logprobs.truncate(tokens.len());
        let finish = c.get("finish_reason").and_then(Value::as_str).unwrap_or("");
        let ends_on_stop = tokens.last().is_some_and(|t| rules.stop_ids.contains(t));
        let stop = if ends_on_stop {
            StopReason::StopToken
        } else if finish == "stop" {
            let reason = c.get("stop_reason").and_then(Value::as_i64);
            if let Some(id) = reason.filter(|id| rules.stop_ids.contains(id)) {
                tokens.push(id);
            }
            StopReason::StopToken
        } else {
            StopReason::MaxNewTokens
        };
        out.push(Rollout {
            tokens,
            logprobs,
            stop,
            prompt_ids: prompt.clone(),
            weight_version: version,
        });
    }
    Ok(out)
}

/// A list of token ids, or `None` when it is not one.
fn ids(v: &Value) -> Option<Vec<i64>> {
    v.as_array()?.iter().map(Value::as_i64).collect()
}

/// Parse swift's list answer for `ns.len()` requests (request `i` asked `ns[i]` samples).
/// The whole call fails (and is bisected by the caller) when the list has the wrong length.
pub fn parse_swift(
    v: &Value,
    ns: &[usize],
    header_version: Option<u64>,
    rules: &ParseRules<'_>,
) -> Result<Vec<RequestResult>, BackendError> {
    let Some(items) = v.as_array() else {
        return Err(BackendError::Protocol("the /infer/ answer is not a JSON list".into()));
    };
    if items.len() != ns.len() {
        return Err(BackendError::Protocol(format!(
            "sent {} request(s), the /infer/ answer has {} item(s); not matching them by position",
            ns.len(),
            items.len()
        )));
    }
    Ok(items
        .iter()
        .zip(ns)
        .map(|(it, &n)| parse_completion(it, n, header_version, rules))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: ParseRules<'static> =
        ParseRules { stop_ids: &[9, 10], pad_ids: &[0], default_version: 5 };

    fn answer(prompt: Value, choices: Value) -> Value {
        json!({"object": "chat.completion", "prompt_token_ids": prompt, "choices": choices})
    }

    #[test]
    fn ids_are_authoritative_pads_go_and_a_dropped_stop_id_comes_back() {
        let v = answer(
            json!([0, 0, 4, 5]),
            json!([
                {"index": 1, "token_ids": [7, 8], "finish_reason": "stop", "stop_reason": 9,
                 "logprobs": {"content": [{"logprob": -0.5}, {"logprob": -0.25}, {"logprob": -1.0}]}},
                {"index": 0, "token_ids": [6, 9], "finish_reason": "stop"},
            ]),
        );
        let r = parse_completion(&v, 2, Some(3), &RULES).unwrap();
        assert_eq!(r[0].tokens, vec![6, 9]);
        assert_eq!(r[0].stop, StopReason::StopToken);
        assert!(r[0].logprobs.is_empty());
        assert_eq!(r[1].tokens, vec![7, 8, 9], "the stop id named by stop_reason is restored");
        assert_eq!(r[1].logprobs, vec![-0.5, -0.25], "an overlong trace is cut to the ids");
        assert_eq!(r[1].prompt_ids, vec![4, 5], "left padding stripped");
        assert_eq!(r[1].weight_version, 3, "the header version when the body has none");
        let v = answer(json!([4]), json!([{"token_ids": [1, 2], "finish_reason": "length"}]));
        let r = parse_completion(&json!({"response": v}), 1, None, &RULES).unwrap();
        assert_eq!(r[0].stop, StopReason::MaxNewTokens);
        assert_eq!(r[0].weight_version, 5, "unreported: the default");
    }

    #[test]
    fn wrong_counts_missing_ids_and_errors_are_protocol_errors() {
        let one = json!([{"token_ids": [1], "finish_reason": "length"}]);
        for (v, n, needle) in [
            (answer(json!([4]), one.clone()), 2, "asked for 2 sample(s)"),
            (answer(json!([]), one.clone()), 1, "prompt_token_ids"),
            (answer(json!([4]), json!([{"finish_reason": "stop"}])), 1, "token_ids"),
            (answer(json!([4]), json!([{"token_ids": [1.5]}])), 1, "token_ids"),
            (json!({"object": "error", "message": "boom"}), 1, "boom"),
            (json!({"id": 1}), 1, "no `choices`"),
        ] {
            match parse_completion(&v, n, None, &RULES) {
                Err(BackendError::Protocol(m)) => assert!(m.contains(needle), "{m}"),
                other => panic!("{v}: {other:?}"),
            }
        }
        let items = json!([{"response": answer(json!([4]), one.clone())}]);
        assert!(parse_swift(&items, &[1], None, &RULES).unwrap()[0].is_ok());
        match parse_swift(&items, &[1, 1], None, &RULES) {
            Err(BackendError::Protocol(m)) => assert!(m.contains("sent 2 request(s)"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(parse_swift(&json!({"a": 1}), &[1], None, &RULES).is_err());
    }
}

/// Whatever a server answers, parsing gives results or protocol errors, never a panic.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("choices".to_string()),
            Just("prompt_token_ids".to_string()),
            Just("token_ids".to_string()),
            Just("response".to_string()),
            Just("logprobs".to_string()),
            Just("content".to_string()),
            Just("logprob".to_string()),
            Just("finish_reason".to_string()),
            Just("stop_reason".to_string()),
            Just("index".to_string()),
            Just("weight_version".to_string()),
            Just("object".to_string()),
            "[a-z_]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-3i64..12).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            prop_oneof![Just("stop".to_string()), Just("error".to_string()), ".{0,6}"]
                .prop_map(Value::from),
        ];
        coordexp_testkit::json_tree(key, leaf, 5, 64)
    }

    proptest! {
        #[test]
        fn answer_parsers_never_panic(v in json_value(), n in 0usize..4, version in proptest::option::of(any::<u64>())) {
            let rules = ParseRules { stop_ids: &[9], pad_ids: &[0], default_version: 1 };
            if let Ok(rs) = parse_completion(&v, n, version, &rules) {
                prop_assert_eq!(rs.len(), n);
                for r in rs {
                    prop_assert!(r.logprobs.len() <= r.tokens.len() + 1);
                    prop_assert!(r.prompt_ids.first().is_none_or(|t| *t != 0));
                }
            }
            if let Ok(items) = parse_swift(&v, &[1, n], version, &rules) {
                prop_assert_eq!(items.len(), 2);
            }
        }
    }
}
