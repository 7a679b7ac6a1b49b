"""`server.append_stream.serve_appends`: one Append stream's requests begun in order, finished
on worker threads, acked in order (driven by plain callables standing in for the engine)."""

from __future__ import annotations

import threading
import time

import pytest

from replaybuf_server.append_stream import serve_appends
from replaybuf_server.streams import ReadAhead


def _requests(items, shutdown=None):
    return ReadAhead(iter(items), shutdown or threading.Event())


def test_acks_come_back_in_request_order_when_finishes_complete_out_of_order():
    delays = {0: 0.15, 1: 0.0, 2: 0.05, 3: 0.0, 4: 0.0}
    done_order: list[int] = []

    def finish(ticket, request):
        time.sleep(delays[request])
        done_order.append(request)
        return f"ack{ticket}"

    acks = list(serve_appends(_requests(range(5)), lambda r: r, finish, window=4))
    assert acks == [f"ack{i}" for i in range(5)]
    assert done_order[0] != 0  # request 0 finished after later ones: they ran concurrently


def test_the_next_request_is_begun_while_an_earlier_one_is_still_finishing():
    release = threading.Event()
    begun: list[int] = []

    def begin(request):
        begun.append(request)
        if request == 1:
            release.set()  # begun before request 0's finish returned
        return request

    def finish(ticket, request):
        if request == 0:
            assert release.wait(5), "request 1 was not begun while request 0 was in flight"
        return ticket

    assert list(serve_appends(_requests(range(3)), begin, finish, window=4)) == [0, 1, 2]
    assert begun == [0, 1, 2]


def test_no_more_than_window_requests_are_in_flight():
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most

    def begin(request):
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        return request

    def finish(ticket, request):
        time.sleep(0.01)
        return ticket

    out = []
    for ack in serve_appends(_requests(range(20)), begin, finish, window=3):
        with lock:
            in_flight[0] -= 1
        out.append(ack)
    assert out == list(range(20))
    assert in_flight[1] == 3


def test_a_bad_request_ends_the_stream_after_the_acks_before_it_and_finishes_them():
    finished: list[int] = []

    def begin(request):
        if request == 3:
            raise ValueError("bad batch 3")
        return request

    def finish(ticket, request):
        time.sleep(0.02)
        finished.append(request)
        return ticket

    got = []
    with pytest.raises(ValueError, match="bad batch 3"):
        for ack in serve_appends(_requests(range(6)), begin, finish, window=4):
            got.append(ack)
    assert got == [0, 1, 2]
    assert sorted(finished) == [0, 1, 2]


def test_a_failed_finish_ends_the_stream_with_its_error_and_waits_for_the_others():
    finished: list[int] = []

    def finish(ticket, request):
        if request == 1:
            raise OSError("fsync failed")
        time.sleep(0.05)
        finished.append(request)
        return ticket

    got = []
    with pytest.raises(OSError, match="fsync failed"):
        for ack in serve_appends(_requests(range(4)), lambda r: r, finish, window=4):
            got.append(ack)
    assert got == [0]
    assert sorted(finished) == [0, 2, 3]  # begun ones still finished (pool joined)
