"""Lifecycle pieces shared by the client's long-lived objects: `with` support, and the
cancellable server stream behind `Sampler` and `Subscription`."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["Closing", "StreamHandle"]

_C = TypeVar("_C", bound="Closing")


class Closing:
    """``with obj:`` returns ``obj`` and calls its idempotent ``close()`` on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class StreamHandle(Closing):
    """One server-stream call (``_call``, guarded by ``_lock``) that `close` cancels.

    ``_stop`` is set on close, so a reconnect backoff waiting on it ends at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._call: Any = None
        self._closed = False

    def _cancel(self) -> bool:
        """Mark closed, wake any backoff wait and cancel the call; False if already closed."""

        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self._stop.set()
            call = self._call
        if call is not None:
            call.cancel()
        return True
