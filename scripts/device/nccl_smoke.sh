#!/usr/bin/env bash
# The GPU smoke of multi-process training on NCCL, prepared here and run on a lent GPU machine.
#
#   scripts/device/nccl_smoke.sh prepare   # here: build, strip and stage everything in .device/
#   scripts/device/nccl_smoke.sh run       # there, in the repository root, carrying .device
#
# `run` needs only the machine's python3 with torch 2.11 (CUDA): coordexp is built here against
# the same torch version, and LD_LIBRARY_PATH points it at the machine's libtorch. It checks:
#   1. an NCCL group of one rank on GPU 0 sums a host and a GPU tensor (the dist crate's test);
#   2. `coordexp train` of 4 stage-1 steps on one GPU: finite losses within 2 % of the CPU run
#      made by `prepare` (cuDNN/cuBLAS sum in other orders than the CPU);
#   3. four stage-2 steps (channels A and B, embedded rollouts) on one GPU: they run, finite;
#   4. with two or more GPUs: `torchrun --nproc-per-node 2` of the stage-1 steps on NCCL gives the
#      one-GPU losses within 1e-4 (relative) and the same final weights within 1e-5, and the
#      stage-2 steps run on two ranks (finite; their losses are printed beside the one-GPU run's:
#      GPU kernels chosen by batch size may round rollouts differently).
# Results go to $OUT/nccl_smoke.log when $OUT is set (the device tool's output folder).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
stage=.device
steps="train: {max_steps: 4, micro_batch: 1, accumulation: 2, log_every: 1, eval_every: 0, save_every: 0}"

stage2="train: {stage: stage2, max_steps: 4, micro_batch: 1, accumulation: 2, log_every: 1, eval_every: 0, save_every: 0}
stage2: {schedule: {b_ratio: 0.5}, channel_b: {triage: {num_rollouts: 2}}}
rollout: {max_new_tokens: 24, decode_batch_size: 4}"

config() { # NAME DEVICE [STEPS]
  cat >"$stage/$1.yaml" <<YAML
extends: smoke/config/demo/stage1.yaml
run: {name: $1, output_dir: $stage/runs}
data: {train: $stage/smoke/data/train.jsonl, val: null}
model: {path: $stage/smoke/model, device: $2}
packing: {max_length: 256}
${3:-$steps}
YAML
}

case "${1:-}" in
prepare)
  eval "$(scripts/setup.sh --print-env)"
  grep -qx "/.device/" .git/info/exclude 2>/dev/null || echo "/.device/" >>.git/info/exclude
  cargo build --release -q --bin coordexp
  tests=$(cargo test --release -q -p coordexp-dist --lib --no-run --message-format=json \
    | python -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "coordexp_dist":
        print(m["executable"])')
  rm -rf "$stage" && mkdir -p "$stage"
  strip -o "$stage/coordexp" "${CARGO_TARGET_DIR:-target}/release/coordexp"
  strip -o "$stage/dist_tests" "$tests"
  cargo run --release -q -p coordexp-demo --example prepare -- "$stage/smoke" 16 2 >/dev/null
  config cpu cpu
  config gpu cuda
  config gpu2 cuda
  config gpu_s2 cuda "$stage2"
  config gpu2_s2 cuda "$stage2"
  COORDEXP_CPU_THREADS=1 "$stage/coordexp" --no-progress --log warn train "$stage/cpu.yaml"
  du -sh "$stage"
  echo "staged in $stage: carry it and run 'bash scripts/device/nccl_smoke.sh run'"
  ;;
run)
  log="${OUT:-$stage}/nccl_smoke.log"
  exec > >(tee "$log") 2>&1
  torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  python3 -c 'import torch; print("torch", torch.__version__, "gpus", torch.cuda.device_count())'
  gpus=$(python3 -c 'import torch; print(torch.cuda.device_count())')
  echo "== 1. an NCCL group of one rank on GPU 0"
  "$stage/dist_tests" an_nccl_group --nocapture
  echo "== 2. four stage-1 steps on one GPU against the CPU run"
  rm -rf "$stage/runs/gpu" "$stage/runs/gpu2"
  "$stage/coordexp" --no-progress --log warn train "$stage/gpu.yaml"
  compare() { # RUN_A RUN_B REL_TOL (a tolerance of "none" only prints)
    python3 - "$@" <<'PY'
import json, math, sys
a, b, tol = sys.argv[1], sys.argv[2], sys.argv[3]
loss = lambda r: [json.loads(l)["metrics"]["loss"] for l in open(r + "/metrics.jsonl") if '"mode":"train"' in l]
x, y = loss(a), loss(b)
print(f"{a}: {x}\n{b}: {y}")
assert len(x) == len(y) == 4, "four steps each"
assert all(math.isfinite(v) for v in x + y), "finite losses"
worst = max(abs(u - v) / abs(u) for u, v in zip(x, y))
print(f"worst relative loss difference {worst:.2e} (tolerance {tol})")
assert tol == "none" or worst <= float(tol)
PY
  }
  compare "$stage/runs/cpu" "$stage/runs/gpu" 0.02
  echo "== 3. four stage-2 steps on one GPU"
  rm -rf "$stage/runs/gpu_s2" "$stage/runs/gpu2_s2"
  "$stage/coordexp" --no-progress --log warn train "$stage/gpu_s2.yaml"
  compare "$stage/runs/gpu_s2" "$stage/runs/gpu_s2" 0
  if [ "$gpus" -ge 2 ]; then
    echo "== 4. torchrun with two GPU ranks (NCCL) against one GPU"
    python3 -m torch.distributed.run --standalone --nproc-per-node 2 --no-python \
      "$stage/coordexp" --no-progress --log warn train "$stage/gpu2.yaml"
    compare "$stage/runs/gpu" "$stage/runs/gpu2" 1e-4
    python3 - "$stage/runs/gpu/checkpoints/step-4" "$stage/runs/gpu2/checkpoints/step-4" <<'PY'
import sys
from safetensors.torch import load_file
a, b = (load_file(d + "/model.safetensors") for d in sys.argv[1:])
worst = max((a[k] - b[k]).abs().max().item() for k in a)
print(f"worst final-weight difference {worst:.2e}")
assert worst <= 1e-5
PY
    python3 -m torch.distributed.run --standalone --nproc-per-node 2 --no-python \
      "$stage/coordexp" --no-progress --log warn train "$stage/gpu2_s2.yaml"
    compare "$stage/runs/gpu_s2" "$stage/runs/gpu2_s2" none
  else
    echo "== 4. not run: one GPU on this machine (two ranks need two)"
  fi
  echo "nccl smoke: PASS"
  ;;
*)
  echo "usage: $0 prepare | run" >&2
  exit 2
  ;;
esac
