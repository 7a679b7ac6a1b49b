"""The `Log` interface: an append-only sequence of opaque event records with gap-free LSNs.

The log is the source of truth (DESIGN.md, invariant 1). Engine code talks only to this
interface, so the embedded file log (`replaybuf.file_log.FileLog`) and later distributed
backends pass the same test suite.

Model:
    * An LSN (log sequence number) is a positive integer; the first record gets LSN 1 and every
      following record the next integer: no gaps, no reuse. ``0`` means "nothing yet".
    * One :meth:`Log.append` call writes one *frame*: a batch of records that becomes durable
      (or is lost) as a whole. It returns the frame's LSN range.
    * A record is opaque bytes to the log. `replaybuf.events` encodes protobuf events into them.
    * Appends may carry ``(producer_id, producer_seq)``: appending the same pair again (a client
      retry after a lost ack) writes nothing and returns the original LSN range with
      ``duplicate=True``.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

__all__ = ["AppendResult", "LogRecord", "Log", "PendingAppend", "FSYNC_POLICIES"]

#: Supported fsync policies, strongest first. See `replaybuf.file_log.FileLogConfig`.
FSYNC_POLICIES = ("always", "group", "interval", "none")


@dataclass(frozen=True)
class AppendResult:
    """What an append returns (the "ack").

    Attributes:
        first_lsn: LSN of the frame's first record.
        last_lsn: LSN of the frame's last record (``first_lsn + count - 1``).
        durable: True when the frame was fsynced before this returned (policies ``always`` and
            ``group``); False under ``interval`` and ``none``, where it survives a process
            crash but not a power loss until the next sync.
        duplicate: True when ``(producer_id, producer_seq)`` had been appended before and
            nothing new was written; the LSNs are the original ones.
    """

    first_lsn: int
    last_lsn: int
    durable: bool
    duplicate: bool = False

    @property
    def count(self) -> int:
        return self.last_lsn - self.first_lsn + 1


_new_object = object.__new__


def make_ack(first_lsn: int, last_lsn: int, durable: bool, duplicate: bool) -> AppendResult:
    """``AppendResult(first_lsn, last_lsn, durable, duplicate)``, built about twice as fast.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; a log
    builds one ack per append, on the path that group commit makes as short as it can, so
    this fills the new instance's ``__dict__`` directly. The result is the same object as the
    constructor's (equal, same repr and hash; `tests/test_file_log.py` pins that).
    """

    ack = _new_object(AppendResult)
    fields = ack.__dict__
    fields["first_lsn"] = first_lsn
    fields["last_lsn"] = last_lsn
    fields["durable"] = durable
    fields["duplicate"] = duplicate
    return ack


class PendingAppend:
    """An append whose frame has its LSNs (it is queued or written) but whose ack may not be
    due yet: `wait` blocks until the log's policy allows the ack (under ``group``/``always``:
    the fdatasync) and returns it. From `Log.begin_append`.

    Call `wait` promptly and from one thread: under ``group`` the caller may hold the
    committer role, and the frames queued behind it wait for it. Calling it again returns the
    same ack.

    Attributes:
        first_lsn: LSN of the frame's first record.
        last_lsn: LSN of its last record.
        duplicate: the producer's batch was appended before (nothing new was written).
    """

    __slots__ = ("first_lsn", "last_lsn", "duplicate", "_ack")

    def __init__(self, first_lsn: int, last_lsn: int, duplicate: bool) -> None:
        self.first_lsn = first_lsn
        self.last_lsn = last_lsn
        self.duplicate = duplicate
        self._ack: AppendResult | None = None

    @classmethod
    def done(cls, ack: AppendResult) -> PendingAppend:
        """One that is over already (`Log.begin_append`'s default: a blocking append)."""

        p = cls(ack.first_lsn, ack.last_lsn, ack.duplicate)
        p._ack = ack
        return p

    def wait(self) -> AppendResult:
        """The ack, once due.

        Raises:
            DurabilityError: the frame was not made durable (the log failed).
        """

        if self._ack is None:
            self._ack = self._finish()
        return self._ack

    def _finish(self) -> AppendResult:  # pragma: no cover - subclasses that defer override it
        raise NotImplementedError


@dataclass(frozen=True)
class LogRecord:
    """One record read back from the log.

    Attributes:
        lsn: the record's LSN.
        payload: the bytes that were appended.
        timestamp_ms: wall-clock time (ms since the epoch) at which its frame was written.
        producer_id: the frame's producer id (16 bytes; all zeros when none was given).
        producer_seq: the frame's producer sequence (0 when none was given).
    """

    lsn: int
    payload: bytes
    timestamp_ms: int
    producer_id: bytes
    producer_seq: int


class Log(abc.ABC):
    """An append-only, gap-free sequence of records. Implementations are thread-safe.

    Use as a context manager, or call :meth:`close` exactly once; every method but ``close``
    raises `replaybuf.errors.ClosedError` afterwards.
    """

    @property
    @abc.abstractmethod
    def log_id(self) -> str:
        """A stable unique id of this log (a UUID string), fixed when the log was created.

        A view records it so that it can tell when it was built from another log.
        """

    @abc.abstractmethod
    def append(
        self,
        payloads: Sequence[bytes],
        *,
        producer_id: bytes | None = None,
        producer_seq: int | None = None,
    ) -> AppendResult:
        """Append ``payloads`` as one frame and return its LSN range.

        Blocks until the frame is written and, under ``always``/``group``, fsynced.

        Args:
            payloads: one or more records (non-empty).
            producer_id: 16 bytes identifying the producer, for idempotent retries.
            producer_seq: the producer's sequence number of this batch (>= 1); required with
                ``producer_id``.

        Raises:
            InvalidArgumentError: empty ``payloads``, or a bad producer id/sequence.
            DurabilityError: the write or fsync failed (the process should exit).
        """

    def begin_append(
        self,
        payloads: Sequence[bytes],
        *,
        producer_id: bytes | None = None,
        producer_seq: int | None = None,
    ) -> PendingAppend:
        """Start `append`: fix the frame's LSNs now, wait for its ack in `PendingAppend.wait`.

        Lets a caller that must order frames (the engine, under its writer lock) release its
        lock before the fsync, so that frames of concurrent callers share one group commit.
        Same arguments and errors as `append` (raised here, or by ``wait`` for the write and
        fsync). This default appends synchronously; `FileLog` defers the wait.
        """

        return PendingAppend.done(self.append(payloads, producer_id=producer_id,
                                              producer_seq=producer_seq))

    @abc.abstractmethod
    def find_duplicate(self, producer_id: bytes, producer_seq: int) -> AppendResult | None:
        """The original ack of ``(producer_id, producer_seq)`` if that batch was appended.

        Lets a caller that builds its records from current state (the engine) recognise a
        retry before building them: the retry is answered with the original LSNs even if the
        records would now come out differently. Returns None for a sequence not seen yet.

        Raises:
            InvalidArgumentError: a bad producer id/sequence, or one older than the dedup
                window.
        """

    @abc.abstractmethod
    def read(self, from_lsn: int = 1, to_lsn: int | None = None) -> Iterator[LogRecord]:
        """Yield the records with ``from_lsn <= lsn <= to_lsn`` (to the current end if None).

        Only records that are written (visible to readers) are returned; a reader never sees a
        partial frame.
        """

    @abc.abstractmethod
    def follow(
        self,
        from_lsn: int = 1,
        *,
        stop: threading.Event | None = None,
        poll: float = 0.05,
        durable_only: bool = True,
    ) -> Iterator[LogRecord]:
        """Yield records from ``from_lsn`` on, then wait for new ones until ``stop`` is set.

        Args:
            from_lsn: first LSN to yield.
            stop: set it to end the iteration (checked at least every ``poll`` seconds).
            poll: how long to wait for new records before checking ``stop`` again, in seconds.
            durable_only: yield only records at or below :attr:`durable_lsn`.
        """

    @property
    @abc.abstractmethod
    def last_lsn(self) -> int:
        """LSN of the last record written (visible to readers); 0 when the log is empty."""

    @property
    @abc.abstractmethod
    def durable_lsn(self) -> int:
        """LSN up to which every record is known to be fsynced; 0 when none is."""

    @abc.abstractmethod
    def sync(self) -> int:
        """Force everything written to disk now; returns the new :attr:`durable_lsn`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Finish pending appends, sync, and release files. Idempotent."""

    def __enter__(self) -> Log:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
