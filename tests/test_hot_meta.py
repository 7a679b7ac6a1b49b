"""Hot metadata of the view (`replaybuf.hot_meta`: sample counts and priorities) against a
brute-force model, whenever folds happen."""

from __future__ import annotations

import tempfile
from collections import Counter

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replaybuf import hot_meta
from replaybuf.applier import META_DTYPE
from replaybuf.errors import ViewDamagedError
from replaybuf.hot_meta import CHUNK, Pending, PrioUpdates

SPAN = 3 * CHUNK  # ids 0..SPAN-1 in two tables
ids_st = st.lists(st.integers(0, SPAN - 1), max_size=12)
# One transaction: table, ids drawn (repeats allowed), priority updates, ids evicted.
txn_st = st.tuples(st.sampled_from([0, 1]), ids_st,
                   st.lists(st.tuples(st.integers(0, SPAN - 1), st.integers(0, 99)), max_size=8),
                   ids_st)


def _open(path: str) -> tuple[lmdb.Environment, dict[str, object]]:
    env = lmdb.open(path, max_dbs=5, map_size=2**28)
    names = ("draws", "sample_counts", "priority_chunks", "item_events")
    return env, {n: env.open_db(n.encode()) for n in names}


def _metas(table: int, ids: np.ndarray) -> np.ndarray:
    """item_meta records as the applier writes them: append-time priority 0.5, time 1."""

    m = np.zeros(ids.size, META_DTYPE)
    m["table"], m["item_id"], m["priority"], m["priority_ms"] = table, ids, 0.5, 1
    return m


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(txns=st.lists(txn_st, max_size=25), fold_min=st.sampled_from([1, 5, 40, 10**9]))
def test_hot_fields_match_a_brute_force_model_whenever_folds_happen(txns, fold_min):
    with tempfile.TemporaryDirectory() as tmp:
        env, dbs = _open(tmp)
        pending = Pending(0)
        counts: dict[int, Counter[int]] = {0: Counter(), 1: Counter()}
        prio: dict[int, dict[int, tuple[float, int]]] = {0: {}, 1: {}}
        gone: dict[int, set[int]] = {0: set(), 1: set()}
        # Update LSNs per item id, for the lineage index (keyed by id alone: real ids are
        # unique across tables, the two tables here share them).
        history: dict[int, set[int]] = {}
        for lsn, (table, drawn, updates, evicted) in enumerate(txns, start=1):
            drawn = [i for i in drawn if i not in gone[table]]
            updates = [(i, v) for i, v in updates if i not in gone[table]]
            evicted = sorted(set(evicted) - gone[table])
            counts[table].update(drawn)
            for i, v in updates:  # later updates in the transaction win
                prio[table][i] = (v / 10, lsn)
            with env.begin(write=True) as txn:
                ev = np.array(evicted, np.uint64)
                recs = _metas(table, ev)
                hot_meta.fill(txn, dbs, pending, table, recs)
                # What the applier adds for this transaction's own changes of evicted items.
                own = Pending(0).with_new(0, {}, {}, {table: PrioUpdates(
                    np.array([i for i, _ in updates], np.uint64),
                    np.array([v / 10 for _, v in updates]), np.full(len(updates), lsn),
                    np.full(len(updates), lsn, np.uint64))})
                found, vals, ms = own.newest_priorities(table, ev)
                recs["priority"][found], recs["priority_ms"][found] = vals[found], ms[found]
                for r in recs:
                    i = int(r["item_id"])
                    # fill sees committed draws; the applier adds this transaction's.
                    assert int(r["times_sampled"]) == counts[table][i] - drawn.count(i)
                    assert (float(r["priority"]), int(r["priority_ms"])) == prio[table].get(
                        i, (0.5, 1))
                new_d = {table: np.array([i for i in drawn if i not in set(evicted)], np.uint64)}
                # As the applier: updates of items evicted later in the transaction too (the
                # fold skips gone items in the chunks but indexes every update).
                new_p = {table: PrioUpdates(
                    np.array([i for i, _ in updates], np.uint64),
                    np.array([v / 10 for _, v in updates]), np.full(len(updates), lsn),
                    np.full(len(updates), lsn, np.uint64))}
                for i, _ in updates:
                    history.setdefault(i, set()).add(lsn)
                new_g = {table: ev}
                after = pending.with_new(lsn, new_d, new_g, new_p)
                if after.should_fold(0, fold_min):
                    hot_meta.fold(txn, dbs, after)
                    after = Pending(lsn)
                else:
                    after.put(txn, dbs["draws"], lsn, new_d, new_g, new_p)
            pending = after
            for i in evicted:
                gone[table].add(i)
            # A reader sees the same from the cached state and from the database.
            with env.begin() as txn:
                stored = Pending.read(txn, dbs["draws"], lsn)
                for i, lsns in history.items():  # lineage: folded + pending updates
                    folded = set()
                    cur = txn.cursor(db=dbs["item_events"])
                    if cur.set_range(i.to_bytes(8, "big")):
                        for key in cur.iternext(values=False):
                            if key[:8] != i.to_bytes(8, "big"):
                                break
                            folded.add(int.from_bytes(key[8:], "big"))
                    assert folded | set(pending.update_lsns(0, i) + pending.update_lsns(1, i)) \
                        == lsns
                for t in (0, 1):
                    ids = np.array(sorted(set(range(SPAN)) - gone[t]), np.uint64)
                    want_c = np.array([counts[t][int(i)] for i in ids], np.uint64)
                    want_p = [prio[t].get(int(i), (0.5, 1)) for i in ids]
                    for state, scan in ((pending, False), (stored, True)):
                        got = _metas(t, ids)
                        hot_meta.fill(txn, dbs, state, t, got, scan=scan)
                        assert (got["times_sampled"] == want_c).all()
                        assert list(zip(got["priority"].tolist(),
                                        got["priority_ms"].tolist())) == want_p
        with env.begin(write=True) as txn:  # a last fold keeps entries of present items only
            hot_meta.fold(txn, dbs, pending)
            for db in ("sample_counts", "priority_chunks"):
                for key, value in txn.cursor(db=dbs[db]):
                    table, chunk = int.from_bytes(key[:4], "big"), int.from_bytes(key[4:], "big")
                    arr = np.frombuffer(value, "<u8" if db == "sample_counts" else "<f8",
                                        CHUNK, 1)
                    used = np.flatnonzero(arr if db == "sample_counts" else ~np.isnan(arr))
                    assert used.size
                    assert not set((chunk * CHUNK + used).tolist()) & gone[table]
            assert txn.stat(dbs["draws"])["entries"] == 0
        env.close()


