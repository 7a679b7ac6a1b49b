"""A job's plan: the evictions (and drift result) it decided on one snapshot.

`plan_job` is the pure part of a job: a function of a `replaybuf.jobs.snapshot.Snapshot`, the
job file and the run's reference time. `replaybuf.jobs.runner.run_job` applies a `Plan`;
`replaybuf.jobs.scan_process` computes one in a child process and sends it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from replaybuf.jobs.drift import DriftResult, check_drift
from replaybuf.jobs.jobfile import JobSpec
from replaybuf.jobs.snapshot import Snapshot
from replaybuf.v1 import events_pb2

__all__ = ["Eviction", "Plan", "plan_job", "snapshot_needs"]


@dataclass
class Eviction:
    """The items one policy evicts (those not already taken by an earlier policy)."""

    policy: str
    reason: int
    ids: np.ndarray
    detail: str

    @property
    def reason_name(self) -> str:
        return events_pb2.EvictionReason.Name(self.reason)


@dataclass
class Plan:
    """What a job decided on one snapshot.

    ``scan`` says how the snapshot was read (``mode``: ``"thread"`` or ``"process"``; for a
    child process also its ``pid``, ``scan_s``, ``plan_s`` and ``peak_rss_mb``). It is not
    part of the `report`, so both ways log the same events.
    """

    job_id: str
    table: str
    at_lsn: int
    now_ms: int
    items: int
    evictions: list[Eviction]
    drift: DriftResult | None = None
    scan: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "+".join(k for k, on in (("evict", bool(self.evictions) or self.drift is None),
                                        ("drift", self.drift is not None)) if on)

    def by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for ev in self.evictions:
            if ev.ids.size:
                out[ev.reason_name] = out.get(ev.reason_name, 0) + int(ev.ids.size)
        return out

    def report(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "table": self.table, "at_lsn": self.at_lsn,
            "now_ms": self.now_ms, "items": self.items,
            "evictions": [{"policy": e.policy, "reason": e.reason_name, "count": int(e.ids.size),
                           "detail": e.detail} for e in self.evictions],
            "evicted_by_reason": self.by_reason(),
            "drift": None if self.drift is None else self.drift.to_json(),
        }


def snapshot_needs(spec: JobSpec) -> dict[str, Any]:
    """Which optional snapshot columns the job's policies and drift checks read."""

    feats = tuple(f for f in spec.drift.features if f != "reward") if spec.drift else ()
    lsn_windows = bool(spec.drift and (spec.drift.reference_lsn or spec.drift.recent_lsn))
    return {"request_ids": any(p.needs_request_ids for p in spec.policies),
            "payload": any(p.needs_payload for p in spec.policies), "features": feats,
            "append_lsn": lsn_windows,
            "priority_ms": any(p.needs_priority_ms for p in spec.policies)}


def plan_job(spec: JobSpec, snap: Snapshot, *, job_id: str, now_ms: int) -> Plan:
    """Decide the evictions (and drift) of a job on a snapshot. Pure; O(items log items)."""

    taken = np.zeros(len(snap), bool)
    evictions = []
    for policy in spec.policies:
        mask = policy.select(snap, now_ms) & ~taken
        taken |= mask
        evictions.append(Eviction(policy.kind, policy.reason, snap.ids[mask],
                                  f"{policy.kind}: {policy.detail()}"))
    drift = check_drift(snap, spec.drift) if spec.drift is not None else None
    return Plan(job_id, snap.table, snap.lsn, now_ms, len(snap), evictions, drift)
