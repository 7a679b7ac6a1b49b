"""SampleStream over raw generated stubs against a real server: draws follow the client's credit.

Draws are observed through the table's rate limiter (every draw counts there), never by
looking inside the server.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc
import pytest

from replaybuf.v1 import service_pb2

from server_helpers import append_request, error_name, settled, wait_until


class Requests:
    """The client half of a SampleStream: messages put here are sent in order; `close`
    half-closes."""

    def __init__(self, *first: service_pb2.SampleStreamRequest) -> None:
        self._queue: queue.SimpleQueue[service_pb2.SampleStreamRequest | None] = queue.SimpleQueue()
        for message in first:
            self._queue.put(message)

    def ack(self, consumed: int) -> None:
        self._queue.put(service_pb2.SampleStreamRequest(consumed=consumed))

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[service_pb2.SampleStreamRequest]:
        while (message := self._queue.get()) is not None:
            yield message


def open_request(**kwargs: object) -> service_pb2.SampleStreamRequest:
    kwargs.setdefault("table", "replay")
    return service_pb2.SampleStreamRequest(request=service_pb2.SampleRequest(**kwargs))


@pytest.fixture
def drawn(server, client):
    """Batches of one item drawn from table ``replay`` so far (10 items in it)."""

    list(client.Append(iter([append_request(n=10)])))
    return lambda: server.engine.describe_table("replay").rate_limiter.samples


def test_sample_stream_draws_only_against_the_clients_credit(client, drawn):
    requests = Requests(open_request(batch_size=1, prefetch=3, seed=5))
    call = client.SampleStream(iter(requests), timeout=None)
    try:
        wait_until(lambda: drawn() >= 3)
        assert settled(drawn) == 3  # the client read nothing: 3 draws, no more
        got = [next(call).info.seed for _ in range(3)]
        assert got == [5, 6, 7] and settled(drawn, quiet=0.3) == 3  # received is not consumed
        requests.ack(2)
        wait_until(lambda: drawn() >= 5)
        assert settled(drawn, quiet=0.3) == 5
        assert [next(call).info.seed for _ in range(2)] == [8, 9]
    finally:
        call.cancel()
        requests.close()
    assert settled(drawn, quiet=0.3) == 5


def test_batches_carried_over_from_an_earlier_stream_count_against_the_window(client, drawn):
    first = open_request(batch_size=1, prefetch=3, seed=0)
    first.unconsumed = 2  # a reconnecting client still holds 2 unread batches
    requests = Requests(first)
    call = client.SampleStream(iter(requests), timeout=None)
    try:
        wait_until(lambda: drawn() >= 1)
        assert settled(drawn) == 1
        assert next(call).info.seed == 0
        requests.ack(3)  # the two carried batches and this stream's first
        wait_until(lambda: drawn() >= 4)
        assert settled(drawn, quiet=0.3) == 4
    finally:
        call.cancel()
        requests.close()


def test_sample_stream_ends_with_ok_once_a_half_closed_clients_credit_is_spent(client, drawn):
    requests = Requests(open_request(batch_size=1, prefetch=2, seed=0))
    requests.close()
    assert [r.info.seed for r in client.SampleStream(iter(requests))] == [0, 1]
    assert drawn() == 2


def test_sample_stream_ends_after_num_batches_whatever_the_credit(client, drawn):
    requests = Requests(open_request(batch_size=2, prefetch=8, num_batches=3, seed=0))
    assert [r.info.seed for r in client.SampleStream(iter(requests))] == [0, 1, 2]
    requests.close()
    assert drawn() == 6


@pytest.mark.parametrize("messages, fragment", [
    ([service_pb2.SampleStreamRequest(consumed=1)], "first message must carry `request`"),
    ([open_request(batch_size=1, prefetch=1), service_pb2.SampleStreamRequest(consumed=2)],
     "consumed=2 would acknowledge 2 batch(es) but"),
    ([open_request(batch_size=1, prefetch=1), open_request(batch_size=1)],
     "only the first message carries `request`"),
    ([open_request(batch_size=1, prefetch=65)], "prefetch=65 is too large"),
    ([service_pb2.SampleStreamRequest(request=service_pb2.SampleRequest(
        table="replay", batch_size=1, prefetch=2), unconsumed=3)],
     "unconsumed=3 exceeds prefetch=2"),
], ids=["no request", "more acknowledged than sent", "second request", "huge prefetch",
        "more carried than the window"])
def test_sample_stream_refuses_a_bad_client_message(client, drawn, messages, fragment):
    requests = Requests(*messages)
    with pytest.raises(grpc.RpcError) as err:
        for _ in client.SampleStream(iter(requests), timeout=10):
            pass
    requests.close()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_name(err.value) == "InvalidArgumentError"
    assert fragment in err.value.details()
    assert drawn() <= 1


def test_sample_stream_errors_map_like_sample(client, drawn):
    requests = Requests(open_request(table="nope", batch_size=1))
    with pytest.raises(grpc.RpcError) as err:
        list(client.SampleStream(iter(requests), timeout=10))
    requests.close()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_name(err.value) == "TableNotFoundError"
