#!/usr/bin/env bash
# Greedy generation throughput (new tokens/s) of our engine vs transformers' `generate`, CPU, f32,
# the same model shape, prompts (one 128×128 image + 48 text tokens) and lengths, in one run:
# for each model (the demo's shape and the 5.4M-parameter bench model) and batch (1, 8, 32),
# `rounds` rounds each of ours then transformers; the medians are compared.
#   bench/generate/run.sh [new_tokens] [rounds]      (defaults: 64 3)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
new="${1:-64}"; rounds="${2:-3}"
cd "$root"
eval "$(scripts/setup.sh --print-env)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release -q -p coordexp-model --example generate_bench
ours="$CARGO_TARGET_DIR/release/examples/generate_bench"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
for model in demo bench; do
  "$ours" --model "$model" --config-out "$work/$model.json"
  for b in 1 8 32; do
    "$ours" --model "$model" --batch "$b" --new-tokens "$new" --rounds "$rounds" | tee -a "$work/runs.jsonl"
    python bench/generate/hf_generate.py --config "$work/$model.json" --model "$model" --batch "$b" \
      --new-tokens "$new" --rounds "$rounds" | tee -a "$work/runs.jsonl"
  done
done
python - "$work/runs.jsonl" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    runs.setdefault((d["model"], d["batch"], d["impl"]), []).append(d["tokens_per_s"])
print(f"{'model':<6} {'batch':>5} {'coordexp tok/s':>15} {'transformers tok/s':>19} {'ratio':>6}")
for (model, b) in sorted({(m, b) for (m, b, _) in runs}):
    ours = statistics.median(runs[(model, b, "coordexp")])
    hf = statistics.median(runs[(model, b, "transformers")])
    print(f"{model:<6} {b:>5} {ours:>15.0f} {hf:>19.0f} {ours / hf:>5.2f}x")
PY
