"""Sample counters of the view (`replaybuf.draw_counts`) against a brute-force count."""

from __future__ import annotations

import tempfile
from collections import Counter

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replaybuf import draw_counts
from replaybuf.draw_counts import CHUNK, Pending
from replaybuf.errors import ViewDamagedError

# One transaction: ids drawn (repeats allowed) and ids evicted, in a table of ids 0..3*CHUNK.
ids_st = st.lists(st.integers(0, 3 * CHUNK - 1), max_size=12)
txn_st = st.tuples(st.sampled_from([0, 1]), ids_st, ids_st)


def _open(path: str) -> tuple[lmdb.Environment, dict[str, object]]:
    env = lmdb.open(path, max_dbs=4, map_size=2**28)
    return env, {n: env.open_db(n.encode()) for n in ("draws", "sample_counts")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(txns=st.lists(txn_st, max_size=25), fold_min=st.sampled_from([1, 5, 40, 10**9]))
def test_counts_match_a_brute_force_count_whenever_folds_happen(txns, fold_min):
    with tempfile.TemporaryDirectory() as tmp:
        env, dbs = _open(tmp)
        pending = Pending(0)
        truth: dict[int, Counter[int]] = {0: Counter(), 1: Counter()}
        gone: dict[int, set[int]] = {0: set(), 1: set()}
        final: dict[tuple[int, int], int] = {}  # what eviction records as the final count
        for lsn, (table, drawn, evicted) in enumerate(txns, start=1):
            drawn = [i for i in drawn if i not in gone[table]]
            evicted = sorted(set(evicted) - gone[table])
            truth[table].update(drawn)
            with env.begin(write=True) as txn:
                ev = np.array(evicted, np.uint64)
                before = draw_counts.times_sampled(txn, dbs, pending, table, ev)
                # The applier adds this transaction's own draws of the evicted items.
                for i, b in zip(evicted, before.tolist()):
                    final[(table, i)] = b + drawn.count(i)
                drawn = [i for i in drawn if i not in set(evicted)]
                new_d = {table: np.array(drawn, np.uint64)}
                new_g = {table: ev}
                after = pending.with_new(lsn, new_d, new_g)
                if after.should_fold(0, fold_min):
                    draw_counts.fold(txn, dbs, after)
                    after = Pending(lsn)
                else:
                    after.put(txn, dbs["draws"], lsn, new_d, new_g)
            pending = after
            for i in evicted:
                assert final[(table, i)] == truth[table][i]
                gone[table].add(i)
            # A reader sees the same counts from the cached state and from the database.
            with env.begin() as txn:
                stored = Pending.read(txn, dbs["draws"], lsn)
                for t in (0, 1):
                    ids = np.array(sorted(set(range(3 * CHUNK)) - gone[t]), np.uint64)
                    want = np.array([truth[t][int(i)] for i in ids], np.uint64)
                    assert (draw_counts.times_sampled(txn, dbs, pending, t, ids) == want).all()
                    assert (draw_counts.table_counts(txn, dbs, stored, t, ids) == want).all()
        with env.begin(write=True) as txn:  # a last fold leaves counters of present items only
            draw_counts.fold(txn, dbs, pending)
            for key, value in txn.cursor(db=dbs["sample_counts"]):
                table, chunk = int.from_bytes(key[:4], "big"), int.from_bytes(key[4:], "big")
                counts = np.frombuffer(value, "<u8", offset=1)
                assert counts.any()
                for off in np.flatnonzero(counts).tolist():
                    assert chunk * CHUNK + off not in gone[table]
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
        draw_counts.fold(txn, dbs, Pending(0).with_new(1, {0: drawn}, {}))
        assert txn.stat(dbs["sample_counts"])["entries"] == 8
        got = draw_counts.times_sampled(txn, dbs, Pending(1), 0, np.arange(8 * CHUNK))
    assert (got == np.bincount(drawn.astype(np.int64), minlength=8 * CHUNK)).all()
    env.close()


def test_few_ids_against_many_draws_count_the_same_as_the_sorted_path():
    rng = np.random.default_rng(3)
    parts = tuple(rng.integers(0, 5000, 3000).astype(np.uint64) for _ in range(4))
    ids = np.array([7, 4999, 12, 7, 6000, 0], np.uint64)  # repeats and absent ids too
    state = Pending(1, {0: parts}, {}, sum(p.size for p in parts))
    few = state.draw_counts(0, ids)  # 6 * 64 < 12000 draws: the uncached path
    everything = np.concatenate(parts)
    want = np.array([(everything == i).sum() for i in ids.tolist()], np.uint64)
    assert (few == want).all()
    many = state.draw_counts(0, np.arange(5000, dtype=np.uint64))  # builds the sorted cache
    assert (many == np.bincount(everything.astype(np.int64), minlength=5000)).all()
    assert (state.draw_counts(0, ids) == want).all()  # now through the cache
