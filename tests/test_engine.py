from __future__ import annotations

import threading

import numpy as np
import pytest

from _engine_helpers import SIG, batch
from replaybuf.engine import Engine, EngineConfig
from replaybuf.errors import (
    AlreadyExistsError, ClosedError, EmptyBatchError, FailedPreconditionError,
    InvalidArgumentError, InvalidPriorityError, RateLimitTimeoutError, SignatureMismatchError,
    TableNotFoundError,
)
from replaybuf.events import decode_event, event_kind
from replaybuf.file_log import FileLogConfig
from replaybuf.table import SlotAllocator
from replaybuf.table_config import SelectorConfig, TableConfig
from replaybuf.v1 import events_pb2


def events(engine, start=1):
    return [(r.lsn, decode_event(r.payload)) for r in engine.log.read(start)]


@pytest.fixture
def engine(tmp_path):
    with Engine(tmp_path / "db", EngineConfig.for_tests(seed=1)) as e:
        yield e


def make(engine, name="t", capacity=100, **kw):
    engine.create_table(TableConfig(name, SIG, capacity, **kw))
    return name


# -- tables ----------------------------------------------------------------------------------


def test_create_list_and_describe_tables(engine):
    info = engine.create_table(TableConfig("b", SIG, 10))
    assert (info.name, info.size, info.capacity, info.max_priority) == ("b", 0, 10, 0.0)
    assert info.created_lsn == 1 and info.applied_lsn == 1
    engine.create_table(TableConfig("a", SIG, 5, sampler=SelectorConfig("uniform")))
    assert [t.name for t in engine.list_tables()] == ["a", "b"]
    assert engine.describe_table("a").config.sampler.kind == "uniform"
    assert event_kind(events(engine)[0][1]) == "table_created"


def test_creating_an_existing_table_needs_exist_ok_and_the_same_config(engine):
    cfg = TableConfig("t", SIG, 10)
    engine.create_table(cfg)
    with pytest.raises(AlreadyExistsError, match="pass exist_ok=True"):
        engine.create_table(cfg)
    assert engine.create_table(cfg, exist_ok=True).name == "t"
    with pytest.raises(AlreadyExistsError, match="with another config"):
        engine.create_table(TableConfig("t", SIG, 11), exist_ok=True)
    assert engine.log.last_lsn == 1


def test_unknown_table_is_not_found(engine):
    with pytest.raises(TableNotFoundError, match="table 'nope' does not exist"):
        engine.describe_table("nope")
    with pytest.raises(TableNotFoundError):
        engine.sample("nope", 1)


# -- append and sample -----------------------------------------------------------------------


def test_sampled_data_and_lineage_match_what_was_appended(engine):
    make(engine, sampler=SelectorConfig("uniform"))
    ack = engine.append(
        "t", batch(range(10, 16)),
        lineage={"episode_id": 4, "step": np.arange(6),
                 "request_id": [f"req-{i}" for i in range(6)], "model_version": 7,
                 "timestamp_ms": 1234, "source": "actor-1"},
    )
    assert ack.item_ids.tolist() == [1, 2, 3, 4, 5, 6] and ack.first_lsn == ack.last_lsn == 2
    s = engine.sample("t", 64, seed=3)
    pos = (s.info.item_ids - 1).astype(int)
    tags = np.arange(10, 16)[pos]
    assert (s.data["tag"] == tags).all() and (s.data["obs"][:, 2] == tags).all()
    assert (s.data["reward"] == (tags * 0.5).astype(np.float32)).all()
    lin = s.info.lineage
    assert (lin.episode_id == 4).all() and (lin.step == pos).all()
    assert list(lin.request_id) == [f"req-{p}" for p in pos]
    assert (lin.model_version == 7).all() and (lin.timestamp_ms == 1234).all()
    assert set(lin.source) == {"actor-1"}
    assert s.info.seed == 3 and s.info.table_size == 6 and s.info.lsn == 2
    assert (s.info.probabilities == pytest.approx(1 / 6))
    assert s.data["obs"].shape == (64, 3) and s.data["obs"].dtype == np.float32


def test_sample_returns_requested_fields_only(engine):
    make(engine)
    engine.append("t", batch([1, 2]))
    assert set(engine.sample("t", 2, fields=["tag"]).data) == {"tag"}
    with pytest.raises(InvalidArgumentError, match="not in table 't'"):
        engine.sample("t", 2, fields=["nope"])


