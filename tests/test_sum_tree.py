"""SumTree against a brute-force numpy reference: random operation sequences, prefix-sum
boundaries, zero leaves, bad input, state round trips and odd capacities.

``REPLAYBUF_SMALL_TESTS=1`` shrinks sizes and example counts (used for the
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

from replaybuf.errors import FailedPreconditionError, InvalidArgumentError, InvalidPriorityError
from replaybuf.sum_tree import FORMAT_VERSION, SumTree

SMALL = os.environ.get("REPLAYBUF_SMALL_TESTS") == "1"
EXAMPLES = 15 if SMALL else 100
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def expected_slots(leaves: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Brute force: the slot whose [prefix, prefix + value) holds the target; targets at or
    past the total go to the last positive slot. Exact when the leaves are small integers."""
    cum = np.cumsum(leaves)
    out = np.searchsorted(cum, targets, side="right")
    last = np.flatnonzero(leaves > 0)[-1]
    return np.where(targets >= cum[-1], last, out)


def snapshot(tree: SumTree) -> np.ndarray:
    return tree._buf.copy()


# ----------------------------------------------------------------------------------------------
# hypothesis: random operation sequences


class SumTreeMachine(RuleBasedStateMachine):
    """set / clear / search sequences on trees of odd shapes; integer leaves keep every sum
    exact, so totals and prefix-sum landings must match the reference bit for bit."""

    @initialize(
        capacity=st.sampled_from([1, 2, 3, 15, 16, 17, 37, 255, 257, 1000]),
        fanout=st.sampled_from([2, 4, 8, 16, 32]),
    )
    def setup(self, capacity: int, fanout: int) -> None:
        self.tree = SumTree(capacity, fanout=fanout)
        self.ref = np.zeros(capacity)

    @rule(data=st.data())
    def set_values(self, data: st.DataObject) -> None:
        cap = self.tree.capacity
        n = data.draw(st.integers(1, min(cap, 40)))
        slots = np.array(data.draw(st.lists(st.integers(0, cap - 1), min_size=n, max_size=n)))
        if data.draw(st.booleans()):
            slots = np.sort(slots)
        values = np.array(data.draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)), float)
        self.tree.set(slots, values)
        for s, v in zip(slots, values):  # repeated slots: the last write wins
            self.ref[s] = v

    @rule(data=st.data())
    def clear_values(self, data: st.DataObject) -> None:
        cap = self.tree.capacity
        slots = np.array(data.draw(st.lists(st.integers(0, cap - 1), min_size=1, max_size=10)))
        self.tree.clear(slots)
        self.ref[slots] = 0.0

    @rule(data=st.data())
    def reject_bad_value(self, data: st.DataObject) -> None:
        before = snapshot(self.tree)
        bad = data.draw(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -1e-300]))
        with pytest.raises(InvalidPriorityError):
            self.tree.set(np.array([0, 0]), np.array([1.0, bad]))
        assert np.array_equal(snapshot(self.tree), before, equal_nan=True)

    @invariant()
    def totals_and_min_match(self) -> None:
        assert self.tree.total() == self.ref.sum()
        positive = self.ref[self.ref > 0]
        assert self.tree.min() == (positive.min() if positive.size else math.inf)
        assert np.array_equal(self.tree.leaves(), self.ref)

    @invariant()
    def prefix_sums_land_like_the_reference(self) -> None:
        total = self.ref.sum()
        if total == 0:
            return
        cum = np.cumsum(self.ref)
        targets = np.concatenate([cum, cum - 0.5, [0.0, total]])  # every boundary and inside
        targets = targets[(targets >= 0) & (targets <= total)]
        got = self.tree.find_prefix_sum(targets)
        assert np.array_equal(got, expected_slots(self.ref, targets))
        assert (self.ref[got] > 0).all()


TestSumTreeMachine = SumTreeMachine.TestCase
TestSumTreeMachine.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=8 if SMALL else 25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@SETTINGS
@given(
    values=st.lists(
        st.floats(0.0, 1e6, allow_nan=False).map(lambda v: 0.0 if v < 1.0 else v),
        min_size=1, max_size=300,
    ),
    fanout=st.sampled_from([2, 4, 16]),
    fractions=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30),
)
def test_real_valued_prefix_sums_land_inside_their_slot(
    values: list[float], fanout: int, fractions: list[float]
) -> None:
    leaves = np.array(values)
    tree = SumTree(leaves.size, fanout=fanout)
    tree.set(np.arange(leaves.size), leaves)
    assert tree.total() == pytest.approx(math.fsum(leaves), rel=1e-13, abs=0.0)
    if not leaves.any():
        return
    targets = np.array(fractions) * tree.total()
    got = tree.find_prefix_sum(targets)
    assert (leaves[got] > 0).all()
    cum = np.concatenate([[0.0], np.cumsum(leaves)])
    slack = 1e-9 * cum[-1]  # rounding of the per-node sums vs numpy's running sum
    assert (cum[got] <= targets + slack).all()
    assert (targets <= cum[got + 1] + slack).all()


# ----------------------------------------------------------------------------------------------
# boundaries and odd shapes


