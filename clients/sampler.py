"""`Sampler`: an iterator over one SampleStream, prefetched by a background thread under the
server's credit-based flow control."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from replaybuf.errors import ClosedError
from replaybuf.shared_ring import ClientRing
from replaybuf.v1 import service_pb2

from ._convert import decode_sample, decode_stream_response
from ._errors import status_name
from ._retry import reconnect_delay
from ._stream import StreamHandle
from ._types import Sample

if TYPE_CHECKING:
    from .client import ReplayClient

__all__ = ["Sampler"]

_END = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _credit_messages(
    request: service_pb2.SampleRequest, unconsumed: int, credits: queue.SimpleQueue[int | None]
) -> Iterator[service_pb2.SampleStreamRequest]:
    """The client side of one SampleStream: the request (with the batches of earlier streams
    still unconsumed), then one message per wake-up acknowledging every batch consumed since
    (None half-closes)."""

    yield service_pb2.SampleStreamRequest(request=request, unconsumed=unconsumed)
    while True:
        n = credits.get()
        if n is None:
            return
        while True:  # coalesce acknowledgements that piled up meanwhile
            try:
                more = credits.get_nowait()
            except queue.Empty:
                break
            if more is None:
                yield service_pb2.SampleStreamRequest(consumed=n)
                return
            n += more
        yield service_pb2.SampleStreamRequest(consumed=n)


class Sampler(StreamHandle):
    """Batches from one SampleStream, decoded ahead of the consumer, with flow control.

    At most ``prefetch`` batches are drawn by the server and not yet returned by ``next()``:
    the stream starts with ``prefetch`` batches of credit, and batches returned by ``next()``
    are acknowledged (in groups of ``prefetch // 2``), letting the server draw as many more. A background thread receives and
    decodes them (and converts them to torch with ``as_torch``) into a local queue, so the
    learner's step and the network overlap; a learner that stops reading costs the server
    ``prefetch`` draws (each counted as sampled there), however much the transport could
    buffer. ``next()`` blocks until a batch is ready; a failed stream raises the mapped error
    from ``next()`` (batches received before it are delivered first). On UNAVAILABLE the
    thread reconnects with backoff and asks for the next seed (``last seed + 1``), the
    remaining ``num_batches``, telling the server how many batches it still holds unread (they
    count against the window), so a seeded run's
    batch seeds stay ``seed, seed + 1, ...`` across reconnects (a batch drawn by the server
    but lost in transit still counted as sampled there). Against a server without
    SampleStream it falls back to Sample, which bounds draws only by transport buffering.

    Thread-safety: ``next()`` may be called from several threads (each batch goes to one of
    them); `close` may be called from any thread and wakes a blocked ``next()``. Not
    fork-safe: use it in the process that created it (`replaybuf_client.torch.ReplayDataset`
    opens one per DataLoader worker).

    Example:
        >>> with client.sampler("replay", 256, beta=0.4, seed=0, num_batches=100) as batches:  # doctest: +SKIP
        ...     for batch in batches:
        ...         td = learner.step(batch.data, batch.info.weights)
        ...         client.update_priorities("replay", batch.info.item_ids, abs(td) + 1e-6)
    """

    def __init__(
        self,
        client: ReplayClient,
        request: service_pb2.SampleRequest,
        *,
        prefetch: int,
        as_torch: bool = False,
        pin_memory: bool = False,
        ring_slot_bytes: int | Callable[[], int] = 0,
    ) -> None:
        super().__init__()
        self._client = client
        self._request = request
        self._prefetch = prefetch
        self._as_torch = as_torch or pin_memory
        self._pin_memory = pin_memory
        # prefetch batches at most, plus the end marker or failure after them
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=prefetch + 1)
        self._received = 0
        self._next_seed: int | None = request.seed if request.HasField("seed") else None
        self._done = False
        # Flow control: batches received and not yet returned by next(), and the open
        # stream's acknowledgement queue, both guarded by _credit_lock.
        self._credit_lock = threading.Lock()
        self._unread = 0
        self._credits: queue.SimpleQueue[int | None] | None = None
        # Acknowledgements go out in groups of prefetch // 2: half as many messages (each
        # costs both processes CPU) while half the window still keeps the server busy. Never
        # a deadlock: when the server is out of credit, prefetch batches are consumed and
        # unacknowledged or unread, and a waiting consumer has read them all.
        self._ack_every = max(1, prefetch // 2)
        self._consumed = 0  # consumed and not yet acknowledged on the current stream
        self._streaming = True  # False: the server lacks SampleStream; use Sample
        # Each SampleStream offers a fresh shared ring of `prefetch` slots of this size (0:
        # none; a callable: ask it once, on the pump thread, since it may need a DescribeTable;
        # `ReplayClient.sampler`), owned by the pump thread.
        self._ring_bytes = ring_slot_bytes
        self._ring: ClientRing | None = None
        self.shared_batches = 0  # batches received through a ring
        client._register(self)
        self._thread = threading.Thread(target=self._pump, name="replaybuf-sampler", daemon=True)
        self._thread.start()

    @property
    def batches_received(self) -> int:
        """Batches received from the server so far (including prefetched, unread ones)."""

        return self._received

    def __iter__(self) -> Sampler:
        return self

    def __next__(self) -> Sample:
        if self._closed:
            raise ClosedError("this Sampler is closed; open a new one with client.sampler(...)")
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._done = True
            self._requeue_end()  # wake other consumers too
            if self._closed:
                raise ClosedError("this Sampler was closed while waiting for a batch")
            raise StopIteration
        if isinstance(item, _Failure):
            self._done = True
            self._requeue_end()
            raise item.error
        with self._credit_lock:
            self._unread -= 1
            self._consumed += 1
            if self._credits is not None and self._consumed >= self._ack_every:
                self._credits.put(self._consumed)  # the server may draw that many more
                self._consumed = 0
        return item  # type: ignore[no-any-return]

    def _requeue_end(self) -> None:
        try:
            self._queue.put_nowait(_END)
        except queue.Full:
            pass

    def close(self) -> None:
        """Cancel the stream and stop the thread. Idempotent; never blocks for long."""

        if not self._cancel():
            return
        with self._credit_lock:
            self._end_credits_locked()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)  # the pump polls the stop flag every 0.1 s
        # Drop prefetched batches and wake any consumer blocked in next().
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        try:
            self._queue.put_nowait(_END)
        except queue.Full:
            pass
        self._client._unregister(self)

    # -- background thread -------------------------------------------------------------------

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _end_credits_locked(self) -> None:
        """Half-close the current stream's acknowledgements (its request iterator ends)."""

        if self._credits is not None:
            self._credits.put(None)
            self._credits = None

    def _open(self, request: service_pb2.SampleRequest) -> Any:
        """Start a stream for ``request``; None when closed meanwhile.

        A SampleStream tells the server how many batches of earlier streams are still unread
        here, so a reconnect never lets it draw past the window: they count against the
        initial credit, and reading them grants credit on the new stream.
        """

        credits: queue.SimpleQueue[int | None] | None = None
        unconsumed = 0
        if self._streaming:
            with self._credit_lock:
                self._end_credits_locked()
                credits = queue.SimpleQueue()
                self._credits = credits
                unconsumed = self._unread  # the earlier stream's consumed ones need no ack
                self._consumed = 0
        ring = None
        if credits is not None and self._ring_bytes:
            if callable(self._ring_bytes):
                self._ring_bytes = self._ring_bytes()
            if self._ring_bytes:
                ring = ClientRing.create(self._ring_bytes, self._prefetch)
        with self._lock:
            if self._closed:
                if ring is not None:
                    ring.close()
                return None
            if credits is None:
                self._call = self._client._stub.Sample(request, metadata=self._client._metadata)
            else:
                self._ring = ring
                if ring is not None:
                    request.shared_ring.CopyFrom(ring.proto())
                self._call = self._client._sample_stream_raw(
                    _credit_messages(request, unconsumed, credits),
                    metadata=self._client._metadata,
                )
            return self._call

    def _pump(self) -> None:
        policy = self._client._retry
        failures = 0
        total = self._request.num_batches
        while not self._stop.is_set():
            request = service_pb2.SampleRequest()
            request.CopyFrom(self._request)
            if self._next_seed is not None:
                request.seed = self._next_seed
            if total:
                if self._received >= total:
                    self._put(_END)
                    return
                request.num_batches = total - self._received
            received_here = 0
            try:
                call = self._open(request)
                if call is None:
                    return
                ring = self._ring
                shared = False
                for response in call:
                    # SampleStream answers raw bytes (decoded without copies, or copied out of
                    # the shared ring); Sample answers protos
                    if isinstance(response, bytes):
                        batch, shared = decode_stream_response(response, ring)
                        self.shared_batches += shared
                        if ring is not None:
                            ring.unlink()  # the server has mapped it (or declined it)
                    else:
                        batch = decode_sample(response)
                    if self._as_torch:
                        from .torch import to_torch_sample

                        batch = to_torch_sample(batch, pin_memory=self._pin_memory,
                                                owned=shared)
                    self._received += 1
                    received_here += 1
                    self._next_seed = (batch.info.seed + 1) % (1 << 64)
                    failures = 0
                    with self._credit_lock:
                        self._unread += 1
                    if not self._put(batch):
                        return
                self._put(_END)
                return
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    return
                if (
                    self._streaming
                    and received_here == 0
                    and status_name(exc) == "UNIMPLEMENTED"
                ):
                    self._streaming = False  # an older server: Sample, without credit
                    continue
                error: BaseException = self._client._map(exc)
                delay = reconnect_delay(policy, error, failures)
                if delay is not None:
                    failures += 1
                    if self._stop.wait(delay):
                        return
                    continue
                self._put(_Failure(error))
                return
            except Exception as exc:  # noqa: BLE001 - decode/torch errors reach the consumer
                self._put(_Failure(exc))
                return
            finally:
                with self._credit_lock:
                    self._end_credits_locked()
                if self._ring is not None:
                    self._ring.close()
                    self._ring = None
