#!/usr/bin/env python
"""The floor of group commit with Python threads on this machine (issue 2's 1.5x goal).

Issue 2 asks `FileLog`'s ``group`` policy with many concurrent writers to cost at most 1.5x a
plain ``os.write + os.fdatasync`` loop per sync (commit cycle p50 over the raw loop's p50, as
`bench_log.py` reports it). This script measures, interleaved on the same disk, three things:

* ``raw``: the plain loop (one thread, 4 KiB write + fdatasync): p50 per sync;
* ``bare``: the least any thread-based group commit in CPython can do: W writer threads each
  append 100 B under one lock and wait on a private lock; one committer thread takes the queue,
  ``writev``s it, fdatasyncs and releases the group's writers. No framing, CRC, LSNs, dedup or
  error handling. Its commit cycle p50 (fdatasync start to the next one's) over raw's p50 is
  the ratio no Python-thread log can beat here;
* ``filelog``: `replaybuf.file_log.FileLog` (``group``) with the same W writer threads, once
  per committer (`FileLogConfig.committer`): ``python`` (a Python committer thread, bound by
  the floor above) and ``native`` (a numba loop that fdatasyncs without the GIL,
  `replaybuf.native_commit`). The native loop's fdatasyncs are timed by the loop itself
  (`NativeCommit.trace`), the others by wrapping `os.fdatasync`.

Usage::

    .venv/bin/python bench/bench_group_floor.py --writers 16 --runs 5 --seconds 1
    .venv/bin/python bench/bench_group_floor.py --committers python   # the Python one only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_log import raw_sync_cost  # noqa: E402

PAYLOAD = b"x" * 100


def _run_writers(writer: Any, writers: int, *args: Any) -> float:
    """Run ``writer(i, *args)`` on `writers` threads at once; their wall time in seconds."""

    ts = [threading.Thread(target=writer, args=(i, *args)) for i in range(writers)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def _cycle_p50(starts: list[float]) -> float:
    return statistics.median(b - a for a, b in zip(starts, starts[1:])) * 1e6


def bare_group(directory: Path, writers: int, seconds: float) -> dict[str, Any]:
    """The bare pattern described in the module docstring."""

    path = Path(tempfile.mkdtemp(prefix="bare-", dir=directory)) / "bare.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    lock = threading.Lock()
    work = threading.Condition(lock)
    queue: list[bytes] = []
    waiters: list[threading.Lock] = []
    starts: list[float] = []
    stop = threading.Event()
    counts = [0] * writers

    def committer() -> None:
        while True:
            with lock:
                while not queue and not stop.is_set():
                    work.wait(0.05)
                if not queue and stop.is_set():
                    return
                bufs, group = queue[:], waiters[:]
                queue.clear()
                waiters.clear()
            os.writev(fd, bufs)
            starts.append(time.perf_counter())
            os.fdatasync(fd)
            for w in group:
                w.release()

    def writer(i: int, deadline: float) -> None:
        n = 0
        while time.perf_counter() < deadline:
            w = threading.Lock()
            w.acquire()
            with lock:
                queue.append(PAYLOAD)
                waiters.append(w)
                work.notify()
            w.acquire()
            n += 1
        counts[i] = n

    c = threading.Thread(target=committer)
    c.start()
    wall = _run_writers(writer, writers, time.perf_counter() + seconds)
    stop.set()
    c.join()
    os.close(fd)
    shutil.rmtree(path.parent, ignore_errors=True)
    return {"appends_per_s": sum(counts) / wall, "syncs": len(starts),
            "appends_per_sync": sum(counts) / max(1, len(starts)),
            "us_cycle_p50": _cycle_p50(starts)}


def filelog_group(directory: Path, writers: int, seconds: float,
                  committer: str = "python") -> dict[str, Any]:
    from replaybuf.file_log import FileLog, FileLogConfig
    from replaybuf.native_commit import NativeCommit

    tmp = Path(tempfile.mkdtemp(prefix="filelog-", dir=directory))
    log = FileLog(tmp / "log", FileLogConfig(fsync="group", committer=committer))
    commit = log._commit  # noqa: SLF001 - the benchmark reads the loop's own sync timings
    native = isinstance(commit, NativeCommit)
    if native:
        commit.trace(1 << 20)
    starts: list[float] = []
    real = os.fdatasync

    def timed(fd: int) -> None:
        starts.append(time.perf_counter())
        real(fd)

    counts = [0] * writers
    deadline = time.perf_counter() + seconds

    def writer(i: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            log.append([PAYLOAD])
            n += 1
        counts[i] = n

    os.fdatasync = timed  # type: ignore[assignment]
    try:
        wall = _run_writers(writer, writers)
    finally:
        os.fdatasync = real  # type: ignore[assignment]
        loop = [t[0] for t in commit.traced()] if native else []
        compiled = commit.compiled if native else None
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    python_syncs = len(starts)
    starts = sorted(starts + loop)
    return {"appends_per_s": sum(counts) / wall, "syncs": len(starts),
            "loop_syncs": len(loop), "python_syncs": python_syncs, "compiled": compiled,
            "appends_per_sync": sum(counts) / max(1, len(starts)),
            "us_cycle_p50": _cycle_p50(starts)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writers", type=int, default=16)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent / "out")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--committers", default="native,python",
                   help="FileLog committers to run, comma-separated (native, python); the "
                        "first is reported as 'filelog' in the JSON, the others as "
                        "'filelog_<name>'")
    args = p.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    committers = [c for c in args.committers.split(",") if c]
    if "native" in committers:
        from replaybuf.native_commit import kernel_ready

        t0 = time.perf_counter()
        ok = kernel_ready(120)
        print(f"native loop {'loaded' if ok else 'NOT compiled (runs as Python)'} in "
              f"{time.perf_counter() - t0:.2f} s", flush=True)
    names = {c: "filelog" if i == 0 else f"filelog_{c}" for i, c in enumerate(committers)}
    rows: list[dict[str, Any]] = []
    for r in range(args.runs):
        raw = raw_sync_cost(args.dir, args.seconds)["us_per_sync_p50"]
        bare = bare_group(args.dir, args.writers, args.seconds)
        row: dict[str, Any] = {"raw_us_p50": raw, "bare": bare,
                               "bare_ratio": bare["us_cycle_p50"] / raw}
        line = (f"run {r + 1}: raw p50 {raw:.0f} us; bare cycle {bare['us_cycle_p50']:.0f} us "
                f"({row['bare_ratio']:.2f}x, {bare['appends_per_sync']:.1f} appends/sync)")
        # Alternate the committers' order from run to run (a drifting disk favours neither).
        for committer in committers if r % 2 == 0 else committers[::-1]:
            flog = filelog_group(args.dir, args.writers, args.seconds, committer)
            flog["committer"] = committer
            row[names[committer]] = flog
            row[f"{names[committer]}_ratio"] = flog["us_cycle_p50"] / raw
        for committer in committers:
            flog = row[names[committer]]
            line += (f"; FileLog {committer} cycle {flog['us_cycle_p50']:.0f} us "
                     f"({row[f'{names[committer]}_ratio']:.2f}x, "
                     f"{flog['appends_per_sync']:.1f} appends/sync, "
                     f"{flog['appends_per_s']:.0f} appends/s)")
        rows.append(row)
        print(line, flush=True)
    med = {k: statistics.median(r[k] for r in rows)
           for k in ("raw_us_p50", "bare_ratio", "filelog_ratio")}
    by_committer = {
        c: {"ratio": statistics.median(r[f"{names[c]}_ratio"] for r in rows),
            "appends_per_s": statistics.median(r[names[c]]["appends_per_s"] for r in rows),
            "appends_per_sync": statistics.median(r[names[c]]["appends_per_sync"] for r in rows)}
        for c in committers}
    summary = "; ".join(
        f"FileLog group ({c} committer) {m['ratio']:.2f}x raw, {m['appends_per_s']:.0f} "
        f"appends/s, {m['appends_per_sync']:.1f} appends/sync" for c, m in by_committer.items())
    print(f"\nmedian of {args.runs}, {args.writers} writers: raw p50 {med['raw_us_p50']:.0f} us; "
          f"bare Python-thread group commit {med['bare_ratio']:.2f}x raw; {summary} "
          f"(goal <= 1.5); load average {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"writers": args.writers, "committers": committers,
                                         "runs": rows, "median": med,
                                         "median_by_committer": by_committer}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
