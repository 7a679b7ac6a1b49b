"""`ReplayClient`: one gRPC channel to a replaybuf server and every call of its API."""

from __future__ import annotations

import ipaddress
import math
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from replaybuf.errors import (
    ClosedError,
    InvalidArgumentError,
    MessageTooLargeError,
    ReplayError,
)
from replaybuf.shared_ring import SHARED_MIN_BYTES, slot_bytes_for
from replaybuf.tensors import FieldSpec, check_batch
from replaybuf.v1 import service_pb2, service_pb2_grpc

from ._audit_calls import AuditCalls
from ._convert import (
    coerce_columns,
    decode_ack,
    decode_sample,
    decode_table_info,
    ids_array,
    table_config_proto,
    values_array,
)
from ._errors import from_rpc_error, translate_errors
from ._retry import RetryPolicy, call_with_retry
from ._stream import Closing
from ._timeout import DEFAULT_TIMEOUT
from ._wire import encode_append, passthrough
from .sampler import Sampler
from ._types import (
    AppendResult,
    Lineage,
    Sample,
    TableInfo,
    TlsConfig,
    UpdateResult,
)
from .writer import Writer

__all__ = ["ReplayClient", "DEFAULT_TIMEOUT"]

_NO_RETRY = RetryPolicy(max_attempts=1)
_MiB = 1 << 20


def _is_loopback(address: str) -> bool:
    """Whether a gRPC target names this host: a Unix socket or a loopback host."""

    target = address
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target[len(scheme):]
            break
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    host = target.rsplit(":", 1)[0] if ":" in target and not target.endswith("]") else target
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: str | os.PathLike[str] | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


