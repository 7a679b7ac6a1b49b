"""Side-by-side prioritized sum-tree benchmark (issue 3, workload W1).

W1: fill a tree of capacity C (C inserts in batches of `--batch-size`, timed: items/s), then repeat
{sample a batch with alpha=0.6, beta=0.4 -> slots and importance weights; update those slots'
priorities with new random values} and time it in microseconds per sample+update pair.

Peers, all in this one process and interleaved run by run (each run times `--pairs` pairs):
  ours     replaybuf.selectors.PrioritizedSelector (numba; stratified sampling).
  torchrl  torchrl's raw C++ trees (SumSegmentTreeFp32 + MinSegmentTreeFp32) driven exactly as
           torchrl 0.14's PrioritizedSampler drives them on CPU (see TorchrlTrees below).
  torchrl-bare  the same C++ trees called with numpy only, to separate tree cost from torch glue.
  cpprb    cpprb.PrioritizedReplayBuffer (stratified, unseedable std::mt19937); its sample also
           gathers the stored data, so it stores a minimal 1-float32 "obs" field.
  numpy    bench/numpy_sum_tree.py, a plain per-level-vectorised numpy tree.

Run every peer with the bench venv (`bash bench/setup_peers_venv.sh` builds it):
    .bench-venv/bin/python bench/bench_sum_tree.py
Under the project venv only `ours` and `numpy` run; the others are reported as unavailable.
`--quick` is a < 30 s smoke run. Writes JSON (`--json`, default bench/out/sum_tree.json) with
every parameter, peer versions, machine info, all run timings and peak RSS.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from _common import (  # noqa: E402
    INSTALL_HINT, PeerUnavailable, cpprb_version, dist_version, dist_versions, log, machine,
    median, peak_rss_mb, print_footer, probe_peers, report_header, rss_mb, write_json,
)
from numpy_sum_tree import NumpyPrioritizedSampler  # noqa: E402

SCHEMA_VERSION = 1
ALL_PEERS = ("ours", "torchrl", "torchrl-bare", "cpprb", "numpy")
ALPHA = 0.6
BETA = 0.4


# --------------------------------------------------------------------------------------------
# Peers. Each adapter gets numpy int64 slots and numpy priorities (float64, or float32 where the
# peer stores float32 and takes float32 input: torchrl), prepared outside the timed region.
# --------------------------------------------------------------------------------------------


class Peer:
    name: str
    note: str = ""
    priority_dtype: type = np.float64

    def fill(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        raise NotImplementedError

    def sample_update(self, new_priorities: np.ndarray) -> None:
        raise NotImplementedError

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One sample, as numpy (slots, weights), for the sanity check only."""
        raise NotImplementedError


