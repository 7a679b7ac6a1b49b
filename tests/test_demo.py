"""`make demo` runs end to end (small settings) and reports nothing lost."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_demo_runs_end_to_end_and_loses_nothing(tmp_path):
    pytest.importorskip("gymnasium")
    out = subprocess.run(
        [sys.executable, "-m", "replaybuf.demo", "--data-dir", str(tmp_path / "d"),
         "--actors", "2", "--steps", "400", "--batch", "32"],
        capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "duplicate=True" in text
    assert "nothing lost: True" in text
    assert "every acknowledged append survived" in text
    assert "verify: sound" in text
    assert "items_appended" in text
