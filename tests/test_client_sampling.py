"""Sampling, subscriptions and the torch dataset against the real `ReplayServer`.

Covers zero-copy decoding, reconnects that keep the seed sequence and the LSN sequence
gap-free, closing blocked iterators, and fork safety (a channel per process). Streams fail
for real: a `TcpProxy` between client and server ends them with UNAVAILABLE after a number of
responses, as a load balancer does when it loses the server.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import numpy as np
import pytest
import torch
from google.protobuf.message import DecodeError
from torch.utils.data import DataLoader

from replaybuf.errors import ClosedError, RateLimitTimeoutError, UnavailableError
from replaybuf.v1 import service_pb2
from replaybuf_client import ReplayClient, RetryPolicy
from replaybuf_client.torch import WORKER_SEED_STRIDE, ReplayDataset, to_torch

FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


@pytest.fixture
def server(replay_server):
    return replay_server


@pytest.fixture
def proxy(make_proxy, server):
    return make_proxy(server.address)


@pytest.fixture
def client(proxy, signature, transitions):
    with ReplayClient(proxy.address, timeout=10, retry=FAST_RETRY) as c:
        c.create_table("t", signature, capacity=1000, sampler="uniform")
        c.append("t", transitions(20), lineage={"episode_id": 7})
        yield c


def sent(proxy, message_cls, last: int):
    """The last ``last`` request messages the proxy forwarded, decoded as ``message_cls``."""

    return [message_cls.FromString(m) for m in proxy.request_messages[-last:]]


def sample_requests(proxy, last: int):
    """The SampleRequests that opened the last ``last`` SampleStreams (acknowledgements,
    the streams' later messages, left out)."""

    found = []
    for body in proxy.request_messages:  # every RPC's messages; keep those that parse as one
        try:
            message = service_pb2.SampleStreamRequest.FromString(body)
        except DecodeError:
            continue
        if message.HasField("request") and message.request.batch_size:
            found.append(message.request)
    return found[-last:]


def test_sample_data_are_read_only_views_with_numpy_info(client):
    batch = client.sample("t", 8, seed=3, beta=0.5)
    assert len(batch) == 8 and batch.info.seed == 3
    obs = batch["obs"]
    assert obs.shape == (8, 3) and obs.dtype == np.float32 and not obs.flags.writeable
    assert not obs.flags.owndata  # a view over the response bytes, not a copy
    assert np.all(batch["action"] == obs[:, 0].astype(np.int32))
    assert batch.info.item_ids.dtype == np.uint64 and batch.info.weights.dtype == np.float64
    assert batch.info.lineage.episode_id.tolist() == [7] * 8
    assert batch.info.lineage.request_id == ("",) * 8  # every column comes back, unset ones empty
    with pytest.raises(ValueError):
        obs[0, 0] = 1.0


def test_sample_as_torch_gives_writable_tensors(client):
    batch = client.sample("t", 4, seed=1, as_torch=True, fields=["obs", "done"])
    assert set(batch.data) == {"obs", "done"}
    assert batch["obs"].dtype == torch.float32 and batch["done"].dtype == torch.bool
    batch["obs"][0, 0] = -1.0  # writable without warnings
    assert isinstance(batch.info.item_ids, np.ndarray)


def test_pin_memory_without_an_accelerator_warns_and_copies():
    if torch.cuda.is_available():
        pytest.skip("an accelerator exists: pinning works")
    import replaybuf_client.torch as rt

    rt._warned_no_pin = False
    with pytest.warns(RuntimeWarning, match="no accelerator"):
        out = to_torch({"x": np.arange(3, dtype=np.uint16)}, pin_memory=True)
    assert out["x"].dtype == torch.uint16 and not out["x"].is_pinned()


def test_sampler_reconnects_and_continues_the_seed_sequence(proxy, client):
    proxy.fail_streams_after_responses(2)  # two batches arrive, then UNAVAILABLE
    with client.sampler("t", 4, seed=100, num_batches=6, prefetch=2) as batches:
        seeds = [b.info.seed for b in batches]
    assert seeds == list(range(100, 106))
    assert proxy.failed_streams == 1
    first, second = sample_requests(proxy, 2)
    assert (first.seed, first.num_batches, first.prefetch) == (100, 6, 2)
    assert (second.seed, second.num_batches, second.prefetch) == (102, 4, 2)


def test_sampler_without_seed_resumes_after_the_servers_seed(proxy, client):
    proxy.fail_streams_after_responses(1)
    with client.sampler("t", 2, num_batches=3) as batches:
        seeds = [b.info.seed for b in batches]
    assert seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]  # the server picked the first
    first, second = sample_requests(proxy, 2)
    assert not first.HasField("seed") and second.seed == seeds[0] + 1


def test_sampler_errors_surface_from_next_after_earlier_batches(proxy, client):
    proxy.fail_streams_after_responses(1, 0, 0, 0)  # one batch, then every attempt fails
    with client.sampler("t", 2, seed=0) as batches:
        assert next(batches).info.seed == 0
        with pytest.raises(UnavailableError, match=f"upstream connection lost.*server {proxy.address}"):
            next(batches)
        with pytest.raises(StopIteration):
            next(batches)
    assert proxy.failed_streams == 4  # FAST_RETRY.max_attempts


