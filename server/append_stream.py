"""The server side of one Append stream: requests begun in order, finished concurrently.

A client writer keeps several batches in flight (``max_in_flight``). Handling them one at a time
would make each wait for the previous one's log fsync and view write. Here the stream's thread
*begins* each append as it arrives (`Engine.begin_append`: validation, rate limiter, ids and the
log frame, in request order) and hands the rest (`AppendTicket.result`: the fsync, shared with
the frames queued meanwhile, and the view write) to one of ``window`` worker threads. Acks go
back in request order, each as soon as it is ready; while acks are pending the stream looks for
new requests every `POLL` seconds. A bad request ends the stream with its status after the acks of the requests before
it, as when requests were handled one by one.

Every begun append is finished (a ticket may hold the log's committer role, which other frames
wait for), even when the stream ends early: the pool is shut down with ``wait=True``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .streams import END, NOTHING, WAIT_SLICE, ReadAhead

__all__ = ["APPEND_WINDOW", "serve_appends"]

#: Appends of one stream begun and not yet acked, at most (the client writer's default
#: ``max_in_flight`` is 4).
APPEND_WINDOW = 4

#: Seconds between looks at the request stream while acks are pending.
POLL = 0.002


def serve_appends(requests: ReadAhead, begin: Callable[[Any], Any],
                  finish: Callable[[Any, Any], Any], *, window: int = APPEND_WINDOW,
                  name: str = "replaybuf-append") -> Iterator[Any]:
    """Yield one ack per request of `requests`, in order.

    Args:
        requests: the stream's requests.
        begin: ``begin(request) -> ticket``, on the stream's thread, in request order; raises
            for a bad request.
        finish: ``finish(ticket, request) -> ack message``, on a worker thread.
        window: requests begun and not yet acked, at most (>= 1).
    """

    pool = ThreadPoolExecutor(max_workers=window, thread_name_prefix=name)
    acks: deque[Future[Any]] = deque()
    try:
        while True:
            if acks and (acks[0].done() or len(acks) >= window):
                yield acks.popleft().result()
                continue
            # While acks are pending, look for the next request in short slices, so that
            # neither a new request nor a finished ack waits long for the other.
            item = requests.get(POLL if acks else WAIT_SLICE)
            if item is NOTHING:
                continue
            if item is END:
                break
            try:
                ticket = begin(item)
            except BaseException:
                while acks:  # the requests before the bad one are acked first
                    yield acks.popleft().result()
                raise
            acks.append(pool.submit(finish, ticket, item))
        while acks:
            yield acks.popleft().result()
    finally:
        pool.shutdown(wait=True)
