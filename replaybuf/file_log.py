"""The embedded event log: segment files in one directory, group-committed with fdatasync.

`FileLog` implements `replaybuf.log.Log` on local files (format: `replaybuf.log_format`).
It is the default backend: one process owns a log directory (an exclusive ``flock`` on
``DIR/LOCK`` enforces it) and every append is one CRC-checked frame.

Durability model (DESIGN.md, invariant 4): write and fsync errors are fatal. After one, the log
raises `DurabilityError` from every call, and the process should exit and reopen the log, whose
recovery truncates any partial frame. An fsync is never retried, because Linux may drop dirty
pages after a write-back error and report success the second time ("fsyncgate").
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import threading
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from replaybuf.errors import (
    ClosedError,
    DurabilityError,
    FailedPreconditionError,
    InvalidArgumentError,
    LogCorruptionError,
)
from replaybuf.log import FSYNC_POLICIES, AppendResult, Log, LogRecord
from replaybuf.log_format import (
    HEADER_SIZE,
    NO_PRODUCER,
    Frame,
    SegmentState,
    VerifyReport,
    analyze_log,
    corruption_message,
    encode_frame,
    encode_header,
    frame_records,
    read_frames,
    segment_name,
    verify_log,
)
from replaybuf.producer_dedup import ProducerDedup

__all__ = ["FileLogConfig", "FileLog", "VerifyReport", "verify_log"]

_logger = logging.getLogger(__name__)

_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
_INDEX_EVERY = 64 * 1024
_MIN_SEGMENT_BYTES = 4096
_MAX_SEGMENT_BYTES = 2**40


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_seconds(value: object) -> bool:
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
    * ``"group"`` (default): group commit. Concurrent appends write their frames, then one
      fdatasync covers all of them and each returns once its frame is durable. Same guarantee
      as ``always``; under concurrency costs about one fdatasync per group, not per append.
    * ``"interval"``: a background thread fdatasyncs every `interval` seconds; appends return
      after the write (``durable=False``). Survives a process crash (``kill -9``); a power
      loss may lose up to `interval` seconds of acknowledged appends.
    * ``"none"``: never fdatasync except when a segment is sealed, on `FileLog.sync` and on
      close (``durable=False``). Survives a process crash only. For tests and benchmarks.
    """

    group_window: float = 0.002
    """Seconds (at most) an idle syncer waits for the appends already queued on the write lock
    before its fdatasync, so that a burst of concurrent appends shares one; 0 syncs as soon
    as the syncer is free. Only used under ``"group"``. A lone writer never waits, and under
    load fdatasyncs run back to back without waiting (see `FileLog`)."""

    interval: float = 0.05
    """Seconds between background fdatasyncs under ``"interval"`` (the power-loss window)."""

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
        if not _is_seconds(self.group_window) or not 0 <= self.group_window <= 1:
            raise InvalidArgumentError(
                f"FileLogConfig.group_window={self.group_window!r} must be seconds in [0, 1]; "
                "the default 0.002 suits most disks"
            )
        if not _is_seconds(self.interval) or not 0 < self.interval <= 60:
            raise InvalidArgumentError(
                f"FileLogConfig.interval={self.interval!r} must be seconds in (0, 60]; it bounds "
                "what a power loss can take under fsync='interval'"
            )
        if not _is_int(self.segment_bytes) or not (
            _MIN_SEGMENT_BYTES <= self.segment_bytes <= _MAX_SEGMENT_BYTES
        ):
            raise InvalidArgumentError(
                f"FileLogConfig.segment_bytes={self.segment_bytes!r} must be an int in "
                f"[{_MIN_SEGMENT_BYTES}, {_MAX_SEGMENT_BYTES}]; the default is 256 MiB"
            )
        if not _is_int(self.dedup_window) or self.dedup_window < 1:
            raise InvalidArgumentError(
                f"FileLogConfig.dedup_window={self.dedup_window!r} must be an int >= 1 (the "
                "number of recent producer sequences that retries are recognized within)"
            )
        if not _is_int(self.dedup_producers) or self.dedup_producers < 1:
            raise InvalidArgumentError(
                f"FileLogConfig.dedup_producers={self.dedup_producers!r} must be an int >= 1 "
                "(how many producers' recent sequences to remember)"
            )
        if self.on_fatal is not None and not callable(self.on_fatal):
            raise InvalidArgumentError(
                f"FileLogConfig.on_fatal={self.on_fatal!r} must be a callable taking the "
                "DurabilityError, or None"
            )


