"""Drift: compare a recent window of items with a reference window, per feature.

Statistics (numpy only):

* Kolmogorov-Smirnov: the largest gap between the two empirical CDFs, in [0, 1].
* PSI (population stability index): ``sum((r - q) * ln(r / q))`` over bins cut at the
  reference window's quantiles, with shares clipped at `PSI_EPSILON`. Rules of thumb:
  < 0.1 stable, 0.1-0.25 moderate, > 0.25 a significant shift.

A feature drifted when either statistic reaches its threshold from the job file's
``[drift]``; any drifted feature (with both windows at least ``min_items`` large) recommends
retraining.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from replaybuf.jobs.jobfile import DriftSpec
from replaybuf.jobs.snapshot import Snapshot

__all__ = ["ks_statistic", "psi", "windows", "check_drift", "DriftResult", "PSI_EPSILON"]

PSI_EPSILON = 1e-4


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (sup |F_a - F_b|). O((n + m) log(n + m))."""

    a = np.sort(np.asarray(a, np.float64).ravel())
    b = np.sort(np.asarray(b, np.float64).ravel())
    if not a.size or not b.size:
        return 0.0
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def psi(reference: np.ndarray, recent: np.ndarray, bins: int = 10) -> float:
    """Population stability index of `recent` against `reference` over quantile bins."""

    ref = np.asarray(reference, np.float64).ravel()
    cur = np.asarray(recent, np.float64).ravel()
    if not ref.size or not cur.size:
        return 0.0
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1))[1:-1])
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
    rs = np.clip(r / ref.size, PSI_EPSILON, None)
    cs = np.clip(c / cur.size, PSI_EPSILON, None)
    return float(np.sum((cs - rs) * np.log(cs / rs)))


def windows(snap: Snapshot, spec: DriftSpec) -> tuple[np.ndarray, np.ndarray, str]:
    """Boolean masks (reference, recent) over the snapshot's items, and how they were cut."""

    if spec.reference_lsn or spec.recent_lsn:
        ref = _between(snap.append_lsn, spec.reference_lsn)
        rec = _between(snap.append_lsn, spec.recent_lsn)
        return ref, rec, f"append LSN {spec.reference_lsn} vs {spec.recent_lsn}"
    if spec.reference_time or spec.recent_time:
        ref = _between(snap.timestamp_ms, spec.reference_time)
        rec = _between(snap.timestamp_ms, spec.recent_time)
        return ref, rec, f"time (ms) {spec.reference_time} vs {spec.recent_time}"
    n = len(snap)
    cut = n - int(round(n * spec.recent_fraction))
    rec = np.zeros(n, bool)
    rec[cut:] = True  # ids increase with appends: the newest items are last
    return ~rec, rec, f"oldest {cut} items vs newest {n - cut}"


def _between(values: np.ndarray, rng: tuple[int, int] | None) -> np.ndarray:
    if rng is None:
        return np.zeros(values.size, bool)
    v = values.astype(np.int64) if values.dtype.kind == "u" else values
    return (v >= rng[0]) & (v <= rng[1])


@dataclass
class DriftResult:
    """Per feature statistics, and whether retraining is recommended."""

    window: str
    reference_items: int
    recent_items: int
    features: dict[str, dict[str, float | bool]]
    retrain: bool
    detail: str

    def statistics(self) -> dict[str, float]:
        """``{"reward.ks": 0.31, "reward.psi": 0.9, ...}`` for RetrainRecommended."""

        return {f"{name}.{k}": float(v) for name, st in self.features.items()
                for k, v in st.items() if k in ("ks", "psi")}

    def to_json(self) -> dict[str, object]:
        return {"window": self.window, "reference_items": self.reference_items,
                "recent_items": self.recent_items, "features": self.features,
                "retrain_recommended": self.retrain, "detail": self.detail}


def check_drift(snap: Snapshot, spec: DriftSpec) -> DriftResult:
    """KS and PSI of rewards and each observation feature, recent vs reference window."""

    ref, rec, how = windows(snap, spec)
    columns: dict[str, np.ndarray] = {}
    for name in spec.features:
        if name == "reward":
            columns["reward"] = snap.reward
        elif name in snap.features:
            mat = snap.features[name]
            for j in range(mat.shape[1]):
                columns[f"{name}[{j}]" if mat.shape[1] > 1 else name] = mat[:, j]
    enough = int(ref.sum()) >= spec.min_items and int(rec.sum()) >= spec.min_items
    out: dict[str, dict[str, float | bool]] = {}
    crossed = []
    for name, col in columns.items():
        a, b = col[ref], col[rec]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        k, p = ks_statistic(a, b), psi(a, b, spec.bins)
        drifted = enough and (k >= spec.ks or p >= spec.psi)
        out[name] = {"ks": round(k, 6), "psi": round(p, 6), "drifted": bool(drifted),
                     "reference_mean": float(a.mean()) if a.size else float("nan"),
                     "recent_mean": float(b.mean()) if b.size else float("nan")}
        if drifted:
            crossed.append(f"{name}: ks={k:.3f} (>= {spec.ks:g}?) psi={p:.3f} "
                           f"(>= {spec.psi:g}?)")
    detail = "; ".join(crossed) if crossed else "no feature crossed a threshold"
    if not enough:
        detail = f"windows smaller than min_items={spec.min_items}; {detail}"
    return DriftResult(how, int(ref.sum()), int(rec.sum()), out, bool(crossed), detail)
