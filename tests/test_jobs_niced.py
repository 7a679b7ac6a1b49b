"""A job's evictions on a lower-priority thread (`replaybuf.jobs.niced`,
`EngineTarget(evict_nice=...)`): the thread really runs at that niceness, results and errors
reach the caller, and the evictions logged are the same as on the job's own thread. The
pause after each evict call (`EngineTarget(evict_duty=...)`) logs the same events too."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _jobs_helpers import (  # buffer_dir, engine: fixtures
    NOW, buffer_dir, engine, events_after,
)

from replaybuf.engine import Engine, EngineConfig
from replaybuf.errors import InvalidArgumentError, TableNotFoundError
from replaybuf.jobs import EngineTarget, parse_job, run_job, runner
from replaybuf.jobs.jobfile import tomllib
from replaybuf.jobs.niced import PER_THREAD_NICE, call_niced

NICE = 10  # a niceness to evict at (`EngineTarget` evicts at 0 unless told)
needs_thread_nice = pytest.mark.skipif(not PER_THREAD_NICE,
                                       reason="per-thread niceness is Linux only")

JOB = f"""[job]
id = "hygiene"
table = "replay"
now = {NOW}
[[evict]]
policy = "max_age"
max_age = "7d"
[[evict]]
policy = "times_sampled"
at_least = 3
"""


def _niceness() -> tuple[int, int]:
    tid = threading.get_native_id()
    return tid, os.getpriority(os.PRIO_PROCESS, tid)


@needs_thread_nice
@pytest.mark.parametrize("nice", [1, 7, 30])
def test_call_niced_runs_on_a_thread_at_that_niceness(nice: int) -> None:
    tid, base = _niceness()
    got_tid, got = call_niced(_niceness, nice)
    assert got_tid != tid
    assert got == min(19, base + nice)
    assert _niceness() == (tid, base)  # the caller's thread keeps its priority


def test_call_niced_zero_runs_on_the_calling_thread() -> None:
    assert call_niced(_niceness, 0) == _niceness()


@pytest.mark.parametrize("nice", [0, 5])
def test_call_niced_raises_the_calls_error(nice: int) -> None:
    err = TableNotFoundError("no table 'x'")

    def fail() -> None:
        raise err

    with pytest.raises(TableNotFoundError) as got:
        call_niced(fail, nice)
    assert got.value is err


class _NicenessEngine(Engine):
    """The real engine, noting the thread and niceness each `evict` runs at."""

    seen: list[tuple[int, int]]

    def evict(self, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(_niceness())
        return super().evict(*args, **kwargs)


def _run(path: Path, evict_nice: int) -> tuple[list[tuple[int, int]], list[Any], Any]:
    with _NicenessEngine(path, EngineConfig.for_tests(seed=0)) as eng:
        eng.seen = []
        base = eng.applied_lsn
        done = run_job(parse_job(tomllib.loads(JOB)),
                       EngineTarget(eng, scan="thread", evict_nice=evict_nice))
        assert done.status == "done"
        return eng.seen, events_after(eng.log, base), done.evicted_by_reason


@needs_thread_nice
def test_engine_target_evicts_at_evict_nice_with_the_same_events(
        buffer_dir: Path, tmp_path: Path) -> None:
    runs = {}
    for nice in (0, NICE):
        shutil.copytree(buffer_dir, tmp_path / f"data-{nice}")
        runs[nice] = _run(tmp_path / f"data-{nice}", nice)
    tid, base = _niceness()
    assert runs[0][0] and all(s == (tid, base) for s in runs[0][0])
    assert runs[NICE][0] and all(t != tid and n == min(19, base + NICE)
                                       for t, n in runs[NICE][0])
    # The same ItemsEvicted events (the JobCompleted differs only in its duration).
    evicted = [[e for e in runs[n][1] if e[0] == "items_evicted"] for n in (0, NICE)]
    assert evicted[0] and evicted[0] == evicted[1]
    assert [e[0] for e in runs[0][1]] == [e[0] for e in runs[NICE][1]]
    assert runs[0][2] == runs[NICE][2] and sum(runs[0][2].values()) > 0


def test_engine_target_evict_error_reaches_the_caller(engine: Engine) -> None:
    target = EngineTarget(engine, evict_nice=NICE)
    with pytest.raises(TableNotFoundError, match="nope"):
        target.evict("nope", np.array([1], np.uint64), reason=1, job_id="j", detail="")
    assert target.evict("replay", np.array([1, 10**9], np.uint64), reason=1, job_id="j",
                        detail="") == 1


@pytest.mark.parametrize("bad", [-1, 20, "3", 2.0])
def test_engine_target_rejects_bad_evict_nice(engine: Engine, bad: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=f"evict_nice is {bad!r}; give 0"):
        EngineTarget(engine, evict_nice=bad)


# -- the pause after each evict call (EngineTarget(evict_duty=...)) ---------------------------


def _run_paced(path: Path, duty: float, monkeypatch: pytest.MonkeyPatch,
               batch: int) -> tuple[list[float], list[Any], Any]:
    """Run JOB with evict calls of `batch` ids; the pauses the target asked for, the events
    logged and the counts by reason."""

    pauses: list[float] = []
    monkeypatch.setattr(runner, "_pause", pauses.append)
    monkeypatch.setattr(runner, "EVICT_BATCH", batch)
    with Engine(path, EngineConfig.for_tests(seed=0)) as eng:
        base = eng.applied_lsn
        done = run_job(parse_job(tomllib.loads(JOB)),
                       EngineTarget(eng, scan="thread", evict_duty=duty))
        assert done.status == "done"
        events = events_after(eng.log, base)
    monkeypatch.undo()
    return pauses, events, done.evicted_by_reason


def test_engine_target_pauses_after_each_evict_call_and_logs_the_same_events(
        buffer_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = {}
    for duty in (1.0, 0.25):
        shutil.copytree(buffer_dir, tmp_path / f"data-{duty}")
        runs[duty] = _run_paced(tmp_path / f"data-{duty}", duty, monkeypatch, batch=2)
    calls = [sum(e[0] == "items_evicted" for e in runs[d][1]) for d in (1.0, 0.25)]
    assert calls[0] >= 2 and calls[0] == calls[1]
    assert runs[1.0][0] == []  # duty 1: no pause
    assert len(runs[0.25][0]) == calls[1] and all(p > 0 for p in runs[0.25][0])
    evicted = [[e for e in runs[d][1] if e[0] == "items_evicted"] for d in (1.0, 0.25)]
    assert evicted[0] == evicted[1]
    assert runs[1.0][2] == runs[0.25][2] and sum(runs[1.0][2].values()) > 0


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, float("nan"), "0.5", True])
def test_engine_target_rejects_bad_evict_duty(engine: Engine, bad: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=f"evict_duty is {bad!r}; give a share"):
        EngineTarget(engine, evict_duty=bad)
