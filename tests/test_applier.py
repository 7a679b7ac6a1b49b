"""The applier (`replaybuf.applier`) through real engines: a catch-up applies many events in
one view transaction, and must give what applying them one by one (live) gives."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _engine_helpers import SIG, batch, snapshot
from replaybuf.engine import Engine, EngineConfig
from replaybuf.errors import DataLossError
from replaybuf.events import encode_event, make_event
from replaybuf.file_log import FileLog
from replaybuf.table_config import SelectorConfig, TableConfig
from replaybuf.tensors import to_batch
from replaybuf.v1 import events_pb2, table_pb2

CONFIG = EngineConfig.for_tests()


def _pending(engine: Engine, table: str) -> list[tuple[int, str, str]]:
    return [(r.item_id, r.reason, r.author) for r in engine.list_pending_reviews(table)]


def test_rebuild_keeps_review_flags_of_items_appended_in_the_same_transaction(
        tmp_path: Path) -> None:
    path = tmp_path / "db"
    with Engine(path, CONFIG) as engine:
        engine.create_table(TableConfig("t", SIG, 8))
        engine.append("t", batch(np.arange(3)))
        engine.flag_for_review("t", [1, 3], reason="odd", author="me")
        live, state = _pending(engine, "t"), snapshot(engine)
    assert [i for i, _, _ in live] == [1, 3]
    shutil.rmtree(path / "view")
    # The whole log in one view transaction: the flags see the items appended before them.
    with Engine(path, replace(CONFIG, catch_up_events=1000)) as rebuilt:
        assert _pending(rebuilt, "t") == live
        assert snapshot(rebuilt) == state


# -- catch-up in one transaction equals one transaction per event ------------------------------

TABLES = [
    TableConfig("a", SIG, 40, sampler=SelectorConfig("prioritized", alpha=0.7)),
    TableConfig("b", SIG, 30, sampler=SelectorConfig("uniform"),
                remover=SelectorConfig("lowest_priority"), max_times_sampled=2),
]
#: Databases written the same whatever the transactions (``draws`` and the folded counters
#: depend on them; `snapshot` compares what they hold).
_SAME_DBS = ("tables", "table_stats", "items", "item_meta", "evicted_meta", "item_strings",
             "by_request", "by_episode", "by_model_version", "jobs", "item_events",
             "pending_reviews")

_append_st = st.fixed_dictionaries({
    "n": st.integers(1, 6),
    # a field's tensor in another dtype than the field's (cast on apply) or as is
    "tag_dtype": st.sampled_from(["<i8", "<i8", "<i4"]),
    "obs_dtype": st.sampled_from(["<f4", "<f4", "<f8"]),
    # lineage columns of 0, 1 (broadcast) or n entries
    "episode": st.sampled_from([0, 1, "n"]),
    "model": st.sampled_from([0, 1, "n"]),
    "step": st.sampled_from([0, "n"]),
    "request": st.sampled_from([0, 1, "n", "some"]),
    "source": st.sampled_from([0, 1, "n"]),
    "seed": st.integers(0, 99),
})
# (kind, table, argument, times in a row): runs of one kind and table are what a catch-up
# applies in one step.
_op_st = st.one_of(
    st.tuples(st.just("append"), st.sampled_from("ab"), _append_st, st.integers(1, 4)),
    st.tuples(st.sampled_from(["sample", "evict", "update", "correct", "flag"]),
              st.sampled_from("ab"), st.lists(st.integers(1, 80), min_size=1, max_size=6),
              st.integers(1, 3)),
)


def _column(spec: object, n: int, values: list) -> list:
    return [] if spec == 0 else values[:1] if spec == 1 else values


def _log_events(ops: list[tuple]) -> list[events_pb2.Event]:
    """Events of `ops` as another tool could have logged them: appends with lineage of 0, 1
    or n entries and tensors of other dtypes, draws of absent items, and so on; no append
    overfills its table."""

    events = [make_event(table_created=events_pb2.TableCreated(config=c.to_proto()))
              for c in TABLES]
    present: dict[str, list[int]] = {"a": [], "b": []}
    capacity = {c.name: c.capacity for c in TABLES}
    next_id = 1
    for kind, table, arg, times in (op for op in ops for op in [op] * op[3]):
        ts = 1_700_000_000_000 + len(events)
        if kind == "append":
            n = arg["n"]
            if len(present[table]) + n > capacity[table]:
                continue
            rng = np.random.default_rng([arg["seed"], next_id])
            ids = list(range(next_id, next_id + n))
            next_id += n
            present[table] += ids
            cols = batch(ids)
            cols["tag"] = cols["tag"].astype(arg["tag_dtype"])
            cols["obs"] = cols["obs"].astype(arg["obs_dtype"])
            requests = [f"q{i}" if arg["request"] != "some" or i % 2 else "" for i in ids]
            lin = table_pb2.Lineage(
                episode_id=_column(arg["episode"], n, [arg["seed"] + i // 3 for i in ids]),
                step=_column(arg["step"], n, list(range(n))),
                model_version=_column(arg["model"], n, [arg["seed"] - 50] * n),
                timestamp_ms=[ts] * n,
                request_id=_column(arg["request"] if arg["request"] != "some" else "n", n,
                                   requests),
                source=_column(arg["source"], n, [f"s{arg['seed'] % 3}"] * n))
            events.append(make_event(timestamp_ms=ts, items_appended=events_pb2.ItemsAppended(
                table=table, item_ids=ids, priorities=rng.uniform(0.1, 3, n).round(2).tolist(),
                lineage=lin, data=to_batch(cols))))
            continue
        ids = arg
        if kind == "sample":
            body = events_pb2.ItemsSampled(table=table, item_ids=ids, seed=1)
        elif kind == "evict":
            present[table] = [i for i in present[table] if i not in ids]
            body = events_pb2.ItemsEvicted(table=table, item_ids=ids,
                                           reason=events_pb2.EVICTION_REASON_MANUAL)
        elif kind == "update":
            body = events_pb2.PrioritiesUpdated(table=table, item_ids=ids,
                                                priorities=[0.5 + i / 10 for i in ids])
        elif kind == "correct":
            body = events_pb2.RewardsCorrected(table=table, item_ids=ids,
                                               rewards=[i / 4 for i in ids])
        else:
            body = events_pb2.ItemsFlaggedForReview(table=table, item_ids=ids, reason="r")
        events.append(make_event(timestamp_ms=ts, **{_BODY[kind]: body}))
    return events


_BODY = {"sample": "items_sampled", "evict": "items_evicted", "update": "priorities_updated",
         "correct": "rewards_corrected", "flag": "items_flagged_for_review"}


def _drawn(engine: Engine, table: str) -> tuple:
    """A seeded draw of about 4 times the table's size, with the lineage the RAM holds."""

    size = engine.describe_table(table).size
    s = engine.sample(table, 4 * size, seed=size, beta=0.5, timeout=0)
    lin = s.info.lineage
    return (s.info.item_ids.tolist(), s.info.weights.tolist(), s.info.times_sampled.tolist(),
            {k: v.tolist() for k, v in s.data.items()}, lin.request_id, lin.source,
            lin.episode_id.tolist(), lin.step.tolist(), lin.model_version.tolist(),
            lin.timestamp_ms.tolist())


