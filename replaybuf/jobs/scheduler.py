"""`JobScheduler`: job files with a ``[schedule] every`` run in the server process.

One background thread runs every due job in turn on the server's engine
(`replaybuf.jobs.runner.EngineTarget`; the snapshot is an LMDB read transaction, so serving
goes on, read in a child process by default so that the scan does not hold the server's GIL:
`replaybuf.jobs.scan_process`). A run's id is ``<[job] id>@<UTC time of the run>`` and its reference time is the
wall clock. The first run of a job is one period after `start`. A failed run is logged and
counted; the next one runs on schedule.

Per-table metrics (`metrics`, served in ``TableInfo.metrics`` by DescribeTable and as
Prometheus gauges ``replaybuf_table_<key>``; they reset on restart, the runs stay in the log as
``JobCompleted``):

* ``job_runs``, ``job_failures``, ``job_retrain_recommended``: counts since start.
* ``job_last_run_timestamp_s``, ``job_last_duration_s``, ``job_last_evicted``: the last run.
* ``job_evicted_<reason>``: items evicted by scheduled runs since start, by reason
  (``job_evicted_age``, ...).

Thread-safety: `metrics` and `run_due` may be called from any thread.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from replaybuf.errors import InvalidArgumentError
from replaybuf.jobs.jobfile import JobSpec, load_job
from replaybuf.jobs.runner import EngineTarget, RunResult, run_job

__all__ = ["JobScheduler", "load_scheduled_jobs"]

_logger = logging.getLogger(__name__)


def load_scheduled_jobs(paths: Iterable[str | Path]) -> list[JobSpec]:
    """Job files from files and directories (every ``*.toml`` in a directory, sorted). Each
    needs a ``[schedule] every``."""

    specs = []
    for p in map(Path, paths):
        files = sorted(p.glob("*.toml")) if p.is_dir() else [p]
        for f in files:
            spec = load_job(f)
            if spec.every_ms is None:
                raise InvalidArgumentError(
                    f"job file {f} has no [schedule] every = \"...\"; add one to run it with "
                    f"`replaybuf serve --jobs`, or run it once with `replaybuf jobs run`"
                )
            specs.append(spec)
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InvalidArgumentError(f"job ids {dup} appear in several job files; make them unique")
    return specs


class JobScheduler:
    """Runs scheduled job files on one engine (see the module docstring).

    Args:
        engine: the open `replaybuf.engine.Engine` (the caller closes it after `stop`).
        specs: job files, each with ``every_ms``.
        clock: seconds since the epoch (tests pass a fake one and call `run_due`).
        scan: where runs scan the view (`replaybuf.jobs.runner.SCAN_MODES`).
    """

    def __init__(self, engine: Any, specs: Sequence[JobSpec], *,
                 clock: Callable[[], float] = time.time, scan: str = "process") -> None:
        self._target = EngineTarget(engine, scan=scan)  # checks `scan`
        self._engine = engine
        self._specs = list(specs)
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        start = clock()
        self._due = {s.name: start + (s.every_ms or 0) / 1000 for s in self._specs}
        self._stats: dict[str, dict[str, float]] = {}

    def start(self) -> JobScheduler:
        if self._specs and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="replaybuf-jobs",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the thread after the run in progress (if any). Idempotent."""

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_due()
            with self._lock:
                wait = min(self._due.values()) - self._clock()
            self._stop.wait(min(max(wait, 0.01), 1.0))

    def run_due(self) -> list[RunResult]:
        """Run every job whose time has come; returns their results."""

        out = []
        for spec in self._specs:
            now = self._clock()
            with self._lock:
                if self._stop.is_set() or now < self._due[spec.name]:
                    continue
                self._due[spec.name] = now + (spec.every_ms or 0) / 1000
            result = self._run(spec, now)
            if result is not None:
                out.append(result)
        return out

    def _run(self, spec: JobSpec, now: float) -> RunResult | None:
        stamp = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        job_id = f"{spec.name}@{stamp.isoformat(timespec='milliseconds').replace('+00:00', 'Z')}"
        started = time.monotonic()
        try:
            result = run_job(spec, self._target, job_id=job_id,
                             now_ms=int(now * 1000))
        except Exception:  # noqa: BLE001 - a failed run must not stop the schedule
            _logger.exception("scheduled job %s failed", job_id)
            with self._lock:
                st = self._table_stats(spec.table)
                st["job_failures"] += 1
            return None
        with self._lock:
            st = self._table_stats(spec.table)
            st["job_runs"] += 1
            st["job_last_run_timestamp_s"] = now
            st["job_last_duration_s"] = time.monotonic() - started
            st["job_last_evicted"] = float(sum(result.evicted_by_reason.values()))
            st["job_retrain_recommended"] += float(result.retrain)
            for reason, n in result.evicted_by_reason.items():
                key = "job_evicted_" + reason[len("EVICTION_REASON_"):].lower()
                st[key] = st.get(key, 0.0) + n
        _logger.info("scheduled job %s: evicted %s%s", job_id, result.evicted_by_reason,
                     "; retraining recommended" if result.retrain else "")
        return result

    def _table_stats(self, table: str) -> dict[str, float]:
        st = self._stats.get(table)
        if st is None:
            st = self._stats[table] = dict.fromkeys(
                ("job_runs", "job_failures", "job_retrain_recommended",
                 "job_last_run_timestamp_s", "job_last_duration_s", "job_last_evicted"), 0.0)
        return st

    def metrics(self, table: str) -> dict[str, float]:
        """This table's scheduled-job metrics (empty when no scheduled job names it)."""

        with self._lock:
            if table not in self._stats and all(s.table != table for s in self._specs):
                return {}
            return dict(self._table_stats(table))
