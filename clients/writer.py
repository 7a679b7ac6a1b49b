"""`Writer`: buffered, pipelined appends over one Append stream, with duplicate-free retries."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from replaybuf.errors import (
    ClosedError,
    InvalidArgumentError,
    RateLimitTimeoutError,
    ReplayError,
    SignatureMismatchError,
    UnavailableError,
)
from replaybuf.tensors import FieldSpec, check_batch
from replaybuf.v1 import service_pb2, table_pb2

from ._convert import coerce_columns, decode_ack, values_array
from ._wire import encode_append
from ._retry import reconnect_delay
from ._stream import Closing
from ._types import AppendResult, Lineage, WriterStats, _column

if TYPE_CHECKING:
    from .client import ReplayClient

__all__ = ["Writer", "MAX_IN_FLIGHT"]

#: Upper bound of ``max_in_flight``: well inside the server's dedup window (128 sequences per
#: producer), so every retried batch is still recognized.
MAX_IN_FLIGHT = 64

_USE_WRITER_TIMEOUT: Any = object()


@dataclass(eq=False)
class _Pending:
    seq: int
    request: bytes  # AppendRequest wire bytes (`encode_append`), resent as they are
    n: int


@dataclass(eq=False)
class _Stream:
    requests: queue.SimpleQueue[bytes | None]
    call: Any = None
    ending: bool = False
    thread: threading.Thread | None = field(default=None, repr=False)


def _request_iterator(q: queue.SimpleQueue[Any]) -> Iterator[bytes]:
    while True:
        item = q.get()
        if item is None:
            return
        yield item


def _cast_value(value: Any, spec: FieldSpec, table: str) -> np.ndarray:
    """One transition's field as an array of the spec's dtype and shape."""

    if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
        # Python scalars: any number into a float field; integers and bools only when exact.
        try:
            arr = np.asarray(value, dtype=spec.dtype)
        except (OverflowError, ValueError):
            arr = None
        if arr is None or (spec.dtype.kind != "f" and arr.item() != value):
            raise SignatureMismatchError(
                f"field {spec.name!r} of table {table!r}: {value!r} does not fit dtype {spec.dtype}"
            )
    else:
        arr = np.asarray(value)
        if arr.dtype != spec.dtype:
            if not np.can_cast(arr.dtype, spec.dtype, casting="same_kind"):
                raise SignatureMismatchError(
                    f"field {spec.name!r} of table {table!r} has dtype {arr.dtype}, expected "
                    f"{spec.dtype}; convert with .astype(np.{spec.dtype.name})"
                )
            arr = arr.astype(spec.dtype)
    if arr.shape != spec.shape:
        raise SignatureMismatchError(
            f"field {spec.name!r} of table {table!r} has shape {arr.shape} per transition, "
            f"expected {spec.shape} (use extend() for batches)"
        )
    return arr


_LINEAGE_NAMES = ("episode_id", "step", "request_id", "model_version", "timestamp_ms", "source")
_LINEAGE_SET = frozenset(_LINEAGE_NAMES)
_U64 = (0, 2**64)
_I64 = (-(2**63), 2**63)
#: Lineage column -> [lo, hi) of an integer column, or None for a str column.
_LINEAGE_RANGE: dict[str, tuple[int, int] | None] = {
    "episode_id": _U64, "step": _U64, "request_id": None,
    "model_version": _I64, "timestamp_ms": _I64, "source": None,
}


def _lineage_value(name: str, value: Any) -> int | str:
    """One transition's lineage value that is not a plain int/str, checked as the wire takes it."""

    values = _column(value, name)  # numpy scalars, 1-element arrays, bytes
    if len(values) != 1:
        raise InvalidArgumentError(
            f"lineage.{name} has {len(values)} values; add() takes one value per column for "
            "its transition (use extend() for batches)"
        )
    value = values[0]
    span = _LINEAGE_RANGE[name]
    if span is None:
        if not isinstance(value, str):
            raise InvalidArgumentError(f"lineage.{name}={value!r} must be a str")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not span[0] <= value < span[1]:
        raise InvalidArgumentError(
            f"lineage.{name}={value!r} must be an integer in [{span[0]}, {span[1] - 1}]"
        )
    return value