def test_closing_an_endless_sampler_stops_it_and_next_then_raises(client):
    batches = client.sampler("t", 2, seed=0, prefetch=1)
    assert next(batches).info.seed == 0
    batches.close()
    batches.close()
    with pytest.raises(ClosedError):
        next(batches)


def test_close_from_another_thread_wakes_a_blocked_consumer(server, signature, transitions):
    with ReplayClient(server.address) as client:
        client.create_table("once", signature, capacity=10, max_times_sampled=1)
        client.append("once", transitions(1))
        batches = client.sampler("once", 1, prefetch=1)
        next(batches)  # the only item, sampled its one time: now the server waits for items
        results: list[object] = []

        def consume():
            try:
                for _ in batches:
                    pass
            except ClosedError as exc:
                results.append(exc)

        t = threading.Thread(target=consume)
        t.start()
        time.sleep(0.2)
        assert t.is_alive()  # blocked in next()
        batches.close()
        t.join(5)
        assert not t.is_alive()
        assert len(results) == 1


def test_sample_of_an_empty_table_raises_the_rate_limit_timeout(client, signature):
    client.create_table("nothing", signature, capacity=10)
    with pytest.raises(RateLimitTimeoutError):
        client.sample("nothing", 2, timeout=0.5)


def test_subscribe_resumes_after_a_dropped_stream_without_gaps_or_repeats(proxy, client, transitions):
    for _ in range(4):
        client.append("t", transitions(1))
    n_events = client.describe_table("t").applied_lsn
    proxy.fail_streams_after_responses(1, 2)  # the 1st stream fails after 1 event, the 2nd after 2
    with client.subscribe(from_lsn=1, follow=False) as events:
        lsns = [lsn for lsn, _ in events]
        assert events.reconnects == 2
        assert events.last_lsn == n_events
    assert lsns == list(range(1, n_events + 1))
    requests = sent(proxy, service_pb2.SubscribeRequest, 3)
    assert [r.from_lsn for r in requests] == [1, 2, 4]


def test_subscribe_follows_new_events_until_closed(client, transitions):
    start = client.describe_table("t").applied_lsn + 1
    got: list[int] = []
    sub = client.subscribe(from_lsn=start, follow=True, tables=["t"])
    t = threading.Thread(target=lambda: got.extend(lsn for lsn, _ in sub))
    t.start()
    client.append("t", transitions(2))
    client.append("t", transitions(2))
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    sub.close()
    t.join(5)
    assert got == [start, start + 1] and not t.is_alive()


# -- fork safety -----------------------------------------------------------------------------


class PidDataset(ReplayDataset):
    """Reports which process iterated and which process opened the client it used."""

    def __iter__(self):
        for batch in super().__iter__():
            yield {"pid": os.getpid(), "client_pid": self.client_pid, "seed": batch.info.seed,
                   "obs": batch["obs"]}


def test_dataloader_workers_each_open_their_own_channel(make_server_process, signature, transitions):
    # The server runs in its own process, as in training: the process that forks holds only
    # the client's gRPC threads (an in-process server's threads make a fork riskier still).
    proc = make_server_process(fsync="none")
    with ReplayClient(proc.address, timeout=10) as client:
        client.create_table("t", signature, capacity=1000)
        client.append("t", transitions(20))
        dataset = PidDataset(proc.address, "t", 4, seed=0, num_batches=6)
        parent = list(dataset)  # opens a client in this process first
        assert {b["client_pid"] for b in parent} == {os.getpid()}
        with client.sampler("t", 2) as active:  # a live stream in the parent while it forks
            next(active)
            loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="fork")
            batches = list(loader)
    pids = {b["pid"] for b in batches}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(b["client_pid"] == b["pid"] for b in batches)
    assert sorted(int(b["seed"]) for b in batches) == [0, 1, 2, WORKER_SEED_STRIDE,
                                                       WORKER_SEED_STRIDE + 1, WORKER_SEED_STRIDE + 2]
    assert all(isinstance(b["obs"], torch.Tensor) and b["obs"].shape == (4, 3) for b in batches)
    assert dataset.client_pid == os.getpid()  # the parent's client is untouched
    assert len(list(dataset)) == 6


def _use_inherited_client(client, conn):
    try:
        client.list_tables()
        conn.send("no error")
    except ClosedError as exc:
        conn.send(f"ClosedError: {exc}")
    finally:
        conn.close()


def test_a_client_used_in_a_forked_child_refuses_with_closed_error(client):
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=_use_inherited_client, args=(client, child_end))
    proc.start()
    message = parent_end.recv()
    proc.join(10)
    assert message.startswith("ClosedError") and "gRPC channels do not survive fork" in message
    assert client.list_tables()  # the parent's client still works


def test_a_pickled_dataset_carries_no_client(server):
    import pickle

    dataset = ReplayDataset(server.address, "t", 2, num_batches=1)
    dataset.client()
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone.client_pid is None
    dataset.close()