def test_a_damaged_record_is_reported(tmp_path):
    env, dbs = _open(str(tmp_path))
    with env.begin(write=True) as txn:
        txn.put(b"\x00" * 13, b"\x01abc", db=dbs["draws"])
        with pytest.raises(ViewDamagedError, match="draws"):
            Pending.read(txn, dbs["draws"], 1)
    env.close()


def test_a_fold_writes_each_touched_chunk_once_not_each_draw(tmp_path):
    env, dbs = _open(str(tmp_path))
    rng = np.random.default_rng(0)
    drawn = rng.integers(0, 8 * CHUNK, 50_000).astype(np.uint64)
    with env.begin(write=True) as txn:
        hot_meta.fold(txn, dbs, Pending(0).with_new(1, {0: drawn}, {}))
        assert txn.stat(dbs["sample_counts"])["entries"] == 8
        got = _metas(0, np.arange(8 * CHUNK, dtype=np.uint64))
        hot_meta.fill(txn, dbs, Pending(1), 0, got)
    assert (got["times_sampled"] == np.bincount(drawn.astype(np.int64), minlength=8 * CHUNK)).all()
    env.close()


def test_few_ids_against_many_changes_give_the_same_as_the_cached_path():
    rng = np.random.default_rng(3)
    parts = tuple(rng.integers(0, 5000, 3000).astype(np.uint64) for _ in range(4))
    ups = tuple(PrioUpdates(p, rng.random(p.size), np.full(p.size, k), np.full(p.size, k, np.uint64))
                for k, p in enumerate(parts))
    ids = np.array([7, 4999, 12, 7, 6000, 0], np.uint64)  # repeats and absent ids too
    state = Pending(1, {0: parts}, {}, {0: ups}, 24_000)
    few_c = state.draw_counts(0, ids)  # 6 * 64 < 12000: the uncached paths
    few_p = state.newest_priorities(0, ids)
    everything = np.concatenate(parts)
    assert (few_c == [(everything == i).sum() for i in ids.tolist()]).all()
    for j, i in enumerate(ids.tolist()):
        hits = [(u.values[u.ids == i][-1], u.ms[0]) for u in ups if (u.ids == i).any()]
        assert bool(few_p[0][j]) == bool(hits)
        if hits:
            assert (few_p[1][j], few_p[2][j]) == hits[-1]
    state.draw_counts(0, np.arange(5000, dtype=np.uint64))  # build the caches
    state.newest_priorities(0, np.arange(5000, dtype=np.uint64))
    assert (state.draw_counts(0, ids) == few_c).all()
    for a, b in zip(state.newest_priorities(0, ids), few_p):
        assert (a == b).all()
