"""Shared state builders of the job, drift and report tests."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import replaybuf.engine
import replaybuf.events
from replaybuf.engine import Engine, EngineConfig
from replaybuf.events import decode_event
from replaybuf.table_config import SelectorConfig, TableConfig

#: The reference time of every job in these tests (2027-01-15T08:00:00Z).
NOW = 1_800_000_000_000
HOUR = 3_600_000
SIG = {"obs": (np.float32, (2,)), "reward": np.float32}


def open_engine(path: Path) -> Engine:
    return Engine(path, EngineConfig.for_tests(seed=0))


class EventClock:
    """The time stamped on every event logged in this process while `event_clock` is active.

    The engine has no injectable clock: `replaybuf.events.make_event` stamps
    ``int(time.time() * 1000)`` and `Engine.append` / `Engine.sample` stamp
    ``time.time_ns() // 1_000_000``. This object stands in for the ``time`` module as those
    two modules see it (`time` and `time_ns` from `ms`, every other attribute the real one),
    so event times, and with them the view's ``priority_ms``, are known exactly. Only the
    stdlib clock is replaced: the engine, its view and the server run for real.
    """

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def set(self, ms: int) -> None:
        self.ms = ms

    def time(self) -> float:
        return (self.ms + 0.5) / 1000  # + 0.5 ms: int(x * 1000) gives back exactly `ms`

    def time_ns(self) -> int:
        return self.ms * 1_000_000

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextmanager
def event_clock(ms: int) -> Iterator[EventClock]:
    """Stamp events logged in this process with `EventClock.ms` (starting at `ms`)."""

    clock = EventClock(ms)
    with pytest.MonkeyPatch.context() as mp:
        for module in (replaybuf.events, replaybuf.engine):
            assert getattr(module, "time") is time, f"{module.__name__} reads no time module"
            mp.setattr(module, "time", clock)
        yield clock


def build_buffer(engine: Engine) -> None:
    """Table "replay" (fifo sampler): ten items with known ages, versions, episodes, request
    ids and priorities; items 1 and 2 sampled three times, item 2's priority lowered, item 6's
    reward corrected out of range, item 9 evicted by hand. Table "other" holds two items.

    Events are stamped by an `event_clock`: the tables and the append at NOW - 2 h, every
    later event at NOW - 0.5 h. So "prio set" (the last priority change, ``priority_ms``) is
    2 h ago except for item 2, and differs from the item time (lineage ``timestamp_ms``, age).

    ====  =======  ==  =======  =====  =========  ==========  =========  =========  =======
    id    age (h)  mv  episode  times  priority   prio set h  reward     payload    request
    ====  =======  ==  =======  =====  =========  ==========  =========  =========  =======
    1     240      1   1        3      1          2           0          ok         a
    2     1        1   1        3      0.001      0.5         0          ok         b
    3     1        2   1        0      1          2           0          ok         a
    4-8   1        3   2        0      1 (7: .001) 2          5: NaN, 6: 50  8: inf   c-g
    10    0.5      4   3        0      0.001      2           0          ok         b
    ====  =======  ==  =======  =====  =========  ==========  =========  =========  =======
    """

    with event_clock(NOW - 2 * HOUR) as clock:
        _build_buffer(engine, clock)


def _build_buffer(engine: Engine, clock: EventClock) -> None:
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
    clock.set(NOW - HOUR // 2)
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


# Fixtures of the job test modules (each imports them by name): `buffer_dir` holds
# `build_buffer`'s state once per module, `engine` opens a fresh copy of it per test.


@pytest.fixture(scope="module")
def buffer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("buffer")
    with open_engine(path) as engine:
        build_buffer(engine)
    return path


@pytest.fixture
def engine(buffer_dir: Path, tmp_path: Path) -> Iterator[Engine]:
    shutil.copytree(buffer_dir, tmp_path / "data")
    with open_engine(tmp_path / "data") as e:
        yield e