def _raw(engine: Engine) -> dict[str, list[tuple[bytes, bytes]]]:
    with engine.view.reading() as (txn, dbs):
        return {name: list(txn.cursor(db=dbs[name])) for name in _SAME_DBS}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op_st, max_size=40), frames=st.integers(1, 4))
def test_catch_up_in_one_transaction_equals_one_transaction_per_event(ops, frames):
    events = _log_events(ops)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / "each", Path(tmp) / "joined"]
        with FileLog(paths[0] / "log") as log:
            for i in range(0, len(events), frames):
                log.append([encode_event(e) for e in events[i:i + frames]])
        shutil.copytree(paths[0], paths[1], ignore=shutil.ignore_patterns("LOCK"))
        each = Engine(paths[0], replace(CONFIG, catch_up_events=1))
        joined = Engine(paths[1], replace(CONFIG, catch_up_events=10_000))
        with each, joined:
            assert snapshot(joined) == snapshot(each)
            assert _raw(joined) == _raw(each)
            for name in "ab":
                assert _pending(joined, name) == _pending(each, name)
                if each.describe_table(name).size:
                    assert _drawn(joined, name) == _drawn(each, name)
            each.flush_samples()
            joined.flush_samples()
            assert snapshot(joined) == snapshot(each)  # after the draws


def test_tables_hold_the_appended_fields_whatever_their_alignment(tmp_path: Path) -> None:
    # The mirror copies the applier's packed rows into the table's aligned ones byte for
    # byte where fields lie back to back in both, and field by field where they do not.
    sig = {"flag": np.bool_, "pos": (np.float64, (2,)), "rgb": (np.uint8, (3,)),
           "tag": np.int32, "reward": np.float32}
    rng = np.random.default_rng(5)
    data = {"flag": rng.random(7) > 0.5, "pos": rng.random((7, 2)),
            "rgb": rng.integers(0, 256, (7, 3), dtype=np.uint8),
            "tag": rng.integers(-9, 9, 7, dtype=np.int32),
            "reward": rng.random(7, dtype=np.float32)}
    path = tmp_path / "db"

    def fields(engine: Engine) -> dict[str, list]:
        t = engine.table("t")
        items = [t.item(i) for i in range(1, 8)]
        return {name: [np.asarray(it[name]).tolist() for it in items] for name in sig}

    want = {name: col.tolist() for name, col in data.items()}
    with Engine(path, CONFIG) as engine:
        engine.create_table(TableConfig("t", sig, 16))
        for part in (slice(0, 3), slice(3, 4), slice(4, 7)):
            engine.append("t", {k: v[part] for k, v in data.items()})
        assert fields(engine) == want
    shutil.rmtree(path / "view")
    with Engine(path, replace(CONFIG, catch_up_events=1000)) as rebuilt:  # one run of three
        assert fields(rebuilt) == want


@pytest.mark.parametrize("per_txn", [1, 1000])
def test_an_undecodable_record_stops_the_catch_up_with_data_loss(tmp_path: Path,
                                                                  per_txn: int) -> None:
    # One transaction per record, or the whole log in one: the records before it are applied
    # or not, the open fails either way and names the record.
    path = tmp_path / "db"
    with Engine(path, CONFIG) as engine:
        engine.create_table(TableConfig("t", SIG, 8))
        engine.append("t", batch(np.arange(3)))
    with FileLog(path / "log") as log:
        log.append([b"\xff\xff not an event"])
    shutil.rmtree(path / "view")
    with pytest.raises(DataLossError, match="LSN 3"):
        Engine(path, replace(CONFIG, catch_up_events=per_txn))