def test_missing_timestamp_becomes_the_append_time(engine):
    make(engine)
    engine.append("t", batch([1]))
    assert engine.sample("t", 1).info.lineage.timestamp_ms[0] > 1_600_000_000_000


def test_default_priority_is_the_max_priority_present(engine):
    make(engine)
    engine.append("t", batch([1]))
    assert engine.table("t").item(1)["priority"] == 1.0  # empty table: 1.0
    engine.append("t", batch([2, 3]), priorities=[0.5, 3.0])
    engine.append("t", batch([4]))
    assert engine.table("t").item(4)["priority"] == 3.0
    assert engine.describe_table("t").max_priority == 3.0
    engine.evict("t", [3, 4])
    engine.append("t", batch([5]))
    assert engine.table("t").item(5)["priority"] == 1.0


def test_items_get_increasing_ids_across_tables(engine):
    make(engine, "a")
    make(engine, "b")
    assert engine.append("a", batch([1, 2])).item_ids.tolist() == [1, 2]
    assert engine.append("b", batch([1])).item_ids.tolist() == [3]
    assert engine.append("a", batch([1])).item_ids.tolist() == [4]


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda kw: kw.update(table="nope"), TableNotFoundError, "does not exist"),
        (lambda kw: kw["data"].pop("tag"), SignatureMismatchError, r"missing field\(s\) \['tag'\]"),
        (lambda kw: kw["data"].update(extra=np.zeros(2)), SignatureMismatchError, "unknown field"),
        (lambda kw: kw["data"].update(tag=np.zeros(2, np.int32)), SignatureMismatchError,
         "dtype int32, expected int64"),
        (lambda kw: kw["data"].update(obs=np.zeros((2, 4), np.float32)), SignatureMismatchError,
         r"shape \(2, 4\), expected"),
        (lambda kw: kw["data"].update(obs=np.zeros((3, 3), np.float32)), SignatureMismatchError,
         "same leading dimension"),
        (lambda kw: kw.update(data=batch([])), EmptyBatchError, "holds no items"),
        (lambda kw: kw.update(priorities=[1.0, float("nan")]), InvalidPriorityError,
         r"priorities\[1\] is NaN"),
        (lambda kw: kw.update(priorities=[float("inf"), 1.0]), InvalidPriorityError, "infinite"),
        (lambda kw: kw.update(priorities=[1.0, -0.5]), InvalidPriorityError, "negative"),
        (lambda kw: kw.update(priorities=[1.0]), InvalidArgumentError, "must be 2 real numbers"),
        (lambda kw: kw.update(lineage={"step": [1, 2, 3]}), InvalidArgumentError,
         "lineage step has 3 entries"),
        (lambda kw: kw.update(lineage={"nope": 1}), InvalidArgumentError, "unknown column"),
        (lambda kw: kw.update(data=batch(range(11))), InvalidArgumentError, "exceeds the capacity"),
        (lambda kw: kw.update(data=[1, 2]), InvalidArgumentError, "pass a mapping"),
    ],
)
def test_bad_appends_raise_a_specific_error_and_log_nothing(engine, mutate, error, match):
    make(engine, capacity=10)
    engine.append("t", batch([0]))
    before = engine.log.last_lsn
    kw = {"table": "t", "data": batch([1, 2])}
    mutate(kw)
    with pytest.raises(error, match=match):
        engine.append(kw.pop("table"), kw.pop("data"), **kw)
    assert engine.log.last_lsn == before and engine.applied_lsn == before
    assert engine.describe_table("t").size == 1


def test_producer_retry_returns_the_original_ids_and_writes_nothing(engine):
    make(engine, capacity=3)
    pid = b"p" * 16
    first = engine.append("t", batch([1, 2]), producer_id=pid, producer_seq=1)
    again = engine.append("t", batch([1, 2]), producer_id=pid, producer_seq=1)
    assert again.duplicate and again.item_ids.tolist() == first.item_ids.tolist()
    assert (again.first_lsn, again.last_lsn) == (first.first_lsn, first.last_lsn)
    assert engine.describe_table("t").size == 2
    assert engine.append("t", batch([3])).item_ids.tolist() == [3]
    # the table is full now, so an append would evict: a retry must still be recognized
    last = engine.log.last_lsn
    again = engine.append("t", batch([1, 2]), producer_id=pid, producer_seq=1)
    assert again.duplicate and again.item_ids.tolist() == [1, 2]
    assert engine.log.last_lsn == last and engine.table("t").snapshot_ids().tolist() == [1, 2, 3]
    fresh = engine.append("t", batch([4, 5]), producer_id=pid, producer_seq=2)
    assert fresh.evicted_ids.tolist() == [1, 2] and not fresh.duplicate


