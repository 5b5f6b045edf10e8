//! `coordexp demo` — the embedded default run: synthetic data, a small tokenizer and model,
//! stage-1 training on the CPU within a time budget, and the untrained-vs-trained comparison.

use clap::Args;
use coordexp_train::demo::{self, DemoOptions};
use coordexp_train::trainer::EvalPoint;
use std::path::PathBuf;

#[derive(Args)]
pub struct DemoArgs {
    /// Output directory for the demo's data, model, config and run.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Wall-clock budget of the whole demo in minutes (training gets what data generation and
    /// evaluation leave).
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Synthetic training images.
    #[arg(long, default_value_t = 10000)]
    pub train: usize,
    /// Synthetic validation images (the evaluation set).
    #[arg(long, default_value_t = 200)]
    pub val: usize,
    /// Seed of the dataset and the model initialisation.
    #[arg(long, default_value_t = 17)]
    pub seed: u64,
}

pub fn run(a: DemoArgs) -> crate::CliResult {
    println!("coordexp demo: {} min budget, output in {}", a.minutes, a.out.display());
    let on_eval = Box::new(|p: &EvalPoint| {
        let m = &p.metrics;
        println!(
            "  eval {:>9} after {:>5.0} s of training: AP50 {:.3}  AP {:.3}  f1@0.5 {:.3}  parse {:.1}%",
            p.name,
            p.train_seconds,
            m.ap50,
            m.ap,
            m.f1_05,
            100.0 * m.parse_valid_rate
        );
    });
    let report = demo::run(
        &DemoOptions {
            out: a.out,
            minutes: a.minutes,
            train_images: a.train,
            val_images: a.val,
            seed: a.seed,
        },
        on_eval,
    )?;
    let s = &report.summary;
    println!();
    println!("model: {} parameters, vocabulary {}", report.parameters, report.vocab_size);
    println!(
        "trained {} steps in {:.0} s ({:.0} tokens/s){}",
        s.steps,
        s.train_seconds,
        s.tokens as f64 / s.train_seconds.max(1e-9),
        if s.stopped_at_deadline { ", stopped by the time budget" } else { "" }
    );
    if let Some((planned, total)) = s.refitted {
        println!(
            "the machine's pace differed from the probe's: {}",
            coordexp_train::trainer::describe_refit(planned, total)
        );
    }
    println!("AP50 over training time:");
    for p in &s.evals {
        let bar = "#".repeat((p.metrics.ap50 * 50.0).round() as usize);
        println!("  {:>6.0} s  {:>9}  {:.3} {bar}", p.train_seconds, p.name, p.metrics.ap50);
    }
    let row = |name: &str, p: Option<&EvalPoint>| {
        if let Some(p) = p {
            let m = &p.metrics;
            println!(
                "  {name:<9} AP50 {:.3}  AP {:.3}  f1@0.5 {:.3}  parse_valid_rate {:.3}",
                m.ap50, m.ap, m.f1_05, m.parse_valid_rate
            );
        }
    };
    println!("val set ({} images):", s.final_eval().map_or(0, |f| f.metrics.records));
    row("untrained", s.evals.iter().find(|e| e.name == "step-0"));
    row("trained", s.final_eval());
    println!("run directory: {}", s.run_dir.display());
    println!(
        "config: {} (repeat with `coordexp train {}`)",
        report.config.display(),
        report.config.display()
    );
    Ok(())
}
