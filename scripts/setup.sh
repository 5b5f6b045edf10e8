#!/usr/bin/env bash
# Creates (once) the pinned Python environment that provides libtorch to the Rust build and the live
# oracles (transformers, pycocotools, scipy) to the tests, then prints shell exports for it.
#
#   eval "$(scripts/setup.sh --print-env)"    # set LIBTORCH_USE_PYTORCH, LD_LIBRARY_PATH, ...
#   scripts/setup.sh                          # just make sure the environment exists
#
# The environment lives outside the clone, keyed by scripts/requirements.txt and the Python version, so
# every clone on a machine shares it and only a new machine (or a changed pin) downloads torch:
#   ${COORDEXP_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/coordexp/venv-<key>}
# scripts/requirements-extra.txt (oracle/fixture packages) is installed into it incrementally.
# Idempotent: when the environment is complete (marker files written last), this returns at once.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/requirements.txt"
extra="$here/requirements-extra.txt"
print_env=0
for arg in "$@"; do
  case "$arg" in
    --print-env) print_env=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "error: unknown argument '$arg' to scripts/setup.sh" >&2
       echo "hint: use --print-env or no argument" >&2; exit 2 ;;
  esac
done

python_bin="${COORDEXP_PYTHON:-python3}"
if ! command -v "$python_bin" >/dev/null 2>&1; then
  echo "error: no Python interpreter '$python_bin' on PATH" >&2
  echo "hint: install CPython >= 3.10 or point COORDEXP_PYTHON at one" >&2
  exit 2
fi
pyver="$("$python_bin" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
key="$( (cat "$req"; echo "python=$pyver") | sha256sum | cut -c1-12)"
venv="${COORDEXP_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/coordexp/venv-$key}"
marker="$venv/.coordexp-complete"
extra_marker="$venv/.coordexp-extra-$(sha256sum "$extra" | cut -c1-12)"

if [ ! -f "$marker" ]; then
  mkdir -p "$(dirname "$venv")"
  # One installer at a time per environment (two clones or CI and a shell may race).
  exec 9>"$venv.lock"
  flock 9
  if [ ! -f "$marker" ]; then
    echo "coordexp setup: creating $venv (Python $pyver; torch is a large download on a new machine)" >&2
    rm -rf "$venv"
    "$python_bin" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    # No wheel cache: it would keep a second copy of torch and its CUDA libraries (~3 GB).
    "$venv/bin/python" -m pip install --quiet --no-cache-dir --progress-bar off -r "$req" >&2
    "$venv/bin/python" - >&2 <<'EOF'
import torch, transformers, pycocotools, scipy
print(f"coordexp setup: torch {torch.__version__}, transformers {transformers.__version__}")
EOF
    cp "$req" "$venv/requirements.txt"
    touch "$marker"
  fi
  exec 9>&-
fi

# Extras are added in place: a new oracle package must not cost a new torch environment.
if [ ! -f "$extra_marker" ]; then
  exec 9>"$venv.lock"
  flock 9
  if [ ! -f "$extra_marker" ]; then
    echo "coordexp setup: installing extra packages into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --no-cache-dir --progress-bar off -r "$extra" >&2
    rm -f "$venv"/.coordexp-extra-*
    touch "$extra_marker"
  fi
  exec 9>&-
fi

# --- System packages ------------------------------------------------------------------------------
# - chromium: the `coordexp report` test renders the HTML report in a real browser (Debian's
#   `chromium`, /usr/bin/chromium). Set COORDEXP_SKIP_CHROMIUM=1 to skip it.
# - libgloo-dev: Gloo's headers, which c10d's ProcessGroupGloo.hpp includes and the torch wheel
#   does not ship (crates/dist compiles its c10d shim against them; the code runs from libtorch).
# Installed once with apt-get; skipped at once when present. A failure is a warning here: the
# browser test or the crates/dist build then fails naming what is missing.
packages=()
if [ ! -x /usr/bin/chromium ] && [ "${COORDEXP_SKIP_CHROMIUM:-0}" != 1 ]; then packages+=(chromium); fi
if [ ! -f /usr/include/gloo/algorithm.h ]; then packages+=(libgloo-dev); fi
if [ "${#packages[@]}" -gt 0 ]; then
  echo "coordexp setup: installing ${packages[*]} with apt-get" >&2
  sudo_cmd=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo -n); else sudo_cmd=(false); fi
  fi
  apt_install() {
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends -o DPkg::Lock::Timeout=300 "${packages[@]}" >&2
  }
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "coordexp setup: warning: no apt-get here; install ${packages[*]} yourself (the report browser test needs /usr/bin/chromium, crates/dist needs /usr/include/gloo)" >&2
  elif ! apt_install; then
    # Stale or missing package lists: refresh once and retry.
    if ! { "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q \
             -o DPkg::Lock::Timeout=300 >&2 && apt_install; }; then
      echo "coordexp setup: warning: could not install ${packages[*]} (needs root or passwordless sudo and a package mirror)" >&2
    fi
  fi
fi

if [ "$print_env" = 1 ]; then
  torch_lib="$("$venv/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
  cat <<EOF
export COORDEXP_VENV='$venv'
export COORDEXP_PYTHON_ORACLE='$venv/bin/python'
export LIBTORCH_USE_PYTORCH=1
export VIRTUAL_ENV='$venv'
export COORDEXP_TORCH_LIB='$torch_lib'
export LD_LIBRARY_PATH='$torch_lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export PATH='$venv/bin':\$PATH
EOF
fi
