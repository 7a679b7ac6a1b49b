#!/usr/bin/env bash
# Build .reverb-venv/ at the repo root: a benchmark-only virtualenv holding DeepMind Reverb, the
# peer of bench/bench_service.py (issue 5). Reverb is never a dependency of replaybuf: the project
# venv (.venv) never gets it, and replaybuf is not installed here (the Reverb side of the
# benchmark imports only reverb, tensorflow and numpy).
#
# Usage:  bash bench/setup_reverb_venv.sh [--force]
#   Idempotent: skips all work when .reverb-venv/.reverb-installed holds this script's checksum.
#   --force rebuilds the venv from nothing.  PYTHON=python3.11 picks the interpreter. Checked:
#   dm-reverb 0.14.0 installs here as cp311-cp311-manylinux2014_x86_64 (Linux x86_64 only; Reverb
#   publishes no wheel for Python 3.12 or for macOS/aarch64, so use 3.11).
#
# Pins: dm-reverb==0.14.0 is built against tensorflow 2.15.0 and imports with tensorflow-cpu
# 2.15.1 (same ABI); numpy stays < 2 (tensorflow 2.15 needs numpy 1.x). All three come as wheels
# from this machine's local index in under a minute; the venv takes about 1.3 GB.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.reverb-venv"
STAMP="$VENV/.reverb-installed"
PYTHON="${PYTHON:-python3.11}"
SUM="$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"

REVERB_VERSION="0.14.0"
TF_VERSION="2.15.1"
NUMPY_SPEC="numpy<2"

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$VENV"
elif [[ -f "$STAMP" && "$(cat "$STAMP")" == "$SUM" ]]; then
    echo "reverb venv up to date: $VENV (delete it or pass --force to rebuild)"
    exit 0
fi

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
    echo "warning: $PYTHON is not Python 3.11; dm-reverb $REVERB_VERSION has wheels for 3.8-3.11 only" >&2
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
pip_install() {
    "$VENV/bin/python" -m pip install --quiet "$@" 2> >(grep -v "^WARNING: Location " >&2)
}
pip_install --upgrade pip
# One resolve for all three pins so pip cannot pick a different tensorflow for reverb.
pip_install "dm-reverb==$REVERB_VERSION" "tensorflow-cpu==$TF_VERSION" "$NUMPY_SPEC"

echo "checking that reverb imports and serves ..."
export TF_CPP_MIN_LOG_LEVEL=2
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md

import numpy as np
import reverb
import tensorflow as tf

server = reverb.Server(tables=[reverb.Table(
    name="t", sampler=reverb.selectors.Prioritized(0.6), remover=reverb.selectors.Fifo(),
    max_size=10, rate_limiter=reverb.rate_limiters.MinSize(1))], port=None)
client = reverb.Client(f"localhost:{server.port}")
client.insert([np.zeros(3, np.float32)], priorities={"t": 1.0})
assert len(list(client.sample("t", num_samples=1))) == 1
server.stop()
for name in ("dm-reverb", "tensorflow-cpu", "numpy"):
    print(f"  {name:<15}{md.version(name)}")
PY

echo "$SUM" > "$STAMP"
echo "reverb venv ready: $VENV"
