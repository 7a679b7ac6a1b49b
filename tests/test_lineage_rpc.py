"""Lineage, reverse queries, review flow, Diff, rolling metrics and Subscribe resume through the
real server (`make_replay_server` from conftest.py) and `ReplayClient` (issue 6, part B)."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import generate_latest

from replaybuf.errors import FailedPreconditionError, InvalidArgumentError, ItemNotFoundError
from replaybuf_client import ReplayClient, RetryPolicy

PATIENT = RetryPolicy(max_attempts=30, initial_backoff=0.02, max_backoff=0.3)


@pytest.fixture
def rig(make_replay_server, signature, transitions):
    server = make_replay_server()
    with ReplayClient(server.address, timeout=20, retry=PATIENT) as client:
        client.create_table("t", signature, capacity=1000)
        ack = client.append("t", transitions(4), lineage={
            "episode_id": 3, "request_id": ["a", "b", "c", "d"], "model_version": 9})
        yield server, client, [int(i) for i in ack.item_ids]


def test_lineage_find_and_review_flow_over_rpc(rig):
    server, client, ids = rig
    client.update_priorities("t", ids[:2], [2.0, 3.0])
    flagged = client.flag_for_review("t", [ids[0], ids[1], 10**9], reason="odd", author="bob")
    assert flagged.lsn > 0 and flagged.missing_ids.tolist() == [10**9]
    pending = client.pending_reviews("t")
    assert [p.item_id for p in pending] == ids[:2]
    assert pending[0].reason == "odd" and pending[0].priority == 2.0 and pending[0].reward == 1.0
    label = client.apply_label("t", ids[0], "relabel", reward=-1.0, priority=0.5, author="al")
    assert label.last_lsn == label.first_lsn + 2
    client.apply_label("t", ids[1], "reject", author="al")
    assert client.pending_reviews("t") == []
    with pytest.raises(FailedPreconditionError, match="not pending"):
        client.apply_label("t", ids[0], "accept")
    with pytest.raises(InvalidArgumentError):
        client.find_items("t", request_id="a", episode_id=3)

    lin = client.lineage(ids[0])
    assert lin.table == "t" and lin.present
    kinds = [ev.WhichOneof("body") for _, ev in lin.entries]
    assert kinds == ["items_appended", "priorities_updated", "items_flagged_for_review",
                     "label_applied", "rewards_corrected", "priorities_updated"]
    assert lin.entries[0].event.items_appended.lineage.request_id[:] == ["a"]
    rejected = client.lineage(ids[1])
    assert not rejected.present and rejected.entries[-1].event.WhichOneof("body") == "items_evicted"
    with pytest.raises(ItemNotFoundError):
        client.lineage(10**9)

    assert client.find_items("t", request_id="b").item_ids.tolist() == []
    assert client.find_items("t", request_id="b", include_evicted=True).item_ids.tolist() == [ids[1]]
    assert client.find_items("t", model_version=9).item_ids.tolist() == [ids[0], *ids[2:]]
    found = client.find_items("t", episode_id=3, include_evicted=True, limit=2)
    assert found.item_ids.tolist() == ids[:2] and found.truncated

    d = client.diff(0)
    assert d.appended == 4 and d.flagged == 2 and d.labelled == 2
    assert d.evicted_by_reason == {"review_rejected": 1}
    assert d.corrected_by_source == {"human": 1} and d.priority_updates == 3
    assert d.to_lsn == server.engine.applied_lsn
    assert d.priority_mass_to == pytest.approx(client.describe_table("t").total_priority)
    assert client.diff(d.to_lsn, table="t").events_by_kind == {}


def test_describe_table_and_prometheus_carry_the_rolling_metrics(rig):
    from replaybuf_server.metrics import ServerMetrics
    from replaybuf_server.servicer import engine_snapshot

    server, client, ids = rig
    client.evict("t", ids[:1], reason="invalid_data")
    metrics = client.describe_table("t").metrics
    for key in ("reward_mean_5m", "appends_per_s", "correction_rate_5m", "evicted.capacity",
                "evicted.invalid_data"):
        assert key in metrics
    assert metrics["reward_mean_5m"] == 1.0 and metrics["evicted.invalid_data"] == 1
    text = generate_latest(
        ServerMetrics(lambda: engine_snapshot(server.engine)).registry).decode()
    assert 'replaybuf_table_reward_mean_5m{table="t"} 1.0' in text
    assert 'replaybuf_table_evicted_items{reason="invalid_data",table="t"} 1.0' in text


def _wait_for(seen: list[int], last: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (not seen or seen[-1] < last) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_subscribe_resumes_after_a_cancelled_stream_and_a_server_restart(rig, transitions):
    server, client, ids = rig
    for k in range(5):
        client.append("t", transitions(2, start=10 * k))
    end = server.engine.applied_lsn

    # 1) the consumer drops its stream mid-way and resumes from its last LSN + 1
    sub = client.subscribe(from_lsn=1, follow=True)
    part1 = [next(sub).lsn for _ in range(3)]
    sub.close()
    with client.subscribe(from_lsn=sub.last_lsn + 1, follow=False) as rest:
        part2 = [lsn for lsn, _ in rest]
    assert part1 + part2 == list(range(1, end + 1))

    # 2) the server restarts under a following subscription: it reconnects by itself
    seen: list[int] = []
    sub = client.subscribe(from_lsn=1, follow=True)
    reader = threading.Thread(target=lambda: seen.extend(lsn for lsn, _ in sub))
    reader.start()
    _wait_for(seen, end)
    server.restart()
    last = 0
    for k in range(3):
        last = client.append("t", transitions(2, start=100 + k)).last_lsn
    _wait_for(seen, last)
    sub.close()
    reader.join(5)
    assert seen == list(range(1, last + 1))  # nothing missed, nothing twice
    assert sub.reconnects >= 1
    events = {lsn for lsn, _ in client.subscribe(from_lsn=1, follow=False)}
    assert events == set(range(1, last + 1))
