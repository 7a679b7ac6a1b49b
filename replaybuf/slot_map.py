"""Item id -> slot of one table, as two parallel arrays sorted by id.

Item ids are assigned in increasing order and every append to a table brings ids larger than
any it holds, so the map only ever grows at its end: appending is a copy into the arrays, a
removal marks its entries dead (slot -1), and a lookup is one `numpy.searchsorted` over the
ids (or, while the ids have no gaps, a subtraction). No Python work per item, unlike a dict:
loading a million items is a copy, and looking up a sampled batch is a few numpy calls. Dead
entries are dropped once they outnumber the live ones, so memory stays O(live items) and
lookups O(log live items).

Not thread-safe: the table calls it under its lock.

Example::

    m = SlotMap()
    m.add(np.array([5, 9], np.uint64), np.array([0, 1]))
    assert m.lookup(np.array([9, 7], np.uint64)).tolist() == [1, -1] and len(m) == 2
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SlotMap"]

_MIN_ROOM = 64
_NO_SLOT = np.int64(-1)


def _as_ids(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.dtype == np.uint64:
        return arr.reshape(-1)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"item ids must be integers, not {arr.dtype}")
    if arr.size and arr.dtype.kind == "i" and arr.min() < 0:
        raise ValueError("item ids must be >= 0")
    return arr.astype(np.uint64).reshape(-1)


class SlotMap:
    """Sorted-array map from item id (uint64) to slot (int64); see the module docstring.

    Cost: `add` O(n) amortized, `lookup` O(q log N), `remove` O(q log N) plus an occasional
    O(N) compaction, `load` O(N).
    """

    def __init__(self) -> None:
        self._ids = np.empty(_MIN_ROOM, np.uint64)
        self._slots = np.empty(_MIN_ROOM, np.int64)
        self._n = 0  # entries in use, dead ones included
        self._live = 0

    def __len__(self) -> int:
        return self._live

    @property
    def last_id(self) -> int:
        """Largest id ever added since the last `load` (0 when none)."""

        return int(self._ids[self._n - 1]) if self._n else 0

    def load(self, ids: np.ndarray, slots: np.ndarray) -> None:
        """Replace the content with `ids` (strictly increasing) and their `slots`."""

        ids, slots = _as_ids(ids), np.asarray(slots, np.int64).reshape(-1)
        if ids.size != slots.size:
            raise ValueError(f"{ids.size} ids but {slots.size} slots")
        if ids.size > 1 and not (ids[1:] > ids[:-1]).all():
            raise ValueError("ids to load must be strictly increasing")
        room = max(_MIN_ROOM, ids.size)
        self._ids = np.empty(room, np.uint64)
        self._slots = np.empty(room, np.int64)
        self._ids[: ids.size], self._slots[: ids.size] = ids, slots
        self._n = self._live = int(ids.size)

    def add(self, ids: np.ndarray, slots: np.ndarray) -> None:
        """Add ids (strictly increasing, all larger than `last_id`) at `slots`."""

        ids, slots = _as_ids(ids), np.asarray(slots, np.int64).reshape(-1)
        n = ids.size
        if n != slots.size:
            raise ValueError(f"{n} ids but {slots.size} slots")
        if not n:
            return
        if (self._n and ids[0] <= self._ids[self._n - 1]) or (
                n > 1 and not (ids[1:] > ids[:-1]).all()):
            raise ValueError(
                f"ids {int(ids[0])}.. do not increase past {self.last_id}; a table's item ids "
                "must be added in increasing order")
        end = self._n + n
        if end > self._ids.size:
            room = max(end, 2 * self._ids.size)
            self._ids = np.concatenate([self._ids[: self._n], np.empty(room - self._n, np.uint64)])
            self._slots = np.concatenate([self._slots[: self._n],
                                          np.empty(room - self._n, np.int64)])
        self._ids[self._n : end], self._slots[self._n : end] = ids, slots
        self._n = end
        self._live += n

    def _positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(clipped positions of ids among the entries, whether each is a live entry)."""

        n = self._n
        keys = self._ids[:n]
        if int(keys[n - 1]) - int(keys[0]) == n - 1:  # no gaps (one table's usual case)
            pos = np.minimum(ids - keys[0], np.uint64(n - 1)).astype(np.intp)  # wraps if below
        else:
            pos = np.minimum(np.searchsorted(keys, ids), n - 1)
        return pos, (keys[pos] == ids) & (self._slots[pos] >= 0)

    def lookup(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Slots of `ids` (int64), -1 where absent."""

        arr = np.asarray(ids)
        if arr.dtype.kind == "i" and arr.size and arr.min() < 0:  # never an id: absent
            out = np.full(arr.size, _NO_SLOT)
            ok = arr.reshape(-1) >= 0
            out[ok] = self.lookup(arr.reshape(-1)[ok])
            return out
        ids = _as_ids(arr)
        if not self._n or not ids.size:
            return np.full(ids.size, _NO_SLOT)
        pos, live = self._positions(ids)
        return np.where(live, self._slots[pos], _NO_SLOT)

    def get(self, item_id: int) -> int | None:
        """Slot of one id, or None."""

        if not self._n or not 0 <= item_id < 2**64:
            return None
        keys = self._ids[: self._n]
        pos = int(np.searchsorted(keys, np.uint64(item_id)))
        if pos < self._n and int(keys[pos]) == item_id and self._slots[pos] >= 0:
            return int(self._slots[pos])
        return None

    def remove(self, ids: Sequence[int] | np.ndarray) -> None:
        """Forget ids (each present once).

        Raises:
            KeyError: an id is absent or given twice; nothing is changed.
        """

        ids = _as_ids(ids)
        if not ids.size:
            return
        if not self._n:
            raise KeyError(int(ids[0]))
        pos, live = self._positions(ids)
        if not live.all():
            raise KeyError(int(ids[np.flatnonzero(~live)[0]]))
        if np.unique(pos).size != pos.size:
            raise KeyError("an id is given twice")
        self._slots[pos] = _NO_SLOT
        self._live -= int(ids.size)
        if self._n - self._live > max(self._live, _MIN_ROOM):
            keep = self._slots[: self._n] >= 0
            self.load(self._ids[: self._n][keep], self._slots[: self._n][keep])

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids ascending, their slots) of every live entry (copies)."""

        keep = self._slots[: self._n] >= 0
        return self._ids[: self._n][keep].copy(), self._slots[: self._n][keep].copy()
