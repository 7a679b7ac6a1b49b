"""Errors: every engine error class crosses the wire as its status plus the replaybuf-error
trailer; malformed and oversized requests are refused before they reach the log, and the
server keeps serving."""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest
from server_helpers import append_request, connect, error_name, table_config

from replaybuf.errors import all_error_classes, error_class_for
from replaybuf.table_config import TableConfig
from replaybuf.tensors import to_batch
from replaybuf.v1 import service_pb2, table_pb2


class _RaisingEngine:
    """Stands in for the engine: describe_table raises whatever the test sets."""

    def __init__(self):
        self.error: BaseException = RuntimeError("unset")

    def describe_table(self, name):
        raise self.error


def _client_side_class(err: grpc.RpcError):
    return error_class_for(error_name(err), err.code().name)


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_round_trips_as_status_and_trailer(make_server, cls):
    engine = _RaisingEngine()
    client = connect(make_server(engine=engine).address)
    engine.error = cls(f"raised {cls.__name__} on purpose")
    with pytest.raises(grpc.RpcError) as err:
        client.DescribeTable(service_pb2.DescribeTableRequest(table="t"))
    assert err.value.code() == getattr(grpc.StatusCode, cls.grpc_status)
    assert err.value.details() == f"raised {cls.__name__} on purpose"
    assert error_name(err.value) == cls.__name__
    assert _client_side_class(err.value) is cls


def test_an_unexpected_exception_is_internal_and_the_server_keeps_serving(make_server, caplog):
    engine = _RaisingEngine()
    client = connect(make_server(engine=engine).address)
    engine.error = ZeroDivisionError("bug")
    with pytest.raises(grpc.RpcError) as err:
        client.DescribeTable(service_pb2.DescribeTableRequest(table="t"))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "ZeroDivisionError" in err.value.details() and "incident" in err.value.details()
    assert error_name(err.value) is None
    assert any("ZeroDivisionError" in (r.exc_text or "") for r in caplog.records)
    engine.error = KeyError("again")
    with pytest.raises(grpc.RpcError) as err:
        client.DescribeTable(service_pb2.DescribeTableRequest(table="t"))
    assert err.value.code() == grpc.StatusCode.INTERNAL


def _bad_shape():
    req = append_request(n=2)
    req.data.columns[0].tensor.shape[:] = [2, 4]  # obs is (3,): 8 values but 6 sent
    return req


def _wrong_dtype():
    data = {"obs": np.zeros((2, 3), np.float64), "action": np.zeros(2, np.int64),
            "reward": np.zeros(2, np.float32)}
    return service_pb2.AppendRequest(table="replay", data=to_batch(data))


def _unknown_dtype_code():
    req = append_request(n=2)
    req.data.columns[1].tensor.dtype = 99
    return req


def _missing_field():
    req = append_request(n=2)
    del req.data.columns[2]
    return req


def _truncated_data():
    req = append_request(n=2)
    req.data.columns[0].tensor.data = req.data.columns[0].tensor.data[:-1]
    return req


MALFORMED_APPENDS = {
    "unknown table": (lambda: append_request("nope"), "TableNotFoundError", "nope"),
    "wrong shape": (_bad_shape, "InvalidArgumentError", "obs"),
    "wrong dtype": (_wrong_dtype, "SignatureMismatchError", "obs"),
    "unknown dtype code": (_unknown_dtype_code, "InvalidArgumentError", "dtype"),
    "missing field": (_missing_field, "SignatureMismatchError", "reward"),
    "truncated tensor": (_truncated_data, "InvalidArgumentError", "obs"),
    "NaN priority": (lambda: append_request(n=2, priorities=[1.0, math.nan]),
                     "InvalidPriorityError", "priorities[1]"),
    "negative priority": (lambda: append_request(n=2, priorities=[-1.0, 1.0]),
                          "InvalidPriorityError", "priorities[0]"),
    "priority count": (lambda: append_request(n=2, priorities=[1.0, 1.0, 1.0]),
                       "InvalidArgumentError", "priorities"),
    "empty batch": (lambda: service_pb2.AppendRequest(table="replay"),
                    "SignatureMismatchError", "missing field"),
    "short producer id": (lambda: append_request(n=2, producer_id=b"x", producer_seq=1),
                          "InvalidArgumentError", "producer"),
    "seq without producer": (lambda: append_request(n=2, producer_seq=3),
                             "InvalidArgumentError", "producer_id"),
    "lineage length": (lambda: service_pb2.AppendRequest(
        table="replay", data=append_request(n=2).data, lineage={"step": [1, 2, 3]}),
        "InvalidArgumentError", "step"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_APPENDS))
def test_malformed_append_is_refused_and_never_reaches_the_log(server, client, case):
    make, name, mention = MALFORMED_APPENDS[case]
    before = server.engine.log.last_lsn
    with pytest.raises(grpc.RpcError) as err:
        list(client.Append(iter([make()])))
    assert error_name(err.value) == name, err.value.details()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT or name == "TableNotFoundError"
    assert mention in err.value.details()
    assert server.engine.log.last_lsn == before
    (ack,) = client.Append(iter([append_request(n=1)]))  # still serving
    assert ack.last_lsn == before + 1


