"""Hygiene job benchmark (issue 7, W2): eviction scan speed, its memory, and the sample latency a
concurrent learner sees while the job runs.

W2 (MuJoCo-like): obs float32[D], action float32[6], reward float32, next_obs float32[D], done
bool, with D = 17 by default (`--obs-dims` gives one D per size, e.g. a smaller obs at 10M).

For each size in `--items` (default 1,000,000 and 10,000,000):

1. fill (a fresh subprocess): a table of capacity = items in appends of `--append-batch` items
   through `replaybuf.engine.Engine`, with lineage (episodes of 1,000 steps, 10 model versions
   in append order, item times spread over the last 10 days), uniform random priorities and
   NaN in 0.1% of the obs rows. The fill uses fsync policy `--fill-fsync` (default `none`, view
   not synced): it only builds the state to scan and is not what is measured.
2. measure (a fresh subprocess): reopen the data dir with a durable engine (`--fsync`, default
   `group`) and start a learner thread sampling `--sample-batch` (256, prioritized, beta 0.4)
   in a loop with a `--learner-pause-ms` pause (its training step) between samples. Then
   `--runs` times, for each scan mode of `--scan` in turn (interleaved: A/B/A/B): an idle
   window of `--idle-s` seconds (learner alone), then a dry run of the job file below with the
   learner still sampling (snapshot of the view in chunks + plan; evicts nothing). Finally one
   real run in the first mode (the same job, evicting, with the learner sampling).
   The job runs as `replaybuf serve --jobs` runs scheduled jobs: started from the engine's own
   process, through `replaybuf.jobs.run_job` + `EngineTarget(engine, scan=MODE)` (here on the
   main thread, the learner on another). Scan modes: ``process`` (the default of
   `EngineTarget`: the snapshot and plan run in a child process that reads the LMDB view and
   sends back the plan) and ``thread`` (in the engine's process, sharing its GIL).

Job file (all policies on; counts by reason go to the JSON): max_age 8d, model_version
keep_newest 7, times_sampled at_least 32, low_priority below 0.05 for 1h, invalid_data with
reward_range [-10, 10], max_per_episode 900. Its reference time is 2 h after the fill, so every
priority (set at the fill, never updated) has been low for more than the 1 h period.

Measured per run: items scanned/s (items in the snapshot / wall time of the dry run), the
learner's sample latency p50/p99 in the idle window and during the job (goal: job p99 <= 2x
idle p99), the peak RSS of the measuring process during the job (VmHWM, reset before each job
through /proc/self/clear_refs), the RSS above the baseline before the job, and the peak
anonymous RSS above baseline (RssAnon, sampled every 20 ms: VmHWM also counts the LMDB pages
the scan maps in, which are page cache the kernel can drop). Speed and latency: medians over
`--runs` (the p99 ratio per run, against the idle window just before it); memory: the maximum
over runs (a later run reuses heap that an earlier one grew). In ``process`` mode the child's
own peak RSS (``ru_maxrss``) is reported beside the parent's. CPU seconds of each job: the
measuring process's (``time.process_time``, all its threads: learner included) and its
children's (``RUSAGE_CHILDREN``: the scan process). The real run reports the same, plus
evictions/s.

    .venv/bin/python bench/bench_hygiene.py --quick                       # smoke run, < 60 s
    .venv/bin/python bench/bench_hygiene.py --items 1000000,10000000 --json bench/out/hygiene.json
    .venv/bin/python bench/bench_hygiene.py --items 1000000 --scan process  # one mode only

Writes JSON (`--json`, default bench/out/hygiene.json) with every parameter, machine info,
versions, every run and the optional profile (`--profile`: cProfile of one more dry run).
Data dirs go under `--data-dir` (default bench/out/hygiene-data) and are deleted at the end
unless `--keep-data`; each size needs about 700 bytes of disk per item with D = 17.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from _common import (  # noqa: E402
    dist_versions, fmt, log, machine, median, peak_rss_mb, print_footer, report_header,
    write_json,
)

SCHEMA_VERSION = 2  # 2: one result row per scan mode (--scan), CPU seconds, child RSS
TABLE = "w2"
BETA = 0.4
ALPHA = 0.6
EPISODE_STEPS = 1000
MODEL_VERSIONS = 10
SPAN_MS = 10 * 86_400_000  # item times spread over the last 10 days
NAN_FRACTION = 0.001
JOB_NOW_AFTER_FILL_MS = 2 * 3_600_000
GOAL_P99_RATIO = 2.0
JOB_FILE = """\
[job]
id = "bench-hygiene"
table = "{table}"
now = {now_ms}

