"""Proportional prioritized replay over a :class:`~replaybuf.sum_tree.SumTree`."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from replaybuf._simd import rng_pointers
from replaybuf._validation import (
    E_TOO_FEW,
    ERROR_SCALE,
    FORMAT_VERSION,
    as_rng,
    as_slots,
    as_values,
    check_count,
    check_exponent,
    check_state_header,
    raise_for,
    state_array,
)
from replaybuf.errors import InvalidArgumentError
from replaybuf.selector_base import SampleResult, Selector
from replaybuf.sum_tree import (
    _M_POSITIVE,
    _M_SIZE,
    DEFAULT_FANOUT,
    HOLD_GIL_MAX_BATCH,
    HOLD_GIL_MAX_WRITE,
    MODE_INSERT,
    MODE_REMOVE,
    MODE_UPDATE,
    SumTree,
    _sample_kernel,
    _sample_kernel_held,
    _write_kernel,
    _write_kernel_held,
)

__all__ = ["PrioritizedSelector"]

_I64 = np.dtype(np.int64)
_F64 = np.dtype(np.float64)
_NO_VALUES = np.empty(0, np.float64)
_Generator = np.random.Generator
_NO_RNG = object()
_new_tuple = tuple.__new__


class PrioritizedSelector(Selector):
    """Proportional prioritized replay (Schaul et al., 2015) over a :class:`SumTree`.

    The tree stores ``priority ** alpha`` (0 stays 0, also for alpha = 0: an item of priority
    0 is kept but never sampled). A batch of B is drawn by stratified sampling: draw i is the
    slot at prefix-sum ``(i + u_i) * total / B``, so it falls in the i-th of B equal segments
    of the mass and the slots come back sorted. ``P(i) = p_i ** alpha / total`` and the
    weights are ``(N * P(i)) ** -beta`` divided by the largest such weight over every item of
    positive priority (from the min tree: ``(p_i ** alpha / min_j p_j ** alpha) ** -beta``).

    Sampling is with replacement by default (the PER norm: a heavy item can fill several
    segments). Without replacement, rounds of stratified draws over the remaining mass
    (chosen items masked out) continue until B distinct slots are found; the returned
    probabilities and weights are still the single-draw ones of the unmasked tree.

    Costs, F the fanout (16) and N the capacity: insert/update/remove of n slots
    O(n * F * log_F N) with each touched node recomputed once; sample O(B * log_F N);
    ``total``/``size`` O(1). ``priority ** alpha`` and ``ratio ** -beta`` use a vectorised
    exp/log within ~1e-14 of ``numpy.power``. The uniforms are drawn inside the kernel from
    ``rng``'s bit generator (the stream ``rng.random()`` would give, without its lock).
    Not thread-safe; the table serializes access.

    Example:
        >>> import numpy as np
        >>> sel = PrioritizedSelector(1000, alpha=0.6)
        >>> sel.insert(np.arange(4), np.array([1.0, 2.0, 0.0, 4.0]))
        >>> out = sel.sample(8, np.random.default_rng(0), beta=0.4)
        >>> bool((out.slots != 2).all()), bool(out.weights.max() <= 1.0)
        (True, True)
        >>> sel.update(out.slots, np.full(8, 0.5))
    """

    kind: ClassVar[str] = "prioritized"

    def __init__(
        self,
        capacity: int,
        alpha: float = 0.6,
        *,
        with_replacement: bool = True,
        fanout: int = DEFAULT_FANOUT,
    ) -> None:
        """Create an empty selector.

        Args:
            capacity: number of slots.
            alpha: priority exponent, finite and >= 0 (0 = uniform over positive priority).
            with_replacement: whether one batch may repeat a slot (default True, as in PER).
            fanout: children per tree node, see :class:`SumTree`.
        """
        self.alpha = check_exponent(alpha, "alpha")
        self.with_replacement = bool(with_replacement)
        self._tree = SumTree(capacity, fanout=fanout)
        self.capacity = self._tree.capacity
        self._last_rng: Any = _NO_RNG  # never `is` a caller's argument, not even None
        self._rng_ptrs = (0, 0)

    @property
    def tree(self) -> SumTree:
        """The underlying sum tree (leaves hold ``priority ** alpha``); do not modify it."""
        return self._tree

    @property
    def size(self) -> int:
        return int(self._tree._meta[_M_SIZE])

    def total(self) -> float:
        """Sum of ``priority ** alpha`` over all items. O(1)."""
        return self._tree.total()

    def occupied(self) -> np.ndarray:
        """Boolean mask of occupied slots (a copy). O(capacity)."""
        return self._tree._leaves.view(np.int64) != 0  # free slots hold +0.0

    def _write(self, slots: Any, priorities: Any, mode: int) -> None:
        s = slots
        if type(s) is np.ndarray and s.dtype is _I64 and s.ndim == 1:
            s = np.ascontiguousarray(s)
        else:
            s = as_slots(s)
        if mode == MODE_REMOVE:
            p = _NO_VALUES
        elif (type(priorities) is np.ndarray and priorities.dtype is _F64
              and priorities.ndim == 1 and priorities.size == s.size):
            p = np.ascontiguousarray(priorities)
        else:
            p = as_values(priorities, s.size)
        # Small writes keep the GIL (HOLD_GIL_MAX_WRITE): the table holds its lock meanwhile.
        kernel = _write_kernel_held if s.size <= HOLD_GIL_MAX_WRITE else _write_kernel
        rc = kernel(self._tree._arena, s, p, self.alpha, mode)
        if rc:
            raise_for(rc, s, p, self.capacity)

    def _rng(self, rng: Any) -> tuple[int, int]:
        """The bit generator's (next_double, state) addresses, cached for the last rng."""
        if rng is not self._last_rng:
            gen = rng if type(rng) is _Generator else as_rng(rng)  # a seed: a fresh one
            self._rng_ptrs = rng_pointers(gen)
            self._last_rng = gen  # held, so that the addresses stay valid
        return self._rng_ptrs

    def insert(self, slots: np.ndarray, priorities: np.ndarray | None = None) -> None:
        """Add items with raw ``priorities`` (alpha is applied here). O(n F log_F N)."""
        if priorities is None:
            raise InvalidArgumentError("PrioritizedSelector.insert needs priorities")
        self._write(slots, priorities, MODE_INSERT)

    def update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        """Set new raw priorities of occupied slots; repeated slots: the last wins."""
        self._write(slots, priorities, MODE_UPDATE)

    def remove(self, slots: np.ndarray) -> None:
        """Forget occupied slots (their mass drops to exactly 0)."""
        self._write(slots, None, MODE_REMOVE)

    def sample(
        self, batch_size: int, rng: np.random.Generator | int, beta: float = 0.4
    ) -> SampleResult:
        """Draw ``batch_size`` slots proportionally to ``priority ** alpha``.

        One numba call: uniforms -> stratified targets -> slots -> probabilities -> weights.
        It keeps the GIL for batches up to `replaybuf.sum_tree.HOLD_GIL_MAX_BATCH`, else
        releases it. O(B log_F N). Raises FailedPreconditionError when the total priority is 0, or
        (without replacement) when fewer than B items have positive priority.
        """
        if type(batch_size) is not int or batch_size < 1:
            batch_size = check_count(batch_size)
        if type(beta) is not float or not 0.0 <= beta < math.inf:
            beta = check_exponent(beta)
        fn, state = self._rng(rng)
        if not self.with_replacement:
            return self._sample_distinct(batch_size, fn, state, beta)
        slots = np.empty(batch_size, _I64)
        probs = np.empty(batch_size)
        weights = np.empty(batch_size)
        # Small batches keep the GIL (HOLD_GIL_MAX_BATCH); the same code either way.
        kernel = _sample_kernel_held if batch_size <= HOLD_GIL_MAX_BATCH else _sample_kernel
        rc = kernel(self._tree._arena, fn, state, slots, probs, weights, beta)
        if rc:
            raise_for(rc, slots, None, self.capacity)
        return _new_tuple(SampleResult, (slots, probs, weights))  # skips namedtuple's __new__

    def _sample_distinct(self, batch_size: int, fn: int, state: int, beta: float
                         ) -> SampleResult:
        t = self._tree
        if int(t._meta[_M_POSITIVE]) < batch_size:
            raise_for(E_TOO_FEW * ERROR_SCALE, np.empty(0, np.int64), None, self.capacity)
        # The masked tree's min can only grow, so compute weights against the full tree.
        total, minv = t.total(), t.min()
        chosen: list[np.ndarray] = []
        saved: list[np.ndarray] = []
        need = batch_size
        try:
            while need > 0:
                s = np.empty(need, _I64)
                rc = _sample_kernel(t._arena, fn, state, s, np.empty(need), np.empty(need), 0.0)
                if rc:  # pragma: no cover - guarded by the positive count above
                    raise_for(rc, s, None, self.capacity)
                s = s[np.concatenate(([True], s[1:] != s[:-1]))]
                chosen.append(s)
                saved.append(t.get(s))
                t.set(s, np.zeros(s.size))
                need -= s.size
        finally:
            for s, v in zip(chosen, saved):
                t.set(s, v)
        slots = np.concatenate(chosen)
        leaf = t.get(slots)
        weights = (leaf / minv) ** -beta if beta else np.ones(batch_size)
        return SampleResult(slots, leaf / total, weights)

    def select(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` distinct slots drawn proportionally to priority (Reverb's Prioritized
        remover). Needs an rng."""
        if rng is None:
            raise InvalidArgumentError("PrioritizedSelector.select needs an rng")
        return self._sample_distinct(check_count(n, "n"), *self._rng(rng), 0.0).slots

    def state(self) -> dict[str, Any]:
        """Leaves (``priority ** alpha``), occupancy, alpha and options; O(capacity) copy."""
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "capacity": self.capacity,
            "alpha": self.alpha,
            "with_replacement": self.with_replacement,
            "fanout": self._tree.fanout,
            "leaves": self._tree.leaves().copy(),
            "occupied": self.occupied(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PrioritizedSelector:
        check_state_header(state, cls.kind)
        sel = cls(int(state["capacity"]), float(state["alpha"]),
                  with_replacement=bool(state["with_replacement"]),
                  fanout=int(state["fanout"]))
        occ = state_array(state, "occupied", (sel.capacity,), "b")
        leaves = state_array(state, "leaves", (sel.capacity,), "f").astype(np.float64)
        if (leaves[~occ] != 0).any():
            raise InvalidArgumentError("state['leaves'] is non-zero at an unoccupied slot")
        leaves[~occ] = 0.0
        leaves[occ & (leaves == 0)] = -0.0  # occupied with priority 0
        sel._tree.load_leaves(leaves, "leaves")
        sel._tree._meta[_M_SIZE] = int(occ.sum())
        return sel

    def __repr__(self) -> str:
        return (f"PrioritizedSelector(capacity={self.capacity}, alpha={self.alpha}, "
                f"size={self.size}, with_replacement={self.with_replacement})")
