"""Engine benchmark (issue 4, workloads W2 and W3): durable appends, prioritized sampling, restart.

W2 (MuJoCo-like): obs float32[17], action float32[6], reward float32, next_obs float32[17],
   done bool; `--w2-items` items (default 1,000,000).
W3 (Atari-like): obs and next_obs uint8[4,84,84], action int64, reward float32, done bool;
   `--w3-items` items (default 50,000).

For each workload, every peer gets a table/buffer of capacity = items, is filled with all items
in appends of `--append-batch` (the fill is cut into `--runs` equal segments, each timed: items/s,
median of segments), then `--runs` runs of `--sample-batches` prioritized samples of
`--sample-batch` (alpha 0.6, beta 0.4) are timed, peers interleaved run by run (transitions/s,
median of runs). Peers, all in this one process:
  ours     replaybuf.engine.Engine in-process, DURABLE: log fsync policy `--fsync` (default
           group: each append returns after its frame is fsynced) and a synced LMDB view; data
           dirs under `--data-dir` (on the repo's disk). Each sample's background ItemsSampled
           logging is included: a timed run ends with `Engine.flush_samples()`.
  cpprb    cpprb.PrioritizedReplayBuffer, in memory, not durable.
  torchrl  torchrl TensorDictPrioritizedReplayBuffer over LazyMemmapStorage (memory-mapped
           files in `--data-dir`, never flushed or reopened: not durable).

Restart (ours, W2 data dir left by the throughput part, or `--restart-dir DIR` alone;
`--restart-runs` each, every one in a fresh subprocess so peak RSS is per phase): `open` =
reopen after a clean close (the tables' snapshot file written at close + catch-up + tree
rebuild; goal < 3 s); `sigkill` = a child opens the engine, samples one batch, logs it and
SIGKILLs itself, then the timed reopen (the snapshot is stale: a scan of the view that takes
the older payloads from the snapshot + catch-up + tree rebuild); `rebuild` = delete DIR/view,
reopen (replay of the whole log; goal >= 300k items/s). Profile: where one W2 sample of 256
spends its time (perf_counter breakdown of Engine.sample's steps + cProfile top functions).

    bash bench/setup_peers_venv.sh
    .bench-venv/bin/python bench/bench_engine.py                 # full size, all peers
    .venv/bin/python bench/bench_engine.py --quick --peers ours  # < 60 s smoke run

Writes JSON (`--json`, default bench/out/engine.json) with every parameter, machine info,
versions, all run timings, per-phase peak RSS and the profile.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from _common import (  # noqa: E402
    INSTALL_HINT, PeerUnavailable, cpprb_version, dist_version, dist_versions, fmt, log, machine,
    median, peak_rss_mb, print_footer, probe_peers, report_header, rss_mb, write_json,
)

SCHEMA_VERSION = 1
ALL_PEERS = ("ours", "cpprb", "torchrl")
ALL_WORKLOADS = ("W2", "W3")
ALPHA = 0.6
BETA = 0.4
# Issue 4's reference: median of 3 runs, 2 cores, batch 256 (sampling transitions/s).
REFERENCE_SAMPLE_TPS = {"W2": {"cpprb": 1.33e6, "torchrl": 0.86e6},
                        "W3": {"cpprb": 67e3, "torchrl": 43e3}}
GOAL_OPEN_S = 3.0
GOAL_REBUILD_ITEMS_PER_S = 300_000
RESTART_PHASES = ("open", "sigkill", "rebuild")


def workload_fields(name: str) -> dict[str, tuple[Any, tuple[int, ...]]]:
    if name == "W2":
        return {"obs": (np.float32, (17,)), "action": (np.float32, (6,)),
                "reward": (np.float32, ()), "next_obs": (np.float32, (17,)),
                "done": (np.bool_, ())}
    if name == "W3":
        return {"obs": (np.uint8, (4, 84, 84)), "action": (np.int64, ()),
                "reward": (np.float32, ()), "next_obs": (np.uint8, (4, 84, 84)),
                "done": (np.bool_, ())}
    raise ValueError(name)


def make_batches(fields: dict[str, tuple[Any, tuple[int, ...]]], batch: int, pool: int,
                 seed: int) -> list[dict[str, np.ndarray]]:
    """`pool` random columnar batches, cycled by the fill (generation stays out of timings)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(pool):
        b: dict[str, np.ndarray] = {}
        for name, (dt, shape) in fields.items():
            dt = np.dtype(dt)
            if dt == np.bool_:
                b[name] = rng.random((batch, *shape)) < 0.01
            elif dt.kind == "f":
                b[name] = rng.standard_normal((batch, *shape), dtype=np.float32).astype(dt)
            else:
                info = np.iinfo(dt)
                b[name] = rng.integers(0, min(int(info.max), 255) + 1, (batch, *shape), dtype=dt)
        out.append(b)
    return out


# --------------------------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------------------------


class Peer:
    name: str
    durable: bool = False
    note: str = ""

    def append(self, batch: dict[str, np.ndarray], priorities: np.ndarray, step0: int) -> None:
        raise NotImplementedError

    def sample(self) -> None:
        raise NotImplementedError

    def end_run(self) -> None:
        """Called inside each timed sampling run, after its last sample."""

    def check(self) -> str:
        """One untimed sample; 'ok' or what is wrong."""
        return "ok"

    def close(self) -> None:
        pass