def _write_all(fd: int, parts: list, total: int) -> None:
    """Write ``parts`` fully, looping on short writes. Raises OSError (ENOSPC when stuck)."""

    if len(parts) == 1:
        with memoryview(parts[0]) as mv:
            done = 0
            while done < total:
                n = os.write(fd, mv[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, "write made no progress")
                done += n
        return
    pending = [memoryview(p).cast("B") for p in parts]
    i = 0
    while i < len(pending):
        n = os.writev(fd, pending[i : i + _IOV_MAX])
        if n <= 0:
            raise OSError(errno.ENOSPC, "writev made no progress")
        while i < len(pending) and n >= len(pending[i]):
            n -= len(pending[i])
            i += 1
        if n:
            pending[i] = pending[i][n:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


class FileLog(Log):
    """A `Log` stored as segment files in one directory, with group-committed fsync.

    Appends are written by the calling thread under a lock, so LSNs are gap-free and frames
    never interleave; how they become durable depends on `FileLogConfig.fsync`. Under the
    default ``"group"`` policy, appends that overlap share one fdatasync: an append that finds
    nothing else pending fdatasyncs itself; otherwise it queues, and a syncer thread runs one
    fdatasync for everything queued, back to back with the previous one under load (about one
    fdatasync per group, at most one running at a time). Reads go to the files (a sparse
    in-memory index finds the start), never see a partial frame, and check every CRC.

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
        # _lock guards all state: writes, the segment and dedup tables, last/durable LSN, the
        # waiters. Lock order: _lock, then _new_data's lock.
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the syncer thread awaiting work
        self._collected = threading.Condition(self._lock)  # the syncer collecting a group
        # Appenders awaiting a sync each block on a private lock that the syncer releases, so
        # a woken appender returns without touching _lock.
        self._waiters: list[threading.Lock] = []
        self._syncer_idle = False
        self._syncing = False  # an fdatasync of a group is running (syncer or inline)
        # Group collection: tickets are taken before the write lock, so the syncer can tell
        # how many appends are queued on it (see _collect_group).
        self._ticket_lock = threading.Lock()
        self._entered = 0  # tickets issued
        self._written = 0  # ticketed appends that finished (under _lock)
        self._collect_until = 0  # the syncer waits for tickets <= this...
        self._collect_pending = 0  # ...of which this many are still queued
        self._new_data = threading.Condition(threading.Lock())  # followers
        self._followers = 0
        self._closed = False
        self._failure: DurabilityError | None = None
        self._fatal_reported = False
        self._fatal_lock = threading.Lock()
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._segments: list[SegmentState] = []
        self._bases: list[int] = []
        self._last_lsn = 0
        self._durable_lsn = 0
        self._dedup = ProducerDedup(config.dedup_window, config.dedup_producers)
        self._syncer_thread: threading.Thread | None = None
        try:
            self._open()
        except BaseException:
            self._release_files()
            raise
        if self._policy in ("group", "interval"):
            self._syncer_thread = threading.Thread(
                target=self._syncer_loop, name=f"FileLog-sync:{self._dir.name}", daemon=True
            )
            self._syncer_thread.start()

    # ----------------------------------------------------------------------------- opening

    def _open(self) -> None:
        created = not self._dir.exists()
        self._dir.mkdir(parents=True, exist_ok=True)
        if created:
            _fsync_dir(self._dir.resolve().parent)
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

        an = analyze_log(self._dir, stop_at_first=True, on_frame=feed, index_every=_INDEX_EVERY)
        if an.problems:
            raise LogCorruptionError(corruption_message(an.problems[0]))
        try:
            for path in an.remove:
                _logger.warning("removing torn trailing segment %s", path)
                os.unlink(path)
            self._segments = an.segments
            if not self._segments:
                self._log_id = uuid.uuid4().bytes
                self._create_segment(1)
            else:
                assert an.log_id is not None
                self._log_id = an.log_id
                seg = self._segments[-1]
                self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
                if an.truncate is not None:
                    path, offset = an.truncate
                    _logger.warning("truncating torn tail of %s at byte %d", path, offset)
                    os.ftruncate(self._fd, offset)
                # What a crashed process wrote may still be only in the page cache, and the
                # last segment's directory entry too if it crashed before fsyncing the
                # directory: make both durable before acknowledging anything into them.
                os.fdatasync(self._fd)
                _fsync_dir(self._dir)
        except OSError as exc:
            raise DurabilityError(f"recovering log {self._dir} failed: {exc}") from exc
        self._bases = [s.base_lsn for s in self._segments]
        self._last_lsn = self._segments[-1].last_lsn
        self._durable_lsn = self._last_lsn

    def _create_segment(self, base_lsn: int) -> None:
        """Create, header, fsync and dir-fsync a segment; make it current. Raises OSError."""

        path = self._dir / segment_name(base_lsn)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, [encode_header(base_lsn, self._log_id)], HEADER_SIZE)
            os.fdatasync(fd)
            _fsync_dir(self._dir)
        except BaseException:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._segments.append(SegmentState(base_lsn, path, HEADER_SIZE, base_lsn))
        self._bases.append(base_lsn)

    # ----------------------------------------------------------------------------- state

    @property
    def log_id(self) -> str:
        """The log's UUID string, fixed at creation and stored in every segment header."""

        self._check_usable()
        return str(uuid.UUID(bytes=self._log_id))

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
        return self._durable_lsn

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
        self._release_waiters()
        self._work.notify_all()
        self._collected.notify_all()
        self._wake_followers(force=True)
        return exc

    def _release_waiters(self) -> None:
        """Wake every appender waiting for a sync. Caller holds ``_lock``."""

        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.release()

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

        Cost: one write (``writev`` for large frames: no copy of large payloads) and a CRC-32C
        pass, O(bytes), under the write lock; plus the policy's fdatasync. Thread-safe.

        Raises:
            InvalidArgumentError: empty ``payloads``, a non-bytes record, a frame over 4 GiB, a
                bad producer id (16 bytes, not all zero) or sequence (int >= 1, newer than
                the dedup window), or a reused sequence with another record count.
            DurabilityError: the write or fsync failed; the log is now failed (see module doc).
            ClosedError: the log is closed.
        """

        self._check_usable()
        if isinstance(payloads, (bytes, bytearray, memoryview, str)) or not isinstance(
            payloads, Sequence
        ):
            raise InvalidArgumentError(
                f"payloads is a {type(payloads).__name__}; pass a sequence of records, "
                "e.g. [payload]"
            )
        if not payloads:
            raise InvalidArgumentError("payloads is empty; append at least one record")
        bufs = []
        sizes = []
        for i, p in enumerate(payloads):
            b, n = _as_buffer(p, i)
            bufs.append(b)
            sizes.append(n)
        pid, seq = self._check_producer(producer_id, producer_seq)
        ticket = 0
        if self._policy == "group" and self._config.group_window > 0:
            with self._ticket_lock:
                self._entered += 1
                ticket = self._entered
        waiter = None
        inline_fd = -1
        try:
            with self._lock:
                try:
                    self._check_usable()
                    dup = self._dedup.lookup(pid, seq, len(bufs)) if seq else None
                    if dup is None:
                        first = self._last_lsn + 1
                        parts, total = encode_frame(
                            bufs, sizes, first, time.time_ns() // 1_000_000, pid, seq
                        )
                        last = first + len(bufs) - 1
                        self._write_frame(parts, total, first, last)
                        if seq:
                            self._dedup.add(pid, seq, first, len(bufs))
                    else:
                        first, last = dup
                finally:
                    if ticket:
                        self._ticket_done(ticket)
                if self._policy == "group" and self._durable_lsn < last:
                    if not self._syncing and not self._waiters and self._entered == self._written:
                        # Nothing else is pending: sync here, sparing two thread handoffs.
                        self._syncing = True
                        assert self._fd is not None
                        inline_fd = os.dup(self._fd)
                    else:
                        waiter = threading.Lock()
                        waiter.acquire()
                        self._waiters.append(waiter)
                        if self._syncer_idle:
                            self._work.notify()
            if dup is None:
                self._wake_followers()
            if inline_fd >= 0:
                self._sync_inline(inline_fd, last)
            elif waiter is not None:
                waiter.acquire()  # released by the syncer after its fdatasync, or on failure
                if self._durable_lsn < last:
                    raise DurabilityError(
                        f"LSN {first}..{last} was written but not fsynced: the log failed "
                        f"({self._failure})"
                    ) from self._failure
        except DurabilityError as exc:
            self._report_fatal(exc)
            raise
        return AppendResult(
            first, last, durable=self._policy in ("always", "group"), duplicate=dup is not None
        )

    @staticmethod
    def _check_producer(producer_id: object, producer_seq: object) -> tuple[bytes, int]:
        if producer_id is None and producer_seq is None:
            return NO_PRODUCER, 0
        if producer_id is None or producer_seq is None:
            raise InvalidArgumentError(
                f"producer_id={producer_id!r} and producer_seq={producer_seq!r}: give both "
                "(for idempotent retries) or neither"
            )
        if not isinstance(producer_id, (bytes, bytearray)) or len(producer_id) != 16:
            raise InvalidArgumentError(
                f"producer_id={producer_id!r} must be 16 bytes (e.g. uuid.uuid4().bytes)"
            )
        if producer_id == NO_PRODUCER:
            raise InvalidArgumentError(
                "producer_id is all zero bytes, which means 'no producer'; use e.g. "
                "uuid.uuid4().bytes"
            )
        if not _is_int(producer_seq) or not 1 <= producer_seq < 2**64:  # type: ignore[operator]
            raise InvalidArgumentError(
                f"producer_seq={producer_seq!r} must be an int in [1, 2**64); number a "
                "producer's batches 1, 2, 3, ..."
            )
        return bytes(producer_id), producer_seq  # type: ignore[return-value]

    def _write_frame(self, parts: list, total: int, first: int, last: int) -> None:
        """Write one encoded frame at the end of the log. Caller holds ``_lock``."""

        seg = self._segments[-1]
        try:
            if seg.frames and seg.end + total > self._config.segment_bytes:
                self._roll(first)
                seg = self._segments[-1]
        except OSError as exc:
            raise self._fail(
                DurabilityError(f"rolling to a new segment at LSN {first} failed: {exc}")
            ) from exc
        assert self._fd is not None
        offset = seg.end
        try:
            _write_all(self._fd, parts, total)
            if self._policy == "always":
                os.fdatasync(self._fd)
        except OSError as exc:
            undo = f"truncated {seg.path.name} back to {offset} bytes"
            try:
                os.ftruncate(self._fd, offset)
            except OSError as exc2:
                undo = f"could not truncate {seg.path.name} back to {offset} bytes ({exc2})"
            raise self._fail(
                DurabilityError(
                    f"writing LSN {first}..{last} to {seg.path} failed: {exc}; {undo}. The log "
                    "is failed: exit and reopen it (recovery drops any partial frame)"
                )
            ) from exc
        seg.add_index(first, offset, _INDEX_EVERY)
        seg.frames += 1
        seg.end = offset + total
        seg.next_lsn = last + 1
        self._last_lsn = last
        if self._policy == "always":
            self._durable_lsn = last

    def _roll(self, base_lsn: int) -> None:
        """Seal the current segment (fdatasync) and start one at ``base_lsn``. Holds ``_lock``.

        Sealing first means only the last segment can ever have a torn tail.
        """

        assert self._fd is not None
        os.fdatasync(self._fd)
        sealed = self._last_lsn
        self._create_segment(base_lsn)
        if sealed > self._durable_lsn:
            self._durable_lsn = sealed

    # ----------------------------------------------------------------------------- sync

    def _ticket_done(self, ticket: int) -> None:
        """A ticketed append left the write lock (caller holds ``_lock``)."""

        self._written += 1
        if ticket <= self._collect_until:
            self._collect_pending -= 1
            if self._collect_pending <= 0:
                self._collected.notify()

    def _sync_inline(self, fd: int, target: int) -> None:
        """fdatasync ``fd`` (a dup, closed here) for an appender that found nothing pending."""

        try:
            os.fdatasync(fd)
        except OSError as exc:
            with self._lock:
                self._syncing = False
                raise self._fail(
                    DurabilityError(f"fdatasync of {self._segments[-1].path} failed: {exc}")
                ) from exc
        finally:
            os.close(fd)
        with self._lock:
            self._syncing = False
            if target > self._durable_lsn:
                self._durable_lsn = target
            if self._waiters and self._syncer_idle:
                self._work.notify()  # appends that queued during this fdatasync
        self._wake_followers()

    def _collect_group(self) -> None:
        """Wait up to ``group_window`` for the appends queued on the write lock. Holds _lock.

        Only the appends that had taken a ticket when collection began are waited for, so
        a steady stream of new appends cannot hold a group open.
        """

        pending = self._entered - self._written
        if pending <= 0:
            return
        self._collect_until = self._entered
        self._collect_pending = pending
        deadline = time.monotonic() + self._config.group_window
        while self._collect_pending > 0 and not self._closed and self._failure is None:
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
        timeout = None if group else self._config.interval
        batch: list[threading.Lock] = []
        target = 0
        try:
            while True:
                with self._lock:
                    if target:
                        self._syncing = False
                        if target > self._durable_lsn:
                            self._durable_lsn = target
                        done, batch = batch, []
                        for waiter in done:
                            waiter.release()
                        self._wake_followers()
                    target = 0
                    idle = False
                    while not self._closed and self._failure is None:
                        if group:
                            if self._waiters and not self._syncing:
                                break
                        elif idle and self._last_lsn > self._durable_lsn:
                            break
                        idle = True
                        self._syncer_idle = True
                        self._work.wait(timeout)
                        self._syncer_idle = False
                    if self._closed or self._failure is not None:
                        return
                    if group and idle and self._config.group_window > 0:
                        self._collect_group()
                        if self._closed or self._failure is not None:
                            return
                    target = self._last_lsn
                    self._syncing = True
                    batch, self._waiters = self._waiters, []
                    # A dup keeps the file open if a roll replaces self._fd meanwhile; a roll
                    # seals (fdatasyncs) the old segment, so this sync still covers `target`.
                    assert self._fd is not None
                    fd = os.dup(self._fd)
                try:
                    os.fdatasync(fd)
                except OSError as exc:
                    with self._lock:
                        error = self._fail(
                            DurabilityError(f"fdatasync of {self._segments[-1].path} failed: {exc}")
                        )
                    self._report_fatal(error)
                    return
                finally:
                    os.close(fd)
        except BaseException as exc:  # a bug here must not leave appenders waiting forever
            with self._lock:
                self._fail(DurabilityError(f"the syncer thread of {self._dir} crashed: {exc!r}"))
            raise
        finally:
            for waiter in batch:  # on failure: they see durable_lsn short of their frame
                waiter.release()

    def sync(self) -> int:
        """fdatasync everything written so far; return the new `durable_lsn`.

        Cost: one fdatasync, run by the calling thread (the write lock is not held during
        it). Thread-safe.

        Raises:
            DurabilityError: the fdatasync failed (the log is now failed).
        """

        with self._lock:
            self._check_usable()
            target = self._last_lsn
            if target <= self._durable_lsn:
                return self._durable_lsn
            assert self._fd is not None
            fd = os.dup(self._fd)
        try:
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
            if target > self._durable_lsn:
                self._durable_lsn = target
            durable = self._durable_lsn
        self._wake_followers()
        return durable

    # ----------------------------------------------------------------------------- read

    def _plan(self, from_lsn: int, to_lsn: int) -> list[tuple[Path, int, int, int]]:
        """``(path, start offset, end offset, LSN at start)`` per segment to read. Holds _lock."""

        plan = []
        i = max(0, bisect_right(self._bases, from_lsn) - 1)
        for seg in self._segments[i:]:
            if seg.base_lsn > to_lsn:
                break
            if not seg.frames or seg.last_lsn < from_lsn:
                continue
            if seg.base_lsn <= from_lsn:
                k = bisect_right(seg.index_lsns, from_lsn) - 1
                plan.append((seg.path, seg.index_offsets[k], seg.end, seg.index_lsns[k]))
            else:
                plan.append((seg.path, HEADER_SIZE, seg.end, seg.base_lsn))
        return plan

    def read(self, from_lsn: int = 1, to_lsn: int | None = None) -> Iterator[LogRecord]:
        """Yield the records with ``from_lsn <= lsn <= to_lsn`` (to `last_lsn` if None).

        The range is fixed when called: records appended later are not included. Every frame's
        CRC is checked. Cost: a bisect and a seek of at most 64 KiB, then O(bytes read).
        Thread-safe; the iterator itself is for one thread.

        Raises:
            InvalidArgumentError: ``from_lsn < 1`` or a non-int bound.
            LogCorruptionError: a frame went bad on disk since the log was opened.
        """

        if not _is_int(from_lsn) or from_lsn < 1:
            raise InvalidArgumentError(
                f"from_lsn={from_lsn!r} must be an int >= 1 (LSNs start at 1)"
            )
        if to_lsn is not None and not _is_int(to_lsn):
            raise InvalidArgumentError(f"to_lsn={to_lsn!r} must be an int or None")
        with self._lock:
            self._check_usable()
            end = self._last_lsn if to_lsn is None else min(to_lsn, self._last_lsn)
            plan = self._plan(from_lsn, end) if end >= from_lsn else []
        return self._read_plan(plan, from_lsn, end)

    @staticmethod
    def _read_plan(
        plan: list[tuple[Path, int, int, int]], from_lsn: int, to_lsn: int
    ) -> Iterator[LogRecord]:
        for path, start, end, lsn in plan:
            for fr in read_frames(path, start, end, lsn, last_segment=False):
                if fr.base_lsn + fr.count <= from_lsn:
                    continue
                if fr.base_lsn > to_lsn:
                    return
                yield from frame_records(fr, path, from_lsn, to_lsn)

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

        if not _is_int(from_lsn) or from_lsn < 1:
            raise InvalidArgumentError(
                f"from_lsn={from_lsn!r} must be an int >= 1 (LSNs start at 1)"
            )
        if not _is_seconds(poll) or poll <= 0:
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
            limit = self._durable_lsn if durable_only else self._last_lsn
            if limit >= next_lsn:
                with self._lock:
                    if self._closed:
                        return
                    plan = self._plan(next_lsn, limit)
                for rec in self._read_plan(plan, next_lsn, limit):
                    yield rec
                    next_lsn = rec.lsn + 1
                continue
            with self._new_data:
                self._followers += 1
                try:
                    limit = self._durable_lsn if durable_only else self._last_lsn
                    if limit < next_lsn and not self._closed and self._failure is None:
                        self._new_data.wait(poll)
                finally:
                    self._followers -= 1

    # ----------------------------------------------------------------------------- close

    def close(self) -> None:
        """Wait for appends in progress, fdatasync, and release the files. Idempotent.

        After a failure it only releases the files (no fsync: see the module doc).

        Raises:
            DurabilityError: the final fdatasync failed.
        """

        error: DurabilityError | None = None
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._failure is None and self._fd is not None:
                try:
                    os.fdatasync(self._fd)
                    self._durable_lsn = self._last_lsn
                except OSError as exc:
                    error = self._fail(
                        DurabilityError(f"fdatasync on close of {self._dir} failed: {exc}")
                    )
            self._release_waiters()
            self._work.notify_all()
            self._collected.notify_all()
            self._release_files()
        self._wake_followers(force=True)
        thread = self._syncer_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if error is not None:
            self._report_fatal(error)
            raise error

    def _release_files(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "failed" if self._failure else "open"
        return (
            f"FileLog({str(self._dir)!r}, fsync={self._policy!r}, last_lsn={self._last_lsn}, "
            f"durable_lsn={self._durable_lsn}, {state})"
        )
