"""The client maps gRPC failures back to replaybuf's exception classes, and retries only safely.

Every error is produced for real: by the real `ReplayServer` (engine, file log, LMDB) on
127.0.0.1:0 failing a real request, by a real server process whose log writes hit
RLIMIT_FSIZE, by damaging its log on disk, or by the network between (`TcpProxy` cutting or
refusing connections). The few classes that no server path raises yet are checked against a
bare generic gRPC handler that aborts with a given status and trailer: it tests the client's
mapping of gRPC errors, and re-implements nothing of our server.
"""

from __future__ import annotations

import math
import resource
import socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest

import replaybuf.errors
from replaybuf.errors import (
    AlreadyExistsError,
    ClosedError,
    DataLossError,
    DurabilityError,
    EmptyBatchError,
    FailedPreconditionError,
    InvalidArgumentError,
    InvalidPriorityError,
    ItemNotFoundError,
    LogCorruptionError,
    MessageTooLargeError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitTimeoutError,
    ReplayError,
    ResourceExhaustedError,
    SignatureMismatchError,
    TableNotFoundError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)
from replaybuf.tensors import to_batch
from replaybuf.v1 import service_pb2, service_pb2_grpc
from replaybuf_client import ReplayClient, RetryPolicy
from replaybuf_client._errors import ERROR_TRAILER, from_rpc_error

FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.02)
NO_RETRY = RetryPolicy(max_attempts=1)
ADMIN = "admin-token-0123456789abcdef"
SAMPLER = "sampler-token-0123456789abcdef"


@pytest.fixture
def ids(replay_server, signature, transitions):
    """Creates table ``t`` on the real server with 4 items; their ids."""

    with ReplayClient(replay_server.address) as c:
        c.create_table("t", signature, capacity=1000)
        return c.append("t", transitions(4)).item_ids


@pytest.fixture
def server(replay_server, ids):
    """The real server with table ``t`` holding the 4 items `ids`."""

    return replay_server


@pytest.fixture
def proxy(make_proxy, server):
    return make_proxy(server.address)


@pytest.fixture
def client(proxy):
    with ReplayClient(proxy.address, timeout=10, retry=FAST_RETRY) as c:
        yield c


def _trailer(err: grpc.RpcError) -> str | None:
    return dict(err.trailing_metadata() or ()).get(ERROR_TRAILER)


def _flip_byte_near_the_end(log_dir) -> None:
    """Damage the newest frame of the newest segment, as a bad disk would."""

    segment = max(log_dir.glob("*.seg"))
    with open(segment, "r+b") as f:
        f.seek(-10, 2)
        b = f.read(1)
        f.seek(-10, 2)
        f.write(bytes([b[0] ^ 0xFF]))


# -- every error class, raised for real ------------------------------------------------------


@dataclass
class Rig:
    """What a case needs: the server with table ``t`` and factories for more parts."""

    server: Any
    ids: np.ndarray
    make_replay_server: Callable[..., Any]
    make_proxy: Callable[..., Any]
    make_server_process: Callable[..., Any]
    signature: dict[str, Any]
    transitions: Callable[..., dict[str, np.ndarray]]

    def client(self, address: str | None = None, **kwargs: Any) -> ReplayClient:
        kwargs.setdefault("retry", NO_RETRY)
        kwargs.setdefault("timeout", 10)
        return ReplayClient(address or self.server.address, **kwargs)


def _table_not_found(rig: Rig) -> None:
    with rig.client() as c:
        c.describe_table("no_such_table")


def _already_exists(rig: Rig) -> None:
    with rig.client() as c:
        c.create_table("t", rig.signature, capacity=5)  # t exists with capacity 1000


def _invalid_priority(rig: Rig) -> None:
    with rig.client() as c:
        c.update_priorities("t", rig.ids[:1], [math.nan])


def _invalid_argument(rig: Rig) -> None:
    with rig.client() as c:
        c.correct_rewards("t", rig.ids[:1], [math.inf])


def _signature_mismatch(rig: Rig) -> None:
    # The client checks batches against the signature it cached, so only a stale cache gets a
    # mismatching batch to the server: the address now leads to another server whose table t
    # has another signature.
    other = rig.make_replay_server()
    with rig.client(other.address) as c:
        c.create_table("t", {"obs": (np.float64, (4,))}, capacity=10)
    proxy = rig.make_proxy(rig.server.address)
    with rig.client(proxy.address, retry=FAST_RETRY) as c:
        c.describe_table("t")
        proxy.target = other.address
        proxy.cut_all()
        c.append("t", rig.transitions(2))


