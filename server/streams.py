"""Thread helpers of the streaming RPCs: reading a request stream ahead, following the log,
and counting a SampleStream's credit.

They exist so that a handler thread never sits in a call it cannot interrupt: a client that
keeps its Append or SampleStream stream open but idle, or a Subscribe waiting for new events,
must still end promptly when the server shuts down.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from replaybuf.errors import InvalidArgumentError, ReplayError

__all__ = [
    "END", "NOTHING", "Failure", "Cancelled", "ReadAhead", "Credit", "CreditReader", "follow", "WAIT_SLICE",
]

#: Seconds a blocked call waits (for the rate limiter, a request, an event) before checking
#: for a client cancel or a server shutdown again.
WAIT_SLICE = 0.2

#: Marks the normal end of a queue of items.
END = object()

#: `ReadAhead.get`: no request arrived in time.
NOTHING = object()


class Failure:
    """An exception handed from a helper thread to the stream that reports it."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Cancelled(Exception):
    """The client went away; end quietly."""


def follow(
    log: Any, from_lsn: int, stop: threading.Event, shutdown: threading.Event, durable_only: bool
) -> Iterator[Any]:
    """`Log.follow` that also ends when the server shuts down."""

    both = threading.Event()

    def watch() -> None:
        while not both.is_set():
            if stop.wait(WAIT_SLICE) or shutdown.is_set():
                both.set()

    watcher = threading.Thread(target=watch, name="replaybuf-subscribe-watch", daemon=True)
    watcher.start()
    try:
        yield from log.follow(from_lsn, stop=both, durable_only=durable_only)
    finally:
        both.set()


class ReadAhead:
    """Iterate a client's request stream from a helper thread, one message ahead.

    The handler thread can then notice a shutdown while the client is idle (a blocking read
    of the request stream cannot be interrupted otherwise). ``stopped`` tells whether the
    iteration ended because of the shutdown rather than the client's end of stream.
    """

    def __init__(self, requests: Iterator[Any], shutdown: threading.Event) -> None:
        self._requests = requests
        self._shutdown = shutdown
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._closed = threading.Event()
        self.stopped = False
        self._thread = threading.Thread(
            target=self._run, name="replaybuf-append-reader", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            for request in self._requests:
                while not self._closed.is_set():
                    try:
                        self._queue.put(request, timeout=WAIT_SLICE)
                        break
                    except queue.Full:
                        continue
                if self._closed.is_set():
                    return
            self._put_final(END)
        except BaseException as exc:  # noqa: BLE001 - the client cancelled or the call ended
            self._put_final(Failure(exc))

    def _put_final(self, item: Any) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=WAIT_SLICE)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self.get(WAIT_SLICE)
            if item is END:
                return
            if item is not NOTHING:
                yield item

    def get(self, timeout: float) -> Any:
        """The next request; `NOTHING` if none arrived within `timeout` seconds (0: do not
        wait); `END` at the client's end of the stream, or once the server shuts down (then
        `stopped` is True).

        Raises:
            Cancelled: the client went away or the call failed.
        """

        if self._shutdown.is_set():
            self.stopped = True
            return END
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return NOTHING
        if isinstance(item, Failure):
            raise Cancelled() from item.exc
        if item is END:
            self._queue.put(END)  # later calls see the end too
        return item

    def close(self) -> None:
        self._closed.set()


