//! The model's chat template, rendered with transformers' Jinja semantics.
//!
//! transformers renders chat templates with `trim_blocks` and `lstrip_blocks` on, without
//! keeping a trailing newline, with a `tojson` filter that is plain `json.dumps(...,
//! ensure_ascii=False)` (no HTML escaping), a `raise_exception` global, and Python string methods
//! on values. We reproduce exactly that on minijinja so that the text we tokenize is the text HF
//! would tokenize — the parity tests compare the two live.

use crate::messages::Message;
use coordexp_core::{Error, Result};
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use std::fmt::Write as _;
use std::sync::Arc;

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template (cheap to clone).
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    source: Arc<str>,
}

impl ChatTemplate {
    /// Compile `source` with HF semantics. A syntax error is an input error.
    pub fn new(source: String) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| Error::runtime(format!("template syntax config: {e}")))?;
        env.set_syntax(syntax);
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Python prints booleans and None capitalized; minijinja would print `true` / `none`.
        env.set_formatter(|out, state, value| {
            let python = match value.kind() {
                ValueKind::Bool => Some(if value.is_true() { "True" } else { "False" }),
                ValueKind::None => Some("None"),
                _ => None,
            };
            match python {
                Some(text) => out.write_str(text).map_err(|_| {
                    minijinja::Error::new(ErrorKind::WriteFailure, "cannot write template output")
                }),
                None => minijinja::escape_formatter(out, state, value),
            }
        });
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        let source: Arc<str> = Arc::from(source);
        env.add_template_owned(TEMPLATE_NAME, source.to_string()).map_err(|e| {
            Error::input(format!("the chat template does not compile: {e:#}"))
                .hint("the template must be valid Jinja (as transformers renders it)")
        })?;
        Ok(ChatTemplate { env: Arc::new(env), source })
    }

    /// The template text (its fingerprint goes into run manifests).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Render `messages`; with `add_generation_prompt` the text ends where the assistant's answer
    /// would start.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::runtime(format!("chat template missing: {e}")))?;
        let ctx = minijinja::context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
        };
        tpl.render(ctx).map_err(|e| {
            Error::input(format!("the chat template failed to render: {e:#}"))
                .hint("the model's chat template rejected these messages; check the template and the prompt text")
        })
    }
}

/// `raise_exception(message)`: the template's way to reject a conversation.
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `value | tojson(indent=None, sort_keys=False)` exactly as transformers: `json.dumps` with
/// `ensure_ascii=False`, separators `", "`/`": "` (or `","`/`": "` with an indent), insertion
/// key order unless `sort_keys`.
fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, value, indent, sort_keys.unwrap_or(false), 0)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(
    out: &mut String,
    v: &Value,
    indent: Option<usize>,
    sort_keys: bool,
    depth: usize,
) -> std::result::Result<(), minijinja::Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(v.clone()) {
                let _ = write!(out, "{i}");
            } else {
                let f = f64::try_from(v.clone())?;
                out.push_str(&python_float_repr(f));
            }
        }
        ValueKind::String => write_json_string(out, v.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(out, item, indent, sort_keys, depth + 1)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                match key.as_str() {
                    Some(s) => write_json_string(out, s),
                    None => write_json_string(out, &key.to_string()),
                }
                out.push_str(": ");
                write_json(out, &v.get_item(key)?, indent, sort_keys, depth + 1)?;
            }
            newline(out, depth);
            out.push('}');
        }
        _ => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialize a value of kind {}", v.kind()),
            ));
        }
    }
    Ok(())
}

/// Python `json.dumps` string escaping with `ensure_ascii=False`.
fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, scientific below 1e-4 and from 1e16.
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        let sci = format!("{f:e}");
        let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let plain = format!("{f}");
    if plain.contains('.') { plain } else { format!("{plain}.0") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, ctx: Value) -> String {
        let t = ChatTemplate::new(src.to_owned()).unwrap();
        let tpl = t.env.get_template(TEMPLATE_NAME).unwrap();
        tpl.render(ctx).unwrap()
    }

    #[test]
    fn blocks_are_trimmed_like_transformers() {
        let src = "{% for x in xs %}\n    {{ x }}\n{% endfor %}\n";
        assert_eq!(render(src, minijinja::context! { xs => vec![1, 2] }), "    1\n    2\n");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let v = Value::from(minijinja::value::Serde(
            serde_json::json!({"b": [1, 2.5, "é<&>"], "a": null}),
        ));
        let out = render("{{ v | tojson }}", minijinja::context! { v => v.clone() });
        assert_eq!(
            out, r#"{"b": [1, 2.5, "é<&>"], "a": null}"#,
            "insertion order, no HTML escapes"
        );
        let sorted =
            render("{{ v | tojson(sort_keys=true) }}", minijinja::context! { v => v.clone() });
        assert_eq!(sorted, r#"{"a": null, "b": [1, 2.5, "é<&>"]}"#);
        let pretty =
            render("{{ v | tojson(indent=2, sort_keys=true) }}", minijinja::context! { v => v });
        assert_eq!(pretty, "{\n  \"a\": null,\n  \"b\": [\n    1,\n    2.5,\n    \"é<&>\"\n  ]\n}");
    }

    #[test]
    fn python_float_repr_matches_python() {
        assert_eq!(python_float_repr(1.0), "1.0");
        assert_eq!(python_float_repr(0.1), "0.1");
        assert_eq!(python_float_repr(1e16), "1e+16");
        assert_eq!(python_float_repr(1.5e-5), "1.5e-05");
        assert_eq!(python_float_repr(-2.0), "-2.0");
    }

    #[test]
    fn raise_exception_fails_the_render() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}".into()).unwrap();
        let err = t.render(&[], false).unwrap_err();
        assert!(err.what().contains("no system role"), "{}", err.what());
    }

    #[test]
    fn python_string_methods_work() {
        let out = render(
            "{{ s.startswith('<a>') }} {{ s.split('|')[1].strip() }} {{ s.rstrip('\\n') }}",
            minijinja::context! { s => "<a>| b |\n" },
        );
        assert_eq!(out, "True b <a>| b |");
    }
}
