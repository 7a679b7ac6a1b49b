"""Shared helpers of the engine tests: a signature, batches, and a full state snapshot."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from replaybuf.engine import Engine

HERE = Path(__file__).resolve().parent

SIG = {"obs": (np.float32, (3,)), "tag": np.int64, "reward": np.float32}


def batch(tags: Any, *, reward: Any = None) -> dict[str, np.ndarray]:
    """n items whose obs row and tag both hold the tag, so sampled data checks itself."""

    tags = np.asarray(tags, dtype=np.int64)
    return {
        "obs": np.repeat(tags[:, None], 3, axis=1).astype(np.float32),
        "tag": tags,
        "reward": (tags * 0.5 if reward is None else np.asarray(reward)).astype(np.float32),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return (str(value.dtype), value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def snapshot(engine: Engine) -> dict[str, Any]:
    """Everything observable about the engine's state, as plain comparable values: per table
    the live counters, every present item as the RAM sees it, and every item's view record
    (present and evicted), plus the LSNs."""

    out: dict[str, Any] = {"applied_lsn": engine.applied_lsn}
    all_ids = np.arange(1, engine.view.next_item_id, dtype=np.uint64)
    records = engine.view.records(all_ids)
    for info in engine.list_tables():
        t = engine.table(info.name)
        ids = t.snapshot_ids().tolist()
        rl = info.rate_limiter
        out[info.name] = {
            "config": info.config,
            "size": info.size,
            "total_priority": info.total_priority,
            "max_priority": info.max_priority,
            "limiter": (rl.inserts, rl.samples, rl.deletes),
            "items": {i: _plain(t.item(i)) for i in ids},
            "records": {
                i: r.tolist() for i, r in sorted(records.items()) if int(r["table"]) == t.index
            },
            "strings": engine.view.read_strings(ids),
        }
    return out


def sample_summary(engine: Engine, table: str, seed: int, batch_size: int = 8) -> Any:
    """A seeded draw (fifo/lifo samplers return distinct items, so at most the table size)."""

    s = engine.sample(table, min(batch_size, engine.describe_table(table).size), seed=seed,
                      beta=0.5)
    return (
        s.info.item_ids.tolist(), s.info.weights.tolist(), s.info.probabilities.tolist(),
        s.info.priorities.tolist(), {k: v.tolist() for k, v in s.data.items()},
    )


def run_crash_child(path: Path, fsync: str, seed: int, kill_after: int,
                    view_sync: bool = False) -> list[tuple[int, int, int]]:
    """Run ``_engine_crash_child.py`` on `path` and SIGKILL it after `kill_after` acked
    appends (plus up to 20 ms); returns the acks as (first id, last id, first tag)."""

    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_engine_crash_child.py"), str(path), fsync, str(seed),
         "sync" if view_sync else "nosync"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=HERE,
    )
    acks = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.split()
            if parts[0] == b"A":
                acks.append(tuple(int(p) for p in parts[1:4]))
                if len(acks) >= kill_after:
                    time.sleep(random.Random(seed).random() * 0.02)
                    break
        else:  # pragma: no cover - the child died by itself
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "child died")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return acks


def check_acked(engine: Engine, acked: list[tuple[int, int, int]], table: str = "t") -> None:
    """Every acked item of `run_crash_child` is in the table with its tag."""

    t = engine.table(table)
    for first, last, tag in acked:
        for k, item_id in enumerate(range(first, last + 1)):
            item = t.item(item_id)
            assert item is not None, f"acked item {item_id} is missing"
            assert item["tag"] == tag + k
