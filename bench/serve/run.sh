#!/usr/bin/env bash
# Throughput and latency of `coordexp serve` at 1, 8 and 32 concurrent `openai` clients, on a
# demo run's model and validation images (greedy, the run's own prompts); then 8 clients again
# while 4 more keep 512-token requests decoding (the short requests' numbers).
#   bench/serve/run.sh DEMO_DIR [requests_per_client] [max_tokens]   (defaults: 8 128)
# DEMO_DIR is a `coordexp demo --out DIR` directory; the newest checkpoint of its stage-1 run is
# served. The server runs with its defaults (rollout.decode_batch_size from the run's config).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
demo="$(cd "${1:?usage: bench/serve/run.sh DEMO_DIR [requests_per_client] [max_tokens]}" && pwd)"
per="${2:-8}"; max_tokens="${3:-128}"
cd "$root"
eval "$(scripts/setup.sh --print-env)"
bin="${CARGO_TARGET_DIR:-$root/target}/release/coordexp"
[ -x "$bin" ] || cargo build --release -q --bin coordexp
ckpt="$(ls -d "$demo"/runs/demo-stage1/checkpoints/step-* | sort -t- -k2 -n | tail -1)"
work="$(mktemp -d)"
"$bin" serve --model "$ckpt" --port 0 --ready-file "$work/ready" --no-progress --log warn &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 600); do [ -s "$work/ready" ] && break; sleep 0.1; done
url="http://$(cat "$work/ready")"
prompts="$(python - "$ckpt/config.resolved.yaml" <<'PY'
import json, sys, yaml
p = yaml.safe_load(open(sys.argv[1]))["prompt"]
print(json.dumps([p["system"], p["user"]]))
PY
)"
system="$(python -c 'import json,sys; print(json.loads(sys.argv[1])[0])' "$prompts")"
user="$(python -c 'import json,sys; print(json.loads(sys.argv[1])[1])' "$prompts")"
echo "serving $ckpt at $url"
for c in 1 8 32; do
  python bench/serve/load.py --url "$url" --val "$demo/data/val.jsonl" --system "$system" \
    --user "$user" --clients "$c" --requests $((c * per)) --max-tokens "$max_tokens"
done
python bench/serve/load.py --url "$url" --val "$demo/data/val.jsonl" --system "$system" \
  --user "$user" --clients 8 --requests $((8 * per)) --max-tokens "$max_tokens" \
  --long-clients 4 --long-tokens 512