class OursPeer(Peer):
    name = "ours"
    durable = True
    note = ("replaybuf Engine in-process; durable (log fsync policy per --fsync, synced LMDB "
            "view); sample() returns data + ids, priorities, probabilities, weights, "
            "times_sampled, lineage; ItemsSampled logging included (flush_samples per run)")

    @staticmethod
    def version() -> str:
        try:
            from replaybuf.engine import Engine  # noqa: F401
        except ImportError as err:
            raise PeerUnavailable(f"replaybuf.engine not importable ({err})") from err
        return dist_version("replaybuf")

    def __init__(self, workload: str, capacity: int, args: argparse.Namespace,
                 data_dir: Path) -> None:
        from replaybuf.engine import Engine, EngineConfig
        from replaybuf.file_log import FileLogConfig
        from replaybuf.table_config import SelectorConfig, TableConfig

        shutil.rmtree(data_dir, ignore_errors=True)
        self.data_dir = data_dir
        self.table = workload.lower()
        self._batch = args.sample_batch
        self.engine = Engine(data_dir, EngineConfig(log=FileLogConfig(fsync=args.fsync),
                                                    map_size=args.map_size,
                                                    view_sync=args.view_sync))
        self.engine.create_table(TableConfig(
            self.table, workload_fields(workload), capacity=capacity,
            sampler=SelectorConfig("prioritized", alpha=ALPHA)))
        self._episode = 0

    def append(self, batch: dict[str, np.ndarray], priorities: np.ndarray, step0: int) -> None:
        n = len(priorities)
        self._episode += 1
        self.engine.append(self.table, batch, priorities=priorities,
                           lineage={"episode_id": self._episode, "step": np.arange(n)})

    def sample(self) -> None:
        self.engine.sample(self.table, self._batch, beta=BETA)

    def end_run(self) -> None:
        self.engine.flush_samples()

    def check(self) -> str:
        s = self.engine.sample(self.table, self._batch, beta=BETA, seed=0)
        w = s.info.weights
        ok = len(s.info.item_ids) == self._batch and np.all(np.isfinite(w)) and w.min() > 0
        return "ok" if ok else f"bad sample: {len(s.info.item_ids)} ids, weights {w.min()}..{w.max()}"

    def close(self) -> None:
        self.engine.close()


class CpprbPeer(Peer):
    name = "cpprb"
    note = "cpprb.PrioritizedReplayBuffer(alpha=0.6), in memory, not durable"

    version = staticmethod(cpprb_version)

    def __init__(self, workload: str, capacity: int, args: argparse.Namespace,
                 data_dir: Path) -> None:
        from cpprb import PrioritizedReplayBuffer

        env = {name: {"shape": shape or 1, "dtype": dt}
               for name, (dt, shape) in workload_fields(workload).items()}
        self.rb = PrioritizedReplayBuffer(capacity, env, alpha=ALPHA)
        self._batch = args.sample_batch

    def append(self, batch: dict[str, np.ndarray], priorities: np.ndarray, step0: int) -> None:
        self.rb.add(**batch, priorities=priorities)

    def sample(self) -> None:
        self.rb.sample(self._batch, beta=BETA)

    def check(self) -> str:
        s = self.rb.sample(self._batch, beta=BETA)
        w = s["weights"]
        return "ok" if len(w) == self._batch and np.all(np.isfinite(w)) and w.min() > 0 else "bad"


class TorchrlPeer(Peer):
    name = "torchrl"
    note = ("torchrl TensorDictPrioritizedReplayBuffer(alpha=0.6, beta=0.4) over "
            "LazyMemmapStorage (memory-mapped scratch files, not durable); priorities via "
            "the 'td_error' key on extend")

    @staticmethod
    def version() -> str:
        try:
            import torch
            from torchrl.data import LazyMemmapStorage, TensorDictPrioritizedReplayBuffer  # noqa
        except ImportError as err:
            raise PeerUnavailable(f"torchrl not importable ({err}); {INSTALL_HINT}") from err
        return (f"{dist_version('torchrl')} (torch {torch.__version__}, tensordict "
                f"{dist_version('tensordict')}, {torch.get_num_threads()} intra-op threads)")

    def __init__(self, workload: str, capacity: int, args: argparse.Namespace,
                 data_dir: Path) -> None:
        import torch
        from tensordict import TensorDict
        from torchrl.data import LazyMemmapStorage, TensorDictPrioritizedReplayBuffer

        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        self.data_dir = data_dir
        self._torch, self._td = torch, TensorDict
        self.rb = TensorDictPrioritizedReplayBuffer(
            alpha=ALPHA, beta=BETA, priority_key="td_error",
            storage=LazyMemmapStorage(capacity, scratch_dir=str(data_dir)),
            batch_size=args.sample_batch)

    def append(self, batch: dict[str, np.ndarray], priorities: np.ndarray, step0: int) -> None:
        torch = self._torch
        cols = {k: torch.from_numpy(v) for k, v in batch.items()}
        cols["td_error"] = torch.from_numpy(priorities.astype(np.float32))
        self.rb.extend(self._td(cols, batch_size=[len(priorities)]))

    def sample(self) -> None:
        self.rb.sample()

    def check(self) -> str:
        s = self.rb.sample()
        key = "priority_weight" if "priority_weight" in s.keys() else "_weight"
        w = s[key].numpy()
        return "ok" if np.all(np.isfinite(w)) and w.min() > 0 else "bad"

    def close(self) -> None:
        del self.rb
        gc.collect()
        shutil.rmtree(self.data_dir, ignore_errors=True)


