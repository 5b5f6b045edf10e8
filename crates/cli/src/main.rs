//! The `coordexp` command-line tool. Each subcommand lives in `cmd/<name>.rs`; this file only
//! parses arguments, sets up logging and turns an [`Error`] into the two-line report and its exit
//! code (2 for bad input, 1 for runtime failures).

mod cmd;

use clap::{Parser, Subcommand};
use coordexp_core::Error;
use coordexp_core::progress::Progress;

/// Train vision-language models to detect objects by writing CoordJSON with coordinate tokens.
#[derive(Parser)]
#[command(name = "coordexp", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log verbosity: error, warn, info, debug, trace (or an env-filter directive).
    #[arg(long, global = true, default_value = "info", env = "COORDEXP_LOG")]
    log: String,
    /// No progress bars or periodic progress lines (a bar on a terminal, a line every 10 s
    /// otherwise).
    #[arg(long, global = true)]
    no_progress: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate and show configs.
    #[command(subcommand)]
    Config(cmd::config::ConfigCommand),
    /// Dataset tools: synth, validate, stats, convert, resize, render, parse.
    #[command(subcommand)]
    Data(cmd::data::DataCommand),
    /// Evaluate detections: COCO files or raw model predictions.
    #[command(subcommand)]
    Eval(cmd::eval::EvalCommand),
    /// Show how one record becomes tokens (template, labels, positions, packing).
    Inspect(cmd::inspect::InspectArgs),
    /// Model directories: init, expand-vocab.
    #[command(subcommand)]
    Model(cmd::model::ModelCommand),
    /// Train (stage 1 / stage 2) from a YAML config.
    Train(cmd::train::TrainArgs),
    /// Generate predictions for a JSONL file with a checkpoint.
    Infer(cmd::infer::InferArgs),
    /// Serve rollouts over HTTP.
    Serve(cmd::serve::ServeArgs),
    /// The pipeline map and CPU checks of a config, its model and its data before training.
    Audit(cmd::audit::AuditArgs),
    /// Write one self-contained HTML page of a run (curves, tables, image overlays).
    Report(cmd::report::ReportArgs),
    /// The embedded default: synthetic data through the pipeline on CPU.
    Demo(cmd::demo::DemoArgs),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout with exit 0, usage errors to stderr with exit 2.
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging(&cli.log);
    let progress = Progress::new(!cli.no_progress);
    let result = match cli.command {
        Command::Config(c) => cmd::config::run(c),
        Command::Data(c) => cmd::data::run(c, progress),
        Command::Eval(c) => cmd::eval::run(c, progress),
        Command::Demo(a) => cmd::demo::run(a, progress),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Model(c) => cmd::model::run(c),
        Command::Train(a) => cmd::train::run(a, progress),
        Command::Infer(a) => cmd::infer::run(a, progress),
        Command::Serve(a) => cmd::serve::run(a, progress),
        Command::Audit(a) => cmd::audit::run(a, progress),
        Command::Report(a) => cmd::report::run(a, progress),
    };
    if let Err(e) = result {
        eprintln!("{}", e.report());
        std::process::exit(e.exit_code());
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}

/// Helper shared by subcommands: the common `Result` type.
pub type CliResult = Result<(), Error>;
