"""Recovery of the engine: rebuild equivalence, bad views, map growth and SIGKILL."""

from __future__ import annotations

import random
import shutil
import struct
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _engine_helpers import SIG, batch, check_acked, run_crash_child, sample_summary, snapshot
from replaybuf.engine import Engine, EngineConfig
from replaybuf.events import decode_event, encode_event, make_event
from replaybuf.file_log import FileLog
from replaybuf.table_config import SelectorConfig, TableConfig
from replaybuf.table_snapshot import SNAPSHOT_NAME
from replaybuf.v1 import events_pb2

CONFIG = EngineConfig.for_tests()

TABLES = [
    TableConfig("per", SIG, 8, sampler=SelectorConfig("prioritized", alpha=0.7)),
    TableConfig("uni", SIG, 6, sampler=SelectorConfig("uniform"),
                remover=SelectorConfig("lowest_priority"), max_times_sampled=2),
    TableConfig("fifo", SIG, 5, sampler=SelectorConfig("fifo"), max_times_sampled=3),
]
NAMES = [t.name for t in TABLES]

table_st = st.sampled_from(NAMES)
ids_st = st.lists(st.integers(1, 60), min_size=1, max_size=5)
op_st = st.one_of(
    st.tuples(st.just("append"), table_st, st.integers(1, 5), st.booleans(), st.integers(0, 99)),
    st.tuples(st.just("sample"), table_st, st.integers(1, 4), st.integers(0, 2**32)),
    st.tuples(st.just("update"), table_st, ids_st, st.integers(0, 99)),
    st.tuples(st.just("correct"), table_st, ids_st, st.integers(0, 99)),
    st.tuples(st.just("evict"), table_st, ids_st),
)


def run_ops(engine: Engine, ops: list[tuple]) -> None:
    tag = 0
    for op in ops:
        kind, name = op[0], op[1]
        if kind == "append":
            _, _, n, with_prio, seed = op
            rng = np.random.default_rng(seed)
            prios = rng.uniform(0, 3, n).round(2) if with_prio else None
            engine.append(name, batch(np.arange(tag, tag + n)), priorities=prios,
                          lineage={"episode_id": seed, "step": np.arange(n),
                                   "request_id": [f"q{tag + i}" for i in range(n)],
                                   "model_version": seed - 50, "source": name})
            tag += n
        elif kind == "sample":
            size = engine.describe_table(name).size
            if size:  # fifo samplers draw distinct items: at most the size
                engine.sample(name, min(op[2], size), seed=op[3], timeout=0)
        elif kind == "update":
            rng = np.random.default_rng(op[3])
            engine.update_priorities(name, op[2], rng.uniform(0, 2, len(op[2])).round(3))
        elif kind == "correct":
            engine.correct_rewards(name, op[2], np.arange(len(op[2])) + op[3] / 10)
        else:
            engine.evict(name, op[2], reason="manual")


def lineage_queries(engine: Engine) -> dict:
    """`View.find_items` for every episode, model version and request id of every table,
    each checked against a brute-force filter of all items' records (present and evicted)."""

    view = engine.view
    all_ids = np.arange(1, view.next_item_id, dtype=np.uint64)
    records = view.records(all_ids)
    requests = dict(zip(all_ids.tolist(), view.read_strings(all_ids)[0]))
    out = {}
    for info in engine.list_tables():
        idx = engine.table(info.name).index
        mine = {i: r for i, r in records.items() if int(r["table"]) == idx}
        values = {"episode_id": lambda r, i: int(r["episode_id"]),
                  "model_version": lambda r, i: int(r["model_version"]),
                  "request_id": lambda r, i: requests[i]}
        for field, value_of in values.items():
            for v in sorted({value_of(r, i) for i, r in mine.items()} - {""}):
                want = sorted(i for i, r in mine.items() if value_of(r, i) == v)
                assert view.find_items(idx, **{field: v}) == (want, False)
                assert view.find_items(idx, limit=1, **{field: v}) == (want[:1], len(want) > 1)
                out[(info.name, field, v)] = want
    return out


