//! `coordexp demo` — the embedded default run: synthetic data, a small tokenizer and model,
//! stage-1 training on the CPU within a time budget, and the untrained-vs-trained comparison.
//!
//! The time budget is split up front: the number of optimizer steps is the training share of
//! the budget divided by a measured step time (a short throughput probe on the real data), so
//! the learning-rate schedule completes; as the machine's pace drifts the trainer re-fits the
//! schedule to what fits, and the deadline backs it up. At the end the re-fitted total is
//! written back into `OUT/demo.yaml`, so the file says what ran and `coordexp train
//! OUT/demo.yaml --resume OUT/runs/demo-stage1` finds nothing left to do.

use clap::Args;
use coordexp_core::Error;
use coordexp_core::config;
use coordexp_demo::{Arch, Schedule, prepare, write_configs};
use coordexp_report::{ReportOptions, write_report};
use coordexp_train::trainer::{self, EvalPoint, TrainOptions, describe_refit};
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
    let start = Instant::now();
    if !(a.minutes > 0.0 && a.minutes.is_finite()) {
        return Err(Error::input(format!("--minutes {} must be positive", a.minutes))
            .hint("give the demo's wall-clock budget in minutes, e.g. --minutes 10"));
    }
    println!("coordexp demo: {} min budget, output in {}", a.minutes, a.out.display());
    let prepared = prepare(&a.out, a.train, a.val, a.seed, &Arch::DEMO)?;
    tracing::info!(
        "demo model: {} parameters, vocabulary {}",
        prepared.parameters,
        prepared.vocab_size
    );
    let budget = Duration::from_secs_f64(a.minutes * 60.0);
    // Evaluations and the final checkpoint share the rest of the budget.
    let reserve = budget.mul_f64(0.05).max(Duration::from_secs(20));
    let probe = trainer::probe(&config::load(&prepared.config)?, 10)?;
    let tried: Vec<String> =
        probe.tried.iter().map(|(plan, rate)| format!("{rate:.1} steps/min with {plan}")).collect();
    tracing::info!("throughput probe: {}; training with {}", tried.join(", "), probe.cpu);
    let steps_per_minute = probe.steps_per_minute;
    let train_budget = budget.saturating_sub(start.elapsed() + reserve);
    // 5% below the probe's estimate, for the evaluations and checkpoints along the way; the
    // trainer re-fits the schedule when the machine's pace drifts.
    let max_steps =
        (0.95 * (train_budget.as_secs_f64() / 60.0) * steps_per_minute).floor().max(1.0) as u64;
    let schedule = Schedule::of(max_steps);
    write_configs(&a.out, &prepared.config, Some(schedule))?;
    let loaded = config::load(&prepared.config)?;
    tracing::info!(
        "training for {max_steps} steps ({steps_per_minute:.1} steps/min, {:.0} s of training)",
        train_budget.as_secs_f64()
    );
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
    let s = trainer::train(
        &loaded,
        TrainOptions {
            deadline: Some(start + budget.saturating_sub(reserve)),
            on_eval: Some(on_eval),
            cpu: Some(probe.cpu),
            ..TrainOptions::default()
        },
    )?;
    if s.total_steps != max_steps {
        write_configs(
            &a.out,
            &prepared.config,
            Some(Schedule { max_steps: s.total_steps, ..schedule }),
        )?;
    }
    println!();
    println!("model: {} parameters, vocabulary {}", prepared.parameters, prepared.vocab_size);
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
            describe_refit(planned, total)
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
    println!("config: {} ({} steps)", prepared.config.display(), s.total_steps);
    let report = write_report(
        &s.run_dir,
        &s.run_dir.join("report.html"),
        &ReportOptions { progress: false, ..ReportOptions::default() },
    )?;
    println!("report: {}", report.path.display());
    Ok(())
}