[[evict]]
policy = "max_age"
max_age = "8d"
[[evict]]
policy = "model_version"
keep_newest = 7
[[evict]]
policy = "times_sampled"
at_least = 32
[[evict]]
policy = "low_priority"
below = 0.05
for = "1h"
[[evict]]
policy = "invalid_data"
reward_range = [-10, 10]
[[evict]]
policy = "max_per_episode"
max_items = 900
"""


def w2_fields(obs_dim: int) -> dict[str, tuple[Any, tuple[int, ...]]]:
    return {"obs": (np.float32, (obs_dim,)), "action": (np.float32, (6,)),
            "reward": (np.float32, ()), "next_obs": (np.float32, (obs_dim,)),
            "done": (np.bool_, ())}


# --------------------------------------------------------------------------------------------
# /proc memory readings of this process
# --------------------------------------------------------------------------------------------


def proc_status_mb() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon and RssFile of this process, in MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) / 1024
    return out


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class AnonPeak:
    """Samples RssAnon every `interval` s on a thread; `peak` is the highest seen."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = proc_status_mb()["RssAnon"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="anon-peak", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, proc_status_mb()["RssAnon"])

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, proc_status_mb()["RssAnon"])


# --------------------------------------------------------------------------------------------
# Phase 1: fill (subprocess)
# --------------------------------------------------------------------------------------------


