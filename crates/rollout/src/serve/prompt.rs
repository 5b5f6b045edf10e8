//! From a request's messages to the prompt the engine generates from: the conversation in the
//! model's chat format, the images decoded, and the learner's encoding of both.
//!
//! Why the learner's [`Encoder`]: stage 2 compares the prompt ids a server used with its own
//! encoding of the record and drops the sample on any difference, so the server must render
//! the model's own template, tokenize the same way and expand each image to the same number of
//! image pads. Images are never resized (the learner's `do_resize: false`): a size that is not
//! a multiple of the patch factor, or above the pixel budget, is a 400 that names the size and
//! the limit; the client must resize offline, exactly as for training.
//!
//! Images arrive as `data:image/...;base64,` URIs, `file://` URLs, plain paths (on the
//! server's filesystem, under `--image-root` when one is set) or bare base64 (ms-swift). Remote
//! `http(s)` URLs are refused: a rollout server does not fetch from the network.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coordexp_core::geometry::ImageSize;
use coordexp_text::{Content, Encoder, Message, Role};
use serde_json::Value;
use std::io::Cursor;
use std::path::{Component, Path, PathBuf};

use super::http::ApiError;
use crate::split::Pixels;

/// A parsed conversation: messages with image placeholders, and each image's source in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub messages: Vec<Message>,
    pub images: Vec<String>,
}

/// The encoded prompt of one conversation.
pub struct Encoded {
    pub ids: Vec<i64>,
    /// Four rows of `ids.len()` positions, row-major.
    pub positions: Vec<i64>,
    pub pixels: Vec<Pixels>,
}

/// Parse OpenAI / ms-swift `messages`. `swift_images`: a request's top-level `images` (swift's
/// other image form, with `<image>` tags in the text).
pub fn parse_messages(v: &Value, swift_images: Option<&Value>) -> Result<Conversation, ApiError> {
    let list = v.as_array().ok_or_else(|| {
        ApiError::bad_request("`messages` must be a list of {role, content} objects")
    })?;
    if list.is_empty() {
        return Err(ApiError::bad_request("`messages` is empty; send at least one user message"));
    }
    let mut top: Vec<String> = match swift_images {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, x)| image_source(x).ok_or_else(|| bad_image_field(&format!("images[{i}]"))))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad_request("`images` must be a list of strings")),
    };
    let has_top = !top.is_empty();
    top.reverse(); // popped in order
    let mut images = Vec::new();
    let mut parts_with_images = false;
    let mut messages = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system") | Some("developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "{at}.role `{other}` is not supported; use system, user or assistant"
                )));
            }
            None => return Err(ApiError::bad_request(format!("{at} has no string `role`"))),
        };
        let mut content = Vec::new();
        match m.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if has_top => {
                split_image_tags(s, &mut content, &mut top, &mut images, &at)?
            }
            Some(Value::String(s)) => content.push(Content::Text { text: s.clone() }),
            Some(Value::Array(parts)) => {
                for (k, p) in parts.iter().enumerate() {
                    let pat = format!("{at}.content[{k}]");
                    let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
                    match ty {
                        "text" => {
                            let text = p.get("text").and_then(Value::as_str).ok_or_else(|| {
                                ApiError::bad_request(format!("{pat} has no string `text`"))
                            })?;
                            if has_top {
                                split_image_tags(text, &mut content, &mut top, &mut images, &pat)?;
                            } else {
                                content.push(Content::Text { text: text.to_owned() });
                            }
                        }
                        "image_url" | "image" => {
                            let src = p
                                .get("image_url")
                                .map(|u| u.get("url").unwrap_or(u))
                                .or_else(|| p.get("image"))
                                .and_then(image_source)
                                .ok_or_else(|| bad_image_field(&pat))?;
                            parts_with_images = true;
                            images.push(src);
                            content.push(Content::Image);
                        }
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "{pat}.type `{other}` is not supported; use text, image_url or image"
                            )));
                        }
                    }
                }
            }
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "{at}.content must be a string or a list of parts"
                )));
            }
        }
        messages.push(Message { role, content });
    }
    if has_top && parts_with_images {
        return Err(ApiError::bad_request(
            "images are given both as content parts and in `images`; use one form",
        ));
    }
    if !top.is_empty() {
        // Images without <image> tags go first in the first user turn (image, then text).
        let first_user = messages.iter_mut().find(|m| m.role == Role::User).ok_or_else(|| {
            ApiError::bad_request("`images` are given but there is no user message to hold them")
        })?;
        let mut rest: Vec<String> = top.into_iter().rev().collect();
        let n = rest.len();
        let mut content: Vec<Content> = (0..n).map(|_| Content::Image).collect();
        content.append(&mut first_user.content);
        first_user.content = content;
        rest.append(&mut images);
        images = rest;
    }
    if messages.last().is_some_and(|m| m.role == Role::Assistant) {
        return Err(ApiError::bad_request(
            "the conversation ends with an assistant turn; end it with the user turn to answer",
        ));
    }
    Ok(Conversation { messages, images })
}

