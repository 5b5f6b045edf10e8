//! `coordexp serve --model DIR [--config CFG] [--host H] [--port P]` — the HTTP rollout server
//! (OpenAI and ms-swift protocols; `coordexp_rollout::serve`).

use clap::Args;
use coordexp_core::progress::Progress;
use coordexp_rollout::serve::{Faults, ServeOptions, serve_with};
use std::path::PathBuf;

#[derive(Args)]
#[command(after_help = "Testing aid: COORDEXP_SERVE_FAULTS injects faults into generation \
requests (e.g. `status:500@1-2,delay:3s@5,crash@9`; see coordexp_rollout::serve::faults).")]
pub struct ServeArgs {
    /// The model directory (or a checkpoint) to serve.
    #[arg(long)]
    pub model: PathBuf,
    /// The config (prompts, template.max_pixels, rollout.*); default: the directory's
    /// config.resolved.yaml, else the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (see --ready-file).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Generation requests queued or running at once; more get 503 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Largest request body in MiB.
    #[arg(long, default_value_t = 64)]
    pub max_body_mb: usize,
    /// Name reported by /v1/models (default: the model directory's name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Image paths in requests must lie under this directory.
    #[arg(long)]
    pub image_root: Option<PathBuf>,
    /// Weight version of the served directory's weights.
    #[arg(long, default_value_t = 0)]
    pub weight_version: u64,
    /// A PEFT LoRA/DoRA adapter directory applied on top of --model at start-up.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Write HOST:PORT to this file once the server accepts requests.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

pub fn run(a: ServeArgs, progress: Progress) -> crate::CliResult {
    let mut o = ServeOptions::new(a.model);
    o.host = a.host;
    o.port = a.port;
    o.max_queue = a.max_queue;
    o.max_body_bytes = a.max_body_mb.saturating_mul(1 << 20);
    o.model_name = a.served_model_name;
    o.image_root = a.image_root;
    o.weight_version = a.weight_version;
    o.ready_file = a.ready_file;
    o.adapter = a.adapter;
    o.progress = progress.enabled();
    o.handle_signals = true;
    o.faults = Faults::from_env()?;
    let s = serve_with(a.config.as_deref(), o)?;
    println!(
        "served {} requests on {} ({} generation; {} 4xx, {} 5xx; {} prompt / {} completion tokens) in {:.1} s",
        s.requests,
        s.address,
        s.generation_requests,
        s.status_4xx,
        s.status_5xx,
        s.prompt_tokens,
        s.completion_tokens,
        s.seconds
    );
    Ok(())
}
