"""Lineage, reverse queries, the review flow, diffs and rolling metrics on the in-process engine
(issue 6, part B), with a real file log and LMDB view in tmp dirs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from _engine_helpers import SIG, batch

from replaybuf.cli import main as cli_main
from replaybuf.engine import Engine, EngineConfig
from replaybuf.errors import (
    FailedPreconditionError, InvalidArgumentError, ItemNotFoundError, TableNotFoundError,
)
from replaybuf.rolling_metrics import RollingMetrics
from replaybuf.table_config import SelectorConfig, TableConfig
from replaybuf.tensors import from_batch
from replaybuf.v1 import events_pb2

ALL_KINDS = ["items_appended", "priorities_updated", "rewards_corrected",
             "items_flagged_for_review", "label_applied", "rewards_corrected",
             "priorities_updated", "items_evicted"]


def _open(path, fold_draws: int = 1 << 16) -> Engine:
    return Engine(path, EngineConfig.for_tests(fold_draws=fold_draws))


def _config(name: str = "t", capacity: int = 100) -> TableConfig:
    return TableConfig(name, SIG, capacity=capacity,
                       sampler=SelectorConfig("prioritized", alpha=0.5))


def _script(e: Engine) -> dict[str, int]:
    """Every event kind for item 2: append, priority, correction, flag, relabel with priority
    (label + correction + priority), then eviction; item 1 only appended; 3 rejected."""

    e.create_table(_config())
    lsns = {}
    ack = e.append("t", batch([1, 2, 3]), lineage={
        "episode_id": [7, 7, 8], "step": [0, 1, 0], "request_id": ["r1", "r2", "r3"],
        "model_version": [4, 5, 5], "source": "actor-0"})
    lsns["append"] = ack.last_lsn
    lsns["priority"] = e.update_priorities("t", [2, 3], [2.0, 3.0], source="learner").lsn
    lsns["correct"] = e.correct_rewards("t", [2], [9.0], source="model", reason="rm-v2",
                                        author="rm").lsn
    lsns["flag"] = e.flag_for_review("t", [2, 3], reason="odd", author="bob").lsn
    lsns["label"] = e.apply_label("t", 2, "relabel", reward=-1.0, priority=0.25, author="al",
                                  note="wrong sign")[0]
    lsns["reject"] = e.apply_label("t", 3, "reject", author="al")[1]
    lsns["evict"] = e.evict("t", [2], reason="age", job_id="job-1", detail="too old").lsn
    return lsns


def _kinds(h) -> list[str]:
    return [ev.WhichOneof("body") for _, ev in h.entries]


def _check_history(e: Engine, lsns: dict[str, int]) -> None:
    h = e.get_lineage(2)
    assert h.table == "t" and not h.present
    assert _kinds(h) == ALL_KINDS
    got = [lsn for lsn, _ in h.entries]
    assert got == sorted(got) and got[0] == lsns["append"] and got[-1] == lsns["evict"]
    evs = [ev for _, ev in h.entries]
    app = evs[0].items_appended
    assert list(app.item_ids) == [2] and app.lineage.request_id[:] == ["r2"]
    assert app.lineage.model_version[:] == [5] and app.lineage.episode_id[:] == [7]
    assert app.lineage.step[:] == [1] and len(app.data.columns) == 3
    row = from_batch(app.data)
    assert row["tag"].tolist() == [2] and row["obs"].tolist() == [[2.0, 2.0, 2.0]]
    assert evs[1].priorities_updated.priorities[:] == [2.0]
    assert evs[1].priorities_updated.item_ids[:] == [2]  # reduced: item 3's row is gone
    corr = evs[2].rewards_corrected
    assert corr.rewards[:] == [9.0] and corr.previous_rewards[:] == [1.0]
    assert corr.source == events_pb2.FEEDBACK_SOURCE_MODEL and corr.reason == "rm-v2"
    assert evs[3].items_flagged_for_review.item_ids[:] == [2]
    assert evs[4].label_applied.verdict == "relabel" and evs[4].label_applied.reward == -1.0
    relabel = evs[5].rewards_corrected
    assert relabel.source == events_pb2.FEEDBACK_SOURCE_HUMAN
    assert relabel.previous_rewards[:] == [9.0] and relabel.rewards[:] == [-1.0]
    assert evs[6].priorities_updated.priorities[:] == [0.25]
    ev = evs[7].items_evicted
    assert ev.reason == events_pb2.EVICTION_REASON_AGE and ev.job_id == "job-1"
    h3 = e.get_lineage(3)
    assert _kinds(h3) == ["items_appended", "priorities_updated", "items_flagged_for_review",
                          "label_applied", "items_evicted"]
    assert h3.entries[-1][1].items_evicted.reason == events_pb2.EVICTION_REASON_REVIEW_REJECTED
    assert _kinds(e.get_lineage(1)) == ["items_appended"] and e.get_lineage(1).present


@pytest.mark.parametrize("fold", [1, 1 << 16], ids=["fold-every-write", "fold-rarely"])
def test_lineage_lists_every_event_kind_in_lsn_order_after_restart_and_rebuild(tmp_path, fold):
    # Priority updates reach the lineage index when the view folds (hot_meta); before, they
    # come from the pending ones: the history is the same either way.
    with _open(tmp_path, fold) as e:
        lsns = _script(e)
        e.sample("t", 2, seed=1)  # draws are not lineage entries
        e.flush_samples()
        _check_history(e, lsns)
        with pytest.raises(ItemNotFoundError):
            e.get_lineage(99)
    with _open(tmp_path, fold) as e:  # restart: caught up from the view
        assert e.rebuild_reason is None
        _check_history(e, lsns)
    shutil.rmtree(tmp_path / "view")
    with _open(tmp_path, fold) as e:  # full rebuild from the log
        assert e.rebuild_reason is not None
        _check_history(e, lsns)


def test_a_view_of_the_previous_format_is_rebuilt_with_the_lineage_index(tmp_path):
    import lmdb
    import struct

    with _open(tmp_path) as e:
        lsns = _script(e)
    env = lmdb.open(str(tmp_path / "view"), max_dbs=20)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:  # pretend it was written by format 1
        txn.put(b"format", struct.pack(">I", 1), db=meta)
        txn.drop(env.open_db(b"item_events", txn=txn), delete=False)
    env.close()
    with _open(tmp_path) as e:
        assert "format" in (e.rebuild_reason or "")
        _check_history(e, lsns)


def test_find_items_by_each_criterion_with_and_without_evicted(tmp_path):
    with _open(tmp_path) as e:
        _script(e)
        assert e.find_items("t", request_id="r2").item_ids.tolist() == []
        assert e.find_items("t", request_id="r2", include_evicted=True).item_ids.tolist() == [2]
        assert e.find_items("t", request_id="r1").item_ids.tolist() == [1]
        assert e.find_items("t", model_version=5, include_evicted=True).item_ids.tolist() == [2, 3]
        assert e.find_items("t", model_version=4).item_ids.tolist() == [1]
        assert e.find_items("t", episode_id=7).item_ids.tolist() == [1]
        got = e.find_items("t", episode_id=7, include_evicted=True, limit=1)
        assert got.item_ids.tolist() == [1] and got.truncated
        assert e.find_items("t", model_version=-3).item_ids.tolist() == []
        with pytest.raises(InvalidArgumentError):
            e.find_items("t", episode_id=7, model_version=5)
        with pytest.raises(InvalidArgumentError):
            e.find_items("t")
        with pytest.raises(TableNotFoundError):
            e.find_items("nope", episode_id=7)


def test_review_flow_lists_pending_applies_labels_and_refuses_items_not_pending(tmp_path):
    with _open(tmp_path) as e:
        e.create_table(_config())
        e.append("t", batch([1, 2, 3, 4]))
        r = e.flag_for_review("t", [3, 1, 99], reason="check", author="bob")
        assert r.missing_ids.tolist() == [99]
        e.flag_for_review("t", [2], reason="later", author="eve")
        pending = e.list_pending_reviews("t")
        assert [p.item_id for p in pending] == [1, 3, 2]  # oldest flag first, then by id
        assert pending[1].reason == "check" and pending[1].author == "bob"
        assert pending[1].reward == pytest.approx(1.5) and pending[1].priority == 1.0
        assert [p.item_id for p in e.list_pending_reviews("t", limit=1)] == [1]
        first, last = e.apply_label("t", 1, "accept", priority=5.0, author="al")
        assert last == first + 1 and e.table("t").item(1)["priority"] == 5.0
        e.apply_label("t", 2, "relabel", reward=-2.0, author="al")
        assert e.table("t").item(2)["reward"] == -2.0
        e.apply_label("t", 3, "reject", author="al", note="garbage")
        assert e.table("t").item(3) is None and e.describe_table("t").size == 3
        assert e.list_pending_reviews("t") == []
        with pytest.raises(FailedPreconditionError, match="not pending"):
            e.apply_label("t", 1, "accept")  # labelled already
        with pytest.raises(FailedPreconditionError, match="not pending"):
            e.apply_label("t", 4, "accept")  # never flagged
        e.flag_for_review("t", [4])
        with pytest.raises(InvalidArgumentError):
            e.apply_label("t", 4, "relabel")  # no reward
        with pytest.raises(InvalidArgumentError):
            e.apply_label("t", 4, "maybe")
        e.evict("t", [4])  # an evicted item leaves the queue
        assert e.list_pending_reviews("t") == []
        lsn = e.applied_lsn
    shutil.rmtree(tmp_path / "view")
    with _open(tmp_path) as e:  # the pending set is rebuilt from the events
        assert e.applied_lsn == lsn
        e.flag_for_review("t", [1, 2])
        assert [p.item_id for p in e.list_pending_reviews("t")] == [1, 2]


def test_diff_counts_a_scripted_sequence_and_the_priority_mass(tmp_path):
    with _open(tmp_path) as e:
        e.create_table(_config(capacity=4))
        a = e.append("t", batch([1, 2, 3]), priorities=[1.0, 4.0, 9.0])
        mid = e.applied_lsn
        mass_mid = e.describe_table("t").total_priority
        e.update_priorities("t", [1, 2], [16.0, 16.0])
        e.correct_rewards("t", [1], [0.0], source="rule")
        e.correct_rewards("t", [2, 3], [0.0, 1.0], source="human")
        e.append("t", batch([4, 5]), priorities=[1.0, 1.0])  # evicts 1 (capacity, fifo)
        e.flag_for_review("t", [2, 3])
        e.apply_label("t", 3, "reject")
        d = e.diff(mid)
        assert d.from_lsn == mid and d.to_lsn == e.applied_lsn
        assert d.appended == 2 and d.priority_updates == 2
        assert d.evicted_by_reason == {"capacity": 1, "review_rejected": 1}
        assert d.corrected_by_source == {"rule": 1, "human": 2}
        assert d.flagged == 2 and d.labelled == 1
        assert d.events_by_kind["items_appended"] == 1
        assert d.priority_mass_from == pytest.approx(mass_mid) == pytest.approx(1 + 2 + 3)
        assert d.priority_mass_to == pytest.approx(e.describe_table("t").total_priority)
        assert d.priority_mass_to == pytest.approx(4 + 1 + 1)
        whole = e.diff(0)
        assert whole.appended == 5 and whole.priority_mass_from == 0.0
        assert whole.events_by_kind["table_created"] == 1
        first = e.diff(0, a.last_lsn, table="t")
        assert first.appended == 3 and first.priority_mass_to == pytest.approx(mass_mid)
        with pytest.raises(InvalidArgumentError):
            e.diff(5, 2)
        with pytest.raises(InvalidArgumentError):
            e.diff(0, e.applied_lsn + 1)
        with pytest.raises(TableNotFoundError):
            e.diff(0, table="nope")


def test_rolling_metrics_are_in_describe_table(tmp_path):
    with _open(tmp_path) as e:
        e.create_table(_config(capacity=3))
        e.append("t", batch([1, 2, 3], reward=[1.0, 2.0, 3.0]))
        e.append("t", batch([4], reward=[6.0]))
        e.correct_rewards("t", [4], [0.0])
        m = e.describe_table("t").metrics
    assert m["reward_mean_5m"] == pytest.approx(3.0)
    assert m["items_appended_5m"] == 4 and m["corrections_5m"] == 1
    assert m["correction_rate_5m"] == pytest.approx(0.25)
    assert m["appends_per_s"] > 0 and m["evicted.capacity"] == 1
    assert m["evicted.review_rejected"] == 0


def test_rolling_metrics_forget_events_older_than_the_window():
    from replaybuf.applier import Applied

    now = [1000.0]
    rm = RollingMetrics(window=60, clock=lambda: now[0])
    ev = events_pb2.Event(timestamp_ms=1_000_000)
    ev.items_appended.table = "t"
    rm.observe([Applied("items_appended", 1, 0, np.array([1, 2], np.uint64),
                        np.array([0, 1]), None, ev)], lambda _: None)
    assert rm.snapshot("t")["items_appended_5m"] == 2
    now[0] += 61
    assert rm.snapshot("t")["items_appended_5m"] == 0
    assert rm.snapshot("other")["reward_mean_5m"] == 0.0


def test_cli_prints_lineage_find_results_and_diff(tmp_path, capsys):
    import json

    with _open(tmp_path) as e:
        _script(e)
        end = e.applied_lsn
    assert cli_main(["lineage", "2", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("item 2  table 't'  evicted")
    assert len(out) == 1 + len(ALL_KINDS)
    assert "appended request='r2' model_version=5 episode=7" in out[1]
    assert "reward 1.0 -> 9.0 source=model" in out[3]
    assert "evicted reason=age job='job-1'" in out[-1]
    assert cli_main(["find", "--data-dir", str(tmp_path), "--table", "t", "--model-version",
                     "5", "--include-evicted"]) == 0
    assert capsys.readouterr().out.split() == ["2", "3"]
    assert cli_main(["diff", "--data-dir", str(tmp_path), "--from", "0", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["to_lsn"] == end and d["appended"] == 3
    assert cli_main(["diff", "--data-dir", str(tmp_path), "--from", "2", "--table", "t"]) == 0
    assert "evicted review_rejected" in capsys.readouterr().out
    assert cli_main(["lineage", "99", "--data-dir", str(tmp_path)]) == 1


def _check_append_entries(e: Engine, ids: list[int]) -> int:
    """Each item's append entry equals the one reduced from its full record; returns how many
    were built from the view (the present items)."""

    from replaybuf import lineage_index as li

    recs = e.view.records(ids)
    built = 0
    for i in ids:
        rec = recs[i]
        lsn = int(rec["append_lsn"])
        slow = li._reduce_append(next(iter(e.log.read(lsn, lsn))).payload, lsn, i, rec, e.view)
        entry = e.get_lineage(i).entries[0]
        assert entry[0] == lsn
        assert entry[1].SerializeToString() == slow.SerializeToString(), i
        with e.view.reading() as (txn, dbs):
            stored = li._read_stored(txn, dbs, i)
        if int(rec["flags"]) & 1:  # evicted: read from the log, as before
            assert stored is None
            continue
        fast = li._append_from_view(e.log, lsn, i, stored, _config(capacity=12))
        assert fast is not None and fast == slow, i
        built += 1
    return built


@pytest.mark.parametrize("fold", [1, 1 << 16], ids=["fold-every-write", "fold-rarely"])
def test_append_entry_built_from_the_view_equals_the_one_read_from_the_log(tmp_path, fold):
    # A present item's append entry comes from the view plus the record's head
    # (lineage_index._append_from_view); it must be the very message the full record gives
    # (_reduce_append), after priority changes and corrections, for lineage columns of 0, 1
    # and n entries, columns sent in another order than the signature, and an append sharing
    # its frame with the capacity eviction it caused; live, after a restart and a rebuild.
    from replaybuf.tensors import to_batch

    ids = list(range(1, 15))
    with _open(tmp_path, fold) as e:
        e.create_table(_config(capacity=12))
        e.append("t", batch([1, 2, 3]))  # no lineage columns
        e.append("t", batch([4, 5, 6]), priorities=[0.5, 1.5, 2.5],
                 lineage={"episode_id": 3, "model_version": -2, "source": "s"})  # 1 entry
        e.append("t", batch([7, 8, 9]), lineage={  # n entries
            "episode_id": [1, 2, 3], "step": [4, 5, 6], "request_id": ["a", "", "c"],
            "model_version": [7, 8, 9], "timestamp_ms": [10, 11, 12],
            "source": ["x", "y", ""]})
        cols = batch([10, 11])
        e.append("t", to_batch({k: cols[k] for k in reversed(list(cols))}),  # as a client sends
                 lineage={"request_id": ["q10", "q11"]})
        for k in range(3):
            e.update_priorities("t", [2, 5, 8, 10], [k + 0.25] * 4, source="learner")
        e.correct_rewards("t", [2, 8], [-3.0, 4.0], source="human", reason="fix")
        e.append("t", batch([12, 13, 14]))  # table full: evicts in the append's frame
        e.update_priorities("t", [13], [9.0])
        assert _check_append_entries(e, ids) == 12
        h = e.get_lineage(8)
        assert h.present
        assert _kinds(h) == ["items_appended", *["priorities_updated"] * 3, "rewards_corrected"]
        app = h.entries[0][1].items_appended
        assert len(app.priorities) == 1 and app.lineage.request_id[:] == [""]
        assert from_batch(app.data)["tag"].tolist() == [8]
    with _open(tmp_path, fold) as e:  # restart
        assert _check_append_entries(e, ids) == 12
    shutil.rmtree(tmp_path / "view")
    with _open(tmp_path, fold) as e:  # rebuilt from the log
        assert e.rebuild_reason is not None
        assert _check_append_entries(e, ids) == 12