def _empty_batch(rig: Rig) -> None:
    # The client refuses an empty batch itself (EmptyBatchError before sending), so the server's
    # answer is fetched with the generated stub and mapped by the client's translation point.
    empty = {k: v[:0] for k, v in rig.transitions(1).items()}
    with grpc.insecure_channel(rig.server.address) as channel:
        stub = service_pb2_grpc.ReplayServiceStub(channel)
        try:
            list(stub.Append(iter([service_pb2.AppendRequest(table="t", data=to_batch(empty))]), timeout=10))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc


def _rate_limit_timeout(rig: Rig) -> None:
    with rig.client() as c:
        c.create_table("empty", rig.signature, capacity=10)
        c.sample("empty", 2, timeout=0.3)


def _message_too_large(rig: Rig) -> None:
    small = rig.make_replay_server(max_message_bytes=64 * 1024)
    with rig.client(small.address) as c:
        c.create_table("big", {"x": (np.float32, (4096,))}, capacity=100)  # 16 KiB per item
        for _ in range(4):
            c.append("big", {"x": np.zeros((2, 4096), np.float32)})
        c.sample("big", 8, seed=0)  # 128 KiB: the server refuses to send it


def _resource_exhausted(rig: Rig) -> None:
    one = rig.make_replay_server(workers=1)
    with rig.client(one.address) as c:
        c.create_table("empty", rig.signature, capacity=10)
        with c.sampler("empty", 2):  # waits for items, holding the only worker
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # until the sampler's stream is in
                c.list_tables()
                time.sleep(0.02)


def _failed_precondition(rig: Rig) -> None:
    with rig.client() as c, c.subscribe(from_lsn=10**9, follow=False) as events:
        next(events)


def _closed(rig: Rig) -> None:
    # An application serving an engine it owns, and closing it under the running server.
    from replaybuf_server.config import ServerConfig
    from replaybuf_server.servicer import open_engine

    data_dir = rig.server.data_dir.with_name("own-engine")
    engine = open_engine(ServerConfig(data_dir=str(data_dir), fsync="none"))
    own = rig.make_replay_server(engine=engine, data_dir=data_dir)
    with rig.client(own.address) as c:
        assert c.list_tables() == []
        engine.close()
        c.list_tables()


def _unauthenticated(rig: Rig) -> None:
    secured = rig.make_replay_server(admin_tokens=(ADMIN,))
    with rig.client(secured.address, token="wrong-token-0123456789abcdef") as c:
        c.list_tables()


def _permission_denied(rig: Rig) -> None:
    secured = rig.make_replay_server(admin_tokens=(ADMIN,), sampler_tokens=(SAMPLER,))
    with rig.client(secured.address, token=SAMPLER) as c:
        c.create_table("x", rig.signature, capacity=10)


def _item_not_found(rig: Rig) -> None:
    with rig.client() as c:
        c.lineage(10**15)


def _unavailable(rig: Rig) -> None:
    with rig.client() as c, c.subscribe(from_lsn=1, follow=True) as events:
        next(events)  # the stream is open on the server
        stopper = threading.Thread(target=rig.server.stop, kwargs={"grace": 2})
        stopper.start()
        try:
            for _ in events:
                pass
        finally:
            stopper.join()


def _durability(rig: Rig) -> None:
    proc = rig.make_server_process(fsync="none", embedded=True)
    with rig.client(proc.address) as c:
        c.create_table("t", rig.signature, capacity=1000)
        c.append("t", rig.transitions(2))
        size = max(proc.log_dir.glob("*.seg")).stat().st_size
        # The disk "fills up" 512 bytes further: the next log write is cut short, then EFBIG.
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size + 512, size + 512))
        c.append("t", rig.transitions(200))


def _log_corruption(rig: Rig) -> None:
    _flip_byte_near_the_end(rig.server.log_dir)
    with rig.client() as c, c.subscribe(from_lsn=1, follow=False) as events:
        list(events)


REAL_CASES: dict[type[ReplayError], Callable[[Rig], None]] = {
    TableNotFoundError: _table_not_found,
    AlreadyExistsError: _already_exists,
    InvalidArgumentError: _invalid_argument,
    InvalidPriorityError: _invalid_priority,
    SignatureMismatchError: _signature_mismatch,
    EmptyBatchError: _empty_batch,
    RateLimitTimeoutError: _rate_limit_timeout,
    MessageTooLargeError: _message_too_large,
    ResourceExhaustedError: _resource_exhausted,
    FailedPreconditionError: _failed_precondition,
    ClosedError: _closed,
    UnauthenticatedError: _unauthenticated,
    PermissionDeniedError: _permission_denied,
    ItemNotFoundError: _item_not_found,
    UnavailableError: _unavailable,
    DurabilityError: _durability,
    LogCorruptionError: _log_corruption,
}

