"""The sampling kernels' pure-Python fallback stays correct and exact.

numba reads ``NUMBA_DISABLE_JIT`` at import, so these run in subprocesses: the sum-tree and
selector suites again without JIT (smaller sizes: ``REPLAYBUF_SMALL_TESTS=1``), and a fixed
scenario whose samples must match the compiled kernels' bit for bit (the fallbacks repeat
the same float64 operations in the same order).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

SCENARIO = """
import json, numpy as np
from replaybuf.selectors import PrioritizedSelector
out = []
for cap, fanout in ((5000, 2), (3000, 16)):
    rng = np.random.default_rng(7)
    sel = PrioritizedSelector(cap, alpha=0.6, fanout=fanout)
    sel.insert(np.arange(cap), rng.random(cap) * 10.0 ** rng.integers(-3, 3, cap))
    for _ in range(3):
        r = sel.sample(256, rng, beta=0.4)
        sel.update(r.slots, rng.random(256) + 0.5)
        out.append([r.slots.tolist(), [float(x).hex() for x in r.probabilities],
                    [float(x).hex() for x in r.weights]])
    out.append(float(sel.total()).hex())
print(json.dumps(out))
"""


def run_python(code: str, jit: bool) -> str:
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)
    if not jit:
        env["NUMBA_DISABLE_JIT"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], cwd=HERE.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="already without JIT")
def test_compiled_and_pure_python_kernels_sample_the_same_bits() -> None:
    compiled = json.loads(run_python(SCENARIO, jit=True))
    interpreted = json.loads(run_python(SCENARIO, jit=False))
    assert compiled == interpreted


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="already without JIT")
def test_sampling_suites_pass_without_jit() -> None:
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", REPLAYBUF_SMALL_TESTS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         str(HERE / "test_sum_tree.py"), str(HERE / "test_selectors.py"),
         str(HERE / "test_seeding.py")],
        cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
