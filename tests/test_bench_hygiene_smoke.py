"""Smoke test of bench/bench_hygiene.py: a tiny --quick run writes the promised JSON and table,
its numbers are sane and it cleans up its data dirs. No timings checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "bench" / "bench_hygiene.py"


@pytest.mark.slow
def test_quick_run_writes_every_promised_json_key_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "hygiene.json"
    data_dir = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--items", "3000,2000", "--obs-dims", "17,4",
         "--append-batch", "1000", "--runs", "2", "--idle-s", "0.3", "--scan", "process,thread",
         # A slow learner: fast, it samples every item of these tiny tables 32 times within
         # the runs (the job's times_sampled policy), and the real run empties the table.
         "--learner-pause-ms", "50",
         "--data-dir",
         str(data_dir), "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| items | obs | scan | scan items/s |" in proc.stdout
    for row in ("| 3,000 | 17 | process |", "| 3,000 | 17 | thread |", "| 2,000 | 4 | process |",
                "| 2,000 | 4 | thread |", "| 3,000 | process |"):  # the last: the real run
        assert row in proc.stdout, row

    report = json.loads(out.read_text())
    for key in ("benchmark", "schema_version", "argv", "git", "params", "machine", "versions",
                "results", "goals", "peak_rss_mb", "notes", "duration_s"):
        assert key in report, key
    params = report["params"]
    assert params["quick"] is True and params["item_list"] == [3000, 2000]
    assert params["obs_dim_list"] == [17, 4] and params["fill_fsync"] == "none"
    assert params["scan_list"] == ["process", "thread"]
    assert "low_priority" in params["job_file"]
    for key in ("nproc", "cpu_model", "loadavg_start", "loadavg_end"):
        assert key in report["machine"], key

    rows = report["results"]
    assert [(r["items"], r["scan"]) for r in rows] == [
        (3000, "process"), (3000, "thread"), (2000, "process"), (2000, "thread")]
    for row in rows:
        items = row["items"]
        runs = [r for r in row["measure"]["runs"] if r["scan"] == row["scan"]]
        assert len(runs) == 2 and len(row["measure"]["runs"]) == 4  # interleaved
        for run in runs:
            assert run["status"] == "dry-run" and run["items"] == items
            assert run["scan_info"]["mode"] == row["scan"]
            assert run["process_cpu_s"] > 0 and run["children_cpu_s"] >= 0
            if row["scan"] == "process":
                assert run["scan_info"]["pid"] > 0 and run["children_cpu_s"] > 0
                assert run["scan_info"]["peak_rss_mb"] > 0
            assert run["items_per_s"] > 0 and run["wall_s"] > 0
            assert run["idle_learner"]["samples"] > 0
            assert run["rss_before_mb"] > 0 and run["anon_peak_above_baseline_mb"] >= 0
            if run["vm_hwm_mb"] is not None:  # None only where the kernel refuses the reset
                assert run["vm_hwm_mb"] >= run["rss_before_mb"] * 0.9
        for key in ("scan_items_per_s_median", "rss_before_mb_median", "vm_hwm_mb_max",
                    "rss_above_baseline_mb_max", "anon_peak_above_baseline_mb_max",
                    "learner_idle_p99_ms_median", "learner_job_p99_ms_median", "p99_ratio",
                    "planned_by_reason", "process_cpu_s_median", "children_cpu_s_median",
                    "child_peak_rss_mb_max", "child_anon_mb_max"):
            assert key in row, key
        assert len(row["p99_ratio_runs"]) == 2
        planned = row["planned_by_reason"]
        # Item times span the 10 days before the fill and the job's time is 2 h after it, so
        # max_age (8d) finds the oldest ~21% (a little more the longer the fill took).
        assert 0.2 * items <= planned["EVICTION_REASON_AGE"] <= 0.23 * items
        real = row["real_run"]
        if row["scan"] == "thread":  # the real run uses the first --scan mode
            assert real is None
            continue
        assert real["evicted"] == sum(real["evicted_by_reason"].values()) > 0
        assert real["evictions_per_s"] > 0 and "p99_ratio" in real
        assert row["size_after_real_run"] == items - real["evicted"]
        assert row["learner_errors"] == []
    assert {(g["items"], g["scan"]) for g in report["goals"]} == {
        (n, s) for n in (3000, 2000) for s in ("process", "thread")}
    assert not data_dir.exists()  # cleaned up without --keep-data
