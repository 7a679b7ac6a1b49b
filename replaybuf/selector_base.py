"""The shape every selector shares, and what a sample returns (see :mod:`replaybuf.selectors`)."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NamedTuple

import numpy as np
from numba import njit

from replaybuf._simd import JIT_OPTIONS
from replaybuf._validation import (
    E_NOT_OCCUPIED,
    E_SLOT,
    E_VALUE,
    ERROR_SCALE,
    as_slots,
    as_values,
    raise_for,
)
from replaybuf.errors import FailedPreconditionError, InvalidArgumentError

__all__ = ["SampleResult", "Selector"]


class SampleResult(NamedTuple):
    """What :meth:`Selector.sample` returns: three arrays of length ``batch_size``.

    Attributes:
        slots: int64, the chosen slots (sorted for stratified prioritized sampling).
        probabilities: float64, the probability that one draw picks each slot.
        weights: float64, importance weights ``(N * P(i)) ** -beta / max_j (N * P(j)) ** -beta``
            over all items j with positive priority (1.0 for non-prioritized selectors).
    """

    slots: np.ndarray
    probabilities: np.ndarray
    weights: np.ndarray


def slots_and_priorities(
    capacity: int, slots: Any, priorities: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Validate slot range and priority values in one pass (for the non-tree selectors)."""
    s = as_slots(slots)
    p = as_values(priorities, s.size) if priorities is not None else np.zeros(s.size)
    raise_for(check_slots_values(capacity, s, p), s, p, capacity)
    return s, p


@njit(**JIT_OPTIONS)
def check_slots_values(cap, slots, values):  # pragma: no cover - compiled
    """First slot out of [0, cap) or value not finite >= 0, as an error code; else 0."""
    for i in range(slots.size):
        s = slots[i]
        if s < 0 or s >= cap:
            return E_SLOT * ERROR_SCALE + i
    for i in range(values.size):
        v = values[i]
        if not (v >= 0.0 and v <= 1.7976931348623157e308):
            return E_VALUE * ERROR_SCALE + i
    return 0


@njit(**JIT_OPTIONS)
def first_unoccupied(tag, slots):  # pragma: no cover - compiled
    """Index of the first slot whose tag is < 0 (free), as an error code; else 0."""
    for i in range(slots.size):
        if tag[slots[i]] < 0:
            return E_NOT_OCCUPIED * ERROR_SCALE + i
    return 0


class Selector(abc.ABC):
    """Picks slots to sample (sampler) or to evict (remover) among the occupied ones.

    Subclasses implement ``insert``/``update``/``remove``/``sample``/``state``/``from_state``;
    ``select(n, rng)`` defaults to ``sample(n, rng).slots``. Every call validates its whole
    input before changing anything. Not thread-safe; the table serializes access.

    Attributes:
        kind: the name :func:`replaybuf.selectors.make_selector` knows this selector by.
        capacity: slots are integers in ``[0, capacity)``.

    Example:
        >>> import numpy as np
        >>> from replaybuf.selectors import make_selector
        >>> sel = make_selector("fifo", 4)
        >>> sel.insert(np.array([2, 0]), np.array([1.0, 1.0]))
        >>> sel.select(1).tolist(), len(sel)
        ([2], 2)
    """

    kind: ClassVar[str]
    capacity: int

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Number of occupied slots."""

    def __len__(self) -> int:
        return self.size

    @abc.abstractmethod
    def insert(self, slots: np.ndarray, priorities: np.ndarray | None = None) -> None:
        """Add (or replace) the items at ``slots``."""

    @abc.abstractmethod
    def update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        """Change the priorities of occupied ``slots``."""

    @abc.abstractmethod
    def remove(self, slots: np.ndarray) -> None:
        """Forget occupied ``slots``."""

    @abc.abstractmethod
    def sample(
        self, batch_size: int, rng: np.random.Generator | int, beta: float = 0.4
    ) -> SampleResult:
        """Pick ``batch_size`` slots for a training batch."""

    def select(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Pick ``n`` distinct slots to evict (for use as a remover)."""
        if rng is None:
            raise InvalidArgumentError(f"{type(self).__name__}.select needs an rng")
        return self.sample(n, rng).slots

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """Export as numpy arrays and plain values, with ``format_version`` and ``kind``."""

    @classmethod
    @abc.abstractmethod
    def from_state(cls, state: dict[str, Any]) -> Selector:
        """Rebuild a selector from :meth:`state` output."""

    def _need(self, n: int) -> None:
        if n > self.size:
            raise FailedPreconditionError(
                f"asked for {n} distinct items but only {self.size} are present; "
                "sample fewer or wait for more inserts"
            )