class Credit:
    """How many more batches a Sample stream may draw, and whether more credit can come.

    `Sample` frees a batch's credit when the transport has taken it (`release`);
    `SampleStream` frees it when the client acknowledges the batch as consumed (`grant`, from
    `CreditReader`). Once no more credit can arrive (the client half-closed: `exhaust`), a
    producer out of credit ends instead of waiting forever.

    Thread-safe: `acquire` is called by the producer thread, `grant` and `exhaust` by the
    reader thread, `count_sent`, `release` and `wake` by the handler thread.
    """

    def __init__(self, initial: int, *, carried: int = 0) -> None:
        """``initial`` batches may be drawn at once; ``carried`` batches of an earlier stream,
        which the client holds unconsumed, may be acknowledged besides those sent here."""

        self._cond = threading.Condition()
        self._available = initial
        self._exhausted = False
        self._carried = carried
        self.sent = 0
        self.acknowledged = 0

    def acquire(self, stop: threading.Event, shutdown: threading.Event) -> bool:
        """Block until one batch may be drawn and take its credit. False, taking nothing, when
        ``stop`` or ``shutdown`` is set or no more credit can come; wakes within `WAIT_SLICE`
        seconds of either event (at once after `wake`)."""

        with self._cond:
            while True:
                if stop.is_set() or shutdown.is_set():
                    return False
                if self._available:
                    self._available -= 1
                    return True
                if self._exhausted:
                    return False
                self._cond.wait(WAIT_SLICE)

    def count_sent(self) -> None:
        """Count a batch about to be handed to the transport (the client may acknowledge it)."""

        with self._cond:
            self.sent += 1

    def release(self) -> None:
        """Free one batch's credit (Sample: the transport took it)."""

        with self._cond:
            self._available += 1
            self._cond.notify_all()

    def grant(self, consumed: int) -> None:
        """The client consumed ``consumed`` more batches: that many more may be drawn.

        Raises:
            InvalidArgumentError: ``consumed`` < 1, or more batches acknowledged than sent
                plus carried.
        """

        with self._cond:
            if consumed < 1 or self.acknowledged + consumed > self.sent + self._carried:
                raise InvalidArgumentError(
                    f"SampleStream: consumed={consumed} would acknowledge "
                    f"{self.acknowledged + consumed} batch(es) but {self.sent} were sent (and "
                    f"{self._carried} carried over as unconsumed); send consumed >= 1, "
                    "acknowledging each received batch once"
                )
            self.acknowledged += consumed
            self._available += consumed
            self._cond.notify_all()

    def exhaust(self) -> None:
        """No more credit will come: a producer out of credit ends."""

        with self._cond:
            self._exhausted = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake a producer waiting in `acquire` to look at ``stop`` again."""

        with self._cond:
            self._cond.notify_all()


class CreditReader:
    """Read a SampleStream's client messages on a helper thread.

    The first message is handed to `first`; every later one grants its ``consumed`` batches
    to the stream's `Credit` (attached with `attach`). A bad message is reported to
    ``on_error``; when the client half-closes (or the call ends) the credit is exhausted. A
    daemon thread; it ends when the client half-closes or the call ends (cancel, shutdown,
    error), or after `close` once the next message arrives.
    """

    def __init__(self, requests: Iterator[Any]) -> None:
        self._requests = requests
        self._first: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._credit: Credit | None = None
        self._attached = threading.Event()
        self._closed = threading.Event()
        self._on_error: Any = None
        self._thread = threading.Thread(
            target=self._run, name="replaybuf-sample-credit", daemon=True
        )
        self._thread.start()

    def first(self, stop: threading.Event, shutdown: threading.Event) -> Any:
        """The client's first message; None if the client ended or went away first, or on
        ``stop``/``shutdown``. Wakes within `WAIT_SLICE` seconds of either event."""

        while not (stop.is_set() or shutdown.is_set()):
            try:
                item = self._first.get(timeout=WAIT_SLICE)
            except queue.Empty:
                continue
            return None if item is END or isinstance(item, Failure) else item
        return None

    def attach(self, credit: Credit, on_error: Any) -> None:
        """Start granting later messages to ``credit``; ``on_error(exc)`` reports a bad one."""

        self._credit, self._on_error = credit, on_error
        self._attached.set()

    def _run(self) -> None:
        it = iter(self._requests)
        try:
            first = next(it, END)
        except BaseException as exc:  # noqa: BLE001 - the client cancelled or the call ended
            self._first.put(Failure(exc))
            return
        self._first.put(first)
        if first is END:
            return
        while not self._attached.wait(WAIT_SLICE):
            if self._closed.is_set():
                return
        credit = self._credit
        assert credit is not None
        try:
            for message in it:
                if self._closed.is_set():
                    return
                if message.HasField("request"):
                    raise InvalidArgumentError(
                        "SampleStream: only the first message carries `request`; later "
                        "messages acknowledge batches with consumed >= 1"
                    )
                credit.grant(message.consumed)
        except BaseException as exc:  # noqa: BLE001 - a bad message, or the call ended
            if isinstance(exc, ReplayError):
                self._on_error(exc)
        finally:
            credit.exhaust()  # half-closed, failed or gone: no more credit will come

    def close(self) -> None:
        self._closed.set()
