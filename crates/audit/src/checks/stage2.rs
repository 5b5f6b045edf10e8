//! `stage2`: the settings of stage 2 against the data — decode limits against the longest
//! answer, explorers against their temperature, rollout servers reachable — and
//! `server_prompt_tokens`, the learner/server prompt-token equality (it needs the rollout
//! backend, which this pure-data crate does not link).

use crate::context::Ctx;
use crate::data::DataFile;
use crate::encoding::{Encoding, ModelState};
use crate::health::{Health, probe};
use crate::report::{Check, Finding};
use coordexp_core::config::schema::{RolloutBackend, Stage};

const REMEDY: &str = "raise rollout.max_new_tokens above the longest answer (keeping the longest generation prompt + rollout.max_new_tokens within rollout.max_model_len), give explorers a temperature above 0 when num_rollouts > 1, and start the rollout servers (or fix rollout.servers)";

/// The health path a backend's server answers.
fn health_path(backend: RolloutBackend) -> &'static str {
    match backend {
        // swift rollout serves `/health/` (FastAPI, trailing slash).
        RolloutBackend::Swift => "/health/",
        _ => "/health",
    }
}

fn stage1_reason(ctx: &Ctx<'_>) -> String {
    format!("{}: the stage-2 settings do not apply", ctx.describe("train.stage"))
}

pub(crate) fn run(
    ctx: &Ctx<'_>,
    files: &[DataFile],
    model: &ModelState,
    encoding: Option<&Encoding>,
) -> Check {
    let c = Check::new(
        "stage2",
        "Stage-2 settings",
        "rollout.max_new_tokens covers the longest encoded answer (rollouts are not truncated), explorers sample (temperature > 0) whenever stage2.channel_b.triage.num_rollouts > 1, and every configured rollout server answers its health endpoint",
    );
    if ctx.cfg.train.stage != Stage::Stage2 {
        return c.skip(stage1_reason(ctx));
    }
    let mut c = c;
    c.settings = ctx.settings(&[
        "train.stage",
        "rollout.backend",
        "rollout.servers",
        "rollout.max_new_tokens",
        "rollout.max_model_len",
        "rollout.timeout_s",
        "stage2.channel_b.triage.num_rollouts",
        "stage2.channel_b.triage.explorer.temperature",
        "stage2.channel_b.triage.explorer.top_p",
        "stage2.channel_b.triage.explorer.top_k",
        "stage2.channel_b.pseudo_positive.enabled",
    ]);
    let cfg = ctx.cfg;
    let r = &cfg.rollout;
    let new_tokens = r.max_new_tokens;

    // Decode limit vs the longest answer: an answer the rollout cannot finish is truncated.
    match (model.unavailable(), encoding.filter(|e| !e.samples.is_empty())) {
        (None, Some(enc)) => {
            if let Some(longest) = enc.samples.iter().max_by_key(|e| e.answer_tokens) {
                c.evidence.push(format!(
                    "longest encoded answer: {} tokens + end-of-turn at `{}` (over {} sampled records); rollout.max_new_tokens {new_tokens}",
                    longest.answer_tokens,
                    files[longest.file].at(longest.line),
                    enc.samples.len()
                ));
            }
            let mut over: Vec<_> =
                enc.samples.iter().filter(|e| e.answer_tokens + 1 > new_tokens).collect();
            over.sort_by_key(|e| (e.file, e.line));
            for e in over {
                c.findings.push(Finding::at(
                    files[e.file].at(e.line),
                    format!(
                        "the answer needs {} tokens + end-of-turn, more than rollout.max_new_tokens {new_tokens}: a rollout of it would be truncated",
                        e.answer_tokens
                    ),
                ));
            }
            c.evidence.push(
                "the longest generation prompt + rollout.max_new_tokens against rollout.max_model_len is the lengths check's".into(),
            );
        }
        (reason, _) => c.evidence.push(format!(
            "answers vs rollout.max_new_tokens not checked: {}",
            reason.unwrap_or_else(|| "no sampled record was encoded".into())
        )),
    }

    // Explorers.
    let t = &cfg.stage2.channel_b.triage;
    if t.num_rollouts > 1 {
        if t.explorer.temperature > 0.0 && t.explorer.temperature.is_finite() {
            c.evidence.push(format!(
                "{} rollouts per prompt: a greedy anchor and {} explorer(s) at temperature {}",
                t.num_rollouts,
                t.num_rollouts - 1,
                t.explorer.temperature
            ));
        } else {
            c.findings.push(Finding::new(
                Some("stage2.channel_b.triage.explorer.temperature".into()),
                format!(
                    "{} rollouts ask for explorers, but explorer temperature {} is greedy: every explorer repeats the anchor",
                    t.num_rollouts, t.explorer.temperature
                ),
            ));
        }
    } else {
        c.evidence.push("num_rollouts 1: the greedy anchor alone (no explorer)".into());
        c.warnings.push(
            "without explorers no anchor object is explorer-supported: every unmatched anchor object is dead (leaves the prefix) and nothing is recovered".into(),
        );
    }

    // Servers.
    let timeout = ctx.opts.server_timeout;
    match (r.backend, r.servers.is_empty()) {
        (RolloutBackend::Embedded, true) => {
            c.evidence.push("rollout.backend embedded: rollouts run in-process, no server".into())
        }
        (RolloutBackend::Embedded, false) => c.warnings.push(format!(
            "rollout.servers lists {} server(s) but rollout.backend is embedded: they are not used",
            r.servers.len()
        )),
        (backend, _) => {
            let path = health_path(backend);
            for (i, s) in r.servers.iter().enumerate() {
                let at = format!("rollout.servers[{i}] {}", s.url);
                ctx.progress.note(&format!("probing {}{path}", s.url));
                match probe(&s.url, path, timeout) {
                    Health::Healthy(line) => c.evidence.push(format!(
                        "{at}: GET {path} answered {line:?}"
                    )),
                    Health::Unhealthy(line) => c.findings.push(Finding::at(
                        at,
                        format!("GET {path} answered {line:?}, not a 2xx status"),
                    )),
                    Health::Unreachable(why) => c.findings.push(
                        Finding::at(at, format!("GET {path} got no answer within {timeout:?}: {why}"))
                            .hint("start the server (or fix its URL) before training; check that this machine can reach it"),
                    ),
                    Health::NotProbed(why) => c.warnings.push(format!("{at}: not probed: {why}")),
                }
            }
        }
    }
    c.conclude(
        "decode limits, explorers and servers agree with the data",
        |n| format!("{n} stage-2 setting problem(s)"),
        REMEDY,
    )
}

pub(crate) fn server_prompt_tokens(ctx: &Ctx<'_>) -> Check {
    let c = Check::new(
        "server_prompt_tokens",
        "Server prompt tokens",
        "the rollout server tokenises each prompt to exactly the learner's prompt ids (same length, same ids)",
    );
    if ctx.cfg.train.stage != Stage::Stage2 {
        return c.skip(format!(
            "{}: stage 1 has no rollouts, so no server prompts",
            ctx.describe("train.stage")
        ));
    }
    let r = &ctx.cfg.rollout;
    if r.backend == RolloutBackend::Embedded {
        return c.skip(format!(
            "{}: prompts are tokenised in-process by the learner's own encoder, there is no server to compare",
            ctx.describe("rollout.backend")
        ));
    }
    let mut c = c.skip("needs the rollout backend (not available in this build)");
    c.settings = ctx.settings(&["rollout.backend", "rollout.servers"]);
    c
}