#: Produced by gRPC itself (its concurrent-RPC limit), so no trailer names the class.
NO_TRAILER = {ResourceExhaustedError}

#: Classes that no server path raises yet, with the status they travel with. They are checked
#: against the bare handler below (status + trailer), so the mapping is still pinned:
#: - ReplayError: the server never sends the base class; an unexpected exception is a bare
#:   INTERNAL (see test_a_bare_status_maps_to_the_most_general_class_for_it).
#: - NotFoundError: the engine raises only its subclasses (TableNotFoundError, ...).
#: - UnimplementedError: no servicer method raises it since GetLineage/FindItems are served
#:   (issue 6); an RPC the servicer lacks fails with gRPC's bare UNIMPLEMENTED, no trailer.
#: - DataLossError: a live server raises only LogCorruptionError; a CRC-valid record that is
#:   not an event stops recovery at start, before any client can connect.
#: - ViewDamagedError: the engine answers it itself at open by rebuilding the view.
MAPPING_ONLY = {
    ReplayError: "INTERNAL",
    NotFoundError: "NOT_FOUND",
    UnimplementedError: "UNIMPLEMENTED",
    DataLossError: "DATA_LOSS",
    replaybuf.errors.ViewDamagedError: "DATA_LOSS",
}


def test_every_error_class_has_a_round_trip_case():
    defined = {
        obj for obj in vars(replaybuf.errors).values()
        if isinstance(obj, type) and issubclass(obj, ReplayError) and obj.__module__ == "replaybuf.errors"
    }
    assert set(REAL_CASES) | set(MAPPING_ONLY) == defined
    assert not set(REAL_CASES) & set(MAPPING_ONLY)


@pytest.mark.parametrize("cls", list(REAL_CASES), ids=lambda c: c.__name__)
def test_every_error_class_round_trips_from_the_real_server_to_the_same_class(
    cls, server, ids, make_replay_server, make_proxy, make_server_process, signature, transitions
):
    rig = Rig(server, ids, make_replay_server, make_proxy, make_server_process, signature,
              transitions)
    with pytest.raises(ReplayError) as info:
        REAL_CASES[cls](rig)
    err = info.value
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    cause = err.__cause__
    assert isinstance(cause, grpc.RpcError)  # it crossed the wire
    assert cause.code().name == cls.grpc_status
    if cls not in NO_TRAILER:
        assert _trailer(cause) == cls.__name__
        assert str(err) == cause.details()  # the server's message, verbatim


@pytest.mark.parametrize("cls", list(MAPPING_ONLY), ids=lambda c: c.__name__)
def test_classes_no_server_path_raises_yet_still_map_from_status_and_trailer(bare, cls):
    status = MAPPING_ONLY[cls]
    with ReplayClient(bare, retry=NO_RETRY) as client:
        with pytest.raises(ReplayError) as info:
            client.describe_table(f"TRAILER:{cls.__name__}:{status}")
    assert type(info.value) is cls
    assert str(info.value) == f"{cls.__name__} from a bare handler"
    assert isinstance(info.value.__cause__, grpc.RpcError)


def test_errors_in_server_streams_map_too_after_the_events_before_them(server, client):
    _flip_byte_near_the_end(server.log_dir)
    got: list[int] = []
    with pytest.raises(LogCorruptionError, match=r"\.seg: byte offset \d+") as info:
        for lsn, _ in client.subscribe(from_lsn=1, follow=False):
            got.append(lsn)
    assert got and got == list(range(1, len(got) + 1))  # the intact events came first
    assert isinstance(info.value, DataLossError)
    assert client.describe_table("t").size == 4  # the server keeps serving


# -- bare statuses, no trailer ---------------------------------------------------------------


