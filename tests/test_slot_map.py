"""SlotMap against a dict: random appends, removals and lookups give the same answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replaybuf.slot_map import SlotMap

ops_st = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 40), st.integers(1, 5)),  # count, id gap
    st.tuples(st.just("remove"), st.lists(st.integers(0, 10**6), max_size=30)),
    st.tuples(st.just("lookup"), st.lists(st.integers(-3, 2000), max_size=30)),
    st.tuples(st.just("reload"),),
), max_size=60)


@settings(max_examples=200, deadline=None)
@given(ops=ops_st)
def test_slot_map_answers_like_a_dict(ops):
    m, ref = SlotMap(), {}
    next_id, next_slot = 1, 0
    for op in ops:
        if op[0] == "add":
            _, n, gap = op
            ids = np.arange(next_id, next_id + n * gap, gap, dtype=np.uint64)
            slots = np.arange(next_slot, next_slot + n)
            m.add(ids, slots)
            ref.update(zip(ids.tolist(), slots.tolist()))
            next_id, next_slot = int(ids[-1]) + 1, next_slot + n
        elif op[0] == "remove":
            live = sorted(ref)
            if not live:
                continue
            picks = sorted({live[i % len(live)] for i in op[1]})
            m.remove(np.array(picks, np.uint64))
            for i in picks:
                del ref[i]
        elif op[0] == "lookup":
            got = m.lookup(np.array(op[1], np.int64))
            assert got.tolist() == [ref.get(i, -1) for i in op[1]]
            assert [m.get(i) for i in op[1]] == [ref.get(i) for i in op[1]]
        else:
            ids, slots = m.items()
            m = SlotMap()
            m.load(ids, slots)
        assert len(m) == len(ref)
        ids, slots = m.items()
        assert ids.tolist() == sorted(ref) and slots.tolist() == [ref[i] for i in sorted(ref)]


def test_rejects_ids_that_do_not_increase_and_changes_nothing():
    m = SlotMap()
    m.add(np.array([3, 7], np.uint64), np.array([0, 1]))
    with pytest.raises(ValueError, match="increas"):
        m.add(np.array([7, 9], np.uint64), np.array([2, 3]))
    with pytest.raises(ValueError, match="increas"):
        m.add(np.array([9, 8], np.uint64), np.array([2, 3]))
    assert m.items()[0].tolist() == [3, 7]


def test_removing_an_absent_or_repeated_id_raises_and_changes_nothing():
    m = SlotMap()
    m.add(np.array([3, 7], np.uint64), np.array([0, 1]))
    with pytest.raises(KeyError):
        m.remove([3, 4])
    with pytest.raises(KeyError):
        m.remove([7, 7])
    assert len(m) == 2 and m.lookup([3, 7]).tolist() == [0, 1]


def test_many_removals_compact_the_arrays():
    m = SlotMap()
    ids = np.arange(1, 10_001, dtype=np.uint64)
    m.add(ids, np.arange(10_000))
    m.remove(ids[:9_000])
    assert m._n < 2_000 and len(m) == 1_000
    assert m.lookup([9_000, 9_001, 10_000]).tolist() == [-1, 9_000, 9_999]
