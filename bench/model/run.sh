#!/usr/bin/env bash
# Forward+backward tokens/s of our Qwen3-VL vs transformers, same architecture and packed batch,
# in one run.   bench/model/run.sh [cpu|cuda] [f32|bf16] [steps]
# (defaults: cpu f32 3; on a GPU machine: bench/model/run.sh cuda bf16 20)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
device="${1:-cpu}"; dtype="${2:-f32}"; steps="${3:-3}"
cd "$root"
eval "$(scripts/setup.sh --print-env)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release -q -p coordexp-model --example fwd_bwd
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
ours="$CARGO_TARGET_DIR/release/examples/fwd_bwd"
"$ours" --device "$device" --dtype "$dtype" --steps "$steps" --attention segments \
  --config-out "$work/config.json" | tee "$work/segments.json"
python bench/model/hf_fwd_bwd.py --config "$work/config.json" --device "$device" --dtype "$dtype" \
  --steps "$steps" | tee "$work/hf.json"
"$ours" --device "$device" --dtype "$dtype" --steps "$steps" --attention masked | tee "$work/masked.json"
python - "$work/hf.json" "$work/segments.json" "$work/masked.json" <<'PY'
import json, sys
hf, *ours = (json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[1:])
for o in ours:
    print(f"{o['impl']}: {o['tokens_per_s']:.0f} tokens/s = {o['tokens_per_s'] / hf['tokens_per_s']:.2f}x "
          f"transformers ({hf['tokens_per_s']:.0f} tokens/s)")
PY
