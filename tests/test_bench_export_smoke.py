"""Smoke test of bench/bench_export.py: a tiny run fills a data dir, exports it in child
processes, queries lineage and subscribes, and writes the promised JSON and markdown. No
timings checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "bench" / "bench_export.py"


@pytest.mark.slow
def test_tiny_run_writes_every_promised_json_key_and_reuses_its_fill(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    out = tmp_path / "export.json"
    data_dir = tmp_path / "data"
    cmd = [sys.executable, str(SCRIPT), "--items", "3000", "--append-batch", "500",
           "--small-events", "30", "--runs", "2", "--queries", "20", "--profile",
           "--data-dir", str(data_dir), "--json", str(out)]
    proc = subprocess.run(cmd + ["--keep-data"], capture_output=True, text=True, timeout=600,
                          cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| export | as of | items |" in proc.stdout
    assert out.with_suffix(".md").read_text().strip() == proc.stdout.strip()

    report = json.loads(out.read_text())
    for key in ("benchmark", "schema_version", "argv", "git", "params", "machine", "versions",
                "fill", "export", "lineage", "subscribe", "goals", "profiles", "peak_rss_mb",
                "notes", "duration_s"):
        assert key in report, key
    fill = report["fill"]
    assert fill["present"] == 3000 and fill["appended"] == 3030 and fill["fsync"] == "none"
    assert fill["last_lsn"] == fill["asof_lsn"] + 30 and not fill["reused"]
    for key in ("loadavg_start", "loadavg_end", "nproc", "cpu_model"):
        assert key in report["machine"], key
    rows = {(e["format"], e["as_of"]): e for e in report["export"]}
    assert set(rows) == {(f, a) for f in ("npz", "parquet") for a in ("asof", "latest")}
    for e in rows.values():
        assert e["items"] == 3000 and len(e["runs"]) == 2 and e["same_content_every_run"]
        assert e["items_per_s_median"] > 0 and e["rss_delta_mib_max"] >= 0
        assert e["cpu_s_median"] > 0
        for run in e["runs"]:
            assert run["hwm_reset"] in (True, False) and run["peak_rss_mib"] > 0
    # the same items at both LSNs (only priorities changed after asof): the same ids hashed
    assert rows[("npz", "asof")]["lsn"] == fill["asof_lsn"]
    assert rows[("npz", "latest")]["lsn"] == fill["last_lsn"]
    assert set(report["profiles"]) == {f"{f}-{a}" for f in ("npz", "parquet")
                                       for a in ("asof", "latest")}
    for q in ("get_lineage", "find_by_request_id", "find_by_episode", "find_by_model_version",
              "client_lineage_grpc"):
        assert {"p50_ms", "p99_ms", "max_ms", "runs"} <= set(report["lineage"][q]), q
    sub = report["subscribe"]
    assert sub["whole_log"]["events"] == fill["last_lsn"]
    assert sub["small_event_tail"]["events"] == 30
    assert sub["whole_log"]["events_per_s_median"] > 0

    again = subprocess.run(cmd + ["--runs", "1", "--formats", "npz"], capture_output=True,
                           text=True, timeout=600, cwd=REPO_ROOT)
    assert again.returncode == 0, again.stderr[-4000:]
    assert json.loads(out.read_text())["fill"]["reused"] is True
    assert not data_dir.exists()  # removed without --keep-data
