#!/usr/bin/env python
"""Time reopening an engine: fast open from the LMDB view, and a rebuild from the log alone.

Fills one table with ``--items`` small transitions (obs float32[4], action int64, reward
float32, with lineage) in batches of ``--batch``, closes it, then reopens it ``--runs`` times
(the view's scan into RAM plus catch-up) and once more after deleting the view (full replay).
Prints a table of medians and writes JSON with every parameter and the peak RSS.

Usage::

    .venv/bin/python bench/bench_engine_open.py --items 1000000      # goal: open < 3 s
    .venv/bin/python bench/bench_engine_open.py --items 20000 --runs 1   # smoke
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from replaybuf.engine import Engine, EngineConfig
from replaybuf.file_log import FileLogConfig
from replaybuf.table_config import TableConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fsync", default="none", help="log fsync policy while filling")
    ap.add_argument("--view-sync", action="store_true", help="also fsync every view commit (default: the engine's default, off)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    config = EngineConfig(log=FileLogConfig(fsync=args.fsync), map_size=2**34,
                          view_sync=args.view_sync)
    sig = {"obs": (np.float32, (4,)), "action": np.int64, "reward": np.float32}
    root = Path(tempfile.mkdtemp(prefix="bench-open-"))
    try:
        start = time.perf_counter()
        with Engine(root, config) as engine:
            engine.create_table(TableConfig("t", sig, capacity=args.items))
            rng = np.random.default_rng(0)
            for i in range(0, args.items, args.batch):
                n = min(args.batch, args.items - i)
                engine.append("t", {"obs": rng.random((n, 4), np.float32),
                                    "action": np.arange(n), "reward": np.ones(n, np.float32)},
                              priorities=rng.random(n) + 0.1,
                              lineage={"episode_id": i, "step": np.arange(n)})
        fill = time.perf_counter() - start
        opens = []
        for _ in range(args.runs):
            start = time.perf_counter()
            with Engine(root, config) as engine:
                opens.append(time.perf_counter() - start)
                assert engine.describe_table("t").size == args.items
        shutil.rmtree(root / "view")
        start = time.perf_counter()
        with Engine(root, config) as engine:
            rebuild = time.perf_counter() - start
        view_mb = sum(p.stat().st_size for p in (root / "view").iterdir()) / 1e6
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "params": vars(args) | {"json": str(args.json) if args.json else None},
        "fill_s": fill, "open_s": opens, "open_median_s": statistics.median(opens),
        "rebuild_s": rebuild, "view_mb": view_mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(f"{'items':>10} {'fill s':>8} {'open s (median)':>16} {'rebuild s':>10} {'view MB':>8}")
    print(f"{args.items:>10} {fill:>8.2f} {result['open_median_s']:>16.2f} {rebuild:>10.2f} "
          f"{view_mb:>8.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
