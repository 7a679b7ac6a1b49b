"""`ReplayServicer`: the ``replaybuf.v1.ReplayService`` RPCs, as thin calls into the engine.

Each method decodes the request, calls `replaybuf.engine.Engine`, and encodes the reply.
Validation lives in the engine (which checks everything before logging); the servicer only
checks the wire-level knobs that the engine does not see (``prefetch``, ``num_batches``, ...).
Errors become statuses in `replaybuf_server.status`, nowhere else.

Blocking: an engine call that waits for the rate limiter is made in short slices so that a
client cancel or a server shutdown ends it within `WAIT_SLICE` seconds; a slice that times out
has changed nothing, so retrying it is safe.

Shutdown (`begin_shutdown`, then `drain`): new RPCs get UNAVAILABLE, open streams end with
UNAVAILABLE after the message in progress (an Append stream acks the batch being written),
and `drain` waits for every engine call still running so the engine can be closed after.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf import message_factory

from replaybuf.engine import Engine, EngineConfig
from replaybuf.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    MessageTooLargeError,
    NotFoundError,
    RateLimitTimeoutError,
    UnavailableError,
)
from replaybuf.events import decode_event, event_table
from replaybuf.export import ContentHasher, chunk_to_proto
from replaybuf.file_log import FileLogConfig
from replaybuf.materialize import DEFAULT_CHUNK_ITEMS
from replaybuf.shared_ring import ServerRing
from replaybuf.table_config import TableConfig
from replaybuf.v1 import events_pb2, service_pb2, service_pb2_grpc

from .append_stream import serve_appends
from .codec import (
    AppendRequestView, decode_append_request, encode_log_event, encode_sample,
    encode_shared_sample, passthrough_serializer,
)
from .metrics import EngineSnapshot, ServerMetrics, TableSnapshot
from .status import streaming, unary
from .streams import (
    END,
    WAIT_SLICE,
    Cancelled,
    Credit,
    CreditReader,
    Failure,
    ReadAhead,
    follow,
)

__all__ = [
    "ReplayServicer",
    "add_servicer_to_server",
    "open_engine",
    "engine_snapshot",
    "WAIT_SLICE",
    "MAX_PREFETCH",
]

_logger = logging.getLogger("replaybuf_server")

#: Most batches a Sample or SampleStream stream may keep in flight.
MAX_PREFETCH = 64
_DEFAULT_PREFETCH = 2
_U64 = 2**64

T = TypeVar("T")


def open_engine(config: Any, on_fatal: Callable[[BaseException], None] | None = None) -> Engine:
    """Open the engine on ``config.data_dir`` with ``config.fsync`` (a `ServerConfig`).

    Args:
        on_fatal: called once when a log write or fsync fails (`FileLogConfig.on_fatal`);
            the engine refuses every call afterwards, and the process should exit.
    """

    log = FileLogConfig(fsync=config.fsync, on_fatal=on_fatal)
    return Engine(config.data_dir, EngineConfig(log=log, view_sync=config.view_sync))


def engine_snapshot(engine: Engine) -> EngineSnapshot:
    """What the metrics read from the engine at a scrape."""

    tables = tuple(
        TableSnapshot(
            name=info.name,
            size=info.size,
            capacity=info.capacity,
            total_priority=info.total_priority,
            max_priority=info.max_priority,
            metrics=dict(info.metrics),
        )
        for info in engine.list_tables()
    )
    return EngineSnapshot(
        tables=tables,
        applied_lsn=engine.applied_lsn,
        durable_lsn=engine.durable_lsn,
        last_lsn=engine.log.last_lsn,
    )


class ReplayServicer(service_pb2_grpc.ReplayServiceServicer):
    """Serves the RPCs of ``proto/replaybuf/v1/service.proto`` on one engine. Thread-safe.

    Args:
        engine: the open engine (the caller closes it).
        metrics: where to count calls, items and latencies (a private one by default).
        max_message_bytes: the largest reply; a sample batch that would encode larger fails
            with RESOURCE_EXHAUSTED naming the setting.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        metrics: ServerMetrics | None = None,
        max_message_bytes: int = 64 * 2**20,
    ) -> None:
        self._engine = engine
        self._metrics = metrics if metrics is not None else ServerMetrics()
        self._max_message_bytes = max_message_bytes
        self._shutdown = threading.Event()
        self._calls = 0
        self._calls_cond = threading.Condition()

    # -- plumbing -----------------------------------------------------------------------------

    def _observe(self, method: str, code: str, seconds: float | None) -> None:
        self._metrics.observe(method, code, seconds)

    @contextmanager
    def _engine_call(self, *, finishing: bool = False) -> Iterator[Engine]:
        """Count a call into the engine; refuse it once shutdown began, unless it
        `finishing` one that began before (an append's fsync and view write)."""

        with self._calls_cond:
            if self._shutdown.is_set() and not finishing:
                raise UnavailableError(
                    "the server is shutting down; retry on another server or after it restarts"
                )
            self._calls += 1
        try:
            yield self._engine
        finally:
            with self._calls_cond:
                self._calls -= 1
                self._calls_cond.notify_all()

    def _call(self, fn: Callable[[Engine], T]) -> T:
        with self._engine_call() as engine:
            return fn(engine)

    def _blocking(
        self,
        fn: Callable[[Engine, float], T],
        *,
        timeout: float | None,
        cancelled: Callable[[], bool],
        what: str,
    ) -> T:
        """Call ``fn(engine, slice_timeout)`` until it does not time out on the rate limiter.

        Raises:
            RateLimitTimeoutError: still blocked after ``timeout`` seconds (None: forever).
            UnavailableError: the server began shutting down while waiting.
            Cancelled: the client went away.
        """

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if cancelled():
                raise Cancelled()
            left = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
            try:
                with self._engine_call() as engine:
                    return fn(engine, max(left, 0.0))
            except RateLimitTimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise RateLimitTimeoutError(
                        f"{what}: the table's rate limiter blocked for {timeout:g} s "
                        f"(timeout_ms={round(timeout * 1000)}); insert more items, sample less "
                        f"often, or raise timeout_ms (0 waits forever)"
                    ) from None

    def begin_shutdown(self) -> None:
        """Refuse new engine calls and tell open streams to end (idempotent)."""

        self._shutdown.set()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no engine call is running; False on timeout."""

        deadline = None if timeout is None else time.monotonic() + timeout
        with self._calls_cond:
            while self._calls:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._calls_cond.wait(left)
        return True

    def _shutting_down_error(self, what: str) -> UnavailableError:
        return UnavailableError(
            f"{what}: the server is shutting down; reconnect and resume (after restart or "
            "on another server)"
        )

    # -- tables -------------------------------------------------------------------------------

    @unary("CreateTable")
    def CreateTable(
        self, request: service_pb2.CreateTableRequest, context: grpc.ServicerContext
    ) -> Any:
        if not request.HasField("config"):
            raise InvalidArgumentError("config is missing; send the TableConfig to create")
        config = TableConfig.from_proto(request.config)
        info = self._call(lambda e: e.create_table(config, exist_ok=request.exist_ok))
        return service_pb2.CreateTableResponse(table=info.to_proto(), lsn=info.created_lsn)

    @unary("ListTables")
    def ListTables(
        self, request: service_pb2.ListTablesRequest, context: grpc.ServicerContext
    ) -> Any:
        infos = self._call(lambda e: e.list_tables())
        return service_pb2.ListTablesResponse(tables=[i.to_proto() for i in infos])

    @unary("DescribeTable")
    def DescribeTable(
        self, request: service_pb2.DescribeTableRequest, context: grpc.ServicerContext
    ) -> Any:
        return self._call(lambda e: e.describe_table(request.table)).to_proto()

    # -- append -------------------------------------------------------------------------------

    @streaming("Append")
    def Append(
        self, request_iterator: Iterator[AppendRequestView], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        """One engine append and one ack per request, in order; the first bad batch ends the
        stream with its status (after the acks of the requests before it). Up to
        `APPEND_WINDOW` requests are in flight at once, sharing fsyncs and view writes
        (`server.append_stream`). Waits for the rate limiter as long as the client stays."""

        requests = ReadAhead(request_iterator, self._shutdown)
        self._metrics.active_streams.labels("Append").inc()
        try:
            yield from serve_appends(
                requests, lambda request: self._begin_append(request, context),
                self._finish_append)
            if requests.stopped:
                raise self._shutting_down_error("Append")
        except Cancelled:
            return
        finally:
            requests.close()
            self._metrics.active_streams.labels("Append").dec()

    def _begin_append(self, request: AppendRequestView,
                      context: grpc.ServicerContext) -> tuple[Any, float]:
        started = time.perf_counter()
        data = request.batch()  # tensors as views of the received bytes, logged as they came
        priorities = None
        if request.priorities:
            priorities = np.asarray(request.priorities, dtype=np.float64)
        lineage = request.lineage if request.HasField("lineage") else None
        producer_id = bytes(request.producer_id) or None
        producer_seq = request.producer_seq if producer_id is not None else None
        if producer_id is None and request.producer_seq:
            raise InvalidArgumentError(
                f"producer_seq={request.producer_seq} without producer_id; send the 16-byte "
                "producer_id with it (or neither, to opt out of deduplication)"
            )
        ticket = self._blocking(
            lambda e, wait: e.begin_append(
                request.table, data, priorities=priorities, lineage=lineage,
                producer_id=producer_id, producer_seq=producer_seq, timeout=wait,
            ),
            timeout=None,
            cancelled=lambda: not context.is_active(),
            what=f"Append to table {request.table!r}",
        )
        return ticket, started

    def _finish_append(self, begun: tuple[Any, float], request: AppendRequestView) -> Any:
        ticket, started = begun
        with self._engine_call(finishing=True):
            ack = ticket.result()
        self._metrics.latency.labels("Append").observe(time.perf_counter() - started)
        if ack.duplicate:
            self._metrics.duplicate_appends.labels(request.table).inc()
        else:
            self._metrics.appends.labels(request.table).inc()
            self._metrics.items_appended.labels(request.table).inc(len(ack.item_ids))
        return ack.to_proto(request.producer_seq)

    # -- sample -------------------------------------------------------------------------------

    @streaming("Sample")
    def Sample(
        self, request: service_pb2.SampleRequest, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        """A producer thread draws batches ``seed + k`` and encodes them while the stream
        sends earlier ones. ``prefetch`` bounds the batches drawn but not yet taken by gRPC;
        HTTP/2 flow control may hold many more in the transport (thousands, if batches are
        tiny), which is why `SampleStream` exists. A client cancel or a shutdown stops the
        producer within `WAIT_SLICE` seconds."""

        prefetch = self._prefetch(request)
        yield from self._sample_batches(
            request, context, Credit(prefetch), release_on_send=True, method="Sample"
        )

    @streaming("SampleStream")
    def SampleStream(
        self, request_iterator: Iterator[service_pb2.SampleStreamRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[Any]:
        """`Sample` drawn against the client's credit: ``prefetch`` batches at first (less those
        the client carries over from an earlier stream), one more per batch the client
        acknowledges (read by a `CreditReader` thread). A client that
        reads nothing costs ``prefetch`` draws; one that half-closes gets the batches its
        credit allows, then OK. Cancel or shutdown end it within `WAIT_SLICE` seconds."""

        stop = threading.Event()
        context.add_callback(stop.set)
        reader = CreditReader(request_iterator)
        ring: ServerRing | None = None
        try:
            first = reader.first(stop, self._shutdown)
            if first is None:
                if self._shutdown.is_set() and not stop.is_set():
                    raise self._shutting_down_error("SampleStream")
                return  # the client went away (or half-closed) before asking for anything
            if not first.HasField("request"):
                raise InvalidArgumentError(
                    "SampleStream: the first message must carry `request` (the SampleRequest); "
                    f"got consumed={first.consumed}"
                )
            request = first.request
            prefetch = self._prefetch(request)
            if first.unconsumed > prefetch:
                raise InvalidArgumentError(
                    f"SampleStream: unconsumed={first.unconsumed} exceeds prefetch={prefetch}; "
                    "a client holds at most prefetch batches of its earlier stream"
                )
            credit = Credit(prefetch - first.unconsumed, carried=first.unconsumed)
            errors: queue.SimpleQueue[BaseException] = queue.SimpleQueue()
            if request.HasField("shared_ring"):
                ring = ServerRing.open(request.shared_ring, prefetch)

            def on_error(exc: BaseException) -> None:
                errors.put(exc)
                stop.set()

            reader.attach(credit, on_error)
            yield from self._sample_batches(
                request, context, credit, release_on_send=False, method="SampleStream",
                stop=stop, errors=errors, ring=ring,
            )
        finally:
            reader.close()
            if ring is not None:
                ring.close()

    @staticmethod
    def _prefetch(request: service_pb2.SampleRequest) -> int:
        prefetch = request.prefetch or _DEFAULT_PREFETCH
        if prefetch > MAX_PREFETCH:
            raise InvalidArgumentError(
                f"prefetch={request.prefetch} is too large; keep at most {MAX_PREFETCH} batches "
                "in flight (default 2)"
            )
        return prefetch

    def _sample_batches(
        self,
        request: service_pb2.SampleRequest,
        context: grpc.ServicerContext,
        credit: Credit,
        *,
        release_on_send: bool,
        method: str,
        stop: threading.Event | None = None,
        errors: queue.SimpleQueue[BaseException] | None = None,
        ring: ServerRing | None = None,
    ) -> Iterator[bytes]:
        """The response stream of Sample and SampleStream: encoded batches, one draw per unit
        of ``credit``; with a client's shared ``ring`` (SampleStream only), gathered into it.

        ``release_on_send`` (Sample) frees a batch's credit as soon as gRPC takes it, and a
        producer thread draws the next batches while earlier ones are sent. Without it
        (SampleStream) only the client's acknowledgements free credit; the stream then waits
        for credit between draws anyway, so this thread draws itself (one thread handoff less
        per batch). ``errors`` carries a failure found outside the draws (a bad client
        message); it ends the stream.
        """

        if stop is None:
            stop = threading.Event()
            context.add_callback(stop.set)
        self._metrics.active_streams.labels(method).inc()
        try:
            if release_on_send:
                batches = self._drawn_ahead(request, stop, credit)
            else:
                batches = self._draws(request, stop, credit, ring)
            for payload in batches:
                if errors is not None and not errors.empty():
                    raise errors.get()
                credit.count_sent()  # before the yield: the client may acknowledge it at once
                yield payload
                if release_on_send:
                    credit.release()  # gRPC asks for the next one: the transport took this one
                self._metrics.sample_batches.labels(request.table).inc()
                self._metrics.items_sampled.labels(request.table).inc(request.batch_size)
            if errors is not None and not errors.empty():
                raise errors.get()
        except Cancelled:
            return
        finally:
            stop.set()
            credit.wake()  # a producer waiting for credit ends now
            self._metrics.active_streams.labels(method).dec()

    def _drawn_ahead(
        self, request: service_pb2.SampleRequest, stop: threading.Event, credit: Credit
    ) -> Iterator[bytes]:
        """`_draws` run by a producer thread, handed over through a queue."""

        out: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def produce() -> None:
            try:
                for payload in self._draws(request, stop, credit):
                    out.put(payload)
                out.put(END)
            except BaseException as exc:  # noqa: BLE001 - handed to the stream, which maps it
                out.put(Failure(exc))

        producer = threading.Thread(
            target=produce, name=f"replaybuf-sample:{request.table}", daemon=True
        )
        producer.start()
        while True:
            item = out.get()
            if item is END:
                return
            if isinstance(item, Failure):
                raise item.exc
            yield item

    def _draws(
        self, request: service_pb2.SampleRequest, stop: threading.Event, credit: Credit,
        ring: ServerRing | None = None,
    ) -> Iterator[bytes]:
        """Encoded batches ``seed + k``, each drawn once a unit of credit is available; ends
        when ``num_batches`` are drawn, ``stop`` is set or no more credit can come. With a
        ``ring``, batch k's rows are gathered into slot ``k % slots`` and the message says
        where (a batch that does not fit goes in the message).

        Raises:
            UnavailableError: the server began shutting down.
            Cancelled: the client went away while the rate limiter held a draw back.
        """

        timeout = request.timeout_ms / 1000 if request.timeout_ms else None
        seed = request.seed if request.HasField("seed") else None
        fields = list(request.fields) or None
        k = 0
        what = f"Sample from table {request.table!r}"
        while not request.num_batches or k < request.num_batches:
            if not credit.acquire(stop, self._shutdown):
                if self._shutdown.is_set() and not stop.is_set():
                    raise self._shutting_down_error(what)
                return  # cancelled, failed, or the client will grant no more credit
            batch_seed = None if seed is None else (seed + k) % _U64
            out = None if ring is None else ring.slot(k)
            started = time.perf_counter()
            try:
                sample = self._blocking(
                    lambda e, wait: e.sample(
                        request.table, request.batch_size, beta=request.beta,
                        seed=batch_seed, timeout=wait, fields=fields,
                        at_lsn=request.at_lsn or None, out=out,
                    ),
                    timeout=timeout,
                    cancelled=stop.is_set,
                    what=what,
                )
            except UnavailableError:
                raise self._shutting_down_error(what) from None
            if seed is None:
                seed = sample.info.seed
            shared = None if ring is None else ring.describe(k, sample.data)
            if shared is not None:
                payload = encode_shared_sample(shared, sample.info)
                self._metrics.sample_shared_batches.labels(request.table).inc()
            else:
                payload = encode_sample(sample.data, sample.info)
            del sample, out  # nothing of this stream views the slot once it is sent
            if len(payload) > self._max_message_bytes:
                raise MessageTooLargeError(
                    f"{what}: a batch of {request.batch_size} encodes to {len(payload)} "
                    f"bytes, more than max_message_bytes={self._max_message_bytes}; lower "
                    "batch_size, request fewer fields, or raise the server's "
                    "--max-message-bytes (and the client's max_receive_message_length)"
                )
            self._metrics.latency.labels("Sample").observe(time.perf_counter() - started)
            yield payload
            k += 1

    # -- changes to items ---------------------------------------------------------------------

    @unary("UpdatePriorities")
    def UpdatePriorities(
        self, request: service_pb2.UpdatePrioritiesRequest, context: grpc.ServicerContext
    ) -> Any:
        ids = np.asarray(request.item_ids, dtype=np.uint64)
        priorities = np.asarray(request.priorities, dtype=np.float64)
        result = self._call(
            lambda e: e.update_priorities(request.table, ids, priorities, source=request.source)
        )
        return service_pb2.UpdatePrioritiesResponse(
            lsn=result.lsn, missing_ids=result.missing_ids.tolist()
        )

    @unary("CorrectRewards")
    def CorrectRewards(
        self, request: service_pb2.CorrectRewardsRequest, context: grpc.ServicerContext
    ) -> Any:
        ids = np.asarray(request.item_ids, dtype=np.uint64)
        rewards = np.asarray(request.rewards, dtype=np.float64)
        result = self._call(
            lambda e: e.correct_rewards(
                request.table, ids, rewards,
                source=request.source or events_pb2.FEEDBACK_SOURCE_HUMAN,
                fidelity_weight=(
                    request.fidelity_weight if request.HasField("fidelity_weight") else 1.0
                ),
                reason=request.reason,
                author=request.author,
            )
        )
        return service_pb2.CorrectRewardsResponse(
            lsn=result.lsn, missing_ids=result.missing_ids.tolist()
        )

    @unary("Evict")
    def Evict(self, request: service_pb2.EvictRequest, context: grpc.ServicerContext) -> Any:
        ids = np.asarray(request.item_ids, dtype=np.uint64)
        reason = request.reason or events_pb2.EVICTION_REASON_MANUAL
        result = self._call(
            lambda e: e.evict(
                request.table, ids, reason=reason, job_id=request.job_id, detail=request.detail
            )
        )
        return service_pb2.EvictResponse(
            lsn=result.lsn, evicted=result.evicted, missing_ids=result.missing_ids.tolist()
        )

    # -- job runs -----------------------------------------------------------------------------

    @unary("RecordJob")
    def RecordJob(
        self, request: service_pb2.RecordJobRequest, context: grpc.ServicerContext
    ) -> Any:
        if not request.HasField("job"):
            raise InvalidArgumentError("job is missing; send the JobCompleted to record")
        retrain = request.retrain if request.HasField("retrain") else None
        first, last = self._call(lambda e: e.record_job(request.job, retrain))
        return service_pb2.RecordJobResponse(first_lsn=first, last_lsn=last)

    @unary("GetJob")
    def GetJob(self, request: service_pb2.GetJobRequest, context: grpc.ServicerContext) -> Any:
        job = self._call(lambda e: e.get_job(request.job_id))
        if job is None:
            raise NotFoundError(f"no job run {request.job_id!r} was recorded")
        return job

    # -- the log ------------------------------------------------------------------------------

    @streaming("Subscribe")
    def Subscribe(
        self, request: service_pb2.SubscribeRequest, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        from_lsn = request.from_lsn or 1  # 0 (unset) reads from the start
        tables = frozenset(request.tables)
        stop = threading.Event()
        context.add_callback(stop.set)
        self._metrics.active_streams.labels("Subscribe").inc()
        try:
            # Counted as one engine call: the engine (and its log) stays open until this ends.
            with self._engine_call() as engine:
                log = engine.log
                end = log.last_lsn
                if from_lsn > end + 1:
                    raise FailedPreconditionError(
                        f"from_lsn={from_lsn} is beyond the end of the log (last LSN {end}); "
                        f"resume from at most {end + 1}"
                    )
                if request.follow:
                    # Under always/group only fsynced events are sent (an unsynced one could
                    # still be lost); under interval/none acks are not durable either.
                    durable_only = engine.config.log.fsync in ("always", "group")
                    records = follow(log, from_lsn, stop, self._shutdown, durable_only)
                else:
                    records = log.read(from_lsn, engine.applied_lsn)
                last = from_lsn - 1
                for rec in records:
                    if stop.is_set():
                        return
                    if self._shutdown.is_set():
                        break
                    event = decode_event(rec.payload, lsn=rec.lsn)  # refuses damaged/too-new
                    if not tables or event_table(event) in tables:
                        yield encode_log_event(rec.lsn, rec.payload)
                    last = rec.lsn
                if self._shutdown.is_set() and not stop.is_set():
                    raise UnavailableError(
                        f"Subscribe: the server is shutting down; resubscribe with "
                        f"from_lsn={last + 1} to miss nothing"
                    )
        finally:
            self._metrics.active_streams.labels("Subscribe").dec()

    @unary("GetLineage")
    def GetLineage(
        self, request: service_pb2.GetLineageRequest, context: grpc.ServicerContext
    ) -> Any:
        return self._call(lambda e: e.get_lineage(request.item_id)).to_proto()

    @unary("FindItems")
    def FindItems(
        self, request: service_pb2.FindItemsRequest, context: grpc.ServicerContext
    ) -> Any:
        criterion = request.WhichOneof("criterion")
        if criterion is None:
            raise InvalidArgumentError(
                "FindItems needs one criterion: request_id, model_version or episode_id"
            )
        kw = {criterion: getattr(request, criterion)}
        return self._call(
            lambda e: e.find_items(request.table, include_evicted=request.include_evicted,
                                   limit=request.limit, **kw)
        ).to_proto()

    @streaming("Export")
    def Export(
        self, request: service_pb2.ExportRequest, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        """Chunks of the table as of the LSN; the last one carries the manifest (one chunk
        is held back so the manifest can ride on it)."""

        fields = list(request.fields) or None
        with self._engine_call() as engine, engine.as_of(
                request.table, request.as_of_lsn or None) as m:
            info = m.info(fields)
            hasher = ContentHasher(info)
            # Keep each message well under max_message_bytes (writers ignore the chunking).
            row = 128 + sum(dt.itemsize * int(np.prod(shape)) for _, dt, shape in info.fields)
            per_chunk = max(1, min(request.chunk_items or DEFAULT_CHUNK_ITEMS,
                                   self._max_message_bytes // 2 // row))
            last = None
            for chunk in m.chunks(per_chunk, fields):
                if context.is_active() is False:
                    return
                hasher.update(chunk)
                if last is not None:
                    yield chunk_to_proto(last)
                last = chunk
            msg = chunk_to_proto(last) if last is not None else service_pb2.ExportChunk()
            msg.manifest.CopyFrom(hasher.manifest_proto())
            yield msg

    # -- review and audit (issue 6) -----------------------------------------------------------

    @unary("FlagForReview")
    def FlagForReview(
        self, request: service_pb2.FlagForReviewRequest, context: grpc.ServicerContext
    ) -> Any:
        ids = np.asarray(request.item_ids, dtype=np.uint64)
        result = self._call(lambda e: e.flag_for_review(
            request.table, ids, reason=request.reason, author=request.author))
        return service_pb2.FlagForReviewResponse(
            lsn=result.lsn, missing_ids=result.missing_ids.tolist()
        )

    @unary("ListPendingReviews")
    def ListPendingReviews(
        self, request: service_pb2.ListPendingReviewsRequest, context: grpc.ServicerContext
    ) -> Any:
        reviews = self._call(lambda e: e.list_pending_reviews(request.table, request.limit))
        return service_pb2.ListPendingReviewsResponse(reviews=[r.to_proto() for r in reviews])

    @unary("ApplyLabel")
    def ApplyLabel(
        self, request: service_pb2.ApplyLabelRequest, context: grpc.ServicerContext
    ) -> Any:
        first, last = self._call(lambda e: e.apply_label(
            request.table, request.item_id, request.verdict,
            reward=request.reward if request.HasField("reward") else None,
            priority=request.priority if request.HasField("priority") else None,
            author=request.author, note=request.note))
        return service_pb2.ApplyLabelResponse(first_lsn=first, last_lsn=last)

    @unary("Diff")
    def Diff(self, request: service_pb2.DiffRequest, context: grpc.ServicerContext) -> Any:
        return self._call(lambda e: e.diff(
            request.from_lsn, request.to_lsn, request.table or None)).to_proto()


def add_servicer_to_server(servicer: ReplayServicer, server: grpc.Server) -> None:
    """Register the servicer like the generated ``add_ReplayServiceServicer_to_server``, except
    that Sample and Subscribe send pre-encoded ``bytes`` as they are, and Append's requests keep
    their tensors in the received bytes (`codec.AppendRequestView`)."""

    service = service_pb2.DESCRIPTOR.services_by_name["ReplayService"]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        kwargs = dict(
            request_deserializer=(decode_append_request if method.name == "Append"
                                  else request_cls.FromString),
            response_serializer=passthrough_serializer(response_cls.SerializeToString),
        )
        behaviour = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(behaviour, **kwargs)
        elif method.client_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(behaviour, **kwargs)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(behaviour, **kwargs)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(behaviour, **kwargs)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)

