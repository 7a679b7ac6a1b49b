"""Lineage and reverse-query latency on a filled engine (issue 6: p99 lineage < 5 ms at 1M items).

Fills one table with --items items (default 1,000,000) in appends of --batch (each item with its
own request id, the worst case for parsing a batch; episodes of --episode-len items, one model
version per 10 appends), updates the priorities of --updates random items after every 10th
append, then times `Engine.get_lineage` and the reverse queries `Engine.find_items` by request
id, by episode and by model version (at most --version-limit ids) on random ids, in process.

This is the quick, in-process check. The issue's benchmark at 1M W2 items (export, lineage in
process and over gRPC, Subscribe events/s, medians of 3) is `bench/bench_export.py`.

    .venv/bin/python bench/bench_lineage.py --items 1000000 --batch 10000 --json out.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from replaybuf.engine import Engine, EngineConfig
from replaybuf.table_config import TableConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import peak_rss_mb, write_json  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--updates", type=int, default=1000)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--episode-len", type=int, default=1000)
    p.add_argument("--version-limit", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", default=None, help="data directory (default: a new temp dir)")
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    out: dict[str, object] = {"params": vars(a)}
    with Engine(a.dir or tempfile.mkdtemp(), EngineConfig.for_tests()) as e:
        e.create_table(TableConfig("t", {"obs": (np.float32, (4,)), "reward": np.float32},
                                   capacity=a.items))
        t0 = time.perf_counter()
        for k in range(a.items // a.batch):
            e.append("t", {"obs": np.zeros((a.batch, 4), np.float32),
                           "reward": np.ones(a.batch, np.float32)},
                     lineage={"episode_id": (k * a.batch + np.arange(a.batch)) // a.episode_len,
                              "model_version": k // 10,
                              "request_id": [f"r{k}-{i}" for i in range(a.batch)]})
            if k % 10 == 0:
                ids = rng.integers(1, (k + 1) * a.batch, a.updates)
                e.update_priorities("t", ids, rng.random(a.updates))
        out["fill_s"] = time.perf_counter() - t0
        ids = rng.integers(1, a.items, a.queries)
        batches = a.items // a.batch
        for name, call in (
            ("get_lineage", lambda i: e.get_lineage(i)),
            ("find_items", lambda i: e.find_items("t", request_id=f"r{i // a.batch}-{i % a.batch}",
                                                  include_evicted=True)),
            ("find_by_episode", lambda i: e.find_items("t", episode_id=(i - 1) // a.episode_len,
                                                       include_evicted=True)),
            ("find_by_model_version", lambda i: e.find_items(
                "t", model_version=(i * 7919) % max(1, batches // 10), include_evicted=True,
                limit=a.version_limit)),
        ):
            for i in ids[:20]:
                call(int(i))  # warm up
            lat = []
            for i in ids:
                s = time.perf_counter()
                call(int(i))
                lat.append(time.perf_counter() - s)
            ms = np.asarray(lat) * 1000
            out[name] = {q: float(np.percentile(ms, v)) for q, v in
                         (("p50_ms", 50), ("p99_ms", 99), ("max_ms", 100))}
    out["peak_rss_mib"] = peak_rss_mb()
    print(f"{'query':<22} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name in ("get_lineage", "find_items", "find_by_episode", "find_by_model_version"):
        r = out[name]
        print(f"{name:<22} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['max_ms']:>8.3f}")
    print(f"fill {out['fill_s']:.1f} s, peak RSS {out['peak_rss_mib']:.0f} MiB")
    if a.json:
        write_json(a.json, out)


if __name__ == "__main__":
    main()
