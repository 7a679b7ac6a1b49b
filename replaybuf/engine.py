"""The in-process replay engine: tables over an event log and its LMDB view, without gRPC.

Every change is an event appended to the log first; then, in the same call, it is applied to the
LMDB view (one write transaction that also stores ``applied_lsn``) and mirrored in the tables'
RAM state. On open the engine loads the tables from the view, replays the log from the view's
``applied_lsn + 1``, and rebuilds the view from scratch when it is missing, damaged, from another
log or ahead of the log. Live writes, catch-up and rebuild share one code path
(`View.write` + `Table.mirror`), so a rebuilt engine equals the one that wrote the log.

Data directory: ``DIR/log/`` (`replaybuf.file_log.FileLog`) and ``DIR/view/`` (LMDB).

Threads and locks:

* One *writer lock* orders every change: validate -> assign ids, pick victims -> build events
  -> queue the frame in the log (`Log.begin_append` fixes its LSNs). An append then releases
  the lock and waits for its fsync outside it, so concurrent appends share one group commit;
  frames are applied to the view in LSN order, several per view transaction when they became
  durable together, then mirrored in RAM (`replaybuf.write_pipeline`). Every other change waits
  under the lock until no append is in flight, so it sees the state a fully serialized engine
  would show.
* Each table has a lock held only for RAM work: a sample's draw and gather, or mirroring one
  event. Sampling never waits for a log append or fsync, only for one mirror step.
* Rate-limiter waits happen before any lock is taken.
* A *sample recorder* thread logs each draw as ``ItemsSampled`` (and ``ItemsEvicted`` with
  reason MAX_TIMES_SAMPLED for items it retired) through the writer path, coalescing pending
  draws into one frame, so times sampled, retirements and the limiter's sample count survive a
  restart without an fsync on the sampling path. A crash can forget the draws of the last few
  milliseconds (those not yet logged); `Engine.flush_samples` waits until all are logged.

Durability: under the ``group`` (default) and ``always`` fsync policies an append returns
after its frame is fsynced, so the view never holds a non-durable event (``applied_lsn <=
durable_lsn``). Under ``interval`` and ``none`` the ack says ``durable=False`` and the view may
run ahead of ``durable_lsn`` until the next log sync; a process crash loses nothing, and after
a power loss the view is found ahead of the log on open and rebuilt.

The read-only questions about the past (lineage, reverse lookups, pending reviews, job runs,
diffs, tables as of an LSN, export, replay of a draw) are `replaybuf.engine_history`, a mixin;
changes to stored items (priorities, reward corrections, evictions, job runs, review flags and
labels) are `replaybuf.engine_feedback`, another.
"""

from __future__ import annotations

import logging
import numbers
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import lmdb
import numpy as np

from replaybuf.errors import (
    AlreadyExistsError, ClosedError, FailedPreconditionError, InvalidArgumentError,
    TableNotFoundError,
)
from replaybuf.applier import mirror_steps
from replaybuf.engine_config import EngineConfig, _is_int
from replaybuf.engine_feedback import EngineFeedback, _priorities
from replaybuf.engine_history import _U64_MAX, EngineHistory
from replaybuf.events import (
    EVENT_VERSION, decode_event, encode_event, encode_event_with_batch, make_event,
)
from replaybuf.file_log import FileLog
from replaybuf.lineage import Lineage
from replaybuf.locks import FairLock
from replaybuf.rate_limiter import Reservation
from replaybuf.log import AppendResult, Log, PendingAppend
from replaybuf.recorder import RecordedDraw, SampleRecorder
from replaybuf.results import (
    AppendAck,
    Sample,
    TableInfo,
    sample_from_draw,
)
from replaybuf.table import SlotAllocator, Table
from replaybuf.table_config import TableConfig
from replaybuf.table_snapshot import (
    TableState, older_columns, read_snapshot, remove_snapshot, write_snapshot,
)
from replaybuf.tensors import check_batch, from_batch, to_batch
from replaybuf.v1 import events_pb2, tensor_pb2
from replaybuf.view import Applied, View, ViewDamagedError
from replaybuf.wire_batch import EncodedBatch
from replaybuf.write_pipeline import AppendTicket, InFlight, WritePipeline
from replaybuf.rolling_metrics import RollingMetrics

