//! Forward + backward time of the stage-1 objective on random logits, side by side with a
//! PyTorch eager peer organised like the reference (same shapes, f32, same thread count).
//!
//!   objective_bench N VOCAB [ITERS]
//!
//! 30% of the N supervised positions are coordinate slots; prints one JSON line per
//! implementation.

use coordexp_core::config::schema::Objective;
use coordexp_text::TokenType;
use coordexp_train::objective::{CoordIds, Stage1Objective, Supervised, WindowCounts};
use serde_json::json;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn main() {
    let args: Vec<i64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (n, vocab) = (args.first().copied().unwrap_or(2048), args.get(1).copied().unwrap_or(2048));
    let iters = args.get(2).copied().unwrap_or(10);
    let first = vocab - 1000 - 8;
    let is_coord: Vec<bool> = (0..n).map(|i| i % 10 < 3).collect();
    let targets: Vec<i64> = (0..n)
        .map(|i| if is_coord[i as usize] { first + (i * 37) % 1000 } else { (i * 13) % first })
        .collect();
    let types: Vec<TokenType> = is_coord
        .iter()
        .enumerate()
        .map(|(i, c)| match (c, i % 3) {
            (true, _) => TokenType::Coord,
            (false, 0) => TokenType::Struct,
            (false, 1) => TokenType::Desc,
            _ => TokenType::Closure,
        })
        .collect();

    let mut cfg = Objective::default();
    cfg.coord.temperature = 0.9;
    cfg.coord.w1.weight = 3.0;
    cfg.coord.gate.weight = 5.0;
    let objective = Stage1Objective::new(&cfg, CoordIds::new(first as u32), Device::Cpu);
    let window = WindowCounts::of(&types);
    let pos = objective.positions(&targets, &types).expect("valid synthetic batch");
    tch::manual_seed(0);
    let leaf = |rows: usize| {
        (Tensor::randn([rows as i64, vocab], (Kind::Float, Device::Cpu)) * 3.0)
            .set_requires_grad(true)
    };
    // Grouped input: the text and coordinate logits as two separate projections produce them.
    let (text, coord) = (leaf(pos.text_rows().len()), leaf(pos.coord_rows().len()));
    let grouped = || {
        let loss = objective.loss(&pos, &text, &coord, &window).expect("valid synthetic batch");
        loss.total.backward();
    };
    report("coordexp", n, vocab, time(grouped, iters));
    // All rows in position order (the convenience path: one row gather per group).
    let all = leaf(n as usize);
    let rows = || {
        let batch = Supervised { logits: &all, targets: &targets, types: &types };
        objective.loss_of_rows(&batch, &window).expect("valid synthetic batch").total.backward();
    };
    report("coordexp-rows", n, vocab, time(rows, iters));
    let peer = coordexp_testkit::run_python_json(
        include_str!("objective_peer.py"),
        &json!({"n": n, "vocab": vocab, "first": first, "targets": targets, "is_coord": is_coord,
                "warmup": 2, "iters": iters}),
    );
    println!("{peer}");
}

/// Mean wall and CPU milliseconds per call after two warm-up calls (gradients accumulate into
/// the leaves: one extra add per call that the torch peer, which drops them, does not pay). CPU
/// time is reported because the machine is shared: under contention it moves less than wall time.
fn time(f: impl Fn(), iters: i64) -> (f64, f64) {
    for _ in 0..2 {
        f();
    }
    let (t0, c0) = (Instant::now(), cpu_seconds());
    for _ in 0..iters {
        f();
    }
    let per = |x: f64| x / iters as f64 * 1e3;
    (per(t0.elapsed().as_secs_f64()), per(cpu_seconds() - c0))
}

/// User + system CPU seconds of this process (Linux `/proc/self/stat`, 100 ticks per second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name start at field 3; utime and stime are 14, 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) + field(12)) / 100.0
}

fn report(name: &str, n: i64, vocab: i64, (wall, cpu): (f64, f64)) {
    let threads = tch::get_num_threads();
    println!(
        "{}",
        json!({"impl": name, "n": n, "vocab": vocab, "wall_ms": wall, "cpu_ms": cpu, "threads": threads})
    );
}
