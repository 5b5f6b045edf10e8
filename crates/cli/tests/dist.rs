//! Multi-process training on c10d (Gloo on CPU): `torchrun` (from the venv) launching two ranks
//! repeats the one-process run with the same global batch, its checkpoints resume on another
//! world size, and a rank that dies or stalls stops the other within
//! `train.collective_timeout_s` with an error naming it.

use coordexp_demo::{self as demo, Arch};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{coordexp, is_trained_metric, text, torchrun_train};

/// A tiny demo setup in `dir/demo` and a config `dir/NAME.yaml` extending it with `extra`.
fn config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let demo_dir = dir.join("demo");
    if !demo_dir.exists() {
        demo::prepare(&demo_dir, 16, 2, 5, &Arch::TEST).unwrap();
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "extends: {}\nrun: {{name: {name}, output_dir: {:?}}}\ndata: {{val: null}}\n\
             packing: {{max_length: 256}}\n{extra}",
            demo_dir.join("demo.yaml").display(),
            dir.join("runs").display().to_string(),
        ),
    )
    .unwrap();
    path
}

fn train_losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["mode"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["metrics"]["loss"].as_f64().unwrap()))
        .collect()
}

fn weights(checkpoint: &Path) -> Vec<(String, tch::Tensor)> {
    let mut w = tch::Tensor::read_safetensors(checkpoint.join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

const STEPS: &str = "train: {max_steps: 4, micro_batch: 1, accumulation: 2, log_every: 1, \
                     eval_every: 0, save_every: 0}\n";

#[test]
fn torchrun_with_two_ranks_repeats_the_one_process_losses_and_weights() {
    let d = tempfile::tempdir().unwrap();
    let one = config(d.path(), "one", STEPS);
    let two = config(d.path(), "two", STEPS);
    let o = coordexp(&["train", one.to_str().unwrap(), "--no-progress"]);
    assert!(o.status.success(), "{}", text(&o));
    torchrun_train(&two);
    let (a, b) =
        (train_losses(&d.path().join("runs/one")), train_losses(&d.path().join("runs/two")));
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(
        a.iter().map(|x| x.0).collect::<Vec<_>>(),
        b.iter().map(|x| x.0).collect::<Vec<_>>()
    );
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "step {step}: one process {x}, two ranks {y}");
    }
    let (wa, wb) = (
        weights(&d.path().join("runs/one/checkpoints/step-4")),
        weights(&d.path().join("runs/two/checkpoints/step-4")),
    );
    assert_eq!(wa.len(), wb.len());
    let mut moved = 0.0f64;
    for ((name, x), (other, y)) in wa.iter().zip(&wb) {
        assert_eq!(name, other);
        let diff = (x - y).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{name} differs by {diff}");
        moved = moved.max(x.abs().max().double_value(&[]));
    }
    assert!(moved > 0.0);
}

/// Every train metric that depends on what was trained (losses, terms, rollout counters): not
/// timings, memory or throughput.
fn trained_metrics(run: &Path) -> Vec<(u64, Vec<(String, f64)>)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["mode"] == "train")
        .map(|v| {
            let metrics = v["metrics"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| is_trained_metric(k))
                .filter_map(|(k, x)| x.as_f64().map(|x| (k.clone(), x)))
                .collect();
            (v["step"].as_u64().unwrap(), metrics)
        })
        .collect()
}

#[test]
fn stage2_on_two_ranks_repeats_the_one_process_rollouts_losses_and_weights() {
    // Channel A and B alternate; each B step's rollouts are spread over the ranks (embedded
    // engine) and gathered, its packs split between them.
    let stage2 = "train: {stage: stage2, max_steps: 4, micro_batch: 1, accumulation: 2, \
                  log_every: 1, eval_every: 0, save_every: 0}\n\
                  stage2: {schedule: {b_ratio: 0.5}, channel_b: {triage: {num_rollouts: 2}}}\n\
                  rollout: {max_new_tokens: 24, decode_batch_size: 4}\n";
    let d = tempfile::tempdir().unwrap();
    let one = config(d.path(), "one", stage2);
    let two = config(d.path(), "two", stage2);
    let o = coordexp(&["train", one.to_str().unwrap(), "--no-progress"]);
    assert!(o.status.success(), "{}", text(&o));
    torchrun_train(&two);
    let (a, b) =
        (trained_metrics(&d.path().join("runs/one")), trained_metrics(&d.path().join("runs/two")));
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(a.len(), b.len());
    let b_steps = a.iter().filter(|(_, m)| m.iter().any(|(k, _)| k == "stage2/raw_rollouts"));
    assert_eq!(b_steps.count(), 2, "two channel-B steps: {a:?}");
    for ((step, x), (other, y)) in a.iter().zip(&b) {
        assert_eq!(step, other);
        let names = |m: &[(String, f64)]| m.iter().map(|p| p.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(x), names(y), "step {step}: the same metrics");
        for ((name, u), (_, v)) in x.iter().zip(y) {
            assert!(
                (u - v).abs() <= 1e-5 * u.abs().max(1e-6),
                "step {step} {name}: one process {u}, two ranks {v}"
            );
        }
    }
    let (wa, wb) = (
        weights(&d.path().join("runs/one/checkpoints/step-4")),
        weights(&d.path().join("runs/two/checkpoints/step-4")),
    );
    assert_eq!(wa.len(), wb.len());
    for ((name, x), (_, y)) in wa.iter().zip(&wb) {
        let diff = (x - y).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{name} differs by {diff}");
    }
}

