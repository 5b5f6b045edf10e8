//! `lengths`: the longest encoded sample (image tokens included) against `packing.max_length`
//! and `rollout.max_model_len`, and the longest generation prompt plus `rollout.max_new_tokens`
//! against `rollout.max_model_len`.

use crate::checks::records::NO_DATA;
use crate::context::Ctx;
use crate::data::DataFile;
use crate::encoding::{Encoded, Encoding, ModelState};
use crate::report::{Check, Finding};
use coordexp_core::config::schema::OnOverflow;

pub(crate) fn run(
    ctx: &Ctx<'_>,
    files: &[DataFile],
    model: &ModelState,
    encoding: Option<&Encoding>,
) -> Check {
    let c = Check::new(
        "lengths",
        "Sequence lengths",
        "the longest encoded sample (image tokens included) fits packing.max_length and rollout.max_model_len, and the longest generation prompt + rollout.max_new_tokens fits rollout.max_model_len",
    );
    if let Some(reason) = model.unavailable() {
        return c.skip(reason);
    }
    if files.is_empty() {
        return c.skip(NO_DATA);
    }
    let Some(enc) = encoding.filter(|e| !e.samples.is_empty()) else {
        return c.skip(
            "no sampled record could be encoded (unreadable data, or every record failed the template, records or images check)",
        );
    };
    let mut c = c;
    c.settings = ctx.settings(&[
        "packing.enabled",
        "packing.max_length",
        "packing.on_overflow",
        "rollout.max_new_tokens",
        "rollout.max_model_len",
        "eval.max_new_tokens",
    ]);
    for (f, file) in files.iter().enumerate() {
        if let Ok(contents) = &file.contents {
            c.evidence.push(format!(
                "{} `{}`: {} of the first {} sampled records encoded",
                file.role,
                file.path.display(),
                enc.of_file(f).count(),
                contents.sample.len()
            ));
        }
    }
    let at = |e: &Encoded| files[e.file].at(e.line);
    let cfg = ctx.cfg;
    let (max_length, model_len, new_tokens) =
        (cfg.packing.max_length, cfg.rollout.max_model_len, cfg.rollout.max_new_tokens);
    // Samples are non-empty here, so the maxima exist.
    let Some(longest) = enc.samples.iter().max_by_key(|e| (e.len, std::cmp::Reverse(e.line)))
    else {
        return c.skip("no sampled record could be encoded");
    };
    let Some(prompt) = enc.samples.iter().max_by_key(|e| (e.prompt_len, std::cmp::Reverse(e.line)))
    else {
        return c.skip("no sampled record could be encoded");
    };
    let mean = enc.samples.iter().map(|e| e.len).sum::<usize>() as f64 / enc.samples.len() as f64;
    c.evidence.push(format!(
        "longest sample: {} tokens ({} image tokens) at `{}`; mean {mean:.1} tokens over {} samples",
        longest.len,
        longest.image_tokens,
        at(longest),
        enc.samples.len()
    ));
    c.evidence.push(format!(
        "longest generation prompt: {} tokens at `{}`; + rollout.max_new_tokens {new_tokens} = {} (rollout.max_model_len {model_len})",
        prompt.prompt_len,
        at(prompt),
        prompt.prompt_len + new_tokens
    ));

    let mut remedies = Vec::new();
    let over: Vec<&Encoded> = enc.samples.iter().filter(|e| e.len > max_length).collect();
    if !over.is_empty() {
        match cfg.packing.on_overflow {
            OnOverflow::Error => {
                for e in &over {
                    c.findings.push(Finding::at(
                        at(e),
                        format!(
                            "the sample has {} tokens ({} image tokens), more than packing.max_length {max_length}",
                            e.len, e.image_tokens
                        ),
                    ));
                }
                remedies.push("raise packing.max_length (or set packing.on_overflow: singleton), or shorten the samples (fewer objects per record, smaller images)");
            }
            OnOverflow::Singleton => c.warnings.push(format!(
                "{} sampled samples exceed packing.max_length {max_length} and become packs of their own (packing.on_overflow: singleton); the longest is `{}`",
                over.len(),
                at(longest)
            )),
        }
    }
    for e in enc.samples.iter().filter(|e| e.len > model_len) {
        c.findings.push(Finding::at(
            at(e),
            format!(
                "the sample has {} tokens, more than rollout.max_model_len {model_len}: the rollout engine could not hold it",
                e.len
            ),
        ));
        remedies.push("raise rollout.max_model_len above the longest sample");
    }
    for e in enc.samples.iter().filter(|e| e.prompt_len + new_tokens > model_len) {
        c.findings.push(Finding::at(
            at(e),
            format!(
                "generation prompt {} tokens + rollout.max_new_tokens {new_tokens} = {} exceeds rollout.max_model_len {model_len}",
                e.prompt_len,
                e.prompt_len + new_tokens
            ),
        ));
        remedies.push(
            "raise rollout.max_model_len to at least the longest generation prompt + rollout.max_new_tokens, or lower rollout.max_new_tokens",
        );
    }
    // Evaluation decodes with eval.max_new_tokens: an answer longer than that is cut.
    let eval_cut: Vec<&Encoded> = enc
        .samples
        .iter()
        .filter(|e| files[e.file].is_eval() && e.answer_tokens + 1 > cfg.eval.max_new_tokens)
        .collect();
    if let Some(worst) = eval_cut.iter().max_by_key(|e| e.answer_tokens) {
        c.warnings.push(format!(
            "{} sampled evaluation answers need more than eval.max_new_tokens {} tokens (the longest, {} + end-of-turn, at `{}`): evaluation would cut them",
            eval_cut.len(),
            cfg.eval.max_new_tokens,
            worst.answer_tokens,
            at(worst)
        ));
    }
    remedies.dedup();
    c.conclude(
        "every sampled sequence fits its limit",
        |n| format!("{n} length problem(s)"),
        remedies.join("; "),
    )
}