class ReplayClient(AuditCalls, Closing):
    """A connection to a replaybuf server: tables, appends, samples, feedback, lineage, events.

    One client holds one gRPC channel. It is **thread-safe**: any number of threads may call
    it at once (calls are multiplexed over the channel). It is **not fork-safe**: a client
    belongs to the process that created it, and calling it from a forked child raises
    `ClosedError`; create a new client in the child (`replaybuf_client.torch.ReplayDataset`
    does this for `DataLoader` workers). Methods block until the server answers, at most
    ``timeout`` seconds per attempt unless a call says otherwise. Writers, samplers and
    subscriptions each keep one stream open, which holds one of the server's worker threads
    (``ServerConfig.workers``) until closed.

    Errors are the engine's classes (`TableNotFoundError`, `SignatureMismatchError`,
    `RateLimitTimeoutError`, ...), mapped from the gRPC status and the server's
    ``replaybuf-error`` trailer. UNAVAILABLE is retried with exponential backoff and jitter
    (``retry``) for idempotent calls only: reads, samples, appends (a per-thread producer id and
    sequence make a retry deduplicate), evictions (evicting an absent item is a no-op) and
    ``create_table(exist_ok=True)``. `update_priorities` and `correct_rewards` are retried only
    with ``retry=True``: a retry can log the change twice and overwrite a newer value.

    The export, correction, eviction, job, lineage, review, diff and subscription calls live
    in `AuditCalls` (``_audit_calls.py``), which this class inherits.

    Example:
        >>> import numpy as np
        >>> from replaybuf_client import ReplayClient
        >>> with ReplayClient("127.0.0.1:50051") as client:  # doctest: +SKIP
        ...     client.create_table("replay", {"obs": (np.float32, (4,)), "reward": np.float32},
        ...                         capacity=10_000, exist_ok=True)
        ...     with client.writer("replay") as w:
        ...         for t in range(100):
        ...             w.add(obs=np.zeros(4, np.float32), reward=1.0, lineage={"step": t})
        ...     batch = client.sample("replay", 32, seed=0)
        ...     client.update_priorities("replay", batch.info.item_ids, np.ones(32))

    Args:
        address: ``"host:port"`` of the server.
        token: bearer token, sent as ``authorization: Bearer <token>`` metadata on every call.
        tls: None for plaintext, True for TLS with the system's roots, or a `TlsConfig` (root
            CA, and client certificate + key for mutual TLS).
        timeout: default deadline of each call attempt, in seconds (None waits forever).
            Streams (writers, samplers, subscriptions) have no overall deadline.
        max_message_bytes: largest message sent or received; batches beyond it fail with
            `MessageTooLargeError` before they are sent.
        retry: how UNAVAILABLE is retried (``RetryPolicy(max_attempts=1)`` disables it).
        options: extra gRPC channel options, e.g. ``[("grpc.keepalive_time_ms", 30_000)]``.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls: TlsConfig | bool | None = None,
        timeout: float | None = 30.0,
        max_message_bytes: int = 64 * _MiB,
        retry: RetryPolicy | None = None,
        options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        if not isinstance(address, str) or not address:
            raise InvalidArgumentError(f"address={address!r} must be 'host:port'")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InvalidArgumentError(f"timeout={timeout!r} must be seconds > 0, or None to wait forever")
        if not isinstance(max_message_bytes, int) or max_message_bytes < 1024:
            raise InvalidArgumentError(f"max_message_bytes={max_message_bytes!r} must be an int >= 1024")
        self._address = address
        self._timeout = None if timeout is None else float(timeout)
        self._max_message_bytes = max_message_bytes
        self._retry = retry if retry is not None else RetryPolicy()
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        channel_options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            *options,
        ]
        if tls is None or tls is False:
            self._channel = grpc.insecure_channel(address, options=channel_options)
        else:
            cfg = TlsConfig() if tls is True else tls
            if not isinstance(cfg, TlsConfig):
                raise InvalidArgumentError(f"tls={tls!r} must be None, True or a TlsConfig")
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(cfg.root_certificates),
                private_key=_read(cfg.private_key),
                certificate_chain=_read(cfg.certificate_chain),
            )
            self._channel = grpc.secure_channel(address, creds, options=channel_options)
        self._stub = service_pb2_grpc.ReplayServiceStub(self._channel)
        # SampleStream with the responses left as bytes: the sampler decodes them without
        # copying the tensors (`._wire`).
        self._sample_stream_raw = self._channel.stream_stream(
            "/replaybuf.v1.ReplayService/SampleStream",
            request_serializer=service_pb2.SampleStreamRequest.SerializeToString,
            response_deserializer=None,
        )
        # Append with requests already serialized (`._wire.encode_append`: one copy of each
        # tensor instead of three).
        self._append_raw = self._channel.stream_stream(
            "/replaybuf.v1.ReplayService/Append",
            request_serializer=passthrough,
            response_deserializer=service_pb2.AppendAck.FromString,
        )
        self._pid = os.getpid()
        self._closed = False
        self._closing = False
        self._lock = threading.Lock()
        self._children: weakref.WeakSet[Any] = weakref.WeakSet()
        self._signatures: dict[str, dict[str, FieldSpec]] = {}
        self._producers = threading.local()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The server address this client talks to."""

        return self._address

    @property
    def closed(self) -> bool:
        """True after `close`."""

        return self._closed

    def close(self) -> None:
        """Close writers (flushing them), samplers and subscriptions, then the channel.

        Idempotent. Blocks while open writers flush (each up to its own ``timeout``). In a
        forked child it only marks the client closed: the channel belongs to the parent.
        """

        with self._lock:
            if self._closed or self._closing:
                return
            self._closing = True
            children = list(self._children)
        if os.getpid() != self._pid:
            self._closed = True
            return
        errors: list[BaseException] = []
        for child in children:  # writers flush while the channel still works
            try:
                child.close()
            except BaseException as exc:  # noqa: BLE001 - close the rest, then report
                errors.append(exc)
        self._closed = True
        self._channel.close()
        if errors:
            raise errors[0]

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"ReplayClient({self._address!r}, {state})"

    # -- plumbing ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if os.getpid() != self._pid:
            raise ClosedError(
                f"this ReplayClient was created in process {self._pid} and cannot be used in "
                f"process {os.getpid()} (gRPC channels do not survive fork); create a new "
                "ReplayClient in this process"
            )
        if self._closed:
            raise ClosedError(f"ReplayClient({self._address!r}) is closed; create a new one")

    def _resolve(self, timeout: Any) -> float | None:
        if timeout is DEFAULT_TIMEOUT:
            return self._timeout
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InvalidArgumentError(f"timeout={timeout!r} must be seconds > 0, or None to wait forever")
        return None if timeout is None else float(timeout)

    def _map(self, exc: grpc.RpcError, timeout: float | None = None) -> ReplayError:
        return from_rpc_error(
            exc,
            target=self._address,
            timeout=timeout,
            max_message_bytes=self._max_message_bytes,
            closed=self._closed,
        )

    def _translate(self, timeout: float | None = None) -> Any:
        return translate_errors(
            target=self._address,
            timeout=timeout,
            max_message_bytes=self._max_message_bytes,
            closed=lambda: self._closed,
        )

    def _unary(self, method: str, request: Any, timeout: Any, *, idempotent: bool) -> Any:
        self._check_open()
        t = self._resolve(timeout)
        rpc = getattr(self._stub, method)

        def attempt() -> Any:
            self._check_open()
            with self._translate(t):
                return rpc(request, timeout=t, metadata=self._metadata)

        return call_with_retry(attempt, self._retry if idempotent else _NO_RETRY)

    def _register(self, child: Any) -> None:
        with self._lock:
            self._check_open()
            if self._closing:
                raise ClosedError(f"ReplayClient({self._address!r}) is closing; create a new one")
            self._children.add(child)

    def _unregister(self, child: Any) -> None:
        with self._lock:
            self._children.discard(child)

    def _signature(self, table: str) -> dict[str, FieldSpec]:
        """The table's signature by field name, fetched once per client (configs never change)."""

        sig = self._signatures.get(table)
        if sig is None:
            sig = self.describe_table(table).fields
        return sig

    def _next_producer(self) -> tuple[bytes, int]:
        # One producer per thread: a thread's appends are sequential, so a retry of sequence n
        # always reaches the server before n + 1 is sent.
        local = self._producers
        if getattr(local, "producer_id", None) is None:
            local.producer_id = uuid.uuid4().bytes
            local.seq = 0
        local.seq += 1
        return local.producer_id, local.seq

    def _check_size(self, request: Any, what: str) -> None:
        size = len(request) if isinstance(request, bytes) else request.ByteSize()
        if size > self._max_message_bytes:
            raise MessageTooLargeError(
                f"{what} is {size} bytes, over max_message_bytes={self._max_message_bytes}; send "
                "fewer items per batch or raise ReplayClient(max_message_bytes=...) and the "
                "server's limit"
            )

    # -- tables ------------------------------------------------------------------------------

    def create_table(
        self,
        config: Any = None,
        signature: Any = None,
        capacity: int | None = None,
        *,
        exist_ok: bool = False,
        timeout: Any = DEFAULT_TIMEOUT,
        **options: Any,
    ) -> TableInfo:
        """Create a table; blocks until it is in the log.

        Args:
            config: a ``replaybuf.v1.table_pb2.TableConfig``, any object with ``to_proto()``
                returning one (e.g. ``replaybuf.table_config.TableConfig``), a dict of the
                keywords below, or the table name.
            signature: with a name: ``{"obs": (np.float32, (17,)), "reward": np.float32, ...}``
                (dtype alone = scalar) or a list of `FieldSpec`.
            capacity: with a name: maximum number of items.
            exist_ok: succeed if an identical table exists (a different one still raises
                `AlreadyExistsError`). Only then is the call retried on UNAVAILABLE.
            timeout: seconds (default: the client's).
            **options: with a name: ``sampler`` ("prioritized", "uniform", "fifo", "lifo", a
                dict ``{"kind": ..., "alpha": ...}`` or a SelectorConfig; default prioritized),
                ``alpha`` (0.6), ``remover`` ("fifo"), ``max_times_sampled`` (0 = unlimited),
                ``min_size_to_sample`` (1), ``samples_per_insert`` and ``error_buffer`` (no
                ratio limit), ``rate_limiter`` (instead of the three), ``reward_field``,
                ``description``.

        Returns:
            The table as created (or found, with ``exist_ok``).
        """

        proto = table_config_proto(config, signature, capacity, **options)
        request = service_pb2.CreateTableRequest(config=proto, exist_ok=exist_ok)
        response = self._unary("CreateTable", request, timeout, idempotent=exist_ok)
        info = decode_table_info(response.table)
        self._signatures[info.name] = info.fields
        return info

    def list_tables(self, *, timeout: Any = DEFAULT_TIMEOUT) -> list[TableInfo]:
        """Every table with its live state. Blocks for one round trip; retried on UNAVAILABLE."""

        response = self._unary("ListTables", service_pb2.ListTablesRequest(), timeout, idempotent=True)
        infos = [decode_table_info(t) for t in response.tables]
        for info in infos:
            self._signatures[info.name] = info.fields
        return infos

    def describe_table(self, name: str, *, timeout: Any = DEFAULT_TIMEOUT) -> TableInfo:
        """One table's config and live state. Blocks for one round trip; retried on UNAVAILABLE.

        Raises:
            TableNotFoundError: no table has this name.
        """

        request = service_pb2.DescribeTableRequest(table=name)
        info = decode_table_info(self._unary("DescribeTable", request, timeout, idempotent=True))
        self._signatures[info.name] = info.fields
        return info

    # -- writing -----------------------------------------------------------------------------

    def _append_request(
        self,
        table: str,
        columns: Mapping[str, Any],
        priorities: Any,
        lineage: Lineage | Mapping[str, Any] | None,
    ) -> bytes:
        """The AppendRequest's wire bytes (`._wire.encode_append`), with the next producer
        sequence, after checking the batch against the table's signature."""

        sig = self._signature(table)
        cols = coerce_columns(columns, sig, table=table)
        n = check_batch(cols, list(sig.values()), table=table)
        prio = None if priorities is None else values_array(priorities, n, "priorities")
        lin = Lineage.coerce(lineage)
        proto = None if lin is None else lin.to_proto(n)
        producer_id, seq = self._next_producer()
        return encode_append(table, cols, priorities=prio, lineage=proto,
                             producer_id=producer_id, producer_seq=seq)

    def append(
        self,
        table: str,
        columns: Mapping[str, Any],
        *,
        priorities: Any = None,
        lineage: Lineage | Mapping[str, Any] | None = None,
        timeout: Any = DEFAULT_TIMEOUT,
    ) -> AppendResult:
        """Append one batch (all or nothing) and wait for its ack.

        Columns are cast to the signature's dtypes where numpy's ``same_kind`` rule allows
        (e.g. float64 -> float32) and checked against the signature before sending. Blocks
        for one round trip (longer while the table's rate limiter holds inserts back). Retried
        on UNAVAILABLE with the same producer id and sequence, so a retry never appends twice
        (``duplicate=True`` in the result tells that the first attempt had landed).

        Args:
            table: table name.
            columns: ``{field: array}``, every signature field, leading dimension n >= 1.
            priorities: n initial priorities (default: the table's max priority).
            lineage: a `Lineage` or dict of its fields, each one value or n values.
            timeout: seconds per attempt (default: the client's).

        Raises:
            SignatureMismatchError: missing/extra field, wrong dtype or shape.
            MessageTooLargeError: the batch exceeds ``max_message_bytes``.
        """

        self._check_open()
        request = self._append_request(table, columns, priorities, lineage)
        self._check_size(request, f"append of {table!r}")
        t = self._resolve(timeout)

        def attempt() -> AppendResult:
            self._check_open()
            with self._translate(t):
                acks = list(self._append_raw(iter((request,)), timeout=t, metadata=self._metadata))
            if len(acks) != 1:
                raise ReplayError(f"Append returned {len(acks)} acks for one batch; expected 1")
            return decode_ack(acks[0])

        return call_with_retry(attempt, self._retry)

    def writer(
        self,
        table: str,
        *,
        max_batch: int = 256,
        flush_interval: float | None = None,
        max_in_flight: int = 4,
        timeout: float | None = None,
        on_ack: Callable[[AppendResult], object] | None = None,
    ) -> Writer:
        """A buffered, pipelined `Writer` for ``table`` (use it as a context manager).

        Blocks for one DescribeTable round trip (cached per client) to learn the signature.
        See `Writer` for the arguments.
        """

        return Writer(
            self,
            table,
            max_batch=max_batch,
            flush_interval=flush_interval,
            max_in_flight=max_in_flight,
            timeout=timeout,
            on_ack=on_ack,
        )

    # -- sampling ----------------------------------------------------------------------------

    def _sample_request(
        self,
        table: str,
        batch_size: int,
        beta: float,
        seed: int | None,
        fields: Iterable[str] | None,
        timeout: float | None,
        prefetch: int,
        num_batches: int,
    ) -> service_pb2.SampleRequest:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size={batch_size!r} must be an int >= 1")
        request = service_pb2.SampleRequest(
            table=table,
            batch_size=int(batch_size),
            beta=float(beta),
            prefetch=int(prefetch),
            num_batches=int(num_batches),
            timeout_ms=0 if timeout is None else max(1, math.ceil(timeout * 1000)),
            fields=list(fields or ()),
        )
        if seed is not None:
            request.seed = int(seed) % (1 << 64)
        return request

    def sample(
        self,
        table: str,
        batch_size: int,
        *,
        beta: float = 0.4,
        seed: int | None = None,
        fields: Iterable[str] | None = None,
        timeout: Any = DEFAULT_TIMEOUT,
        as_torch: bool = False,
        pin_memory: bool = False,
        at_lsn: int | None = None,
    ) -> Sample:
        """Draw one batch (with ``at_lsn`` and ``seed``: replay the draw made at that LSN;
        not logged, changes no counts).

        Blocks until the table's rate limiter allows the draw, at most ``timeout`` seconds
        (default: the client's; None waits forever), then raises `RateLimitTimeoutError`.
        Retried on UNAVAILABLE (a retry is a fresh draw with the same seed).

        Args:
            table: table name.
            batch_size: items per batch.
            beta: importance-weight exponent in [0, 1].
            seed: seed of the draw (None: the server picks one; see ``info.seed``).
            fields: fields to return (default all).
            timeout: seconds to wait for the rate limiter.
            as_torch: return torch tensors (one copy each) instead of numpy views.
            pin_memory: with ``as_torch``, put them in page-locked memory (needs an
                accelerator; warns and skips otherwise).

        Returns:
            A `Sample`. With numpy output ``data`` holds **read-only views** over the response
            bytes (no copy); copy an array before writing to it.
        """

        self._check_open()
        t = self._resolve(timeout)
        request = self._sample_request(table, batch_size, beta, seed, fields, t, 1, 1)
        if at_lsn:
            request.at_lsn = int(at_lsn)
        # The server's rate-limit timeout answers first, with its precise error and message.
        deadline = None if t is None else t + 1.0

        def attempt() -> Sample:
            self._check_open()
            with self._translate(deadline):
                responses = list(self._stub.Sample(request, timeout=deadline, metadata=self._metadata))
            if len(responses) != 1:
                raise ReplayError(f"Sample returned {len(responses)} batches; expected 1")
            return decode_sample(responses[0])

        batch = call_with_retry(attempt, self._retry)
        if as_torch or pin_memory:
            from .torch import to_torch_sample

            batch = to_torch_sample(batch, pin_memory=pin_memory)
        return batch

    def sampler(
        self,
        table: str,
        batch_size: int,
        *,
        beta: float = 0.4,
        seed: int | None = None,
        fields: Iterable[str] | None = None,
        prefetch: int = 2,
        num_batches: int = 0,
        timeout: Any = None,
        as_torch: bool = False,
        pin_memory: bool = False,
        shared_memory: bool | None = None,
    ) -> Sampler:
        """An iterator of batches over one SampleStream (see `Sampler`); close it when done.

        Returns at once; a background thread starts prefetching immediately. Flow control:
        at most ``prefetch`` (1..64) batches are drawn by the server and not yet returned by
        ``next()``, so a learner that pauses costs at most ``prefetch`` draws (each counts as
        sampled on the server). ``timeout`` bounds each batch's wait for the rate limiter
        (default None: wait forever, as a learner usually wants). Batch k uses ``seed + k``;
        after a reconnect the stream continues with the next seed, so the sequence of seeds
        has no gaps or repeats.

        ``shared_memory``: receive the batches through a ring of shared memory under
        ``/dev/shm`` instead of in the gRPC messages (`replaybuf.shared_ring`: two copies of
        each batch instead of six or more; the info still comes over gRPC). None (default)
        offers a ring when the server's address is a loopback one and a batch is at least
        1 MiB (the sampler's thread asks the table's signature once, with one DescribeTable,
        unless this client knows it already); True offers one
        whatever the address and size; False never. A server that cannot open the ring
        (another host or user) sends the data in the messages, so offering is always safe.
        Batches received through a ring are writable arrays of the client's own memory.
        """

        self._check_open()
        t = None if timeout is None else self._resolve(timeout)
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise InvalidArgumentError(f"prefetch={prefetch!r} must be an int >= 1")
        if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 0:
            raise InvalidArgumentError(f"num_batches={num_batches!r} must be an int >= 0 (0 = endless)")
        if shared_memory not in (None, True, False):
            raise InvalidArgumentError(
                f"shared_memory={shared_memory!r} must be None (automatic), True or False"
            )
        request = self._sample_request(table, batch_size, beta, seed, fields, t, prefetch, num_batches)
        ring_bytes: Any = 0
        if shared_memory is True or (shared_memory is None and _is_loopback(self._address)):
            ring_bytes = lambda: self._ring_slot_bytes(request, shared_memory)  # noqa: E731
        return Sampler(self, request, prefetch=prefetch, as_torch=as_torch, pin_memory=pin_memory,
                       ring_slot_bytes=ring_bytes)

    def _ring_slot_bytes(self, request: service_pb2.SampleRequest,
                         shared_memory: bool | None) -> int:
        """Slot size of the shared ring a sampler offers (0: none); see `sampler`. Called on
        the sampler's thread: may ask the server for the table's signature."""

        try:
            signature = self._signature(request.table)
        except ReplayError:
            return 0  # an unknown table: the stream itself reports it
        wanted = list(request.fields) or list(signature)
        specs = {name: signature[name] for name in wanted if name in signature}
        size = slot_bytes_for(specs, request.batch_size)
        if shared_memory is None and size < SHARED_MIN_BYTES:
            return 0
        return size

    # -- feedback ----------------------------------------------------------------------------

    def update_priorities(
        self,
        table: str,
        ids: Any,
        priorities: Any,
        *,
        source: str = "",
        timeout: Any = DEFAULT_TIMEOUT,
        retry: bool = False,
    ) -> UpdateResult:
        """Set new raw priorities (finite, >= 0), one per id; logged as PrioritiesUpdated.

        ``source`` names who computed them (e.g. ``"learner-0"``); lineage shows it.

        Blocks for one round trip. Ids that were evicted meanwhile are skipped and reported.
        Not retried unless ``retry=True``: setting a priority twice is harmless to the value
        but a retry logs a second event and may overwrite a newer update by another learner.

        Raises:
            InvalidPriorityError: a priority is NaN, infinite or negative.
        """

        item_ids = ids_array(ids)
        values = values_array(priorities, len(item_ids), "priorities")
        request = service_pb2.UpdatePrioritiesRequest(
            table=table, item_ids=item_ids.tolist(), priorities=values.tolist(), source=source
        )
        response = self._unary("UpdatePriorities", request, timeout, idempotent=retry)
        return UpdateResult(int(response.lsn), np.array(response.missing_ids, dtype=np.uint64))
