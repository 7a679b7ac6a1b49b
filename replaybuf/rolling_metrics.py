"""Rolling per-table metrics computed from the applied event stream, in RAM.

`RollingMetrics.observe` is fed every applied event by the engine (live writes and the
catch-up replay at open) and keeps one-second buckets over the last `window` seconds, keyed by
the event's own timestamp, plus cumulative eviction counters. Nothing is persisted: the
counters **reset when the engine restarts**; the 5-minute window is refilled only by the events
replayed at open (those past the view's ``applied_lsn``) and by new ones. Cost: O(1) per event
(one column decode per append for the reward mean); O(window seconds) per `snapshot`.
Thread-safe.

Keys of `snapshot` (served as ``TableInfo.metrics`` and as Prometheus gauges):

* ``reward_mean_5m``: mean reward of the items appended in the window, as appended (0 if none).
* ``appends_per_s``: items appended per second over the window (or since the engine opened,
  if that is shorter).
* ``items_appended_5m``, ``corrections_5m``: items appended / reward corrections in the window.
* ``correction_rate_5m``: ``corrections_5m / items_appended_5m`` (0 if nothing was appended).
* ``evicted.<reason>``: items evicted since the engine opened, for every `EvictionReason`
  (``evicted.capacity``, ``evicted.review_rejected``, ...).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

import numpy as np

from replaybuf.applier import Applied
from replaybuf.diff import reason_name
from replaybuf.tensors import from_tensor
from replaybuf.v1 import events_pb2

__all__ = ["RollingMetrics", "REASONS"]

#: Every eviction reason name, so each table reports the same keys.
REASONS = tuple(reason_name(v) for v in events_pb2.EvictionReason.values()[1:])


class _Table:
    def __init__(self) -> None:
        # [second, items appended, reward sum, rewards counted, corrections]
        self.buckets: deque[list[float]] = deque()
        self.evicted = dict.fromkeys(REASONS, 0)

    def bucket(self, second: int) -> list[float]:
        if self.buckets and self.buckets[-1][0] >= second:
            # late or same-second events join the newest bucket: order is the log's
            return self.buckets[-1]
        b = [float(second), 0.0, 0.0, 0.0, 0.0]
        self.buckets.append(b)
        return b


class RollingMetrics:
    """Rolling metrics of every table (see the module docstring).

    Args:
        window: seconds the rolling values cover (default 300).
        clock: wall-clock seconds (tests pass a fake).
    """

    def __init__(self, window: float = 300.0, clock: Callable[[], float] = time.time) -> None:
        self.window = float(window)
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._tables: dict[str, _Table] = {}

    def observe(self, applied: Iterable[Applied],
                reward_field: Callable[[str], str | None]) -> None:
        """Count applied events; `reward_field(table)` names a table's reward field (or None)."""

        with self._lock:
            for a in applied:
                if a.kind not in ("items_appended", "rewards_corrected", "items_evicted"):
                    continue
                body = getattr(a.event, a.kind)
                t = self._tables.get(body.table)
                if t is None:
                    t = self._tables[body.table] = _Table()
                if a.kind == "items_evicted":
                    name = reason_name(body.reason) if body.reason else "unspecified"
                    t.evicted[name] = t.evicted.get(name, 0) + int(a.ids.size)
                    continue
                b = t.bucket(int(a.event.timestamp_ms // 1000))
                if a.kind == "rewards_corrected":
                    b[4] += a.ids.size
                    continue
                b[1] += a.ids.size
                field = reward_field(body.table)
                if field and a.ids.size and a.rows is not None:  # decoded by the applier
                    r = a.rows[field].astype(np.float64)
                    b[2] += float(r.sum())
                    b[3] += r.size
                elif field and a.ids.size:
                    for col in body.data.columns:
                        if col.name == field:
                            r = from_tensor(col.tensor, name=field).astype(np.float64)
                            b[2] += float(r.sum())
                            b[3] += r.size
                            break
            self._trim(self._clock())

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        for t in self._tables.values():
            while t.buckets and t.buckets[0][0] < horizon:
                t.buckets.popleft()

    def snapshot(self, table: str) -> dict[str, float]:
        """The table's current metrics (every key, zeros for a table with no events)."""

        now = self._clock()
        with self._lock:
            self._trim(now)
            t = self._tables.get(table) or _Table()
            sums = np.array([b[1:] for b in t.buckets]).sum(axis=0) if t.buckets else \
                np.zeros(4)
            evicted = dict(t.evicted)
        appended, rsum, rn, corrections = (float(x) for x in sums)
        span = max(1.0, min(self.window, now - self._started))
        out = {
            "reward_mean_5m": rsum / rn if rn else 0.0,
            "appends_per_s": appended / span,
            "items_appended_5m": appended,
            "corrections_5m": corrections,
            "correction_rate_5m": corrections / appended if appended else 0.0,
        }
        out.update({f"evicted.{k}": float(v) for k, v in evicted.items()})
        return out
