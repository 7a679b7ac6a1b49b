"""Writer: batching, pipelining with bounded in-flight batches, and duplicate-free retries.

Runs against the real `ReplayServer` on 127.0.0.1:0 through a `TcpProxy` that cuts, holds or
refuses connections for real, and against a server process killed with SIGKILL. What was
stored is read back from the server's event log on disk (`iter_log_records`, read-only),
which also carries each batch's producer id and sequence.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from replaybuf.errors import (
    ClosedError,
    InvalidArgumentError,
    InvalidPriorityError,
    RateLimitTimeoutError,
    SignatureMismatchError,
    UnavailableError,
)
from replaybuf.events import decode_event
from replaybuf.log_reader import iter_log_records
from replaybuf.tensors import from_batch
from replaybuf_client import ReplayClient, RetryPolicy

FAST_RETRY = RetryPolicy(max_attempts=5, initial_backoff=0.01, max_backoff=0.05)
PATIENT = RetryPolicy(max_attempts=40, initial_backoff=0.02, max_backoff=0.3)
# gRPC waits 1 s, 1.6 s, ... between connection attempts by default; a restart takes ~1 s.
QUICK_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 300)]


@pytest.fixture
def server(replay_server):
    return replay_server


@pytest.fixture
def proxy(make_proxy, server):
    return make_proxy(server.address)


@pytest.fixture
def client(proxy, signature):
    with ReplayClient(proxy.address, timeout=10, retry=FAST_RETRY) as c:
        c.create_table("t", signature, capacity=100_000)
        yield c


def logged_appends(log_dir: Path, table: str = "t") -> list[tuple[bytes, int, object]]:
    """``(producer_id, producer_seq, ItemsAppended)`` of each batch stored in ``table``, in log order."""

    out = []
    for record in iter_log_records(log_dir):
        event = decode_event(record.payload, lsn=record.lsn)
        if event.HasField("items_appended") and event.items_appended.table == table:
            out.append((record.producer_id, record.producer_seq, event.items_appended))
    return out


def stored_numbers(log_dir: Path, table: str = "t") -> list[int]:
    return [int(x) for _, _, ev in logged_appends(log_dir, table) for x in from_batch(ev.data)["obs"][:, 0]]


def batch_sizes(log_dir: Path) -> list[int]:
    return [len(ev.item_ids) for _, _, ev in logged_appends(log_dir)]


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def add_numbered(writer, start: int, n: int) -> None:
    for i in range(start, start + n):
        writer.add(obs=[i, 0, 0], action=i, reward=1.0, done=False)


@pytest.mark.parametrize(
    "max_batch, adds, expected",
    [
        (4, 10, [4, 4, 2]),
        (1, 3, [1, 1, 1]),
        (256, 5, [5]),
        (5, 5, [5]),
    ],
)
def test_adds_become_batches_of_max_batch_in_order(server, client, max_batch, adds, expected):
    with client.writer("t", max_batch=max_batch) as writer:
        add_numbered(writer, 0, adds)
    assert batch_sizes(server.log_dir) == expected
    assert stored_numbers(server.log_dir) == list(range(adds))
    assert writer.stats.items_acked == adds


def test_extend_sends_buffered_adds_first_and_splits_columns(server, client, transitions):
    with client.writer("t", max_batch=4) as writer:
        add_numbered(writer, 0, 2)
        writer.extend(transitions(9, start=2), lineage={"episode_id": 5, "step": np.arange(9)})
    assert batch_sizes(server.log_dir) == [2, 4, 4, 1]
    assert stored_numbers(server.log_dir) == list(range(11))
    lineages = [ev.lineage for _, _, ev in logged_appends(server.log_dir)]
    assert [list(lin.step) for lin in lineages[1:]] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    # one episode id for the whole extend, sent with each batch; the log keeps a column that
    # is the same for every item as one entry, and no request id as none (`to_proto(compact)`)
    assert [list(lin.episode_id) for lin in lineages[1:]] == [[5], [5], [5]]
    assert [len(lin.request_id) for lin in lineages[1:]] == [0, 0, 0]


def test_rows_with_other_lineage_columns_or_priorities_go_to_new_batches(server, client):
    with client.writer("t", max_batch=100) as writer:
        writer.add(obs=np.zeros(3), action=0, reward=0.0, done=False, lineage={"step": 0})
        writer.add(obs=np.zeros(3), action=1, reward=0.0, done=False, lineage={"step": 1})
        writer.add(obs=np.zeros(3), action=2, reward=0.0, done=False, priority=2.0)
        writer.add(obs=np.zeros(3), action=3, reward=0.0, done=True)
    assert batch_sizes(server.log_dir) == [2, 1, 1]
    assert [list(ev.priorities) for _, _, ev in logged_appends(server.log_dir)][1] == [2.0]


def test_batches_are_pipelined_without_waiting_for_each_ack(server, proxy, client):
    proxy.hold_responses(until_requests=3)  # no ack reaches the writer before 3 batches went out
    with client.writer("t", max_batch=2, max_in_flight=3, timeout=5) as writer:
        add_numbered(writer, 0, 6)
        writer.flush()
    assert stored_numbers(server.log_dir) == list(range(6))


def test_in_flight_batches_are_bounded(server, proxy, client):
    proxy.hold_responses(until_requests=3)
    sent_before = len(proxy.request_messages)
    writer = client.writer("t", max_batch=1, max_in_flight=2, timeout=0.5)
    add_numbered(writer, 0, 2)  # two in flight, no ack will come before a third
    with pytest.raises(RateLimitTimeoutError, match="acknowledge 2 batch.*not acknowledged"):
        add_numbered(writer, 2, 1)
    wait_until(lambda: len(logged_appends(server.log_dir)) >= 2)
    assert len(proxy.request_messages) - sent_before == 2
    assert len(logged_appends(server.log_dir)) == 2
    with pytest.raises(RateLimitTimeoutError):
        add_numbered(writer, 3, 1)  # a failed writer keeps failing
    writer.close()  # already reported: close does not raise it again


def test_a_dropped_stream_is_retried_with_the_same_producer_seqs_and_nothing_doubles(server, proxy, client):
    proxy.cut_after_responses(2)  # the 3rd batch is stored, then its ack is lost with the connection
    with client.writer("t", max_batch=4, max_in_flight=4) as writer:
        add_numbered(writer, 0, 40)
    assert proxy.cuts == 1
    stored = logged_appends(server.log_dir)
    assert stored_numbers(server.log_dir) == list(range(40))
    assert [seq for _, seq, _ in stored] == list(range(1, 11))
    assert {pid for pid, _, _ in stored} == {writer.producer_id}
    assert writer.stats.reconnects == 1
    assert writer.stats.duplicates >= 1  # the stored-but-unacked batch came back as a duplicate
    assert writer.stats.items_acked == 40


def test_a_server_restart_mid_stream_loses_and_doubles_nothing(server, client):
    acks = []
    with client.writer("t", max_batch=5, on_ack=acks.append) as writer:
        add_numbered(writer, 0, 25)
        writer.flush()
        server.restart()  # graceful: open streams end with UNAVAILABLE; same port, same data
        add_numbered(writer, 25, 25)
    stored = logged_appends(server.log_dir)
    assert stored_numbers(server.log_dir) == list(range(50))
    assert len(stored) == len({seq for _, seq, _ in stored}) == 10
    assert [len(a.item_ids) for a in acks] == [5] * 10
    ids = np.concatenate([a.item_ids for a in acks])
    assert len(np.unique(ids)) == 50


def test_acks_lost_in_a_sigkill_are_answered_as_duplicates_after_recovery(make_server_process, make_proxy,
                                                                           signature):
    proc = make_server_process(fsync="group")  # acks only after fsync: durability is the point
    proxy = make_proxy(proc.address)
    acks = []
    with ReplayClient(proxy.address, timeout=10, retry=PATIENT, options=QUICK_RECONNECT) as client:
        client.create_table("t", signature, capacity=10_000)
        writer = client.writer("t", max_batch=5, max_in_flight=4, on_ack=acks.append)
        add_numbered(writer, 0, 25)
        writer.flush()
        proxy.hold_responses(until_requests=None)  # the next acks never reach the writer
        add_numbered(writer, 25, 20)  # 4 batches, all in flight
        wait_until(lambda: len(logged_appends(proc.log_dir)) == 9)  # stored and acked (held)
        proc.kill()
        proxy.cut_all()  # the held acks die with the connection
        proxy.release()
        proc.start()  # same port and data dir: recovery replays the log, dedup state included
        add_numbered(writer, 45, 25)
        writer.close()
        stats = writer.stats
        assert client.describe_table("t").size == 70
    stored = logged_appends(proc.log_dir)
    assert stored_numbers(proc.log_dir) == list(range(70))
    assert [seq for _, seq, _ in stored] == list(range(1, 15))
    assert stats.duplicates == 4 and stats.reconnects >= 1 and stats.items_acked == 70
    ids = np.concatenate([a.item_ids for a in acks])
    assert len(ids) == len(np.unique(ids)) == 70


def test_a_non_retryable_stream_error_fails_the_writer_and_names_what_was_lost(server, client):
    writer = client.writer("t", max_batch=2, max_in_flight=1)
    add_numbered(writer, 0, 2)
    for i in (2, 3):  # rows with a priority form a batch of their own: the server refuses it
        writer.add(obs=[i, 0, 0], action=i, reward=1.0, done=False, priority=float("nan"))
    with pytest.raises(InvalidArgumentError, match=r"priorities\[0\] is NaN.*not acknowledged") as info:
        writer.flush()
    assert isinstance(info.value, InvalidPriorityError)
    assert isinstance(info.value.__cause__, InvalidArgumentError)
    with pytest.raises(InvalidArgumentError):
        add_numbered(writer, 4, 1)
    writer.close()  # already reported: close does not raise it again
    assert stored_numbers(server.log_dir) == [0, 1]


def test_retries_give_up_after_max_attempts(proxy, signature):
    with ReplayClient(proxy.address, retry=RetryPolicy(max_attempts=2, initial_backoff=0.01)) as client:
        client.create_table("t", signature, capacity=100)
        proxy.cut_on_requests(2)  # both attempts lose their connection
        before = proxy.request_streams
        writer = client.writer("t", max_batch=1, max_in_flight=2)
        add_numbered(writer, 0, 2)
        with pytest.raises(UnavailableError, match=rf"{re.escape(proxy.address)}.*2 sent batch"):
            writer.close()
        assert proxy.request_streams - before == 2


def test_flush_interval_sends_a_partial_batch(server, client):
    with client.writer("t", max_batch=100, flush_interval=0.05) as writer:
        add_numbered(writer, 0, 1)
        deadline = time.monotonic() + 5
        while not client.describe_table("t").size and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stored_numbers(server.log_dir) == [0]


def test_concurrent_adds_from_threads_all_arrive_once(server, client):
    with client.writer("t", max_batch=7, max_in_flight=3) as writer:
        threads = [threading.Thread(target=add_numbered, args=(writer, k * 100, 50)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(stored_numbers(server.log_dir)) == sorted(k * 100 + i for k in range(4) for i in range(50))


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"obs": np.zeros(3), "action": 1, "reward": 0.0}, r"missing field\(s\) \['done'\]"),
        ({"obs": np.zeros(3), "action": 1, "reward": 0.0, "done": False, "x": 1}, r"unknown field"),
        ({"obs": np.zeros(4), "action": 1, "reward": 0.0, "done": False}, r"shape \(4,\)"),
        ({"obs": np.zeros(3), "action": 1.5, "reward": 0.0, "done": False}, r"1.5 does not fit"),
        ({"obs": np.zeros(3), "action": 2**40, "reward": 0.0, "done": False}, r"does not fit dtype int32"),
        ({"obs": np.zeros(3), "action": 1, "reward": 0.0, "done": 2}, r"2 does not fit dtype bool"),
        ({"obs": np.zeros(3, np.complex64), "action": 1, "reward": 0.0, "done": False}, "complex64"),
    ],
)
def test_a_bad_transition_is_rejected_by_add_itself(client, fields, match):
    with client.writer("t") as writer:
        with pytest.raises(SignatureMismatchError, match=match):
            writer.add(fields)
        writer.add(obs=np.zeros(3, np.float64), action=np.int64(3), reward=1, done=0)  # castable
        writer.add(obs=[0.1, 0.2, 0.3], action=True, reward=0.1, done=np.bool_(True))
        writer.add(obs=np.zeros(3, np.float32), action=2, reward=float("nan"), done=False)


def test_a_rejected_value_leaves_nothing_of_its_row_behind(server, client):
    with client.writer("t", max_batch=100) as writer:
        add_numbered(writer, 0, 2)
        with pytest.raises(SignatureMismatchError, match=r"field 'done'.*2 does not fit dtype bool"):
            writer.add(obs=[99, 0, 0], action=99, reward=1.0, done=2)  # obs, action already fit
        assert writer.pending == 2
        add_numbered(writer, 2, 2)
    assert stored_numbers(server.log_dir) == [0, 1, 2, 3]
    assert from_batch(logged_appends(server.log_dir)[0][2].data)["action"].tolist() == [0, 1, 2, 3]


def test_add_copies_its_values_so_a_reused_array_may_change_after(server, client):
    obs = np.zeros(3, np.float32)
    with client.writer("t", max_batch=100) as writer:
        for i in range(3):
            obs[0] = i  # an actor that steps its environment in place
            writer.add(obs=obs, action=i, reward=1.0, done=False)
    assert stored_numbers(server.log_dir) == [0, 1, 2]


@pytest.mark.parametrize("lineage, match", [
    ({"episode_id": -1}, r"lineage.episode_id=-1 must be an integer in \[0, "),
    ({"step": 1.5}, r"lineage.step=1.5 must be an integer"),
    ({"request_id": 7}, r"lineage.request_id=7 must be a str"),
    ({"step": [1, 2]}, r"lineage.step has 2 values; add\(\) takes one value per column"),
    ({"episode": 1}, r"unknown key\(s\) \['episode'\]"),
])
def test_a_bad_lineage_value_is_rejected_by_add_and_names_the_column(server, client, lineage, match):
    with client.writer("t", max_batch=100) as writer:
        with pytest.raises(InvalidArgumentError, match=match):
            writer.add(obs=np.zeros(3), action=0, reward=0.0, done=False, lineage=lineage)
        assert writer.pending == 0
        writer.add(obs=np.zeros(3), action=1, reward=0.0, done=False,
                   lineage={"episode_id": np.uint64(4), "step": np.array([2]), "request_id": b"r-1",
                            "model_version": -3, "source": "actor-0"})
    (_, _, event), = logged_appends(server.log_dir)
    lin = event.lineage
    assert (list(lin.episode_id), list(lin.step), list(lin.request_id), list(lin.model_version),
            list(lin.source)) == ([4], [2], ["r-1"], [-3], ["actor-0"])


def test_use_after_close_raises_and_close_is_idempotent(client):
    writer = client.writer("t")
    writer.close()
    writer.close()
    with pytest.raises(ClosedError):
        add_numbered(writer, 0, 1)


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"max_in_flight": 65}, {"flush_interval": -1}])
def test_bad_writer_options_are_rejected(client, kwargs):
    with pytest.raises(InvalidArgumentError):
        client.writer("t", **kwargs)


def test_closing_the_client_flushes_its_writers(server, signature):
    client = ReplayClient(server.address)
    client.create_table("t", signature, capacity=100)
    writer = client.writer("t", max_batch=100)
    add_numbered(writer, 0, 3)
    client.close()
    assert stored_numbers(server.log_dir) == [0, 1, 2]
    with pytest.raises(ClosedError):
        add_numbered(writer, 3, 1)