# -- capacity --------------------------------------------------------------------------------


def test_full_table_evicts_oldest_with_a_capacity_event_in_the_same_frame(engine):
    make(engine, capacity=4)
    engine.append("t", batch([1, 2, 3]))
    ack = engine.append("t", batch([4, 5, 6]))
    assert ack.evicted_ids.tolist() == [1, 2] and ack.last_lsn == ack.first_lsn + 1
    evs = dict(events(engine, ack.first_lsn))
    ev = evs[ack.first_lsn].items_evicted
    assert ev.reason == events_pb2.EVICTION_REASON_CAPACITY and list(ev.item_ids) == [1, 2]
    assert event_kind(evs[ack.last_lsn]) == "items_appended"
    assert engine.table("t").snapshot_ids().tolist() == [3, 4, 5, 6]
    assert engine.describe_table("t").rate_limiter.deletes == 2


def test_lowest_priority_remover_evicts_the_least_useful(engine):
    make(engine, capacity=4, remover=SelectorConfig("lowest_priority"))
    engine.append("t", batch([1, 2, 3, 4]), priorities=[5.0, 0.1, 3.0, 0.2])
    ack = engine.append("t", batch([5, 6]), priorities=[1.0, 1.0])
    assert sorted(ack.evicted_ids.tolist()) == [2, 4]
    assert engine.table("t").snapshot_ids().tolist() == [1, 3, 5, 6]


# -- changes to existing items ---------------------------------------------------------------


def test_update_priorities_changes_sampling_and_skips_missing_ids(engine):
    make(engine)
    engine.append("t", batch([1, 2, 3]))
    res = engine.update_priorities("t", [1, 2, 3, 42], [0.0, 0.0, 2.0, 1.0], source="learner")
    assert res.missing_ids.tolist() == [42] and res.lsn == engine.log.last_lsn
    s = engine.sample("t", 32, seed=5)
    assert set(s.info.item_ids.tolist()) == {3} and (s.info.priorities == 2.0).all()
    assert engine.describe_table("t").max_priority == 2.0
    ev = events(engine, res.lsn)[0][1].priorities_updated
    assert list(ev.item_ids) == [1, 2, 3] and ev.source == "learner"
    assert engine.update_priorities("t", [42], [1.0]).lsn == 0


def test_update_priorities_rejects_bad_values_without_logging(engine):
    make(engine)
    engine.append("t", batch([1]))
    before = engine.log.last_lsn
    with pytest.raises(InvalidPriorityError, match="NaN"):
        engine.update_priorities("t", [1], [float("nan")])
    with pytest.raises(InvalidArgumentError, match="must be 2 real numbers"):
        engine.update_priorities("t", [1, 1], [1.0])
    assert engine.log.last_lsn == before


def test_corrected_rewards_are_sampled_and_logged_with_previous_values(engine):
    make(engine, sampler=SelectorConfig("uniform"))
    engine.append("t", batch([1, 2], reward=[0.5, 0.25]))
    res = engine.correct_rewards("t", [2, 9], [7.5, 1.0], source="model", reason="rm-v2")
    assert res.missing_ids.tolist() == [9]
    ev = events(engine, res.lsn)[0][1].rewards_corrected
    assert list(ev.previous_rewards) == [0.25] and list(ev.rewards) == [7.5]
    assert ev.source == events_pb2.FEEDBACK_SOURCE_MODEL and ev.reason == "rm-v2"
    s = engine.sample("t", 32, seed=0)
    assert (s.data["reward"][s.info.item_ids == 2] == 7.5).all()
    assert (s.data["reward"][s.info.item_ids == 1] == 0.5).all()
    with pytest.raises(InvalidArgumentError, match="source is 'crowd'"):
        engine.correct_rewards("t", [1], [1.0], source="crowd")


def test_correcting_a_table_without_reward_field_fails(engine):
    engine.create_table(TableConfig("x", {"obs": np.float32}, 4))
    engine.append("x", {"obs": np.zeros(1, np.float32)})
    with pytest.raises(FailedPreconditionError, match="has no reward field"):
        engine.correct_rewards("x", [1], [1.0])


