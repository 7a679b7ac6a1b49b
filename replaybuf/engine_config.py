"""`EngineConfig`: the settings of an `replaybuf.engine.Engine`, each with its trade-off."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace

from replaybuf._validation import is_int as _is_int
from replaybuf.errors import InvalidArgumentError
from replaybuf.file_log import FileLogConfig

__all__ = ["EngineConfig"]


@dataclass(frozen=True)
class EngineConfig:
    """Settings of an `Engine`. Validated on construction.

    Example::

        EngineConfig(log=FileLogConfig(fsync="always"), map_size=2**36)
    """

    log: FileLogConfig = field(default_factory=FileLogConfig)
    """The event log's settings; ``log.fsync`` is the durability policy of every ack."""

    map_size: int = 2**40
    """Initial LMDB map size in bytes (sparse: costs only what is used). The map doubles when
    full, so a small value only costs a few retried transactions."""

    max_readers: int = 1024
    """LMDB reader slots (concurrent read transactions across processes)."""

    catch_up_events: int = 4096
    """Events per view transaction while catching up or rebuilding on open."""

    catch_up_bytes: int = 64 * 2**20
    """Log bytes per view transaction while catching up or rebuilding on open."""

    seed: int | None = None
    """Seeds the seeds of samples drawn without one (reproducible sessions); None: OS entropy."""

    view_sync: bool = False
    """fsync every view commit (LMDB ``sync``). Off by default: the log is fsynced before every
    durable ack and the view is derived from it, so syncing the view too would write and sync
    each payload twice (about +20% W3 insert throughput without it, bench/RESULTS.md). A
    process crash still loses nothing; if the machine goes down (OS crash, power loss) while the
    engine is open, the next open rebuilds the view from the log (`replaybuf.view_marker`).
    True: the view survives that without a rebuild, at the cost of a second fsync per commit."""

    record_window: float = 0.002
    """Seconds the sample recorder waits for more draws before logging them, so that busy
    samplers share frames and writers get the writer lock in between."""

    max_pending_samples: int = 4096
    """Draws waiting to be logged as ItemsSampled before `Engine.sample` blocks (backpressure
    when the log cannot keep up)."""

    fold_draws: int = 1 << 16
    """Sample draws and priority updates the view keeps as one record per transaction before
    folding them into its dense per-item arrays (at least this many, or 1/8 of the items if
    more; see `replaybuf.hot_meta`). Larger: less disk write per change, more RAM and work on
    open."""

    def __post_init__(self) -> None:
        if not isinstance(self.log, FileLogConfig):
            raise InvalidArgumentError(f"log is {self.log!r}; pass a FileLogConfig")
        for name, lo in (("map_size", 2**16), ("max_readers", 1), ("catch_up_events", 1),
                         ("catch_up_bytes", 1), ("max_pending_samples", 1),
                         ("fold_draws", 1)):
            v = getattr(self, name)
            if not _is_int(v) or v < lo:
                raise InvalidArgumentError(f"{name} is {v!r}; it must be an integer >= {lo}")
        if not isinstance(self.record_window, numbers.Real) or not 0 <= self.record_window <= 1:
            raise InvalidArgumentError(
                f"record_window is {self.record_window!r}; it must be seconds in [0, 1]"
            )
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise InvalidArgumentError(f"seed is {self.seed!r}; pass an integer >= 0 or None")

    @classmethod
    def for_tests(cls, **overrides: object) -> EngineConfig:
        """No fsync of log or view (a process crash loses nothing; a power loss may) and a
        1 GiB initial map."""

        base = cls(log=FileLogConfig(fsync="none"), map_size=2**30, view_sync=False)
        return replace(base, **overrides)  # type: ignore[arg-type]
