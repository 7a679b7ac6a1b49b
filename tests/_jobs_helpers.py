"""Shared state builders of the job, drift and report tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from replaybuf.engine import Engine, EngineConfig
from replaybuf.events import decode_event
from replaybuf.table_config import SelectorConfig, TableConfig

#: The reference time of every job in these tests (2027-01-15T08:00:00Z).
NOW = 1_800_000_000_000
HOUR = 3_600_000
SIG = {"obs": (np.float32, (2,)), "reward": np.float32}


def open_engine(path: Path) -> Engine:
    return Engine(path, EngineConfig.for_tests(seed=0))


def build_buffer(engine: Engine) -> None:
    """Table "replay" (fifo sampler): ten items with known ages, versions, episodes, request
    ids and priorities; items 1 and 2 sampled three times, item 2's priority lowered, item 6's
    reward corrected out of range, item 9 evicted by hand. Table "other" holds two items.

    ====  =======  ==  =======  =====  =========  =========  =========  =======
    id    age (h)  mv  episode  times  priority   reward     payload    request
    ====  =======  ==  =======  =====  =========  =========  =========  =======
    1     240      1   1        3      1          0          ok         a
    2     1        1   1        3      0.001      0          ok         b
    3     1        2   1        0      1          0          ok         a
    4-8   1        3   2        0      1 (7: .001) 5: NaN, 6: 50  8: inf   c-g
    10    0.5      4   3        0      0.001      0          ok         b
    ====  =======  ==  =======  =====  =========  =========  =========  =======
    """

    engine.create_table(TableConfig("replay", SIG, capacity=100, sampler=SelectorConfig("fifo")))
    engine.create_table(TableConfig("other", SIG, capacity=10))
    n = 10
    obs = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
    obs[7, 1] = np.inf  # item 8: invalid payload
    reward = np.zeros(n, np.float32)
    reward[4] = np.nan  # item 5: invalid reward
    ages_h = np.array([240, 1, 1, 1, 1, 1, 1, 1, 0.5, 0.5])
    lineage = {
        "episode_id": np.array([1, 1, 1, 2, 2, 2, 2, 2, 3, 3]),
        "step": np.arange(n),
        "model_version": np.array([1, 1, 2, 3, 3, 3, 3, 3, 4, 4]),
        "timestamp_ms": (NOW - ages_h * HOUR).astype(np.int64),
        "request_id": ["a", "b", "a", "c", "d", "e", "f", "g", "h", "b"],
    }
    prios = np.array([1, 1, 1, 1, 1, 1, 0.001, 1, 1, 0.001])
    engine.append("replay", {"obs": obs, "reward": reward}, priorities=prios, lineage=lineage)
    engine.append("other", {"obs": obs[:2], "reward": reward[:2]},
                  lineage={"timestamp_ms": NOW - 1000 * HOUR, "request_id": ["a", "a"]})
    engine.update_priorities("replay", [2], [0.001])
    engine.correct_rewards("replay", [6], [50.0], source="model")
    engine.evict("replay", [9], reason="manual")
    for seed in range(3):
        engine.sample("replay", 2, seed=seed)  # fifo: items 1 and 2 each time
    engine.flush_samples()


def events_after(log: Any, lsn: int) -> list[tuple[str, Any]]:
    """``(kind, body)`` of every event after `lsn` (timestamps left out)."""

    out = []
    for rec in log.read(lsn + 1):
        ev = decode_event(rec.payload)
        kind = ev.WhichOneof("body")
        out.append((kind, getattr(ev, kind)))
    return out


def job_file(path: Path, body: str, *, job_id: str = "hygiene", table: str = "replay") -> Path:
    path.write_text(f'[job]\nid = "{job_id}"\ntable = "{table}"\nnow = {NOW}\n\n{body}')
    return path
