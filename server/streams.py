"""Thread helpers of the streaming RPCs: reading a request stream ahead, following the log.

Both exist so that a handler thread never sits in a call it cannot interrupt: a client that
keeps its Append stream open but idle, or a Subscribe waiting for new events, must still end
promptly when the server shuts down.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["END", "Failure", "Cancelled", "ReadAhead", "follow", "WAIT_SLICE"]

#: Seconds a blocked call waits (for the rate limiter, a request, an event) before checking
#: for a client cancel or a server shutdown again.
WAIT_SLICE = 0.2

#: Marks the normal end of a queue of items.
END = object()


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
            if self._shutdown.is_set():
                self.stopped = True
                return
            try:
                item = self._queue.get(timeout=WAIT_SLICE)
            except queue.Empty:
                continue
            if item is END:
                return
            if isinstance(item, Failure):
                raise Cancelled() from item.exc
            yield item

    def close(self) -> None:
        self._closed.set()
