//! `coordexp demo` — the embedded default run: synthetic data, a small tokenizer and model,
//! stage-1 training on the CPU within a time budget, and the untrained-vs-trained comparison.
//! `coordexp demo --stage2` then shows what stage 2 buys: two arms from the same stage-1
//! checkpoint for equal time — stage-1 continuation and stage 2 — evaluated on the same val set.
//!
//! The time budget is split up front: each training's number of optimizer steps is its share
//! of the budget divided by a measured step time (a short throughput probe on the real data, of
//! that training's own step kinds), so its learning-rate schedule completes; as the machine's
//! pace drifts the trainer re-fits the schedule, and a deadline backs it up. After each training
//! the re-fitted total is written back into its leaf config, so the file says what ran and
//! `coordexp train LEAF.yaml --resume RUN_DIR` finds nothing left to do.

use clap::Args;
use coordexp_core::config;
use coordexp_core::progress::Progress;
use coordexp_core::{Error, Result};
use coordexp_demo::{Arch, Leaf, STAGE1, STAGE2, Schedule, prepare, write_configs};
use coordexp_report::{ReportOptions, write_report};
use coordexp_train::trainer::{
    self, CpuPlan, EvalPoint, TrainOptions, TrainSummary, describe_refit,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct DemoArgs {
    /// Output directory for the demo's data, model, configs and runs.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Wall-clock budget of the whole demo in minutes (default 10; 20 with --stage2). Training
    /// gets what data generation, probes and evaluation leave.
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Synthetic training images.
    #[arg(long, default_value_t = 10000)]
    pub train: usize,
    /// Synthetic validation images (the evaluation set).
    #[arg(long, default_value_t = 200)]
    pub val: usize,
    /// Seed of the dataset and the model initialisation.
    #[arg(long, default_value_t = 17)]
    pub seed: u64,
    /// After stage 1, train two arms from its checkpoint for equal time — stage-1 continuation
    /// and stage 2 — and compare them (`OUT/eval/compare.json`).
    #[arg(long)]
    pub stage2: bool,
}

/// One budgeted training: its leaf config and how it went.
struct Trained {
    config: PathBuf,
    summary: TrainSummary,
    cpu: CpuPlan,
}

/// Probe `leaf`'s step time, size its schedule to end by `deadline`, train, and write the
/// re-fitted total back into the leaf config. `cpu`: use this CPU plan (skip trying others).
fn budgeted(
    out: &Path,
    path: &Path,
    leaf: Leaf,
    deadline: Instant,
    cpu: Option<CpuPlan>,
    eval_every: Option<u64>,
    progress: Progress,
) -> Result<Trained> {
    write_configs(out, path, &leaf)?;
    let loaded = config::load(path)?;
    let probe = match cpu {
        Some(plan) => trainer::probe_plans(&loaded, 4, &[plan])?,
        None => trainer::probe(&loaded, 10)?,
    };
    let tried: Vec<String> =
        probe.tried.iter().map(|(plan, rate)| format!("{rate:.1} steps/min with {plan}")).collect();
    tracing::info!("throughput probe: {}; training with {}", tried.join(", "), probe.cpu);
    let left = deadline.saturating_duration_since(Instant::now());
    // 5% below the probe's estimate, for the evaluations and checkpoints along the way; the
    // trainer re-fits the schedule when the machine's pace drifts.
    let max_steps =
        (0.95 * (left.as_secs_f64() / 60.0) * probe.steps_per_minute).floor().max(1.0) as u64;
    let mut schedule = Schedule::of(max_steps);
    if let Some(every) = eval_every {
        schedule.every = every;
    }
    write_configs(out, path, &Leaf { schedule: Some(schedule), ..leaf.clone() })?;
    let loaded = config::load(path)?;
    tracing::info!(
        "training {} for {max_steps} steps ({:.1} steps/min, {:.0} s)",
        path.display(),
        probe.steps_per_minute,
        left.as_secs_f64()
    );
    let summary = trainer::train(
        &loaded,
        TrainOptions {
            deadline: Some(deadline),
            on_eval: Some(Box::new(print_eval)),
            cpu: Some(probe.cpu),
            progress: progress.enabled(),
            ..TrainOptions::default()
        },
    )?;
    if summary.total_steps != max_steps {
        // The re-fitted total, with the warmup of the planned one expressed as the fraction of
        // the new total that gives the same number of steps: the file says what ran.
        let schedule = Schedule { max_steps: summary.total_steps, ..schedule };
        let mut optim: Vec<String> =
            leaf.optim.iter().filter(|l| !l.starts_with("warmup:")).cloned().collect();
        let fraction = summary.warmup_steps as f64 / summary.total_steps.max(1) as f64;
        optim.push(format!("warmup: {fraction:?}"));
        write_configs(out, path, &Leaf { schedule: Some(schedule), optim, ..leaf })?;
    }
    Ok(Trained { config: path.to_path_buf(), summary, cpu: probe.cpu })
}

fn print_eval(p: &EvalPoint) {
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
}

fn print_training(name: &str, t: &Trained) {
    let s = &t.summary;
    println!(
        "{name}: {} steps in {:.0} s ({:.0} tokens/s){}",
        s.steps,
        s.train_seconds,
        s.tokens as f64 / s.train_seconds.max(1e-9),
        if s.stopped_at_deadline { ", stopped by the time budget" } else { "" }
    );
    if let Some((planned, total)) = s.refitted {
        println!(
            "  the machine's pace differed from the probe's: {}",
            describe_refit(planned, total)
        );
    }
    println!("  run directory: {}", s.run_dir.display());
    println!("  config: {} ({} steps)", t.config.display(), s.total_steps);
}

fn row(name: &str, p: Option<&EvalPoint>) {
    if let Some(p) = p {
        let m = &p.metrics;
        println!(
            "  {name:<17} AP50 {:.3}  AP {:.3}  F1@0.5 {:.3}  P {:.3}  R {:.3}  dup {:.3}  parse {:.3}",
            m.ap50,
            m.ap,
            m.f1_05,
            m.precision_05,
            m.recall_05,
            m.duplicate_rate,
            m.parse_valid_rate
        );
    }
}

pub fn run(a: DemoArgs, progress: Progress) -> crate::CliResult {
    let start = Instant::now();
    let minutes = a.minutes.unwrap_or(if a.stage2 { 20.0 } else { 10.0 });
    if !(minutes > 0.0 && minutes.is_finite()) {
        return Err(Error::input(format!("--minutes {minutes} must be positive"))
            .hint("give the demo's wall-clock budget in minutes, e.g. --minutes 10"));
    }
    println!("coordexp demo: {minutes} min budget, output in {}", a.out.display());
    let prepared = prepare(&a.out, a.train, a.val, a.seed, &Arch::DEMO)?;
    tracing::info!(
        "demo model: {} parameters, vocabulary {}",
        prepared.parameters,
        prepared.vocab_size
    );
    let budget = Duration::from_secs_f64(minutes * 60.0);
    // Evaluations, probes and the final checkpoints share the rest of the budget.
    let reserve = budget.mul_f64(if a.stage2 { 0.1 } else { 0.05 }).max(Duration::from_secs(20));
    let end = start + budget.saturating_sub(reserve);
    let stage1_end = if a.stage2 {
        // Stage 1 gets half of the training time; each arm a quarter.
        let left = end.saturating_duration_since(Instant::now());
        Instant::now() + left / 2
    } else {
        end
    };
    let stage1 = budgeted(
        &a.out,
        &prepared.config,
        Leaf { extends: STAGE1, ..Leaf::default() },
        stage1_end,
        None,
        None,
        progress,
    )?;
    println!();
    println!("model: {} parameters, vocabulary {}", prepared.parameters, prepared.vocab_size);
    print_training("stage 1", &stage1);
    let s = &stage1.summary;
    println!("AP50 over training time:");
    for p in &s.evals {
        let bar = "#".repeat((p.metrics.ap50 * 50.0).round() as usize);
        println!("  {:>6.0} s  {:>9}  {:.3} {bar}", p.train_seconds, p.name, p.metrics.ap50);
    }
    println!("val set ({} images):", s.final_eval().map_or(0, |f| f.metrics.records));
    row("untrained", s.evals.iter().find(|e| e.name == "step-0"));
    row("trained", s.final_eval());
    report(&s.run_dir)?;
    if a.stage2 {
        compare(&a, &stage1, end, progress)?;
    }
    Ok(())
}

/// The two arms from stage 1's final checkpoint, equal time each, and `eval/compare.json`.
fn compare(a: &DemoArgs, stage1: &Trained, end: Instant, progress: Progress) -> Result<()> {
    let checkpoint = stage1.summary.checkpoint.clone();
    let arm_time = end.saturating_duration_since(Instant::now()) / 2;
    println!();
    println!(
        "stage 2 comparison: two arms from {} for {:.0} s each",
        checkpoint.display(),
        arm_time.as_secs_f64()
    );
    // Both arms continue with the optimizer settings of configs/stage2/demo.yaml, so the only
    // difference is the step kinds.
    let stage2_optim = [
        "lr: {language: 1.0e-3, vision: 1.0e-4, merger: 1.0e-3, coord_rows: 1.0e-3}",
        "warmup: 0.0",
    ];
    let arm = |name: &str, extends: &'static str, optim: &[&str]| -> Result<Trained> {
        let leaf = Leaf {
            extends,
            run_name: Some(name.to_string()),
            model: Some(checkpoint.clone()),
            schedule: None,
            optim: optim.iter().map(|l| l.to_string()).collect(),
        };
        let path = a.out.join(format!("{name}.yaml"));
        // Only the final evaluation: both arms start from the same evaluated checkpoint.
        budgeted(
            &a.out,
            &path,
            leaf,
            Instant::now() + arm_time,
            Some(stage1.cpu),
            Some(0),
            progress,
        )
    };
    let continued = arm("demo-stage1-continued", STAGE1, &stage2_optim)?;
    print_training("stage-1 continuation", &continued);
    let stage2 = arm("demo-stage2", STAGE2, &[])?;
    print_training("stage 2", &stage2);
    let metrics = |t: &Trained| {
        let s = &t.summary;
        s.final_eval().map(|f| {
            let m = &f.metrics;
            json!({
                "AP50": m.ap50, "AP": m.ap, "f1@0.5": m.f1_05, "precision": m.precision_05,
                "recall": m.recall_05, "duplicate_rate": m.duplicate_rate,
                "parse_valid_rate": m.parse_valid_rate, "steps": s.steps,
                "train_seconds": s.train_seconds, "run_dir": s.run_dir,
            })
        })
    };
    let doc = json!({
        "stage1": metrics(stage1),
        "stage1_continued": metrics(&continued),
        "stage2": metrics(&stage2),
        "arm_seconds": arm_time.as_secs_f64(),
        "start_checkpoint": checkpoint,
    });
    let dir = a.out.join("eval");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, &e))?;
    let path = dir.join("compare.json");
    let text = serde_json::to_string_pretty(&doc)
        .map_err(|e| Error::runtime(format!("cannot encode the comparison: {e}")))?;
    std::fs::write(&path, text + "\n").map_err(|e| Error::io("write", &path, &e))?;
    println!("val set, equal time from the same stage-1 checkpoint:");
    row("stage 1 (start)", stage1.summary.final_eval());
    row("stage-1 continued", continued.summary.final_eval());
    row("stage 2", stage2.summary.final_eval());
    println!("comparison: {}", path.display());
    report(&stage2.summary.run_dir)
}

fn report(run_dir: &Path) -> Result<()> {
    let r = write_report(
        run_dir,
        &run_dir.join("report.html"),
        &ReportOptions { progress: false, ..ReportOptions::default() },
    )?;
    println!("report: {}", r.path.display());
    Ok(())
}
