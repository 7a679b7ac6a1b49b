"""Lineage index runs (`replaybuf.new_items`): find_items against a brute-force filter."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _engine_helpers import SIG, batch
from replaybuf.engine import Engine, EngineConfig
from replaybuf.new_items import VIEW_MIN_BYTES, index_runs, records
from replaybuf.table_config import TableConfig

append_st = st.tuples(
    st.sampled_from(["a", "b"]),  # table
    st.lists(st.tuples(st.integers(0, 3), st.integers(-2, 2)), min_size=1, max_size=12),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(appends=st.lists(append_st, min_size=1, max_size=8), evict=st.integers(0, 3),
       limit=st.integers(1, 30))
def test_find_items_by_episode_and_model_version_match_a_brute_force_filter(appends, evict,
                                                                            limit):
    with tempfile.TemporaryDirectory() as tmp:
        with Engine(Path(tmp) / "db", EngineConfig.for_tests()) as engine:
            for name in ("a", "b"):
                engine.create_table(TableConfig(name, SIG, capacity=40))
            items: dict[str, list[tuple[int, int, int]]] = {"a": [], "b": []}
            for name, lineage in appends:
                ep = [e for e, _ in lineage]
                mv = [m for _, m in lineage]
                ack = engine.append(name, batch(np.arange(len(lineage))),
                                    lineage={"episode_id": ep, "model_version": mv})
                items[name] += list(zip(ack.item_ids.tolist(), ep, mv))
            if items["a"][:evict]:  # evicted items keep their lineage entries
                engine.evict("a", [i for i, _, _ in items["a"][:evict]], reason="manual")
            for name, rows in items.items():
                idx = engine.table(name).index
                for k, field in ((1, "episode_id"), (2, "model_version")):
                    for v in {r[k] for r in rows}:
                        want = sorted(r[0] for r in rows if r[k] == v)
                        got = engine.view.find_items(idx, limit=limit, **{field: v})
                        assert got == (want[:limit], len(want) > limit)
                assert engine.view.find_items(idx, episode_id=99) == ([], False)


def test_index_runs_split_at_appends_values_and_gaps():
    tables = np.array([0, 0, 0, 0, 0, 1], np.uint32)
    appends = np.array([0, 0, 0, 1, 1, 2])
    ids = np.array([1, 2, 3, 4, 6, 7], np.uint64)
    values = np.array([5, 5, 4, 5, 5, 5], np.uint64)
    keys, runs = index_runs(tables, appends, ids, values)
    got = [(int(k["table"]), int(k["value"]), int(k["id"]), int(r["count"]))
           for k, r in zip(keys, runs)]
    assert got == [(0, 4, 3, 1), (0, 5, 1, 2), (0, 5, 4, 1), (0, 5, 6, 1), (1, 5, 7, 1)]


@settings(max_examples=200, deadline=None)
@given(appends=st.lists(st.tuples(st.integers(0, 2), st.lists(st.integers(0, 3), min_size=1,
                                                              max_size=8),
                                  st.integers(0, 2), st.booleans()), min_size=1, max_size=8),
       shuffle=st.booleans())
def test_index_runs_match_a_brute_force_grouping(appends, shuffle):
    # Each append: (table, values of its items, id gap before it, values sorted?). In append
    # order the runs are found in place; shuffled, after a sort.
    tables, ordinals, ids, values = [], [], [], []
    next_id = 1
    for k, (table, vals, gap, ordered) in enumerate(appends):
        vals = sorted(vals) if ordered else vals
        next_id += gap
        for v in vals:
            tables.append(table), ordinals.append(k), ids.append(next_id), values.append(v)
            next_id += 1
    want = []
    for k in range(len(appends)):
        mine = [(i, v, t) for t, a, i, v in zip(tables, ordinals, ids, values) if a == k]
        for v in sorted({v for _, v, _ in mine}):
            run = sorted(i for i, w, _ in mine if w == v)
            first = run[0]
            for prev, i in zip(run, run[1:] + [None]):
                if i != prev + 1:
                    want.append((mine[0][2], v, first, prev - first + 1))
                    first = i
    order = np.random.default_rng(len(ids)).permutation(len(ids)) if shuffle else slice(None)
    keys, runs = index_runs(np.array(tables, np.uint32)[order], np.array(ordinals)[order],
                            np.array(ids, np.uint64)[order], np.array(values, np.uint64)[order])
    got = [(int(k["table"]), int(k["value"]), int(k["id"]), int(r["count"]))
           for k, r in zip(keys, runs)]
    assert got == sorted(want)


@pytest.mark.parametrize("row_bytes", [16, VIEW_MIN_BYTES - 1, VIEW_MIN_BYTES, 3 * VIEW_MIN_BYTES + 5])
def test_records_are_the_rows_bytes_whether_views_or_copies(row_bytes):
    dt = np.dtype([("v", "u1"), ("x", "u1", (row_bytes - 1,))])
    rows = np.zeros(5, dt)
    rows["x"] = np.random.default_rng(row_bytes).integers(0, 255, (5, row_bytes - 1))
    got = records(rows[::-1])  # not contiguous: copied first
    want = [rows[::-1][i:i + 1].tobytes() for i in range(5)]
    assert [bytes(g) for g in got] == want
    assert all(isinstance(g, memoryview) == (row_bytes >= VIEW_MIN_BYTES) for g in got)
