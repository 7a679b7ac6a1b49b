"""`OutputPool`: byte buffers for batches handed to callers, reused once nobody holds them.

Shared by the engine's row gathers (`replaybuf.gather`) and the client's copies out of a
shared-memory ring (`replaybuf_client`), which must not import numba: this module needs
numpy only.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["OutputPool", "POOL_SIZE"]

#: Buffers an `OutputPool` keeps for reuse.
POOL_SIZE = 4


class OutputPool:
    """Byte buffers for sampled batches, reused once nothing else references them.

    A buffer is free when its reference count shows only the pool: every array handed out
    is a view whose ``base`` is the buffer, and so is anything built on one without a copy
    (a slice, ``torch.from_numpy``, a memoryview), so a batch still in use is never
    overwritten. Keeps at most `size` buffers; beyond that a batch gets a buffer of its own.
    Cost: O(size) reference checks per `take`. Not thread-safe (the caller's lock).
    """

    def __init__(self, size: int = POOL_SIZE) -> None:
        self._size = size
        self._bufs: list[np.ndarray] = []

    # References to a free buffer while `take` looks at it: the pool's list, the loop
    # variable and getrefcount's argument.
    _FREE_REFS = 3

    def take(self, nbytes: int) -> np.ndarray:
        """A uint8 buffer of exactly `nbytes` whose contents nobody else can see."""

        stale = -1
        for i in range(len(self._bufs)):  # not enumerate: its cached tuple holds a reference
            buf = self._bufs[i]
            if sys.getrefcount(buf) <= self._FREE_REFS:
                if buf.size == nbytes:
                    return buf
                stale = i
        fresh = np.empty(nbytes, np.uint8)
        if stale >= 0:
            self._bufs[stale] = fresh
        elif len(self._bufs) < self._size:
            self._bufs.append(fresh)
        return fresh

    def __len__(self) -> int:
        return len(self._bufs)