def test_a_target_on_a_boundary_lands_on_the_next_positive_slot() -> None:
    tree = SumTree(8, fanout=2)
    tree.set(np.arange(6), np.array([1.0, 0.0, 2.0, 0.0, 0.0, 3.0]))
    got = tree.find_prefix_sum(np.array([0.0, 0.5, 1.0, 2.999, 3.0, 5.9, 6.0]))
    assert got.tolist() == [0, 0, 2, 2, 5, 5, 5]


def test_zero_value_slots_are_never_found() -> None:
    rng = np.random.default_rng(7)
    cap = 500 if SMALL else 20_000
    leaves = np.where(rng.random(cap) < 0.7, 0.0, rng.random(cap))
    tree = SumTree(cap)
    tree.set(np.arange(cap), leaves)
    got = tree.find_prefix_sum(np.sort(rng.random(2_000)) * tree.total())
    assert (leaves[got] > 0).all()


@pytest.mark.parametrize("capacity,fanout", [(2000, 2), (40_000, 16)] if not SMALL else [(2000, 2)])
def test_scanned_and_prefix_levels_land_like_the_reference(capacity: int, fanout: int) -> None:
    """Big levels keep no prefix sums (searched by a register scan), small ones do: both
    kinds must land every boundary exactly like the reference (integer leaves)."""
    from replaybuf.sum_tree import _M_SCAN

    tree = SumTree(capacity, fanout=fanout)
    flags = [int(tree._meta[_M_SCAN + lvl]) for lvl in range(1, tree.levels + 1)]
    assert flags[:2] == [1, 1] and flags[-1] == 0  # both kinds are present
    rng = np.random.default_rng(17)
    leaves = np.where(rng.random(capacity) < 0.5, 0.0, rng.integers(1, 9, capacity)).astype(float)
    leaves[: 3 * fanout] = 0.0  # whole zero blocks at the start
    tree.set(np.arange(capacity), leaves)
    cum = np.cumsum(leaves)
    targets = np.concatenate([cum, cum - 0.5, [0.0]])
    targets = targets[(targets >= 0) & (targets <= cum[-1])]
    got = tree.find_prefix_sum(targets)
    assert np.array_equal(got, expected_slots(leaves, targets))


def test_capacity_one() -> None:
    tree = SumTree(1)
    assert tree.total() == 0.0 and tree.min() == math.inf
    with pytest.raises(FailedPreconditionError):
        tree.find_prefix_sum(np.array([0.0]))
    tree.set(np.array([0]), np.array([2.5]))
    assert tree.find_prefix_sum(np.array([0.0, 2.5])).tolist() == [0, 0]
    assert (tree.total(), tree.min()) == (2.5, 2.5)
    with pytest.raises(InvalidArgumentError, match=r"slots\[0\] = 1 is out of range"):
        tree.set(np.array([1]), np.array([1.0]))


@pytest.mark.parametrize("capacity,fanout", [(17, 16), (1000, 16), (4097, 16), (33, 4), (9, 2)])
def test_capacity_not_a_power_of_the_fanout(capacity: int, fanout: int) -> None:
    tree = SumTree(capacity, fanout=fanout)
    leaves = np.arange(1, capacity + 1, dtype=float)
    tree.set(np.arange(capacity), leaves)
    assert tree.total() == leaves.sum()
    last = tree.find_prefix_sum(np.array([tree.total()]))
    assert last.tolist() == [capacity - 1]
    tree.clear(np.array([capacity - 1]))
    assert tree.find_prefix_sum(np.array([tree.total()])).tolist() == [capacity - 2]


def test_repeated_slots_in_one_call_keep_the_last_value() -> None:
    tree = SumTree(10)
    tree.set(np.array([3, 3, 7, 3]), np.array([1.0, 2.0, 5.0, 4.0]))
    assert tree.get(np.array([3, 7])).tolist() == [4.0, 5.0]
    assert tree.total() == 9.0


def test_unsorted_and_sorted_updates_build_identical_trees() -> None:
    rng = np.random.default_rng(3)
    cap = 3000
    a, b = SumTree(cap, fanout=4), SumTree(cap, fanout=4)
    for _ in range(20):
        slots = rng.choice(cap, 64, replace=False)
        values = rng.random(64)
        order = np.argsort(slots)
        a.set(slots, values)
        b.set(slots[order], values[order])
    assert np.array_equal(a._buf, b._buf)


def test_tree_is_a_pure_function_of_its_leaves() -> None:
    """Each node is recomputed from its children, so no update history leaves a trace:
    the incrementally updated tree equals one rebuilt from the same leaves, bit for bit."""
    rng = np.random.default_rng(11)
    cap = 2000
    tree = SumTree(cap)
    for _ in range(200):
        slots = rng.integers(0, cap, 32)
        values = rng.random(32) * 10.0 ** rng.integers(-8, 8, 32)
        tree.set(slots, values)
        tree.clear(rng.integers(0, cap, 8))
    rebuilt = SumTree.from_state(tree.state())
    assert np.array_equal(rebuilt._buf, tree._buf)