PEER_CLASSES: dict[str, Any] = {"ours": OursPeer, "cpprb": CpprbPeer, "torchrl": TorchrlPeer}


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    workload: str
    peer: str
    items: int
    durable: bool
    append_items_per_s_runs: list[float] = field(default_factory=list)
    append_total_s: float = 0.0
    sample_tps_runs: list[float] = field(default_factory=list)
    sample_cpu_us_runs: list[float] = field(default_factory=list)
    rss_mb_delta_after_fill: float | None = None
    sanity: str = ""
    close_s: float | None = None

    def row(self) -> dict[str, Any]:
        return {
            "workload": self.workload, "peer": self.peer, "items": self.items,
            "durable": self.durable,
            "append_items_per_s_median": median(self.append_items_per_s_runs),
            "append_items_per_s_runs": self.append_items_per_s_runs,
            "append_items_per_s_overall": self.items / self.append_total_s
            if self.append_total_s else None,
            "append_total_s": self.append_total_s,
            "sample_transitions_per_s_median": median(self.sample_tps_runs),
            "sample_transitions_per_s_runs": self.sample_tps_runs,
            "sample_cpu_us_per_batch_median": median(self.sample_cpu_us_runs),
            "rss_mb_delta_after_fill": self.rss_mb_delta_after_fill,
            "sanity": self.sanity, "close_s": self.close_s,
        }


def fill(peer: Peer, cell: Cell, pool: list[dict[str, np.ndarray]], priorities: np.ndarray,
         batch: int, segments: int, log: Callable[[str], None]) -> None:
    """All items in appends of `batch`, cut into `segments` timed segments of whole batches."""
    n_items = len(priorities)
    n_batches = -(-n_items // batch)
    bounds = np.linspace(0, n_batches, segments + 1).round().astype(int)
    total = 0.0
    for s in range(segments):
        b0, b1 = int(bounds[s]), int(bounds[s + 1])
        if b1 <= b0:
            continue
        items = 0
        gc.collect()
        t0 = time.perf_counter()
        for b in range(b0, b1):
            lo, hi = b * batch, min((b + 1) * batch, n_items)
            data = pool[b % len(pool)]
            if hi - lo != batch:
                data = {k: v[: hi - lo] for k, v in data.items()}
            peer.append(data, priorities[lo:hi], lo)
            items += hi - lo
        dt = time.perf_counter() - t0
        total += dt
        cell.append_items_per_s_runs.append(items / dt)
    cell.append_total_s = total
    log(f"  {cell.workload} {peer.name}: filled {n_items:,} items in {total:.2f} s "
        f"({n_items / total:,.0f} items/s)")


def time_samples(peer: Peer, count: int) -> tuple[float, float]:
    """(wall s, process CPU s) for `count` samples plus the peer's end_run; gc off."""
    gc.collect()
    gc.disable()
    try:
        fn = peer.sample
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(count):
            fn()
        peer.end_run()
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        gc.enable()


def profile_ours(peer: OursPeer, args: argparse.Namespace) -> dict[str, Any]:
    """Where Engine.sample spends its time: its steps timed one by one, then cProfile."""
    from replaybuf.recorder import RecordedDraw
    from replaybuf.table import _unique_counts

    engine, name, bs = peer.engine, peer.table, args.sample_batch
    k = args.profile_samples
    out: dict[str, Any] = {"batch_size": bs, "samples": k, "workload": "W2",
                           "table_size": engine.describe_table(name).size}
    steps: dict[str, list[float]] = {}

    def rec(key: str, t0: int) -> int:
        t1 = time.perf_counter_ns()
        steps.setdefault(key, []).append((t1 - t0) / 1e3)
        return t1

    try:
        t = engine.table(name)
        recorder = engine._recorder  # private: mirrors Engine.sample step by step
        engine.flush_samples()
        c_proc, c_main = time.process_time(), time.thread_time()
        w0 = time.perf_counter()
        for i in range(k):
            t0 = time.perf_counter_ns()
            engine.sample(name, bs, beta=BETA, seed=10_000 + i)
            rec("engine.sample total", t0)
        engine.flush_samples()
        wall = time.perf_counter() - w0
        d_proc, d_main = time.process_time() - c_proc, time.thread_time() - c_main
        out["per_sample_cpu_us"] = {
            "main_thread": round(d_main / k * 1e6, 1),
            "other_threads (recorder logging ItemsSampled: encode, log append + fsync, "
            "view write, mirror)": round((d_proc - d_main) / k * 1e6, 1),
            "wall_incl_flush": round(wall / k * 1e6, 1),
        }
        for i in range(k):
            seed = 20_000 + i
            t0 = time.perf_counter_ns()
            rng = t._reseeder.reseed(seed)
            t0 = rec("reseed (== default_rng(seed))", t0)
            res = t._sampler.sample(bs, rng, beta=BETA)
            slots = np.asarray(res.slots, dtype=np.int64)
            t0 = rec("selector.sample (tree descent + weights)", t0)
            uniq, counts = _unique_counts(slots)
            t0 = rec("unique slots for times_sampled", t0)
            _ = t._gather(slots, t.config.field_names)  # compiled row copies, pooled buffer
            t0 = rec("gather data columns", t0)
            _ = {n: a[slots] for n, a in t._lineage.items()}
            _ = (t._req[slots], t._src[slots], ~t._str_known[slots])
            t0 = rec("gather lineage columns (numeric + RAM request ids/sources)", t0)
            with t.limiter.reserve_sample(bs, None):
                draw = t.draw(bs, beta=BETA, seed=seed)
            t0 = rec("limiter + Table.draw (all of the above, under the table lock)", t0)
            recorder.submit(RecordedDraw(name, draw.ids, seed, draw.lsn, draw.retired))
            t0 = rec("recorder.submit", t0)
        engine.flush_samples()
        out["steps_us_median"] = {key: round(statistics.median(v), 2) for key, v in steps.items()}
        out["steps_note"] = ("rows before 'limiter + Table.draw' are the parts of Table.draw done "
                             "separately; 'engine.sample total' is measured on its own calls; "
                             "the rest of the total is argument checks, the seed lock and "
                             "building SampleInfo/Lineage")
    except Exception as err:  # private internals moved: keep the cProfile part
        out["steps_error"] = f"{type(err).__name__}: {err}"
    prof = cProfile.Profile()
    prof.enable()
    for i in range(k):
        engine.sample(name, bs, beta=BETA, seed=30_000 + i)
    prof.disable()
    engine.flush_samples()
    st = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}({func})", "calls_per_sample": nc / k,
                     "tottime_us_per_sample": tt / k * 1e6, "cumtime_us_per_sample": ct / k * 1e6})
    rows.sort(key=lambda r: -r["tottime_us_per_sample"])
    out["cprofile_top_tottime"] = [{k2: (round(v, 2) if isinstance(v, float) else v)
                                    for k2, v in r.items()} for r in rows[: args.profile_top]]
    out["cprofile_note"] = ("main thread only (the recorder thread's logging is not in it); "
                            "cProfile overhead inflates Python-heavy rows")
    return out


