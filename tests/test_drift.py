"""Drift: KS and PSI in numpy, windows, and the retraining recommendation."""

from __future__ import annotations

import numpy as np
import pytest

from replaybuf.jobs.drift import check_drift, ks_statistic, psi
from replaybuf.jobs.jobfile import DriftSpec
from replaybuf.jobs.snapshot import Snapshot
from replaybuf.table_config import TableConfig


def _snapshot(reference: np.ndarray, recent: np.ndarray, obs_shift: float = 0.0) -> Snapshot:
    n = reference.size + recent.size
    rng = np.random.default_rng(7)
    obs = rng.normal(size=(n, 2))
    obs[reference.size:, 1] += obs_shift
    return Snapshot(
        table="t", lsn=n, config=TableConfig("t", {"obs": (np.float32, (2,)),
                                                   "reward": np.float32}, capacity=n),
        ids=np.arange(1, n + 1, dtype=np.uint64), priority=np.ones(n),
        times_sampled=np.zeros(n, np.uint64), reward=np.concatenate([reference, recent]),
        model_version=np.zeros(n, np.int64), episode=np.zeros(n, np.uint64),
        timestamp_ms=np.arange(n, dtype=np.int64), append_lsn=np.arange(1, n + 1,
                                                                          dtype=np.uint64),
        features={"obs": obs},
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identical_distributions_stay_quiet(seed: int) -> None:
    rng = np.random.default_rng(seed)
    snap = _snapshot(rng.normal(size=2000), rng.normal(size=2000))
    result = check_drift(snap, DriftSpec())
    assert not result.retrain, result.detail
    assert result.features["reward"]["ks"] < 0.1
    assert result.features["reward"]["psi"] < 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_shifted_reward_distribution_recommends_retraining(seed: int) -> None:
    rng = np.random.default_rng(seed)
    snap = _snapshot(rng.normal(size=2000), rng.normal(0.8, 1.0, size=2000))
    result = check_drift(snap, DriftSpec())
    assert result.retrain
    assert result.features["reward"]["drifted"]
    assert not result.features["obs[0]"]["drifted"]
    assert result.statistics()["reward.ks"] >= 0.2


def test_a_shifted_observation_feature_is_named() -> None:
    rng = np.random.default_rng(3)
    snap = _snapshot(rng.normal(size=1000), rng.normal(size=1000), obs_shift=1.0)
    result = check_drift(snap, DriftSpec())
    assert result.retrain
    assert result.features["obs[1]"]["drifted"] and not result.features["obs[0]"]["drifted"]
    assert "obs[1]" in result.detail


def test_windows_by_lsn_range() -> None:
    rng = np.random.default_rng(4)
    snap = _snapshot(rng.normal(size=500), rng.normal(3.0, 1.0, size=500))
    same = check_drift(snap, DriftSpec(reference_lsn=(1, 250), recent_lsn=(251, 500)))
    assert (same.reference_items, same.recent_items) == (250, 250)
    assert not same.retrain
    shifted = check_drift(snap, DriftSpec(reference_lsn=(1, 500), recent_lsn=(501, 1000)))
    assert shifted.retrain


def test_small_windows_never_recommend_retraining() -> None:
    snap = _snapshot(np.zeros(5), np.ones(5))
    assert not check_drift(snap, DriftSpec(min_items=20)).retrain


def test_ks_matches_a_brute_force_reference() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=50), rng.normal(0.3, size=70)
    grid = np.concatenate([a, b])
    brute = max(abs((a <= x).mean() - (b <= x).mean()) for x in grid)
    assert ks_statistic(a, b) == pytest.approx(brute)
    assert ks_statistic(a, a) == 0.0
    assert ks_statistic(np.zeros(3), np.ones(3)) == 1.0


def test_psi_is_zero_for_identical_samples_and_grows_with_the_shift() -> None:
    rng = np.random.default_rng(6)
    ref = rng.normal(size=5000)
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    small, large = psi(ref, ref + 0.1), psi(ref, ref + 1.0)
    assert 0 < small < 0.1 < 0.25 < large
