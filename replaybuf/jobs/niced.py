"""Run a call on a thread of lower CPU priority (Linux per-thread niceness).

A job's evictions run in the engine's process, next to the learners sampling from it; on a
machine whose cores are busy the evicting thread competes with them for the cores. Linux
schedules threads, not processes, so a thread can take a higher niceness for itself. A
niceness can be raised but not lowered again without privileges, so each call gets a fresh
thread that ends with it. `EngineTarget(evict_nice=...)` uses it; off by default, as the
benchmark showed no reliable gain (bench/RESULTS.md, hygiene).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["call_niced", "PER_THREAD_NICE"]

T = TypeVar("T")

#: Whether `call_niced` can lower a thread's priority here (Linux: ``setpriority`` on a
#: thread id). Elsewhere it calls on the calling thread at its priority.
PER_THREAD_NICE = sys.platform.startswith("linux") and hasattr(os, "setpriority")


def call_niced(fn: Callable[[], T], nice: int) -> T:
    """``fn()`` on a new thread whose niceness is `nice` above the caller's process (at most
    19); returns its result or raises its exception. ``nice == 0`` (or no per-thread
    niceness on this platform): on the calling thread. The caller waits for the call."""

    if nice <= 0 or not PER_THREAD_NICE:
        return fn()
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            tid = threading.get_native_id()
            try:
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(
                    os.PRIO_PROCESS, tid) + nice))
            except OSError:  # e.g. a sandbox without setpriority: run at the same priority
                pass
            out.append(fn())
        except BaseException as exc:  # handed to the caller
            err.append(exc)

    th = threading.Thread(target=run, name="replaybuf-job-niced", daemon=True)
    th.start()
    th.join()
    if err:
        raise err[0]
    return out[0]
