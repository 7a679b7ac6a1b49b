"""``replaybuf report``: a table's health as JSON plus PNG plots, drift, feedback fidelity.

Inputs: a snapshot of the view (`replaybuf.jobs.snapshot.from_view`) and one pass over the log
up to the snapshot's LSN (evictions by reason over time, time from append to first sample,
reward corrections by source). Plots use matplotlib's Agg backend (no display needed).

Files written to the output directory: ``report.json``, ``age_hist.png``, ``priority.png``,
``reward_by_model_version.png``, ``evictions_over_time.png``, ``times_sampled.png``,
``feedback_latency.png``.

Feedback fidelity: for items corrected both by a person (HUMAN) and by an automated source
(MODEL, RULE), the last correction of each source is compared: Pearson correlation and mean
absolute difference, per automated source.

Memory: the snapshot's columns plus, from the log, 16 bytes per appended and per sampled item
of the table and one dict entry per corrected item.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from replaybuf.events import decode_event
from replaybuf.jobs.drift import DriftResult, check_drift
from replaybuf.jobs.jobfile import JobSpec
from replaybuf.jobs.runner import snapshot_needs
from replaybuf.jobs.snapshot import Snapshot, from_view
from replaybuf.v1 import events_pb2

__all__ = ["ReportResult", "LogStats", "scan_log", "fidelity", "build_report", "PLOTS"]

PLOTS = ("age_hist.png", "priority.png", "reward_by_model_version.png",
         "evictions_over_time.png", "times_sampled.png", "feedback_latency.png")


@dataclass
class LogStats:
    """What the report reads from the log for one table."""

    evictions: list[tuple[int, str, int]]  # (timestamp_ms, reason name, items)
    latency_ms: np.ndarray  # per sampled item: first sample time - append time
    corrections: dict[str, dict[int, float]]  # FeedbackSource name -> item id -> last reward
    state_lsn: int = 0  # last LSN that is not a job record (JobCompleted, RetrainRecommended)


def scan_log(log: Any, table: str, to_lsn: int, *, progress: bool = False) -> LogStats:
    """One pass over ``log`` from LSN 1 to `to_lsn`, keeping `table`'s events."""

    from tqdm import tqdm

    app_ids: list[np.ndarray] = []
    app_ts: list[np.ndarray] = []
    smp_ids: list[np.ndarray] = []
    smp_ts: list[np.ndarray] = []
    evictions: list[tuple[int, str, int]] = []
    corrections: dict[str, dict[int, float]] = {}
    state_lsn = 0
    if to_lsn >= 1:
        for rec in tqdm(log.read(1, to_lsn), total=to_lsn, desc="log", unit="event",
                        disable=not progress, leave=False):
            ev = decode_event(rec.payload, lsn=rec.lsn)
            kind = ev.WhichOneof("body")
            body = getattr(ev, kind)
            if kind not in ("job_completed", "retrain_recommended"):
                state_lsn = rec.lsn
            if kind == "table_created" or getattr(body, "table", None) != table:
                continue
            if kind == "items_appended":
                ids = np.asarray(body.item_ids, np.uint64)
                app_ids.append(ids)
                app_ts.append(np.full(ids.size, ev.timestamp_ms, np.int64))
            elif kind == "items_sampled":
                ids = np.asarray(body.item_ids, np.uint64)
                smp_ids.append(ids)
                smp_ts.append(np.full(ids.size, ev.timestamp_ms, np.int64))
            elif kind == "items_evicted":
                evictions.append((ev.timestamp_ms, events_pb2.EvictionReason.Name(body.reason),
                                  len(body.item_ids)))
            elif kind == "rewards_corrected":
                src = corrections.setdefault(events_pb2.FeedbackSource.Name(body.source), {})
                src.update(zip(body.item_ids, body.rewards))
    latency = np.empty(0, np.int64)
    if app_ids and smp_ids:
        a_ids, a_ts = np.concatenate(app_ids), np.concatenate(app_ts)
        s_ids, first = np.unique(np.concatenate(smp_ids), return_index=True)
        s_ts = np.concatenate(smp_ts)[first]
        pos = np.minimum(np.searchsorted(a_ids, s_ids), a_ids.size - 1)
        ok = a_ids[pos] == s_ids
        latency = s_ts[ok] - a_ts[pos[ok]]
    return LogStats(evictions, latency, corrections, state_lsn)


def fidelity(corrections: dict[str, dict[int, float]]) -> dict[str, Any]:
    """Agreement of each automated source (MODEL, RULE) with HUMAN on the items both corrected."""

    human = corrections.get("FEEDBACK_SOURCE_HUMAN", {})
    out: dict[str, Any] = {}
    for name in ("FEEDBACK_SOURCE_MODEL", "FEEDBACK_SOURCE_RULE"):
        auto = corrections.get(name, {})
        common = sorted(set(human) & set(auto))
        if not common:
            continue
        h = np.asarray([human[i] for i in common])
        a = np.asarray([auto[i] for i in common])
        corr = None
        if h.size >= 2 and h.std() > 0 and a.std() > 0:
            corr = float(np.corrcoef(h, a)[0, 1])
        out[name[len("FEEDBACK_SOURCE_"):].lower()] = {
            "items": len(common), "correlation": corr,
            "mean_abs_difference": float(np.mean(np.abs(h - a))),
        }
    return out


def _hist(values: np.ndarray, bins: int = 30) -> dict[str, list[float]]:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"counts": [], "edges": []}
    counts, edges = np.histogram(v, bins=bins)
    return {"counts": counts.tolist(), "edges": edges.tolist()}


