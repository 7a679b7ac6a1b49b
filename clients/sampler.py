"""`Sampler`: an iterator over one Sample server stream, prefetched by a background thread."""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any

import grpc

from replaybuf.errors import ClosedError
from replaybuf.v1 import service_pb2

from ._convert import decode_sample
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


class Sampler(StreamHandle):
    """Batches from one Sample stream, decoded ahead of the consumer.

    The server keeps up to ``prefetch`` batches in flight; a background thread receives and
    decodes them (and converts them to torch with ``as_torch``) into a queue of ``prefetch``
    more, so the learner's step and the network overlap. ``next()`` blocks until a batch is
    ready; a failed stream raises the mapped error from ``next()`` (batches received before
    it are delivered first). On UNAVAILABLE the thread reconnects with backoff and asks for the
    next seed (``last seed + 1``) and the remaining ``num_batches``, so a seeded run's batch
    seeds stay ``seed, seed + 1, ...`` across reconnects (a batch drawn by the server but lost
    in transit still counted as sampled there).

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
    ) -> None:
        super().__init__()
        self._client = client
        self._request = request
        self._as_torch = as_torch or pin_memory
        self._pin_memory = pin_memory
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=prefetch)
        self._received = 0
        self._next_seed: int | None = request.seed if request.HasField("seed") else None
        self._done = False
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
            try:
                with self._lock:
                    if self._closed:
                        return
                    self._call = self._client._stub.Sample(request, metadata=self._client._metadata)
                for response in self._call:
                    batch = decode_sample(response)
                    if self._as_torch:
                        from .torch import to_torch_sample

                        batch = to_torch_sample(batch, pin_memory=self._pin_memory)
                    self._received += 1
                    self._next_seed = (batch.info.seed + 1) % (1 << 64)
                    failures = 0
                    if not self._put(batch):
                        return
                self._put(_END)
                return
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    return
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
