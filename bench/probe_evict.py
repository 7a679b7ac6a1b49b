"""Probe: where one ``Engine.evict`` of a job's batch spends its time, and what a concurrent
learner waits on (issue 7, the real run's evictions).

Reopens a data dir filled by ``bench_hygiene.py --phase fill`` (copied first, so the probe can
run again on the same data), plans the bench's job in a child process, then evicts the plan the
way `replaybuf.jobs.run_job` does while a learner thread samples. Each eviction call is timed
in its phases (log append + fsync, the view's LMDB write, the RAM mirror under the table's
lock), and each slow learner sample is attributed to the phase it overlapped.

    .venv/bin/python bench/bench_hygiene.py --phase fill --phase-dir /tmp/w2 --phase-items 1000000
    .venv/bin/python bench/probe_evict.py --data-dir /tmp/w2 --fill-end-ms MS
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

import bench_hygiene as bh  # noqa: E402


def _ctx() -> tuple[float, int, int]:
    """This thread's CPU seconds, voluntary context switches (each a wait that blocked: for
    the GIL, a lock, I/O) and involuntary ones (preempted by the OS for another thread).
    ``getrusage`` keeps the GIL, so reading them adds no wait."""
    ru = resource.getrusage(resource.RUSAGE_THREAD)
    return time.thread_time(), ru.ru_nvcsw, ru.ru_nivcsw


def _wrap_ctx(obj: Any, name: str, parts: dict[str, list[tuple[float, ...]]],
              label: str) -> None:
    """Record each call's (start, wall s, thread CPU s, voluntary and involuntary switches)
    under `label`."""
    fn = getattr(obj, name)

    def timed(*a: Any, **k: Any) -> Any:
        c0, v0, i0 = _ctx()
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            t1 = time.perf_counter()
            c1, v1, i1 = _ctx()
            parts.setdefault(label, []).append((t0, t1 - t0, c1 - c0, v1 - v0, i1 - i0))

    setattr(obj, name, timed)


def _wrap(obj: Any, name: str, spans: list[tuple[str, float, float]], label: str) -> None:
    fn = getattr(obj, name)

    def timed(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spans.append((label, t0, time.perf_counter()))

    setattr(obj, name, timed)


class TimedLock:
    """A table lock that records, per thread name, how long each acquire waited and held."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self.waits: list[tuple[str, float, float]] = []
        self.holds: list[tuple[str, float, float]] = []
        self._t = threading.local()

    def __enter__(self) -> "TimedLock":
        t0 = time.perf_counter()
        self._lock.acquire()
        t1 = time.perf_counter()
        self._t.at = t1
        f = sys._getframe(1)
        self._t.who = f"{f.f_code.co_name}<{f.f_back.f_code.co_name}" if f.f_back else ""
        self.waits.append((threading.current_thread().name, t0, t1))
        return self

    def __exit__(self, *exc: object) -> None:
        self.holds.append((f"{threading.current_thread().name[:10]}:{self._t.who}", self._t.at,
                           time.perf_counter()))
        self._lock.release()


def _warm_strings(engine: Any) -> None:
    """Cache every present item's strings in the table (`Table.cache_strings`)."""
    t = engine._tables[bh.TABLE]
    ids = t.snapshot_ids()
    for i in range(0, ids.size, 65_536):
        part = ids[i:i + 65_536]
        req, src = engine._view.read_strings(part)
        t.cache_strings(part, req, src)


def _overshoot(samples: list[tuple[float, float]]) -> dict[str, float]:
    """From one sample's end to the next one's start, less the learner's 1 ms pause: mostly
    the wait for the GIL when its sleep ends, which the sample latency does not include."""
    gaps = [(b0 - a1) * 1e3 - 1.0 for (_a0, a1), (b0, _b1) in zip(samples, samples[1:])]
    if not gaps:
        return {}
    return {"p50": float(np.percentile(gaps, 50)), "p99": float(np.percentile(gaps, 99)),
            "max": float(max(gaps))}


def _ctx_summary(parts: dict[str, list[tuple[float, ...]]], slow_ms: float,
                 lock_waits: list[tuple[str, float, float]]) -> dict[str, Any]:
    """Per learner call: wall p50/p99 ms, CPU p50 ms, voluntary switches (blocking waits)
    per call, and over calls slower than `slow_ms`: the same, the share preempted by the OS,
    and the time waiting for the table's lock."""
    out: dict[str, Any] = {}
    lw = sorted((a, b) for name, a, b in lock_waits if name == "learner" and b - a > 1e-4)
    for label, rows in parts.items():
        a = np.array(rows, dtype=np.float64).reshape(-1, 5)
        start, wall, cpu, vol, inv = a[:, 0], a[:, 1] * 1e3, a[:, 2] * 1e3, a[:, 3], a[:, 4]
        slow = wall > slow_ms
        lock_ms = [sum(min(b, s0 + w / 1e3) - max(a_, s0) for a_, b in lw
                       if a_ < s0 + w / 1e3 and b > s0) * 1e3
                   for s0, w in zip(start[slow], wall[slow])]
        out[label] = {
            "n": int(wall.size), "wall_p50_ms": float(np.percentile(wall, 50)),
            "wall_p99_ms": float(np.percentile(wall, 99)),
            "cpu_p50_ms": float(np.percentile(cpu, 50)),
            "waits_per_call": float(vol.mean()), "calls_with_waits": float((vol > 0).mean()),
            "slow": int(slow.sum()),
            "slow_waits_per_call": float(vol[slow].mean()) if slow.any() else None,
            "slow_off_cpu_ms": float((wall - cpu)[slow].mean()) if slow.any() else None,
            "slow_preempted": float((inv[slow] > 0).mean()) if slow.any() else None,
            "slow_table_lock_ms": float(np.mean(lock_ms)) if lock_ms else None,
        }
    return out


