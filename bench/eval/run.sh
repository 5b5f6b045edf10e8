#!/usr/bin/env bash
# Evaluation benchmark, one run: `coordexp eval coco` vs pycocotools, faster-coco-eval and
# hotcoco's Python binding on a COCO-scale generated set (5,000 images, ~38k GT, 500k detections),
# and `coordexp eval preds` from raw model text for 5,000 images. Prints a Markdown report.
#
#   bench/eval/run.sh                  # CARGO_TARGET_DIR is honoured for the release build
#
# The Python peers live in their own virtual environment (not the project's pinned test venv):
#   ${BENCH_EVAL_VENV:-~/.cache/coordexp/bench-eval-venv}, created here without system packages.
# The generated data is cached in ${BENCH_EVAL_DATA:-~/.cache/coordexp/bench-eval-data}.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/coordexp"
venv="${BENCH_EVAL_VENV:-$cache/bench-eval-venv}"
data="${BENCH_EVAL_DATA:-$cache/bench-eval-data}"
target="${CARGO_TARGET_DIR:-$repo/target}"
reps="${BENCH_REPS:-3}"
pins="pycocotools==2.0.11 faster-coco-eval==1.8.0 hotcoco==1.3.0 numpy==2.4.6"

(cd "$repo" && cargo build --release -p coordexp >&2)

if [ ! -f "$venv/.complete" ] || [ "$(cat "$venv/.complete")" != "$pins" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet --progress-bar off $pins >&2
  echo "$pins" > "$venv/.complete"
fi

if [ ! -f "$data/.complete" ]; then
  "$venv/bin/python" "$here/gen.py" "$data" >&2
  touch "$data/.complete"
fi

"$venv/bin/python" "$here/run.py" --bin "$target/release/coordexp" --data "$data" --reps "$reps"