#[test]
fn a_two_rank_checkpoint_resumes_in_one_process_with_the_same_losses() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(
        d.path(),
        "two",
        "train: {max_steps: 4, micro_batch: 1, accumulation: 2, log_every: 1, eval_every: 0, \
         save_every: 2, keep_last: 0}\n",
    );
    torchrun_train(&cfg);
    // The same run continued by one process from its step-2 checkpoint.
    let (run, copy) = (d.path().join("runs/two"), d.path().join("runs/copy"));
    let o = Command::new("cp").arg("-r").arg(&run).arg(&copy).status().unwrap();
    assert!(o.success());
    std::fs::remove_dir_all(copy.join("checkpoints/step-4")).unwrap();
    let o = coordexp(&[
        "train",
        cfg.to_str().unwrap(),
        "--resume",
        copy.join("checkpoints/step-2").to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let (a, b) = (train_losses(&run), train_losses(&copy));
    assert_eq!(a.len(), 4);
    assert_eq!(b.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "step {step}: two ranks {x}, resumed alone {y}");
    }
    let (wa, wb) =
        (weights(&run.join("checkpoints/step-4")), weights(&copy.join("checkpoints/step-4")));
    for ((name, x), (_, y)) in wa.iter().zip(&wb) {
        let diff = (x - y).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{name} differs by {diff}");
    }
}

#[test]
fn a_gpu_the_machine_lacks_and_a_fixed_gpu_under_torchrun_are_input_errors() {
    let d = tempfile::tempdir().unwrap();
    // One process on a GPU no machine here has: exit 2 naming it, not a libtorch panic.
    let cfg = config(d.path(), "gpu", &format!("model: {{device: \"cuda:99\"}}\n{STEPS}"));
    let o = coordexp(&["train", cfg.to_str().unwrap(), "--no-progress"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("cuda:99"), "{}", text(&o));
    // Under torchrun every rank takes the GPU of its LOCAL_RANK: a fixed index is refused first.
    let cfg = config(d.path(), "fixed", &format!("model: {{device: \"cuda:1\"}}\n{STEPS}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = d.path().join("fixed.log");
    let status = spawn_rank(0, port, &cfg, &log).wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("the GPU of its LOCAL_RANK"), "{log}");
}

/// Rank `rank` of a two-rank run launched by hand (rank 0 hosts the store).
fn spawn_rank(rank: usize, port: u16, config: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_coordexp"))
        .args(["--no-progress", "train", config.to_str().unwrap()])
        .envs([
            ("RANK", rank.to_string()),
            ("LOCAL_RANK", rank.to_string()),
            ("WORLD_SIZE", "2".into()),
            ("LOCAL_WORLD_SIZE", "2".into()),
            ("MASTER_ADDR", "127.0.0.1".into()),
            ("MASTER_PORT", port.to_string()),
            ("COORDEXP_CPU_THREADS", "1".into()),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Start two ranks, wait until rank 0 has logged a step, do `fault` to rank 1, and return rank
/// 0's exit status, its stderr and how long it took to stop after the fault.
fn fault_rank_one(name: &str, fault: impl FnOnce(&mut Child)) -> (i32, String, Duration) {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(
        d.path(),
        name,
        "train: {max_steps: 100000, micro_batch: 1, accumulation: 2, log_every: 1, \
         eval_every: 0, save_every: 0, collective_timeout_s: 10}\n",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (log0, log1) = (d.path().join("rank0.log"), d.path().join("rank1.log"));
    let mut r0 = spawn_rank(0, port, &cfg, &log0);
    let mut r1 = spawn_rank(1, port, &cfg, &log1);
    let metrics = d.path().join("runs").join(name).join("metrics.jsonl");
    let started = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(true, |m| !m.contains("\"mode\":\"train\"")) {
        if started.elapsed() > Duration::from_secs(180) || r0.try_wait().unwrap().is_some() {
            let _ = (r0.kill(), r1.kill());
            panic!(
                "rank 0 logged no step: {}\n{}",
                std::fs::read_to_string(&log0).unwrap_or_default(),
                std::fs::read_to_string(&log1).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    fault(&mut r1);
    let faulted = Instant::now();
    let status = loop {
        if let Some(s) = r0.try_wait().unwrap() {
            break s;
        }
        if faulted.elapsed() > Duration::from_secs(60) {
            let _ = (r0.kill(), r1.kill());
            panic!("rank 0 still runs 60 s after the fault on rank 1");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = faulted.elapsed();
    eprintln!("{name}: rank 0 stopped {took:?} after the fault");
    let _ = r1.kill();
    let _ = r1.wait();
    (status.code().unwrap_or(-1), std::fs::read_to_string(&log0).unwrap(), took)
}

#[test]
fn a_killed_rank_stops_the_other_at_once_with_an_error_naming_it() {
    let (code, log, took) = fault_rank_one("killed", |r1| r1.kill().unwrap());
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("rank 1 did not answer"), "{log}");
    assert!(log.contains("step"), "the phase names the step: {log}");
    assert!(took < Duration::from_secs(15), "stopped after {took:?}: {log}");
}

#[test]
fn a_stalled_rank_stops_the_other_within_the_collective_timeout_naming_it() {
    let (code, log, took) = fault_rank_one("stalled", |r1| {
        let stopped = Command::new("kill").args(["-STOP", &r1.id().to_string()]).status().unwrap();
        assert!(stopped.success());
    });
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("rank 1 did not answer"), "{log}");
    assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(40), "{took:?}: {log}");
}