def reopen_all_ways(path: Path, folds: tuple[int, int, int] = (1 << 16,) * 3
                    ) -> tuple[Engine, Engine, Engine]:
    """The engine at `path` (closed cleanly) reopened from its view with the tables'
    snapshot, a copy reopened from its view without the snapshot (a scan, as after a crash),
    and a copy rebuilt without a view; `folds` are their `EngineConfig.fold_draws`."""

    copies = []
    for name in ("scan", "rebuilt"):
        copy = Path(tempfile.mkdtemp(dir=path.parent)) / name
        shutil.copytree(path, copy, ignore=shutil.ignore_patterns("LOCK"))
        copies.append(copy)
    (copies[0] / "view" / SNAPSHOT_NAME).unlink()
    shutil.rmtree(copies[1] / "view")
    fast = Engine(path, replace(CONFIG, fold_draws=folds[0]))
    scanned = Engine(copies[0], replace(CONFIG, fold_draws=folds[1]))
    rebuilt = Engine(copies[1], replace(CONFIG, fold_draws=folds[2]))
    assert fast.rebuild_reason is None and fast.loaded_from == "snapshot"
    assert scanned.rebuild_reason is None and scanned.loaded_from == "scan"
    assert rebuilt.rebuild_reason is not None and "missing" in rebuilt.rebuild_reason
    return fast, scanned, rebuilt


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_st, max_size=30), folds=st.tuples(*[st.sampled_from([1, 3, 1 << 16])] * 4))
def test_rebuilt_view_equals_the_live_one(ops, folds):
    # Each engine folds its sample counters at other moments (hot_meta): no difference.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "db"
        with Engine(path, replace(CONFIG, fold_draws=folds[0])) as engine:
            for cfg in TABLES:
                engine.create_table(cfg)
            run_ops(engine, ops)
            engine.flush_samples()
            before = snapshot(engine)
            lineage = lineage_queries(engine)
        fast, scanned, rebuilt = reopen_all_ways(path, folds[1:])
        with fast, scanned, rebuilt:
            assert snapshot(fast) == before
            assert snapshot(scanned) == before
            assert snapshot(rebuilt) == before
            assert lineage_queries(fast) == lineage_queries(rebuilt) == lineage
            for name in NAMES:
                if fast.describe_table(name).size:
                    drawn = sample_summary(fast, name, 3)
                    assert sample_summary(scanned, name, 3) == drawn
                    assert sample_summary(rebuilt, name, 3) == drawn


def test_reopened_engine_has_exactly_the_state_it_closed_with(tmp_path):
    path = tmp_path / "db"
    ops = [("append", n, 5, True, 1) for n in NAMES] + [
        ("sample", "per", 4, 1), ("sample", "uni", 3, 2), ("update", "per", [1, 2], 3),
        ("correct", "uni", [7, 8], 4), ("evict", "fifo", [13]), ("append", "fifo", 4, False, 5),
        ("sample", "fifo", 2, 6),
    ]
    with Engine(path, CONFIG) as engine:
        for cfg in TABLES:
            engine.create_table(cfg)
        run_ops(engine, ops)
        engine.flush_samples()
        before = snapshot(engine)
        # "per" retires nothing (max_times_sampled=0), so drawing does not change what the
        # next draw with the same seed selects
        live = sample_summary(engine, "per", seed=7)
        engine.flush_samples()
        before_after_draw = snapshot(engine)
    assert before_after_draw["per"]["limiter"][1] == before["per"]["limiter"][1] + 5
    fast, scanned, rebuilt = reopen_all_ways(path)
    with fast, scanned, rebuilt:
        for e in (fast, scanned, rebuilt):
            assert snapshot(e) == before_after_draw
            assert sample_summary(e, "per", seed=7) == live


def _populated(path: Path, tags: range) -> dict:
    with Engine(path, CONFIG) as engine:
        engine.create_table(TableConfig("t", SIG, 100), exist_ok=True)
        engine.append("t", batch(list(tags)), lineage={"request_id": "x"})
        engine.sample("t", 3, seed=1)
        engine.flush_samples()
        return snapshot(engine)


def test_view_ahead_of_the_log_is_rebuilt(tmp_path):
    path = tmp_path / "db"
    old = _populated(path, range(5))
    shutil.copytree(path / "log", tmp_path / "old-log", ignore=shutil.ignore_patterns("LOCK"))
    _populated(path, range(5, 9))
    shutil.rmtree(path / "log")
    shutil.copytree(tmp_path / "old-log", path / "log")
    with Engine(path, CONFIG) as engine:
        assert "ahead of the log" in engine.rebuild_reason
        assert snapshot(engine) == old


def test_view_with_applied_lsn_past_the_log_end_is_rebuilt(tmp_path):
    path = tmp_path / "db"
    state = _populated(path, range(5))
    with lmdb.open(str(path / "view"), max_dbs=16) as env:
        db = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            txn.put(b"applied_lsn", struct.pack(">Q", 10**6), db=db)
    with Engine(path, CONFIG) as engine:
        assert "ahead of the log" in engine.rebuild_reason
        assert snapshot(engine) == state


def test_view_of_another_log_is_rebuilt(tmp_path):
    mine = _populated(tmp_path / "a", range(5))
    _populated(tmp_path / "b", range(100, 103))
    shutil.rmtree(tmp_path / "a" / "view")
    shutil.copytree(tmp_path / "b" / "view", tmp_path / "a" / "view")
    with Engine(tmp_path / "a", CONFIG) as engine:
        assert "was built from log" in engine.rebuild_reason
        assert snapshot(engine) == mine


def _garbage_data_file(view: Path) -> None:
    size = (view / "data.mdb").stat().st_size
    (view / "data.mdb").write_bytes(random.Random(0).randbytes(size))


def _meta_put(key: bytes, value: bytes | None):
    def damage(view: Path) -> None:
        with lmdb.open(str(view), max_dbs=16) as env:
            db = env.open_db(b"meta")
            with env.begin(write=True) as txn:
                txn.put(key, value, db=db) if value is not None else txn.delete(key, db=db)
    return damage


