"""Flow control of `ReplayClient.sampler` against a real server: the server draws a batch only
when the learner has room for it, so at most ``prefetch`` batches are drawn and not yet
consumed, however much the transport would buffer.

Draws are observed where they count: the table's rate limiter (``DescribeTable``), which every
draw advances and which the learner's unread batches must not.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures

import grpc
from _polling import settled, wait_until
import pytest

from replaybuf_client import ReplayClient, RetryPolicy


@pytest.fixture
def client(replay_server, signature, transitions):
    with ReplayClient(replay_server.address, timeout=10) as c:
        c.create_table("t", signature, capacity=1000, sampler="uniform")
        c.append("t", transitions(100))
        yield c


def batches_drawn(client: ReplayClient, batch_size: int) -> Callable[[], int]:
    return lambda: client.describe_table("t").rate_limiter.samples // batch_size


# Batches of 1 item are ~150 bytes on the wire: HTTP/2 windows alone would buffer thousands.
@pytest.mark.parametrize("batch_size, prefetch", [(1, 2), (64, 3)])
def test_sampler_draws_at_most_prefetch_batches_while_the_learner_reads_nothing(
    client, batch_size, prefetch
):
    drawn = batches_drawn(client, batch_size)
    with client.sampler("t", batch_size, seed=0, prefetch=prefetch) as batches:
        wait_until(lambda: drawn() >= prefetch)
        assert settled(drawn) == prefetch
        for consumed in range(1, 4):
            assert next(batches).info.seed == consumed - 1
            wait_until(lambda: drawn() >= prefetch + consumed)
            assert settled(drawn, quiet=0.3) == prefetch + consumed
    assert settled(drawn, quiet=0.3) == prefetch + 3  # closing draws nothing more


def test_acknowledgements_go_out_in_groups_of_half_the_window(client):
    drawn = batches_drawn(client, 4)
    with client.sampler("t", 4, seed=0, prefetch=4) as batches:
        wait_until(lambda: drawn() >= 4)
        next(batches)
        assert settled(drawn, quiet=0.3) == 4  # one consumed: not yet acknowledged
        next(batches)
        wait_until(lambda: drawn() >= 6)
        assert settled(drawn, quiet=0.3) == 6  # two acknowledged at once
        for consumed in range(3, 11):
            next(batches)
            assert drawn() <= consumed + 4  # never more than the window ahead


class _WithoutSampleStream(grpc.ServerInterceptor):
    """What a server from before SampleStream answers: UNIMPLEMENTED for it."""

    refused = 0

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.endswith("/SampleStream"):
            self.refused += 1
            return None  # no handler: gRPC answers UNIMPLEMENTED
        return continuation(handler_call_details)


def test_sampler_falls_back_to_sample_on_a_server_without_sample_stream(
    replay_server, signature, transitions
):
    from replaybuf_server.servicer import ReplayServicer, add_servicer_to_server

    refuse = _WithoutSampleStream()
    older = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[refuse])
    add_servicer_to_server(ReplayServicer(replay_server.engine), older)
    port = older.add_insecure_port("127.0.0.1:0")
    older.start()
    try:
        with ReplayClient(f"127.0.0.1:{port}", timeout=10) as c:
            c.create_table("t", signature, capacity=1000, sampler="uniform")
            c.append("t", transitions(10))
            with c.sampler("t", 2, seed=3, num_batches=4) as batches:
                assert [b.info.seed for b in batches] == [3, 4, 5, 6]
        assert refuse.refused == 1  # asked once, then used Sample
    finally:
        older.stop(grace=None)


def test_a_reconnect_keeps_the_window_with_unread_batches_carried_over(
    replay_server, make_proxy, signature, transitions
):
    proxy = make_proxy(replay_server.address)
    fast = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)
    with ReplayClient(proxy.address, timeout=10, retry=fast) as c:
        c.create_table("t", signature, capacity=1000, sampler="uniform")
        c.append("t", transitions(20))
        drawn = batches_drawn(c, 2)
        proxy.fail_streams_after_responses(1)  # one batch arrives, the second is lost
        with c.sampler("t", 2, seed=0, prefetch=2) as batches:
            wait_until(lambda: proxy.failed_streams == 1 and batches.batches_received == 2)
            # Reconnected holding batch 0 unread: the new stream may draw only 1 (seed 1),
            # besides the 2 of the first stream (one lost in transit, still counted).
            assert settled(drawn) == 3
            seeds = [next(batches).info.seed for _ in range(6)]  # reading them grants credit
            assert seeds == list(range(6))
            wait_until(lambda: drawn() >= 9)
            assert settled(drawn, quiet=0.3) == 9  # 6 consumed + the window of 2 + 1 lost
