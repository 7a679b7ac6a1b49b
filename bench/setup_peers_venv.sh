#!/usr/bin/env bash
# Build .bench-venv/ at the repo root: a benchmark-only virtualenv holding replaybuf's peers
# (cpprb, torchrl) next to replaybuf itself, so bench/bench_sum_tree.py measures everyone in one
# process. None of these peers is a dependency of replaybuf; the project venv (.venv) never gets them.
#
# Usage:  bash bench/setup_peers_venv.sh [--force]
#   Idempotent: skips all work when .bench-venv/.peers-installed holds this script's checksum.
#   --force rebuilds the venv from nothing.  PYTHON=python3.11 picks the interpreter.
#
# What this installs and why (checked on Python 3.11.7, x86_64, 2 cores, Debian 12):
#   torch==2.14.1       torchrl's wheels load their C++ extension (torchrl._torchrl, which holds the
#                       segment trees) only with the torch they were built for: torchrl 0.14.1 was
#                       built against torch 2.14. With torch 2.13 loading torchrl/_torchrl.so fails
#                       ("undefined symbol: _ZN5torch8autograd13_wrap_outputs...") and torchrl
#                       only logs a warning, leaving SumSegmentTreeFp32 = None. 2.14.1 is a CUDA build
#                       (~5.5 GB in the venv with its nvidia-* wheels) that pip on Python 3.11 takes
#                       from this machine's local wheel index; uv and poetry don't look there and
#                       would download ~3 GB, so this script uses pip only.
#   torchrl==0.14.1     with tensordict>=0.14.3,<0.15 (torchrl 0.14.1's own requirement).
#   cpprb==11.0.0       PyPI has a manylinux2014 cp311 wheel (built 2024-06 against the NumPy 2 ABI):
#                       it imports and runs with numpy 2.4, so no sdist build and no numpy pin.
#                       (Its sdist needs Cython and a C++ compiler; not needed here.)
#   replaybuf (-e)      the repo itself, editable, with its runtime deps (numba, lmdb, grpcio, ...).
#   numpy, tqdm         numpy is left at whatever replaybuf, torch and cpprb all accept (2.4.x).
# A full build takes about 2 minutes and 5.7 GB of disk (almost all of it torch's CUDA libraries).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.bench-venv"
STAMP="$VENV/.peers-installed"
PYTHON="${PYTHON:-python3}"
SUM="$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"

TORCH_VERSION="2.14.1"
TORCHRL_VERSION="0.14.1"
TENSORDICT_SPEC="tensordict>=0.14.3,<0.15"
CPPRB_VERSION="11.0.0"
# cpprb's wheel works with NumPy 2; should a future combination need NumPy 1.x, pin it here
# (e.g. "numpy==1.26.4", which also lies on this machine's disk): it affects this venv only.
NUMPY_SPEC="numpy"

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$VENV"
elif [[ -f "$STAMP" && "$(cat "$STAMP")" == "$SUM" ]]; then
    echo "bench venv up to date: $VENV (delete it or pass --force to rebuild)"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
# pip's configured local indexes print a "Location ... is ignored" line per missing package: noise.
pip_install() {
    "$VENV/bin/python" -m pip install --quiet "$@" 2> >(grep -v "^WARNING: Location " >&2)
}
PIP=(pip_install)
"${PIP[@]}" --upgrade pip

# torch first and alone, pinned, so nothing later can resolve a different build.
"${PIP[@]}" "torch==$TORCH_VERSION"
"${PIP[@]}" "torch==$TORCH_VERSION" "torchrl==$TORCHRL_VERSION" "$TENSORDICT_SPEC"
"${PIP[@]}" "torch==$TORCH_VERSION" "cpprb==$CPPRB_VERSION" "$NUMPY_SPEC"
"${PIP[@]}" "torch==$TORCH_VERSION" "$NUMPY_SPEC" tqdm -e "$ROOT"

echo "checking that every peer imports ..."
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md

import numpy
import torch
from torchrl._torchrl import MinSegmentTreeFp32, SumSegmentTreeFp32  # C++ trees, not a fallback
from cpprb import PrioritizedReplayBuffer
import replaybuf

SumSegmentTreeFp32(8), MinSegmentTreeFp32(8)
PrioritizedReplayBuffer(8, {"obs": {"shape": 1}})
for name in ("torch", "torchrl", "tensordict", "cpprb", "numpy", "numba", "replaybuf"):
    print(f"  {name:<11}{md.version(name)}")
PY

echo "$SUM" > "$STAMP"
echo "bench venv ready: $VENV"