__all__ = ["Engine", "EngineConfig"]

_logger = logging.getLogger(__name__)


class _Clock:
    """The LSN up to which the RAM state is mirrored (engine-wide)."""

    lsn = 0


class Engine(EngineFeedback, EngineHistory):
    """Replay tables over an event log and an LMDB view, in-process. See the module docstring.

    Thread-safety: every method is thread-safe; one writer path, many samplers. Use as a
    context manager or call `close`.

    Example::

        import numpy as np, tempfile
        from replaybuf.engine import Engine, EngineConfig
        from replaybuf.table_config import TableConfig

        with Engine(tempfile.mkdtemp(), EngineConfig.for_tests()) as engine:
            engine.create_table(TableConfig("replay", {"obs": (np.float32, (4,)),
                                                       "reward": np.float32}, capacity=100))
            ack = engine.append("replay", {"obs": np.zeros((8, 4), np.float32),
                                           "reward": np.ones(8, np.float32)},
                                lineage={"episode_id": 1, "step": np.arange(8)})
            batch = engine.sample("replay", 4, seed=0)
            assert batch.data["obs"].shape == (4, 4) and batch.info.seed == 0
    """

    def __init__(self, data_dir: str | Path, config: EngineConfig | None = None, *,
                 log: Log | None = None) -> None:
        """Open (or create) the engine in `data_dir`.

        Args:
            data_dir: directory holding ``log/`` and ``view/``.
            config: settings (default `EngineConfig()`: group fsync, 1 TiB sparse map).
            log: an open `Log` to use instead of ``DIR/log`` (the engine will not close it).

        Cost: reading the view (one scan, about 1 s per million small items) plus replaying
        the log past the view's ``applied_lsn``; a rebuild replays the whole log.
        """

        self.config = config if config is not None else EngineConfig()
        if not isinstance(self.config, EngineConfig):
            raise InvalidArgumentError(f"config is {config!r}; pass an EngineConfig or None")
        self.path = Path(data_dir)
        self.path.mkdir(parents=True, exist_ok=True)
        self._own_log = log is None
        self._log: Log = log if log is not None else FileLog(self.path / "log", self.config.log)
        self._write_lock = FairLock()
        self._clock = _Clock()
        self._tables: dict[str, Table] = {}
        self._by_index: dict[int, Table] = {}
        self._new_slots: dict[int, SlotAllocator] = {}
        self._closed = False
        self._failure: BaseException | None = None
        self._seed_lock = threading.Lock()
        self._seeds = np.random.default_rng(self.config.seed)
        self.rebuild_reason: str | None = None
        """Why the view was rebuilt on open (None when it was caught up)."""
        self.loaded_from = ""
        """How the tables were loaded on open: "snapshot" (the file written at the last clean
        close, `replaybuf.table_snapshot`), "scan+snapshot" (a scan of the view that took the
        payloads older than the snapshot from it: after a crash) or "scan" (of the view)."""
        self._rolling = RollingMetrics()
        self._metric_sources: list[Callable[[str], Mapping[str, float]]] = []
        self._pipeline = WritePipeline(self._write_view, self._mirror, self._fail)
        self._next_id = 0  # past the ids of appends in flight (writer lock)
        try:
            self._view = self._open_view()
            self._evict_retired()
        except BaseException:
            if getattr(self, "_view", None) is not None:
                self._view.close()
            if self._own_log:
                self._log.close()
            raise
        self._recorder = SampleRecorder(
            write=self._record, lock=self._write_lock,
            max_pending=self.config.max_pending_samples, window=self.config.record_window,
            on_error=self._fail, name=f"replaybuf-recorder:{self.path}")

    # -- opening ------------------------------------------------------------------------------

    def _open_view(self) -> View:
        self._log.sync()
        end = self._log.durable_lsn
        damaged: str | None = None
        for attempt in range(2):
            view, reason = View.open(self.path / "view", log_id=self._log.log_id, log_end=end,
                                     map_size=self.config.map_size,
                                     max_readers=self.config.max_readers,
                                     sync=self.config.view_sync)
            view.fold_min = self.config.fold_draws
            self.rebuild_reason = damaged or reason
            self._view = view
            try:
                self._load_tables(view)
                self._catch_up(end)
                return view
            except (ViewDamagedError, lmdb.Error) as exc:
                view.close()
                if attempt:
                    raise
                damaged = f"view {view.path} is damaged ({exc})"
                _logger.warning("%s; rebuilding it from the log", damaged)
                shutil.rmtree(view.path, ignore_errors=True)
        raise AssertionError("unreachable")

    def _load_tables(self, view: View) -> None:
        # The snapshot written at the last clean close, when it is of exactly this view as it
        # is (else, e.g. after a crash, the scan): the same state without reading each item.
        configs = {rec.index: rec.config for rec in view.tables()}
        states, why = read_snapshot(view.path, view.snapshot_key(), configs)
        if states is not None:
            try:
                self._fill_tables(view, states)
                self.loaded_from = "snapshot"
                return
            except ValueError as exc:
                why = f"the snapshot does not fit the tables ({exc})"
        else:  # after a crash it is older than the view, but its payloads still hold
            older, _ = read_snapshot(view.path, view.snapshot_key(), configs, older=True)
            if older is not None:
                try:
                    self._fill_tables(view, None, older)
                    self.loaded_from = "scan+snapshot"
                    return
                except ValueError as exc:
                    why += f"; its payloads do not fit the tables ({exc})"
        _logger.info("loading the tables by a scan of the view: %s", why)
        self._fill_tables(view, None)
        self.loaded_from = "scan"

    def _fill_tables(self, view: View, states: Mapping[int, TableState] | None,
                     older: Mapping[int, TableState] | None = None) -> None:
        """Tables from `states` (a snapshot of the view as it is), else from a scan of the
        view that reads only the payloads newer than `older` (an older snapshot's)."""

        self._tables, self._by_index, self._new_slots = {}, {}, {}
        first = next(iter(older.values())).next_item_id if older else 0
        loaded = view.load(payloads_from=first) if states is None else {}
        for rec in view.tables():
            t = Table(rec.index, rec.config, created_lsn=rec.created_lsn, clock=self._clock)
            st = view.stats(rec.index)
            counts = dict(inserts=st.inserts, samples=st.samples, evictions=st.evictions)
            if states is None:
                metas, rows = loaded.pop(rec.index)
                cols = (older_columns(metas["item_id"], rows, older[rec.index], rec.config)
                        if older else None)
                t.load(metas, rows, columns=cols, **counts)
            else:
                state = states[rec.index]
                t.load_state(state, view.times_sampled(rec.index, state.ids), **counts)
            self._tables[rec.name] = t
            self._by_index[rec.index] = t
        self._clock.lsn = view.applied_lsn

    def _save_snapshot(self) -> None:
        """At a clean close (writer lock held): the tables' state for the next open."""

        view = self._view
        remove_snapshot(view.path)
        if self._failure is not None or self._clock.lsn != view.applied_lsn:
            return  # RAM may differ from the view: the next open scans
        try:
            tables = [(t.index, t.config, t.export_state())
                      for _, t in sorted(self._by_index.items())]
            write_snapshot(view.path, view.snapshot_key(), tables,
                           sync=self.config.view_sync or self.config.log.fsync != "none")
        except (OSError, ValueError) as exc:  # the next open scans instead
            _logger.warning("could not write the tables' snapshot in %s: %s", view.path, exc)

    def _catch_up(self, to_lsn: int) -> None:
        batch: list[tuple[int, events_pb2.Event]] = []
        size = 0
        for rec in self._log.read(self._view.applied_lsn + 1, to_lsn):
            batch.append((rec.lsn, decode_event(rec.payload, lsn=rec.lsn)))
            size += len(rec.payload)
            if len(batch) >= self.config.catch_up_events or size >= self.config.catch_up_bytes:
                self._apply(batch, live=False)
                batch, size = [], 0
        if batch:
            self._apply(batch, live=False)

    def _evict_retired(self) -> None:
        # Items past max_times_sampled whose eviction never reached the log (the recorder logs
        # both in one frame, so only a log written otherwise has them) would hold their slots.
        for name, t in self._tables.items():
            ids = t.retired_ids()
            if ids.size:
                self._commit([make_event(items_evicted=events_pb2.ItemsEvicted(
                    table=name, item_ids=ids.tolist(),
                    reason=events_pb2.EVICTION_REASON_MAX_TIMES_SAMPLED,
                    detail="reached max_times_sampled before the engine was reopened"))])

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc

    # -- the write path (callers hold the writer lock) ----------------------------------------

    def _slots_for(self, idx: int, config: TableConfig) -> SlotAllocator:
        t = self._by_index.get(idx)
        if t is not None:
            return t.allocator
        return self._new_slots.setdefault(idx, SlotAllocator(config.capacity))

    def _apply(self, records: list[tuple[int, events_pb2.Event]], *, live: bool,
               columns: Mapping[int, Mapping[str, np.ndarray]] | None = None) -> list[Applied]:
        applied = self._write_view(records, columns)
        self._mirror(records, applied, live=live)
        return applied

    def _write_view(self, records: list[tuple[int, events_pb2.Event]],
                    columns: Mapping[int, Mapping[str, np.ndarray]] | None) -> list[Applied]:
        return self._view.write(records, self._slots_for, columns=columns)

    def _mirror(self, records: list[tuple[int, events_pb2.Event]], applied: list[Applied], *,
                live: bool = True) -> None:
        for a in mirror_steps(applied, live=live):  # runs of appends (draws) in one step
            if a.kind == "table_created" and a.table >= 0:
                rec = next(r for r in self._view.tables() if r.index == a.table)
                t = Table(a.table, rec.config, created_lsn=a.lsn, clock=self._clock,
                          allocator=self._new_slots.pop(a.table, None))
                self._tables[rec.name] = t
                self._by_index[a.table] = t
            elif a.table >= 0:
                self._by_index[a.table].mirror(a, live=live)
        self._clock.lsn = records[-1][0]
        self._rolling.observe(applied, self._reward_field)

    def _reward_field(self, name: str) -> str | None:
        t = self._tables.get(name)
        return t.config.reward_field if t is not None and t.config.has_reward else None

    def _commit(self, events: list[events_pb2.Event], *, producer_id: bytes | None = None,
                producer_seq: int | None = None,
                ) -> tuple[AppendResult, list[Applied]]:
        """Log `events` as one frame, then apply them (writer lock held, pipeline settled)."""

        pending, entry = self._begin(events, producer_id=producer_id, producer_seq=producer_seq)
        if entry is None:
            return pending.wait(), []
        return self._pipeline.finish(entry)

    def _begin(self, events: list[events_pb2.Event], *, producer_id: bytes | None = None,
               producer_seq: int | None = None,
               columns: Mapping[str, np.ndarray] | None = None, table: int = -1,
               added: int = 0, victims: np.ndarray | None = None,
               payloads: list[bytes] | None = None, reservation: Reservation | None = None,
               ) -> tuple[PendingAppend, InFlight | None]:
        """Queue `events` as one log frame and in the write pipeline (writer lock held);
        `WritePipeline.finish` then waits for the fsync and applies it. `columns`: the
        validated arrays of the last event (an ItemsAppended), so the view does not decode its
        tensors again; `payloads`: the events already encoded (an append whose batch came
        encoded). No entry for a producer's retry (nothing new was logged)."""

        if payloads is None:
            payloads = [encode_event(e) for e in events]
        pending = self._log.begin_append(payloads,
                                         producer_id=producer_id, producer_seq=producer_seq)
        if pending.duplicate:
            return pending, None
        decoded = {pending.last_lsn: columns} if columns is not None else None
        return pending, self._pipeline.begin(InFlight(pending, events, decoded, table=table,
                                                      added=added, victims=victims,
                                                      reservation=reservation))

    def _check_open(self) -> None:
        if self._failure is not None:
            raise FailedPreconditionError(
                f"engine {self.path} stopped after a failure in its write path "
                f"({type(self._failure).__name__}: {self._failure}); close and reopen it to "
                f"recover from the log"
            ) from self._failure
        if self._closed:
            raise ClosedError(f"engine {self.path} is closed; open a new Engine")

    def _check_settled(self) -> None:
        """`_check_open`, then wait until no append is in flight (writer lock held): a change
        other than an append sees, and is applied after, every frame logged before it."""

        self._check_open()
        self._pipeline.settle()

    def _table(self, name: object) -> Table:
        t = self._tables.get(name) if isinstance(name, str) else None
        if t is None:
            raise TableNotFoundError(
                f"table {name!r} does not exist; create it first (tables: {sorted(self._tables)})"
            )
        return t

    # -- tables -------------------------------------------------------------------------------

    def create_table(self, config: TableConfig, *, exist_ok: bool = False) -> TableInfo:
        """Create a table (logged as ``TableCreated``).

        Args:
            config: the table's configuration.
            exist_ok: an existing table with an identical config is not an error.

        Raises:
            AlreadyExistsError: a table of that name exists (with another config, or
                `exist_ok` is False).
        """

        if not isinstance(config, TableConfig):
            raise InvalidArgumentError(f"config is {config!r}; pass a TableConfig")
        with self._write_lock:
            self._check_settled()
            old = self._tables.get(config.name)
            if old is not None:
                if exist_ok and old.config == config:
                    return self.describe_table(config.name)
                raise AlreadyExistsError(
                    f"table {config.name!r} already exists"
                    + (" with another config" if exist_ok else "; pass exist_ok=True to reuse it")
                )
            self._commit([make_event(table_created=events_pb2.TableCreated(
                config=config.to_proto()))])
        return self.describe_table(config.name)

    def list_tables(self) -> list[TableInfo]:
        """Every table's `TableInfo`, by name."""

        self._check_open()
        return [self.describe_table(n) for n in sorted(self._tables)]

    def describe_table(self, name: str) -> TableInfo:
        """One table's config and live state. O(1) (O(capacity) right after the max-priority
        item left)."""

        self._check_open()
        t = self._table(name)
        return TableInfo(
            config=t.config, size=t.size, total_priority=t.total_priority(),
            max_priority=t.max_priority(), rate_limiter=t.limiter.stats(),
            applied_lsn=self._view.applied_lsn, durable_lsn=self._log.durable_lsn,
            created_lsn=t.created_lsn,
            metrics={**self._rolling.snapshot(name), **self._extra_metrics(name)},
        )

    def add_table_metrics(self, source: Callable[[str], Mapping[str, float]]) -> None:
        """Add a source of extra ``TableInfo.metrics`` (``source(table) -> {key: value}``),
        e.g. the server's job scheduler (`replaybuf.jobs.scheduler`)."""

        self._metric_sources.append(source)

    def _extra_metrics(self, table: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for source in list(self._metric_sources):
            out.update(source(table))
        return out

    # -- append -------------------------------------------------------------------------------

    def append(
        self, table: str,
        data: Mapping[str, np.ndarray] | tensor_pb2.ColumnarBatch | EncodedBatch, *,
        priorities: Sequence[float] | np.ndarray | float | None = None,
        lineage: Lineage | Mapping[str, object] | None = None,
        producer_id: bytes | None = None, producer_seq: int | None = None,
        timeout: float | None = None,
    ) -> AppendAck:
        """Append a columnar batch of n items; returns their ids once logged and applied.
        ``begin_append(...).result()``: see `begin_append` for the arguments and errors."""

        return self.begin_append(table, data, priorities=priorities, lineage=lineage,
                                 producer_id=producer_id, producer_seq=producer_seq,
                                 timeout=timeout).result()

    def begin_append(
        self, table: str,
        data: Mapping[str, np.ndarray] | tensor_pb2.ColumnarBatch | EncodedBatch, *,
        priorities: Sequence[float] | np.ndarray | float | None = None,
        lineage: Lineage | Mapping[str, object] | None = None,
        producer_id: bytes | None = None, producer_seq: int | None = None,
        timeout: float | None = None,
    ) -> AppendTicket:
        """Start an append of a columnar batch of n items: validate it, wait for the rate
        limiter, assign ids and log its frame, in call order; `AppendTicket.result` then waits
        for the fsync and the view apply and returns the `AppendAck`. A caller with several
        batches (a server stream) can begin the next one before the last one's result: their
        fsyncs and view writes are shared. Call ``result`` promptly, from one thread.

        Args:
            table: table name.
            data: one array per signature field, each with a leading batch dimension n; or
                the same as an encoded `ColumnarBatch`; or as the wire bytes of one
                (`replaybuf.wire_batch.EncodedBatch`: the server passes the request's, whose
                tensors are then copied once, into the logged event).
            priorities: n raw priorities (finite, >= 0), one for all, or None for the table's
                current max priority (1.0 when empty), as in PER.
            lineage: per-item provenance; each column 0, 1 or n entries (see `Lineage`).
            producer_id: 16 bytes naming the producer, for idempotent retries.
            producer_seq: the producer's batch number (>= 1); with producer_id.
            timeout: seconds to wait for the rate limiter; None waits forever.

        Returns:
            A ticket whose result holds the ids and LSN range. If the table is full, the
            remover's victims are evicted in the same log frame, before the items
            (``ItemsEvicted`` reason CAPACITY).

        Raises:
            TableNotFoundError, SignatureMismatchError, EmptyBatchError, InvalidPriorityError,
            InvalidArgumentError: bad input; nothing was logged.
            RateLimitTimeoutError: the rate limiter blocked inserts for `timeout` seconds.
        """

        self._check_open()
        t = self._table(table)
        encoded = isinstance(data, tensor_pb2.ColumnarBatch)
        wire = isinstance(data, EncodedBatch)
        if not (encoded or wire) and not isinstance(data, Mapping):
            raise InvalidArgumentError(
                f"data is a {type(data).__name__}; pass a mapping of field name to array"
            )
        if wire:
            cols = dict(data.columns)
        else:
            cols = from_batch(data) if encoded else {k: np.asarray(v) for k, v in data.items()}
        n = check_batch(cols, t.config.signature, table=table)
        if n > t.config.capacity:
            raise InvalidArgumentError(
                f"batch of {n} items exceeds the capacity {t.config.capacity} of table "
                f"{table!r}; send at most {t.config.capacity} items per append"
            )
        prios = None if priorities is None else _priorities(priorities, n, "priorities")
        now_ms = time.time_ns() // 1_000_000
        lin = Lineage.broadcast(lineage, n, now_ms=now_ms)
        # The event is built in place (a large batch is copied into it once); ids and
        # priorities are filled in under the writer lock.
        append_ev = events_pb2.Event(version=EVENT_VERSION, timestamp_ms=now_ms)
        appended = append_ev.items_appended
        appended.table = table
        if encoded:  # as it came over the wire: one copy into the event
            appended.data.CopyFrom(data)
        elif wire:
            pass  # its bytes are spliced into the logged event (`encode_event_with_batch`)
        else:
            to_batch({s.name: cols[s.name] for s in t.config.signature}, out=appended.data)
        lin.to_proto(appended.lineage, compact=True)
        reservation = t.limiter.reserve_insert(n, timeout)
        try:
            with self._write_lock:
                self._check_open()
                if producer_id is not None:
                    # A retry is answered from the log before anything is built: the table
                    # may have filled since, so its events would come out differently now.
                    dup = self._log.find_duplicate(producer_id, producer_seq)  # type: ignore[arg-type]
                    if dup is not None and dup.last_lsn > self._view.applied_lsn:
                        self._pipeline.settle()  # the original is still in flight
                    if dup is not None:
                        reservation.release()
                        return AppendTicket.done(AppendAck(
                            table, self._ids_of_frame(dup), dup.first_lsn, dup.last_lsn,
                            dup.durable, True, np.empty(0, np.uint64)))
                if prios is None:
                    prios = np.full(n, t.default_priority())
                victims = self._make_room(t, n)
                events = []
                if victims.size:
                    events.append(make_event(items_evicted=events_pb2.ItemsEvicted(
                        table=table, item_ids=victims.tolist(),
                        reason=events_pb2.EVICTION_REASON_CAPACITY,
                        detail=f"table full (capacity {t.config.capacity}); remover "
                               f"{t.config.remover.kind}")))
                first_id = self._next_id = max(self._next_id, self._view.next_item_id)
                self._next_id += n
                ids = np.arange(first_id, first_id + n, dtype=np.uint64)
                appended.item_ids.extend(ids.tolist())
                appended.priorities.extend(prios.tolist())
                events.append(append_ev)
                payloads = None
                if wire:
                    payloads = [encode_event(e) for e in events[:-1]]
                    payloads.append(encode_event_with_batch(append_ev, data))
                pending, entry = self._begin(
                    events, producer_id=producer_id, producer_seq=producer_seq, columns=cols,
                    table=t.index, added=n, victims=victims, payloads=payloads,
                    reservation=reservation)
        except BaseException:
            reservation.release()
            raise
        # The fsync (shared with appends queued meanwhile) and the view write happen in
        # `AppendTicket.result`, outside the writer lock (`replaybuf.write_pipeline`).
        return AppendTicket(table, ids, victims, reservation, pending, entry, self._pipeline,
                            self._ids_of_frame)

    def _make_room(self, t: Table, n: int) -> np.ndarray:
        """Ids to evict so that n more items fit in `t`, counting the appends in flight
        (writer lock held). FIFO, the default remover, picks past the victims in flight
        without waiting: the oldest items stay the oldest whatever is in flight. Any other
        remover, or too few items applied, first waits until nothing is in flight, so the
        choice is the one a fully serialized engine makes."""

        cap = t.config.capacity
        with self._pipeline.state:
            added, reserved = self._pipeline.in_flight(t.index)
            need = n - (cap - (t.occupied + added - reserved.size))
            if need <= 0:
                return np.empty(0, np.uint64)
            if t.config.remover.kind == "fifo" and (added or reserved.size) \
                    and t.size >= need + reserved.size:
                picked = t.pick_victims(need + reserved.size)
                picked = picked[~np.isin(picked, reserved)][:need]
                if picked.size == need:
                    return picked
        self._pipeline.settle()
        need = n - (cap - t.occupied)
        if need > 0 and t.size < need:
            # retired items still hold their slots: log their evictions first
            self._recorder.flush_locked()
            need = n - (cap - t.occupied)
        return t.pick_victims(need) if need > 0 else np.empty(0, np.uint64)

    def _ids_of_frame(self, ack: AppendResult) -> np.ndarray:
        for rec in self._log.read(ack.first_lsn, ack.last_lsn):
            ev = decode_event(rec.payload, lsn=rec.lsn)
            if ev.WhichOneof("body") == "items_appended":
                return np.asarray(ev.items_appended.item_ids, dtype=np.uint64)
        raise FailedPreconditionError(
            f"producer retry matched LSNs {ack.first_lsn}..{ack.last_lsn}, which hold no "
            f"append; use a new producer_seq for a new batch"
        )

    # -- sample -------------------------------------------------------------------------------

    def sample(self, table: str, batch_size: int, *, beta: float = 0.4, seed: int | None = None,
               timeout: float | None = None, fields: Sequence[str] | None = None,
               at_lsn: int | None = None, out: np.ndarray | None = None) -> Sample:
        """Draw a batch of `batch_size` items with the table's sampler.

        Deterministic: the same table state (SampleInfo.lsn), seed, batch size and beta give
        the same items and weights. The draw is logged as ``ItemsSampled`` in the background.

        Args:
            table: table name.
            batch_size: items per batch (>= 1).
            beta: importance-weight exponent in [0, 1].
            seed: seed of the draw (``numpy.random.default_rng(seed)``); None picks one from
                `EngineConfig.seed` or the OS, reported in ``info.seed``.
            timeout: seconds to wait for the rate limiter; None waits forever.
            fields: fields to return (default all).
            at_lsn: replay on the table as of this LSN instead (`replay_sample`; needs a
                seed; not logged, no rate limiter, no counts changed).
            out: a writable, C-contiguous, 64-byte aligned uint8 buffer (a slot of a shared
                ring) that the rows are gathered into when they fit; ``data`` then views it.
                Otherwise (or with ``at_lsn``) they go to a buffer of the engine's own.

        Raises:
            RateLimitTimeoutError: still blocked after `timeout` seconds.
            FailedPreconditionError: nothing to sample (e.g. every priority is 0).
            InvalidArgumentError: a bad batch size, beta, seed or field name.
        """

        self._check_open()
        if at_lsn:
            return self.replay_sample(table, at_lsn, batch_size, beta=beta, seed=seed,
                                      fields=fields)
        t = self._table(table)
        if not _is_int(batch_size) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size is {batch_size!r}; it must be an integer >= 1")
        if (type(beta) is not float and not isinstance(beta, numbers.Real)) or not (
                0.0 <= float(beta) <= 1.0):
            raise InvalidArgumentError(f"beta is {beta!r}; it must be a number in [0, 1]")
        if seed is None:
            with self._seed_lock:
                seed = int(self._seeds.integers(0, 2**63))
        elif not _is_int(seed) or not 0 <= seed <= _U64_MAX:
            raise InvalidArgumentError(f"seed is {seed!r}; pass an integer in [0, 2**64) or None")
        if fields is not None:
            unknown = sorted(set(fields) - set(t.config.field_names))
            if unknown or isinstance(fields, str):
                raise InvalidArgumentError(
                    f"fields {unknown or fields!r} are not in table {table!r}'s signature "
                    f"{list(t.config.field_names)}"
                )
        with t.limiter.reserve_sample(int(batch_size), timeout):
            draw = t.draw(int(batch_size), beta=float(beta), seed=int(seed), fields=fields,
                          out=out)
        self._recorder.submit(RecordedDraw(table, draw.ids, int(seed), draw.lsn, draw.retired))
        request_ids, sources = draw.request_ids, draw.sources
        missing = draw.strings_missing
        if missing is not None and missing.any():  # loaded items: read once, then cached
            req, src = self._view.read_strings(draw.ids[missing])
            request_ids[missing], sources[missing] = req, src
            t.cache_strings(draw.ids[missing], req, src)
        return sample_from_draw(draw, request_ids.tolist(), sources.tolist(), seed=int(seed),
                                lsn=draw.lsn)

    def _record(self, draws: list[RecordedDraw]) -> None:
        self._pipeline.settle()  # writer lock held (the recorder's flush)
        now_ms = time.time_ns() // 1_000_000
        events = []
        for d in draws:  # built in place: the hot path of the recorder thread
            ev = events_pb2.Event(version=EVENT_VERSION, timestamp_ms=now_ms)
            body = ev.items_sampled
            body.table, body.seed, body.at_lsn = d.table, d.seed, d.lsn
            body.item_ids.extend(d.ids.tolist())
            events.append(ev)
        retired: dict[str, list[np.ndarray]] = {}
        for d in draws:
            if d.retired.size:
                retired.setdefault(d.table, []).append(d.retired)
        for name, parts in retired.items():
            t = self._tables[name]
            ids = np.concatenate(parts)
            ids = ids[t.present(ids)]
            if ids.size:
                events.append(make_event(items_evicted=events_pb2.ItemsEvicted(
                    table=name, item_ids=ids.tolist(),
                    reason=events_pb2.EVICTION_REASON_MAX_TIMES_SAMPLED,
                    detail=f"max_times_sampled={t.config.max_times_sampled}")))
        if events:
            self._commit(events)

    def flush_samples(self, timeout: float | None = None) -> int:
        """Wait until every draw made so far is logged; returns the view's applied LSN.

        Raises:
            TimeoutError: not done within `timeout` seconds.
        """

        self._check_open()
        self._recorder.wait(timeout)
        self._check_open()
        return self._view.applied_lsn

    # -- state --------------------------------------------------------------------------------

    @property
    def log(self) -> Log:
        return self._log

    @property
    def view(self) -> View:
        return self._view

    @property
    def applied_lsn(self) -> int:
        """LSN up to which the view has applied the log."""

        return self._view.applied_lsn

    @property
    def durable_lsn(self) -> int:
        return self._log.durable_lsn

    def table(self, name: str) -> Table:
        """The RAM runtime of a table (for jobs and tests; prefer the methods above)."""

        return self._table(name)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Wake blocked callers with ClosedError, log pending draws, close view and log.
        Idempotent."""

        with self._write_lock:
            if self._closed:
                return
            self._closed = True
        for t in list(self._tables.values()):
            t.close()
        stopped = False
        try:
            self._recorder.stop(flush=self._failure is None)
            stopped = True
        finally:
            with self._write_lock:
                try:
                    self._pipeline.settle()
                except FailedPreconditionError:
                    pass  # what failed stays in the log only; reopening applies it
                if stopped:
                    self._save_snapshot()
                self._view.close()
                if self._own_log:
                    self._log.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Engine({str(self.path)!r}, tables={sorted(self._tables)}, lsn={self._clock.lsn})"

