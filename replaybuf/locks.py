"""Two small locks the engine needs beyond `threading.Lock`.

* `FairLock`: a mutex handed to waiters in arrival order. The engine's writer lock is one, so
  that a thread that comes straight back for it (the sample recorder) cannot starve appends.
* `SharedLock`: many shared holders or one exclusive holder. The view's readers hold it shared;
  growing the LMDB map takes it exclusively, because ``set_mapsize`` needs every transaction
  of the process closed.

Both are thread-safe; neither is reentrant.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["FairLock", "SharedLock"]


class FairLock:
    """A mutex granted in FIFO order (ownership is handed to the oldest waiter on release).

    Example::

        lock = FairLock()
        with lock:
            pass
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: collections.deque[threading.Lock] = collections.deque()

    def acquire(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            baton = threading.Lock()
            baton.acquire()
            self._waiters.append(baton)
        baton.acquire()  # released by the holder, who hands over ownership

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class SharedLock:
    """Many shared holders or one exclusive holder; a waiting exclusive request blocks new
    shared ones, so it cannot starve.

    Example::

        lock = SharedLock()
        with lock.shared():
            pass
        with lock.exclusive():
            pass
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._exclusive or self._shared:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()