def test_get_returns_copies_and_checks_range() -> None:
    tree = SumTree(4)
    tree.set(np.array([1]), np.array([2.0]))
    got = tree.get(np.array([1, 1]))
    got[0] = 99.0
    assert tree.get(np.array([1])).tolist() == [2.0]
    with pytest.raises(InvalidArgumentError, match=r"slots\[1\] = -1"):
        tree.get(np.array([0, -1]))


# ----------------------------------------------------------------------------------------------
# bad input leaves the tree unchanged


BAD_CALLS = [
    ("nan", lambda t: t.set(np.array([0, 1]), np.array([1.0, math.nan])),
     InvalidPriorityError, r"values\[1\] = nan \(slot 1\) is NaN"),
    ("inf", lambda t: t.set(np.array([2]), np.array([math.inf])),
     InvalidPriorityError, r"values\[0\] = inf \(slot 2\) is infinite"),
    ("negative", lambda t: t.set(np.array([0, 1, 2]), np.array([1.0, 2.0, -0.5])),
     InvalidPriorityError, r"values\[2\] = -0.5 \(slot 2\) is negative"),
    ("slot too big", lambda t: t.set(np.array([0, 99]), np.array([1.0, 1.0])),
     InvalidArgumentError, r"slots\[1\] = 99 is out of range \[0, 20\)"),
    ("negative slot", lambda t: t.clear(np.array([-3])),
     InvalidArgumentError, r"slots\[0\] = -3 is out of range"),
    ("float slots", lambda t: t.set(np.array([0.0, 1.0]), np.array([1.0, 1.0])),
     InvalidArgumentError, "slots must hold integers; got dtype float64"),
    ("2-d slots", lambda t: t.set(np.zeros((2, 2), np.int64), np.ones(4)),
     InvalidArgumentError, r"slots must be a 1-D array"),
    ("2-d values", lambda t: t.set(np.arange(4), np.ones((2, 2))),
     InvalidArgumentError, r"values must be a 1-D array"),
    ("length mismatch", lambda t: t.set(np.arange(3), np.ones(2)),
     InvalidArgumentError, "values has 2 entries but slots has 3"),
    ("string values", lambda t: t.set(np.arange(2), np.array(["a", "b"])),
     InvalidArgumentError, "values must hold real numbers"),
    ("bool slots", lambda t: t.set(np.array([True]), np.ones(1)),
     InvalidArgumentError, "slots must hold integers"),
    ("target past total", lambda t: t.find_prefix_sum(np.array([0.0, 1e9])),
     InvalidArgumentError, r"targets\[1\] = 1000000000.0 is outside \[0, total\(\)\]"),
    ("nan target", lambda t: t.find_prefix_sum(np.array([math.nan])),
     InvalidArgumentError, r"targets\[0\] = nan"),
]


@pytest.mark.parametrize("name,call,error,message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_and_changes_nothing(name, call, error, message) -> None:
    tree = SumTree(20, fanout=4)
    tree.set(np.arange(10), np.arange(1.0, 11.0))
    before = snapshot(tree)
    with pytest.raises(error, match=message):
        call(tree)
    assert np.array_equal(snapshot(tree), before)


@pytest.mark.parametrize("capacity", [0, -1, 2.5, True, "10"])
def test_bad_capacity_is_rejected(capacity) -> None:
    with pytest.raises(InvalidArgumentError, match="capacity"):
        SumTree(capacity)


@pytest.mark.parametrize("fanout", [0, 1, 3, 12, 128, True])
def test_bad_fanout_is_rejected(fanout) -> None:
    with pytest.raises(InvalidArgumentError, match="fanout"):
        SumTree(10, fanout=fanout)


# ----------------------------------------------------------------------------------------------
# state


def test_state_round_trip_is_bit_identical() -> None:
    rng = np.random.default_rng(5)
    tree = SumTree(777, fanout=8)
    tree.set(rng.integers(0, 777, 500), rng.random(500))
    state = tree.state()
    assert state["format_version"] == FORMAT_VERSION
    assert set(state) == {"format_version", "kind", "capacity", "fanout", "leaves"}
    restored = SumTree.from_state(state)
    assert (restored.capacity, restored.fanout) == (777, 8)
    assert np.array_equal(restored._buf, tree._buf)
    targets = rng.random(100) * tree.total()
    assert np.array_equal(restored.find_prefix_sum(targets), tree.find_prefix_sum(targets))
    state["leaves"][0] = 123.0  # the export is a copy
    assert tree.get(np.array([0]))[0] != 123.0


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda s: s.update(format_version=99), "format_version = 99 is not supported"),
        (lambda s: s.update(kind="other"), "kind"),
        (lambda s: s.update(leaves=np.ones(3)), "must be a float array of shape"),
        (lambda s: s["leaves"].__setitem__(0, -1.0), "must be finite and >= 0"),
    ],
)
def test_bad_state_is_rejected(change, message) -> None:
    tree = SumTree(10)
    state = tree.state()
    change(state)
    with pytest.raises(InvalidArgumentError, match=message):
        SumTree.from_state(state)