def run_workload(workload: str, items: int, peers: list[str], args: argparse.Namespace,
                 log: Callable[[str], None]) -> tuple[list[Cell], dict[str, Any] | None]:
    fields = workload_fields(workload)
    pool = make_batches(fields, args.append_batch, args.batch_pool, args.seed)
    priorities = np.random.default_rng(args.seed + 1).random(items) + 1e-3
    live: dict[str, Peer] = {}
    cells: dict[str, Cell] = {}
    profile = None
    try:
        for name in peers:
            rss0 = rss_mb()
            peer = PEER_CLASSES[name](workload, items, args,
                                      args.data_dir / f"{workload.lower()}-{name}")
            live[name] = peer
            cell = Cell(workload, name, items, peer.durable)
            cells[name] = cell
            fill(peer, cell, pool, priorities, args.append_batch, args.runs, log)
            cell.rss_mb_delta_after_fill = round(rss_mb() - rss0, 1)
            cell.sanity = peer.check()
            for _ in range(args.warmup_samples):
                peer.sample()
            peer.end_run()
        order = list(live)
        for r in range(args.runs):
            for name in order[r % len(order):] + order[: r % len(order)]:
                wall, cpu = time_samples(live[name], args.sample_batches)
                cells[name].sample_tps_runs.append(args.sample_batches * args.sample_batch / wall)
                cells[name].sample_cpu_us_runs.append(cpu / args.sample_batches * 1e6)
            log(f"  {workload} sample run {r + 1}/{args.runs}: " + ", ".join(
                f"{n} {cells[n].sample_tps_runs[-1]:,.0f} tr/s" for n in order))
        if workload == "W2" and "ours" in live and args.profile:
            log("  profiling ours' sample path ...")
            profile = profile_ours(live["ours"], args)  # type: ignore[arg-type]
    finally:
        for name, peer in live.items():
            t0 = time.perf_counter()
            peer.close()
            if name in cells:
                cells[name].close_s = time.perf_counter() - t0
        live.clear()
        gc.collect()
    return [cells[n] for n in peers if n in cells], profile


# --------------------------------------------------------------------------------------------
# Restart phases: each in a fresh subprocess (`--phase open|rebuild|kill --phase-dir DIR`)
# --------------------------------------------------------------------------------------------