def fill_phase(args: argparse.Namespace) -> dict[str, Any]:
    from replaybuf.engine import Engine, EngineConfig
    from replaybuf.file_log import FileLogConfig
    from replaybuf.table_config import SelectorConfig, TableConfig

    n, batch = args.phase_items, args.append_batch
    data_dir = Path(args.phase_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    rng = np.random.default_rng(args.seed)
    fields = w2_fields(args.phase_obs_dim)
    pool = []  # a few random batches, cycled, so that generating data stays out of the fill
    for _ in range(4):
        b = {name: (rng.random((batch, *shape)) < 0.01 if np.dtype(dt) == np.bool_ else
                    rng.standard_normal((batch, *shape), dtype=np.float32))
             for name, (dt, shape) in fields.items()}
        bad = rng.random(batch) < NAN_FRACTION
        b["obs"][bad, 0] = np.nan
        pool.append(b)
    priorities = rng.random(n)
    now_ms = int(time.time() * 1000)
    config = EngineConfig(log=FileLogConfig(fsync=args.fill_fsync), map_size=args.map_size,
                          view_sync=args.view_sync)
    t0 = time.perf_counter()
    with Engine(data_dir, config) as engine:
        engine.create_table(TableConfig(TABLE, fields, capacity=n,
                                        sampler=SelectorConfig("prioritized", alpha=ALPHA)))
        for k, lo in enumerate(range(0, n, batch)):
            hi = min(lo + batch, n)
            data = pool[k % len(pool)]
            if hi - lo != batch:
                data = {name: col[: hi - lo] for name, col in data.items()}
            idx = np.arange(lo, hi, dtype=np.int64)
            engine.append(TABLE, data, priorities=priorities[lo:hi], lineage={
                "episode_id": idx // EPISODE_STEPS, "step": idx % EPISODE_STEPS,
                "model_version": idx * MODEL_VERSIONS // n,
                "timestamp_ms": now_ms - SPAN_MS + idx * SPAN_MS // n})
            if k % 20 == 19:
                log(f"    filled {hi:,}/{n:,} ({hi / (time.perf_counter() - t0):,.0f} items/s)")
        size = engine.describe_table(TABLE).size
    fill_s = time.perf_counter() - t0
    disk = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
    return {"items": size, "fill_s": fill_s, "fill_items_per_s": size / fill_s,
            "fill_end_ms": int(time.time() * 1000), "disk_bytes": disk,
            "peak_rss_mb": peak_rss_mb()}


# --------------------------------------------------------------------------------------------
# Phase 2: measure (subprocess)
# --------------------------------------------------------------------------------------------


class Learner:
    """A thread that samples in a loop and records each sample's latency (seconds) into the
    current window."""

    def __init__(self, engine: Any, batch: int, pause_s: float) -> None:
        self.engine, self.batch, self.pause_s = engine, batch, pause_s
        self.window: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="learner", daemon=True)

    def _run(self) -> None:
        sample, table, batch = self.engine.sample, TABLE, self.batch
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                # A timeout, so that a table the real run emptied cannot block stop().
                sample(table, batch, beta=BETA, timeout=1.0)
            except Exception as err:  # a sample failing under the job is a result too
                self.errors.append(f"{type(err).__name__}: {err}")
                self._stop.wait(0.01)
                continue
            self.window.append(time.perf_counter() - t0)
            if self.pause_s:
                time.sleep(self.pause_s)

    def start(self) -> None:
        self._thread.start()

    def take(self) -> list[float]:
        """The latencies since the last take (the list is swapped, not copied)."""
        out, self.window = self.window, []
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def latency_summary(lat: list[float]) -> dict[str, Any]:
    if not lat:
        return {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(lat) * 1e3
    return {"samples": int(a.size), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed_job(engine: Any, spec: Any, learner: Learner, *, dry_run: bool,
              scan: str, evict_nice: int | None = None,
              evict_duty: float | None = None) -> dict[str, Any]:
    """One run of the job with the learner sampling; time, memory and the learner's view."""
    from replaybuf.jobs import EngineTarget, run_job

    gc.collect()
    before = proc_status_mb()
    reset_ok = reset_peak_rss()
    learner.take()
    with AnonPeak() as anon:
        t0, cpu0, child0 = time.perf_counter(), time.process_time(), _children_cpu_s()
        mode, _, nice = scan.partition(":")
        target = EngineTarget(engine, scan=mode, **({"scan_nice": int(nice)} if nice else {}),
                              **({} if evict_nice is None else {"evict_nice": evict_nice}),
                              **({} if evict_duty is None else {"evict_duty": evict_duty}))
        result = run_job(spec, target, dry_run=dry_run,
                         job_id=None if dry_run else f"{spec.name}-evict-{mode}")
        wall = time.perf_counter() - t0
        cpu, child_cpu = time.process_time() - cpu0, _children_cpu_s() - child0
    during = learner.take()
    after = proc_status_mb()
    plan = result.plan
    assert plan is not None, result.status
    return {
        "scan": scan, "scan_info": plan.scan,
        "dry_run": dry_run, "status": result.status, "items": plan.items, "wall_s": wall,
        "items_per_s": plan.items / wall, "process_cpu_s": cpu, "children_cpu_s": child_cpu,
        "planned_by_reason": plan.by_reason(),
        "evicted_by_reason": result.evicted_by_reason if not dry_run else {},
        "rss_before_mb": before["VmRSS"], "rss_anon_before_mb": before["RssAnon"],
        "vm_hwm_mb": after["VmHWM"] if reset_ok else None,
        "rss_above_baseline_mb": (after["VmHWM"] - before["VmRSS"]) if reset_ok else None,
        "anon_peak_above_baseline_mb": anon.peak - before["RssAnon"],
        "rss_after_mb": after["VmRSS"], "rss_file_after_mb": after["RssFile"],
        "learner": latency_summary(during),
    }


def profile_dry_run(engine: Any, spec: Any, top: int) -> list[dict[str, Any]]:
    from replaybuf.jobs import EngineTarget, run_job

    prof = cProfile.Profile()
    prof.enable()
    run_job(spec, EngineTarget(engine, scan="thread"), dry_run=True)  # profiled here
    prof.disable()
    st = pstats.Stats(prof, stream=io.StringIO())
    rows = [{"function": f"{Path(file).name}:{line}({func})", "calls": nc,
             "tottime_s": round(tt, 4), "cumtime_s": round(ct, 4)}
            for (file, line, func), (_cc, nc, tt, ct, _callers)
            in st.stats.items()]  # type: ignore[attr-defined]
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:top]


def measure_phase(args: argparse.Namespace) -> dict[str, Any]:
    from replaybuf.engine import Engine, EngineConfig
    from replaybuf.file_log import FileLogConfig
    from replaybuf.jobs import parse_job
    from replaybuf.jobs.jobfile import tomllib

    spec = parse_job(tomllib.loads(JOB_FILE.format(
        table=TABLE, now_ms=args.phase_fill_end_ms + JOB_NOW_AFTER_FILL_MS)))
    config = EngineConfig(log=FileLogConfig(fsync=args.fsync), map_size=args.map_size,
                          view_sync=args.view_sync)
    out: dict[str, Any] = {"runs": []}
    t0 = time.perf_counter()
    with Engine(Path(args.phase_dir), config) as engine:
        out["open_s"] = time.perf_counter() - t0
        out["open_peak_rss_mb"] = peak_rss_mb()
        learner = Learner(engine, args.sample_batch, args.learner_pause_ms / 1000)
        learner.start()
        try:
            time.sleep(min(args.idle_s, 1.0))  # warm up (numba, caches) outside the windows
            learner.take()
            for r in range(args.runs):
                for scan in args.scan_list:  # interleaved, so drifting load hits both alike
                    time.sleep(args.idle_s)
                    idle = latency_summary(learner.take())
                    run = timed_job(engine, spec, learner, dry_run=True, scan=scan)
                    run["idle_learner"] = idle
                    out["runs"].append(run)
                    log(f"    dry run {r + 1}/{args.runs} ({scan}): {run['items']:,} items in "
                        f"{run['wall_s']:.2f} s ({run['items_per_s']:,.0f} items/s, CPU "
                        f"{run['process_cpu_s']:.2f} s + child {run['children_cpu_s']:.2f} s);"
                        f" learner p99 {fmt(idle['p99_ms'], '.2f')} ms idle, "
                        f"{fmt(run['learner']['p99_ms'], '.2f')} ms during; VmHWM "
                        f"{fmt(run['vm_hwm_mb'])} MB, child anon / peak RSS "
                        f"{fmt(run['scan_info'].get('anon_mb'))} / "
                        f"{fmt(run['scan_info'].get('peak_rss_mb'))} MB")
            if args.profile:
                out["profile_top_tottime"] = profile_dry_run(engine, spec, args.profile_top)
            time.sleep(args.idle_s)
            idle = latency_summary(learner.take())
            real = timed_job(engine, spec, learner, dry_run=False, scan=args.scan_list[0],
                             evict_nice=args.evict_nice, evict_duty=args.evict_duty)
            real["evict_nice"] = args.evict_nice
            real["evict_duty"] = args.evict_duty
            real["idle_learner"] = idle
            out["real_run"] = real
            log(f"    real run ({real['scan']}): evicted {sum(real['evicted_by_reason'].values()):,} items in "
                f"{real['wall_s']:.2f} s; learner p99 {fmt(idle['p99_ms'], '.2f')} ms idle, "
                f"{fmt(real['learner']['p99_ms'], '.2f')} ms during")
        finally:
            learner.stop()
        out["learner_errors"] = learner.errors[:10]
        out["size_after"] = engine.describe_table(TABLE).size
    out["peak_rss_mb"] = peak_rss_mb()
    return out


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


def run_phase(phase: str, extra: list[str], args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, *extra,
           "--append-batch", str(args.append_batch), "--fill-fsync", args.fill_fsync,
           "--fsync", args.fsync, "--map-size", str(args.map_size), "--seed", str(args.seed),
           "--runs", str(args.runs), "--idle-s", str(args.idle_s),
           "--sample-batch", str(args.sample_batch),
           "--learner-pause-ms", str(args.learner_pause_ms),
           "--profile-top", str(args.profile_top), "--scan", args.scan] + (
               ["--view-sync"] if args.view_sync else []) + (
               [] if args.evict_nice is None else ["--evict-nice", str(args.evict_nice)]) + (
               [] if args.evict_duty is None else ["--evict-duty", str(args.evict_duty)]) + (
               ["--profile"] if args.profile else [])
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=args.phase_timeout_s,
                          cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"phase {phase} failed with exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ratio(job: float | None, idle: float | None) -> float | None:
    return job / idle if job and idle else None


def summarize(items: int, obs_dim: int, fill: dict[str, Any], meas: dict[str, Any],
              scan: str) -> dict[str, Any]:
    """Medians over the dry runs of one scan mode for speed and latency; the maximum over them
    for memory (a later run reuses heap an earlier one grew, so its growth above baseline reads
    lower)."""
    runs = [r for r in meas["runs"] if r["scan"] == scan]
    real = meas["real_run"]

    def worst(key: str) -> float | None:
        vals = [r[key] for r in runs if r[key] is not None]
        return max(vals) if vals else None

    return {
        "items": items, "obs_dim": obs_dim, "scan": scan,
        "fill_items_per_s": fill["fill_items_per_s"], "fill_s": fill["fill_s"],
        "disk_mb": fill["disk_bytes"] / 2**20, "open_s": meas["open_s"],
        "scan_items_per_s_median": median(r["items_per_s"] for r in runs),
        "scan_wall_s_median": median(r["wall_s"] for r in runs),
        "child_scan_s_median": median(r["scan_info"].get("scan_s") for r in runs),
        "process_cpu_s_median": median(r["process_cpu_s"] for r in runs),
        "children_cpu_s_median": median(r["children_cpu_s"] for r in runs),
        "child_peak_rss_mb_max": max((r["scan_info"]["peak_rss_mb"] for r in runs
                                      if "peak_rss_mb" in r["scan_info"]), default=None),
        "child_anon_mb_max": max((r["scan_info"]["anon_mb"] for r in runs
                                  if r["scan_info"].get("anon_mb") is not None), default=None),
        "rss_before_mb_median": median(r["rss_before_mb"] for r in runs),
        "vm_hwm_mb_max": worst("vm_hwm_mb"),
        "rss_above_baseline_mb_max": worst("rss_above_baseline_mb"),
        "anon_peak_above_baseline_mb_max": worst("anon_peak_above_baseline_mb"),
        "learner_idle_p99_ms_median": median(r["idle_learner"]["p99_ms"] for r in runs),
        "learner_job_p99_ms_median": median(r["learner"]["p99_ms"] for r in runs),
        # Each run against the idle window just before it (the load of others drifts).
        "p99_ratio_runs": [_ratio(r["learner"]["p99_ms"], r["idle_learner"]["p99_ms"])
                           for r in runs],
        "p99_ratio": median(_ratio(r["learner"]["p99_ms"], r["idle_learner"]["p99_ms"])
                            for r in runs),
        "planned_by_reason": runs[-1]["planned_by_reason"] if runs else {},
        "real_run": None if real["scan"] != scan else {"wall_s": real["wall_s"],
                     "evict_nice": real.get("evict_nice"),
                     "evict_duty": real.get("evict_duty"),
                     "evicted": sum(real["evicted_by_reason"].values()),
                     "evictions_per_s": sum(real["evicted_by_reason"].values()) / real["wall_s"],
                     "evicted_by_reason": real["evicted_by_reason"],
                     "vm_hwm_mb": real["vm_hwm_mb"],
                     "rss_above_baseline_mb": real["rss_above_baseline_mb"],
                     "anon_peak_above_baseline_mb": real["anon_peak_above_baseline_mb"],
                     "learner_idle_p99_ms": real["idle_learner"]["p99_ms"],
                     "learner_job_p99_ms": real["learner"]["p99_ms"],
                     "learner_job_max_ms": real["learner"]["max_ms"],
                     "p99_ratio": _ratio(real["learner"]["p99_ms"],
                                         real["idle_learner"]["p99_ms"])},
        "size_after_real_run": meas["size_after"],
        "learner_errors": meas["learner_errors"],
        "fill": fill, "measure": meas,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| items | obs | scan | scan items/s | scan s | CPU s: process + child | baseline RSS MB "
          "| VmHWM MB | RSS above base MB | anon above base MB | child anon / peak RSS MB "
          "| learner p99 idle ms | p99 during scan ms | ratio per run | ratio (goal <= 2) |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        runs = ", ".join(fmt(x, ".2f") for x in r["p99_ratio_runs"])
        print(f"| {r['items']:,} | {r['obs_dim']} | {r['scan']} | "
              f"{fmt(r['scan_items_per_s_median'])} | {fmt(r['scan_wall_s_median'], '.2f')} | "
              f"{fmt(r['process_cpu_s_median'], '.2f')} + "
              f"{fmt(r['children_cpu_s_median'], '.2f')} | {fmt(r['rss_before_mb_median'])} | "
              f"{fmt(r['vm_hwm_mb_max'])} | {fmt(r['rss_above_baseline_mb_max'])} | "
              f"{fmt(r['anon_peak_above_baseline_mb_max'])} | "
              f"{fmt(r['child_anon_mb_max'])} / {fmt(r['child_peak_rss_mb_max'])} | "
              f"{fmt(r['learner_idle_p99_ms_median'], '.2f')} | "
              f"{fmt(r['learner_job_p99_ms_median'], '.2f')} | {runs} | "
              f"{fmt(r['p99_ratio'], '.2f')} |")
    print("\n| items | scan | real run: evicted | wall s | evictions/s | p99 idle / during ms "
          "| ratio | max during ms |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        real = r["real_run"]
        if real is not None:
            print(f"| {r['items']:,} | {r['scan']} | {real['evicted']:,} | "
                  f"{real['wall_s']:.2f} | {fmt(real['evictions_per_s'])} | "
                  f"{fmt(real['learner_idle_p99_ms'], '.2f')} / "
                  f"{fmt(real['learner_job_p99_ms'], '.2f')} | {fmt(real['p99_ratio'], '.2f')} | "
                  f"{fmt(real['learner_job_max_ms'], '.1f')} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--items", default="1000000,10000000", help="comma-separated table sizes")
    p.add_argument("--obs-dims", default="",
                   help="comma-separated obs size per --items entry (default 17 for each)")
    p.add_argument("--append-batch", type=int, default=50_000, help="items per fill append")
    p.add_argument("--fill-fsync", default="none",
                   help="log fsync policy of the fill only (none: the view is not synced either)")
    p.add_argument("--fsync", default="group", help="fsync policy while measuring")
    p.add_argument("--view-sync", action="store_true", help="also fsync every view commit (default: the engine's default, off)")
    p.add_argument("--map-size", type=int, default=2**36, help="initial LMDB map size")
    p.add_argument("--runs", type=int, default=3, help="dry runs per size (medians)")
    p.add_argument("--idle-s", type=float, default=5.0,
                   help="seconds of learner-only sampling before each job run")
    p.add_argument("--sample-batch", type=int, default=256, help="learner batch size")
    p.add_argument("--learner-pause-ms", type=float, default=1.0,
                   help="learner's pause between samples (its training step)")
    p.add_argument("--scan", default="process,thread",
                   help="comma-separated EngineTarget scan modes, interleaved per run (process: "
                   "a child process scans and plans, process:N with niceness N instead of the "
                   "default; thread: the engine's process); the real run uses the first")
    p.add_argument("--evict-nice", type=int, default=None,
                   help="EngineTarget(evict_nice=...) of the real run (default: its default, "
                   "replaybuf.jobs.runner.EVICT_NICE; 0: evict on the job's thread)")
    p.add_argument("--evict-duty", type=float, default=None,
                   help="EngineTarget(evict_duty=...) of the real run: share of the time spent "
                   "in evict calls, a pause after each (default: its default, "
                   "replaybuf.jobs.runner.EVICT_DUTY; 1.0: no pause)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="cProfile one extra dry run")
    p.add_argument("--profile-top", type=int, default=15)
    p.add_argument("--phase-timeout-s", type=float, default=3600.0)
    p.add_argument("--data-dir", type=Path, default=BENCH_DIR / "out" / "hygiene-data",
                   help="where the data dirs go (on the disk under test)")
    p.add_argument("--keep-data", action="store_true", help="don't delete --data-dir at the end")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 20,000 items, 2 runs, 1 s idle windows (unless given)")
    p.add_argument("--json", default=str(BENCH_DIR / "out" / "hygiene.json"), help="output path")
    # internal: one phase in this subprocess
    p.add_argument("--phase", choices=("fill", "measure"), help=argparse.SUPPRESS)
    p.add_argument("--phase-dir", help=argparse.SUPPRESS)
    p.add_argument("--phase-items", type=int, help=argparse.SUPPRESS)
    p.add_argument("--phase-obs-dim", type=int, default=17, help=argparse.SUPPRESS)
    p.add_argument("--phase-fill-end-ms", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick and args.phase is None:
        given = set(argv if argv is not None else sys.argv[1:])
        if "--items" not in given:
            args.items = "20000"
        if "--runs" not in given:
            args.runs = 2
        if "--idle-s" not in given:
            args.idle_s = 1.0
        if "--append-batch" not in given:
            args.append_batch = 5000
    args.item_list = [int(x) for x in str(args.items).split(",") if x]
    args.scan_list = [x for x in str(args.scan).split(",") if x]
    bad_scan = [x for x in args.scan_list
                if x != "thread" and not re.fullmatch(r"process(:1?\d)?", x)]
    if bad_scan or not args.scan_list:
        p.error(f"--scan {args.scan!r}: give process, process:NICE (0-19), thread or several "
                f"(comma-separated)")
    dims = [int(x) for x in str(args.obs_dims).split(",") if x]
    if dims and len(dims) != len(args.item_list):
        p.error(f"--obs-dims has {len(dims)} entries for {len(args.item_list)} --items")
    args.obs_dim_list = dims or [17] * len(args.item_list)
    if args.runs < 1 or args.append_batch < 1 or any(n < 1 for n in args.item_list):
        p.error("--runs, --append-batch and every --items must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.phase is not None:
        out = fill_phase(args) if args.phase == "fill" else measure_phase(args)
        print(json.dumps(out))
        return 0

    started = time.time()
    info = machine()
    log(f"hygiene bench: items {args.item_list}, obs {args.obs_dim_list}, load average "
        f"{info['loadavg_start'][0]:.2f}")
    rows = []
    notes = [f"fill: fsync {args.fill_fsync!r} (not measured); measuring: fsync {args.fsync!r}",
             "job started from the engine's process (as under `replaybuf serve --jobs`): "
             "in-process Engine, EngineTarget(scan=...), learner on a thread; scan 'process' "
             "reads the view in a child process, 'thread' in the engine's process"]
    try:
        for items, dim in zip(args.item_list, args.obs_dim_list):
            d = args.data_dir / f"w2-{items}"
            log(f"  {items:,} items (obs {dim}): filling {d} ...")
            fill = run_phase("fill", ["--phase-dir", str(d), "--phase-items", str(items),
                                      "--phase-obs-dim", str(dim)], args)
            log(f"  filled in {fill['fill_s']:.1f} s ({fill['fill_items_per_s']:,.0f} items/s), "
                f"{fill['disk_bytes'] / 2**20:,.0f} MiB on disk; measuring ...")
            meas = run_phase("measure", ["--phase-dir", str(d), "--phase-items", str(items),
                                         "--phase-fill-end-ms", str(fill["fill_end_ms"])], args)
            rows.extend(summarize(items, dim, fill, meas, scan) for scan in args.scan_list)
            if not args.keep_data:
                shutil.rmtree(d, ignore_errors=True)
    finally:
        if not args.keep_data:
            shutil.rmtree(args.data_dir, ignore_errors=True)
    info["loadavg_end"] = list(os.getloadavg())

    goals = [{"items": r["items"], "scan": r["scan"], "p99_ratio": r["p99_ratio"],
              "goal": GOAL_P99_RATIO,
              "met": r["p99_ratio"] is not None and r["p99_ratio"] <= GOAL_P99_RATIO}
             for r in rows]
    report = report_header("hygiene", SCHEMA_VERSION, started) | {
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if not k.startswith("phase")} | {"job_file": JOB_FILE},
        "machine": info,
        "versions": dist_versions(["replaybuf", "numpy", "numba", "lmdb", "protobuf"]),
        "results": rows, "goals": goals, "peak_rss_mb": peak_rss_mb(), "notes": notes,
    }
    out = write_json(args.json, report)
    print(f"\n### Hygiene job scan (W2): speed and latency median of {args.runs} dry runs, "
          f"memory the maximum\n")
    print_table(rows)
    print()
    for g in goals:
        print(f"- {g['items']:,} items, scan {g['scan']}: learner p99 during the scan / idle = "
              f"{fmt(g['p99_ratio'], '.2f')} (goal <= {GOAL_P99_RATIO:g}: "
              f"{'met' if g['met'] else 'NOT met'})")
    print_footer(info, max((r["measure"]["peak_rss_mb"] for r in rows), default=0.0),
                 "measuring process peak RSS", notes, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
