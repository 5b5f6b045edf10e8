#!/usr/bin/env bash
# Peak memory and step time of stage-1 training on 4,096-token packs with a 152,670-id vocabulary
# and a narrow model (hidden 256, 8 layers), with and without train.logit_chunk_rows (256) and
# train.gradient_checkpointing, each variant a separate `coordexp train` process of 4 steps.
#   bench/memory/run.sh [rounds]   (default 2; rounds interleave the variants)
# Process peak = the maximum resident set of the whole run (GNU time %M: data, model, optimizer
# state and the steps together); step transient = the process peak minus the resident set
# between steps (median of memory/rss_mib over the steps: data, weights, gradients and optimizer
# state stay resident) = what a step's activations, logits and their gradients add on top;
# step time = median of steps 2-4 (step 1 warms up).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
rounds="${1:-2}"
cd "$root"
eval "$(scripts/setup.sh --print-env)"
target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release -q --bin coordexp
cargo build --release -q -p coordexp-train --example memory_setup
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
"$target/release/examples/memory_setup" "$work/setup" >/dev/null
for r in $(seq "$rounds"); do
  for v in plain chunked recompute both both-64; do
    rm -rf "$work/setup/runs/$v"
    /usr/bin/time -f "%M" -o "$work/rss" \
      "$target/release/coordexp" --no-progress --log warn train "$work/setup/$v.yaml" >"$work/log" 2>&1 \
      || { cat "$work/log"; exit 1; }
    python - "$v" "$(cat "$work/rss")" "$work/setup/runs/$v/metrics.jsonl" >>"$work/rows.jsonl" <<'PY'
import json, statistics, sys
name, rss_kb, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
steps = [json.loads(l) for l in open(path) if '"mode":"train"' in l]
t = [s["elapsed_s"] for s in steps]
m = [s["metrics"] for s in steps]
growth = m[-1]["memory/peak_rss_mib"] - statistics.median(x["memory/rss_mib"] for x in m)
print(json.dumps({"variant": name, "peak_mib": rss_kb / 1024, "growth_mib": growth,
    "step_s": statistics.median(b - a for a, b in zip(t, t[1:])), "losses": [x["loss"] for x in m]}))
PY
    tail -1 "$work/rows.jsonl"
  done
done
python - "$work/rows.jsonl" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    rows.setdefault(d["variant"], []).append(d)
base = rows["plain"]
peak0 = statistics.median(r["peak_mib"] for r in base)
time0 = statistics.median(r["step_s"] for r in base)
grow0 = statistics.median(r["growth_mib"] for r in base)
print("| variant | process peak (MiB) | vs plain | step transient (MiB) | vs plain | step (s) | vs plain | max rel. loss diff |")
print("|---|---|---|---|---|---|---|---|")
for name, rs in rows.items():
    peak = statistics.median(r["peak_mib"] for r in rs)
    grow = statistics.median(r["growth_mib"] for r in rs)
    step = statistics.median(r["step_s"] for r in rs)
    diff = max(abs(a - b) / abs(b) for r in rs for a, b in zip(r["losses"], base[0]["losses"]))
    print(f"| {name} | {peak:.0f} | {peak0 / peak:.2f}x lower | {grow:.0f} | {grow0 / grow:.2f}x lower "
          f"| {step:.2f} | {step / time0:.2f}x | {diff:.1e} |")
PY
