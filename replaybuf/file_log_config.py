"""Settings of the embedded file log: `FileLogConfig`, validated on construction."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from replaybuf.errors import DurabilityError, InvalidArgumentError
from replaybuf.log import FSYNC_POLICIES

__all__ = ["FileLogConfig"]

_MIN_SEGMENT_BYTES = 4096
_MAX_SEGMENT_BYTES = 2**40


def is_int(value: object) -> bool:
    """An int and not a bool."""

    return isinstance(value, int) and not isinstance(value, bool)


def is_seconds(value: object) -> bool:
    """A finite int or float (not a bool)."""

    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


@dataclass(frozen=True)
class FileLogConfig:
    """Settings of a `FileLog`. Validated on construction.

    Example::

        FileLogConfig(fsync="interval", interval=0.01)
    """

    fsync: str = "group"
    """When appends are fsynced (``fdatasync``), strongest first:

    * ``"always"``: one fdatasync per append before it returns. An ack survives power loss.
      Costs one fdatasync (~0.1-1 ms) per append, serialized: the slowest policy.
    * ``"group"`` (default): group commit. Concurrent appends share fdatasyncs: one covers
      every frame written before it started, and each append returns once its frame is
      durable (see `committer`). Same guarantee as ``always``; under concurrency costs one
      fdatasync per group, not per append.
    * ``"interval"``: a background thread fdatasyncs every `interval` seconds; appends return
      after the write (``durable=False``). Survives a process crash (``kill -9``); a power
      loss may lose up to `interval` seconds of acknowledged appends.
    * ``"none"``: never fdatasync except when a segment is sealed, on `FileLog.sync` and on
      close (``durable=False``). Survives a process crash only. For tests and benchmarks.
    """

    group_window: float = 0.002
    """Seconds (at most) that an append finding no commit running waits, before its write and
    fdatasync, for the appends already on their way to the write lock, so that a burst of
    concurrent appends shares one fdatasync; 0 commits at once. Only used under ``"group"``
    with ``committer="python"`` (the native committer never waits before an fdatasync).
    A lone writer never waits, and under load fdatasyncs run back to back without waiting
    (see `replaybuf.group_commit`)."""

    interval: float = 0.05
    """Seconds between background fdatasyncs under ``"interval"`` (the power-loss window)."""

    committer: str = "native"
    """Who runs the fdatasyncs under ``"group"`` when appends overlap (same guarantee either
    way): ``"native"``, a loop compiled by numba that runs without the GIL, so consecutive
    fdatasyncs never wait for Python threads (`replaybuf.native_commit`; Linux with glibc,
    else ``"python"`` is used); ``"python"``, a Python committer thread
    (`replaybuf.group_commit`). A lone writer runs its own fdatasync under both."""

    segment_bytes: int = 256 * 2**20
    """Roll to a new segment file when an append would take the current one past this size
    (a single larger frame gets a segment of its own). Smaller segments are cheaper to delete
    by retention; each roll costs two fsyncs and a directory fsync."""

    dedup_window: int = 128
    """Producer sequences remembered per producer for idempotent retries: a retry of
    ``producer_seq`` is recognized while ``seq > newest_seq - dedup_window`` (sequences may
    arrive out of order within that window). An append with an older, unknown sequence is
    rejected with `InvalidArgumentError`, since it cannot be told from a retry. The window is
    rebuilt from the log on open. Memory is about 150 bytes per remembered sequence."""

    dedup_producers: int = 4096
    """Producers whose sequences are remembered (least recently used are forgotten first).
    Worst-case dedup memory is about ``150 * dedup_window * dedup_producers`` bytes (~80 MB
    with the defaults). A forgotten producer's retries are appended again."""

    on_fatal: Callable[[DurabilityError], None] | None = None
    """Called once, from the failing thread, when a write or fsync fails (the log is then
    failed and raises `DurabilityError` from every call). Servers pass e.g.
    ``lambda exc: os._exit(70)`` to restart and recover. It must not call back into the log."""

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise InvalidArgumentError(
                f"FileLogConfig.fsync={self.fsync!r} is not a known policy; use one of "
                f"{FSYNC_POLICIES} ('group' for durable acks at low cost, 'interval' to trade "
                "a power-loss window for throughput)"
            )
        if not is_seconds(self.group_window) or not 0 <= self.group_window <= 1:
            raise InvalidArgumentError(
                f"FileLogConfig.group_window={self.group_window!r} must be seconds in [0, 1]; "
                "the default 0.002 suits most disks"
            )
        if not is_seconds(self.interval) or not 0 < self.interval <= 60:
            raise InvalidArgumentError(
                f"FileLogConfig.interval={self.interval!r} must be seconds in (0, 60]; it bounds "
                "what a power loss can take under fsync='interval'"
            )
        if self.committer not in ("native", "python"):
            raise InvalidArgumentError(
                f"FileLogConfig.committer={self.committer!r} must be 'native' or 'python'"
            )
        if not is_int(self.segment_bytes) or not (
            _MIN_SEGMENT_BYTES <= self.segment_bytes <= _MAX_SEGMENT_BYTES
        ):
            raise InvalidArgumentError(
                f"FileLogConfig.segment_bytes={self.segment_bytes!r} must be an int in "
                f"[{_MIN_SEGMENT_BYTES}, {_MAX_SEGMENT_BYTES}]; the default is 256 MiB"
            )
        if not is_int(self.dedup_window) or self.dedup_window < 1:
            raise InvalidArgumentError(
                f"FileLogConfig.dedup_window={self.dedup_window!r} must be an int >= 1 (the "
                "number of recent producer sequences that retries are recognized within)"
            )
        if not is_int(self.dedup_producers) or self.dedup_producers < 1:
            raise InvalidArgumentError(
                f"FileLogConfig.dedup_producers={self.dedup_producers!r} must be an int >= 1 "
                "(how many producers' recent sequences to remember)"
            )
        if self.on_fatal is not None and not callable(self.on_fatal):
            raise InvalidArgumentError(
                f"FileLogConfig.on_fatal={self.on_fatal!r} must be a callable taking the "
                "DurabilityError, or None"
            )

