"""Smoke test of bench/bench_service.py: ours only, tiny, writes the promised JSON. No timings checked.

Reverb is requested through a missing interpreter, so the test also checks that the benchmark
degrades to ours only (with a setup note) when `.reverb-venv` is absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "bench" / "bench_service.py"


@pytest.mark.slow
def test_quick_ours_only_run_writes_every_promised_json_key(tmp_path: Path) -> None:
    out = tmp_path / "service.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--systems", "ours,reverb",
         "--reverb-python", str(tmp_path / "no-reverb-venv" / "python"),
         "--workloads", "W2", "--clients", "1,2", "--items", "512", "--seconds", "0.3",
         "--dir", str(tmp_path / "data"), "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| workload | clients | system |" in proc.stdout
    assert "setup_reverb_venv.sh" in proc.stdout  # the note on how to get the peer

    report = json.loads(out.read_text())
    for key in ("benchmark", "schema_version", "argv", "git", "params", "machine", "versions",
                "unavailable", "results", "summary", "ratios", "goals", "peak_rss_mb", "notes",
                "duration_s"):
        assert key in report, key
    for key in ("workloads", "workload_fields", "items", "clients", "seconds", "runs",
                "systems_requested", "batch", "alpha", "beta", "fsync", "frames", "reverb_sample",
                "seed", "quick", "compare_messages"):
        assert key in report["params"], key
    for key in ("nproc", "cpu_model", "mem_total_mb", "python", "loadavg_start", "loadavg_end"):
        assert key in report["machine"], key
    assert report["params"]["quick"] is True
    assert report["params"]["fsync"] == "group"
    assert "reverb" in report["unavailable"]
    assert report["ratios"] == []
    assert report["peak_rss_mb"] > 0

    (workload,) = report["results"]
    assert workload["workload"] == "W2" and workload["items"] == 512
    assert set(workload["systems"]) == {"ours"}
    ours = workload["systems"]["ours"]
    assert ours["fill"]["items"] == 512
    assert ours["server_mem_end"]["rss_mb"] > 0
    assert set(ours["runs"]) == {"insert/1", "sample/1", "sample_msg/1", "insert/2", "sample/2",
                                 "sample_msg/2"}
    for name, runs in ours["runs"].items():
        assert len(runs) == 1, name
        assert runs[0]["n"] > 0 and runs[0]["wall_s"] > 0, (name, runs)
        if name.startswith("sample"):
            assert runs[0]["n"] % 256 == 0
            for key in ("batches", "lat_ms_p50", "lat_ms_p99"):
                assert key in runs[0], key
            assert runs[0]["shared_batches"] == 0  # W2 batches (43 KB) stay in the messages
    assert {(r["clients"], r["system"]) for r in report["summary"]} == {(1, "ours"), (2, "ours")}
    for row in report["summary"]:
        for key in ("workload", "insert_per_s", "sample_per_s", "sample_p50_ms", "sample_p99_ms",
                    "sample_msg_per_s", "sample_msg_p99_ms", "sample_shared_batches",
                    "server_rss_mb", "server_hwm_mb"):
            assert key in row, key