MALFORMED_UNARY = {
    "NaN priority update": (
        "UpdatePriorities",
        lambda: service_pb2.UpdatePrioritiesRequest(table="replay", item_ids=[1], priorities=[math.nan]),
        grpc.StatusCode.INVALID_ARGUMENT, "InvalidPriorityError"),
    "ids and priorities differ": (
        "UpdatePriorities",
        lambda: service_pb2.UpdatePrioritiesRequest(table="replay", item_ids=[1, 2], priorities=[1.0]),
        grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgumentError"),
    "unknown table update": (
        "UpdatePriorities",
        lambda: service_pb2.UpdatePrioritiesRequest(table="nope", item_ids=[1], priorities=[1.0]),
        grpc.StatusCode.NOT_FOUND, "TableNotFoundError"),
    "infinite reward": (
        "CorrectRewards",
        lambda: service_pb2.CorrectRewardsRequest(table="replay", item_ids=[1], rewards=[math.inf],
                                                  source=1),
        grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgumentError"),
    "fidelity weight above 1": (
        "CorrectRewards",
        lambda: service_pb2.CorrectRewardsRequest(table="replay", item_ids=[1], rewards=[1.0],
                                                  fidelity_weight=1.5),
        grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgumentError"),
    "bad table config": (
        "CreateTable",
        lambda: service_pb2.CreateTableRequest(config=table_pb2.TableConfig(name="9bad", capacity=1)),
        grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgumentError"),
    "missing table config": (
        "CreateTable", lambda: service_pb2.CreateTableRequest(),
        grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgumentError"),
    "unknown evict reason": (
        "Evict", lambda: service_pb2.EvictRequest(table="replay", item_ids=[1], reason=999),
        grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgumentError"),
    "unknown table describe": (
        "DescribeTable", lambda: service_pb2.DescribeTableRequest(table="nope"),
        grpc.StatusCode.NOT_FOUND, "TableNotFoundError"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_UNARY))
def test_malformed_unary_request_is_refused_and_never_reaches_the_log(server, client, case):
    method, make, code, name = MALFORMED_UNARY[case]
    list(client.Append(iter([append_request(n=2)])))
    before = server.engine.log.last_lsn
    with pytest.raises(grpc.RpcError) as err:
        getattr(client, method)(make())
    assert (err.value.code(), error_name(err.value)) == (code, name), err.value.details()
    assert server.engine.log.last_lsn == before


@pytest.mark.parametrize("request_", [
    service_pb2.SampleRequest(table="nope", batch_size=2, num_batches=1),
    service_pb2.SampleRequest(table="replay", batch_size=0, num_batches=1),
    service_pb2.SampleRequest(table="replay", batch_size=2, beta=1.5, num_batches=1),
    service_pb2.SampleRequest(table="replay", batch_size=2, num_batches=1, fields=["nope"]),
    service_pb2.SampleRequest(table="replay", batch_size=2, num_batches=1, prefetch=10_000),
], ids=["unknown table", "batch_size 0", "beta 1.5", "unknown field", "huge prefetch"])
def test_bad_sample_request_fails_with_a_clear_status(server, client, request_):
    list(client.Append(iter([append_request(n=4)])))
    before = server.engine.log.last_lsn
    with pytest.raises(grpc.RpcError) as err:
        list(client.Sample(request_))
    assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert error_name(err.value) in ("InvalidArgumentError", "TableNotFoundError")
    assert server.engine.log.last_lsn == before


def test_oversized_request_is_refused_by_grpc_before_decoding(make_server):
    server = make_server(max_message_bytes=256 * 1024)
    client = connect(server.address)
    client.CreateTable(service_pb2.CreateTableRequest(config=table_config().to_proto()))
    before = server.engine.log.last_lsn
    with pytest.raises(grpc.RpcError) as err:
        list(client.Append(iter([append_request(n=30_000)])))  # ~0.6 MB
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.engine.log.last_lsn == before
    (ack,) = client.Append(iter([append_request(n=10)]))
    assert ack.last_lsn == before + 1


def test_a_sample_batch_larger_than_the_message_limit_names_the_setting(make_server):
    server = make_server(max_message_bytes=64 * 1024)
    client = connect(server.address)
    cfg = TableConfig("big", {"x": (np.float32, (1024,))}, capacity=100)
    client.CreateTable(service_pb2.CreateTableRequest(config=cfg.to_proto()))
    rows = {"x": np.zeros((10, 1024), np.float32)}  # 40 KB per append: under the limit
    list(client.Append(iter([service_pb2.AppendRequest(table="big", data=to_batch(rows))])))
    with pytest.raises(grpc.RpcError) as err:
        list(client.Sample(service_pb2.SampleRequest(table="big", batch_size=32, num_batches=1)))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_name(err.value) == "MessageTooLargeError"
    assert "max_message_bytes" in err.value.details()


def test_correcting_a_table_without_reward_field_is_failed_precondition(make_server):
    client = connect(make_server().address)
    cfg = TableConfig("noreward", {"x": np.float32}, capacity=10)
    client.CreateTable(service_pb2.CreateTableRequest(config=cfg.to_proto()))
    with pytest.raises(grpc.RpcError) as err:
        client.CorrectRewards(service_pb2.CorrectRewardsRequest(
            table="noreward", item_ids=[1], rewards=[1.0], source=1))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_name(err.value) == "FailedPreconditionError"
