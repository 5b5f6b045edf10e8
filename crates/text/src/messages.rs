//! Conversations in the HF chat format, the structured input of the chat template.
//!
//! One sample is a system turn, a user turn holding the image(s) *then* the instruction (the
//! same order for training and inference — the reference put the text first at inference), and,
//! for training, an assistant turn holding the CoordJSON answer. The serialized form is exactly
//! what transformers' `apply_chat_template` takes, so `coordexp inspect --json` output can be
//! re-rendered by anyone with transformers and compared.

use serde::Serialize;

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One item of a turn's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Content {
    /// An image placeholder; the template writes one image-pad token for it.
    Image,
    /// Plain text.
    Text { text: String },
}

/// One turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Content>,
}

impl Message {
    fn text(role: Role, text: &str) -> Message {
        Message { role, content: vec![Content::Text { text: text.to_owned() }] }
    }
}

/// The conversation for one sample: system, user (`images` placeholders, then `user`), and the
/// assistant's `answer` when given.
pub fn conversation(system: &str, user: &str, images: usize, answer: Option<&str>) -> Vec<Message> {
    let mut content: Vec<Content> = (0..images).map(|_| Content::Image).collect();
    content.push(Content::Text { text: user.to_owned() });
    let mut messages =
        vec![Message::text(Role::System, system), Message { role: Role::User, content }];
    if let Some(answer) = answer {
        messages.push(Message::text(Role::Assistant, answer));
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_in_the_hf_chat_format() {
        let m = conversation("S", "U", 1, Some("A"));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"[{"role":"system","content":[{"type":"text","text":"S"}]},{"role":"user","content":[{"type":"image"},{"type":"text","text":"U"}]},{"role":"assistant","content":[{"type":"text","text":"A"}]}]"#
        );
    }
}
