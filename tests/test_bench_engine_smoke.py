"""Smoke test of bench/bench_engine.py: a tiny run of ours writes the promised JSON. No timings
checked. Runs with the project venv (no .bench-venv needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "bench" / "bench_engine.py"


@pytest.mark.slow
def test_quick_run_of_ours_writes_every_promised_json_key(tmp_path: Path) -> None:
    out = tmp_path / "engine.json"
    data_dir = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--peers", "ours", "--w2-items", "3000",
         "--w3-items", "800", "--sample-batches", "5", "--profile-samples", "5",
         "--data-dir", str(data_dir), "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| workload | peer | durable |" in proc.stdout

    report = json.loads(out.read_text())
    for key in ("benchmark", "schema_version", "argv", "git", "params", "machine", "versions",
                "peers", "results", "restart", "profile", "goals", "peak_rss_mb", "notes",
                "duration_s"):
        assert key in report, key
    params = report["params"]
    for key in ("workload_list", "w2_items", "w3_items", "append_batch", "sample_batch",
                "sample_batches", "runs", "fsync", "alpha", "beta", "peer_list", "quick",
                "restart_runs", "data_dir", "torch_threads"):
        assert key in params, key
    assert params["quick"] is True and params["fsync"] == "group"
    assert params["w2_items"] == 3000 and params["w3_items"] == 800
    for key in ("nproc", "cpu_model", "mem_total_mb", "python", "loadavg_start", "loadavg_end"):
        assert key in report["machine"], key
    for key in ("numpy", "lmdb", "torch", "torchrl", "cpprb", "replaybuf"):
        assert key in report["versions"], key
    assert report["peers"] == {"ours": report["peers"]["ours"]}
    assert report["peers"]["ours"]["available"] is True
    assert report["peers"]["ours"]["durable"] is True

    rows = report["results"]
    assert {(r["workload"], r["peer"]) for r in rows} == {("W2", "ours"), ("W3", "ours")}
    for r in rows:
        assert r["sanity"] == "ok", r
        assert len(r["sample_transitions_per_s_runs"]) == params["runs"]
        assert len(r["append_items_per_s_runs"]) == params["runs"]
        for key in ("items", "durable", "append_items_per_s_median", "append_total_s",
                    "sample_transitions_per_s_median", "sample_cpu_us_per_batch_median",
                    "sample_ratio_ours_over_peer", "issue_reference_sample_tps",
                    "rss_mb_delta_after_fill", "close_s"):
            assert key in r, key

    restart = report["restart"]
    for phase in ("open", "rebuild"):
        summary = restart[phase]
        assert len(summary["runs"]) == params["restart_runs"]
        assert "open_s_median" in summary, summary
        assert summary["peak_rss_mb_max"] > 0
        assert all(run["size"] == 3000 for run in summary["runs"])
    assert "items_per_s" in restart["rebuild"]
    assert restart["rebuild"]["runs"][0]["rebuild_reason"]

    profile = report["profile"]
    # The step breakdown mirrors Engine.sample through private attributes; if a refactor moved
    # them it reports why instead (the cProfile part never depends on internals).
    if "steps_error" not in profile:
        assert "engine.sample total" in profile["steps_us_median"]
        assert "per_sample_cpu_us" in profile
    assert profile["cprofile_top_tottime"]
    assert report["peak_rss_mb"] > 0
    assert not data_dir.exists()  # cleaned up without --keep-data
