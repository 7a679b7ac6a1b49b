"""``replaybuf report``: JSON, PNG plots, feedback fidelity, drift and its exit status."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _jobs_helpers import HOUR, NOW, SIG, events_after, job_file, open_engine

from replaybuf.cli import main
from replaybuf.engine import Engine
from replaybuf.jobs.cli import EXIT_RETRAIN
from replaybuf.jobs.report import PLOTS, build_report, fidelity
from replaybuf.table_config import TableConfig


def _fill(engine: Engine, *, shift: float) -> None:
    """200 items: the second 100 with rewards shifted by `shift`; samples, corrections by
    human and model on items 1-10, and a few evictions."""

    rng = np.random.default_rng(0)
    engine.create_table(TableConfig("replay", SIG, capacity=1000))
    for k, mu in enumerate((0.0, shift)):
        n = 100
        engine.append(
            "replay",
            {"obs": rng.normal(size=(n, 2)).astype(np.float32),
             "reward": rng.normal(mu, 1.0, size=n).astype(np.float32)},
            lineage={"model_version": k + 1, "episode_id": np.arange(n) // 10,
                     "timestamp_ms": NOW - (2 - k) * HOUR},
        )
    for seed in range(5):
        engine.sample("replay", 16, seed=seed)
    engine.flush_samples()
    ids = np.arange(1, 11)
    human = np.linspace(-1, 1, 10)
    engine.correct_rewards("replay", ids, human, source="human")
    engine.correct_rewards("replay", ids, human * 0.5 + 0.1, source="model")
    engine.evict("replay", [11, 12], reason="age", job_id="old")
    engine.evict("replay", [13], reason="duplicate", job_id="old")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    with open_engine(tmp_path / "data") as engine:
        _fill(engine, shift=1.5)
    return tmp_path / "data"


def test_report_writes_json_and_png_plots(data_dir: Path, tmp_path: Path) -> None:
    import matplotlib.image

    with open_engine(data_dir) as engine:
        result = build_report(engine, "replay", tmp_path / "out", now_ms=NOW)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report == result.report
    assert report["items"] == 197
    assert report["evicted_by_reason"] == {"EVICTION_REASON_AGE": 2,
                                           "EVICTION_REASON_DUPLICATE": 1}
    assert report["age_hours"]["min"] == pytest.approx(1.0)
    assert report["age_hours"]["max"] == pytest.approx(2.0)
    assert set(report["reward_by_model_version"]) == {"1", "2"}
    assert report["feedback_latency_s"]["count"] > 0
    assert sum(report["times_sampled"].values()) == 197
    assert report["drift"] is None and not result.retrain
    model = report["feedback_fidelity"]["model"]
    assert model["items"] == 10 and model["correlation"] == pytest.approx(1.0)
    assert model["mean_abs_difference"] == pytest.approx(
        np.mean(np.abs(np.linspace(-1, 1, 10) * 0.5 - 0.1)), rel=1e-5)
    assert "rule" not in report["feedback_fidelity"]
    for name in PLOTS:
        image = matplotlib.image.imread(tmp_path / "out" / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_fidelity_compares_each_automated_source_with_humans() -> None:
    out = fidelity({"FEEDBACK_SOURCE_HUMAN": {1: 1.0, 2: 2.0, 3: 3.0},
                    "FEEDBACK_SOURCE_RULE": {2: 2.5, 3: 2.0, 4: 9.0}})
    assert out == {"rule": {"items": 2, "correlation": pytest.approx(-1.0),
                            "mean_abs_difference": pytest.approx(0.75)}}


def test_report_with_drift_exits_3_and_logs_retrain_recommended_once(
        data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = job_file(tmp_path / "drift.toml", "[drift]\nks = 0.2\npsi = 0.25\n")
    args = ["report", "--data-dir", str(data_dir), "--table", "replay", "--out",
            str(tmp_path / "out"), "--job", str(path)]
    with open_engine(data_dir) as engine:
        base = engine.applied_lsn
    assert main(args) == EXIT_RETRAIN
    assert "RETRAIN RECOMMENDED (recorded" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["retrain_recommended"] and report["drift"]["features"]["reward"]["drifted"]
    with open_engine(data_dir) as engine:
        kinds = [k for k, _ in events_after(engine.log, base)]
        assert kinds == ["job_completed", "retrain_recommended"]
        retrain = events_after(engine.log, base)[1][1]
        assert retrain.job_id == f"hygiene:drift@{base}"
        assert retrain.statistics["reward.ks"] >= 0.2
    assert main(args) == EXIT_RETRAIN  # the same state again: nothing new is logged
    assert "already recorded" in capsys.readouterr().out


def test_report_without_drift_exits_0(tmp_path: Path) -> None:
    with open_engine(tmp_path / "data") as engine:
        _fill(engine, shift=0.0)
    path = job_file(tmp_path / "drift.toml", "[drift]\nks = 0.3\npsi = 0.5\n")
    assert main(["report", "--data-dir", str(tmp_path / "data"), "--table", "replay",
                 "--out", str(tmp_path / "out"), "--job", str(path)]) == 0
