#!/usr/bin/env bash
# Forward+backward tokens/s of our Qwen3-VL vs transformers, same architecture and packed batch,
# in one run: `rounds` rounds, each running ours (per-segment attention), transformers, and ours
# (masked attention) back to back; the medians are compared, which keeps a busy machine's load
# swings from deciding the ratio.
#   bench/model/run.sh [cpu|cuda] [f32|bf16] [steps] [rounds]
# (defaults: cpu f32 2 3; on a GPU machine: bench/model/run.sh cuda bf16 20 3)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
device="${1:-cpu}"; dtype="${2:-f32}"; steps="${3:-2}"; rounds="${4:-3}"
cd "$root"
eval "$(scripts/setup.sh --print-env)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release -q -p coordexp-model --example fwd_bwd
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
ours="$CARGO_TARGET_DIR/release/examples/fwd_bwd"
"$ours" --steps 0 --config-out "$work/config.json" >/dev/null
for r in $(seq "$rounds"); do
  "$ours" --device "$device" --dtype "$dtype" --steps "$steps" --attention segments | tee -a "$work/runs.jsonl"
  python bench/model/hf_fwd_bwd.py --config "$work/config.json" --device "$device" --dtype "$dtype" \
    --steps "$steps" | tee -a "$work/runs.jsonl"
  "$ours" --device "$device" --dtype "$dtype" --steps "$steps" --attention masked | tee -a "$work/runs.jsonl"
done
python - "$work/runs.jsonl" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    runs.setdefault(d["impl"], []).append(d["tokens_per_s"])
hf = statistics.median(runs.pop("transformers"))
print(f"transformers: median {hf:.0f} tokens/s")
for name, v in runs.items():
    m = statistics.median(v)
    print(f"{name}: median {m:.0f} tokens/s = {m / hf:.2f}x transformers (runs: {', '.join(f'{x:.0f}' for x in v)})")
PY
