"""Smoke test of bench/bench_sum_tree.py: it runs and writes the promised JSON. No timings checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "bench" / "bench_sum_tree.py"


@pytest.mark.slow
def test_quick_run_with_project_venv_writes_every_promised_json_key(tmp_path: Path) -> None:
    out = tmp_path / "sum_tree.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--peers", "ours,numpy", "--json", str(out)],
        capture_output=True, text=True, timeout=240, cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| capacity | peer |" in proc.stdout

    report = json.loads(out.read_text())
    for key in ("benchmark", "schema_version", "argv", "params", "machine", "versions", "peers",
                "reference_peer", "results", "first_call", "peak_rss_mb", "notes", "duration_s"):
        assert key in report, key
    for key in ("capacities", "batch_size", "pairs", "runs", "warmup_pairs", "alpha", "beta",
                "peers_requested", "seed", "fill_budget_s", "skip_slow_fill", "quick"):
        assert key in report["params"], key
    for key in ("nproc", "cpu_model", "mem_total_mb", "python", "loadavg_start", "loadavg_end"):
        assert key in report["machine"], key
    for key in ("numpy", "numba", "torch", "torchrl", "cpprb", "replaybuf"):
        assert key in report["versions"], key
    assert report["params"]["quick"] is True
    assert report["peak_rss_mb"] > 0

    # ours may not exist yet: then it is reported unavailable with a reason, never silently dropped.
    assert set(report["peers"]) == {"ours", "numpy"}
    assert report["peers"]["numpy"]["available"] is True
    assert report["peers"]["ours"]["available"] or report["peers"]["ours"]["reason"]
    ran = {name for name, info in report["peers"].items() if info["available"]}
    assert {row["peer"] for row in report["results"]} == ran
    for row in report["results"]:
        assert len(row["pair_us_runs"]) == report["params"]["runs"]
        assert row["sanity"] == "ok", row
        for key in ("capacity", "pair_us_median", "pair_cpu_us_median", "ratio_vs_reference",
                    "fill_items_per_s", "fill_note", "rss_mb_delta_after_fill"):
            assert key in row, key
    if report["peers"]["ours"]["available"]:
        assert "cold" in report["first_call"] and "warm" in report["first_call"]
    else:
        assert "skipped" in report["first_call"]