def _truncated_meta_record(view: Path) -> None:
    # Found by the scan of the items; an open from the tables' snapshot reads no item record
    # (like any damage LMDB cannot see, it shows when the record is read), so: a crash too.
    (view / SNAPSHOT_NAME).unlink()
    with lmdb.open(str(view), max_dbs=16) as env:
        db = env.open_db(b"item_meta")
        with env.begin(write=True) as txn:
            key, value = next(iter(txn.cursor(db=db)))
            txn.put(key, value[:-3], db=db)


@pytest.mark.parametrize(
    "damage",
    [_garbage_data_file, _meta_put(b"applied_lsn", b"\x01"), _meta_put(b"format", None),
     _meta_put(b"format", struct.pack(">I", 999)), _truncated_meta_record],
    ids=["garbage-file", "short-applied-lsn", "no-format", "other-format", "short-item-meta"],
)
def test_damaged_view_is_rebuilt(tmp_path, damage):
    path = tmp_path / "db"
    state = _populated(path, range(6))
    damage(path / "view")
    with Engine(path, CONFIG) as engine:
        assert engine.rebuild_reason is not None
        assert snapshot(engine) == state


def test_full_map_grows_and_the_write_succeeds_with_concurrent_samplers(tmp_path):
    config = EngineConfig.for_tests(map_size=2**16)
    errors: list[BaseException] = []
    stop = threading.Event()
    with Engine(tmp_path / "db", config) as engine:
        engine.create_table(TableConfig("big", {"x": (np.uint8, (4096,)), "reward": np.float32},
                                        capacity=500))
        engine.append("big", {"x": np.ones((1, 4096), np.uint8), "reward": np.zeros(1, np.float32)},
                      lineage={"request_id": "first"})

        def sampler():
            try:
                while not stop.is_set():
                    s = engine.sample("big", 4, timeout=1)
                    assert (s.data["x"][:, -1] == s.info.item_ids % 256).all()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        thread = threading.Thread(target=sampler)
        thread.start()
        try:
            start = engine.view.map_size
            for i in range(2, 200, 10):
                ids = np.arange(i, i + 10)
                x = np.repeat((ids % 256).astype(np.uint8)[:, None], 4096, axis=1)
                engine.append("big", {"x": x, "reward": np.zeros(10, np.float32)})
        finally:
            stop.set()
            thread.join()
        assert not errors, errors
        assert engine.view.map_size > start
        assert engine.describe_table("big").size == 201
        engine.flush_samples()
        state = snapshot(engine)
    with Engine(tmp_path / "db", config) as engine:
        assert snapshot(engine) == state


@pytest.mark.slow
@pytest.mark.parametrize("fsync", ["group", "none"])
def test_sigkill_during_writes_loses_no_acked_item(tmp_path, fsync):
    path = tmp_path / "db"
    acked: list[tuple[int, int, int]] = []
    for seed in (1, 2):
        acked += run_crash_child(path, fsync, seed, kill_after=random.Random(seed).randint(5, 40))
        with Engine(path, CONFIG) as engine:
            # no snapshot after the first child; the second's writes left the snapshot of the
            # clean close below behind: a scan that takes the older payloads from it
            assert engine.loaded_from == ("scan" if seed == 1 else "scan+snapshot")
            assert engine.applied_lsn <= engine.durable_lsn == engine.log.last_lsn
            check_acked(engine, acked)
            t = engine.table("t")
            ids = t.snapshot_ids()
            assert np.unique(ids).size == ids.size
            assert engine.describe_table("t").size == ids.size == engine.describe_table(
                "t").rate_limiter.inserts
            state = snapshot(engine)
        copy = tmp_path / f"rebuilt-{seed}"
        shutil.copytree(path, copy, ignore=shutil.ignore_patterns("LOCK", "view"))
        with Engine(copy, CONFIG) as rebuilt:
            assert snapshot(rebuilt) == state
        shutil.rmtree(copy)
    assert len(acked) >= 10


def test_item_past_max_times_sampled_in_the_log_is_evicted_on_open(tmp_path):
    path = tmp_path / "db"
    with Engine(path, CONFIG) as engine:
        engine.create_table(TableConfig("t", SIG, 10, max_times_sampled=2))
        engine.append("t", batch([1, 2]))
    # a log written by another tool: two draws of item 1 and no eviction
    with FileLog(path / "log") as log:
        drawn = events_pb2.ItemsSampled(table="t", item_ids=[1, 1], seed=5, at_lsn=2)
        log.append([encode_event(make_event(items_sampled=drawn))])
    with Engine(path, CONFIG) as engine:
        assert engine.table("t").snapshot_ids().tolist() == [2]
        last = list(engine.log.read(engine.log.last_lsn))[0]
        ev = decode_event(last.payload).items_evicted
        assert list(ev.item_ids) == [1]
        assert ev.reason == events_pb2.EVICTION_REASON_MAX_TIMES_SAMPLED
        assert engine.describe_table("t").rate_limiter.samples == 2
        state = snapshot(engine)
    with Engine(path, CONFIG) as engine:
        assert snapshot(engine) == state