def _summary(values: np.ndarray) -> dict[str, float | int | None]:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"count": 0, "mean": None, "min": None, "p50": None, "p90": None, "max": None}
    return {"count": int(v.size), "mean": float(v.mean()), "min": float(v.min()),
            "p50": float(np.quantile(v, 0.5)), "p90": float(np.quantile(v, 0.9)),
            "max": float(v.max())}


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def _plots(out: Path, snap: Snapshot, stats: LogStats, now_ms: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig: Any, name: str) -> str:
        fig.subplots_adjust(left=0.14, bottom=0.14, right=0.97, top=0.9)  # no layout engine:
        fig.savefig(out / name, dpi=72)  # tight/constrained layout doubles the render time
        plt.close(fig)
        return name

    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist((now_ms - snap.timestamp_ms) / 3_600_000, bins=30)
    ax.set(title=f"buffer age ({snap.table})", xlabel="age (hours)", ylabel="items")
    written.append(save(fig, "age_hist.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(snap.priority, bins=30)
    ax.set(title="priority distribution", xlabel="raw priority", ylabel="items")
    written.append(save(fig, "priority.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    versions = np.unique(snap.model_version)
    if versions.size:
        ax.boxplot([snap.reward[snap.model_version == v] for v in versions])
        ax.set_xticks(range(1, versions.size + 1), [str(v) for v in versions.tolist()])
    ax.set(title="reward per model version", xlabel="model version", ylabel="reward")
    written.append(save(fig, "reward_by_model_version.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for reason in sorted({r for _, r, _ in stats.evictions}):
        pts = [(t, n) for t, r, n in stats.evictions if r == reason]
        t = (np.asarray([p[0] for p in pts]) - now_ms) / 3_600_000
        ax.step(t, np.cumsum([p[1] for p in pts]), where="post",
                label=reason[len("EVICTION_REASON_"):].lower())
    if stats.evictions:
        ax.legend()
    ax.set(title="evictions by reason", xlabel="hours before the report", ylabel="items (cum.)")
    written.append(save(fig, "evictions_over_time.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ts = snap.times_sampled.astype(np.int64)
    if ts.size:
        ax.bar(*np.unique(ts, return_counts=True))
    ax.set(title="times sampled", xlabel="times sampled", ylabel="items")
    written.append(save(fig, "times_sampled.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(stats.latency_ms / 1000, bins=30)
    ax.set(title="feedback-loop latency (append -> first sample)", xlabel="seconds",
           ylabel="items")
    written.append(save(fig, "feedback_latency.png"))
    return written


@dataclass
class ReportResult:
    """The report as written, and whether drift recommends retraining."""

    report: dict[str, Any]
    retrain: bool
    out: Path
    drift: DriftResult | None = None
    recorded: str = ""  # "recorded", "already recorded" or ""


def build_report(engine: Any, table: str, out: str | Path, *, spec: JobSpec | None = None,
                 now_ms: int | None = None, progress: bool = False,
                 record: bool = True) -> ReportResult:
    """Write the report of `table` to `out`; with a job file's ``[drift]``, check drift and,
    when it recommends retraining, log ``JobCompleted`` + ``RetrainRecommended`` (job id
    ``{job id}:drift@{LSN}``, LSN of the last event that is not itself a job record, so
    re-reporting the same state logs nothing new)."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if now_ms is None:
        now_ms = spec.now_ms if spec is not None and spec.now_ms is not None else int(
            time.time() * 1000)
    engine.describe_table(table)
    needs = snapshot_needs(spec) if spec is not None else {"features": ()}
    snap = from_view(engine.view, table, features=needs["features"], progress=progress)
    stats = scan_log(engine.log, table, snap.lsn, progress=progress)
    drift = check_drift(snap, spec.drift) if spec is not None and spec.drift else None
    by_reason: dict[str, int] = {}
    for _, reason, n in stats.evictions:
        by_reason[reason] = by_reason.get(reason, 0) + n
    versions = np.unique(snap.model_version)
    report: dict[str, Any] = {
        "table": table, "at_lsn": snap.lsn, "now_ms": now_ms, "items": len(snap),
        "age_hours": _summary((now_ms - snap.timestamp_ms) / 3_600_000),
        "age_hist_hours": _hist((now_ms - snap.timestamp_ms) / 3_600_000),
        "priority": _summary(snap.priority), "priority_hist": _hist(snap.priority),
        "reward_by_model_version": {str(v): _summary(snap.reward[snap.model_version == v])
                                    for v in versions.tolist()},
        "times_sampled": {str(k): int(c) for k, c in zip(*np.unique(
            snap.times_sampled.astype(np.int64), return_counts=True))},
        "evicted_by_reason": by_reason,
        "evictions_over_time": [{"timestamp_ms": t, "reason": r, "items": n}
                                for t, r, n in stats.evictions],
        "feedback_latency_s": _summary(stats.latency_ms / 1000),
        "feedback_fidelity": fidelity(stats.corrections),
        "drift": None if drift is None else drift.to_json(),
        "retrain_recommended": bool(drift and drift.retrain),
    }
    report["plots"] = _plots(out, snap, stats, now_ms)
    recorded = ""
    if drift is not None and drift.retrain and record and spec is not None:
        job_id = f"{spec.name}:drift@{stats.state_lsn}"
        if engine.get_job(job_id) is not None:
            recorded = "already recorded"
        else:
            job = events_pb2.JobCompleted(
                job_id=job_id, table=table, at_lsn=snap.lsn, kind="drift",
                report_json=json.dumps(_clean(report["drift"]), sort_keys=True))
            engine.record_job(job, events_pb2.RetrainRecommended(
                table=table, job_id=job_id, detail=drift.detail,
                statistics=drift.statistics()))
            recorded = "recorded"
        report["retrain_job_id"] = job_id
    report = _clean(report)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    return ReportResult(report, bool(drift and drift.retrain), out, drift, recorded)
