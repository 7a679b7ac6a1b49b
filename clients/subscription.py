"""`Subscription`: the log's events as an iterator that resumes after a dropped connection."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from replaybuf.v1 import service_pb2

from ._retry import reconnect_delay
from ._stream import StreamHandle
from ._types import LogEvent

if TYPE_CHECKING:
    from .client import ReplayClient

__all__ = ["Subscription"]


class Subscription(StreamHandle):
    """``(lsn, event)`` pairs from the server's log, in LSN order, each exactly once.

    It remembers the last LSN it returned; when the stream fails with UNAVAILABLE (server
    restart, network drop) it reconnects with backoff from ``last_lsn + 1``, and it skips any
    event at or below ``last_lsn`` should the server repeat one, so a consumer misses nothing
    and sees nothing twice. To resume in another process, persist `last_lsn` and pass
    ``from_lsn=last_lsn + 1`` to `ReplayClient.subscribe`.

    Blocking: ``next()`` waits for the next event (with ``follow``, indefinitely; without, it
    stops at the log's end). Thread-safety: consume from one thread; `close` may be called from
    any thread and ends a blocked ``next()`` with StopIteration. Not fork-safe.

    Example:
        >>> with client.subscribe(from_lsn=1, follow=False) as events:  # doctest: +SKIP
        ...     for lsn, event in events:
        ...         print(lsn, event.WhichOneof("body"))
    """

    def __init__(
        self, client: ReplayClient, from_lsn: int, follow: bool, tables: tuple[str, ...]
    ) -> None:
        super().__init__()
        self._client = client
        self._follow = follow
        self._tables = tables
        self._last_lsn = from_lsn - 1
        self._done = False
        self._reconnects = 0
        client._register(self)

    @property
    def last_lsn(self) -> int:
        """LSN of the last event returned (``from_lsn - 1`` before the first)."""

        return self._last_lsn

    @property
    def reconnects(self) -> int:
        """How many times the stream was reopened after UNAVAILABLE."""

        return self._reconnects

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> LogEvent:
        policy = self._client._retry
        failures = 0
        while True:
            if self._closed or self._done:
                raise StopIteration
            with self._lock:
                if self._call is None:
                    self._client._check_open()
                    request = service_pb2.SubscribeRequest(
                        from_lsn=self._last_lsn + 1, follow=self._follow, tables=list(self._tables)
                    )
                    self._call = self._client._stub.Subscribe(request, metadata=self._client._metadata)
                call = self._call
            try:
                message = next(call)
            except StopIteration:
                self._done = True
                raise
            except grpc.RpcError as exc:
                if self._closed:
                    raise StopIteration from None
                error = self._client._map(exc)
                with self._lock:
                    self._call = None
                delay = reconnect_delay(policy, error, failures)
                if delay is not None:
                    failures += 1
                    self._reconnects += 1
                    if self._stop.wait(delay):
                        raise StopIteration from None
                    continue
                self._done = True
                raise error from exc
            if message.lsn <= self._last_lsn:
                continue
            self._last_lsn = message.lsn
            return LogEvent(int(message.lsn), message.event)

    def close(self) -> None:
        """Cancel the stream. Idempotent; a ``next()`` blocked in another thread then stops."""

        if self._cancel():
            self._client._unregister(self)

