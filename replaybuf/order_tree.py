"""A B-ary tournament tree: the slot with the smallest (key, tiebreak) among occupied slots.

Backs the lowest- and highest-priority selectors (Reverb's MinHeap and MaxHeap): every
internal node stores the winning key, tiebreak and slot of its subtree, so the root holds the
global winner in O(1), and a batch of changes recomputes each touched node once per level,
reading its children contiguously (same layout idea as :mod:`replaybuf.sum_tree`).

Not thread-safe; the table serializes access. Kernels release the GIL.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from replaybuf.errors import FailedPreconditionError
from replaybuf._simd import JIT_OPTIONS as _JIT
from replaybuf._simd import ld as _ld
from replaybuf._simd import st as _st
from replaybuf.sum_tree import _dedup_parents

__all__ = ["OrderTree"]

_INF = math.inf
_NO_TIE = np.iinfo(np.int64).max

# meta layout (int64)
_O_LEVELS = 0
_O_SHIFT = 1
_O_CAPACITY = 2
_O_FOFF = 8  # offset of level l's keys in the float buffer (level 0: the leaves)
_O_IOFF = _O_FOFF + 64  # offset of level l's tiebreaks in the int buffer
_O_SOFF = _O_IOFF + 64  # offset of level l's winning slots in the int buffer (l >= 1)
_O_NODES = _O_SOFF + 64
_O_LEN = _O_NODES + 64


@njit(**_JIT)
def _o_recompute(keys, ints, meta, lvl, nodes, n):  # pragma: no cover - compiled
    shift = meta[_O_SHIFT]
    fan = 1 << shift
    ck = meta[_O_FOFF + lvl - 1]
    ct = meta[_O_IOFF + lvl - 1]
    cs = meta[_O_SOFF + lvl - 1]
    nk = meta[_O_FOFF + lvl]
    nt = meta[_O_IOFF + lvl]
    ns = meta[_O_SOFF + lvl]
    for q in range(n):
        k = nodes[q]
        base = k << shift
        bk = _INF
        bt = _NO_TIE
        bs = -1
        for c in range(fan):
            key = _ld(keys, ck + base + c)
            tie = _ld(ints, ct + base + c)
            if key < bk or (key == bk and tie < bt):
                bk = key
                bt = tie
                bs = base + c if lvl == 1 else _ld(ints, cs + base + c)
        _st(keys, nk + k, bk)
        _st(ints, nt + k, bt)
        _st(ints, ns + k, bs)


@njit(**_JIT)
def _o_propagate(keys, ints, meta, slots, n, nodes, marks):  # pragma: no cover - compiled
    """Recompute every ancestor of slots[:n] once per level; nodes: int64 scratch >= n."""
    if n == 0:
        return
    shift = meta[_O_SHIFT]
    ordered = True
    for i in range(1, n):
        if slots[i] < slots[i - 1]:
            ordered = False
            break
    for i in range(n):
        nodes[i] = slots[i]
    m = n
    for lvl in range(1, meta[_O_LEVELS] + 1):
        m = _dedup_parents(nodes, m, shift, ordered, marks)
        _o_recompute(keys, ints, meta, lvl, nodes, m)


@njit(**_JIT)
def _o_set(keys, ints, meta, slots, new_keys, new_ties, nodes, marks):  # pragma: no cover
    """Set leaf (key, tiebreak) pairs (unchecked: callers validate) and propagate."""
    k0 = meta[_O_FOFF]
    t0 = meta[_O_IOFF]
    for i in range(slots.size):
        _st(keys, k0 + slots[i], new_keys[i])
        _st(ints, t0 + slots[i], new_ties[i])
    _o_propagate(keys, ints, meta, slots, slots.size, nodes, marks)


@njit(**_JIT)
def _o_select(keys, ints, meta, count, out, nodes, marks, saved_k, saved_t):  # pragma: no cover
    """The ``count`` smallest leaves in order: take the root's winner, mask it, repeat; then
    restore the masked leaves. Returns how many were found (< count when fewer exist)."""
    levels = meta[_O_LEVELS]
    shift = meta[_O_SHIFT]
    k0 = meta[_O_FOFF]
    t0 = meta[_O_IOFF]
    root_k = meta[_O_FOFF + levels]
    root_s = meta[_O_SOFF + levels]
    found = 0
    for r in range(count):
        if not (_ld(keys, root_k) < _INF):
            break
        s = _ld(ints, root_s)
        out[r] = s
        saved_k[r] = _ld(keys, k0 + s)
        saved_t[r] = _ld(ints, t0 + s)
        _st(keys, k0 + s, _INF)
        _st(ints, t0 + s, _NO_TIE)
        node = s
        for lvl in range(1, levels + 1):
            node >>= shift
            nodes[0] = node
            _o_recompute(keys, ints, meta, lvl, nodes, 1)
        found += 1
    for r in range(found):
        _st(keys, k0 + out[r], saved_k[r])
        _st(ints, t0 + out[r], saved_t[r])
    _o_propagate(keys, ints, meta, out, found, nodes, marks)
    return found


class OrderTree:
    """Tournament tree over ``capacity`` slots keyed by (key: float64, tiebreak: int64).

    An empty slot has key ``inf`` and never wins. Costs, with F the fanout and n the slots
    in a call: ``set``/``clear`` O(n * F * log_F(capacity)); ``smallest(n)`` O(n * F *
    log_F(capacity)) (n extractions, then one batched restore); ``peek`` O(1).
    Not thread-safe; the table serializes access.

    Example:
        >>> import numpy as np
        >>> tree = OrderTree(6)
        >>> tree.set(np.array([0, 3, 5]), np.array([2.0, 1.0, 2.0]), np.array([7, 8, 9]))
        >>> tree.smallest(3).tolist()
        [3, 0, 5]
    """

    def __init__(self, capacity: int, *, fanout: int = 16) -> None:
        self.capacity = int(capacity)
        self.fanout = int(fanout)
        shift = self.fanout.bit_length() - 1
        nodes = [self.capacity]
        while True:
            nodes.append(-(-nodes[-1] // self.fanout))
            if nodes[-1] == 1:
                break
        levels = len(nodes) - 1
        meta = np.zeros(_O_LEN, np.int64)
        meta[_O_LEVELS] = levels
        meta[_O_SHIFT] = shift
        meta[_O_CAPACITY] = self.capacity
        foff = ioff = 0
        for lvl in range(levels + 1):
            width = nodes[lvl + 1] * self.fanout if lvl < levels else 1
            meta[_O_FOFF + lvl] = foff
            meta[_O_IOFF + lvl] = ioff
            foff += width
            ioff += width
            if lvl >= 1:
                meta[_O_SOFF + lvl] = ioff
                ioff += width
        for lvl, count in enumerate(nodes):
            meta[_O_NODES + lvl] = count
        self._meta = meta
        self._keys = np.full(foff, np.inf)
        self._ints = np.full(ioff, _NO_TIE, np.int64)
        for lvl in range(1, levels + 1):
            width = nodes[lvl + 1] * self.fanout if lvl < levels else 1
            so = int(meta[_O_SOFF + lvl])
            self._ints[so : so + width] = -1
        self._marks = np.zeros(nodes[1], np.uint8)
        self._nodes = np.empty(256, np.int64)
        self._root_key = int(meta[_O_FOFF + levels])
        self._root_slot = int(meta[_O_SOFF + levels])

    def _scratch(self, n: int) -> np.ndarray:
        if self._nodes.size < n:
            self._nodes = np.empty(max(n, 2 * self._nodes.size), np.int64)
        return self._nodes

    def set(self, slots: np.ndarray, keys: np.ndarray, ties: np.ndarray) -> None:
        """Set (key, tiebreak) of ``slots``; inputs must be validated int64/float64 arrays."""
        _o_set(self._keys, self._ints, self._meta, slots, keys, ties,
               self._scratch(slots.size), self._marks)

    def clear(self, slots: np.ndarray) -> None:
        """Empty ``slots`` (key inf): they never win again until set."""
        n = slots.size
        _o_set(self._keys, self._ints, self._meta, slots, np.full(n, np.inf),
               np.full(n, _NO_TIE, np.int64), self._scratch(n), self._marks)

    def keys(self) -> np.ndarray:
        """The leaf keys (a copy; ``inf`` for empty slots)."""
        return self._keys[: self.capacity].copy()

    def ties(self) -> np.ndarray:
        """The leaf tiebreaks (a copy)."""
        return self._ints[: self.capacity].copy()

    def peek(self) -> int:
        """The winning slot, or -1 when every slot is empty. O(1)."""
        if not self._keys[self._root_key] < np.inf:
            return -1
        return int(self._ints[self._root_slot])

    def smallest(self, n: int) -> np.ndarray:
        """The ``n`` winning slots, best first.

        Raises:
            FailedPreconditionError: fewer than n slots are occupied.
        """
        out = np.empty(n, np.int64)
        found = _o_select(self._keys, self._ints, self._meta, n, out, self._scratch(n),
                          self._marks, np.empty(n, np.float64), np.empty(n, np.int64))
        if found < n:
            raise FailedPreconditionError(
                f"asked for {n} items but only {found} are present; select fewer"
            )
        return out

    def load(self, keys: Any, ties: Any) -> None:
        """Replace every leaf and rebuild. O(capacity)."""
        self._keys[: self.capacity] = keys
        self._ints[: self.capacity] = ties
        slots = np.arange(self.capacity, dtype=np.int64)
        _o_propagate(self._keys, self._ints, self._meta, slots, self.capacity,
                     np.empty(self.capacity, np.int64), self._marks)