fn bad_image_field(at: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{at} has no image: give {{\"type\": \"image_url\", \"image_url\": {{\"url\": \"data:image/png;base64,...\"}}}} or a file path"
    ))
}

fn image_source(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => {
            o.get("url").or_else(|| o.get("path")).and_then(Value::as_str).map(String::from)
        }
        _ => None,
    }
}

/// Text with swift's `<image>` tags: each tag becomes the next top-level image.
fn split_image_tags(
    text: &str,
    content: &mut Vec<Content>,
    top: &mut Vec<String>,
    images: &mut Vec<String>,
    at: &str,
) -> Result<(), ApiError> {
    let mut pieces = text.split("<image>");
    if let Some(first) = pieces.next().filter(|p| !p.is_empty()) {
        content.push(Content::Text { text: first.to_owned() });
    }
    for piece in pieces {
        let src = top.pop().ok_or_else(|| {
            ApiError::bad_request(format!("{at} has more <image> tags than `images` has entries"))
        })?;
        images.push(src);
        content.push(Content::Image);
        if !piece.is_empty() {
            content.push(Content::Text { text: piece.to_owned() });
        }
    }
    Ok(())
}

/// Where images may be read from.
pub struct ImagePolicy<'a> {
    /// Paths must lie under this directory (relative ones are joined to it).
    pub root: Option<&'a Path>,
    /// Largest encoded image accepted, in bytes.
    pub max_bytes: usize,
}

/// Decode every image (checking its size against the encoder's grid rules before decoding)
/// and encode the conversation.
pub fn encode(
    encoder: &Encoder,
    conv: &Conversation,
    policy: &ImagePolicy<'_>,
) -> Result<Encoded, ApiError> {
    let mut pixels = Vec::with_capacity(conv.images.len());
    for (k, src) in conv.images.iter().enumerate() {
        let bytes = image_bytes(src, policy).map_err(|e| prefix(k, e))?;
        pixels.push(decode_image(encoder, &bytes).map_err(|e| prefix(k, e))?);
    }
    let sizes: Vec<ImageSize> = pixels
        .iter()
        .map(|p| {
            ImageSize::new(p.width, p.height)
                .ok_or_else(|| ApiError::bad_request("an image has a zero side"))
        })
        .collect::<Result<_, _>>()?;
    let sample = encoder.encode_conversation(&conv.messages, &sizes).map_err(|e| {
        let hint = e.hint_text().map(|h| format!(" ({h})")).unwrap_or_default();
        ApiError::bad_request(format!("cannot encode the conversation: {}{hint}", e.what()))
    })?;
    let ids = sample.input_ids.iter().map(|&i| i64::from(i)).collect();
    let positions = sample.position_ids.rows.iter().flatten().copied().collect();
    Ok(Encoded { ids, positions, pixels })
}

fn prefix(k: usize, mut e: ApiError) -> ApiError {
    e.message = format!("image {}: {}", k + 1, e.message);
    e
}

fn image_bytes(src: &str, policy: &ImagePolicy<'_>) -> Result<Vec<u8>, ApiError> {
    let too_big = |n: usize| {
        ApiError::new(
            413,
            "request_too_large",
            format!("the image has {n} bytes, above the limit of {}", policy.max_bytes),
        )
    };
    if let Some(rest) = src.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').ok_or_else(|| {
            ApiError::bad_request("a data URI needs a comma: data:image/png;base64,<data>")
        })?;
        if !meta.ends_with(";base64") {
            return Err(ApiError::bad_request(
                "only base64 data URIs are supported (data:image/png;base64,...)",
            ));
        }
        let bytes = STANDARD
            .decode(data.trim())
            .map_err(|e| ApiError::bad_request(format!("the data URI is not valid base64: {e}")))?;
        return if bytes.len() > policy.max_bytes { Err(too_big(bytes.len())) } else { Ok(bytes) };
    }
    if src.starts_with("http://") || src.starts_with("https://") {
        return Err(ApiError::bad_request(
            "remote image URLs are not fetched; send the image as a data URI or a path on the server",
        ));
    }
    let looks_like_path = src.starts_with("file://")
        || src.starts_with('/')
        || src.starts_with('.')
        || Path::new(src).extension().is_some() && src.len() < 4096;
    if !looks_like_path {
        // ms-swift also takes bare base64.
        if let Ok(bytes) = STANDARD.decode(src.trim()) {
            return if bytes.len() > policy.max_bytes {
                Err(too_big(bytes.len()))
            } else {
                Ok(bytes)
            };
        }
    }
    let path = resolve_path(src.strip_prefix("file://").unwrap_or(src), policy.root)?;
    let meta = std::fs::metadata(&path)
        .map_err(|e| ApiError::bad_request(format!("cannot read image {}: {e}", path.display())))?;
    if meta.len() > policy.max_bytes as u64 {
        return Err(too_big(meta.len() as usize));
    }
    std::fs::read(&path)
        .map_err(|e| ApiError::bad_request(format!("cannot read image {}: {e}", path.display())))
}

