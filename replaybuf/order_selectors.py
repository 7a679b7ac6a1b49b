"""Selectors that ignore priorities (uniform, insertion order) or order by them (lowest or
highest first): see :mod:`replaybuf.selectors` for the shared shape."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numba import njit

from replaybuf._simd import JIT_OPTIONS
from replaybuf._validation import (
    FORMAT_VERSION,
    as_rng,
    as_slots,
    as_values,
    check_capacity,
    check_count,
    check_exponent,
    check_state_header,
    raise_for,
    state_array,
)
from replaybuf.errors import FailedPreconditionError, InvalidArgumentError
from replaybuf.order_tree import _NO_TIE, OrderTree
from replaybuf.selector_base import (
    SampleResult,
    Selector,
    check_slots_values,
    first_unoccupied,
    slots_and_priorities,
)
from replaybuf.sum_tree import DEFAULT_FANOUT, HOLD_GIL_MAX_WRITE

_NO_VALUES = np.empty(0, np.float64)

__all__ = [
    "UniformSelector",
    "FifoSelector",
    "LifoSelector",
    "LowestPrioritySelector",
    "HighestPrioritySelector",
]


@njit(**JIT_OPTIONS)
def _u_insert(items, pos, meta, slots):  # pragma: no cover - compiled
    size = meta[0]
    for i in range(slots.size):
        s = slots[i]
        if pos[s] < 0:
            pos[s] = size
            items[size] = s
            size += 1
    meta[0] = size


@njit(**JIT_OPTIONS)
def _u_remove(items, pos, meta, slots):  # pragma: no cover - compiled
    size = meta[0]
    for i in range(slots.size):
        s = slots[i]
        p = pos[s]
        if p >= 0:
            last = items[size - 1]
            items[p] = last
            pos[last] = p
            pos[s] = -1
            size -= 1
    meta[0] = size


@njit(**JIT_OPTIONS)
def _u_sample(items, meta, u, out, distinct, swaps):  # pragma: no cover - compiled
    """With replacement: items[floor(u * size)]. Without: a partial Fisher-Yates shuffle of
    the first B positions, undone afterwards so that the item order stays a function of
    the insert/remove history only."""
    size = meta[0]
    if not distinct:
        for i in range(u.size):
            k = np.int64(u[i] * size)
            out[i] = items[k if k < size else size - 1]
        return
    for i in range(u.size):
        left = size - i
        k = np.int64(u[i] * left)
        j = i + (k if k < left else left - 1)
        swaps[i] = j
        a = items[i]
        items[i] = items[j]
        items[j] = a
        out[i] = items[i]
    for i in range(u.size - 1, -1, -1):
        j = swaps[i]
        a = items[i]
        items[i] = items[j]
        items[j] = a


class UniformSelector(Selector):
    """Every occupied slot equally likely (Reverb's Uniform).

    Occupied slots sit in a dense array (swap-remove), so insert, remove and each draw are
    O(1). ``probabilities`` are ``1 / size`` and ``weights`` 1. With replacement by default;
    without, a partial Fisher-Yates shuffle. Priorities are validated and ignored.
    Not thread-safe; the table serializes access.

    Example:
        >>> import numpy as np
        >>> sel = UniformSelector(10)
        >>> sel.insert(np.array([3, 5, 7]))
        >>> sorted(sel.sample(3, np.random.default_rng(1)).slots.tolist()) in ([3, 5, 7],
        ...     [3, 3, 5], [3, 3, 7], [3, 5, 5], [3, 7, 7], [5, 5, 7], [5, 7, 7], [3, 3, 3],
        ...     [5, 5, 5], [7, 7, 7])
        True
    """

    kind: ClassVar[str] = "uniform"

    def __init__(self, capacity: int, *, with_replacement: bool = True) -> None:
        self.capacity = check_capacity(capacity)
        self.with_replacement = bool(with_replacement)
        self._items = np.zeros(self.capacity, np.int64)
        self._pos = np.full(self.capacity, -1, np.int64)
        self._meta = np.zeros(1, np.int64)

    @property
    def size(self) -> int:
        return int(self._meta[0])

    def insert(self, slots: np.ndarray, priorities: np.ndarray | None = None) -> None:
        """Add slots (already occupied ones are left as they are). O(n)."""
        s, _ = slots_and_priorities(self.capacity, slots, priorities)
        _u_insert(self._items, self._pos, self._meta, s)

    def update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        """Validate only: uniform sampling ignores priorities. O(n)."""
        s, _ = slots_and_priorities(self.capacity, slots, priorities)
        raise_for(first_unoccupied(self._pos, s), s, None, self.capacity)

    def remove(self, slots: np.ndarray) -> None:
        """Forget occupied slots. O(n)."""
        s, _ = slots_and_priorities(self.capacity, slots, None)
        raise_for(first_unoccupied(self._pos, s), s, None, self.capacity)
        _u_remove(self._items, self._pos, self._meta, s)

    def sample(
        self, batch_size: int, rng: np.random.Generator | int, beta: float = 0.4
    ) -> SampleResult:
        """``batch_size`` uniform draws; O(B). ``beta`` is accepted for symmetry."""
        b = check_count(batch_size)
        rng = as_rng(rng)
        check_exponent(beta)
        if self.size == 0:
            raise FailedPreconditionError("nothing to sample: the selector is empty")
        if not self.with_replacement:
            self._need(b)
        u = rng.random(b)
        out = np.empty(b, np.int64)
        _u_sample(self._items, self._meta, u, out, not self.with_replacement,
                  np.empty(b, np.int64))
        return SampleResult(out, np.full(b, 1.0 / self.size), np.ones(b))

    def select(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` distinct uniformly random slots (needs an rng)."""
        if rng is None:
            raise InvalidArgumentError("UniformSelector.select needs an rng")
        n = check_count(n, "n")
        self._need(n)
        out = np.empty(n, np.int64)
        _u_sample(self._items, self._meta, as_rng(rng).random(n), out, True,
                  np.empty(n, np.int64))
        return out

    def state(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "capacity": self.capacity,
            "with_replacement": self.with_replacement,
            "items": self._items[: self.size].copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> UniformSelector:
        check_state_header(state, cls.kind)
        sel = cls(int(state["capacity"]), with_replacement=bool(state["with_replacement"]))
        items = as_slots(state["items"], "state['items']")
        if items.size and (items.min() < 0 or items.max() >= sel.capacity
                           or np.unique(items).size != items.size):
            raise InvalidArgumentError("state['items'] must hold distinct slots in range")
        _u_insert(sel._items, sel._pos, sel._meta, items)
        return sel


# ----------------------------------------------------------------------------------------------


@njit(**JIT_OPTIONS)
def _ll_insert(prev, nxt, ctr, meta, slots):  # pragma: no cover - compiled
    """Append slots at the tail (an occupied slot moves there with a new counter).

    meta: [head, tail, size, next_counter]."""
    for i in range(slots.size):
        s = slots[i]
        if ctr[s] >= 0:
            _ll_unlink(prev, nxt, ctr, meta, s)
        tail = meta[1]
        prev[s] = tail
        nxt[s] = -1
        if tail >= 0:
            nxt[tail] = s
        else:
            meta[0] = s
        meta[1] = s
        meta[2] += 1
        ctr[s] = meta[3]
        meta[3] += 1


@njit(**JIT_OPTIONS)
def _ll_unlink(prev, nxt, ctr, meta, s):  # pragma: no cover - compiled
    p = prev[s]
    q = nxt[s]
    if p >= 0:
        nxt[p] = q
    else:
        meta[0] = q
    if q >= 0:
        prev[q] = p
    else:
        meta[1] = p
    ctr[s] = -1
    meta[2] -= 1


@njit(**JIT_OPTIONS)
def _ll_remove(prev, nxt, ctr, meta, slots):  # pragma: no cover - compiled
    for i in range(slots.size):
        s = slots[i]
        if ctr[s] >= 0:
            _ll_unlink(prev, nxt, ctr, meta, s)


@njit(**{**JIT_OPTIONS, "nogil": False})
def _ll_remove_held(prev, nxt, ctr, meta, cap, slots, no_values):  # pragma: no cover
    """Check and remove in one call that keeps the GIL (removals of at most
    `replaybuf.sum_tree.HOLD_GIL_MAX_WRITE` slots, made under the table's lock): the error
    code of the first bad or free slot (nothing removed), else 0."""
    rc = check_slots_values(cap, slots, no_values)
    if rc == 0:
        rc = first_unoccupied(ctr, slots)
    if rc == 0:
        _ll_remove(prev, nxt, ctr, meta, slots)
    return rc


@njit(**JIT_OPTIONS)
def _ll_walk(prev, nxt, meta, out, from_tail):  # pragma: no cover - compiled
    s = meta[1] if from_tail else meta[0]
    for i in range(out.size):
        out[i] = s
        s = prev[s] if from_tail else nxt[s]


class _InsertionOrderSelector(Selector):
    """Selects by insertion order through a doubly linked list over slots."""

    _newest_first: ClassVar[bool]

    def __init__(self, capacity: int) -> None:
        self.capacity = check_capacity(capacity)
        self._prev = np.full(self.capacity, -1, np.int64)
        self._next = np.full(self.capacity, -1, np.int64)
        self._ctr = np.full(self.capacity, -1, np.int64)
        self._meta = np.array([-1, -1, 0, 0], np.int64)

    @property
    def size(self) -> int:
        return int(self._meta[2])

    def insertion_counters(self) -> np.ndarray:
        """Per slot, the insertion counter (0, 1, 2, ... in insert order), -1 when free."""
        return self._ctr.copy()

    def insert(self, slots: np.ndarray, priorities: np.ndarray | None = None) -> None:
        """Append slots in the given order (re-inserting moves a slot to the newest end).
        O(n)."""
        s, _ = slots_and_priorities(self.capacity, slots, priorities)
        _ll_insert(self._prev, self._next, self._ctr, self._meta, s)

    def update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        """Validate only: insertion order ignores priorities. O(n)."""
        s, _ = slots_and_priorities(self.capacity, slots, priorities)
        raise_for(first_unoccupied(self._ctr, s), s, None, self.capacity)

    def remove(self, slots: np.ndarray) -> None:
        """Unlink occupied slots. O(n). Keeps the GIL for up to `HOLD_GIL_MAX_WRITE` slots."""
        s = as_slots(slots)
        if s.size <= HOLD_GIL_MAX_WRITE:
            raise_for(_ll_remove_held(self._prev, self._next, self._ctr, self._meta,
                                      self.capacity, s, _NO_VALUES), s, None, self.capacity)
            return
        s, _ = slots_and_priorities(self.capacity, s, None)
        raise_for(first_unoccupied(self._ctr, s), s, None, self.capacity)
        _ll_remove(self._prev, self._next, self._ctr, self._meta, s)

    def select(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """The ``n`` oldest (Fifo) or newest (Lifo) slots, in that order. O(n); no rng."""
        n = check_count(n, "n")
        self._need(n)
        out = np.empty(n, np.int64)
        _ll_walk(self._prev, self._next, self._meta, out, self._newest_first)
        return out

    def sample(
        self, batch_size: int, rng: np.random.Generator | int | None = None, beta: float = 0.4
    ) -> SampleResult:
        """The ``batch_size`` oldest/newest slots (deterministic: probability 1, weight 1)."""
        out = self.select(batch_size)
        return SampleResult(out, np.ones(out.size), np.ones(out.size))

    def state(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "capacity": self.capacity,
            "counters": self._ctr.copy(),
            "next_counter": int(self._meta[3]),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _InsertionOrderSelector:
        check_state_header(state, cls.kind)
        sel = cls(int(state["capacity"]))
        ctr = state_array(state, "counters", (sel.capacity,), "iu").astype(np.int64)
        occupied = np.flatnonzero(ctr >= 0)
        order = occupied[np.argsort(ctr[occupied], kind="stable")]
        if np.unique(ctr[occupied]).size != occupied.size or (
            occupied.size and int(ctr.max()) >= int(state["next_counter"])
        ):
            raise InvalidArgumentError("state['counters'] must be distinct and < next_counter")
        _ll_insert(sel._prev, sel._next, sel._ctr, sel._meta, order)
        sel._ctr[:] = ctr
        sel._meta[3] = int(state["next_counter"])
        return sel


class FifoSelector(_InsertionOrderSelector):
    """Oldest insertion first (Reverb's Fifo; the usual remover of a full table).

    A doubly linked list in insertion order: insert/remove O(1) per slot, ``select(n)`` O(n).

    Example:
        >>> import numpy as np
        >>> sel = FifoSelector(8)
        >>> sel.insert(np.array([5, 1, 6]))
        >>> sel.remove(np.array([1]))
        >>> sel.select(2).tolist()
        [5, 6]
    """

    kind: ClassVar[str] = "fifo"
    _newest_first = False


class LifoSelector(_InsertionOrderSelector):
    """Newest insertion first (Reverb's Lifo). Costs as :class:`FifoSelector`.

    Example:
        >>> import numpy as np
        >>> sel = LifoSelector(8)
        >>> sel.insert(np.array([5, 1, 6]))
        >>> sel.select(2).tolist()
        [6, 1]
    """

    kind: ClassVar[str] = "lifo"
    _newest_first = True


# ----------------------------------------------------------------------------------------------


@njit(**JIT_OPTIONS)
def _counters(ctr, meta, slots):  # pragma: no cover - compiled
    """New insertion counters for slots (in order); meta[0] is the next counter."""
    out = np.empty(slots.size, np.int64)
    for i in range(slots.size):
        out[i] = meta[0]
        ctr[slots[i]] = meta[0]
        meta[0] += 1
    return out


class _PriorityOrderSelector(Selector):
    """Selects by priority through an :class:`OrderTree` (ties: oldest insertion first)."""

    _sign: ClassVar[float]

    def __init__(self, capacity: int, *, fanout: int = DEFAULT_FANOUT) -> None:
        self.capacity = check_capacity(capacity)
        self._tree = OrderTree(self.capacity, fanout=fanout)
        self._ctr = np.full(self.capacity, -1, np.int64)
        self._meta = np.zeros(1, np.int64)
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def insert(self, slots: np.ndarray, priorities: np.ndarray | None = None) -> None:
        """Add items (re-inserting a slot gives it a new insertion counter).
        O(n F log_F N)."""
        if priorities is None:
            raise InvalidArgumentError(f"{type(self).__name__}.insert needs priorities")
        s, p = slots_and_priorities(self.capacity, slots, priorities)
        self._size += int(np.count_nonzero(self._ctr[np.unique(s)] < 0))
        ties = _counters(self._ctr, self._meta, s)
        self._tree.set(s, p * self._sign, ties)

    def update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        """New priorities for occupied slots (insertion order unchanged). O(n F log_F N)."""
        s, p = slots_and_priorities(self.capacity, slots, priorities)
        raise_for(first_unoccupied(self._ctr, s), s, None, self.capacity)
        self._tree.set(s, p * self._sign, self._ctr[s])

    def remove(self, slots: np.ndarray) -> None:
        """Forget occupied slots. O(n F log_F N)."""
        s, _ = slots_and_priorities(self.capacity, slots, None)
        raise_for(first_unoccupied(self._ctr, s), s, None, self.capacity)
        u = np.unique(s)
        self._ctr[u] = -1
        self._size -= u.size
        self._tree.clear(u)

    def select(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """The ``n`` lowest- (or highest-) priority slots, best first; ties oldest first.

        n = 1 is O(1) plus an O(F log_F N) mask-and-restore; n > 1 costs O(n F log_F N):
        each winner is masked out and the path to the root recomputed, then all are
        restored in one batched pass. No rng.
        """
        n = check_count(n, "n")
        self._need(n)
        return self._tree.smallest(n)

    def sample(
        self, batch_size: int, rng: np.random.Generator | int | None = None, beta: float = 0.4
    ) -> SampleResult:
        """The ``batch_size`` best slots (deterministic: probability 1, weight 1)."""
        out = self.select(batch_size)
        return SampleResult(out, np.ones(out.size), np.ones(out.size))

    def state(self) -> dict[str, Any]:
        keys = self._tree.keys()
        prio = np.where(self._ctr >= 0, keys * self._sign, 0.0)
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "capacity": self.capacity,
            "fanout": self._tree.fanout,
            "priorities": prio,
            "counters": self._ctr.copy(),
            "next_counter": int(self._meta[0]),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _PriorityOrderSelector:
        check_state_header(state, cls.kind)
        sel = cls(int(state["capacity"]), fanout=int(state.get("fanout", DEFAULT_FANOUT)))
        ctr = state_array(state, "counters", (sel.capacity,), "iu").astype(np.int64)
        prio = as_values(state_array(state, "priorities", (sel.capacity,), "f"),
                         sel.capacity, "state['priorities']")
        occ = ctr >= 0
        bad = occ & ~((prio >= 0) & np.isfinite(prio))
        if bad.any():
            raise InvalidArgumentError("state['priorities'] must be finite and >= 0")
        sel._ctr[:] = ctr
        sel._meta[0] = int(state["next_counter"])
        sel._size = int(occ.sum())
        sel._tree.load(np.where(occ, prio * cls._sign, np.inf), np.where(occ, ctr, _NO_TIE))
        return sel


class LowestPrioritySelector(_PriorityOrderSelector):
    """Lowest priority first (Reverb's MinHeap): evict the least useful item when full.

    Example:
        >>> import numpy as np
        >>> sel = LowestPrioritySelector(8)
        >>> sel.insert(np.array([0, 1, 2, 3]), np.array([3.0, 1.0, 2.0, 1.0]))
        >>> sel.select(3).tolist()
        [1, 3, 2]
    """

    kind: ClassVar[str] = "lowest_priority"
    _sign = 1.0


class HighestPrioritySelector(_PriorityOrderSelector):
    """Highest priority first (Reverb's MaxHeap). Costs as :class:`LowestPrioritySelector`.

    Example:
        >>> import numpy as np
        >>> sel = HighestPrioritySelector(8)
        >>> sel.insert(np.array([0, 1, 2]), np.array([3.0, 1.0, 3.0]))
        >>> sel.select(2).tolist()
        [0, 2]
    """

    kind: ClassVar[str] = "highest_priority"
    _sign = -1.0
