//! The HTTP plumbing of `coordexp serve`: replies, errors in the OpenAI shape, bounded body
//! reads, route normalisation, the one log line per request.
//!
//! Errors are `{"error": {"message", "type", "param", "code"}}` with the HTTP status as
//! `code` (vLLM's and OpenAI's shape, which the `openai` client turns into typed exceptions):
//! 4xx for what the client sent, 5xx only for faults of the server.

use serde_json::{Value, json};
use std::io::Read;
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

/// Write `reply` (errors writing to a client that went away are ignored).
pub fn respond(req: tiny_http::Request, reply: Reply, close: bool) {
    // Always Content-Length (bodies are complete when written), never chunked.
    let mut resp = tiny_http::Response::from_data(reply.body)
        .with_status_code(reply.status)
        .with_chunked_threshold(usize::MAX);
    let mut add = |k: &str, v: &str| {
        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            resp.add_header(h);
        }
    };
    add("Content-Type", reply.content_type);
    add(super::VERSION_HEADER, &reply.version.to_string());
    for (k, v) in &reply.headers {
        add(k, v);
    }
    if close {
        add("Connection", "close");
    }
    let _ = req.respond(resp);
}

#[cfg(test)]
mod tests {
    use super::*;

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
