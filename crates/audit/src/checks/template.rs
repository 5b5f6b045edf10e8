//! `template`: the model's own chat template renders the generation prompt as a prefix of the
//! training render, followed by exactly the answer text and a special end-of-turn token — for a
//! fixed conversation and for every sampled record (`Encoder::encode` refuses drift).

use crate::context::Ctx;
use crate::encoding::{Encoding, ModelState};
use crate::report::{Check, Finding};
use crate::sha256_file;
use coordexp_core::coordjson::FieldOrder;
use coordexp_core::geometry::ImageSize;
use coordexp_core::norm1000::Bin;
use coordexp_core::prompt::PromptSource;
use coordexp_core::record::{Desc, Geometry, Object};
use coordexp_text::{Answer, Encoder, Turn};

const REMEDY: &str = "use the base checkpoint's chat template unchanged (chat_template.jinja, chat_template.json or tokenizer_config.json): rendered with the answer, it must be the generation prompt followed by exactly the answer text and a special end-of-turn token (<|im_end|>)";

pub(crate) fn run(ctx: &Ctx<'_>, model: &ModelState, encoding: Option<&Encoding>) -> Check {
    let mut c = Check::new(
        "template",
        "Chat template drift",
        "the model's chat template renders the generation prompt as a prefix of the training render, followed by exactly the answer text and a special end-of-turn token, for a fixed conversation and for each sampled record",
    );
    c.settings = ctx.settings(&[
        "prompt.variant",
        "prompt.field_order",
        "prompt.object_ordering",
        "prompt.system",
        "prompt.system_file",
        "prompt.user",
        "prompt.user_file",
    ]);
    let enc = match model {
        ModelState::Ready(enc) => enc,
        ModelState::Broken { owner: "template", error } => {
            let mut f = Finding::new(error.location().map(str::to_string), error.what());
            if let Some(h) = error.hint_text() {
                f = f.hint(h);
            }
            c.findings.push(f);
            return c.conclude(
                "",
                |_| "the model directory, its chat template or the prompts do not load".into(),
                REMEDY,
            );
        }
        other => return c.skip(other.unavailable().unwrap_or_default()),
    };
    let file = enc.model().template_file();
    match sha256_file(file) {
        Ok(sha) => c.evidence.push(format!("chat template `{}`: sha256 {sha}", file.display())),
        Err(_) => c.evidence.push(format!("chat template `{}`", file.display())),
    }
    let p = enc.prompts();
    c.evidence.push(format!(
        "system prompt: {} ({} bytes); user prompt: {} ({} bytes)",
        source(&p.system_source),
        p.system.len(),
        source(&p.user_source),
        p.user.len()
    ));
    fixed_conversation(&mut c, enc, ctx.cfg.prompt.field_order);
    match encoding {
        Some(e) => {
            c.evidence.push(format!(
                "sampled records: {} encoded without drift, {} with drift, {} not encoded because an image would need resizing (the images check reports them), {} whose answer could not be built (the records check reports them)",
                e.samples.len(),
                e.drift.len(),
                e.resize_skipped,
                e.record_errors.len()
            ));
            c.findings.extend(e.drift.iter().cloned());
        }
        None => c
            .evidence
            .push("no sampled records (no data): only the fixed conversation was checked".into()),
    }
    c.conclude(
        "the template renders prompt + answer exactly",
        |n| format!("{n} template drift problem(s)"),
        REMEDY,
    )
}

fn source(s: &PromptSource) -> String {
    match s {
        PromptSource::BuiltIn => "built-in".into(),
        PromptSource::Inline => "inline in the config".into(),
        PromptSource::File(p) => format!("file `{}`", p.display()),
    }
}

/// One image and one object: render with and without the answer, compare, then encode.
fn fixed_conversation(c: &mut Check, enc: &Encoder, order: FieldOrder) {
    let Some(answer) = fixed_answer(order) else {
        c.findings.push(Finding::new(None, "internal: cannot build the fixed answer"));
        return;
    };
    let at = Some("fixed conversation (1 image, 1 object)".to_string());
    let prompt = match enc.render(1, Turn::Generate) {
        Ok(t) => t,
        Err(e) => {
            c.findings.push(Finding::new(
                at,
                format!("the generation prompt does not render: {}", e.what()),
            ));
            return;
        }
    };
    let full = match enc.render(1, Turn::Train(&answer)) {
        Ok(t) => t,
        Err(e) => {
            c.findings.push(Finding::new(
                at,
                format!("the training conversation does not render: {}", e.what()),
            ));
            return;
        }
    };
    c.evidence.push(format!("generation prompt ends with {:?}", tail(&prompt, 40)));
    if !full.starts_with(&prompt) {
        let k = prompt.bytes().zip(full.bytes()).take_while(|(a, b)| a == b).count();
        c.findings.push(Finding::new(
            at,
            format!(
                "the generation prompt is not a prefix of the training render: they differ at byte {k} (prompt {:?}, training {:?})",
                snippet(&prompt, k),
                snippet(&full, k)
            ),
        ));
        return;
    }
    c.evidence.push("the generation prompt is a prefix of the training render".into());
    let rest = &full[prompt.len()..];
    let Some(after) = rest.strip_prefix(answer.text()) else {
        c.findings.push(Finding::new(
            at,
            format!(
                "the training render does not continue with the answer text: {:?} instead of {:?}",
                snippet(rest, 0),
                snippet(answer.text(), 0)
            ),
        ));
        return;
    };
    c.evidence.push(format!("after the answer the template writes {after:?}"));
    match square_size(enc) {
        Some(size) => match enc.encode(&[size], Turn::Train(&answer)) {
            Ok(s) => c.evidence.push(format!(
                "the fixed conversation ({}x{} image) encodes: {} tokens, answer and end-of-turn supervised",
                size.width(),
                size.height(),
                s.len()
            )),
            Err(e) => c.findings.push(Finding::new(at, e.what())),
        },
        None => c.warnings.push(
            "no square image fits the model's pixel limits: the fixed conversation was rendered, not encoded".into(),
        ),
    }
}

fn fixed_answer(order: FieldOrder) -> Option<Answer> {
    let bins = [100u16, 200, 300, 400].map(Bin::new);
    let [Some(a), Some(b), Some(c), Some(d)] = bins else { return None };
    let object = Object::new(Desc::new("object").ok()?, Geometry::BBox([a, b, c, d]));
    Answer::from_objects(&[object], order).ok()
}

/// The smallest square on the model's grid within its pixel limits (and the encoder's cap).
fn square_size(enc: &Encoder) -> Option<ImageSize> {
    let v = enc.model().vision();
    let f = u64::from(v.factor().max(1));
    let mut side = f;
    while side * side < v.min_pixels {
        side += f;
    }
    let size = ImageSize::new(u32::try_from(side).ok()?, u32::try_from(side).ok()?)?;
    enc.grid(size).ok().map(|_| size)
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start -= 1;
    }
    &s[start..]
}

fn snippet(s: &str, at: usize) -> &str {
    let mut start = at.min(s.len());
    while !s.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (start + 40).min(s.len());
    while !s.is_char_boundary(end) {
        end += 1;
    }
    &s[start..end]
}