def _lineage_row(lineage: Any) -> tuple[tuple[str, ...], list[int | str]]:
    """The set lineage columns of one transition and their checked values, in wire order.

    Raises:
        InvalidArgumentError: an unknown column or a value the column cannot hold, named.
    """

    if lineage is None:
        return (), []
    if isinstance(lineage, Lineage):
        lineage = {name: getattr(lineage, name) for name in _LINEAGE_NAMES}
    elif not isinstance(lineage, Mapping):
        raise InvalidArgumentError(
            f"lineage must be a Lineage, a dict of its fields or None, not {type(lineage).__name__}"
        )
    elif not lineage.keys() <= _LINEAGE_SET:
        unknown = sorted(set(lineage) - _LINEAGE_SET)
        raise InvalidArgumentError(
            f"lineage has unknown key(s) {unknown}; use {list(_LINEAGE_NAMES)}"
        )
    names: list[str] = []
    values: list[int | str] = []
    for name in _LINEAGE_NAMES:  # a plain loop: this runs once per add()
        value = lineage.get(name)
        if value is None:
            continue
        span = _LINEAGE_RANGE[name]
        if span is None:
            if type(value) is not str:
                value = _lineage_value(name, value)
        elif type(value) is not int or not span[0] <= value < span[1]:
            value = _lineage_value(name, value)
        names.append(name)
        values.append(value)
    return tuple(names), values


class _Rows:
    """The batch being formed by `Writer.add`: one preallocated ``(max_batch, *shape)`` array
    per field, filled in place row by row, and lineage and priorities as lists.

    Sealing converts it to one AppendRequest (one copy of each column) and empties it for
    reuse. Not thread-safe: the writer's lock guards it.
    """

    def __init__(self, specs: list[FieldSpec], capacity: int, table: str) -> None:
        self._table = table
        self.columns = {spec.name: np.empty((capacity, *spec.shape), spec.dtype) for spec in specs}
        # (name, spec, buffer, scalar type that may be stored as is, or None)
        self._fields = [
            (spec.name, spec, self.columns[spec.name], _plain_scalar(spec)) for spec in specs
        ]
        self.n = 0
        self.kind: tuple[tuple[str, ...], bool] | None = None
        self.lineage: list[list[int | str]] = []
        self.priorities: list[float] = []
        self.first_at = 0.0

    def fill(self, row: Mapping[str, Any]) -> None:
        """Write ``row`` into the next free row; raises `SignatureMismatchError` (naming the
        field and the fix) and keeps nothing of the row if a value does not fit."""

        i = self.n
        for name, spec, buf, plain in self._fields:
            value = row[name]
            t = type(value)
            if t is np.ndarray:
                if value.dtype != spec.dtype or value.shape != spec.shape:
                    value = _cast_value(value, spec, self._table)
            elif t is not plain and t is not spec.dtype.type:
                value = _cast_value(value, spec, self._table)
            buf[i] = value

    def push(self, lineage: list[int | str], priority: float | None) -> None:
        """Keep the row just filled, with its lineage values and priority."""

        for column, value in zip(self.lineage, lineage):
            column.append(value)
        if priority is not None:
            self.priorities.append(priority)
        self.n += 1

    def start(self, kind: tuple[tuple[str, ...], bool]) -> None:
        self.kind = kind
        self.lineage = [[] for _ in kind[0]]
        self.first_at = time.monotonic()

    def take(self, table: str, producer_id: bytes, seq: int) -> bytes:
        """The rows as one request's wire bytes (one copy of each column); empties the buffer."""

        n = self.n
        lineage = None
        if self.kind is not None and self.kind[0]:
            lineage = table_pb2.Lineage()
            for name, values in zip(self.kind[0], self.lineage):
                getattr(lineage, name).extend(values)
        raw = encode_append(table, {name: buf[:n] for name, buf in self.columns.items()},
                            priorities=self.priorities, lineage=lineage,
                            producer_id=producer_id, producer_seq=seq)
        self.clear()
        return raw

    def clear(self) -> None:
        self.n = 0
        self.kind = None
        self.lineage = []
        self.priorities = []


def _plain_scalar(spec: FieldSpec) -> type | None:
    """The Python scalar type a scalar field takes without a check (float into a float field,
    bool into a bool field); None when every Python value goes through `_cast_value`."""

    if spec.shape:
        return None
    if spec.dtype.kind == "f":
        return float
    if spec.dtype.kind == "b":
        return bool
    return None