def _bare_status_server():
    """DescribeTable aborts with the status named by the request's table; "SLOW" sleeps;
    "TRAILER:<class>:<status>" aborts with that status and trailer."""

    def describe(request, context):
        if request.table == "SLOW":
            time.sleep(2)
            return service_pb2.TableInfo()
        if request.table.startswith("TRAILER:"):
            _, name, status = (request.table.split(":") + ["NOT_FOUND"])[:3]
            context.set_trailing_metadata(((ERROR_TRAILER, name),))
            context.abort(getattr(grpc.StatusCode, status), f"{name} from a bare handler")
        context.abort(getattr(grpc.StatusCode, request.table), f"bare {request.table}")

    handler = grpc.method_handlers_generic_handler(
        "replaybuf.v1.ReplayService",
        {
            "DescribeTable": grpc.unary_unary_rpc_method_handler(
                describe,
                request_deserializer=service_pb2.DescribeTableRequest.FromString,
                response_serializer=service_pb2.TableInfo.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=(handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def bare():
    server, address = _bare_status_server()
    yield address
    server.stop(0).wait()


@pytest.mark.parametrize(
    "status, cls",
    [
        ("UNAVAILABLE", UnavailableError),
        ("DEADLINE_EXCEEDED", RateLimitTimeoutError),
        ("NOT_FOUND", NotFoundError),
        ("ALREADY_EXISTS", AlreadyExistsError),
        ("INTERNAL", ReplayError),
        ("UNKNOWN", ReplayError),
    ],
)
def test_a_bare_status_maps_to_the_most_general_class_for_it(bare, status, cls):
    with ReplayClient(bare, retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(ReplayError) as info:
            client.describe_table(status)
    assert type(info.value) is cls
    assert f"bare {status}" in str(info.value)


def test_an_unknown_trailer_name_falls_back_to_the_status(bare):
    with ReplayClient(bare) as client:
        with pytest.raises(NotFoundError) as info:
            client.describe_table("TRAILER:ErrorFromTheFuture")
    assert type(info.value) is NotFoundError


def test_a_client_side_deadline_is_a_timeout_naming_the_setting(bare):
    with ReplayClient(bare, timeout=0.2) as client:
        with pytest.raises(RateLimitTimeoutError, match=r"timeout=0.2 s.*larger timeout="):
            client.describe_table("SLOW")
        assert isinstance(RateLimitTimeoutError("x"), TimeoutError)


def test_no_server_is_unavailable_after_retries_and_names_the_address():
    with socket.socket() as probe:  # a free port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with ReplayClient(f"127.0.0.1:{port}", retry=FAST_RETRY) as client:
        with pytest.raises(UnavailableError, match=f"127.0.0.1:{port}") as info:
            client.list_tables()
    assert isinstance(info.value, ConnectionError)
    assert time.monotonic() - started < 10


def test_a_server_that_went_away_is_unavailable_naming_the_address(replay_server):
    with ReplayClient(replay_server.address, retry=FAST_RETRY) as client:
        assert client.list_tables() == []
        replay_server.stop()
        with pytest.raises(UnavailableError, match=replay_server.address):
            client.list_tables()


def test_a_bare_rpc_error_without_call_details_is_a_replay_error():
    err = from_rpc_error(grpc.RpcError())
    assert type(err) is ReplayError


# -- message size ----------------------------------------------------------------------------


def test_a_batch_over_max_message_bytes_is_refused_before_sending(server, proxy, signature, transitions):
    with ReplayClient(proxy.address, max_message_bytes=4096) as client:
        client.create_table("small_msgs", signature, capacity=10_000)
        before = (client.describe_table("small_msgs").applied_lsn, proxy.request_streams)
        with pytest.raises(MessageTooLargeError, match="max_message_bytes=4096"):
            client.append("small_msgs", transitions(1000))
        assert proxy.request_streams == before[1]  # no Append call was made
        info = client.describe_table("small_msgs")
        assert info.size == 0 and info.applied_lsn == before[0]


def test_a_batch_over_the_servers_limit_is_refused_by_grpc_naming_the_setting(make_replay_server,
                                                                               signature, transitions):
    small = make_replay_server(max_message_bytes=64 * 1024)
    with ReplayClient(small.address, retry=NO_RETRY) as client:
        client.create_table("t", signature, capacity=10_000)
        with pytest.raises(MessageTooLargeError, match="larger than max.*max_message_bytes=") as info:
            client.append("t", transitions(5000))  # ~110 KB: under the client's limit, over the server's
        assert info.value.__cause__.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert client.describe_table("t").size == 0


def test_a_response_over_max_message_bytes_names_the_setting(server):
    with ReplayClient(server.address, timeout=10) as big:
        big.create_table("big_rows", {"x": (np.float32, (512,))}, capacity=100)
        big.append("big_rows", {"x": np.zeros((4, 512), np.float32)})
    with ReplayClient(server.address, max_message_bytes=4096, retry=FAST_RETRY) as client:
        with pytest.raises(MessageTooLargeError, match="max_message_bytes"):
            client.sample("big_rows", 16, seed=0)


# -- retries (the proxy cuts the connection of a call before the server sees it) ---------------


def test_reads_are_retried_on_unavailable(proxy, client):
    proxy.cut_on_requests(2)
    before = proxy.request_streams
    assert [t.name for t in client.list_tables()] == ["t"]
    assert proxy.request_streams - before == 3


def test_reads_ride_out_a_short_outage(proxy):
    patient = RetryPolicy(max_attempts=30, initial_backoff=0.02, max_backoff=0.2)
    # gRPC waits 1 s, 1.6 s, ... between connection attempts by default; keep the test short.
    quick_reconnect = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 200)]
    with ReplayClient(proxy.address, retry=patient, options=quick_reconnect) as client:
        assert [t.name for t in client.list_tables()] == ["t"]
        proxy.refuse(seconds=0.5)  # the server is unreachable for a while
        proxy.cut_all()
        assert [t.name for t in client.list_tables()] == ["t"]
    assert proxy.refused >= 1


def test_update_priorities_is_not_retried_unless_asked(ids, proxy, client):
    proxy.cut_on_requests(1)
    before = proxy.request_streams
    with pytest.raises(UnavailableError, match=proxy.address):
        client.update_priorities("t", ids[:1], [1.0])
    assert proxy.request_streams - before == 1
    proxy.cut_on_requests(1)
    assert client.update_priorities("t", ids[:1], [1.0], retry=True).lsn > 0
    assert proxy.request_streams - before == 3


def test_correct_rewards_is_not_retried_but_evict_is(ids, proxy, client):
    proxy.cut_on_requests(1)
    with pytest.raises(UnavailableError):
        client.correct_rewards("t", ids[:1], [0.5], reason="ticket 7")
    proxy.cut_on_requests(1)
    assert client.evict("t", ids[:1], reason="invalid_data", job_id="j1").evicted == 1


def test_an_evict_whose_answer_was_lost_is_retried_as_a_no_op(ids, proxy, client):
    proxy.cut_after_responses(0)  # the server evicts, the answer is lost
    result = client.evict("t", ids[1:2], reason="invalid_data", job_id="j2")
    assert result.evicted == 0 and result.missing_ids.tolist() == [int(ids[1])]
    assert client.describe_table("t").size == 3


def test_create_table_is_retried_only_with_exist_ok(proxy, client, signature):
    proxy.cut_on_requests(1)
    with pytest.raises(UnavailableError):
        client.create_table("retry_a", signature, capacity=10)
    proxy.cut_on_requests(1)
    assert client.create_table("retry_b", signature, capacity=10, exist_ok=True).name == "retry_b"
    assert {t.name for t in client.list_tables()} == {"t", "retry_b"}


def test_non_retryable_errors_are_raised_at_once(proxy, client):
    before = proxy.request_streams
    with pytest.raises(TableNotFoundError):
        client.describe_table("x")
    assert proxy.request_streams - before == 1


def test_an_append_retry_after_a_lost_ack_is_deduplicated(server, proxy, client, signature, transitions):
    client.create_table("dedup", signature, capacity=1000)
    proxy.cut_after_responses(0)  # the batch is stored, then its ack is lost with the connection
    result = client.append("dedup", transitions(5))
    assert proxy.cuts == 1
    assert result.duplicate  # the first attempt was stored; its ack was lost
    assert client.describe_table("dedup").size == 5
    with client.subscribe(from_lsn=1, follow=False, tables=["dedup"]) as events:
        appended = [e for _, e in events if e.HasField("items_appended")]
    assert [list(e.items_appended.item_ids) for e in appended] == [result.item_ids.tolist()]


# -- misuse ----------------------------------------------------------------------------------


def test_use_after_close_raises_closed_error_and_close_is_idempotent(server):
    client = ReplayClient(server.address)
    client.close()
    client.close()
    with pytest.raises(ClosedError, match="is closed"):
        client.list_tables()


def test_closing_the_client_cancels_a_blocked_subscription(server):
    client = ReplayClient(server.address)
    end = client.describe_table("t").applied_lsn
    sub = client.subscribe(from_lsn=end + 1, follow=True)  # waits for events yet to come
    got: list[object] = []
    t = threading.Thread(target=lambda: got.extend(sub))
    t.start()
    time.sleep(0.2)
    assert t.is_alive()  # blocked on the server
    client.close()
    t.join(5)
    assert not t.is_alive() and got == []


def test_invalid_priorities_from_the_server_keep_their_class(ids, client):
    with pytest.raises(InvalidPriorityError, match=r"priorities\[0\] is NaN") as info:
        client.update_priorities("t", ids[:1], [float("nan")])
    assert isinstance(info.value, ValueError)
    assert _trailer(info.value.__cause__) == "InvalidPriorityError"  # raised by the server