fn resolve_path(p: &str, root: Option<&Path>) -> Result<PathBuf, ApiError> {
    let path = Path::new(p);
    let Some(root) = root else {
        return Ok(path.to_path_buf());
    };
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(ApiError::bad_request(format!("image path {p} may not contain `..`")));
    }
    let full = if path.is_absolute() { path.to_path_buf() } else { root.join(path) };
    if !full.starts_with(root) {
        return Err(ApiError::bad_request(format!(
            "image path {p} is outside the server's image root {}",
            root.display()
        )));
    }
    Ok(full)
}

/// Check the size against the grid rules from the header, then decode to RGB.
fn decode_image(encoder: &Encoder, bytes: &[u8]) -> Result<Pixels, ApiError> {
    let reader = || {
        image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ApiError::bad_request(format!("cannot read the image: {e}")))
    };
    let (w, h) = reader()?.into_dimensions().map_err(|e| {
        ApiError::bad_request(format!("cannot decode the image (PNG and JPEG are supported): {e}"))
    })?;
    let size = ImageSize::new(w, h)
        .ok_or_else(|| ApiError::bad_request(format!("the image is {w}x{h}: a side is zero")))?;
    encoder.grid(size).map_err(|e| {
        let hint = e.hint_text().map(|h| format!("; {h}")).unwrap_or_default();
        ApiError::bad_request(format!("{}{hint}", e.what()))
    })?;
    let img = reader()?.decode().map_err(|e| {
        ApiError::bad_request(format!("cannot decode the image (PNG and JPEG are supported): {e}"))
    })?;
    let rgb = img.to_rgb8();
    let (width, height) = rgb.dimensions();
    Ok(Pixels { width, height, rgb: rgb.into_raw() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_parts_become_placeholders_in_order() {
        let m = json!([
            {"role": "system", "content": "S"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image", "image": "/x.png"},
                {"type": "text", "text": "U"}
            ]}
        ]);
        let c = parse_messages(&m, None).unwrap();
        assert_eq!(c.images, vec!["data:image/png;base64,AAAA", "/x.png"]);
        assert_eq!(c.messages[0].content, vec![Content::Text { text: "S".into() }]);
        assert_eq!(
            c.messages[1].content,
            vec![Content::Image, Content::Image, Content::Text { text: "U".into() }]
        );
    }

    #[test]
    fn swift_image_tags_take_the_top_level_images() {
        let m = json!([{"role": "user", "content": "<image>Find <image>all"}]);
        let c = parse_messages(&m, Some(&json!(["a.png", "b.png"]))).unwrap();
        assert_eq!(c.images, vec!["a.png", "b.png"]);
        assert_eq!(
            c.messages[0].content,
            vec![
                Content::Image,
                Content::Text { text: "Find ".into() },
                Content::Image,
                Content::Text { text: "all".into() }
            ]
        );
        // Without tags the images lead the first user turn.
        let m = json!([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]);
        let c = parse_messages(&m, Some(&json!(["a.png"]))).unwrap();
        assert_eq!(c.messages[1].content, vec![Content::Image, Content::Text { text: "U".into() }]);
    }

    #[test]
    fn bad_messages_are_400s_that_say_what_to_send() {
        for (m, needle) in [
            (json!("hi"), "must be a list"),
            (json!([]), "is empty"),
            (json!([{"content": "x"}]), "no string `role`"),
            (json!([{"role": "tool", "content": "x"}]), "`tool` is not supported"),
            (json!([{"role": "user", "content": 3}]), "string or a list"),
            (json!([{"role": "user", "content": [{"type": "audio"}]}]), "`audio` is not supported"),
            (json!([{"role": "user", "content": [{"type": "image_url"}]}]), "has no image"),
            (
                json!([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]),
                "ends with an assistant",
            ),
        ] {
            let e = parse_messages(&m, None).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(needle), "{m}: {}", e.message);
        }
        let e = parse_messages(
            &json!([{"role": "user", "content": "<image><image>"}]),
            Some(&json!(["a"])),
        )
        .unwrap_err();
        assert!(e.message.contains("more <image> tags"), "{}", e.message);
    }

    #[test]
    fn image_sources_are_checked_before_reading() {
        let policy = ImagePolicy { root: Some(Path::new("/data")), max_bytes: 10 };
        let e = image_bytes("https://x/y.png", &policy).unwrap_err();
        assert!(e.message.contains("not fetched"));
        let e = image_bytes("/data/../etc/passwd.png", &policy).unwrap_err();
        assert!(e.message.contains("`..`"));
        let e = image_bytes("/etc/x.png", &policy).unwrap_err();
        assert!(e.message.contains("outside the server's image root"));
        let e = image_bytes("data:image/png,abc", &policy).unwrap_err();
        assert!(e.message.contains("base64"));
        let e = image_bytes("data:image/png;base64,!!!", &policy).unwrap_err();
        assert!(e.message.contains("not valid base64"));
        let e = image_bytes("data:image/png;base64,QUFBQUFBQUFBQUFBQUFB", &policy).unwrap_err();
        assert_eq!(e.status, 413);
    }
}