class Writer(Closing):
    """Buffers transitions and appends them in batches over one long-lived Append stream.

    `add` buffers one transition; every ``max_batch`` transitions (or after ``flush_interval``
    seconds, or on `flush`) the buffer becomes one batch. Batches are **pipelined**: the writer
    sends the next batch without waiting for the previous ack, keeping at most
    ``max_in_flight`` unacknowledged; past that, `add`/`extend` block until an ack frees a
    slot (backpressure from the server and its rate limiter). A background thread reads acks.

    Retries: each batch carries this writer's producer id and a sequence number. If the stream
    fails with UNAVAILABLE, the writer reconnects with exponential backoff and resends every
    unacknowledged batch with the **same** id and sequence, in order; the server answers a
    batch it already has with the original ids (``duplicate=True``), so nothing is appended
    twice and nothing acknowledged is lost. Any other error (or running out of attempts) fails
    the writer: the error is raised from the next call (and from `close`), naming how many
    batches were not acknowledged.

    Blocking: `add` and `extend` return at once unless ``max_in_flight`` batches are
    unacknowledged; `flush` and `close` wait for every ack. ``timeout`` bounds each of those
    waits (None = no bound). Thread-safety: all methods may be called from any thread (an
    internal lock serializes them; batches go out in the order they were formed). Not
    fork-safe: a writer belongs to the process that created its client.

    Example:
        >>> with client.writer("replay", max_batch=128) as writer:  # doctest: +SKIP
        ...     obs = env.reset()
        ...     for step in range(1000):
        ...         action = policy(obs)
        ...         next_obs, reward, done = env.step(action)
        ...         writer.add(obs=obs, action=action, reward=reward, next_obs=next_obs,
        ...                    done=done, lineage={"episode_id": 0, "step": step})
        ...         obs = next_obs

    Args:
        client: the owning client.
        table: table name.
        max_batch: transitions per batch (also splits `extend` input).
        flush_interval: send a partial batch once its oldest transition is this many seconds
            old (None: only when full or on flush).
        max_in_flight: most unacknowledged batches (1..64).
        timeout: bound in seconds of each blocking wait (None: unbounded). A wait for an
            in-flight slot that times out fails the writer with `RateLimitTimeoutError`.
        on_ack: called with each batch's `AppendResult`, from the ack thread, in order. An
            exception it raises fails the writer.
    """

    def __init__(
        self,
        client: ReplayClient,
        table: str,
        *,
        max_batch: int = 256,
        flush_interval: float | None = None,
        max_in_flight: int = 4,
        timeout: float | None = None,
        on_ack: Callable[[AppendResult], object] | None = None,
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise InvalidArgumentError(f"max_batch={max_batch!r} must be an int >= 1")
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or not 1 <= max_in_flight <= MAX_IN_FLIGHT
        ):
            raise InvalidArgumentError(
                f"max_in_flight={max_in_flight!r} must be an int in [1, {MAX_IN_FLIGHT}]"
            )
        if flush_interval is not None and not (
            isinstance(flush_interval, (int, float)) and flush_interval > 0
        ):
            raise InvalidArgumentError(f"flush_interval={flush_interval!r} must be seconds > 0 or None")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InvalidArgumentError(f"timeout={timeout!r} must be seconds > 0 or None")
        client._check_open()
        self._client = client
        self._table = table
        self._sig = client._signature(table)
        self._specs = list(self._sig.values())
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._flush_interval = flush_interval
        self._timeout = timeout
        self._ack_callback = on_ack
        self._producer_id = uuid.uuid4().bytes
        self._seq = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._names = frozenset(self._sig)
        # buffered transitions, all with the same lineage keys and priority presence
        # (allocated by the first add: a writer used only for extend() needs none)
        self._rows: _Rows | None = None
        # sent, unacknowledged batches in sequence order
        self._inflight: deque[_Pending] = deque()
        self._tickets = 0  # batches formed
        self._turn = 0  # batches sent; a batch waits for its turn so order is kept
        self._stream: _Stream | None = None
        self._reconnecting = False
        self._failures = 0
        self._error: BaseException | None = None
        self._error_raised = False
        self._closed = False
        self._abort = threading.Event()
        self._batches_sent = 0
        self._items_acked = 0
        self._duplicates = 0
        self._reconnects = 0
        self._last_lsn = 0
        client._register(self)
        self._ticker: threading.Thread | None = None
        if flush_interval is not None:
            self._ticker = threading.Thread(target=self._tick, name="replaybuf-writer-flush", daemon=True)
            self._ticker.start()

    # -- public ------------------------------------------------------------------------------

    @property
    def table(self) -> str:
        return self._table

    @property
    def producer_id(self) -> bytes:
        """The 16-byte producer id this writer's batches carry."""

        return self._producer_id

    @property
    def stats(self) -> WriterStats:
        """Counters since the writer opened (a consistent snapshot)."""

        with self._lock:
            return WriterStats(
                batches_sent=self._batches_sent,
                items_acked=self._items_acked,
                duplicates=self._duplicates,
                reconnects=self._reconnects,
                last_lsn=self._last_lsn,
            )

    @property
    def pending(self) -> int:
        """Transitions buffered or sent but not yet acknowledged."""

        with self._lock:
            buffered = self._rows.n if self._rows is not None else 0
            return buffered + sum(p.n for p in self._inflight)

    def add(
        self,
        transition: Mapping[str, Any] | None = None,
        /,
        *,
        lineage: Lineage | Mapping[str, Any] | None = None,
        priority: float | None = None,
        **fields: Any,
    ) -> None:
        """Buffer one transition: ``add(obs=..., reward=...)`` or ``add({"obs": ..., ...})``.

        Values are converted to the signature's dtypes (Python scalars when the value fits
        exactly, arrays under numpy's ``same_kind`` rule) and checked against its shapes here,
        so a bad transition raises `SignatureMismatchError` from this call and nothing of it
        is kept. They are copied into the batch being formed, so the caller may reuse its
        arrays at once. ``lineage`` holds one value per column for this transition, checked
        here too (`InvalidArgumentError` naming the column). Transitions with different lineage
        columns, or with and without ``priority``, go into different batches.

        Cost: a few µs of client CPU per call (each value is written in place into one
        preallocated array per field; each batch is converted to a request once, when sealed).
        Blocks only when a batch is formed and ``max_in_flight`` batches are unacknowledged.
        """

        if transition is None:
            row: Mapping[str, Any] = fields
        elif type(transition) is not dict and not isinstance(transition, Mapping):
            raise InvalidArgumentError(
                f"add() takes a dict or keyword fields, not {type(transition).__name__}"
            )
        else:
            row = {**transition, **fields} if fields else transition
        if row.keys() != self._names:
            missing = sorted(self._names - set(row))
            extra = sorted(set(row) - self._names)
            parts = ([f"missing field(s) {missing}"] if missing else []) + (
                [f"unknown field(s) {extra}"] if extra else []
            )
            raise SignatureMismatchError(
                f"transition for table {self._table!r} has {' and '.join(parts)}; the signature "
                f"is {sorted(self._sig)}"
            )
        lineage_names, lineage_values = _lineage_row(lineage)
        if priority is not None:
            priority = float(priority)
        kind = (lineage_names, priority is not None)
        with self._lock:
            self._check_usable()
            rows = self._rows
            if rows is None:
                rows = self._rows = _Rows(self._specs, self._max_batch, self._table)
            while rows.n and kind != rows.kind:  # a seal may wait, and others may add
                self._seal_locked()
            rows.fill(row)  # a bad value raises here, before the row counts
            if not rows.n:
                rows.start(kind)
            rows.push(lineage_values, priority)
            if rows.n >= self._max_batch:
                self._seal_locked()

    def extend(
        self,
        columns: Mapping[str, Any],
        *,
        priorities: Any = None,
        lineage: Lineage | Mapping[str, Any] | None = None,
    ) -> None:
        """Send n transitions given as columns (leading dimension n), in batches of ``max_batch``.

        Buffered `add` transitions are sent first, so order is kept. Blocks like `add`.
        ``priorities`` has n values; each ``lineage`` column one value or n.
        """

        cols = coerce_columns(columns, self._sig, table=self._table)
        n = check_batch(cols, self._specs, table=self._table)
        prio = None if priorities is None else values_array(priorities, n, "priorities")
        lin = Lineage.coerce(lineage)
        if lin is not None:
            lin.to_proto(n)  # validates column lengths before anything is sent
        with self._lock:
            self._check_usable()
            self._seal_locked()
            for start in range(0, n, self._max_batch):
                stop = min(n, start + self._max_batch)
                whole = start == 0 and stop == n
                part = cols if whole else {k: v[start:stop] for k, v in cols.items()}
                self._send_locked(lambda seq, part=part, start=start, stop=stop, whole=whole: encode_append(
                    self._table, part, priorities=None if prio is None else prio[start:stop],
                    lineage=None if lin is None else (
                        lin if whole else lin.slice(start, stop)).to_proto(stop - start),
                    producer_id=self._producer_id, producer_seq=seq), stop - start)

    def flush(self, timeout: Any = _USE_WRITER_TIMEOUT) -> None:
        """Send buffered transitions and wait until every batch is acknowledged.

        Args:
            timeout: seconds to wait (default: the writer's ``timeout``; None = no bound).

        Raises:
            RateLimitTimeoutError: acks did not arrive in time (the writer stays usable).
            ReplayError: the writer failed (the stream's error, e.g. `SignatureMismatchError`
                or `UnavailableError` after the last retry).
        """

        t = self._timeout if timeout is _USE_WRITER_TIMEOUT else timeout
        with self._lock:
            self._check_usable()
            self._seal_locked()
            self._wait_locked(lambda: not self._inflight, t, "flush")

    def close(self) -> None:
        """Flush, then end the stream. Idempotent.

        Blocks until every batch is acknowledged (bounded by ``timeout``). Raises the writer's
        error if it failed and the error was not raised before.
        """

        with self._lock:
            if self._closed:
                return
        try:
            if self._error is None:
                self.flush()
        finally:
            with self._lock:
                self._closed = True
                stream, self._stream = self._stream, None
                if stream is not None:
                    stream.ending = True
                    stream.requests.put(None)  # half-close: the server acks the rest and ends
            self._abort.set()
            if stream is not None and stream.thread is not None:
                stream.thread.join(timeout=5)
                if stream.thread.is_alive():
                    stream.call.cancel()
            if self._ticker is not None and self._ticker is not threading.current_thread():
                self._ticker.join(timeout=5)
            self._client._unregister(self)
        with self._lock:
            if self._error is not None and not self._error_raised:
                self._error_raised = True
                raise self._error

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        # The body failed: still send what it added, but let its exception propagate.
        try:
            self.close()
        except Exception as close_exc:  # noqa: BLE001
            if hasattr(exc, "add_note"):
                exc.add_note(f"closing the replaybuf Writer also failed: {close_exc!r}")

    def __repr__(self) -> str:
        return f"Writer({self._table!r}, producer={self._producer_id.hex()}, seq={self._seq})"

    # -- internals (called with self._lock held unless said otherwise) -----------------------

    def _check_usable(self) -> None:
        self._client._check_open()
        if self._closed:
            raise ClosedError(f"the writer for table {self._table!r} is closed; open a new one")
        if self._error is not None:
            self._error_raised = True
            raise self._error

    def _wait_locked(self, ready: Callable[[], bool], timeout: float | None, what: str) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ready():
            if self._error is not None:
                self._error_raised = True
                raise self._error
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise RateLimitTimeoutError(
                    f"writer {what} for table {self._table!r} waited {timeout:g} s for the server "
                    f"to acknowledge {len(self._inflight)} batch(es); the table's rate limiter "
                    "may be holding inserts back (is a learner sampling?). Pass a larger timeout= "
                    "or None"
                )
            self._cond.wait(remaining)
        if self._error is not None:
            self._error_raised = True
            raise self._error

    def _seal_locked(self) -> None:
        if self._rows is None or not self._rows.n:
            return
        rows = self._rows
        # copies out: the buffers are free again
        self._send_locked(lambda seq: rows.take(self._table, self._producer_id, seq), rows.n)

    def _send_locked(self, encode: Callable[[int], bytes], n: int) -> None:
        """Send the request that ``encode(producer_seq)`` returns, in turn. Batches are sent in
        the order they are formed, each with the next producer sequence, so this batch's
        sequence is known now: one more than the batches formed before it."""

        request = encode(self._tickets + 1)
        self._client._check_size(request, f"a writer batch of {n} items for {self._table!r} (dropped, not sent; lower max_batch)")
        ticket = self._tickets
        self._tickets += 1
        try:
            self._wait_locked(
                lambda: self._turn == ticket and len(self._inflight) < self._max_in_flight,
                self._timeout,
                "send",
            )
        except RateLimitTimeoutError as exc:
            # Later batches wait for this one's turn: a timed-out send cannot be skipped.
            self._fail_locked(exc)
            self._error_raised = True
            raise self._error from None
        self._seq += 1
        assert self._seq == ticket + 1, (self._seq, ticket)  # one sequence per batch formed
        self._inflight.append(_Pending(self._seq, request, n))
        self._turn += 1
        self._batches_sent += 1
        self._cond.notify_all()
        if self._stream is not None:
            self._stream.requests.put(request)
        elif not self._reconnecting:
            self._open_stream_locked()

    def _open_stream_locked(self) -> None:
        requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for pending in self._inflight:  # a reconnect resends every unacknowledged batch, in order
            requests.put(pending.request)
        stream = _Stream(requests)
        stream.call = self._client._append_raw(
            _request_iterator(requests), metadata=self._client._metadata
        )
        stream.thread = threading.Thread(
            target=self._read_acks, args=(stream,), name="replaybuf-writer-acks", daemon=True
        )
        self._stream = stream
        stream.thread.start()

    def _fail_locked(self, error: BaseException) -> None:
        if self._error is None:
            batches = len(self._inflight)
            buffered = self._rows.n if self._rows is not None else 0
            items = sum(p.n for p in self._inflight) + buffered
            if isinstance(error, ReplayError) and (batches or items):
                annotated = type(error)(
                    f"{error} [writer for table {self._table!r}: {batches} sent batch(es) and "
                    f"{buffered} buffered transition(s), {items} item(s) in all, were not "
                    "acknowledged and will not be retried]"
                )
                annotated.__cause__ = error
                error = annotated
            self._error = error
        self._inflight.clear()
        if self._rows is not None:
            self._rows.clear()
        self._abort.set()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.requests.put(None)
            if stream.call is not None:
                stream.call.cancel()
        self._cond.notify_all()

    # -- threads -----------------------------------------------------------------------------

    def _read_acks(self, stream: _Stream) -> None:
        """Ack reader of one stream (its own thread); hands failures to _on_stream_failure."""

        error: BaseException | None = None
        try:
            for ack in stream.call:
                self._on_ack(stream, ack)
        except grpc.RpcError as exc:
            error = self._client._map(exc)
        except Exception as exc:  # noqa: BLE001 - a protocol error or an on_ack exception
            error = exc
        else:
            with self._lock:
                if stream.ending or stream is not self._stream or not self._inflight:
                    if stream is self._stream:
                        self._stream = None
                    return
            error = UnavailableError(
                f"the server ended the Append stream of table {self._table!r} with batches "
                "unacknowledged"
            )
        self._on_stream_failure(stream, error)

    def _on_ack(self, stream: _Stream, ack: service_pb2.AppendAck) -> None:
        with self._lock:
            if stream is not self._stream:
                return
            if not self._inflight or self._inflight[0].seq != ack.producer_seq:
                expected = self._inflight[0].seq if self._inflight else None
                raise ReplayError(
                    f"Append ack for producer_seq {ack.producer_seq} but {expected} was expected; "
                    "the server broke the one-ack-per-request-in-order contract"
                )
            self._inflight.popleft()
            self._items_acked += len(ack.item_ids)
            self._duplicates += bool(ack.duplicate)
            self._last_lsn = max(self._last_lsn, int(ack.last_lsn))
            self._failures = 0
            self._cond.notify_all()
        if self._ack_callback is not None:
            self._ack_callback(decode_ack(ack))

    def _on_stream_failure(self, stream: _Stream, error: BaseException) -> None:
        policy = self._client._retry
        with self._lock:
            if stream is not self._stream:
                return
            self._stream = None
            stream.requests.put(None)
            if self._error is not None or self._closed:
                return
            if isinstance(error, UnavailableError) and not self._inflight:
                return  # an idle stream dropped: the next batch opens a new one
            delay = reconnect_delay(policy, error, self._failures)
            if delay is None:
                self._fail_locked(error)
                return
            self._failures += 1
            self._reconnecting = True
        aborted = self._abort.wait(delay)
        with self._lock:
            self._reconnecting = False
            if aborted or self._error is not None or self._closed:
                return
            self._reconnects += 1
            self._open_stream_locked()

    def _tick(self) -> None:
        interval = float(self._flush_interval or 0)
        while not self._abort.wait(max(0.005, interval / 4)):
            with self._lock:
                if self._closed or self._error is not None:
                    return
                rows = self._rows
                if rows is not None and rows.n and time.monotonic() - rows.first_at >= interval:
                    try:
                        self._seal_locked()
                    except Exception as exc:  # noqa: BLE001 - reported by the next call
                        self._fail_locked(exc)
                        return
