"""Selectors: sampled frequencies, importance weights, stratification, replacement,
determinism, insertion and priority order, rounding, bad input and state round trips.

``REPLAYBUF_SMALL_TESTS=1`` shrinks draw counts and example counts (used for the
``NUMBA_DISABLE_JIT=1`` run in ``test_sampling_nojit.py``).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from replaybuf import order_selectors, prioritized_selector, sum_tree
from replaybuf.errors import FailedPreconditionError, InvalidArgumentError, InvalidPriorityError
from replaybuf.selectors import (
    SELECTOR_KINDS,
    FifoSelector,
    HighestPrioritySelector,
    LifoSelector,
    LowestPrioritySelector,
    PrioritizedSelector,
    SampleResult,
    Selector,
    UniformSelector,
    make_selector,
    selector_from_state,
)

SMALL = os.environ.get("REPLAYBUF_SMALL_TESTS") == "1"
EXAMPLES = 10 if SMALL else 60


def chi_square_critical(df: int, z: float = 4.265) -> float:
    """Upper critical value of chi-square(df) at p = 1e-5 (z = 4.265), by Wilson-Hilferty."""
    c = 2.0 / (9.0 * df)
    return df * (1.0 - c + z * math.sqrt(c)) ** 3


def chi_square(counts: np.ndarray, expected: np.ndarray) -> float:
    return float(((counts - expected) ** 2 / expected).sum())


def reference_probabilities(priorities: np.ndarray, alpha: float) -> np.ndarray:
    mass = np.where(priorities > 0, priorities**alpha, 0.0)
    return mass / math.fsum(mass)


def filled(capacity: int, priorities: np.ndarray, alpha: float = 0.6, **kw) -> PrioritizedSelector:
    sel = PrioritizedSelector(capacity, alpha, **kw)
    sel.insert(np.arange(priorities.size), priorities)
    return sel


# ----------------------------------------------------------------------------------------------
# prioritized: distribution, weights, stratification


def test_wilson_hilferty_matches_tabulated_critical_values() -> None:
    # chi-square upper 1e-3 quantiles (z = 3.0902) from standard tables
    assert chi_square_critical(10, 3.0902) == pytest.approx(29.588, rel=1e-2)
    assert chi_square_critical(100, 3.0902) == pytest.approx(149.449, rel=2e-3)


def test_sampled_frequencies_match_priorities() -> None:
    rng = np.random.default_rng(1234)
    k = 40 if SMALL else 200
    priorities = rng.uniform(0.05, 20.0, k)
    priorities[[3, 17]] = 0.0
    sel = filled(k, priorities, alpha=0.6)
    batch, calls = (500, 40) if SMALL else (1000, 1000)  # 1e6 draws when not SMALL
    counts = np.zeros(k)
    for _ in range(calls):
        out = sel.sample(batch, rng, beta=0.4)
        counts += np.bincount(out.slots, minlength=k)
    assert counts[[3, 17]].sum() == 0
    p = reference_probabilities(priorities, 0.6)
    live = p > 0
    stat = chi_square(counts[live], batch * calls * p[live])
    assert stat < chi_square_critical(int(live.sum()) - 1)


def test_probabilities_and_weights_match_the_brute_force_formula() -> None:
    rng = np.random.default_rng(99)
    k = 300
    priorities = rng.uniform(0.0, 5.0, k) ** 3
    priorities[::7] = 0.0
    alpha, beta = 0.7, 0.5
    sel = filled(k, priorities, alpha)
    out = sel.sample(256, rng, beta=beta)
    assert isinstance(out, SampleResult)
    assert out.slots.dtype == np.int64 and out.slots.shape == (256,)
    p = reference_probabilities(priorities, alpha)
    n = np.count_nonzero(priorities)
    w_all = (n * p[p > 0]) ** -beta  # every item that can be sampled, not just the batch
    expected = (n * p[out.slots]) ** -beta / w_all.max()
    np.testing.assert_allclose(out.probabilities, p[out.slots], rtol=1e-13)
    np.testing.assert_allclose(out.weights, expected, rtol=1e-13)
    assert sel.sample(10, rng, beta=0.0).weights.tolist() == [1.0] * 10


def test_tree_leaves_hold_priority_to_the_alpha() -> None:
    rng = np.random.default_rng(4)
    priorities = np.concatenate([rng.random(500) * 10.0 ** rng.integers(-30, 30, 500),
                                 [0.0, 5e-324, 1e-310, 1.7e308]])
    for alpha in (0.0, 0.4, 0.6, 1.0, 1.3):
        if alpha > 1:
            priorities = priorities[:-1]
        sel = filled(priorities.size, priorities, alpha)
        leaves = sel.tree.leaves()
        expected = np.where(priorities > 0, priorities**alpha, 0.0)
        np.testing.assert_allclose(leaves, expected, rtol=1e-13, atol=0)


def test_priorities_that_overflow_are_rejected_and_change_nothing() -> None:
    sel = filled(4, np.array([1.0, 2.0]), alpha=2.0)
    before = sel.tree._buf.copy()
    with pytest.raises(InvalidPriorityError, match=r"priorities\[1\] = 1e\+200 \(slot 3\) overflows"):
        sel.insert(np.array([2, 3]), np.array([1.0, 1e200]))
    with pytest.raises(InvalidPriorityError, match="total exceed the float64 range"):
        sel.insert(np.array([2, 3]), np.array([1e154, 1e154]))
    assert np.array_equal(sel.tree._buf, before) and sel.size == 2


def test_each_stratified_draw_falls_in_its_segment() -> None:
    rng = np.random.default_rng(8)
    k = 500
    priorities = rng.integers(0, 50, k).astype(float)  # alpha 1, integers: exact prefix sums
    sel = filled(k, priorities, alpha=1.0)
    cum = np.concatenate([[0.0], np.cumsum(priorities)])
    total = cum[-1]
    for batch in (1, 7, 64, 256):
        out = sel.sample(batch, rng)
        assert (np.diff(out.slots) >= 0).all()  # targets are sorted, so slots are too
        seg = np.arange(batch)
        lo, hi = seg * total / batch, (seg + 1) * total / batch
        # the chosen slot's interval [cum[s], cum[s+1]) overlaps segment i
        assert (cum[out.slots] < hi).all() and (cum[out.slots + 1] > lo).all()


def test_zero_priority_items_are_never_sampled_and_all_zero_cannot_sample() -> None:
    sel = PrioritizedSelector(100)
    sel.insert(np.arange(50), np.where(np.arange(50) % 2 == 0, 0.0, 1.0))
    out = sel.sample(2000, np.random.default_rng(0))
    assert (out.slots % 2 == 1).all()
    sel.update(np.arange(1, 50, 2), np.zeros(25))
    with pytest.raises(FailedPreconditionError, match="total priority is 0"):
        sel.sample(1, np.random.default_rng(0))
    with pytest.raises(FailedPreconditionError):
        PrioritizedSelector(10).sample(1, np.random.default_rng(0))


def test_items_of_priority_zero_stay_occupied_but_are_never_sampled() -> None:
    sel = PrioritizedSelector(20)
    sel.insert(np.array([1, 2, 3]), np.array([0.0, 5.0, 0.0]))
    assert sel.size == 3 and sel.occupied()[[1, 2, 3]].all()
    assert (sel.sample(100, 0).slots == 2).all()
    sel.update(np.array([1]), np.array([0.0]))
    sel.update(np.array([2]), np.array([0.0]))
    with pytest.raises(FailedPreconditionError):
        sel.sample(1, 0)
    copy = selector_from_state(sel.state())
    assert copy.size == 3 and np.array_equal(copy.occupied(), sel.occupied())
    copy.update(np.array([3]), np.array([2.0]))
    assert (copy.sample(10, 0).slots == 3).all()
    sel.remove(np.array([1, 2, 3]))
    assert sel.size == 0 and not sel.occupied().any()
    with pytest.raises(InvalidArgumentError, match="holds no item"):
        sel.update(np.array([1]), np.array([1.0]))


def test_alpha_zero_samples_uniformly_over_positive_priorities() -> None:
    priorities = np.array([0.0, 1e-9, 5.0, 1e9])
    sel = filled(4, priorities, alpha=0.0)
    out = sel.sample(3000, np.random.default_rng(2))
    counts = np.bincount(out.slots, minlength=4)
    assert counts[0] == 0 and counts[1:].tolist() == [1000, 1000, 1000]  # stratified: exact
    assert (out.weights == 1.0).all()


def test_without_replacement_gives_distinct_slots() -> None:
    rng = np.random.default_rng(3)
    priorities = np.concatenate([[1e6], rng.random(99)])  # one item would fill most segments
    sel = filled(100, priorities, with_replacement=False)
    for batch in (1, 10, 50, 100):
        out = sel.sample(batch, rng)
        assert np.unique(out.slots).size == batch
        assert 0 in out.slots
        p = reference_probabilities(priorities, 0.6)
        np.testing.assert_allclose(out.probabilities, p[out.slots], rtol=1e-13)
    assert np.array_equal(sel.tree.leaves(), filled(100, priorities).tree.leaves())
    with pytest.raises(FailedPreconditionError, match="without replacement"):
        sel.sample(101, rng)
    assert np.unique(sel.select(30, rng)).size == 30


def test_with_replacement_is_the_default_and_repeats_heavy_items() -> None:
    sel = filled(10, np.array([1e9] + [1.0] * 9), alpha=1.0)
    assert sel.with_replacement
    out = sel.sample(8, np.random.default_rng(0))
    assert (out.slots == 0).all()


def test_the_same_seed_gives_the_same_sample() -> None:
    priorities = np.random.default_rng(0).random(1000)
    a, b = filled(1000, priorities), filled(1000, priorities)
    for seed in (0, 1, 2):
        x = a.sample(64, np.random.default_rng(seed), 0.4)
        y = b.sample(64, seed, 0.4)  # an int seed is accepted too
        for u, v in zip(x, y):
            assert np.array_equal(u, v)
    assert not np.array_equal(a.sample(64, 1).slots, a.sample(64, 2).slots)
    distinct = [filled(1000, priorities, with_replacement=False) for _ in range(2)]
    assert np.array_equal(distinct[0].sample(64, 5).slots, distinct[1].sample(64, 5).slots)


@settings(max_examples=EXAMPLES, deadline=None)
@given(n=st.integers(1, 3000), batch=st.integers(1, 1500), seed=st.integers(0, 2**64 - 1),
       beta=st.sampled_from([0.0, 0.4, 1.0]))
def test_batches_drawn_keeping_the_gil_equal_those_drawn_releasing_it(n, batch, seed,
                                                                      beta) -> None:
    priorities = np.random.default_rng(n).random(n) * (np.arange(n) % 5 != 0)
    priorities[0] = 1.0
    sel = filled(n, priorities)
    limit = prioritized_selector.HOLD_GIL_MAX_BATCH
    try:
        outs = []
        for prioritized_selector.HOLD_GIL_MAX_BATCH in (batch, batch - 1):  # held, released
            outs.append(sel.sample(batch, np.random.default_rng(seed), beta))
    finally:
        prioritized_selector.HOLD_GIL_MAX_BATCH = limit
    for u, v in zip(*outs):
        assert np.array_equal(u, v)


def test_small_batches_keep_the_gil_and_large_ones_release_it() -> None:
    if not hasattr(sum_tree._sample_kernel, "targetoptions"):
        pytest.skip("no JIT: plain Python")
    assert sum_tree._sample_kernel.targetoptions.get("nogil") is True
    assert not sum_tree._sample_kernel_held.targetoptions.get("nogil")
    assert 256 <= sum_tree.HOLD_GIL_MAX_BATCH
    assert sum_tree._write_kernel.targetoptions.get("nogil") is True
    assert not sum_tree._write_kernel_held.targetoptions.get("nogil")
    assert not order_selectors._ll_remove_held.targetoptions.get("nogil")


def _removals(draw: st.DrawFn, capacity: int) -> list[list[int]]:
    """Batches of slots to remove: mostly occupied ones, sometimes a free, repeated or out of
    range slot (rejected, nothing changes)."""
    return draw(st.lists(st.lists(st.integers(-1, capacity), max_size=12), max_size=8))


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data(), kind=st.sampled_from(["prioritized", "fifo", "lifo"]))
def test_removals_keeping_the_gil_leave_the_state_of_removals_releasing_it(data, kind) -> None:
    capacity = 24
    priorities = np.random.default_rng(1).random(capacity)
    sels = [make_selector(kind, capacity) for _ in range(2)]
    for sel in sels:
        sel.insert(np.arange(capacity), priorities)
    limits = (prioritized_selector.HOLD_GIL_MAX_WRITE, order_selectors.HOLD_GIL_MAX_WRITE)
    try:
        for batch in _removals(data.draw, capacity):
            slots = np.array(batch, np.int64)
            errors = []
            for sel, limit in zip(sels, (capacity, -1)):  # held, released
                prioritized_selector.HOLD_GIL_MAX_WRITE = limit
                order_selectors.HOLD_GIL_MAX_WRITE = limit
                try:
                    sel.remove(slots)
                    errors.append(None)
                except InvalidArgumentError as exc:
                    errors.append(str(exc))
            assert errors[0] == errors[1]
    finally:
        prioritized_selector.HOLD_GIL_MAX_WRITE, order_selectors.HOLD_GIL_MAX_WRITE = limits
    held, released = sels
    assert held.size == released.size
    if kind == "prioritized":
        assert held.tree._arena.tobytes() == released.tree._arena.tobytes()
    else:
        assert np.array_equal(held.state()["counters"], released.state()["counters"])
        assert held.select(held.size).tolist() == released.select(released.size).tolist()


def test_total_never_drifts_or_goes_negative_under_many_tiny_updates() -> None:
    """Like reverb's prioritized_test: after 1e6 tiny updates and removals the root equals
    math.fsum of the leaves to ~1e-15 and is never negative (nodes are recomputed from
    their children, never adjusted by deltas)."""
    rng = np.random.default_rng(21)
    cap, batch = 64, 100
    rounds = 100 if SMALL else 10_000  # 1e6 single updates when not SMALL
    sel = PrioritizedSelector(cap, alpha=1.0)
    sel.insert(np.arange(cap), np.full(cap, 1e-12))
    worst = 0.0
    for r in range(rounds):
        slots = rng.integers(0, cap, batch)
        tiny = rng.random(batch) * 10.0 ** rng.integers(-15, -5, batch)
        sel.update(np.unique(slots), tiny[: np.unique(slots).size])
        if r % 50 == 0:
            gone = rng.choice(cap, 8, replace=False)
            sel.remove(gone)
            assert sel.total() >= 0.0
            sel.insert(gone, np.full(8, 1e300 if r % 100 == 0 else 1e-14))
            sel.update(gone, np.full(8, 1e-13))  # a huge value comes and goes
        if r % 97 == 0 or r == rounds - 1:
            exact = math.fsum(sel.tree.leaves())
            assert sel.total() >= 0.0
            worst = max(worst, abs(sel.total() - exact) / exact)
    assert worst < 1e-14
    sel.remove(np.arange(cap))
    assert sel.total() == 0.0 and sel.size == 0


def test_removing_a_huge_item_leaves_the_exact_sum_of_the_rest() -> None:
    sel = PrioritizedSelector(1000, alpha=1.0)
    sel.insert(np.arange(1, 1000), np.full(999, 1e-9))
    sel.insert(np.array([0]), np.array([1e15]))
    sel.remove(np.array([0]))
    assert sel.total() == pytest.approx(999e-9, rel=1e-14)


# ----------------------------------------------------------------------------------------------
# prioritized: random operation sequences vs a numpy reference


class PrioritizedMachine(RuleBasedStateMachine):
    @initialize(capacity=st.sampled_from([1, 5, 16, 100, 300]),
                alpha=st.sampled_from([0.0, 0.6, 1.0]))
    def setup(self, capacity: int, alpha: float) -> None:
        self.sel = PrioritizedSelector(capacity, alpha)
        self.alpha = alpha
        self.prio = np.zeros(capacity)
        self.occ = np.zeros(capacity, bool)
        self.rng = np.random.default_rng(0)

    def _draw(self, data: st.DataObject, occupied: bool) -> np.ndarray:
        pool = np.flatnonzero(self.occ) if occupied else np.arange(self.occ.size)
        if pool.size == 0:
            return np.empty(0, np.int64)
        picks = data.draw(st.lists(st.integers(0, pool.size - 1), min_size=1, max_size=20))
        return pool[np.array(picks)]

    @rule(data=st.data())
    def insert(self, data: st.DataObject) -> None:
        slots = self._draw(data, occupied=False)
        p = np.array(data.draw(st.lists(st.floats(0, 1e3), min_size=slots.size,
                                        max_size=slots.size)), float)
        self.sel.insert(slots, p)
        self.prio[slots[::-1]] = p[::-1]  # first-wins on the reversed = last write wins
        for s, v in zip(slots, p):
            self.prio[s] = v
        self.occ[slots] = True

    @rule(data=st.data())
    def update(self, data: st.DataObject) -> None:
        slots = self._draw(data, occupied=True)
        p = self.rng.random(slots.size) * 100
        self.sel.update(slots, p)
        for s, v in zip(slots, p):
            self.prio[s] = v

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        slots = self._draw(data, occupied=True)
        self.sel.remove(slots)
        self.occ[slots] = False
        self.prio[slots] = 0.0

    @rule(data=st.data())
    def update_of_a_free_slot_is_rejected(self, data: st.DataObject) -> None:
        free = np.flatnonzero(~self.occ)
        if free.size == 0:
            return
        before = self.sel.tree._buf.copy()
        with pytest.raises(InvalidArgumentError, match="holds no item"):
            self.sel.update(np.array([free[0]]), np.array([1.0]))
        assert np.array_equal(self.sel.tree._buf, before)

    @rule(batch=st.integers(1, 50))
    def sample(self, batch: int) -> None:
        if not (self.prio > 0).any():
            return
        out = self.sel.sample(batch, self.rng)
        assert self.occ[out.slots].all() and (self.prio[out.slots] > 0).all()

    @invariant()
    def matches_reference(self) -> None:
        assert self.sel.size == self.occ.sum()
        expected = np.where(self.prio > 0, self.prio**self.alpha, 0.0)
        np.testing.assert_allclose(self.sel.tree.leaves(), expected, rtol=1e-13, atol=0)
        exact = math.fsum(self.sel.tree.leaves())
        assert self.sel.total() == pytest.approx(exact, rel=1e-14, abs=0)
        assert np.array_equal(self.sel.occupied(), self.occ)


TestPrioritizedMachine = PrioritizedMachine.TestCase
TestPrioritizedMachine.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=8 if SMALL else 25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ----------------------------------------------------------------------------------------------
# uniform, fifo, lifo, lowest and highest priority


def test_uniform_frequencies_are_flat_and_without_replacement_is_distinct() -> None:
    rng = np.random.default_rng(6)
    sel = UniformSelector(100)
    sel.insert(np.arange(0, 100, 2))  # 50 occupied slots, priorities optional
    draws = 20_000 if SMALL else 500_000
    out = sel.sample(draws, rng)
    assert (out.slots % 2 == 0).all()
    assert (out.probabilities == 1 / 50).all() and (out.weights == 1.0).all()
    counts = np.bincount(out.slots, minlength=100)[::2]
    assert chi_square(counts, np.full(50, draws / 50)) < chi_square_critical(49)
    distinct = UniformSelector(100, with_replacement=False)
    distinct.insert(np.arange(0, 100, 2))
    got = distinct.sample(50, rng).slots
    assert sorted(got.tolist()) == list(range(0, 100, 2))
    with pytest.raises(FailedPreconditionError):
        distinct.sample(51, rng)
    assert distinct.state()["items"].tolist() == list(range(0, 100, 2))  # order restored
    sel.remove(np.arange(0, 100, 2))
    with pytest.raises(FailedPreconditionError):
        sel.sample(1, rng)


def test_fifo_selects_oldest_first_and_lifo_newest_first() -> None:
    fifo, lifo = FifoSelector(10), LifoSelector(10)
    for sel in (fifo, lifo):
        sel.insert(np.array([5, 1, 6]), np.array([9.0, 1.0, 5.0]))
        sel.insert(np.array([2]))
        sel.remove(np.array([1]))
        sel.insert(np.array([5]))  # re-inserting makes 5 the newest
        sel.update(np.array([6]), np.array([100.0]))  # priorities do not matter
    assert fifo.select(3).tolist() == [6, 2, 5]
    assert lifo.select(3).tolist() == [5, 2, 6]
    assert fifo.sample(2).slots.tolist() == [6, 2]
    assert (fifo.sample(2).probabilities == 1.0).all()
    assert fifo.insertion_counters()[[5, 1, 6, 2]].tolist() == [4, -1, 2, 3]
    with pytest.raises(FailedPreconditionError, match="only 3 are present"):
        fifo.select(4)


def test_lowest_and_highest_priority_order_with_ties_oldest_first() -> None:
    low, high = LowestPrioritySelector(20), HighestPrioritySelector(20)
    slots = np.array([4, 9, 2, 7, 11])
    prio = np.array([3.0, 1.0, 3.0, 0.0, 1.0])
    for sel in (low, high):
        sel.insert(slots, prio)
    assert low.select(5).tolist() == [7, 9, 11, 4, 2]
    assert high.select(5).tolist() == [4, 2, 9, 11, 7]
    low.update(np.array([7]), np.array([10.0]))
    high.remove(np.array([4]))
    assert low.select(2).tolist() == [9, 11]
    assert high.select(1).tolist() == [2]
    assert low.select(5).tolist() == [9, 11, 4, 2, 7]  # selecting leaves the order intact
    assert low.sample(1).slots.tolist() == [9]


class OrderMachine(RuleBasedStateMachine):
    """Lowest/highest priority selection against a sort of (priority, insertion order)."""

    @initialize(kind=st.sampled_from(["lowest_priority", "highest_priority"]),
                capacity=st.sampled_from([1, 7, 40, 300]))
    def setup(self, kind: str, capacity: int) -> None:
        self.sel = make_selector(kind, capacity)
        self.sign = 1.0 if kind == "lowest_priority" else -1.0
        self.items: dict[int, tuple[float, int]] = {}
        self.counter = 0
        self.capacity = capacity

    @rule(data=st.data())
    def insert(self, data: st.DataObject) -> None:
        slots = data.draw(st.lists(st.integers(0, self.capacity - 1), min_size=1, max_size=8))
        prio = data.draw(st.lists(st.sampled_from([0.0, 1.0, 2.0, 2.5, 1e9]),
                                  min_size=len(slots), max_size=len(slots)))
        self.sel.insert(np.array(slots), np.array(prio))
        for s, p in zip(slots, prio):
            self.items[s] = (p, self.counter)
            self.counter += 1

    @rule(data=st.data())
    def update_or_remove(self, data: st.DataObject) -> None:
        if not self.items:
            return
        s = data.draw(st.sampled_from(sorted(self.items)))
        if data.draw(st.booleans()):
            p = data.draw(st.sampled_from([0.0, 1.0, 3.0]))
            self.sel.update(np.array([s]), np.array([p]))
            self.items[s] = (p, self.items[s][1])
        else:
            self.sel.remove(np.array([s]))
            del self.items[s]

    @invariant()
    def selection_matches_the_sorted_reference(self) -> None:
        assert self.sel.size == len(self.items)
        order = sorted(self.items, key=lambda s: (self.sign * self.items[s][0], self.items[s][1]))
        if order:
            n = min(len(order), 5)
            assert self.sel.select(n).tolist() == order[:n]


TestOrderMachine = OrderMachine.TestCase
TestOrderMachine.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=8 if SMALL else 25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ----------------------------------------------------------------------------------------------
# bad input, for every selector


def all_selectors(capacity: int = 10) -> list[Selector]:
    out = []
    for kind in SELECTOR_KINDS:
        sel = make_selector(kind, capacity)
        sel.insert(np.array([0, 1, 2, 3]), np.array([1.0, 2.0, 3.0, 4.0]))
        out.append(sel)
    return out


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a
    )


BAD_SELECTOR_CALLS = [
    ("nan priority", lambda s: s.insert(np.array([4, 5]), np.array([1.0, math.nan])),
     InvalidPriorityError, r"priorities\[1\] = nan \(slot 5\) is NaN"),
    ("inf priority", lambda s: s.update(np.array([0]), np.array([math.inf])),
     InvalidPriorityError, r"priorities\[0\] = inf \(slot 0\) is infinite"),
    ("negative priority", lambda s: s.update(np.array([0, 1]), np.array([1.0, -2.0])),
     InvalidPriorityError, r"priorities\[1\] = -2.0 \(slot 1\) is negative"),
    ("slot out of range", lambda s: s.insert(np.array([10]), np.array([1.0])),
     InvalidArgumentError, r"slots\[0\] = 10 is out of range \[0, 10\)"),
    ("update of a free slot", lambda s: s.update(np.array([1, 7]), np.array([1.0, 1.0])),
     InvalidArgumentError, r"slots\[1\] = 7 holds no item"),
    ("remove of a free slot", lambda s: s.remove(np.array([0, 8])),
     InvalidArgumentError, r"slots\[1\] = 8 holds no item"),
    ("float slots", lambda s: s.remove(np.array([0.5])),
     InvalidArgumentError, "slots must hold integers"),
    ("length mismatch", lambda s: s.update(np.array([0, 1]), np.array([1.0])),
     InvalidArgumentError, "priorities has 1 entries but slots has 2"),
    ("2-d priorities", lambda s: s.update(np.array([0, 1]), np.ones((1, 2))),
     InvalidArgumentError, "priorities must be a 1-D array"),
]


@pytest.mark.parametrize("name,call,error,message", BAD_SELECTOR_CALLS,
                         ids=[c[0] for c in BAD_SELECTOR_CALLS])
def test_bad_input_raises_and_changes_no_selector(name, call, error, message) -> None:
    for sel in all_selectors():
        before = sel.state()
        with pytest.raises(error, match=message):
            call(sel)
        assert same_state(sel.state(), before), sel.kind


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"batch_size": 0}, "batch_size = 0 must be an int >= 1"),
        ({"batch_size": 2.0}, "batch_size"),
        ({"rng": None}, "rng must be a numpy.random.Generator or an int seed"),
        ({"rng": np.random.RandomState(0)}, "rng must be"),
        ({"beta": -0.1}, "beta = -0.1 must be a finite float >= 0"),
        ({"beta": math.nan}, "beta"),
    ],
)
def test_bad_sample_arguments_are_rejected(kwargs, message) -> None:
    sel = filled(10, np.ones(10))
    args = {"batch_size": 4, "rng": np.random.default_rng(0), "beta": 0.4} | kwargs
    with pytest.raises(InvalidArgumentError, match=message):
        sel.sample(**args)


def test_bad_alpha_is_rejected() -> None:
    for alpha in (-1.0, math.nan, math.inf, "x"):
        with pytest.raises(InvalidArgumentError, match="alpha"):
            PrioritizedSelector(10, alpha)  # type: ignore[arg-type]


def test_random_selectors_need_an_rng_to_select() -> None:
    for sel in all_selectors():
        if sel.kind in ("prioritized", "uniform"):
            with pytest.raises(InvalidArgumentError, match="needs an rng"):
                sel.select(1)
            assert sel.select(2, np.random.default_rng(0)).size == 2
        else:
            assert sel.select(2).size == 2


# ----------------------------------------------------------------------------------------------
# make_selector and state round trips


def test_make_selector_knows_every_kind_by_name() -> None:
    assert set(SELECTOR_KINDS) == {"prioritized", "uniform", "fifo", "lifo",
                                   "lowest_priority", "highest_priority"}
    sel = make_selector("prioritized", 50, alpha=0.9, with_replacement=False)
    assert isinstance(sel, PrioritizedSelector) and sel.alpha == 0.9
    assert not sel.with_replacement
    with pytest.raises(InvalidArgumentError, match="'heap' is unknown; use one of"):
        make_selector("heap", 10)
    with pytest.raises(InvalidArgumentError, match="bad options for selector 'fifo'"):
        make_selector("fifo", 10, alpha=0.5)


@pytest.mark.parametrize("kind", sorted(SELECTOR_KINDS))
def test_state_round_trip_continues_identically(kind: str) -> None:
    rng = np.random.default_rng(13)
    sel = make_selector(kind, 64)
    for _ in range(10):
        slots = rng.choice(64, 10, replace=False)
        sel.insert(slots, rng.random(10))
        present = np.flatnonzero(sel.state().get("occupied", np.ones(64, bool)))
        sel.remove(rng.choice(np.intersect1d(present, slots), 3, replace=False))
    state = sel.state()
    assert state["format_version"] == 1 and state["kind"] == kind
    copy = selector_from_state(state)
    assert type(copy) is type(sel) and copy.size == sel.size
    assert same_state(copy.state(), state)
    for a, b in zip(sel.sample(8, np.random.default_rng(1)), copy.sample(8, np.random.default_rng(1))):
        assert np.array_equal(a, b)
    more = rng.choice(np.setdiff1d(np.arange(64), sel.select(sel.size, 0)), 2, replace=False)
    for s in (sel, copy):
        s.insert(more, np.array([0.5, 0.25]))
    assert np.array_equal(sel.select(5, 3), copy.select(5, 3))


def test_state_with_another_version_or_kind_is_rejected() -> None:
    state = filled(10, np.ones(10)).state()
    with pytest.raises(InvalidArgumentError, match="format_version = 2 is not supported"):
        PrioritizedSelector.from_state(state | {"format_version": 2})
    with pytest.raises(InvalidArgumentError, match="not a selector kind"):
        selector_from_state(state | {"kind": "nope"})
    with pytest.raises(InvalidArgumentError, match="occupied"):
        PrioritizedSelector.from_state(state | {"occupied": np.ones(3, bool)})
