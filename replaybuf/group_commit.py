"""Group commit: making a `FileLog`'s frames durable with as few fdatasyncs as it can.

This is the Python committer (`FileLogConfig.committer` ``"python"``, and wherever the native
one of `replaybuf.native_commit` cannot run); the ``"interval"`` syncer thread is here too.
Under ``fsync="group"`` appenders encode their frames under the log's write lock and queue them
here; nothing is written under that lock. One thread at a time holds the *committer role*: it
writes every queued frame with one ``writev``, runs one fdatasync, and releases the appenders
whose frames that covered. An append that finds the role free takes it and commits inline, so
a lone writer pays one write and one fdatasync and no thread handoff. Frames queued while a
commit runs form the next group; the committer thread then takes the role over and keeps it
while appends keep coming, running fdatasyncs back to back (`GroupCommit._committer_loop`).

Under ``fsync="interval"`` a background thread fdatasyncs every ``interval`` seconds instead.
A failed fdatasync is never retried: it fails the log (see `replaybuf.file_log`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from replaybuf.errors import DurabilityError
from replaybuf.segment import SegmentTable

__all__ = ["GroupCommit", "QueuedFrame", "sync_failure"]

#: A frame queued for the committer: ``(first_lsn, last_lsn, size in bytes, number of parts)``;
#: its parts sit in order in the queue's flat list of buffers.
QueuedFrame = tuple[int, int, int, int]


def sync_failure(segments: SegmentTable, target: int, exc: OSError) -> DurabilityError:
    """The error that fails a log whose fdatasync towards LSN ``target`` raised ``exc``."""

    return DurabilityError(
        f"fdatasync of {segments.current.path} failed (LSN up to {target} not durable): {exc}"
    )


class GroupCommit:
    """The fdatasync scheduling of one `FileLog`, and how far its log is durable.

    It shares the log's write lock: methods documented "holds the lock" are called with it
    held; the others take it themselves. Lock order: the write lock, then whatever
    ``wake_followers`` takes. An appender awaiting its group blocks on a private lock that the
    committer releases: one wake per append, the least a blocking append can cost under the
    GIL, and a woken appender returns without touching the write lock.

    Appender protocol under ``"group"`` (see `FileLog.append`): under the lock, `queue` the
    frame, then `join` the next commit; outside the lock, either `lead` (``join`` returned
    None: the caller holds the committer role) or `wait` on the returned lock.

    Why a committer thread under load rather than handing the role to a waiting appender:
    after an fdatasync the committer must win the GIL back from the appenders it released,
    and a successor would have to wake up and win it too before the next write. The thread
    instead writes the next group, then releases the previous one, then fdatasyncs, so the
    released appenders queue their next frames while the disk syncs.

    Group collection: appends take a ticket (`take_ticket`) before the write lock, so that an
    appender taking the idle role can tell how many appends are about to queue and wait (at
    most ``group_window``) for exactly those before its fdatasync (see `_collect_group`).

    Args:
        lock: the log's write lock.
        segments: the log's segment table; ``segments.fd`` is what gets fdatasynced.
        policy: the log's fsync policy; ``"group"`` and ``"interval"`` run a thread.
        group_window: `FileLogConfig.group_window`.
        interval: `FileLogConfig.interval`.
        write_group: writes queued buffers (``(parts, total bytes, frames)``) at the end of the
            log and makes them readable; called by the committer without the lock; raises
            `DurabilityError` after failing the log.
        last_lsn: returns the LSN of the last frame written (called holding the lock).
        fail: puts the log in its failed state and returns the error (holds the lock); must
            call `stop`.
        report_fatal: reports a failure to the log's ``on_fatal`` (called without the lock).
        wake_followers: wakes readers waiting for new records.
    """

    def __init__(
        self,
        lock: threading.Lock,
        segments: SegmentTable,
        *,
        policy: str,
        group_window: float,
        interval: float,
        write_group: Callable[[list, int, list[QueuedFrame]], None],
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
        self._write_group = write_group
        self._last_lsn = last_lsn
        self._fail = fail
        self._report_fatal = report_fatal
        self._wake_followers = wake_followers
        #: LSN up to which every record is fdatasynced (written under the lock).
        self.durable_lsn = 0
        self._stopped = False  # the log failed, or closed after its last commit
        # Frames queued and not yet written (in LSN order), and who waits for them.
        self._parts: list = []
        self._bytes = 0
        self._frames: list[QueuedFrame] = []
        self._target = 0  # last LSN queued (0: nothing queued)
        self._waiters: list[threading.Lock] = []
        # The committer role: taken by `join` returning None, handed to the committer thread
        # when a commit ends with appends waiting, freed when nothing is left to commit.
        self._leading = False
        self._role_free = threading.Condition(lock)  # `finish` awaiting the role
        self._wake_committer = threading.Lock()  # released to hand the thread the role
        self._wake_committer.acquire()
        self._committer_woken = False  # _wake_committer is released and not yet taken
        self._collected = threading.Condition(lock)  # an appender collecting a group
        self._uses_tickets = policy == "group" and group_window > 0
        self._ticket_lock = threading.Lock()
        self._entered = 0  # tickets issued
        self._written = 0  # ticketed appends past the lock (under the lock)
        self._collect_until = 0  # a committer waits for tickets <= this...
        self._collect_pending = 0  # ...of which this many are still to come
        self._tick = threading.Condition(lock)  # the interval thread between syncs
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the committer thread (``"group"``) or the syncer thread (``"interval"``)."""

        loop = {"group": self._committer_loop, "interval": self._interval_loop}.get(self._policy)
        if loop is not None:
            self._thread = threading.Thread(
                target=loop, name=f"FileLog-sync:{self._segments.directory.name}", daemon=True
            )
            self._thread.start()

    # --------------------------------------------------------------------- appender side

    def take_ticket(self) -> int:
        """Announce an append about to take the write lock; return its ticket (0: none).

        While a commit runs, appends take none: only an appender taking the idle role
        collects, and one that misses a racing append just commits a smaller group.
        """

        if not self._uses_tickets or self._leading:
            return 0
        with self._ticket_lock:
            self._entered += 1
            return self._entered

    def ticket_done(self, ticket: int) -> None:
        """A ticketed append got past the write lock (queued, or not). Holds the lock."""

        self._written += 1
        if ticket <= self._collect_until:
            self._collect_pending -= 1
            if self._collect_pending <= 0:
                self._collected.notify()

    def queue(self, parts: list, total: int, first: int, last: int) -> None:
        """Queue an encoded frame for the next commit. Holds the lock."""

        self._parts += parts
        self._bytes += total
        self._frames.append((first, last, total, len(parts)))
        self._target = last

    def join(self) -> threading.Lock | None:
        """Join the next commit, which covers everything queued so far. Holds the lock.

        Returns None when the caller now holds the committer role and must call `lead`;
        otherwise a lock to pass to `wait`.
        """

        if not self._leading:
            self._leading = True
            return None
        waiter = threading.Lock()
        waiter.acquire()
        self._waiters.append(waiter)
        return waiter

    @staticmethod
    def wait(waiter: threading.Lock) -> None:
        """Block until the commit covering the caller's frame is over. The caller then
        compares `durable_lsn` with its LSN: it falls short when the log failed."""

        waiter.acquire()  # released by a committer, or by `stop`

    def lead(self, collect: bool = True) -> None:
        """Commit everything queued (one write, one fdatasync); then pass the role on.

        Called without the lock by an appender (or `FileLog.sync`) that took the idle role.
        With ``collect`` it first waits for the appends about to queue (see
        `_collect_group`). If more appends queued meanwhile, it hands the role to the
        committer thread and returns.

        Raises:
            DurabilityError: the write or the fdatasync failed (the log is now failed).
        """

        group: list[threading.Lock] = []
        try:
            with self._lock:
                if self._stopped:
                    return
                if collect and self._uses_tickets and self._entered != self._written:
                    self._collect_group()
                    if self._stopped:
                        return
                parts, total, frames, group, target = self._take()
            self._commit(parts, total, frames, target)
            with self._lock:
                if target > self.durable_lsn:
                    self.durable_lsn = target
                if self._waiters and not self._stopped:
                    self._signal_committer()
                else:
                    self._free_role()
        except BaseException as exc:
            self._abort(exc)
            raise
        finally:
            for waiter in group:  # on failure they see durable_lsn short of their frames
                waiter.release()
        self._wake_followers()

    def finish(self) -> None:
        """Commit whatever is still queued, once the role is free (for `FileLog.close`).

        Called without the lock, after the log stopped accepting appends.

        Raises:
            DurabilityError: the final commit failed.
        """

        with self._lock:
            while self._leading and not self._stopped:
                self._role_free.wait()
            if self._stopped or not self._target:
                return
            self._leading = True
        self.lead(collect=False)

    def advance(self, lsn: int) -> None:
        """Record that everything up to ``lsn`` is durable. Holds the lock."""

        if lsn > self.durable_lsn:
            self.durable_lsn = lsn

    # --------------------------------------------------------------------- lifecycle

    def stop(self) -> None:
        """The log closed or failed: release every waiter and end the thread. Holds the lock."""

        self._stopped = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.release()
        if not self._committer_woken:
            self._committer_woken = True
            self._wake_committer.release()
        self._role_free.notify_all()
        self._collected.notify_all()
        self._tick.notify_all()

    def join_thread(self) -> None:
        """Wait for the thread to end (after `stop`); a no-op from that thread."""

        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # --------------------------------------------------------------------- committing

    def _take(self) -> tuple[list, int, list[QueuedFrame], list[threading.Lock], int]:
        """Take the queue: ``(parts, total bytes, frames, waiters, target LSN)``. Holds the lock."""

        parts, self._parts = self._parts, []
        total, self._bytes = self._bytes, 0
        frames, self._frames = self._frames, []
        waiters, self._waiters = self._waiters, []
        target = self._target or self._last_lsn()
        self._target = 0
        return parts, total, frames, waiters, target

    def _commit(self, parts: list, total: int, frames: list[QueuedFrame], target: int) -> None:
        """Write ``frames`` (if any), then fdatasync. Called without the lock.

        Raises:
            DurabilityError: either failed (the log is now failed).
        """

        if frames:
            self._write_group(parts, total, frames)
        self._fdatasync(target)

    def _fdatasync(self, target: int) -> None:
        # Only the role holder writes, rolls or (via `finish`) closes the segment: no dup.
        fd = self._segments.fd
        assert fd is not None
        try:
            os.fdatasync(fd)
        except OSError as exc:
            with self._lock:
                raise self._fail(sync_failure(self._segments, target, exc)) from exc

    def _signal_committer(self) -> None:
        """Hand the committer role to the committer thread. Holds the lock."""

        if not self._committer_woken:
            self._committer_woken = True
            self._wake_committer.release()

    def _free_role(self) -> None:
        """Nothing left to commit: free the role. Holds the lock."""

        self._leading = False
        self._role_free.notify_all()

    def _abort(self, exc: BaseException) -> None:
        """A commit raised: fail the log (if not already) and free the role. No lock held."""

        with self._lock:
            if not isinstance(exc, DurabilityError):  # a bug must not strand appenders
                self._fail(
                    DurabilityError(f"committing to {self._segments.directory} failed: {exc!r}")
                )
            self._free_role()

    def _collect_group(self) -> None:
        """Wait up to ``group_window`` for the appends about to queue. Holds the lock.

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

    def _committer_loop(self) -> None:
        """The committer thread under ``"group"``: holds the role while appends keep coming.

        Each turn: take the queue, write it, release the appenders of the previous turn (whose
        fdatasync returned), fdatasync. Released appenders need the GIL to return and queue
        their next frames; releasing them only once this turn's write is issued lets them run
        while the disk syncs, instead of delaying the write. When a turn finds nothing
        queued, it releases the previous group, frees the role and sleeps.
        """

        done: list[threading.Lock] = []
        group: list[threading.Lock] = []
        try:
            while True:
                self._wake_committer.acquire()
                with self._lock:
                    self._committer_woken = False
                    if self._stopped:
                        return
                    batch = self._take_or_free()
                while batch is not None:
                    parts, total, frames, group, target = batch
                    if frames:
                        self._write_group(parts, total, frames)
                    for waiter in done:
                        waiter.release()
                    done = []
                    self._fdatasync(target)
                    with self._lock:
                        if target > self.durable_lsn:
                            self.durable_lsn = target
                        if self._stopped:
                            return
                        batch = self._take_or_free()
                    done, group = group, []
                    self._wake_followers()
                for waiter in done:
                    waiter.release()
                done = []
        except BaseException as exc:
            self._abort(exc)
            if isinstance(exc, DurabilityError):
                self._report_fatal(exc)
            else:
                raise
        finally:
            for waiter in done + group:  # on failure they see durable_lsn short of theirs
                waiter.release()

    def _take_or_free(
        self,
    ) -> tuple[list, int, list[QueuedFrame], list[threading.Lock], int] | None:
        """The committer thread's next turn: take the queue, or free the role when nobody
        waits. Holds the lock."""

        if self._waiters:
            return self._take()
        self._free_role()
        return None

    def _interval_loop(self) -> None:
        """The syncer thread under ``"interval"``: fdatasync every ``interval`` seconds when
        anything new was written."""

        try:
            while True:
                with self._lock:
                    while not self._stopped:
                        self._tick.wait(self._interval)
                        if self._last_lsn() > self.durable_lsn:
                            break
                    if self._stopped:
                        return
                    target = self._last_lsn()
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
                with self._lock:
                    if target > self.durable_lsn:
                        self.durable_lsn = target
                self._wake_followers()
        except BaseException as exc:  # a bug here must fail the log loudly
            with self._lock:
                self._fail(
                    DurabilityError(
                        f"the syncer thread of {self._segments.directory} crashed: {exc!r}"
                    )
                )
            raise
