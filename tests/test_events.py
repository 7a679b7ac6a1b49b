from __future__ import annotations

import pytest

from replaybuf.errors import DataLossError
from replaybuf.events import (
    EVENT_KINDS,
    EVENT_VERSION,
    decode_event,
    describe_event,
    encode_event,
    event_kind,
    event_table,
    make_event,
)
from replaybuf.v1 import events_pb2, table_pb2


def _examples():
    return [
        make_event(table_created=events_pb2.TableCreated(config=table_pb2.TableConfig(name="t", capacity=10))),
        make_event(items_appended=events_pb2.ItemsAppended(table="t", item_ids=[1, 2], priorities=[1, 1])),
        make_event(priorities_updated=events_pb2.PrioritiesUpdated(table="t", item_ids=[1], priorities=[2.0])),
        make_event(rewards_corrected=events_pb2.RewardsCorrected(table="t", item_ids=[1], rewards=[0.5])),
        make_event(items_evicted=events_pb2.ItemsEvicted(table="t", item_ids=[2], reason=1, job_id="j")),
        make_event(items_sampled=events_pb2.ItemsSampled(table="t", item_ids=[1], seed=3)),
        make_event(items_flagged_for_review=events_pb2.ItemsFlaggedForReview(table="t", item_ids=[1])),
        make_event(label_applied=events_pb2.LabelApplied(table="t", item_id=1, verdict="accept")),
        make_event(retrain_recommended=events_pb2.RetrainRecommended(table="t", job_id="d")),
        make_event(job_completed=events_pb2.JobCompleted(table="t", job_id="j", kind="evict")),
    ]


def test_every_kind_round_trips_and_is_described():
    seen = set()
    for ev in _examples():
        back = decode_event(encode_event(ev))
        assert back == ev and back.version == EVENT_VERSION
        assert event_table(back) == "t"
        assert describe_event(back)
        seen.add(event_kind(back))
    assert seen == set(EVENT_KINDS)


def test_encoding_is_deterministic():
    ev = make_event(timestamp_ms=5, retrain_recommended=events_pb2.RetrainRecommended(
        table="t", statistics={"b": 1.0, "a": 2.0, "c": 3.0}))
    assert len({encode_event(ev) for _ in range(20)}) == 1


def test_newer_schema_version_is_refused_with_advice():
    ev = _examples()[0]
    ev.version = EVENT_VERSION + 1
    with pytest.raises(DataLossError, match="upgrade replaybuf"):
        decode_event(encode_event(ev), lsn=7)


def test_garbage_is_data_loss_naming_the_lsn():
    with pytest.raises(DataLossError, match="LSN 9"):
        decode_event(b"\xff\xff\xff", lsn=9)
    with pytest.raises(DataLossError, match="no body"):
        decode_event(events_pb2.Event(version=1).SerializeToString())


def test_make_event_needs_exactly_one_known_body():
    with pytest.raises(ValueError):
        make_event()
    with pytest.raises(ValueError):
        make_event(bogus=events_pb2.ItemsEvicted())