def test_evict_skips_missing_ids_and_is_idempotent(engine):
    make(engine)
    engine.append("t", batch([1, 2, 3]))
    res = engine.evict("t", [2, 3, 77], reason="age", job_id="job-1")
    assert (res.evicted, res.missing_ids.tolist()) == (2, [77])
    ev = events(engine, res.lsn)[0][1].items_evicted
    assert ev.reason == events_pb2.EVICTION_REASON_AGE and ev.job_id == "job-1"
    again = engine.evict("t", [2, 3, 77], reason="age", job_id="job-1")
    assert (again.lsn, again.evicted) == (0, 0) and engine.log.last_lsn == res.lsn
    assert engine.table("t").snapshot_ids().tolist() == [1]
    recs = engine.view.records([2, 3])
    assert all(r["evicted_lsn"] == res.lsn for r in recs.values())


def test_max_times_sampled_evicts_after_the_kth_sample(engine):
    make(engine, max_times_sampled=2)
    engine.append("t", batch([1]))
    assert engine.sample("t", 1).info.times_sampled.tolist() == [1]
    assert engine.sample("t", 1).info.times_sampled.tolist() == [2]
    assert engine.describe_table("t").size == 0
    with pytest.raises(RateLimitTimeoutError):
        engine.sample("t", 1, timeout=0)
    engine.flush_samples()
    kinds = [(event_kind(e), getattr(e, event_kind(e))) for _, e in events(engine, 3)]
    assert [k for k, _ in kinds] == ["items_sampled", "items_sampled", "items_evicted"]
    evicted = [b for k, b in kinds if k == "items_evicted"]
    assert len(evicted) == 1 and list(evicted[0].item_ids) == [1]
    assert evicted[0].reason == events_pb2.EVICTION_REASON_MAX_TIMES_SAMPLED
    assert engine.table("t").snapshot_ids().tolist() == []
    assert engine.view.records([1])[1]["times_sampled"] == 2


def test_sampling_is_deterministic_for_a_seed_at_an_lsn(engine):
    make(engine)
    engine.append("t", batch(range(50)), priorities=np.linspace(0.1, 5, 50))
    a = engine.sample("t", 16, seed=11, beta=0.5)
    b = engine.sample("t", 16, seed=11, beta=0.5)
    assert a.info.lsn == b.info.lsn
    assert a.info.item_ids.tolist() == b.info.item_ids.tolist()
    assert a.info.weights.tolist() == b.info.weights.tolist()
    assert a.info.probabilities.tolist() == b.info.probabilities.tolist()
    assert engine.sample("t", 16, seed=12).info.item_ids.tolist() != a.info.item_ids.tolist()


def test_sample_argument_checks(engine):
    make(engine)
    engine.append("t", batch([1]))
    for kwargs, match in [({"batch_size": 0}, "batch_size is 0"), ({"beta": 1.5}, "beta is 1.5"),
                          ({"seed": -1}, "seed is -1")]:
        args = {"batch_size": 1, **kwargs}
        with pytest.raises(InvalidArgumentError, match=match):
            engine.sample("t", args.pop("batch_size"), **args)


def test_close_is_idempotent_and_later_calls_fail(tmp_path):
    e = Engine(tmp_path, EngineConfig.for_tests())
    make(e)
    e.close()
    e.close()
    with pytest.raises(ClosedError):
        e.append("t", batch([1]))
    with pytest.raises(ClosedError):
        e.sample("t", 1)


def test_concurrent_writer_and_samplers_see_consistent_items(engine):
    make(engine, capacity=64, sampler=SelectorConfig("prioritized", alpha=0.7))
    tag_of: dict[int, int] = {}
    errors: list[BaseException] = []
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    done = threading.Event()
    engine.append("t", batch([0]))
    tag_of[1] = 0

    def writer():
        try:
            for i in range(1, 150):
                tags = np.arange(i * 4, i * 4 + 4)
                ack = engine.append("t", batch(tags), priorities=np.full(4, 0.5 + i % 3))
                tag_of.update(zip(ack.item_ids.tolist(), tags.tolist()))
                if i % 10 == 0:
                    engine.update_priorities("t", ack.item_ids[:2], [2.0, 3.0])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def sampler(seed):
        try:
            while not done.is_set():
                s = engine.sample("t", 8, seed=seed)
                seed += 1
                seen.append((s.info.item_ids, s.data["tag"]))
                assert (s.data["obs"][:, 0] == s.data["tag"]).all()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=sampler, args=(k * 1000,)) for k in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert seen
    for ids, tags in seen:
        assert [tag_of[i] for i in ids.tolist()] == tags.tolist()
    engine.flush_samples()
    info = engine.describe_table("t")
    assert info.size == 64 and info.rate_limiter.samples == 8 * len(seen)