def _vm_hwm_mb() -> float:
    """This process's own peak RSS (VmHWM). Unlike ru_maxrss it is not inherited from the
    parent across fork/exec, so it is per phase."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return peak_rss_mb()


def phase_main(args: argparse.Namespace) -> int:
    """Child side. First a warm-up: a tiny throwaway engine (create, append 256 W2 items,
    reopen, sample) pays the one-off per-process costs (numba cache load/JIT, lazy imports).
    Then the timed open of `--phase-dir` (after deleting its view for `rebuild`) and one sample.
    Prints one JSON line with timings and this process's peak RSS (VmHWM). `kill` opens, samples
    one batch, waits until it is logged and SIGKILLs itself (the crash the next open recovers
    from)."""
    d = Path(args.phase_dir)
    t_import = time.perf_counter()
    from replaybuf.engine import Engine, EngineConfig
    from replaybuf.file_log import FileLogConfig
    from replaybuf.table_config import SelectorConfig, TableConfig

    import_s = time.perf_counter() - t_import
    config = EngineConfig(log=FileLogConfig(fsync=args.fsync), map_size=args.map_size,
                          view_sync=args.view_sync)
    if args.phase == "kill":
        engine = Engine(d, config)
        engine.sample(args.phase_table, args.sample_batch, beta=BETA, seed=1)
        engine.flush_samples()
        os.kill(os.getpid(), signal.SIGKILL)
    tiny = d.parent / f"{d.name}-warmup-{os.getpid()}"
    shutil.rmtree(tiny, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        with Engine(tiny, config) as e:
            e.create_table(TableConfig("w2", workload_fields("W2"), capacity=1024,
                                       sampler=SelectorConfig("prioritized", alpha=ALPHA)))
            b = make_batches(workload_fields("W2"), 256, 1, 0)[0]
            e.append("w2", b, priorities=np.ones(256), lineage={"episode_id": 1,
                                                                 "step": np.arange(256)})
        with Engine(tiny, config) as e:
            e.sample("w2", args.sample_batch, beta=BETA, seed=0)
    finally:
        shutil.rmtree(tiny, ignore_errors=True)
    warmup_s = time.perf_counter() - t0
    rss_before = _vm_hwm_mb()
    if args.phase == "rebuild":
        shutil.rmtree(d / "view", ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    engine = Engine(d, config)
    open_s, open_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    info = engine.describe_table(args.phase_table)
    t0 = time.perf_counter()
    engine.sample(args.phase_table, args.sample_batch, beta=BETA, seed=0)
    first_sample_s = time.perf_counter() - t0
    rebuild_reason = engine.rebuild_reason
    rss_open = _vm_hwm_mb()
    t0 = time.perf_counter()
    engine.close()
    close_s = time.perf_counter() - t0
    print(json.dumps({
        "phase": args.phase, "open_s": open_s, "open_cpu_s": open_cpu_s,
        "loaded_from": engine.loaded_from, "first_sample_s": first_sample_s,
        "close_s": close_s, "import_s": import_s, "warmup_tiny_engine_s": warmup_s,
        "size": info.size, "applied_lsn": info.applied_lsn, "rebuild_reason": rebuild_reason,
        "logged_inserts": getattr(info.rate_limiter, "inserts", None),
        "logged_sampled_items": getattr(info.rate_limiter, "samples", None),
        "peak_rss_mb": round(_vm_hwm_mb(), 1),
        "peak_rss_mb_before_open": round(rss_before, 1),
        "peak_rss_mb_through_first_sample": round(rss_open, 1),
    }))
    return 0


def run_restart(data_dir: Path, table: str, items: int, args: argparse.Namespace,
                log: Callable[[str], None]) -> dict[str, Any]:
    log_bytes = sum(p.stat().st_size for p in (data_dir / "log").rglob("*") if p.is_file())
    out: dict[str, Any] = {"data_dir": str(data_dir), "items": items, "log_mb": log_bytes / 1e6,
                           "method": "each run a fresh `python bench_engine.py --phase ...` "
                                     "subprocess; open_s = the Engine(...) constructor, "
                                     "timed after a tiny warm-up engine paid the per-process "
                                     "one-off costs (warmup_tiny_engine_s); peak RSS = the "
                                     "child's VmHWM"}
    for phase in RESTART_PHASES:
        runs = []
        for r in range(args.restart_runs):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase,
                   "--phase-dir", str(data_dir), "--phase-table", table, "--fsync", args.fsync,
                   "--map-size", str(args.map_size), "--sample-batch", str(args.sample_batch)] + (
                ["--view-sync"] if args.view_sync else [])
            if phase == "sigkill":
                kill = subprocess.run(cmd[:2] + ["--phase", "kill"] + cmd[4:], cwd=REPO_ROOT,
                                      capture_output=True, text=True,
                                      timeout=args.phase_timeout_s)
                if kill.returncode != -signal.SIGKILL:
                    runs.append({"error": kill.stderr.strip().splitlines()[-3:]})
                    log(f"  restart {phase} run {r + 1}: the child to kill failed "
                        f"{kill.stderr.strip()[-500:]}")
                    continue
                cmd[3] = "open"
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT,
                                  timeout=args.phase_timeout_s)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                runs.append({"error": proc.stderr.strip().splitlines()[-3:]})
                log(f"  restart {phase} run {r + 1}: FAILED {proc.stderr.strip()[-500:]}")
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["process_wall_s"] = wall
            runs.append(res)
            log(f"  restart {phase} run {r + 1}/{args.restart_runs}: open {res['open_s']:.2f} s "
                f"(CPU {res['open_cpu_s']:.2f} s, tables from {res['loaded_from']}), size "
                f"{res['size']:,}, peak RSS {res['peak_rss_mb']:.0f} MB, close "
                f"{res['close_s']:.2f} s")
        ok = [x for x in runs if "open_s" in x]
        summary: dict[str, Any] = {"runs": runs}
        if ok:
            med = statistics.median(x["open_s"] for x in ok)
            summary |= {"open_s_median": med,
                        "open_cpu_s_median": statistics.median(x["open_cpu_s"] for x in ok),
                        "close_s_median": statistics.median(x["close_s"] for x in ok),
                        "loaded_from": sorted({x["loaded_from"] for x in ok}),
                        "peak_rss_mb_max": max(x["peak_rss_mb"] for x in ok),
                        "first_sample_s_median": statistics.median(x["first_sample_s"]
                                                                   for x in ok),
                        "warmup_s_median": statistics.median(x["warmup_tiny_engine_s"]
                                                             for x in ok)}
            summary["log_holds"] = (f"{ok[0].get('logged_inserts')} appended items and "
                                    f"{ok[0].get('logged_sampled_items')} sampled item ids "
                                    "(ItemsSampled events, replayed too)")
            if phase == "rebuild":
                summary["items_per_s"] = items / med
                summary["goal_items_per_s"] = GOAL_REBUILD_ITEMS_PER_S
            else:
                summary["goal_s"] = GOAL_OPEN_S
        out[phase] = summary
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def markdown_tables(rows: list[dict[str, Any]], restart: dict[str, Any] | None,
                    runs: int) -> str:
    lines = [
        f"| workload | peer | durable | appends items/s (median of {runs} segments) | "
        f"sample transitions/s (median of {runs}) | min–max of runs | CPU µs/batch | "
        "ours / peer (sampling) | issue ref. tr/s | ours / ref |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ours = {r["workload"]: r for r in rows if r["peer"] == "ours"}
    for r in rows:
        tps = r["sample_transitions_per_s_median"]
        o = ours.get(r["workload"])
        o_tps = o["sample_transitions_per_s_median"] if o else None
        ratio = f"{o_tps / tps:.2f}×" if o_tps and tps and r["peer"] != "ours" else (
            "1.00×" if r["peer"] == "ours" else "n/a")
        ref = REFERENCE_SAMPLE_TPS.get(r["workload"], {}).get(r["peer"])
        ref_ratio = f"{o_tps / ref:.2f}×" if ref and o_tps else "-"
        runs_ = r["sample_transitions_per_s_runs"]
        spread = f"{min(runs_):,.0f}–{max(runs_):,.0f}" if runs_ else "-"
        durable = "yes (fsync)" if r["durable"] else "no (in memory)"
        lines.append(
            f"| {r['workload']} ({r['items']:,}) | {r['peer']} | {durable} | "
            f"{fmt(r['append_items_per_s_median'])} | {fmt(tps)} | {spread} | "
            f"{fmt(r['sample_cpu_us_per_batch_median'], ',.1f')} | {ratio} | "
            f"{fmt(ref)} | {ref_ratio} |")
    if restart and any(p in restart for p in RESTART_PHASES):
        lines += [""] + restart_table(restart)
        if "open" in restart and "log_holds" in restart["open"]:
            lines.append(f"\nThe W2 log replayed here holds {restart['open']['log_holds']}.")
    return "\n".join(lines)


def restart_table(restart: dict[str, Any]) -> list[str]:
    """The markdown rows of the restart phases."""

    lines = ["| ours, W2 restart (fresh process per run) | items | median s | CPU s | items/s | "
             "goal | peak RSS MB (process) | first sample ms | close s | one-off warm-up s |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    labels = {"open": "clean close + reopen (tables' snapshot, catch-up, tree rebuild)",
              "sigkill": "reopen after SIGKILL (view scan, catch-up, tree rebuild)",
              # loaded_from: scan+snapshot = the payloads older than the stale snapshot from it
              "rebuild": "rebuild from log (view deleted)"}
    for phase in RESTART_PHASES:
        goal = (f">= {GOAL_REBUILD_ITEMS_PER_S:,} items/s" if phase == "rebuild"
                else f"< {GOAL_OPEN_S:g} s")
        s = restart.get(phase, {})
        if "open_s_median" not in s:
            lines.append(f"| {labels[phase]} | {restart['items']:,} | failed | - | - | "
                         f"{goal} | - | - | - | - |")
            continue
        source = "" if phase == "rebuild" else f" ({'/'.join(s['loaded_from'])})"
        lines.append(
            f"| {labels[phase]}{source} | {restart['items']:,} | "
            f"{s['open_s_median']:.2f} | {s['open_cpu_s_median']:.2f} | "
            f"{restart['items'] / s['open_s_median']:,.0f} | {goal} | "
            f"{s['peak_rss_mb_max']:,.0f} | {s['first_sample_s_median'] * 1e3:.1f} | "
            f"{s['close_s_median']:.2f} | {s['warmup_s_median']:.2f} |")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workloads", default="W2,W3", help="comma-separated subset of W2,W3")
    p.add_argument("--w2-items", type=int, default=1_000_000)
    p.add_argument("--w3-items", type=int, default=50_000)
    p.add_argument("--append-batch", type=int, default=256, help="items per append")
    p.add_argument("--sample-batch", type=int, default=256, help="items per sample")
    p.add_argument("--sample-batches", type=int, default=1000, help="samples timed per run")
    p.add_argument("--warmup-samples", type=int, default=50, help="untimed samples after fill")
    p.add_argument("--runs", type=int, default=3,
                   help="timed sampling runs per peer, and timed fill segments")
    p.add_argument("--peers", default=",".join(ALL_PEERS),
                   help=f"comma-separated subset of {','.join(ALL_PEERS)}")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch.set_num_threads for torchrl (0 = torch's default); on a loaded "
                        "machine 1 avoids intra-op thread stalls in memmap gathers")
    p.add_argument("--fsync", default="group", help="ours: log fsync policy (durable: group)")
    p.add_argument("--view-sync", action="store_true", help="also fsync every view commit (default: the engine's default, off)")
    p.add_argument("--map-size", type=int, default=2**36, help="ours: initial LMDB map size")
    p.add_argument("--batch-pool", type=int, default=16,
                   help="distinct pre-generated append batches, cycled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restart-runs", type=int, default=3,
                   help="fresh-subprocess runs of each restart phase (0 = skip restart)")
    p.add_argument("--phase-timeout-s", type=float, default=600.0)
    p.add_argument("--restart-dir", type=Path, default=None,
                   help="only run the restart phases on this existing W2 data dir (table w2, "
                        "e.g. one kept with --keep-data) and report them")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--profile-samples", type=int, default=200)
    p.add_argument("--profile-top", type=int, default=15)
    p.add_argument("--data-dir", type=Path, default=BENCH_DIR / "out" / "engine-data",
                   help="where data dirs go (keep it on a real disk, not tmpfs)")
    p.add_argument("--keep-data", action="store_true", help="don't delete --data-dir at the end")
    p.add_argument("--quick", action="store_true",
                   help="smoke run (< 60 s): defaults become W2 20,000 items, W3 1,000, 3 runs x "
                        "50 samples, 1 restart run per phase, 50 profiled samples")
    p.add_argument("--json", default=str(BENCH_DIR / "out" / "engine.json"), help="output path")
    # internal: one restart phase in this (child) process
    p.add_argument("--phase", choices=("open", "rebuild", "kill"), help=argparse.SUPPRESS)
    p.add_argument("--phase-dir", help=argparse.SUPPRESS)
    p.add_argument("--phase-table", default="w2", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        return args
    if args.quick:  # new defaults; flags given explicitly still win
        p.set_defaults(w2_items=20_000, w3_items=1_000, sample_batches=50, warmup_samples=5,
                       runs=3, restart_runs=1, profile_samples=50)
        args = p.parse_args(argv)
    args.workload_list = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    args.peer_list = [s.strip() for s in args.peers.split(",") if s.strip()]
    bad = sorted(set(args.peer_list) - set(ALL_PEERS)) + sorted(
        set(args.workload_list) - set(ALL_WORKLOADS))
    if bad:
        p.error(f"unknown peer(s)/workload(s) {bad}")
    if min(args.runs, args.sample_batches, args.append_batch, args.sample_batch) < 1:
        p.error("--runs, --sample-batches, --append-batch and --sample-batch must be >= 1")
    for w in args.workload_list:
        n = args.w2_items if w == "W2" else args.w3_items
        if n < max(args.sample_batch, args.append_batch * args.runs):
            p.error(f"{w}: items must be >= --sample-batch and >= --append-batch x --runs")
    args.data_dir = args.data_dir.resolve()
    return args


def restart_only(args: argparse.Namespace) -> int:
    """`--restart-dir`: the restart phases alone, on a W2 data dir kept from a full run."""

    from replaybuf.engine import Engine, EngineConfig
    from replaybuf.file_log import FileLogConfig

    d = args.restart_dir.resolve()
    load0 = os.getloadavg()
    with Engine(d, EngineConfig(log=FileLogConfig(fsync=args.fsync), map_size=args.map_size,
                                view_sync=args.view_sync)) as e:
        items = e.describe_table("w2").size  # this open also rebuilds a view of an old format
    restart = run_restart(d, "w2", items, args, log)
    restart |= {"loadavg_start": list(load0), "loadavg_end": list(os.getloadavg())}
    params = {k: str(v) for k, v in vars(args).items()}
    write_json(args.json, {"restart": restart, "params": params})
    print("\n".join(restart_table(restart)))
    print(f"\nload average {load0[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
          f"JSON: {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.phase:
        return phase_main(args)
    if args.restart_dir is not None:
        return restart_only(args)
    started = time.time()
    mach = machine()
    if "torchrl" in args.peer_list and args.torch_threads > 0:
        try:
            import torch

            torch.set_num_threads(args.torch_threads)
        except ImportError:
            pass
    peers_info, available, notes = probe_peers(
        args.peer_list, PEER_CLASSES, lambda cls: {"durable": cls.durable, "note": cls.note})

    args.data_dir.mkdir(parents=True, exist_ok=True)
    cells: list[Cell] = []
    profile: dict[str, Any] | None = None
    restart: dict[str, Any] | None = None
    try:
        for w in args.workload_list:
            items = args.w2_items if w == "W2" else args.w3_items
            log(f"{w}: {items:,} items, peers {', '.join(available)}")
            got, prof = run_workload(w, items, available, args, log)
            cells += got
            profile = prof or profile
            if w == "W2" and "ours" in available and args.restart_runs > 0:
                log("W2 restart phases (ours) ...")
                restart = run_restart(args.data_dir / "w2-ours", "w2", items, args, log)
            elif w != "W2":
                shutil.rmtree(args.data_dir / f"{w.lower()}-ours", ignore_errors=True)
    finally:
        if not args.keep_data:
            shutil.rmtree(args.data_dir, ignore_errors=True)
    if restart is None:
        restart = {"skipped": "needs W2, ours and --restart-runs > 0"}

    mach["loadavg_end"] = list(os.getloadavg())
    rows = [c.row() for c in cells]
    ours = {r["workload"]: r for r in rows if r["peer"] == "ours"}
    for r in rows:
        o = ours.get(r["workload"])
        ot, pt = (o or {}).get("sample_transitions_per_s_median"), r[
            "sample_transitions_per_s_median"]
        r["sample_ratio_ours_over_peer"] = ot / pt if ot and pt else None
        oa, pa = (o or {}).get("append_items_per_s_median"), r["append_items_per_s_median"]
        r["append_ratio_ours_over_peer"] = oa / pa if oa and pa else None
        ref = REFERENCE_SAMPLE_TPS.get(r["workload"], {}).get(r["peer"])
        r["issue_reference_sample_tps"] = ref
        r["sample_ratio_ours_over_issue_reference"] = ot / ref if ot and ref else None
    notes += [
        "ours is durable (each append returns after its log frame is fsynced under --fsync "
        "group; LMDB view synced); cpprb and torchrl are in memory and not durable",
        "append rate: the fill of all items is cut into --runs segments of whole appends, each "
        "timed; the median segment is reported (a segment's rate includes every earlier item "
        "already present)",
        "sampling: --runs runs of --sample-batches samples per peer, peers interleaved with the "
        "order rotated per run; gc disabled in a run; ours' run includes flush_samples() at its "
        "end, so the background ItemsSampled logging (with its fsyncs) is paid inside it",
        "ours' sample returns data plus ids, priorities, probabilities, weights, times_sampled "
        "and lineage; cpprb returns data, weights, indexes; torchrl a TensorDict with data, "
        "index and priority_weight",
        "append batches are cycled from --batch-pool pre-generated random batches; priorities "
        "uniform in (0.001, 1.001]; ours' appends carry lineage (episode_id, step)",
        "issue reference numbers: median of 3, 2 cores, batch 256 (measured elsewhere)",
    ]
    versions = dist_versions(("numpy", "numba", "lmdb", "torch", "torchrl", "tensordict", "cpprb",
                              "replaybuf"))
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if not k.startswith("phase")}
    report = {
        **report_header("engine_w2_w3", SCHEMA_VERSION, started),
        "params": params | {"alpha": ALPHA, "beta": BETA},
        "machine": mach,
        "versions": versions,
        "peers": peers_info,
        "results": rows,
        "restart": restart,
        "profile": profile if profile is not None else {"skipped": "needs W2, ours, profiling"},
        "goals": {"sampling": "ours >= cpprb and torchrl, while durable",
                  "open_s": GOAL_OPEN_S, "rebuild_items_per_s": GOAL_REBUILD_ITEMS_PER_S},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "notes": notes,
    }
    out = write_json(args.json, report)

    print(f"## Engine W2/W3: append batch {args.append_batch}, sample batch {args.sample_batch}, "
          f"alpha {ALPHA}, beta {BETA}, fsync {args.fsync}, median of {args.runs} runs x "
          f"{args.sample_batches} samples{' (--quick)' if args.quick else ''}\n")
    print(markdown_tables(rows, restart, args.runs))
    print()
    if profile and "per_sample_cpu_us" in profile:
        print("CPU per W2 sample of ours (µs): " + ", ".join(
            f"{k}: {v:,.1f}" for k, v in profile["per_sample_cpu_us"].items()) + "\n")
    if profile and "steps_us_median" in profile:
        print(f"Profile of ours' W2 sample of {args.sample_batch} (median µs over "
              f"{profile['samples']} samples):\n")
        for key, v in profile["steps_us_median"].items():
            print(f"- {key}: {v:.1f} µs")
        print()
    if profile and "cprofile_top_tottime" in profile:
        print("cProfile, top functions by own time per sample (µs):\n")
        for r in profile["cprofile_top_tottime"][:10]:
            print(f"- {r['function']}: {r['tottime_us_per_sample']:.1f} own, "
                  f"{r['cumtime_us_per_sample']:.1f} cum, {r['calls_per_sample']:g} calls")
        print()
    print_footer(mach, report["peak_rss_mb"], "peak RSS of this process", notes, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
