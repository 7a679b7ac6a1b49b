"""Selectors: which items a table samples (as its sampler) or evicts (as its remover).

A selector tracks a set of occupied *slots* (integers below ``capacity`` that the table maps
to items) with a priority each, and picks slots from it. Reverb's words: Prioritized,
Uniform, Fifo, Lifo, MinHeap (:class:`LowestPrioritySelector`) and MaxHeap
(:class:`HighestPrioritySelector`). All share one shape, :class:`Selector`:

* ``insert(slots, priorities)``: add items (re-inserting an occupied slot replaces it);
* ``update(slots, priorities)``: change priorities of occupied slots;
* ``remove(slots)``: forget occupied slots;
* ``sample(batch_size, rng, beta)`` -> :class:`SampleResult` (slots, probabilities, weights);
* ``select(n, rng=None)`` -> slots, for eviction;
* ``state()`` / ``from_state()``: numpy arrays plus a format version, for checkpoints.

Inputs are checked at the boundary: slots must be integers in ``[0, capacity)``, priorities
finite and ``>= 0`` (every selector checks them, also those that ignore them), update and
remove need occupied slots. A rejected call raises :class:`~replaybuf.errors.InvalidArgumentError`
or :class:`~replaybuf.errors.InvalidPriorityError` naming the index and value, and changes
nothing. Every random choice takes a ``numpy.random.Generator`` (or a seed), so a sample is a
pure function of the selector's history and the generator's state.

Not thread-safe; the table serializes access. The numba kernels release the GIL.

This module is the public face; the strategies live in ``prioritized_selector.py`` (over
``sum_tree.py``), ``order_selectors.py`` (uniform, fifo, lifo, lowest/highest priority, the
last two over ``order_tree.py``) and the shared shape in ``selector_base.py``.
"""

from __future__ import annotations

from typing import Any

from replaybuf.errors import InvalidArgumentError
from replaybuf.order_selectors import (
    FifoSelector,
    HighestPrioritySelector,
    LifoSelector,
    LowestPrioritySelector,
    UniformSelector,
)
from replaybuf.prioritized_selector import PrioritizedSelector
from replaybuf.selector_base import SampleResult, Selector

__all__ = [
    "SampleResult",
    "Selector",
    "PrioritizedSelector",
    "UniformSelector",
    "FifoSelector",
    "LifoSelector",
    "LowestPrioritySelector",
    "HighestPrioritySelector",
    "make_selector",
    "selector_from_state",
    "SELECTOR_KINDS",
]

#: Selector classes by the name tables are configured with.
SELECTOR_KINDS: dict[str, type[Selector]] = {
    cls.kind: cls
    for cls in (
        PrioritizedSelector,
        UniformSelector,
        FifoSelector,
        LifoSelector,
        LowestPrioritySelector,
        HighestPrioritySelector,
    )
}


def make_selector(kind: str, capacity: int, **options: Any) -> Selector:
    """Build a selector by name, e.g. ``make_selector("prioritized", 10**6, alpha=0.6)``.

    Args:
        kind: one of ``SELECTOR_KINDS``: "prioritized", "uniform", "fifo", "lifo",
            "lowest_priority", "highest_priority".
        capacity: number of slots.
        **options: keyword arguments of that selector's constructor.

    Raises:
        InvalidArgumentError: unknown kind or option.
    """
    cls = SELECTOR_KINDS.get(kind)
    if cls is None:
        raise InvalidArgumentError(
            f"selector kind {kind!r} is unknown; use one of {sorted(SELECTOR_KINDS)}"
        )
    try:
        return cls(capacity, **options)  # type: ignore[call-arg]
    except TypeError as exc:
        raise InvalidArgumentError(f"bad options for selector {kind!r}: {exc}") from None


def selector_from_state(state: dict[str, Any]) -> Selector:
    """Rebuild any selector from its :meth:`Selector.state` (dispatching on ``kind``)."""
    if not isinstance(state, dict) or state.get("kind") not in SELECTOR_KINDS:
        kind = state.get("kind") if isinstance(state, dict) else None
        raise InvalidArgumentError(f"state kind {kind!r} is not a selector kind")
    return SELECTOR_KINDS[state["kind"]].from_state(state)
