#!/usr/bin/env bash
# Benchmark `coordexp data validate` (structure, then --images) and `coordexp data stats` over
# 100k records that point at 1000 real synthetic PNGs.
#
#   CARGO_TARGET_DIR=target cargo build --release -p coordexp
#   bench/data/run.sh [WORK_DIR]        # COORDEXP_BIN overrides target/release/coordexp
#
# Prints wall-clock and CPU (user + sys) seconds per command (fastest of 3, warm page cache);
# on a shared machine the CPU column is the stable one. With PYTHON set to an
# interpreter that has Pillow (e.g. the venv's, `eval "$(scripts/setup.sh --print-env)"` then
# PYTHON=$COORDEXP_PYTHON_ORACLE), also times the Pillow header loop of pil_baseline.py.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${COORDEXP_BIN:-$here/../../target/release/coordexp}"
work="${1:-${TMPDIR:-/tmp}/coordexp-bench-data}"
records="${RECORDS:-100000}"

rm -rf "$work"
"$bin" data synth --out "$work" --train 1000 --val 0 --seed 1 >/dev/null
python3 "$here/make_records.py" --synth "$work/train.jsonl" --out "$work/bench.jsonl" --records "$records"
echo "records: $records ($(du -h "$work/bench.jsonl" | cut -f1)), images: 1000 PNG, threads: $(nproc)"

# Run a command 3 times; print the wall-clock and CPU (user + sys) seconds of the fastest run.
best_of_3() {
  local best=""
  for _ in 1 2 3; do
    local t
    t=$( { TIMEFORMAT='%R %U %S'; time "$@" >/dev/null 2>&1; } 2>&1 )
    best=$(awk -v t="$t" -v b="$best" 'BEGIN {
      split(t, x, " "); if (b == "") { print x[1], x[2] + x[3]; exit }
      split(b, y, " "); if (x[1] < y[1]) print x[1], x[2] + x[3]; else print b }')
  done
  awk -v b="$best" 'BEGIN { split(b, y, " "); printf "%7.2fs wall %7.2fs cpu\n", y[1], y[2] }'
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
synth_fresh() { rm -rf "$work/synth5k" && "$bin" data synth --out "$work/synth5k" --train 5000 --val 500 --seed 2; }
printf '%-32s %s\n' "data synth (5000 + 500 images)" "$(best_of_3 synth_fresh)"
printf '%-32s %s\n' "data validate" "$(best_of_3 "$bin" data validate "$work/bench.jsonl")"
printf '%-32s %s\n' "data validate --images" "$(best_of_3 "$bin" data validate "$work/bench.jsonl" --images)"
printf '%-32s %s\n' "data stats" "$(best_of_3 "$bin" data stats "$work/bench.jsonl")"
printf '%-32s %s\n' "data stats --json" "$(best_of_3 "$bin" data stats "$work/bench.jsonl" --json)"
if [[ -n "${PYTHON:-}" ]]; then
  printf '%-32s %s\n' "python PIL header loop" "$("$PYTHON" "$here/pil_baseline.py" "$work/bench.jsonl")"
fi
