"""The sample recorder: logs draws as ``ItemsSampled`` events in the background.

A sample is served from RAM and counted there at once (times sampled, retirements, the rate
limiter); the recorder then logs it through the engine's writer path, so the counts survive a
restart without an fsync on the sampling path. Pending draws are coalesced: the recorder waits
up to a short window for more, then logs at most a frame's worth per turn of the writer lock,
so appends waiting on that (fair) lock get in between.

A turn costs about 0.7 ms of CPU (a log frame and a view commit, each synced) besides its
draws (measured: ~1 ms for a turn of 3 W3 draws, ~0.1 ms more per draw), so turns start at
least `MIN_TURN_GAP` apart unless a frame is full, half of ``max_pending`` waits, a caller
waits (`SampleRecorder.wait`) or the recorder stops. With slow draws (W3's 14 MB batches, one
every few ms) a turn then takes 6-8 draws instead of ~3, and the recorder's CPU per draw
falls from ~350 to ~220 us, CPU the samplers get back on a machine whose cores are busy.

A crash forgets the draws not yet logged (the last few tens of milliseconds).
`SampleRecorder.wait` blocks until everything submitted so far is logged.

Thread-safety: every method is thread-safe. ``write`` is always called with the writer lock
held, from the recorder thread or from `SampleRecorder.flush_locked`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from replaybuf.locks import FairLock

__all__ = ["RecordedDraw", "SampleRecorder", "MIN_TURN_GAP"]

#: Seconds between the starts of two turns when nothing asks for sooner (see module docstring).
MIN_TURN_GAP = 0.025

_logger = logging.getLogger(__name__)


@dataclass
class RecordedDraw:
    """One draw to log: its items (one id per draw), seed, the LSN it was drawn at, and the
    items it retired (reached ``max_times_sampled``)."""

    table: str
    ids: np.ndarray
    seed: int
    lsn: int
    retired: np.ndarray


class SampleRecorder:
    """Background logger of draws (see the module docstring).

    Example::

        recorder = SampleRecorder(write=log_them, lock=writer_lock, max_pending=4096,
                                  window=0.002)
        recorder.submit(RecordedDraw("t", ids, seed, lsn, retired))
        recorder.wait(None)   # logged
        recorder.stop()
    """

    def __init__(self, *, write: Callable[[list[RecordedDraw]], None], lock: FairLock,
                 max_pending: int, window: float, frame: int = 256,
                 on_error: Callable[[BaseException], None] | None = None,
                 name: str = "replaybuf-recorder", min_gap: float = MIN_TURN_GAP) -> None:
        """Start the recorder thread.

        Args:
            write: logs a list of draws; called with `lock` held.
            lock: the writer lock.
            max_pending: `submit` blocks while this many draws wait (backpressure).
            window: seconds to wait for more draws before logging.
            frame: most draws logged per turn of the lock (up to 4x under a backlog).
            on_error: called once if `write` raises in the thread (which then stops).
            min_gap: seconds between the starts of turns unless a frame is full, a caller
                waits, half of `max_pending` is reached or the recorder stops.
        """

        self._write = write
        self._lock = lock
        self._max = max_pending
        self._window = window
        self._frame = frame
        self._min_gap = min_gap
        self._waiters = 0  # threads in wait(): log now rather than after the gap
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: list[RecordedDraw] = []
        self._submitted = 0
        self._recorded = 0
        self._stop = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, draw: RecordedDraw) -> None:
        """Queue a draw; blocks while `max_pending` draws wait. O(1)."""

        with self._cond:
            while len(self._pending) >= self._max and not self._stop and self.error is None:
                self._cond.wait(0.1)
            self._pending.append(draw)
            self._submitted += 1
            # Wake the recorder only when it has something new to decide: the first draw of
            # a frame, a full frame, or a backlog. A wake per draw costs both threads a GIL
            # hand-off.
            n = len(self._pending)
            if n == 1 or n == self._frame or n == self._max // 2:
                self._cond.notify_all()

    def flush_locked(self, limit: int | None = None) -> None:
        """Log up to `limit` pending draws now (all if None). The caller holds the lock."""

        with self._cond:
            if limit is None or limit >= len(self._pending):
                draws, self._pending = self._pending, []
            else:
                draws, self._pending = self._pending[:limit], self._pending[limit:]
            self._cond.notify_all()
        for i in range(0, len(draws), 1024):
            self._write(draws[i : i + 1024])
        with self._cond:
            self._recorded += len(draws)
            self._cond.notify_all()

    def wait(self, timeout: float | None) -> None:
        """Block until every draw submitted before this call is logged.

        Raises:
            TimeoutError: not done within `timeout` seconds.
        """

        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            if self._recorded >= target:
                return
            self._waiters += 1
            self._cond.notify_all()  # the recorder skips the rest of its gap
            try:
                while self._recorded < target and self.error is None:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(
                            f"{target - self._recorded} draws not logged after {timeout} s"
                        )
                    self._cond.wait(0.05 if left is None else min(left, 0.05))
            finally:
                self._waiters -= 1

    def _run(self) -> None:
        started = -float("inf")  # when the last turn began
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if not self._pending and self._stop:
                    return
                deadline = max(time.monotonic() + self._window, started + self._min_gap)
                enough = min(self._frame, self._max // 2)
                while not self._stop and not self._waiters and len(self._pending) < enough:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                # Under load (a backlog of frames) log bigger frames: an item drawn several
                # times in one frame costs one view write, so coalescing more is cheaper.
                backlog = len(self._pending)
                take = self._frame if backlog < 2 * self._frame else min(backlog,
                                                                         4 * self._frame)
            started = time.monotonic()
            with self._lock:
                try:
                    self.flush_locked(take)
                except BaseException as exc:
                    _logger.exception("logging sampled items failed; the recorder stops")
                    with self._cond:
                        self.error = exc
                        self._cond.notify_all()
                    if self._on_error is not None:
                        self._on_error(exc)
                    return

    def stop(self, *, flush: bool = True) -> None:
        """Stop the thread; with `flush`, log what is still pending first. Idempotent."""

        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()
        if flush and self.error is None:
            with self._lock:
                self.flush_locked()
