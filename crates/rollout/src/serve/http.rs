//! The HTTP plumbing of `coordexp serve`: replies, errors in the OpenAI shape, bounded body
//! reads, route normalisation, the one log line per request.
//!
//! Errors are `{"error": {"message", "type", "param", "code"}}` with the HTTP status as
//! `code` (vLLM's and OpenAI's shape, which the `openai` client turns into typed exceptions):
//! 4xx for what the client sent, 5xx only for faults of the server.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

/// One answer, ready to write.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// Extra headers (e.g. `Retry-After`).
    pub headers: Vec<(&'static str, String)>,
    /// The weight version reported in `x-coordexp-weight-version`.
    pub version: u64,
    /// Prompt and completion tokens, for the log line.
    pub tokens: (usize, usize),
}

impl Reply {
    pub fn json(status: u16, value: &Value, version: u64) -> Reply {
        Reply {
            status,
            body: value.to_string().into_bytes(),
            content_type: "application/json",
            headers: Vec::new(),
            version,
            tokens: (0, 0),
        }
    }

    pub fn raw(status: u16, body: Vec<u8>, content_type: &'static str, version: u64) -> Reply {
        Reply { status, body, content_type, headers: Vec::new(), version, tokens: (0, 0) }
    }

    pub fn with_tokens(mut self, prompt: usize, completion: usize) -> Reply {
        self.tokens = (prompt, completion);
        self
    }
}

/// A request that cannot be answered normally: its status, an OpenAI error type and a message
/// that says what was wrong and how to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, message: message.into(), retry_after: None }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_request_error", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "not_found_error", message)
    }
    pub fn server(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "server_error", message)
    }

    pub fn reply(&self, version: u64) -> Reply {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": null,
            "code": self.status,
        }});
        let mut r = Reply::json(self.status, &body, version);
        if let Some(d) = self.retry_after {
            r.headers.push(("Retry-After", d.as_secs().max(1).to_string()));
        }
        r
    }
}

/// The path of a URL without its query and without a trailing slash (`/` stays `/`), so every
/// route answers with and without one (swift's clients add it, OpenAI's do not).
pub fn route(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

/// Read at most `max` bytes of body; more is a 413 that names the limit.
pub fn read_body(req: &mut tiny_http::Request, max: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = |n: String| {
        ApiError::new(
            413,
            "request_too_large",
            format!(
                "the request body is {n} bytes, above the server's limit of {max}; send fewer or smaller images per request (or start the server with a larger --max-body-mb)"
            ),
        )
    };
    if let Some(n) = req.body_length()
        && n > max
    {
        return Err(too_large(n.to_string()));
    }
    let mut buf = Vec::new();
    req.as_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    if buf.len() > max {
        return Err(too_large(format!("more than {max}")));
    }
    Ok(buf)
}

/// Parse a JSON body (any content type: curl's default form type included).
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty; send a JSON object"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// Write `reply` (errors writing to a client that went away are ignored), then close the
/// connection.
///
/// Why close, and why by hand: tiny_http serves each connection on a pool thread for the
/// connection's whole life, and a burst of new connections can leave one queued behind threads
/// that a lost wake-up counted as idle. With clients that keep connections alive (the `openai`
/// client does) no thread ever frees up and that connection waits forever — measured on fresh
/// servers under 8 and 32 concurrent clients: its request sat unread in the socket (Recv-Q
/// 2,889 bytes) while every other request was answered, until the client timed out. A
/// response that says `Connection: close` ends each connection after one answer, so a queued
/// one waits for at most one request. tiny_http drops a `Connection` header from its own
/// responses, so the response is written to the raw stream.
pub fn respond(req: tiny_http::Request, reply: Reply) {
    let mut w = req.into_writer();
    let _ = w.write_all(&response_bytes(&reply)).and_then(|_| w.flush());
}

/// The whole HTTP/1.1 response: status line, headers (always `Content-Length` and
/// `Connection: close`; a header with a line break is left out), body.
fn response_bytes(reply: &Reply) -> Vec<u8> {
    let reason = tiny_http::StatusCode(reply.status).default_reason_phrase();
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    let version = reply.version.to_string();
    let fixed = [
        ("Content-Type", reply.content_type),
        (super::VERSION_HEADER, version.as_str()),
        ("Connection", "close"),
    ];
    let extra = reply.headers.iter().map(|(k, v)| (*k, v.as_str()));
    for (k, v) in fixed.into_iter().chain(extra) {
        if !(k.contains(['\r', '\n']) || v.contains(['\r', '\n'])) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
    let mut out = head.into_bytes();
    out.extend_from_slice(&reply.body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_carries_its_length_version_and_close_and_drops_broken_headers() {
        let r = Reply {
            status: 503,
            body: b"{}".to_vec(),
            content_type: "application/json",
            headers: vec![("Retry-After", "2".into()), ("X-Bad", "a\r\nInjected: 1".into())],
            version: 7,
            tokens: (0, 0),
        };
        let text = String::from_utf8(response_bytes(&r)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("HTTP/1.1 503 Service Unavailable"));
        let headers: Vec<&str> = lines.collect();
        for h in ["Content-Type: application/json", "Connection: close", "Retry-After: 2"] {
            assert!(headers.contains(&h), "{headers:?}");
        }
        assert!(headers.contains(&"Content-Length: 2"));
        assert!(headers.iter().any(|h| h.ends_with(": 7")), "the weight version: {headers:?}");
        assert!(!text.contains("Injected"), "a header with a line break is left out");
        assert_eq!(body, "{}");
    }

    #[test]
    fn routes_ignore_trailing_slashes_and_queries() {
        assert_eq!(route("/infer/"), "/infer");
        assert_eq!(route("/infer"), "/infer");
        assert_eq!(route("/health/?x=1"), "/health");
        assert_eq!(route("/"), "/");
        assert_eq!(route(""), "/");
        assert_eq!(route("/v1/chat/completions//"), "/v1/chat/completions");
    }

    #[test]
    fn errors_have_the_openai_shape_and_retry_after() {
        let mut e = ApiError::new(503, "overloaded_error", "busy");
        e.retry_after = Some(Duration::from_secs(2));
        let r = e.reply(3);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["message"], "busy");
        assert_eq!(v["error"]["code"], 503);
        assert_eq!(v["error"]["type"], "overloaded_error");
        assert_eq!(r.headers, vec![("Retry-After", "2".to_string())]);
        assert_eq!(r.version, 3);
    }

    #[test]
    fn json_bodies_are_checked() {
        assert_eq!(parse_json(b"  ").unwrap_err().status, 400);
        assert!(parse_json(b"{\"a\": ").unwrap_err().message.contains("not valid JSON"));
        assert_eq!(parse_json(b"{\"a\": 1}").unwrap()["a"], 1);
    }
}