def test_seeds_are_reported_and_reproducible_from_the_engine_seed(tmp_path):
    picked = []
    for run in range(2):
        with Engine(tmp_path / f"e{run}", EngineConfig.for_tests(seed=42)) as e:
            make(e)
            e.append("t", batch(range(20)))
            picked.append([e.sample("t", 4).info.seed for _ in range(3)])
    assert picked[0] == picked[1] and len(set(picked[0])) == 3


def test_fifo_and_lifo_samplers_return_oldest_and_newest(engine):
    make(engine, "old", sampler=SelectorConfig("fifo"))
    make(engine, "new", sampler=SelectorConfig("lifo"))
    for name in ("old", "new"):
        engine.append(name, batch([1, 2, 3]))
        engine.append(name, batch([4, 5]))
    assert engine.sample("old", 2).data["tag"].tolist() == [1, 2]
    assert engine.sample("new", 2).data["tag"].tolist() == [5, 4]


def test_lineage_indexes_find_items_by_request_episode_and_model_version(engine):
    make(engine, capacity=3)
    engine.append("t", batch([1, 2]), lineage={"request_id": ["a", "b"], "episode_id": 9,
                                               "model_version": -4})
    engine.append("t", batch([3, 4]), lineage={"request_id": "c", "episode_id": 10,
                                               "model_version": 5})
    idx = engine.table("t").index
    view = engine.view
    assert view.find_items(idx, request_id="b") == ([2], False)
    assert view.find_items(idx, request_id="c") == ([3, 4], False)
    # item 1 was evicted (capacity 3) and is still found
    assert view.find_items(idx, episode_id=9) == ([1, 2], False)
    assert view.find_items(idx, model_version=-4) == ([1, 2], False)
    assert view.find_items(idx, model_version=5, limit=1) == ([3], True)
    assert view.records([1])[1]["flags"] & 1  # FLAG_EVICTED


def test_view_never_runs_ahead_of_the_durable_log_under_group_commit(tmp_path):
    config = EngineConfig(log=FileLogConfig(fsync="group"), map_size=2**30)
    with Engine(tmp_path, config) as e:
        make(e)
        for i in range(5):
            ack = e.append("t", batch([i]))
            assert ack.durable
            info = e.describe_table("t")
            # the recorder may log the previous draw right after the append
            assert ack.last_lsn <= info.applied_lsn <= info.durable_lsn
            e.sample("t", 1)
        e.flush_samples()
        assert e.applied_lsn <= e.durable_lsn


def test_slot_allocator_hands_out_the_lowest_free_slots_and_rolls_back():
    a = SlotAllocator(10)
    assert a.alloc(4).tolist() == [0, 1, 2, 3]
    a.free(np.array([1, 2]))
    a.begin()
    assert a.alloc(3).tolist() == [1, 2, 4]
    a.free(np.array([0]))
    a.rollback()
    assert a.alloc(3).tolist() == [1, 2, 4] and a.count == 5
    b = SlotAllocator(10)
    b.load(np.array([0, 1, 2, 3, 4]))
    b.free(np.array([3]))
    assert b.alloc(2).tolist() == [3, 5]


def test_an_encoded_batch_appends_like_arrays_and_is_validated_before_logging(engine):
    from replaybuf.errors import SignatureMismatchError
    from replaybuf.tensors import to_batch

    engine.create_table(TableConfig("enc", SIG, 16))
    engine.append("enc", batch([1, 2]))
    ack = engine.append("enc", to_batch(batch([3, 4])))  # as the server passes a request's
    assert ack.item_ids.tolist() == [3, 4]
    for i in range(1, 5):  # stored and mirrored the same way (the tag is the item's)
        item = engine.table("enc").item(i)
        assert item["tag"] == i and (item["obs"] == i).all()
    end = engine.log.durable_lsn
    bad = batch([5])
    bad["tag"] = bad["tag"].astype(np.int32)
    with pytest.raises(SignatureMismatchError, match="tag"):
        engine.append("enc", to_batch(bad))
    assert engine.log.durable_lsn == end  # nothing logged
