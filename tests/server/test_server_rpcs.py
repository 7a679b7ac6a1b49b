"""Every RPC of replaybuf.v1.ReplayService, served by a real server over raw generated stubs."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from replaybuf.events import decode_event
from replaybuf.tensors import from_batch
from replaybuf.v1 import events_pb2, service_pb2
from replaybuf_server.codec import encode_log_event, encode_sample

from server_helpers import append_request, connect, error_name, settled, table_config


def _append(client, n=4, **kwargs):
    (ack,) = list(client.Append(iter([append_request(n=n, **kwargs)])))
    return ack


def test_create_table_returns_the_table_and_its_lsn(make_server):
    client = connect(make_server().address)
    resp = client.CreateTable(service_pb2.CreateTableRequest(config=table_config("t1").to_proto()))
    assert resp.table.config.name == "t1" and resp.lsn == 1 and resp.table.size == 0
    again = client.CreateTable(
        service_pb2.CreateTableRequest(config=table_config("t1").to_proto(), exist_ok=True)
    )
    assert again.lsn == 1
    with pytest.raises(grpc.RpcError) as err:
        client.CreateTable(service_pb2.CreateTableRequest(config=table_config("t1").to_proto()))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_name(err.value) == "AlreadyExistsError"


def test_list_and_describe_tables_report_live_state(client):
    _append(client, n=5)
    tables = client.ListTables(service_pb2.ListTablesRequest()).tables
    assert [t.config.name for t in tables] == ["replay"]
    info = client.DescribeTable(service_pb2.DescribeTableRequest(table="replay"))
    assert info.size == 5 and info.applied_lsn == 2 and info.rate_limiter.inserts == 5
    assert info.total_priority > 0 and info.max_priority == 1.0


def test_append_stream_acks_each_request_in_order_with_ids_and_lsns(client):
    pid = b"p" * 16
    requests = [append_request(n=3, producer_id=pid, producer_seq=s) for s in (1, 2, 3)]
    acks = list(client.Append(iter(requests)))
    assert [a.producer_seq for a in acks] == [1, 2, 3]
    assert [list(a.item_ids) for a in acks] == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [(a.first_lsn, a.last_lsn) for a in acks] == [(2, 2), (3, 3), (4, 4)]
    assert not any(a.duplicate for a in acks)
    assert not any(a.durable for a in acks)  # fsync="none" in these tests


def test_append_retry_with_same_producer_seq_repeats_the_original_ack(client):
    pid = b"q" * 16
    first = _append(client, producer_id=pid, producer_seq=1)
    retry = _append(client, producer_id=pid, producer_seq=1)
    assert retry.duplicate and list(retry.item_ids) == list(first.item_ids)
    assert (retry.first_lsn, retry.last_lsn) == (first.first_lsn, first.last_lsn)
    assert client.DescribeTable(service_pb2.DescribeTableRequest(table="replay")).size == 4


def test_append_acks_are_durable_under_group_fsync(make_server):
    client = connect(make_server(fsync="group").address)
    client.CreateTable(service_pb2.CreateTableRequest(config=table_config().to_proto()))
    assert _append(client).durable


def test_append_stream_ends_at_the_first_bad_batch_keeping_earlier_acks(client, server):
    bad = append_request(n=2)
    bad.data.columns[0].tensor.shape[:] = [2, 4]  # obs is (3,)
    requests = [append_request(n=2), bad, append_request(n=2)]
    got = []
    with pytest.raises(grpc.RpcError) as err:
        for ack in client.Append(iter(requests)):
            got.append(ack)
    assert len(got) == 1
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert server.engine.log.last_lsn == 2  # TableCreated + the first batch only


def test_sample_streams_num_batches_with_consecutive_seeds(client):
    _append(client, n=20)
    responses = list(client.Sample(service_pb2.SampleRequest(
        table="replay", batch_size=8, beta=0.4, seed=100, num_batches=3)))
    assert [r.info.seed for r in responses] == [100, 101, 102]
    for r in responses:
        data = from_batch(r.data)
        assert data["obs"].shape == (8, 3) and data["obs"].dtype == np.float32
        assert len(r.info.item_ids) == 8 and len(r.info.weights) == 8
        assert r.info.lsn == 2 and r.info.table_size == 20
        assert len(r.info.lineage.episode_id) == 8


def test_sampling_is_deterministic_for_a_seed_at_the_same_lsn(client):
    _append(client, n=50)
    req = service_pb2.SampleRequest(table="replay", batch_size=16, beta=1.0, seed=7, num_batches=2)
    a = [list(r.info.item_ids) for r in client.Sample(req)]
    b = [list(r.info.item_ids) for r in client.Sample(req)]
    assert a == b


def test_sample_without_seed_reports_the_seed_it_picked_and_increments_it(client):
    _append(client, n=10)
    rs = list(client.Sample(service_pb2.SampleRequest(table="replay", batch_size=2, num_batches=3)))
    seeds = [r.info.seed for r in rs]
    assert seeds[1] == (seeds[0] + 1) % 2**64 and seeds[2] == (seeds[0] + 2) % 2**64


def test_sample_returns_only_the_requested_fields(client):
    _append(client, n=10)
    (r,) = client.Sample(service_pb2.SampleRequest(
        table="replay", batch_size=4, num_batches=1, fields=["reward"]))
    assert set(from_batch(r.data)) == {"reward"}


class _Context:
    """The parts of grpc.ServicerContext that the Sample handler uses."""

    def __init__(self):
        self.callbacks = []

    def add_callback(self, fn):
        self.callbacks.append(fn)
        return True

    def is_active(self):
        return True


def test_sample_draws_at_most_prefetch_batches_ahead_of_the_response_stream(server, client):
    from replaybuf_server.servicer import ReplayServicer

    _append(client, n=10)
    servicer = ReplayServicer(server.engine)
    samples = lambda: server.engine.describe_table("replay").rate_limiter.samples // 2
    before = samples()
    stream = servicer.Sample(service_pb2.SampleRequest(
        table="replay", batch_size=2, num_batches=0, prefetch=3, seed=1), _Context())
    got = [next(stream) for _ in range(4)]  # bytes, pre-encoded SampleResponse
    assert [service_pb2.SampleResponse.FromString(b).info.seed for b in got] == [1, 2, 3, 4]
    # The 4th counts as in flight until the next pull, so 4 + 3 - 1 are drawn, no more.
    assert settled(samples) - before == 4 + 3 - 1
    stream.close()  # what gRPC does when the client cancels
    final = settled(samples)  # the producer stopped
    assert final - before <= 4 + 3


def test_sample_until_cancelled_stops_drawing_when_the_client_cancels(client, server):
    _append(client, n=10)
    stream = client.Sample(service_pb2.SampleRequest(
        table="replay", batch_size=2, num_batches=0, seed=1), timeout=None)
    it = iter(stream)
    assert [next(it).info.seed for _ in range(3)] == [1, 2, 3]
    stream.cancel()
    with pytest.raises(grpc.RpcError) as err:
        for _ in it:
            pass
    assert err.value.code() == grpc.StatusCode.CANCELLED
    samples = lambda: server.engine.describe_table("replay").rate_limiter.samples
    settled(samples)  # raises if the producer keeps drawing


def test_sample_times_out_on_the_rate_limiter_with_deadline_exceeded(make_server):
    from replaybuf.rate_limiter import RateLimiterConfig

    client = connect(make_server().address)
    cfg = table_config(rate_limiter=RateLimiterConfig.min_size(100))
    client.CreateTable(service_pb2.CreateTableRequest(config=cfg.to_proto()))
    _append(client, n=5)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        list(client.Sample(service_pb2.SampleRequest(
            table="replay", batch_size=2, num_batches=1, timeout_ms=300)))
    assert 0.25 < time.monotonic() - started < 5
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error_name(err.value) == "RateLimitTimeoutError"
    assert "timeout_ms=300" in err.value.details()


def test_blocked_sample_is_released_by_a_later_append(make_server):
    from replaybuf.rate_limiter import RateLimiterConfig

    client = connect(make_server().address)
    cfg = table_config(rate_limiter=RateLimiterConfig.min_size(10))
    client.CreateTable(service_pb2.CreateTableRequest(config=cfg.to_proto()))
    result = []
    t = threading.Thread(target=lambda: result.extend(client.Sample(
        service_pb2.SampleRequest(table="replay", batch_size=2, num_batches=1))))
    t.start()
    time.sleep(0.3)
    assert not result
    _append(client, n=10)
    t.join(10)
    assert len(result) == 1


def test_update_priorities_applies_present_ids_and_reports_missing(client):
    ack = _append(client, n=3)
    resp = client.UpdatePriorities(service_pb2.UpdatePrioritiesRequest(
        table="replay", item_ids=list(ack.item_ids) + [999], priorities=[1.0, 2.0, 5.0, 1.0]))
    assert resp.lsn == 3 and list(resp.missing_ids) == [999]
    info = client.DescribeTable(service_pb2.DescribeTableRequest(table="replay"))
    assert info.max_priority == 5.0


def test_correct_rewards_logs_the_previous_rewards(client, server):
    ack = _append(client, n=2)
    resp = client.CorrectRewards(service_pb2.CorrectRewardsRequest(
        table="replay", item_ids=[ack.item_ids[0], 555], rewards=[3.0, 1.0],
        source=events_pb2.FEEDBACK_SOURCE_HUMAN, reason="ticket 12", author="ana"))
    assert resp.lsn == 3 and list(resp.missing_ids) == [555]
    (rec,) = server.engine.log.read(3, 3)
    ev = decode_event(rec.payload).rewards_corrected
    assert list(ev.previous_rewards) == [0.5] and ev.fidelity_weight == 1.0 and ev.author == "ana"


def test_evict_removes_items_with_reason_and_is_idempotent(client, server):
    ack = _append(client, n=4)
    ids = list(ack.item_ids)[:2]
    req = service_pb2.EvictRequest(table="replay", item_ids=ids, job_id="job-1")
    resp = client.Evict(req)
    assert resp.evicted == 2 and resp.lsn == 3 and not resp.missing_ids
    again = client.Evict(req)
    assert again.evicted == 0 and again.lsn == 0 and list(again.missing_ids) == ids
    (rec,) = server.engine.log.read(3, 3)
    assert decode_event(rec.payload).items_evicted.reason == events_pb2.EVICTION_REASON_MANUAL


def test_subscribe_streams_the_log_from_an_lsn_filtered_by_table(client, make_server):
    client.CreateTable(service_pb2.CreateTableRequest(config=table_config("other").to_proto()))
    _append(client, n=2)
    list(client.Append(iter([append_request("other", n=1)])))
    events = list(client.Subscribe(service_pb2.SubscribeRequest(from_lsn=1)))
    assert [e.lsn for e in events] == [1, 2, 3, 4]
    kinds = [e.event.WhichOneof("body") for e in events]
    assert kinds == ["table_created", "table_created", "items_appended", "items_appended"]
    only = list(client.Subscribe(service_pb2.SubscribeRequest(from_lsn=2, tables=["other"])))
    assert [e.lsn for e in only] == [2, 4]
    with pytest.raises(grpc.RpcError) as err:
        list(client.Subscribe(service_pb2.SubscribeRequest(from_lsn=99)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_subscribe_follow_delivers_new_events_until_cancelled(client):
    stream = client.Subscribe(service_pb2.SubscribeRequest(from_lsn=1, follow=True), timeout=None)
    it = iter(stream)
    assert next(it).lsn == 1
    _append(client, n=2)
    nxt = next(it)
    assert nxt.lsn == 2 and nxt.event.HasField("items_appended")
    stream.cancel()
    with pytest.raises(grpc.RpcError) as err:
        next(it)
    assert err.value.code() == grpc.StatusCode.CANCELLED


def test_lineage_rpcs_are_served_and_name_what_is_wrong(client):
    # Their behaviour is in tests/test_lineage_rpc.py; here: served, with clear statuses.
    for call, req, code in (
        (client.GetLineage, service_pb2.GetLineageRequest(item_id=10**9),
         grpc.StatusCode.NOT_FOUND),
        (client.FindItems, service_pb2.FindItemsRequest(table="replay"),
         grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(req)
        assert err.value.code() == code and err.value.details()


def test_sample_encoding_equals_protobuf_serialization_with_one_copy_per_column(client, server):
    _append(client, n=6)
    sample = server.engine.sample("replay", 4, beta=0.5, seed=3)
    wire = encode_sample(sample.data, sample.info)
    assert wire == sample.to_proto().SerializeToString(deterministic=True)
    odd = {"x": np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2], "b": np.array([True, False, True])}
    parsed = service_pb2.SampleResponse.FromString(encode_sample(odd, sample.info))
    assert from_batch(parsed.data)["x"].tolist() == odd["x"].tolist()
    assert from_batch(parsed.data)["b"].tolist() == [True, False, True]


def test_log_event_encoding_wraps_the_stored_event_bytes(server):
    (rec,) = server.engine.log.read(1, 1)
    parsed = service_pb2.LogEvent.FromString(encode_log_event(rec.lsn, rec.payload))
    assert parsed.lsn == 1 and parsed.event == decode_event(rec.payload)
