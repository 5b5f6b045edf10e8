#!/usr/bin/env bash
# Benchmark `coordexp data validate` (structure, then --images) and `coordexp data stats` over
# 100k records that point at 1000 real synthetic PNGs.
#
#   CARGO_TARGET_DIR=target cargo build --release -p coordexp
#   bench/data/run.sh [WORK_DIR]        # COORDEXP_BIN overrides target/release/coordexp
#
# Prints wall-clock seconds per command (best of 3, warm page cache). With PYTHON set to an
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

best_of_3() {
  local best=""
  for _ in 1 2 3; do
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    best=$(python3 -c "b='$best'; t=$t1-$t0; print(f'{t:.3f}' if not b or t < float(b) else b)")
  done
  echo "$best"
}

printf '%-40s %8ss\n' "data validate" "$(best_of_3 "$bin" data validate "$work/bench.jsonl")"
printf '%-40s %8ss\n' "data validate --images" "$(best_of_3 "$bin" data validate "$work/bench.jsonl" --images)"
printf '%-40s %8ss\n' "data stats" "$(best_of_3 "$bin" data stats "$work/bench.jsonl")"
printf '%-40s %8ss\n' "data stats --json" "$(best_of_3 "$bin" data stats "$work/bench.jsonl" --json)"
if [[ -n "${PYTHON:-}" ]]; then
  printf '%-40s %s\n' "python PIL header loop (1 process)" "$("$PYTHON" "$here/pil_baseline.py" "$work/bench.jsonl")"
fi
