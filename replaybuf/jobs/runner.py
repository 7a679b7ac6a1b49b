"""Running a job: snapshot -> plan (pure) -> evictions -> ``JobCompleted``.

A job's decisions are a pure function of a `Snapshot` at one LSN, the job file and the run's
reference time (`plan_job`). `run_job` applies a plan through a *target*: `EngineTarget` (an
in-process engine: a stopped data dir, or the server's own engine for scheduled jobs) or
`ClientTarget` (a server, through `replaybuf_client.ReplayClient`). Both log the same events for the same state: one
``ItemsEvicted`` per policy with matches and per `EVICT_BATCH` ids (in file order, reason and
job id set), then
``JobCompleted`` (and ``RetrainRecommended`` when a drift check crossed a threshold).

Idempotence: a run whose job id was already recorded does nothing and reports the LSN of the
snapshot the recorded run used. A run that died between its evictions and its record can be
re-run with the same id: evicting absent items is a no-op.

Example::

    from replaybuf.jobs import EngineTarget, load_job, run_job
    result = run_job(load_job("evict.toml"), EngineTarget(engine))
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from replaybuf.errors import AlreadyExistsError, InvalidArgumentError, UnimplementedError
from replaybuf.jobs.jobfile import JobSpec
from replaybuf.jobs.niced import call_niced
from replaybuf.jobs.plan import Eviction, Plan, plan_job, snapshot_needs
from replaybuf.jobs.scan_process import SCAN_NICE, plan_in_process
from replaybuf.jobs.snapshot import Snapshot, from_events, from_export, from_view
from replaybuf.v1 import events_pb2

__all__ = ["EVICT_BATCH", "EVICT_DUTY", "EVICT_NICE", "SCAN_MODES", "Eviction", "Plan", "RunResult", "Target",
           "EngineTarget", "ClientTarget", "plan_job", "run_job", "snapshot_needs"]


#: Most ids per Evict call (one ``ItemsEvicted`` event each, online and offline alike). Small
#: enough that each call holds the engine's locks briefly, so learners sampling during a run
#: wait little (at 100,000 their p99 latency doubled in bench/bench_hygiene.py; evictions/s
#: did not change from 2,000 to 100,000), and far below the 64 MiB message limit.
EVICT_BATCH = 5_000

#: Default niceness of the thread on which `EngineTarget` evicts (`replaybuf.jobs.niced`);
#: 0: the calling thread. Off by default: in bench/bench_hygiene.py at 1M (load 2-2.4 on 2
#: cores) niceness 10 did not lower the learners' p99 during a real run (ratios 1.80-2.80
#: against 2.09-2.99 at 0, 4 interleaved pairs), and the niced thread holds the writer lock
#: longer when the cores are busy (bench/RESULTS.md, hygiene).
EVICT_NICE = 0

#: Default share of its wall time that `EngineTarget` spends in evict calls: after each call
#: it sleeps ``(1 - duty) / duty`` times as long as the call took (1/3: twice as long), so
#: that learners sampling from the same engine run between calls with the GIL, the table's
#: lock and the cores to themselves. A call of `EVICT_BATCH` ids writes the view for tens of
#: ms, dropping and retaking the GIL around every LMDB call, and a learner that needs the GIL
#: or the table then waits (bench/RESULTS.md, hygiene). Costs eviction throughput in
#: proportion: at most ``duty`` times the unpaced evictions/s. 1.0: no pause (offline runs on
#: a stopped data dir, where no learner shares the process, use it). 1/3 rather than 0.5:
#: at 1M W2 items, 4 interleaved pairs of real runs gave a learner p99 of 0.76-1.46x of idle
#: at 1/3 against 1.43-2.20x at 0.5, for 20-25k against 27-35k evictions/s.
EVICT_DUTY = 1 / 3

_pause = time.sleep  # EngineTarget's pause between evict calls (tests record it)

#: Where `EngineTarget` scans and plans: ``"process"`` (a child process,
#: `replaybuf.jobs.scan_process`; the engine's learners keep its GIL) or ``"thread"`` (the
#: calling thread, in the engine's process).
SCAN_MODES = ("process", "thread")


@dataclass
class RunResult:
    """Outcome of `run_job`: status is ``"done"``, ``"dry-run"`` or ``"already-ran"``."""

    status: str
    job_id: str
    plan: Plan | None = None
    job: events_pb2.JobCompleted | None = None
    evicted_by_reason: dict[str, int] = field(default_factory=dict)
    retrain: bool = False
    lsns: tuple[int, int] = (0, 0)

    @property
    def at_lsn(self) -> int:
        return int(self.job.at_lsn) if self.job is not None else (
            self.plan.at_lsn if self.plan else 0)


class Target(Protocol):
    """Where a job reads its snapshot (and plans) and writes its events."""

    def get_job(self, job_id: str) -> events_pb2.JobCompleted | None: ...
    def plan(self, spec: JobSpec, *, job_id: str, now_ms: int, progress: bool) -> Plan: ...
    def snapshot(self, table: str, *, request_ids: bool, payload: bool,
                 features: tuple[str, ...], append_lsn: bool, priority_ms: bool,
                 progress: bool) -> Snapshot: ...
    def evict(self, table: str, ids: np.ndarray, *, reason: int, job_id: str,
              detail: str) -> int: ...
    def record_job(self, job: events_pb2.JobCompleted,
                   retrain: events_pb2.RetrainRecommended | None) -> tuple[int, int]: ...


def _plan_here(target: Target, spec: JobSpec, *, job_id: str, now_ms: int,
               progress: bool) -> Plan:
    snap = target.snapshot(spec.table, progress=progress, **snapshot_needs(spec))
    plan = plan_job(spec, snap, job_id=job_id, now_ms=now_ms)
    plan.scan = {"mode": "thread"}
    return plan


class EngineTarget:
    """An in-process `replaybuf.engine.Engine`: snapshot from its LMDB view (which always has
    append LSNs and priority times).

    Args:
        engine: the open engine.
        scan: where `plan` scans the view and plans (`SCAN_MODES`). ``"process"`` (default):
            a child process that reads the view read-only and sends back the plan
            (`replaybuf.jobs.scan_process`), so that learners sampling from this engine keep
            their latency while a job runs; costs about a second to start. ``"thread"``: in
            the calling thread (no child; for a stopped data dir, or where no child process
            can be started). Both give the same plan and log the same events.
        scan_nice: niceness added to the child process (0-19; `SCAN_NICE`): higher leaves
            more CPU to the engine's threads when the cores are busy, and scans slower then.
        evict_nice: niceness of a thread each `evict` call runs on (0-19; `EVICT_NICE`;
            Linux, elsewhere the calling thread), so that with the cores busy the engine's
            learners get them first. It holds the engine's writer lock meanwhile, so appends
            wait for it as for any eviction. 0 (default): on the calling thread.
        evict_duty: share of the evicting time spent in evict calls, in (0, 1] (`EVICT_DUTY`):
            after each call, a pause of ``(1 - evict_duty) / evict_duty`` times its duration,
            so that the engine's learners keep their sample latency. 1.0: no pause.
    """

    def __init__(self, engine: Any, *, scan: str = "process", scan_nice: int = SCAN_NICE,
                 evict_nice: int = EVICT_NICE, evict_duty: float = EVICT_DUTY) -> None:
        if scan not in SCAN_MODES:
            raise InvalidArgumentError(
                f"scan is {scan!r}; use one of {', '.join(map(repr, SCAN_MODES))}")
        for name, nice in (("scan_nice", scan_nice), ("evict_nice", evict_nice)):
            if not (isinstance(nice, int) and 0 <= nice <= 19):
                raise InvalidArgumentError(
                    f"{name} is {nice!r}; give 0 (the engine's priority) to 19 (lowest)")
        if not (isinstance(evict_duty, (int, float)) and not isinstance(evict_duty, bool)
                and math.isfinite(evict_duty) and 0 < evict_duty <= 1):
            raise InvalidArgumentError(
                f"evict_duty is {evict_duty!r}; give a share in (0, 1]: 1.0 evicts without "
                f"pausing, 0.5 pauses after each evict call as long as the call took")
        self.engine = engine
        self.scan = scan
        self.scan_nice = scan_nice
        self.evict_nice = evict_nice
        self.evict_duty = float(evict_duty)

    def plan(self, spec: JobSpec, *, job_id: str, now_ms: int, progress: bool = False) -> Plan:
        """Snapshot the table and plan the job, where `scan` says."""

        if self.scan == "thread":
            return _plan_here(self, spec, job_id=job_id, now_ms=now_ms, progress=progress)
        self.engine.describe_table(spec.table)  # TableNotFoundError before starting a child
        return plan_in_process(self.engine.view.path, spec, job_id=job_id, now_ms=now_ms,
                               progress=progress, nice=self.scan_nice)

    def get_job(self, job_id: str) -> events_pb2.JobCompleted | None:
        return self.engine.get_job(job_id)  # type: ignore[no-any-return]

    def snapshot(self, table: str, *, request_ids: bool, payload: bool,
                 features: tuple[str, ...], append_lsn: bool = True,
                 priority_ms: bool = True, progress: bool = False) -> Snapshot:
        self.engine.describe_table(table)  # TableNotFoundError with the engine's message
        return from_view(self.engine.view, table, request_ids=request_ids, payload=payload,
                         features=features, progress=progress)

    def evict(self, table: str, ids: np.ndarray, *, reason: int, job_id: str,
              detail: str) -> int:
        """One Evict call, then the pause of `evict_duty`."""

        started = time.monotonic()
        n = int(call_niced(lambda: self.engine.evict(
            table, ids, reason=reason, job_id=job_id, detail=detail).evicted, self.evict_nice))
        if self.evict_duty < 1.0:
            took = time.monotonic() - started
            _pause(took * (1.0 - self.evict_duty) / self.evict_duty)
        return n

    def record_job(self, job: events_pb2.JobCompleted,
                   retrain: events_pb2.RetrainRecommended | None) -> tuple[int, int]:
        return self.engine.record_job(job, retrain)  # type: ignore[no-any-return]


class ClientTarget:
    """A server through `replaybuf_client.ReplayClient`.

    The snapshot is the server's Export stream at its applied LSN
    (`replaybuf.jobs.snapshot.from_export`; memory-bounded on the server). The stream carries
    neither append LSNs nor priority times, so when the job needs them (drift windows by LSN;
    ``low_priority``), or the server has no Export, it replays the server's log through
    Subscribe instead (without follow, so it ends at the server's applied LSN) with the view's
    rules (`replaybuf.jobs.snapshot.from_events`; client memory O(items ever appended)).
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def get_job(self, job_id: str) -> events_pb2.JobCompleted | None:
        return self.client.get_job(job_id)  # type: ignore[no-any-return]

    def plan(self, spec: JobSpec, *, job_id: str, now_ms: int, progress: bool = False) -> Plan:
        """Snapshot the table through the server and plan the job in this process."""

        return _plan_here(self, spec, job_id=job_id, now_ms=now_ms, progress=progress)

    def snapshot(self, table: str, *, request_ids: bool, payload: bool,
                 features: tuple[str, ...], append_lsn: bool = True,
                 priority_ms: bool = True, progress: bool = False) -> Snapshot:
        self.client.describe_table(table)  # TableNotFoundError before a long scan
        if not append_lsn and not priority_ms and hasattr(self.client, "export_stream"):
            try:
                return from_export(self.client.export_stream(table), table,
                                   request_ids=request_ids, payload=payload,
                                   features=features)
            except UnimplementedError:
                pass  # an older server: replay its log instead

        def events() -> Iterator[tuple[int, events_pb2.Event]]:
            from tqdm import tqdm

            with self.client.subscribe(1, follow=False) as sub, tqdm(
                    desc=f"replay {table}", unit="event", disable=not progress,
                    leave=False) as bar:
                for lsn, ev in sub:
                    bar.update(1)
                    yield lsn, ev

        return from_events(events(), table, request_ids=request_ids, payload=payload,
                           features=features)

    def evict(self, table: str, ids: np.ndarray, *, reason: int, job_id: str,
              detail: str) -> int:
        return int(self.client.evict(table, ids, reason=reason, job_id=job_id,
                                     detail=detail).evicted)

    def record_job(self, job: events_pb2.JobCompleted,
                   retrain: events_pb2.RetrainRecommended | None) -> tuple[int, int]:
        return self.client.record_job(job, retrain)  # type: ignore[no-any-return]


def run_job(spec: JobSpec, target: Target, *, job_id: str | None = None, dry_run: bool = False,
            now_ms: int | None = None, progress: bool = False) -> RunResult:
    """Run a job once: skip if its id was recorded, else snapshot, plan, evict, record.

    Args:
        job_id: the run's id (default ``spec.name``).
        dry_run: plan and report only; nothing is logged.
        now_ms: reference time (default ``spec.now_ms``, else the wall clock).
    """

    started = time.monotonic()
    job_id = job_id or spec.name
    old = target.get_job(job_id)
    if old is not None:
        return RunResult("already-ran", job_id, job=old)
    if now_ms is None:
        now_ms = spec.now_ms if spec.now_ms is not None else int(time.time() * 1000)
    plan = target.plan(spec, job_id=job_id, now_ms=now_ms, progress=progress)
    retrain = bool(plan.drift and plan.drift.retrain)
    if dry_run:
        return RunResult("dry-run", job_id, plan=plan, evicted_by_reason=plan.by_reason(),
                         retrain=retrain)
    counts: dict[str, int] = {}
    for ev in plan.evictions:
        for start in range(0, ev.ids.size, EVICT_BATCH):
            n = target.evict(spec.table, ev.ids[start : start + EVICT_BATCH], reason=ev.reason,
                             job_id=job_id, detail=ev.detail)
            counts[ev.reason_name] = counts.get(ev.reason_name, 0) + n
    report = plan.report()
    report["evicted_by_reason"] = counts
    job = events_pb2.JobCompleted(
        job_id=job_id, table=spec.table, at_lsn=plan.at_lsn, kind=plan.kind,
        evicted_by_reason=counts, duration_s=time.monotonic() - started,
        report_json=json.dumps(report, sort_keys=True, default=str))
    rec = None
    if retrain:
        assert plan.drift is not None
        rec = events_pb2.RetrainRecommended(table=spec.table, job_id=job_id,
                                            detail=plan.drift.detail,
                                            statistics=plan.drift.statistics())
    try:
        lsns = target.record_job(job, rec)
    except AlreadyExistsError:  # a concurrent run with the same id recorded first
        return RunResult("already-ran", job_id, plan=plan, job=target.get_job(job_id))
    return RunResult("done", job_id, plan=plan, job=job, evicted_by_reason=counts,
                     retrain=retrain, lsns=lsns)
