"""`python -m replaybuf_client.demo --quick`: the service demo runs end to end and reports.

A real server subprocess, two actor processes, the torch learner and a SIGKILL + restart of the
server. Nothing here asserts learning quality or timing: only that every stage ran, every check
of the demo held (it exits non-zero otherwise) and the summary was printed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_quick_demo_runs_end_to_end(tmp_path):
    pytest.importorskip("gymnasium")
    pytest.importorskip("torch")
    data_dir = tmp_path / "demo"
    out = subprocess.run(
        [sys.executable, "-m", "replaybuf_client.demo", "--quick", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    text = out.stdout
    assert out.returncode == 0, f"exit {out.returncode}\n{text}\n{out.stderr}"
    for expected in (
        "learner steps",  # the live progress line
        ">> SIGKILL server",
        "nothing acknowledged was lost",
        "== summary ==",
        "learned policy (greedy, model v",
        "random policy",
        "lineage of sampled item",
        "request id 'actor",
        "dataset re-materializable as of LSN",
        "server stopped cleanly",
    ):
        assert expected in text, f"{expected!r} missing from the demo's output:\n{text}"
    assert (data_dir / "models" / "policy.npz").is_file()
    assert (data_dir / "replay").is_dir()


def test_demo_refuses_to_wipe_a_foreign_directory(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    out = subprocess.run(
        [sys.executable, "-m", "replaybuf_client.demo", "--quick", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert "pass a new or empty directory" in out.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
