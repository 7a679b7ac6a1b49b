"""Group commit: making a `FileLog`'s appended frames durable with as few fdatasyncs as it can.

Appenders write their frames under the log's write lock; `GroupCommit` decides who fdatasyncs
and when, and tracks `GroupCommit.durable_lsn`. Under ``fsync="group"``, an append that finds
nothing else pending fdatasyncs inline (no thread handoff); otherwise it queues a waiter, and the
syncer thread runs one fdatasync for every queued append. Under ``fsync="interval"`` the same
thread fdatasyncs every ``interval`` seconds. A failed fdatasync is never retried: it fails the
log (see `replaybuf.file_log`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from replaybuf.errors import DurabilityError
from replaybuf.segment import SegmentTable

__all__ = ["GroupCommit"]


class GroupCommit:
    """The fdatasync scheduling of one `FileLog`, and how far its log is durable.

    It shares the log's write lock: methods documented "holds the lock" are called with it
    held, and the syncer thread takes it to pick up work. Lock order: the write lock, then
    whatever ``wake_followers`` takes. Appenders awaiting a sync each block on a private lock
    that the syncer releases, so a woken appender returns without touching the write lock.

    Group collection: appends take a ticket (`take_ticket`) before the write lock, so that an
    idle syncer can tell how many appends are queued on it and wait (at most ``group_window``)
    for exactly those before its fdatasync (see `_collect_group`).

    Args:
        lock: the log's write lock, held while frames are written.
        segments: the log's segment table; ``segments.fd`` is what gets fdatasynced.
        policy: the log's fsync policy; only ``"group"`` and ``"interval"`` run a thread.
        group_window: `FileLogConfig.group_window`.
        interval: `FileLogConfig.interval`.
        last_lsn: returns the LSN of the last frame written (called holding the lock).
        fail: puts the log in its failed state and returns the error (holds the lock); must
            call `stop`.
        report_fatal: reports a failure to the log's ``on_fatal`` (called without the lock).
        wake_followers: wakes readers waiting for new durable records.
    """

    def __init__(
        self,
        lock: threading.Lock,
        segments: SegmentTable,
        *,
        policy: str,
        group_window: float,
        interval: float,
        last_lsn: Callable[[], int],
        fail: Callable[[DurabilityError], DurabilityError],
        report_fatal: Callable[[DurabilityError], None],
        wake_followers: Callable[[], None],
    ) -> None:
        self._lock = lock
        self._segments = segments
        self._policy = policy
        self._window = group_window
        self._interval = interval
        self._last_lsn = last_lsn
        self._fail = fail
        self._report_fatal = report_fatal
        self._wake_followers = wake_followers
        #: LSN up to which every record is fdatasynced (written under the lock).
        self.durable_lsn = 0
        self._stopped = False  # the log is closed or failed
        self._work = threading.Condition(lock)  # the syncer thread awaiting work
        self._collected = threading.Condition(lock)  # the syncer collecting a group
        self._waiters: list[threading.Lock] = []
        self._syncer_idle = False
        self._syncing = False  # an fdatasync of a group is running (syncer or inline)
        self._uses_tickets = policy == "group" and group_window > 0
        self._ticket_lock = threading.Lock()
        self._entered = 0  # tickets issued
        self._written = 0  # ticketed appends that finished (under the lock)
        self._collect_until = 0  # the syncer waits for tickets <= this...
        self._collect_pending = 0  # ...of which this many are still queued
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the syncer thread (``"group"`` and ``"interval"`` only)."""

        if self._policy in ("group", "interval"):
            self._thread = threading.Thread(
                target=self._syncer_loop,
                name=f"FileLog-sync:{self._segments.directory.name}",
                daemon=True,
            )
            self._thread.start()

    # --------------------------------------------------------------------- appender side

    def take_ticket(self) -> int:
        """Announce an append about to take the write lock; return its ticket (0: none)."""

        if not self._uses_tickets:
            return 0
        with self._ticket_lock:
            self._entered += 1
            return self._entered

    def ticket_done(self, ticket: int) -> None:
        """A ticketed append left the write lock. Holds the lock."""

        self._written += 1
        if ticket <= self._collect_until:
            self._collect_pending -= 1
            if self._collect_pending <= 0:
                self._collected.notify()

    def enqueue(self, last: int) -> tuple[int, threading.Lock | None]:
        """Arrange for LSNs up to ``last`` (written, not yet durable) to be synced under
        ``"group"``. Holds the lock.

        Returns ``(fd, None)`` when nothing else is pending: the caller fdatasyncs that fd
        itself with `sync_inline`. Otherwise ``(-1, waiter)``: the caller acquires ``waiter``,
        which the syncer releases after its fdatasync (or on failure, with `durable_lsn`
        then short of ``last``).
        """

        if not self._syncing and not self._waiters and self._entered == self._written:
            # Nothing else is pending: sync in the appender, sparing two thread handoffs.
            self._syncing = True
            assert self._segments.fd is not None
            return os.dup(self._segments.fd), None
        waiter = threading.Lock()
        waiter.acquire()
        self._waiters.append(waiter)
        if self._syncer_idle:
            self._work.notify()
        return -1, waiter

    def sync_inline(self, fd: int, target: int) -> None:
        """fdatasync ``fd`` (a dup, closed here) for an appender that found nothing pending.

        Raises:
            DurabilityError: the fdatasync failed (the log is now failed).
        """

        try:
            os.fdatasync(fd)
        except OSError as exc:
            with self._lock:
                self._syncing = False
                raise self._fail(
                    DurabilityError(f"fdatasync of {self._segments.current.path} failed: {exc}")
                ) from exc
        finally:
            os.close(fd)
        with self._lock:
            self._syncing = False
            if target > self.durable_lsn:
                self.durable_lsn = target
            if self._waiters and self._syncer_idle:
                self._work.notify()  # appends that queued during this fdatasync
        self._wake_followers()

    def advance(self, lsn: int) -> None:
        """Record that everything up to ``lsn`` is durable. Holds the lock."""

        if lsn > self.durable_lsn:
            self.durable_lsn = lsn

    # --------------------------------------------------------------------- lifecycle

    def stop(self) -> None:
        """The log closed or failed: release every waiter and end the syncer. Holds the lock."""

        self._stopped = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.release()
        self._work.notify_all()
        self._collected.notify_all()

    def join(self) -> None:
        """Wait for the syncer thread to end (after `stop`); a no-op from that thread."""

        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # --------------------------------------------------------------------- syncer thread

    def _collect_group(self) -> None:
        """Wait up to ``group_window`` for the appends queued on the write lock. Holds the lock.

        Only the appends that had taken a ticket when collection began are waited for, so
        a steady stream of new appends cannot hold a group open.
        """

        pending = self._entered - self._written
        if pending <= 0:
            return
        self._collect_until = self._entered
        self._collect_pending = pending
        deadline = time.monotonic() + self._window
        while self._collect_pending > 0 and not self._stopped:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._collected.wait(remaining)
        self._collect_until = 0

    def _syncer_loop(self) -> None:
        """The syncer thread under ``"group"`` and ``"interval"``.

        Group commit: appenders write their frames under the write lock and queue a waiter;
        the syncer takes every queued waiter, runs one fdatasync, which covers every frame
        written so far, and releases them. Appends written during that fdatasync form the
        next group, synced as soon as it returns: fdatasyncs run back to back under load,
        with no thread handoff between them. When the syncer was idle, it first waits (at
        most ``group_window``) for the appends already queued on the write lock, so that a
        burst shares one fdatasync; a lone writer never waits.

        Under ``"interval"`` it fdatasyncs every ``interval`` seconds when anything is new.
        """

        group = self._policy == "group"
        timeout = None if group else self._interval
        batch: list[threading.Lock] = []
        target = 0
        try:
            while True:
                with self._lock:
                    if target:
                        self._syncing = False
                        if target > self.durable_lsn:
                            self.durable_lsn = target
                        done, batch = batch, []
                        for waiter in done:
                            waiter.release()
                        self._wake_followers()
                    target = 0
                    idle = False
                    while not self._stopped:
                        if group:
                            if self._waiters and not self._syncing:
                                break
                        elif idle and self._last_lsn() > self.durable_lsn:
                            break
                        idle = True
                        self._syncer_idle = True
                        self._work.wait(timeout)
                        self._syncer_idle = False
                    if self._stopped:
                        return
                    if group and idle and self._window > 0:
                        self._collect_group()
                        if self._stopped:
                            return
                    target = self._last_lsn()
                    self._syncing = True
                    batch, self._waiters = self._waiters, []
                    # A dup keeps the file open if a roll replaces the fd meanwhile; a roll
                    # seals (fdatasyncs) the old segment, so this sync still covers `target`.
                    assert self._segments.fd is not None
                    fd = os.dup(self._segments.fd)
                try:
                    os.fdatasync(fd)
                except OSError as exc:
                    with self._lock:
                        error = self._fail(
                            DurabilityError(
                                f"fdatasync of {self._segments.current.path} failed: {exc}"
                            )
                        )
                    self._report_fatal(error)
                    return
                finally:
                    os.close(fd)
        except BaseException as exc:  # a bug here must not leave appenders waiting forever
            with self._lock:
                self._fail(
                    DurabilityError(
                        f"the syncer thread of {self._segments.directory} crashed: {exc!r}"
                    )
                )
            raise
        finally:
            for waiter in batch:  # on failure: they see durable_lsn short of their frame
                waiter.release()
