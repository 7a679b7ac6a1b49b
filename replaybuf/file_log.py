"""The embedded event log: segment files in one directory, group-committed with fdatasync.

`FileLog` implements `replaybuf.log.Log` on local files (format: `replaybuf.log_format`).
It is the default backend: one process owns a log directory (an exclusive ``flock`` on
``DIR/LOCK`` enforces it) and every append is one CRC-checked frame. Its parts: segment files
(`replaybuf.segment`), fdatasync scheduling under ``group`` (`replaybuf.native_commit` by
default, `replaybuf.group_commit`; `FileLogConfig.committer`), recovery on open
(`replaybuf.recovery`), reads (`replaybuf.log_reader`), settings (`replaybuf.file_log_config`).

Durability model (DESIGN.md, invariant 4): write and fsync errors are fatal. After one, the log
raises `DurabilityError` from every call, and the process should exit and reopen the log, whose
recovery truncates any partial frame. An fsync is never retried, because Linux may drop dirty
pages after a write-back error and report success the second time ("fsyncgate").
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from replaybuf.errors import (
    ClosedError,
    DurabilityError,
    FailedPreconditionError,
    InvalidArgumentError,
    LogCorruptionError,
)
from replaybuf.file_log_config import FileLogConfig, is_int, is_seconds
from replaybuf.frame import NO_PRODUCER, Frame, RecordParts, encode_frame
from replaybuf.group_commit import GroupCommit, QueuedFrame
from replaybuf.log import AppendResult, Log, LogRecord, PendingAppend, make_ack
from replaybuf.log_reader import read_records
from replaybuf.native_commit import NativeCommit, native_unavailable
from replaybuf.producer_dedup import ProducerDedup, check_producer
from replaybuf.recovery import analyze_log, corruption_message
from replaybuf.segment import INDEX_EVERY, SegmentTable, fsync_dir
from replaybuf.segment import write_all as _write_all  # module global: tests patch it here
from replaybuf.verification import VerifyReport, verify_log

__all__ = ["FileLogConfig", "FileLog", "VerifyReport", "verify_log"]

_logger = logging.getLogger(__name__)


def _as_buffer(p: object, i: int) -> tuple[bytes | memoryview, int]:
    if type(p) is bytes:
        return p, len(p)
    try:
        if isinstance(p, str):
            raise TypeError
        mv = memoryview(p)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgumentError(
            f"payloads[{i}] is a {type(p).__name__}; each record must be bytes (or another "
            "contiguous bytes-like object)"
        ) from None
    if not mv.c_contiguous:
        raise InvalidArgumentError(f"payloads[{i}] is not contiguous; pass bytes(payload)")
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv, mv.nbytes


class _FilePending(PendingAppend):
    """A `FileLog` append between `FileLog.begin_append` and its ack."""

    __slots__ = ("_log", "_waiter", "_lead")

    def __init__(self, log: FileLog, first: int, last: int, duplicate: bool,
                 waiter: threading.Lock | None, lead: bool) -> None:
        super().__init__(first, last, duplicate)
        self._log, self._waiter, self._lead = log, waiter, lead

    def _finish(self) -> AppendResult:
        return self._log._end_append(self.first_lsn, self.last_lsn, self.duplicate,
                                     self._waiter, self._lead)


class FileLog(Log):
    """A `Log` stored as segment files in one directory, with group-committed fsync.

    Appends get their LSNs and are encoded under a lock, so LSNs are gap-free and frames
    never interleave; how they are written and made durable depends on `FileLogConfig.fsync`.
    Under the default ``"group"`` policy, appends that overlap share one fdatasync, and an
    append that finds no fdatasync running runs its own (a lone writer pays one write and one
    fdatasync). With the default ``committer="native"`` (`replaybuf.native_commit`) each
    append writes its frame under the lock, and a loop compiled by numba runs the fdatasyncs
    back to back without the GIL while appends keep coming, each covering every frame
    written before it started (one thread per log, started on first concurrency). With
    ``committer="python"`` (`replaybuf.group_commit`) appends queue their frames and a
    Python committer thread writes each group with one ``writev`` and fdatasyncs it. Reads go
    to the files (a sparse in-memory index finds the start), never see a partial frame, and
    check every CRC.

    Opening an existing directory recovers it: every frame is CRC- and LSN-checked, a torn tail
    of the last segment is truncated, and anything worse raises `LogCorruptionError`.

    Thread-safety: every method is thread-safe. One `FileLog` per directory at a time (across
    processes too); a second open raises `FailedPreconditionError`.

    Example::

        import tempfile, uuid
        from replaybuf.file_log import FileLog

        actor = uuid.uuid4().bytes
        with FileLog(tempfile.mkdtemp()) as log:
            ack = log.append([b"event-1", b"event-2"], producer_id=actor, producer_seq=1)
            assert (ack.first_lsn, ack.last_lsn, ack.durable) == (1, 2, True)
            retry = log.append([b"event-1", b"event-2"], producer_id=actor, producer_seq=1)
            assert retry.duplicate and retry.first_lsn == 1
            assert [r.payload for r in log.read(2)] == [b"event-2"]
    """

    def __init__(
        self, directory: str | os.PathLike[str], config: FileLogConfig | None = None
    ) -> None:
        """Open the log in ``directory``, creating it (and the directory) if absent.

        Cost: recovery reads and CRC-checks the whole log once, O(log size).

        Raises:
            FailedPreconditionError: another `FileLog` has the directory open.
            LogCorruptionError: the log is damaged beyond a torn tail (the message names the
                file, offset and LSN, and how to proceed); nothing was modified.
            DurabilityError: a write or fsync failed during recovery or creation.
        """

        if config is None:
            config = FileLogConfig()
        elif not isinstance(config, FileLogConfig):
            raise InvalidArgumentError(f"config={config!r} must be a FileLogConfig or None")
        self._config = config
        self._dir = Path(directory)
        self._policy = config.fsync
        # _lock guards all state: LSNs, the segment and dedup tables, last/durable LSN, the
        # group commit queue (in _commit). Writes happen under it, except a group committer's
        # (see _write_group). Lock order: _lock, then _new_data's lock.
        self._lock = threading.Lock()
        self._new_data = threading.Condition(threading.Lock())  # followers
        self._followers = 0
        self._closed = False
        self._failure: DurabilityError | None = None
        self._fatal_reported = False
        self._fatal_lock = threading.Lock()
        self._close_lock = threading.Lock()  # a second close() waits for the first
        self._lock_fd: int | None = None
        self._segs = SegmentTable(self._dir)
        self._last_lsn = 0  # last LSN written (readable)
        self._next_lsn = 1  # next LSN to give out; under "group", frames in between are queued
        self._group = self._policy == "group"
        self._durable_acks = self._policy in ("always", "group")
        self._dedup = ProducerDedup(config.dedup_window, config.dedup_producers)
        # Under "group", the native committer (frames written by their appenders, synced by a
        # GIL-free loop) or the Python one (frames queued, written and synced by a committer).
        self._native = self._group and config.committer == "native"
        if self._native and native_unavailable() is not None:
            _logger.info("native group commit unavailable (%s); using the Python committer",
                         native_unavailable())
            self._native = False
        self._queued = self._group and not self._native
        self._commit: GroupCommit | NativeCommit
        if self._native:
            self._commit = NativeCommit(
                self._lock, self._segs, fail=self._fail, report_fatal=self._report_fatal
            )
        else:
            self._commit = GroupCommit(
                self._lock,
                self._segs,
                policy=self._policy,
                group_window=config.group_window,
                interval=config.interval,
                write_group=self._write_group,
                last_lsn=lambda: self._last_lsn,
                fail=self._fail,
                report_fatal=self._report_fatal,
                wake_followers=self._wake_followers,
            )
        try:
            self._open()
            self._commit.start()
        except BaseException:
            self._release_files()
            raise

    # ----------------------------------------------------------------------------- opening

    def _open(self) -> None:
        created = not self._dir.exists()
        self._dir.mkdir(parents=True, exist_ok=True)
        if created:
            fsync_dir(self._dir.resolve().parent)
        self._lock_fd = os.open(self._dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FailedPreconditionError(
                f"log directory {self._dir} is already open by another FileLog (in this or "
                "another process); close it first"
            ) from None

        def feed(fr: Frame) -> None:
            if fr.producer_seq:
                self._dedup.add(fr.producer_id, fr.producer_seq, fr.base_lsn, fr.count)

        an = analyze_log(self._dir, stop_at_first=True, on_frame=feed, index_every=INDEX_EVERY)
        if an.problems:
            raise LogCorruptionError(corruption_message(an.problems[0]))
        try:
            for path in an.remove:
                _logger.warning("removing torn trailing segment %s", path)
                os.unlink(path)
            if not an.segments:
                self._segs.load(an.segments, uuid.uuid4().bytes)
                self._segs.create(1)
            else:
                assert an.log_id is not None
                self._segs.load(an.segments, an.log_id)
                fd = self._segs.open_current()
                if an.truncate is not None:
                    path, offset = an.truncate
                    _logger.warning("truncating torn tail of %s at byte %d", path, offset)
                    os.ftruncate(fd, offset)
                # What a crashed process wrote may still be only in the page cache, and the
                # last segment's directory entry too if it crashed before fsyncing the
                # directory: make both durable before acknowledging anything into them.
                os.fdatasync(fd)
                fsync_dir(self._dir)
        except OSError as exc:
            raise DurabilityError(f"recovering log {self._dir} failed: {exc}") from exc
        self._last_lsn = self._segs.current.last_lsn
        self._next_lsn = self._last_lsn + 1
        self._commit.durable_lsn = self._last_lsn

    # ----------------------------------------------------------------------------- state

    @property
    def log_id(self) -> str:
        """The log's UUID string, fixed at creation and stored in every segment header."""

        self._check_usable()
        return str(uuid.UUID(bytes=self._segs.log_id))

    @property
    def directory(self) -> Path:
        """The log directory."""

        return self._dir

    @property
    def config(self) -> FileLogConfig:
        """The configuration the log was opened with."""

        return self._config

    @property
    def last_lsn(self) -> int:
        """LSN of the last record written (readable); 0 when empty. O(1), lock-free."""

        self._check_usable()
        return self._last_lsn

    @property
    def durable_lsn(self) -> int:
        """LSN up to which every record is fdatasynced; 0 when none. O(1), lock-free."""

        self._check_usable()
        return self._commit.durable_lsn

    def _check_usable(self) -> None:
        if self._closed:
            raise ClosedError(f"FileLog({str(self._dir)!r}) is closed; open a new FileLog")
        if self._failure is not None:
            raise DurabilityError(
                f"FileLog({str(self._dir)!r}) failed earlier and refuses every call "
                f"({self._failure}); exit the process and reopen the log to recover"
            ) from self._failure

    def _fail(self, exc: DurabilityError) -> DurabilityError:
        """Enter the failed state (first failure wins), wake every waiter; return ``exc``.

        Caller holds ``_lock``.
        """

        if self._failure is None:
            self._failure = exc
            _logger.critical("event log %s failed: %s", self._dir, exc)
        self._commit.stop()
        self._wake_followers(force=True)
        return exc

    def _report_fatal(self, exc: DurabilityError) -> None:
        with self._fatal_lock:
            if self._config.on_fatal is None or self._fatal_reported:
                return
            self._fatal_reported = True
        self._config.on_fatal(self._failure or exc)

    def _wake_followers(self, force: bool = False) -> None:
        if self._followers or force:
            with self._new_data:
                self._new_data.notify_all()

    # ----------------------------------------------------------------------------- append

    def find_duplicate(self, producer_id: bytes, producer_seq: int) -> AppendResult | None:
        """The original ack of a producer batch already in the log, else None. O(1)."""

        pid, seq = check_producer(producer_id, producer_seq)
        with self._lock:
            self._check_usable()
            dup = self._dedup.lookup(pid, seq, None)
            if dup is None:
                return None
            durable = self._durable_acks and self._commit.durable_lsn >= dup[1]
        return AppendResult(dup[0], dup[1], durable=durable, duplicate=True)

    def append(
        self,
        payloads: Sequence[bytes],
        *,
        producer_id: bytes | None = None,
        producer_seq: int | None = None,
    ) -> AppendResult:
        """Append ``payloads`` as one frame; return its LSN range once the policy allows.

        Under ``"always"``/``"group"`` this returns after the frame is fdatasynced
        (``durable=True``); under ``"interval"``/``"none"`` after the write (``durable=False``).
        A retry of an earlier ``(producer_id, producer_seq)`` writes nothing and returns the
        original LSNs with ``duplicate=True`` (see `FileLogConfig.dedup_window`).

        Cost: a CRC-32C pass and one copy of small payloads, O(bytes), under the write lock.
        The frame is written under the lock (``writev`` for large frames: no copy of large
        payloads), plus the policy's fdatasync (under ``"group"``: one shared by the appends
        that overlap), except under ``"group"`` with ``committer="python"``, where it is
        queued there and written by the group's committer with one ``writev`` for the whole
        group. Thread-safe. ``append(...)`` is ``begin_append(...).wait()``.

        Raises:
            InvalidArgumentError: empty ``payloads``, a non-bytes record, a frame over 4 GiB, a
                bad producer id (16 bytes, not all zero) or sequence (int >= 1, newer than
                the dedup window), or a reused sequence with another record count.
            DurabilityError: the write or fsync failed; the log is now failed (see module doc).
            ClosedError: the log is closed.
        """

        return self.begin_append(payloads, producer_id=producer_id,
                                 producer_seq=producer_seq).wait()

    def begin_append(
        self,
        payloads: Sequence[bytes],
        *,
        producer_id: bytes | None = None,
        producer_seq: int | None = None,
    ) -> PendingAppend:
        """`append` up to the point where its LSNs are fixed: the frame is queued (``group``)
        or written (other policies); `PendingAppend.wait` then joins or leads its group
        commit (``group``), or wakes followers, and returns the ack. See `Log.begin_append`.
        """

        if self._closed or self._failure is not None:
            self._check_usable()
        if type(payloads) is not list and (
            isinstance(payloads, (bytes, bytearray, memoryview, str))
            or not isinstance(payloads, Sequence)
        ):
            raise InvalidArgumentError(
                f"payloads is a {type(payloads).__name__}; pass a sequence of records, "
                "e.g. [payload]"
            )
        if not payloads:
            raise InvalidArgumentError("payloads is empty; append at least one record")
        bufs: list[bytes | memoryview] = []
        sizes: list[int] = []
        for i, p in enumerate(payloads):
            if type(p) is bytes or type(p) is RecordParts:
                bufs.append(p)
                sizes.append(len(p))
            else:
                b, n = _as_buffer(p, i)
                bufs.append(b)
                sizes.append(n)
        if producer_id is None and producer_seq is None:
            pid, seq = NO_PRODUCER, 0
        else:
            pid, seq = check_producer(producer_id, producer_seq)
        commit = self._commit
        ticket = commit.take_ticket() if self._queued else 0  # type: ignore[union-attr]
        waiter = None
        lead = False
        try:
            with self._lock:
                try:
                    if self._closed or self._failure is not None:
                        self._check_usable()
                    dup = self._dedup.lookup(pid, seq, len(bufs)) if seq else None
                    if dup is None:
                        first = self._next_lsn
                        last = first + len(bufs) - 1
                        parts, total = encode_frame(
                            bufs, sizes, first, time.time_ns() // 1_000_000, pid, seq
                        )
                        if self._queued:
                            commit.queue(parts, total, first, last)  # type: ignore[union-attr]
                        else:
                            self._write_frame(parts, total, first, last)
                        self._next_lsn = last + 1
                        if seq:
                            self._dedup.add(pid, seq, first, len(bufs))
                    else:
                        first, last = dup
                finally:
                    if ticket:
                        commit.ticket_done(ticket)  # type: ignore[union-attr]
                if self._queued and commit.durable_lsn < last:
                    waiter = commit.join()  # type: ignore[union-attr]
                    lead = waiter is None
        except DurabilityError as exc:
            self._report_fatal(exc)
            raise
        return _FilePending(self, first, last, dup is not None, waiter, lead)

    def _end_append(self, first: int, last: int, duplicate: bool,
                    waiter: threading.Lock | None, lead: bool) -> AppendResult:
        """The second half of an append (`_FilePending.wait`): commit or await the group."""

        commit = self._commit
        try:
            if lead:
                commit.lead()  # type: ignore[union-attr]
            elif waiter is not None:
                waiter.acquire()  # released by our group's committer (or on failure)
            elif self._native:
                commit.wait_durable(last)  # type: ignore[union-attr]
                self._wake_followers()
            elif not duplicate:
                self._wake_followers()
            if self._group and commit.durable_lsn < last:
                raise DurabilityError(
                    f"LSN {first}..{last} was queued but not fsynced: the log failed "
                    f"({self._failure})"
                ) from self._failure
        except DurabilityError as exc:
            self._report_fatal(exc)
            raise
        return make_ack(first, last, self._durable_acks, duplicate)

    def _write_frame(self, parts: list, total: int, first: int, last: int) -> None:
        """Write one encoded frame at the end of the log, rolling to a new segment first if
        it would not fit. Caller holds ``_lock``."""

        seg = self._segs.current
        try:
            if seg.frames and seg.end + total > self._config.segment_bytes:
                self._roll(first)
                seg = self._segs.current
        except OSError as exc:
            raise self._fail(
                DurabilityError(f"rolling to a new segment at LSN {first} failed: {exc}")
            ) from exc
        fd = self._segs.fd
        assert fd is not None
        offset = seg.end
        try:
            _write_all(fd, parts, total)
            if self._policy == "always":
                os.fdatasync(fd)
        except OSError as exc:
            raise self._write_failed(exc, offset, first, last) from exc
        seg.add_frame(first, offset, total, last - first + 1, INDEX_EVERY)
        self._last_lsn = last
        if self._policy == "always":
            self._commit.durable_lsn = last
        elif self._native:
            self._commit.publish(last)  # type: ignore[union-attr]

    def _write_group(self, parts: list, total: int, frames: list[QueuedFrame]) -> None:
        """Write the frames queued under ``"group"`` at the end of the log; make them readable.

        Called by the group's committer without ``_lock``: while it holds the committer role
        nothing else writes, rolls or closes the segment (`close` waits for the role), so one
        ``writev`` of the whole group runs outside the lock and appenders keep queueing
        frames meanwhile. A group that must roll to a new segment is written frame by frame
        under the lock instead (once per segment).

        Raises:
            DurabilityError: the write failed (the log is now failed).
        """

        seg = self._segs.current
        if seg.end + total > self._config.segment_bytes:
            with self._lock:
                i = 0
                for first, last, size, n in frames:
                    self._write_frame(parts[i : i + n], size, first, last)
                    i += n
            self._wake_followers()
            return
        fd = self._segs.fd
        assert fd is not None
        offset = seg.end
        try:
            _write_all(fd, parts, total)
        except OSError as exc:
            with self._lock:
                raise self._write_failed(exc, offset, frames[0][0], frames[-1][1]) from exc
        with self._lock:
            seg.add_frames(frames, INDEX_EVERY)
            self._last_lsn = frames[-1][1]
        self._wake_followers()

    def _write_failed(self, exc: OSError, offset: int, first: int, last: int) -> DurabilityError:
        """Writing LSN ``first..last`` at ``offset`` of the current segment failed: cut what
        was written of it off and fail the log; return the error. Holds ``_lock``."""

        path = self._segs.current.path
        undo = f"truncated {path.name} back to {offset} bytes"
        try:
            assert self._segs.fd is not None
            os.ftruncate(self._segs.fd, offset)
        except OSError as exc2:
            undo = f"could not truncate {path.name} back to {offset} bytes ({exc2})"
        return self._fail(
            DurabilityError(
                f"writing LSN {first}..{last} to {path} failed: {exc}; {undo}. The log "
                "is failed: exit and reopen it (recovery drops any partial frame)"
            )
        )

    def _roll(self, base_lsn: int) -> None:
        """Seal the current segment and start one at ``base_lsn``. Holds ``_lock``."""

        self._segs.roll(base_lsn)
        # The sealed segment was fdatasynced: everything written so far is durable.
        self._commit.advance(self._last_lsn)
        if self._native:
            self._commit.rolled()  # type: ignore[union-attr]

    # ----------------------------------------------------------------------------- sync

    def sync(self) -> int:
        """fdatasync everything appended so far; return the new `durable_lsn`.

        Cost: one fdatasync, run by the calling thread without the write lock (under
        ``"group"``: one group commit, or a wait for the one in progress and the next).
        Thread-safe.

        Raises:
            DurabilityError: the fdatasync failed (the log is now failed).
        """

        try:
            if self._native:
                with self._lock:
                    self._check_usable()
                    target = self._last_lsn
                if not self._commit.wait_durable(target):  # type: ignore[union-attr]
                    raise DurabilityError(
                        f"sync of {self._dir} failed: the log failed ({self._failure})"
                    ) from self._failure
                self._wake_followers()
                return self._commit.durable_lsn
            if self._queued:
                with self._lock:
                    self._check_usable()
                    target = self._next_lsn - 1
                    if target <= self._commit.durable_lsn:
                        return self._commit.durable_lsn
                    waiter = self._commit.join()  # type: ignore[union-attr]
                if waiter is None:
                    self._commit.lead()  # type: ignore[union-attr]
                else:
                    self._commit.wait(waiter)  # type: ignore[union-attr]
                if self._commit.durable_lsn < target:
                    raise DurabilityError(
                        f"sync of {self._dir} failed: the log failed ({self._failure})"
                    ) from self._failure
                return self._commit.durable_lsn
            with self._lock:
                self._check_usable()
                target = self._last_lsn
                if target <= self._commit.durable_lsn:
                    return self._commit.durable_lsn
                assert self._segs.fd is not None
                fd = os.dup(self._segs.fd)
            try:
                os.fdatasync(fd)
            except OSError as exc:
                with self._lock:
                    error = DurabilityError(f"fdatasync of {self._dir} failed: {exc}")
                    raise self._fail(error) from exc
            finally:
                os.close(fd)
        except DurabilityError as exc:
            self._report_fatal(exc)
            raise
        with self._lock:
            self._commit.advance(target)
            durable = self._commit.durable_lsn
        self._wake_followers()
        return durable

    # ----------------------------------------------------------------------------- read

    def read(self, from_lsn: int = 1, to_lsn: int | None = None) -> Iterator[LogRecord]:
        """Yield the records with ``from_lsn <= lsn <= to_lsn`` (to `last_lsn` if None).

        The range is fixed when called: records appended later are not included. Every frame's
        CRC is checked. Cost: a bisect and a seek of at most 64 KiB, then O(bytes read).
        Thread-safe; the iterator itself is for one thread.

        Raises:
            InvalidArgumentError: ``from_lsn < 1`` or a non-int bound.
            LogCorruptionError: a frame went bad on disk since the log was opened.
        """

        if not is_int(from_lsn) or from_lsn < 1:
            raise InvalidArgumentError(
                f"from_lsn={from_lsn!r} must be an int >= 1 (LSNs start at 1)"
            )
        if to_lsn is not None and not is_int(to_lsn):
            raise InvalidArgumentError(f"to_lsn={to_lsn!r} must be an int or None")
        with self._lock:
            self._check_usable()
            end = self._last_lsn if to_lsn is None else min(to_lsn, self._last_lsn)
            plan = self._segs.plan(from_lsn, end) if end >= from_lsn else []
        return self._read_plan(plan, from_lsn, end)

    @staticmethod
    def _read_plan(
        plan: list[tuple[Path, int, int, int]], from_lsn: int, to_lsn: int
    ) -> Iterator[LogRecord]:
        for path, start, end, lsn in plan:
            yield from read_records(path, start, end, lsn, from_lsn, to_lsn, last_segment=False)

    def follow(
        self,
        from_lsn: int = 1,
        *,
        stop: threading.Event | None = None,
        poll: float = 0.05,
        durable_only: bool = True,
    ) -> Iterator[LogRecord]:
        """Yield records from ``from_lsn`` on, then wait for new ones until ``stop`` is set.

        Waits on a condition that appends and syncs signal, so new records arrive without
        polling delay; ``poll`` only bounds how late ``stop`` is noticed. The iteration also
        ends quietly when the log is closed. Thread-safe; the iterator is for one thread.

        Raises:
            InvalidArgumentError: ``from_lsn < 1`` or ``poll <= 0``.
            DurabilityError: the log failed.
        """

        if not is_int(from_lsn) or from_lsn < 1:
            raise InvalidArgumentError(
                f"from_lsn={from_lsn!r} must be an int >= 1 (LSNs start at 1)"
            )
        if not is_seconds(poll) or poll <= 0:
            raise InvalidArgumentError(f"poll={poll!r} must be a positive number of seconds")
        self._check_usable()
        return self._follow(from_lsn, stop, poll, durable_only)

    def _follow(
        self, next_lsn: int, stop: threading.Event | None, poll: float, durable_only: bool
    ) -> Iterator[LogRecord]:
        while True:
            if (stop is not None and stop.is_set()) or self._closed:
                return
            if self._failure is not None:
                self._check_usable()
            limit = self._commit.durable_lsn if durable_only else self._last_lsn
            if limit >= next_lsn:
                with self._lock:
                    if self._closed:
                        return
                    plan = self._segs.plan(next_lsn, limit)
                for rec in self._read_plan(plan, next_lsn, limit):
                    yield rec
                    next_lsn = rec.lsn + 1
                continue
            with self._new_data:
                self._followers += 1
                try:
                    limit = self._commit.durable_lsn if durable_only else self._last_lsn
                    if limit < next_lsn and not self._closed and self._failure is None:
                        self._new_data.wait(poll)
                finally:
                    self._followers -= 1

    # ----------------------------------------------------------------------------- close

    def close(self) -> None:
        """Wait for appends in progress, fdatasync, and release the files. Idempotent.

        Appends that got in before the close are committed (under ``"group"``, by the
        committer in progress or by this call); later ones raise `ClosedError`. After a
        failure it only releases the files (no fsync: see the module doc).

        Raises:
            DurabilityError: the final fdatasync failed.
        """

        with self._close_lock:
            self._close()

    def _close(self) -> None:
        error: DurabilityError | None = None
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._queued:
            try:
                self._commit.finish()  # type: ignore[call-arg]
            except DurabilityError as exc:
                error = exc
        elif self._native:
            try:
                self._commit.finish(self._last_lsn)  # type: ignore[call-arg]
            except DurabilityError as exc:
                error = exc
        with self._lock:
            if (
                self._failure is None
                and self._segs.fd is not None
                and self._commit.durable_lsn < self._last_lsn
            ):
                try:
                    os.fdatasync(self._segs.fd)
                    self._commit.durable_lsn = self._last_lsn
                except OSError as exc:
                    error = self._fail(
                        DurabilityError(f"fdatasync on close of {self._dir} failed: {exc}")
                    )
            self._commit.stop()
            self._release_files()
        self._wake_followers(force=True)
        self._commit.join_thread()
        if error is not None:
            self._report_fatal(error)
            raise error

    def _release_files(self) -> None:
        self._segs.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "failed" if self._failure else "open"
        return (
            f"FileLog({str(self._dir)!r}, fsync={self._policy!r}, last_lsn={self._last_lsn}, "
            f"durable_lsn={self._commit.durable_lsn}, {state})"
        )
