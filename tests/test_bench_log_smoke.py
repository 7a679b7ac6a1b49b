"""Smoke test of bench/bench_log.py: it runs end to end and writes the JSON it promises.

No timing is asserted: only that the benchmark runs and its report has the expected shape.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_log_quick_writes_json_with_every_parameter_and_result(tmp_path: Path) -> None:
    out = tmp_path / "log.json"
    cmd = [
        sys.executable, str(REPO / "bench" / "bench_log.py"), "--quick",
        "--policies", "group,none", "--batch-sizes", "1,4", "--event-sizes", "100,4096",
        "--writers", "1,2", "--runs", "1", "--seconds", "0.05", "--raw-seconds", "0.05",
        "--raw-bytes", str(1 << 20), "--segment-bytes", str(64 << 10),
        "--dir", str(tmp_path), "--json", str(out), "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| policy | writers |" in proc.stdout

    report = json.loads(out.read_text())
    assert {"version", "params", "machine", "raw", "results", "ratios", "peak_rss_kib",
            "elapsed_s", "started_at"} <= set(report)
    params = report["params"]
    assert params["policies"] == ["group", "none"]
    assert params["batch_sizes"] == [1, 4] and params["event_sizes"] == [100, 4096]
    assert params["writers"] == [1, 2] and params["runs"] == 1
    assert {"nproc", "kernel", "fs_type"} <= set(report["machine"])
    assert report["raw"]["sync"]["us_per_sync_p50"] > 0
    assert report["raw"]["seq"]["mb_per_s"] > 0
    assert report["peak_rss_kib"] > 0

    results = report["results"]
    assert len(results) == 2 * 2 * 2 * 2
    seen = {(r["policy"], r["writers"], r["batch_size"], r["event_size"]) for r in results}
    assert len(seen) == len(results)
    for r in results:
        assert len(r["runs"]) == 1
        assert {"appends_per_s", "events_per_s", "mb_per_s", "latency_us_p50",
                "latency_us_p99", "syncs", "appends_per_sync"} <= set(r["median"])
        assert r["median"]["appends_per_s"] > 0
    assert {"group_latency_p50_vs_raw_sync", "group_large_mb_s_vs_raw_seq",
            "none_large_mb_s_vs_raw_seq"} <= set(report["ratios"])
    # The run cleans up after itself: only the JSON is left in --dir.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.json"]


def test_bench_group_floor_runs_and_reports_both_ratios(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    cmd = [sys.executable, str(REPO / "bench" / "bench_group_floor.py"), "--writers", "3",
           "--runs", "1", "--seconds", "0.1", "--dir", str(tmp_path), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bare Python-thread group commit" in proc.stdout
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    for side in ("bare", "filelog"):
        assert run[side]["syncs"] > 2 and run[side]["appends_per_s"] > 0
        assert run[f"{side}_ratio"] > 0
    assert set(report["median"]) == {"raw_us_p50", "bare_ratio", "filelog_ratio"}