def _stats(v: list[float]) -> dict[str, float]:
    return {"n": len(v), "median": float(np.median(v)) if v else 0.0,
            "p99": float(np.percentile(v, 99)) if v else 0.0, "max": max(v, default=0.0)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="a filled W2 data dir (kept)")
    p.add_argument("--fill-end-ms", type=int, required=True, help="the fill's fill_end_ms")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/probe_evict_work"))
    p.add_argument("--idle-s", type=float, default=3.0)
    p.add_argument("--max-evictions", type=int, default=150_000,
                   help="evict at most this many of the plan's ids (0: all)")
    p.add_argument("--batch", type=int, default=0, help="ids per evict call (0: EVICT_BATCH)")
    p.add_argument("--rest", type=float, default=0.0,
                   help="after each evict call, sleep this times its duration")
    p.add_argument("--nice", type=int, default=0,
                   help="EngineTarget(evict_nice=...): evict on a thread with this niceness "
                   "(0: on the main thread)")
    p.add_argument("--duty", type=float, default=None,
                   help="EngineTarget(evict_duty=...) (default: its default, EVICT_DUTY)")
    p.add_argument("--switch-ms", type=float, default=0.0,
                   help="sys.setswitchinterval while evicting (0: unchanged)")
    p.add_argument("--warm-strings", type=int, default=1,
                   help="1: cache every item's request id and source in the table before "
                   "sampling, as a long-running engine has them (else each sample of a "
                   "freshly opened engine reads them from the view)")
    p.add_argument("--profile", action="store_true", help="cProfile the evicting thread")
    p.add_argument("--profile-top", type=int, default=25)
    p.add_argument("--profile-sort", default="tottime", help="pstats sort key")
    p.add_argument("--slow-ms", type=float, default=3.0, help="a learner sample this slow "
                   "is attributed to the eviction phase it overlapped")
    args = p.parse_args()

    from replaybuf.engine import Engine, EngineConfig
    from replaybuf.file_log import FileLogConfig
    from replaybuf.jobs import EngineTarget, parse_job, run_job
    from replaybuf.jobs import runner
    from replaybuf.jobs.jobfile import tomllib

    shutil.rmtree(args.work_dir, ignore_errors=True)
    shutil.copytree(args.data_dir, args.work_dir)
    spec = parse_job(tomllib.loads(bh.JOB_FILE.format(
        table=bh.TABLE, now_ms=args.fill_end_ms + bh.JOB_NOW_AFTER_FILL_MS)))
    config = EngineConfig(log=FileLogConfig(fsync="group"), map_size=2**36, view_sync=True)
    spans: list[tuple[str, float, float]] = []
    out: dict[str, Any] = {"load_start": os.getloadavg()}
    with Engine(args.work_dir, config) as engine:
        pipe = engine._pipeline
        _wrap(pipe, "_write", spans, "view_write")
        _wrap(pipe, "_mirror", spans, "mirror")
        _wrap(engine, "evict", spans, "evict_total")
        if args.warm_strings:
            _warm_strings(engine)
        learner = bh.Learner(engine, 256, 0.001)
        samples: list[tuple[float, float]] = []  # each sample's (start, end)
        orig_sample = engine.sample

        def sample(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig_sample(*a, **k)
            finally:
                samples.append((t0, time.perf_counter()))

        engine.sample = sample  # type: ignore[method-assign]
        t = engine._tables[bh.TABLE]
        # The learner's own calls, with its CPU time and blocking waits (GIL hand-offs) each.
        cparts: dict[str, list[tuple[float, float, int]]] = {}
        _wrap_ctx(engine, "sample", cparts, "sample")
        _wrap_ctx(t, "draw", cparts, "draw")
        _wrap_ctx(t._sampler, "sample", cparts, "draw.selector")
        _wrap_ctx(t, "_gather", cparts, "draw.gather")
        _wrap_ctx(engine._recorder, "submit", cparts, "recorder.submit")
        _wrap_ctx(t.limiter, "reserve_sample", cparts, "limiter.reserve")
        _wrap_ctx(engine._view, "read_strings", cparts, "view.read_strings")
        lspans: list[tuple[str, float, float]] = []  # the learner's own parts
        _wrap(t, "draw", lspans, "draw")
        tl = t._lock = TimedLock(t._lock)
        _wrap(engine._recorder, "submit", lspans, "submit")
        _wrap(t.limiter, "reserve_sample", lspans, "reserve")
        learner.start()
        time.sleep(1.0)
        plan = run_job(spec, EngineTarget(engine), dry_run=True).plan
        assert plan is not None
        time.sleep(args.idle_s)
        learner.take()
        time.sleep(args.idle_s)
        cparts.clear()
        ni0 = len(samples)
        time.sleep(args.idle_s)
        idle = learner.take()
        out["idle"] = bh.latency_summary(idle)
        out["idle_learner_calls"] = _ctx_summary(cparts, args.slow_ms, tl.waits)
        cparts.clear()
        spans.clear()
        lspans.clear()
        tl.waits.clear()
        tl.holds.clear()
        prof = cProfile.Profile() if args.profile else None
        if prof is not None:
            prof.enable()
        cpu0, t0 = time.process_time(), time.perf_counter()
        n0 = len(samples)
        budget = args.max_evictions or sum(ev.ids.size for ev in plan.evictions)
        evicted = 0
        step = args.batch or runner.EVICT_BATCH
        old_switch = sys.getswitchinterval()
        if args.switch_ms:
            sys.setswitchinterval(args.switch_ms / 1e3)
        target = EngineTarget(engine, evict_nice=args.nice,
                              **({} if args.duty is None else {"evict_duty": args.duty}))
        for ev in plan.evictions:
            for s in range(0, ev.ids.size, step):
                if evicted >= budget:
                    break
                c0 = time.perf_counter()
                evicted += target.evict(bh.TABLE, ev.ids[s: s + step], reason=ev.reason,
                                        job_id="probe", detail="")
                if args.rest:
                    time.sleep((time.perf_counter() - c0) * args.rest)
        sys.setswitchinterval(old_switch)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if prof is not None:
            prof.disable()
            buf = io.StringIO()
            stats = pstats.Stats(prof, stream=buf).sort_stats(args.profile_sort)
            stats.print_stats(args.profile_top)
            print(buf.getvalue(), file=sys.stderr)
        t1 = time.perf_counter()
        learner.stop()
        out["during_learner_calls"] = _ctx_summary(cparts, args.slow_ms, tl.waits)
        during = [(a, b - a) for a, b in samples[n0:] if b <= t1]
        out["pause_overshoot_ms"] = {"idle": _overshoot(samples[ni0:n0]),
                                     "during": _overshoot([s for s in samples[n0:] if s[1] <= t1])}
        st, lat = [a for a, _ in during], [d for _, d in during]
    out.update(evicted=evicted, wall_s=wall, cpu_s=cpu, evictions_per_s=evicted / wall,
               during=bh.latency_summary(lat), load_end=os.getloadavg())
    by: dict[str, list[float]] = {}
    for label, a, b in spans:
        by.setdefault(label, []).append((b - a) * 1e3)
    out["phase_ms"] = {k: {"n": len(v), "median": float(np.median(v)),
                           "p90": float(np.percentile(v, 90)), "sum_s": sum(v) / 1e3}
                       for k, v in by.items()}
    slow: dict[str, int] = {}
    for s0, d in zip(st, lat):
        if d * 1e3 < args.slow_ms:
            continue
        hit = [label for label, a, b in spans if a < s0 + d and b > s0 and label != "evict_total"]
        key = "+".join(sorted(set(hit))) or ("evict_other" if any(
            a < s0 + d and b > s0 for _l, a, b in spans) else "none")
        slow[key] = slow.get(key, 0) + 1
    out["slow_samples_by_phase"] = slow
    out["slow_samples"] = sum(slow.values())
    # The learner's own parts in its slow samples: which one took the time.
    parts: dict[str, list[float]] = {}
    for s0, d in zip(st, lat):
        if d * 1e3 < args.slow_ms:
            continue
        for label, a, b in lspans:
            if a >= s0 and b <= s0 + d:
                parts.setdefault(label, []).append((b - a) * 1e3)
    out["slow_sample_parts_ms"] = {k: {"n": len(v), "median": float(np.median(v)),
                                       "max": float(max(v))} for k, v in parts.items()}
    by_thread: dict[str, dict[str, list[float]]] = {}
    for kind, rows in (("wait", tl.waits), ("hold", tl.holds)):
        for name, a, b in rows:
            by_thread.setdefault(name.split(":")[0], {}).setdefault(kind, []).append((b - a) * 1e3)
    out["longest_holds_ms"] = sorted(
        ((round((b - a) * 1e3, 2), n, round(a - t0, 3)) for n, a, b in tl.holds),
        reverse=True)[:8]
    out["table_lock_ms"] = {n: {k: _stats(v) for k, v in d.items()} for n, d in by_thread.items()}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