class OursPeer(Peer):
    name = "ours"
    note = "replaybuf.selectors.PrioritizedSelector; insert/update/sample(batch, rng, beta)"

    @staticmethod
    def version() -> str:
        try:
            from replaybuf.selectors import PrioritizedSelector  # noqa: F401
        except ImportError as err:
            raise PeerUnavailable(
                f"replaybuf.selectors.PrioritizedSelector not importable ({err}); it is issue 3's "
                "selector, skipped until it lands"
            ) from err
        return dist_version("replaybuf")

    def __init__(self, capacity: int, batch_size: int, seed: int) -> None:
        from replaybuf.selectors import PrioritizedSelector

        self._sel = PrioritizedSelector(capacity, alpha=ALPHA)
        self._rng = np.random.default_rng(seed)
        self._batch = batch_size

    def fill(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        self._sel.insert(slots, priorities)

    def sample_update(self, new_priorities: np.ndarray) -> None:
        s = self._sel.sample(self._batch, self._rng, beta=BETA)
        self._sel.update(s.slots, new_priorities)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        s = self._sel.sample(self._batch, self._rng, beta=BETA)
        return np.asarray(s.slots), np.asarray(s.weights)


class TorchrlTrees(Peer):
    """torchrl 0.14.1 `PrioritizedSampler` (CPU, dtype float32, defaults) minus its storage.

    Reproduces `PrioritizedSampler.sample` and `.update_priority` line by line
    (torchrl/data/replay_buffers/samplers/prioritized.py), so the Python/torch glue torchrl
    pays is measured too:
      sample: p_sum = sum_tree.query(0, n); p_min = min_tree.query(0, n); i.i.d. masses
        `np.random.uniform(0, p_sum, size)` (torchrl's path when the sampler has no torch
        generator; not stratified); sum_tree.scan_lower_bound(mass); torch.as_tensor;
        clamp_max_(n - 1); weight = sum_tree[index]; step back over zero-priority leaves;
        weight = (weight / p_min) ** -beta.
      update: torch.as_tensor(priority), torch.as_tensor(index, long), drop negative indices,
        track the running max priority (for default priorities of new items),
        p = (p + eps) ** alpha; sum_tree[index] = p; min_tree[index] = p.
    Fill goes through the same update path (torchrl writes priorities of new items that way).
    """

    name = "torchrl"
    note = "raw SumSegmentTreeFp32 + MinSegmentTreeFp32, driven as PrioritizedSampler does"
    priority_dtype = np.float32

    @staticmethod
    def version() -> str:
        try:
            import torch  # noqa: F401
            from torchrl._torchrl import MinSegmentTreeFp32, SumSegmentTreeFp32  # noqa: F401
        except ImportError as err:
            raise PeerUnavailable(
                f"torchrl C++ segment trees not importable ({err}); {INSTALL_HINT}"
            ) from err
        return (f"{dist_version('torchrl')} (torch {torch.__version__}, "
                f"{torch.get_num_threads()} intra-op threads)")

    def __init__(self, capacity: int, batch_size: int, seed: int) -> None:
        import torch
        from torchrl._torchrl import MinSegmentTreeFp32, SumSegmentTreeFp32

        self._torch = torch
        self._sum_tree = SumSegmentTreeFp32(capacity)
        self._min_tree = MinSegmentTreeFp32(capacity)
        self._np_random = np.random.RandomState(seed)  # np.random.uniform's generator type
        self._batch = batch_size
        self._eps = 1e-8
        self._len = 0
        self._max_priority: tuple[Any, Any] = (None, None)

    def _sample(self) -> tuple[Any, Any]:
        torch = self._torch
        n = self._len
        p_sum = self._sum_tree.query(0, n)
        p_min = self._min_tree.query(0, n)
        if p_sum <= 0:
            raise RuntimeError("non-positive p_sum")
        if p_min <= 0:
            raise RuntimeError("non-positive p_min")
        mass = self._np_random.uniform(0.0, p_sum, size=self._batch)
        index = self._sum_tree.scan_lower_bound(mass)
        index = torch.as_tensor(index)
        if not index.ndim:
            index = index.unsqueeze(0)
        index.clamp_max_(n - 1)
        weight = torch.as_tensor(self._sum_tree[index])
        zero_weight = weight == 0
        while zero_weight.any():
            index = torch.where(zero_weight, index - 1, index)
            if (index < 0).any():
                raise RuntimeError("Failed to find a suitable index")
            weight = torch.as_tensor(self._sum_tree[index])
            zero_weight = weight == 0
        weight = torch.pow(weight / p_min, -BETA)
        return index, weight

    def _update_priority(self, index: Any, priority: Any) -> None:
        torch = self._torch
        priority = torch.as_tensor(priority).detach()
        index = torch.as_tensor(index, dtype=torch.long)
        valid_index = index >= 0
        if not valid_index.any():
            return
        if not valid_index.all():
            index = index[valid_index]
            priority = priority[valid_index]
        max_p, max_p_idx = priority.max(dim=0)
        cur_max_priority, _ = self._max_priority
        if cur_max_priority is None or max_p > cur_max_priority:
            self._max_priority = (max_p, index[max_p_idx])
        priority = torch.pow(priority + self._eps, ALPHA)
        self._sum_tree[index] = priority
        self._min_tree[index] = priority

    def fill(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        self._update_priority(slots, priorities)
        self._len = max(self._len, int(slots[-1]) + 1)

    def sample_update(self, new_priorities: np.ndarray) -> None:
        index, _ = self._sample()
        self._update_priority(index, new_priorities)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        index, weight = self._sample()
        return index.numpy(), weight.numpy()


class TorchrlBareTrees(Peer):
    """The same two torchrl C++ trees with numpy glue only: what the trees cost without torch ops.

    Not a configuration torchrl ships; it separates the C++ tree cost from the torch tensor glue
    in `TorchrlTrees` (each small torch op costs microseconds). Same sampling and weights.
    """

    name = "torchrl-bare"
    note = "torchrl's C++ trees called with numpy arrays only (no torch glue; not a torchrl API)"
    priority_dtype = np.float32

    version = staticmethod(TorchrlTrees.version)

    def __init__(self, capacity: int, batch_size: int, seed: int) -> None:
        from torchrl._torchrl import MinSegmentTreeFp32, SumSegmentTreeFp32

        self._sum_tree = SumSegmentTreeFp32(capacity)
        self._min_tree = MinSegmentTreeFp32(capacity)
        self._rng = np.random.default_rng(seed)
        self._batch = batch_size
        self._eps = np.float32(1e-8)
        self._len = 0

    def _sample(self) -> tuple[np.ndarray, np.ndarray]:
        n = self._len
        p_sum = self._sum_tree.query(0, n)
        p_min = self._min_tree.query(0, n)
        mass = (self._rng.random(self._batch, dtype=np.float32) * np.float32(p_sum))
        index = self._sum_tree.scan_lower_bound(mass)
        np.minimum(index, n - 1, out=index)
        weight = np.power(self._sum_tree[index] / np.float32(p_min), np.float32(-BETA))
        return index, weight

    def _update(self, index: np.ndarray, priorities: np.ndarray) -> None:
        p = np.power(priorities + self._eps, np.float32(ALPHA))
        self._sum_tree[index] = p
        self._min_tree[index] = p

    def fill(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        self._update(slots, priorities)
        self._len = max(self._len, int(slots[-1]) + 1)

    def sample_update(self, new_priorities: np.ndarray) -> None:
        index, _ = self._sample()
        self._update(index, new_priorities)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        return self._sample()


class CpprbPeer(Peer):
    name = "cpprb"
    note = "PrioritizedReplayBuffer(env_dict={'obs': 1 float32}); sample gathers obs too"

    version = staticmethod(cpprb_version)

    def __init__(self, capacity: int, batch_size: int, seed: int) -> None:
        from cpprb import PrioritizedReplayBuffer

        # cpprb draws from its own internal generator; it takes no seed.
        self._rb = PrioritizedReplayBuffer(
            capacity, {"obs": {"shape": 1, "dtype": np.float32}}, alpha=ALPHA
        )
        self._batch = batch_size
        self._obs = np.zeros((batch_size, 1), dtype=np.float32)

    def fill(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        obs = self._obs if len(slots) == len(self._obs) else np.zeros((len(slots), 1), np.float32)
        self._rb.add(obs=obs, priorities=priorities)  # cpprb writes at its own ring cursor

    def sample_update(self, new_priorities: np.ndarray) -> None:
        s = self._rb.sample(self._batch, beta=BETA)
        self._rb.update_priorities(s["indexes"], new_priorities)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        s = self._rb.sample(self._batch, beta=BETA)
        return s["indexes"].astype(np.int64), s["weights"]


class NumpyPeer(Peer):
    name = "numpy"
    note = "bench/numpy_sum_tree.py (float64 sum + min trees, per-level vectorised)"

    @staticmethod
    def version() -> str:
        return f"bench/numpy_sum_tree.py, numpy {np.__version__}"

    def __init__(self, capacity: int, batch_size: int, seed: int) -> None:
        self._s = NumpyPrioritizedSampler(capacity, alpha=ALPHA)
        self._rng = np.random.default_rng(seed)
        self._batch = batch_size

    def fill(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        self._s.insert(slots, priorities)

    def sample_update(self, new_priorities: np.ndarray) -> None:
        slots, _, _ = self._s.sample(self._batch, self._rng, beta=BETA)
        self._s.update(slots, new_priorities)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        slots, weights, _ = self._s.sample(self._batch, self._rng, beta=BETA)
        return slots, weights


PEER_CLASSES: dict[str, Any] = {
    "ours": OursPeer,
    "torchrl": TorchrlTrees,
    "torchrl-bare": TorchrlBareTrees,
    "cpprb": CpprbPeer,
    "numpy": NumpyPeer,
}


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One (capacity, peer) result."""

    capacity: int
    peer: str
    fill_items_timed: int = 0
    fill_s: float | None = None
    fill_items_per_s: float | None = None
    fill_note: str = ""
    pair_us_runs: list[float] = field(default_factory=list)
    pair_cpu_us_runs: list[float] = field(default_factory=list)
    rss_mb_after_fill: float | None = None
    sanity: str = ""
    weight_range: list[float] = field(default_factory=list)

    @property
    def pair_us_median(self) -> float | None:
        return median(self.pair_us_runs)

    @property
    def pair_cpu_us_median(self) -> float | None:
        return median(self.pair_cpu_us_runs)


def _fill(peer: Peer, cell: Cell, priorities: np.ndarray, batch: int, budget_s: float,
          timed: bool) -> None:
    """Inserts all C items in batches of `batch`; times up to `budget_s`, bulk-fills the rest."""
    capacity = len(priorities)
    all_slots = np.arange(capacity, dtype=np.int64)
    done = 0
    if timed:
        gc.collect()
        t0 = time.perf_counter()
        deadline = t0 + budget_s
        while done < capacity:
            end = min(done + batch, capacity)
            peer.fill(all_slots[done:end], priorities[done:end])
            done = end
            if (done // batch) % 64 == 0 and time.perf_counter() > deadline:
                break
        elapsed = time.perf_counter() - t0
        cell.fill_items_timed, cell.fill_s = done, elapsed
        cell.fill_items_per_s = done / elapsed
        if done < capacity:
            cell.fill_note = f"time-boxed: rate over the first {done} items ({budget_s:g} s budget)"
    else:
        cell.fill_note = "not timed (--skip-slow-fill)"
    bulk = max(batch, 1 << 16)  # untimed remainder in big batches
    while done < capacity:
        end = min(done + bulk, capacity)
        peer.fill(all_slots[done:end], priorities[done:end])
        done = end


def _sanity(peer: Peer, cell: Cell) -> None:
    """One untimed sample: slots in range and finite positive weights (normalisation may differ)."""
    slots, weights = peer.sample()
    slots = np.asarray(slots)
    weights = np.asarray(weights, dtype=np.float64)
    cell.weight_range = [float(weights.min()), float(weights.max())]
    problems = []
    if slots.min() < 0 or slots.max() >= cell.capacity:
        problems.append(f"slot out of range [{slots.min()}, {slots.max()}]")
    if not np.all(np.isfinite(weights)) or weights.min() <= 0:
        problems.append(f"weights not finite and positive: {cell.weight_range}")
    cell.sanity = "ok" if not problems else "; ".join(problems)


def _time_run(peer: Peer, pool: np.ndarray, pairs: int) -> tuple[float, float]:
    """(wall, process CPU) microseconds per sample+update pair over `pairs` pairs, gc off.

    CPU time (all threads of this process) is less disturbed than wall time when other work
    shares the cores, so both are kept.
    """
    n_pool = len(pool)
    gc.collect()
    gc.disable()
    try:
        fn = peer.sample_update
        c0 = time.process_time_ns()
        t0 = time.perf_counter_ns()
        for j in range(pairs):
            fn(pool[j % n_pool])
        elapsed = time.perf_counter_ns() - t0
        cpu = time.process_time_ns() - c0
    finally:
        gc.enable()
    return elapsed / pairs / 1e3, cpu / pairs / 1e3


_WARMED_UP: set[str] = set()


def _warm_up_once(name: str, args: argparse.Namespace, inputs: dict[Any, Any]) -> None:
    """Exercise a throwaway small instance once per process, so JIT compilation (ours: numba)
    and lazy imports stay out of the timed fill; first-call cost is measured separately."""
    if name in _WARMED_UP:
        return
    n = 4 * args.batch_size
    peer = PEER_CLASSES[name](n, args.batch_size, args.seed)
    init_p, pool = inputs[peer.priority_dtype]
    slots = np.arange(n, dtype=np.int64)
    for i in range(0, n, args.batch_size):
        peer.fill(slots[i:i + args.batch_size], init_p[i:i + args.batch_size])
    for j in range(3):
        peer.sample_update(pool[j % len(pool)])
    _WARMED_UP.add(name)


def run_capacity(capacity: int, peers: list[str], args: argparse.Namespace,
                 log: Callable[[str], None]) -> list[Cell]:
    rng = np.random.default_rng(args.seed)
    init_p64 = rng.random(capacity) + 1e-3  # priorities in (0.001, 1.001]
    pool64 = rng.random((args.priority_pool, args.batch_size)) + 1e-3
    inputs = {np.float64: (init_p64, pool64),
              np.float32: (init_p64.astype(np.float32), pool64.astype(np.float32))}
    slow_fill = args.skip_slow_fill and capacity >= args.slow_fill_capacity

    live: dict[str, Peer] = {}
    cells: dict[str, Cell] = {}
    for name in peers:
        cell = Cell(capacity, name)
        cells[name] = cell
        _warm_up_once(name, args, inputs)
        rss0 = rss_mb()
        peer = PEER_CLASSES[name](capacity, args.batch_size, args.seed)
        init_p, pool = inputs[peer.priority_dtype]
        _fill(peer, cell, init_p, args.batch_size, args.fill_budget_s, timed=not slow_fill)
        cell.rss_mb_after_fill = round(rss_mb() - rss0, 1)
        _sanity(peer, cell)
        for j in range(args.warmup_pairs):  # JIT compile, caches, branch predictors
            peer.sample_update(pool[j % len(pool)])
        live[name] = peer
        rate = f"{cell.fill_items_per_s:,.0f} items/s" if cell.fill_items_per_s else "-"
        log(f"  C={capacity:,} {name}: filled ({rate}), sanity {cell.sanity}")

    # Interleave peers run by run (rotating the order) so load drift on a shared machine
    # hits every peer alike.
    order = list(live)
    for r in range(args.runs):
        for name in order[r % len(order):] + order[: r % len(order)]:
            peer = live[name]
            pool = inputs[peer.priority_dtype][1]
            wall_us, cpu_us = _time_run(peer, pool, args.pairs)
            cells[name].pair_us_runs.append(wall_us)
            cells[name].pair_cpu_us_runs.append(cpu_us)
        log(f"  C={capacity:,} run {r + 1}/{args.runs}: " + ", ".join(
            f"{n} {cells[n].pair_us_runs[-1]:.1f} us" for n in order))
    live.clear()
    gc.collect()
    return [cells[n] for n in peers]


# --------------------------------------------------------------------------------------------
# First-call latency of ours, in fresh subprocesses
# --------------------------------------------------------------------------------------------

_FIRST_CALL_SNIPPET = textwrap.dedent(
    """
    import json, time
    t0 = time.perf_counter()
    import numpy as np
    from replaybuf.selectors import PrioritizedSelector
    t1 = time.perf_counter()
    capacity, batch = {capacity}, {batch}
    rng = np.random.default_rng(0)
    sel = PrioritizedSelector(capacity, alpha={alpha})
    sel.insert(np.arange(capacity, dtype=np.int64), rng.random(capacity) + 1e-3)
    t2 = time.perf_counter()
    s = sel.sample(batch, rng, beta={beta})
    sel.update(s.slots, rng.random(batch) + 1e-3)
    t3 = time.perf_counter()
    s = sel.sample(batch, rng, beta={beta})
    sel.update(s.slots, rng.random(batch) + 1e-3)
    t4 = time.perf_counter()
    print(json.dumps({{"import_s": t1 - t0, "construct_insert_s": t2 - t1,
                      "first_pair_s": t3 - t2, "second_pair_s": t4 - t3}}))
    """
)


def first_call_latency(args: argparse.Namespace) -> dict[str, Any]:
    """Cold (empty NUMBA_CACHE_DIR) and warm (cache filled by the cold run) first calls."""
    capacity = args.batch_size * 4
    code = _FIRST_CALL_SNIPPET.format(capacity=capacity, batch=args.batch_size, alpha=ALPHA,
                                      beta=BETA)
    cache_dir = tempfile.mkdtemp(prefix="replaybuf-bench-numba-")
    result: dict[str, Any] = {"capacity": capacity, "batch_size": args.batch_size,
                              "method": "fresh `python -c` subprocess: import, construct, insert "
                                        f"{capacity} items, one sample+update (first_pair_s)",
                              "numba_cache_dir": "fresh temp dir, emptied before the cold run"}
    try:
        for label in ("cold", "warm"):
            env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  env=env, timeout=args.first_call_timeout_s, cwd=REPO_ROOT)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                result[label] = {"error": proc.stderr.strip().splitlines()[-1:]}
                continue
            result[label] = json.loads(proc.stdout.strip().splitlines()[-1])
            result[label]["process_wall_s"] = wall
        result["cache_files"] = sum(len(f) for _, _, f in os.walk(cache_dir))
    except subprocess.TimeoutExpired:
        result["error"] = f"timed out after {args.first_call_timeout_s} s"
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def markdown_table(cells: list[Cell], ref: str | None) -> str:
    ref_label = ref or "-"
    lines = [
        f"| capacity | peer | sample+update µs/pair (median) | min–max of runs | CPU µs/pair | "
        f"ratio vs {ref_label} (peer/{ref_label}) | fill items/s | fill time ratio vs {ref_label} |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    by_cap: dict[int, dict[str, Cell]] = {}
    for c in cells:
        by_cap.setdefault(c.capacity, {})[c.peer] = c
    for cap, row in by_cap.items():
        base = row.get(ref) if ref else None
        for name, c in row.items():
            med = c.pair_us_median
            spread = (f"{min(c.pair_us_runs):.1f}–{max(c.pair_us_runs):.1f}"
                      if c.pair_us_runs else "-")
            ratio = (f"{med / base.pair_us_median:.2f}×"
                     if base and base.pair_us_median and med else "n/a")
            fill = f"{c.fill_items_per_s:,.0f}" if c.fill_items_per_s else "not timed"
            if c.fill_note.startswith("time-boxed"):
                fill += " (time-boxed)"
            fill_ratio = (f"{base.fill_items_per_s / c.fill_items_per_s:.2f}×"
                          if base and base.fill_items_per_s and c.fill_items_per_s else "n/a")
            med_s = f"{med:.1f}" if med is not None else "-"
            cpu = c.pair_cpu_us_median
            cpu_s = f"{cpu:.1f}" if cpu is not None else "-"
            lines.append(f"| {cap:,} | {name} | {med_s} | {spread} | {cpu_s} | {ratio} | {fill} | "
                         f"{fill_ratio} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--capacities", default="100000,1000000,10000000",
                   help="comma-separated tree capacities C")
    p.add_argument("--batch-size", type=int, default=256, help="sample/update/insert batch")
    p.add_argument("--pairs", type=int, default=2000, help="sample+update pairs timed per run")
    p.add_argument("--runs", type=int, default=5, help="timed runs per peer (median reported)")
    p.add_argument("--warmup-pairs", type=int, default=200, help="untimed pairs before run 1")
    p.add_argument("--peers", default=",".join(ALL_PEERS),
                   help=f"comma-separated subset of {','.join(ALL_PEERS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--priority-pool", type=int, default=64,
                   help="pre-generated batches of new priorities, cycled")
    p.add_argument("--fill-budget-s", type=float, default=120.0,
                   help="time box for one peer's timed fill; the rest is filled untimed")
    p.add_argument("--skip-slow-fill", action="store_true",
                   help="don't time the fill at capacities >= --slow-fill-capacity")
    p.add_argument("--slow-fill-capacity", type=int, default=10_000_000)
    p.add_argument("--no-first-call", dest="first_call", action="store_false",
                   help="skip the first-call latency subprocesses")
    p.add_argument("--first-call-timeout-s", type=float, default=300.0)
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run (< 30 s): C=20000, 5 runs x 100 pairs, 20 warm-up pairs")
    p.add_argument("--json", default=str(BENCH_DIR / "out" / "sum_tree.json"), help="output path")
    args = p.parse_args(argv)
    if args.quick:
        args.capacities, args.pairs, args.runs, args.warmup_pairs = "20000", 100, 5, 20
    args.capacity_list = [int(c) for c in args.capacities.split(",") if c.strip()]
    args.peer_list = [s.strip() for s in args.peers.split(",") if s.strip()]
    unknown = sorted(set(args.peer_list) - set(ALL_PEERS))
    if unknown:
        p.error(f"unknown peer(s) {unknown}; choose from {', '.join(ALL_PEERS)}")
    if args.runs < 1 or args.pairs < 1 or args.batch_size < 1:
        p.error("--runs, --pairs and --batch-size must be >= 1")
    if min(args.capacity_list) < args.batch_size:
        p.error(f"every capacity must be >= --batch-size ({args.batch_size})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    mach = machine()
    peers_info, available, notes = probe_peers(args.peer_list, PEER_CLASSES)
    ref = "ours" if "ours" in available else (available[0] if available else None)
    if ref and ref != "ours":
        notes.append(f"ratios are against {ref} because ours is unavailable")

    cells: list[Cell] = []
    for capacity in args.capacity_list:
        log(f"capacity {capacity:,}: peers {', '.join(available)}")
        cells += run_capacity(capacity, available, args, log)
    for name in available:
        peers_info[name]["note"] = PEER_CLASSES[name].note

    if args.first_call and "ours" in available:
        log("first-call latency of ours (cold and warm numba cache) ...")
        first_call = first_call_latency(args)
    else:
        reason = "--no-first-call" if not args.first_call else "ours unavailable"
        first_call = {"skipped": reason}

    mach["loadavg_end"] = list(os.getloadavg())
    notes += [
        "pair time = one sample of --batch-size (slots + importance weights) plus one update of "
        "those slots with new random priorities, per peer's own API; inputs pre-generated",
        "cpprb's sample also gathers its stored data: a single float32 'obs' per item",
        "sampling: ours and cpprb stratified (draw i in the i-th of B equal mass segments); "
        "torchrl and numpy i.i.d. uniform masses, as torchrl's PrioritizedSampler does",
        "each peer is warmed up once per process on a small throwaway instance (numba JIT for "
        "ours) before its timed fill; the first-call cost is measured separately",
        "torchrl = raw C++ SumSegmentTreeFp32/MinSegmentTreeFp32 driven as "
        "PrioritizedSampler(alpha, beta) does on CPU (i.i.d. masses, weights from the min tree)",
        "peers run interleaved in one process; gc disabled inside each timed run",
        "CPU µs/pair = process CPU time (all threads) per pair: steadier than wall time when "
        "other work shares the cores; ratios use wall time",
    ]
    versions = dist_versions(
        ("numpy", "numba", "torch", "torchrl", "tensordict", "cpprb", "replaybuf"))
    report = {
        **report_header("sum_tree_w1", SCHEMA_VERSION, started),
        "params": {
            "capacities": args.capacity_list,
            "batch_size": args.batch_size,
            "pairs": args.pairs,
            "runs": args.runs,
            "warmup_pairs": args.warmup_pairs,
            "alpha": ALPHA,
            "beta": BETA,
            "peers_requested": args.peer_list,
            "seed": args.seed,
            "priority_pool": args.priority_pool,
            "fill_batch": args.batch_size,
            "fill_budget_s": args.fill_budget_s,
            "skip_slow_fill": args.skip_slow_fill,
            "slow_fill_capacity": args.slow_fill_capacity,
            "first_call": args.first_call,
            "quick": args.quick,
        },
        "machine": mach,
        "versions": versions,
        "peers": peers_info,
        "reference_peer": ref,
        "results": [
            {
                "capacity": c.capacity,
                "peer": c.peer,
                "pair_us_median": c.pair_us_median,
                "pair_us_runs": c.pair_us_runs,
                "pair_cpu_us_median": c.pair_cpu_us_median,
                "pair_cpu_us_runs": c.pair_cpu_us_runs,
                "ratio_vs_reference": None,
                "fill_items_per_s": c.fill_items_per_s,
                "fill_items_timed": c.fill_items_timed,
                "fill_s": c.fill_s,
                "fill_note": c.fill_note,
                "rss_mb_delta_after_fill": c.rss_mb_after_fill,
                "sanity": c.sanity,
                "sample_weight_range": c.weight_range,
            }
            for c in cells
        ],
        "first_call": first_call,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "notes": notes,
    }
    ref_med = {c.capacity: c.pair_us_median for c in cells if c.peer == ref}
    for row in report["results"]:
        base = ref_med.get(row["capacity"])
        if base and row["pair_us_median"]:
            row["ratio_vs_reference"] = row["pair_us_median"] / base

    out = write_json(args.json, report)

    print(f"## Sum-tree W1: batch {args.batch_size}, alpha {ALPHA}, beta {BETA}, "
          f"median of {args.runs} runs x {args.pairs} pairs\n")
    print(markdown_table(cells, ref))
    print()
    if "cold" in first_call or "warm" in first_call:
        for label in ("cold", "warm"):
            fc = first_call.get(label, {})
            if "error" in fc:
                print(f"- first call of ours, {label}: error {fc['error']}")
            elif fc:
                print(f"- first call of ours, {label} numba cache: process {fc['process_wall_s']:.2f} s "
                      f"(import {fc['import_s']:.2f} s, construct+insert "
                      f"{fc['construct_insert_s']:.2f} s, first sample+update "
                      f"{fc['first_pair_s'] * 1e3:.1f} ms, second "
                      f"{fc['second_pair_s'] * 1e6:.0f} µs)")
    else:
        print(f"- first call of ours: skipped ({first_call.get('skipped', first_call.get('error'))})")
    print_footer(mach, report["peak_rss_mb"], "peak RSS", notes, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
