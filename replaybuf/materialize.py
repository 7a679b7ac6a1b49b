"""Time travel: a table exactly as it stood at LSN n, rebuilt from the log.

`Materialized` reads the log's events ``1..n`` and keeps the state of the one table's present
items that events change after the append (priority, reward, times sampled, presence) in
numpy arrays, applying each event as one vectorized step with the rules of the engine's
applier (`replaybuf.applier`: items an event names that are absent are skipped, the last of
repeated ids wins, a draw counts for items appended before it, the first ``TableCreated`` of
a name wins). `Materialized.chunks` then reads the ``ItemsAppended`` events that still hold
present items a second time and streams their payloads, decoded with one
``numpy.frombuffer`` per field and event, in id order; string lineage is cut out of the
record bytes in bulk (`Utf8Strings`), never a Python ``str`` per item (the decoding helpers
live in `replaybuf.materialize_decode`). The first read parses append events without their
lineage, updates and draws between two appends or evictions are applied together (the
present set cannot change in between). Payloads never touch a scratch
database, and the result equals the live view at n (``tests/test_materialize.py`` checks
it against the LMDB view the applier writes), so an export at n is byte-identical after a
restart or a rebuild.

`Materialized.table` and `Materialized.read_strings` (deterministic replay of a draw,
`replay_sample`) need the RAM runtime; they replay the log through the applier into a scratch
LMDB view in a temporary directory, built on first use.

Cost: reading and decoding the events ``<= n`` once, then the append events of the present
items again; memory O(present items) for the state (34 bytes each) plus O(chunk) for the
stream. Not thread-safe; one `Materialized` per caller.

Example::

    with Materialized(engine.log, "replay", 42) as m:
        for chunk in m.chunks():
            print(chunk.ids, chunk.priorities)
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from replaybuf.errors import (
    DataLossError, FailedPreconditionError, InvalidArgumentError, TableNotFoundError,
    ViewDamagedError,
)
from replaybuf.events import decode_event
from replaybuf.export_chunk import Chunk, ExportInfo, NUMERIC_LINEAGE, STRING_LINEAGE, Utf8Strings
from replaybuf.log import Log
from replaybuf.materialize_decode import (
    _broadcast_strings, _column, _scan_decode, _stream_decode, _strings,
    _table_of,
)
from replaybuf.results import Sample, sample_from_draw
from replaybuf.table import SlotAllocator, Table
from replaybuf.table_config import TableConfig
from replaybuf.tensors import from_tensor
from replaybuf.v1 import events_pb2
from replaybuf.view import TableRecord, View

__all__ = ["Materialized", "replay_sample", "DEFAULT_CHUNK_ITEMS", "EXPORT_CHUNK_ITEMS"]

#: Items per message of the gRPC Export stream when the request does not say.
DEFAULT_CHUNK_ITEMS = 4096
#: Most items per chunk of `Materialized.chunks` when the caller does not say.
EXPORT_CHUNK_ITEMS = 65536
_BATCH_EVENTS = 2048
_BATCH_BYTES = 64 << 20
_CHANGES_MAX = 1 << 18  # buffered ids of updates and draws before they are applied (memory)
_U64 = np.dtype(np.uint64)
_F64 = np.dtype(np.float64)


class _Clock:
    lsn = 0


class _LiveItems:
    """The mutable state of a table's present items during a scan, ids ascending.

    Arrays grow by doubling; evicted items are marked dead and squeezed out once they
    outnumber the live ones, so memory stays O(present items). Not thread-safe.
    """

    def __init__(self) -> None:
        self.n = 0
        self.dead = 0
        self.ids = np.empty(0, _U64)
        self.priority = np.empty(0, _F64)
        self.reward = np.empty(0, _F64)
        self.times = np.empty(0, _U64)
        self.alive = np.empty(0, np.bool_)

    @property
    def count(self) -> int:
        return self.n - self.dead

    def append(self, ids: np.ndarray, priority: np.ndarray, reward: np.ndarray) -> None:
        """Add items whose ids are all above the last one. Amortized O(len(ids))."""

        end = self.n + ids.size
        if end > self.ids.size:
            size = max(end, 2 * self.ids.size, 1024)
            for name in ("ids", "priority", "reward", "times", "alive"):
                old = getattr(self, name)
                new = np.empty(size, old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        sl = slice(self.n, end)
        self.ids[sl] = ids
        self.priority[sl] = priority
        self.reward[sl] = reward
        self.times[sl] = 0
        self.alive[sl] = True
        self.n = end

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, hit)``: where each of `ids` sits, and which are present."""

        if self.n == 0:
            return np.zeros(ids.size, np.intp), np.zeros(ids.size, np.bool_)
        pos = np.searchsorted(self.ids[: self.n], ids)
        at = np.minimum(pos, self.n - 1)
        hit = (pos < self.n) & (self.ids[at] == ids) & self.alive[at]
        return at, hit

    def evict(self, positions: np.ndarray) -> None:
        self.alive[positions] = False
        self.dead += positions.size
        if self.dead > max(self.count, 65536):
            self.compact()

    def compact(self) -> None:
        """Drop the dead items (O(n))."""

        keep = np.flatnonzero(self.alive[: self.n])
        for name in ("ids", "priority", "reward", "times", "alive"):
            setattr(self, name, getattr(self, name)[keep].copy())
        self.n = keep.size
        self.dead = 0


class _Changes:
    """Priority updates, reward corrections and draws since the last append or eviction,
    applied to `_LiveItems` as one vectorized step: the present items cannot change in
    between, so applying the concatenation (the last of repeated ids wins, draws add up)
    equals applying the events one by one, at a fraction of the per-event cost. Events are
    gathered into Python lists (one slice of each repeated field; most hold a few ids)
    and become arrays only in `apply`. Draws of ids not yet appended need no filter: `apply`
    runs before every append, and such ids are not present yet."""

    def __init__(self) -> None:
        self.prio_ids: list[int] = []
        self.prio_values: list[float] = []
        self.reward_ids: list[int] = []
        self.reward_values: list[float] = []
        self.draw_ids: list[int] = []

    @property
    def size(self) -> int:
        return len(self.prio_ids) + len(self.reward_ids) + len(self.draw_ids)

    @staticmethod
    def add(ids_out: list[int], values_out: list[float], ids: Any, values: Any) -> None:
        # a slice of a repeated field is a list made in one C call: cheaper than iterating it
        ids, values = ids[:], values[:]
        n = len(ids)
        if len(values) < n:
            raise DataLossError(f"an event names {n} items but carries {len(values)} values")
        ids_out += ids
        values_out += values if len(values) == n else values[:n]

    def apply(self, live: _LiveItems) -> None:
        for ids_list, values_list, target in (
                (self.prio_ids, self.prio_values, live.priority),
                (self.reward_ids, self.reward_values, live.reward)):
            if ids_list:
                ids = np.array(ids_list, _U64)
                values = np.array(values_list, _F64)
                uniq, src = _last_wins(ids)
                pos, hit = live.find(uniq)
                target[pos[hit]] = values[src[hit]]
        if self.draw_ids:
            uniq, counts = np.unique(np.array(self.draw_ids, _U64), return_counts=True)
            pos, hit = live.find(uniq)
            live.times[pos[hit]] += counts[hit].astype(_U64)
        for lst in (self.prio_ids, self.prio_values, self.reward_ids, self.reward_values,
                    self.draw_ids):
            lst.clear()


def _last_wins(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique ids and, for each, the index of its last occurrence in `ids`."""

    rev_u, rev_i = np.unique(ids[::-1], return_index=True)
    return rev_u, ids.size - 1 - rev_i


def _concat(parts: list[Chunk]) -> Chunk:
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    lineage: dict[str, Any] = {k: np.concatenate([p.lineage[k] for p in parts])
                               for k, _ in NUMERIC_LINEAGE}
    for k in STRING_LINEAGE:
        cols = [p.lineage[k] for p in parts]
        lineage[k] = (Utf8Strings.concat(cols) if all(isinstance(c, Utf8Strings) for c in cols)
                      else list(itertools.chain.from_iterable(cols)))
    return Chunk(np.concatenate([p.ids for p in parts]),
                 {f: np.concatenate([p.columns[f] for p in parts]) for f in first.columns},
                 np.concatenate([p.priorities for p in parts]),
                 np.concatenate([p.times_sampled for p in parts]), lineage)


def _slice(c: Chunk, start: int, stop: int) -> Chunk:
    if start == 0 and stop >= len(c):
        return c  # the whole chunk (slicing a Utf8Strings column costs a cumsum)
    return Chunk(c.ids[start:stop], {f: a[start:stop] for f, a in c.columns.items()},
                 c.priorities[start:stop], c.times_sampled[start:stop],
                 {k: v[start:stop] for k, v in c.lineage.items()})


class Materialized:
    """One table as of one LSN. See the module docstring.

    Args:
        log: the log to replay (read-only use; it must stay open while chunks are read).
        table: table name.
        as_of_lsn: the LSN (1 .. the log's last LSN).
        tmp_dir: parent directory of the scratch view that `table` builds (default: the
            system temp dir).

    Raises:
        InvalidArgumentError: `as_of_lsn` outside the log.
        TableNotFoundError: the table did not exist at `as_of_lsn`.
    """

    def __init__(self, log: Log, table: str, as_of_lsn: int, *,
                 tmp_dir: str | Path | None = None) -> None:
        end = log.last_lsn
        if not isinstance(as_of_lsn, int) or isinstance(as_of_lsn, bool) or not (
                1 <= as_of_lsn <= end):
            raise InvalidArgumentError(
                f"as_of_lsn is {as_of_lsn!r}; it must be an LSN in [1, {end}] (the log's "
                f"end)")
        self.table_name = table
        self.as_of_lsn = as_of_lsn
        self.log_id = log.log_id
        self._log = log
        self._tmp_dir = tmp_dir
        self._dir: Path | None = None
        self._view: View | None = None
        self._rec: TableRecord | None = None
        self._closed = False
        self._config: TableConfig | None = None
        self._live = _LiveItems()
        self._appends: list[tuple[int, int, int]] = []  # (LSN, first id, last id)
        self._scan()

    # -- the scan -----------------------------------------------------------------------------

    def _scan(self) -> None:
        """Apply the events ``1..as_of_lsn`` of this table to the item state."""

        name = self.table_name
        live = self._live
        changes = _Changes()
        next_id = 1
        last = 0
        add = changes.add
        for rec in self._log.read(1, self.as_of_lsn):
            last = rec.lsn
            ev = _scan_decode(rec.payload, last)
            kind = ev.WhichOneof("body")
            body = getattr(ev, kind)  # decode_event refuses events without a body
            if kind == "priorities_updated":  # the most frequent kind first
                if body.table == name and self._config is not None:
                    add(changes.prio_ids, changes.prio_values, body.item_ids, body.priorities)
                    if len(changes.prio_ids) >= _CHANGES_MAX:
                        changes.apply(live)
                continue
            if kind == "table_created":
                if self._config is None and body.config.name == name:
                    self._config = TableConfig.from_proto(body.config)
                continue
            if self._config is None or getattr(body, "table", None) != name:
                continue
            if kind == "items_appended":
                changes.apply(live)
                next_id = self._append(last, body, next_id)
            elif kind == "rewards_corrected":
                add(changes.reward_ids, changes.reward_values, body.item_ids, body.rewards)
            elif kind == "items_evicted":
                changes.apply(live)
                pos, hit = live.find(np.unique(np.asarray(body.item_ids, _U64)))
                live.evict(pos[hit])
            elif kind == "items_sampled":
                changes.draw_ids += body.item_ids[:]
            if changes.size >= _CHANGES_MAX:
                changes.apply(live)
            # review, drift and job events change no item state
        changes.apply(live)
        if last != self.as_of_lsn:
            raise FailedPreconditionError(
                f"the log ended at LSN {last} before {self.as_of_lsn}")
        if self._config is None:
            raise TableNotFoundError(
                f"table {name!r} did not exist at LSN {self.as_of_lsn}")
        live.compact()
        first = int(live.ids[0]) if live.n else 0
        self._appends = [a for a in self._appends if live.n and a[2] >= first]

    def _append(self, lsn: int, body: Any, next_id: int) -> int:
        cfg = self._config
        assert cfg is not None
        ids = np.asarray(body.item_ids, _U64)
        n = ids.size
        if n == 0:
            return next_id
        if int(ids[0]) < next_id or (n > 1 and not bool((np.diff(ids) > 0).all())):
            raise ViewDamagedError(
                f"ItemsAppended at LSN {lsn} has item ids {int(ids[0])}.. that do not increase "
                f"past {next_id}; the view does not match the log")
        cols = {c.name: c for c in body.data.columns}
        for spec in cfg.signature:
            if spec.name not in cols:
                raise DataLossError(f"ItemsAppended at LSN {lsn} lacks field {spec.name!r}")
        reward = np.zeros(n, _F64)
        if cfg.has_reward:
            spec = cfg.field(cfg.reward_field)
            reward[:] = from_tensor(cols[cfg.reward_field].tensor, name=spec.name).astype(
                spec.dtype, copy=False).reshape(n)
        self._live.append(ids, _column(body.priorities, n, _F64), reward)
        self._appends.append((lsn, int(ids[0]), int(ids[-1])))
        return int(ids[-1]) + 1

    # -- results ------------------------------------------------------------------------------

    @property
    def config(self) -> TableConfig:
        """The table's config at the LSN."""

        assert self._config is not None
        return self._config

    @property
    def count(self) -> int:
        """Items present at the LSN (retired-but-not-evicted included)."""

        return self._live.count

    def info(self, fields: Sequence[str] | None = None) -> ExportInfo:
        return ExportInfo.from_config(self.config.to_proto(), as_of_lsn=self.as_of_lsn,
                                      log_id=self.log_id, fields=fields)

    def chunks(self, chunk_items: int = EXPORT_CHUNK_ITEMS,
               fields: Sequence[str] | None = None) -> Iterator[Chunk]:
        """The present items in id order: data (reward as corrected up to the LSN),
        priorities, times sampled and lineage as of the LSN, at most `chunk_items` per chunk
        (none for an empty table). O(chunk_items) memory besides the state.

        Reads the log again: the log must stay open until the iterator is done.
        """

        if not isinstance(chunk_items, int) or isinstance(chunk_items, bool) or chunk_items < 1:
            raise InvalidArgumentError(f"chunk_items is {chunk_items!r}; it must be >= 1")
        names = [f[0] for f in self.info(fields).fields]
        if self._closed:
            raise FailedPreconditionError("this Materialized is closed")
        # An append event's present items go out as they are (zero-copy views of the event's
        # columns) when there are at least `low` of them; smaller ones are gathered up to
        # `low` first, so that tiny appends do not make tiny chunks; big ones are cut.
        low = max(1, chunk_items // 8)
        pending: list[Chunk] = []
        held = 0
        for piece in self._pieces(names):
            if not held and len(piece) >= low:
                for start in range(0, len(piece), chunk_items):
                    yield _slice(piece, start, start + chunk_items)
                continue
            pending.append(piece)
            held += len(piece)
            if held < low:
                continue
            whole = _concat(pending)
            for start in range(0, held, chunk_items):
                yield _slice(whole, start, start + chunk_items)
            pending, held = [], 0
        if held:
            yield _concat(pending)

    def _pieces(self, names: list[str]) -> Iterator[Chunk]:
        """One chunk per append event that still holds present items (its present ones)."""

        if not self._appends:
            return
        cfg = self.config
        specs = {n: cfg.field(n) for n in names}
        live = self._live
        wanted = {a[0] for a in self._appends}
        reward = cfg.reward_field if cfg.has_reward and cfg.reward_field in specs else None
        for rec in self._log.read(self._appends[0][0], self._appends[-1][0]):
            if rec.lsn not in wanted:
                continue
            body, numbers, strings = _stream_decode(rec.payload, rec.lsn)
            ids = np.asarray(body.item_ids, _U64)
            n = ids.size
            sel: slice | np.ndarray
            lo = int(np.searchsorted(live.ids, ids[0])) if n else 0
            if n and lo + n <= live.n and np.array_equal(live.ids[lo : lo + n], ids):
                sel, keep = slice(lo, lo + n), None  # all present (the usual case): views
            else:
                pos, hit = live.find(ids)
                sel, keep = pos[hit], np.flatnonzero(hit)
                if not keep.size:
                    continue
            tensors = {c.name: c.tensor for c in body.data.columns}
            columns: dict[str, np.ndarray] = {}
            for name, spec in specs.items():
                arr = from_tensor(tensors[name], name=name).astype(spec.dtype, copy=False)
                arr = arr.reshape((n, *spec.shape))
                columns[name] = arr if keep is None else arr[keep]
            if reward is not None:
                columns[reward] = live.reward[sel].astype(specs[reward].dtype)
            lineage: dict[str, Any] = {}
            for k, dt in NUMERIC_LINEAGE:
                col = _column(getattr(numbers, k), n, np.dtype(dt))
                lineage[k] = col if keep is None else col[keep]
            for k in STRING_LINEAGE:
                if strings is not None:
                    u = _broadcast_strings(strings[k], n)
                    lineage[k] = u if keep is None else u.take(keep)
                else:
                    strs = _strings(getattr(numbers, k), n)
                    lineage[k] = strs if keep is None else [strs[i] for i in keep.tolist()]
            yield Chunk(live.ids[sel].copy(), columns, live.priority[sel].copy(),
                        live.times[sel].copy(), lineage)

    # -- the RAM runtime (replay of a draw) ---------------------------------------------------

    def _scratch(self) -> tuple[View, TableRecord]:
        """The scratch LMDB view of the log up to the LSN, built through the applier."""

        if self._closed:
            raise FailedPreconditionError("this Materialized is closed")
        if self._view is not None and self._rec is not None:
            return self._view, self._rec
        self._dir = Path(tempfile.mkdtemp(prefix="replaybuf-asof-", dir=self._tmp_dir))
        self._view, _ = View.open(self._dir / "view", log_id=self.log_id,
                                  log_end=self.as_of_lsn, map_size=2**40, sync=False,
                                  scratch=True)
        slots: dict[int, SlotAllocator] = {}

        def slots_for(idx: int, config: TableConfig) -> SlotAllocator:
            return slots.setdefault(idx, SlotAllocator(config.capacity))

        batch: list[tuple[int, events_pb2.Event]] = []
        size = 0
        for rec in self._log.read(1, self.as_of_lsn):
            ev = decode_event(rec.payload, lsn=rec.lsn)
            if _table_of(ev) != self.table_name:
                ev = events_pb2.Event()  # keeps the LSNs gap-free; the applier skips it
            else:
                size += len(rec.payload)
            batch.append((rec.lsn, ev))
            if len(batch) >= _BATCH_EVENTS or size >= _BATCH_BYTES:
                self._view.write(batch, slots_for)
                batch, size = [], 0
        if batch:
            self._view.write(batch, slots_for)
        self._rec = next(r for r in self._view.tables() if r.name == self.table_name)
        return self._view, self._rec

    def table(self) -> Table:
        """The RAM runtime as of the LSN, loaded the way the engine loads it on open (builds
        the scratch view on first use: O(events <= LSN) applier work)."""

        view, rec = self._scratch()
        clock = _Clock()
        clock.lsn = self.as_of_lsn
        t = Table(rec.index, rec.config, created_lsn=rec.created_lsn, clock=clock)
        metas, rows = view.load()[rec.index]
        st = view.stats(rec.index)
        t.load(metas, rows, inserts=st.inserts, samples=st.samples, evictions=st.evictions)
        return t

    def read_strings(self, ids: np.ndarray) -> tuple[list[str], list[str]]:
        """Request ids and sources of items (see `View.read_strings`; builds the scratch
        view on first use)."""

        return self._scratch()[0].read_strings(ids)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close and delete the scratch view, if one was built. Idempotent."""

        if self._closed:
            return
        self._closed = True
        if self._view is not None:
            self._view.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Materialized:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def replay_sample(log: Log, table: str, at_lsn: int, batch_size: int, *, beta: float,
                  seed: int, fields: Sequence[str] | None = None,
                  tmp_dir: str | Path | None = None) -> Sample:
    """Redo a draw on the table as of `at_lsn` (not logged; changes no counts anywhere).

    The same (table, LSN, seed, batch size, beta) gives the ids and weights of the original
    draw whose ``SampleInfo.lsn`` was `at_lsn`. Caveat: with ``max_times_sampled`` a live
    table retires items the moment a draw reaches the limit, before that draw's
    ``ItemsSampled`` is logged; a later draw reporting the same LSN then saw those items
    gone, which a replay at that LSN cannot know. Without ``max_times_sampled`` replay is exact.

    Cost: materializing the table (see `Materialized`) plus loading it into RAM.
    """

    with Materialized(log, table, at_lsn, tmp_dir=tmp_dir) as m:
        t = m.table()
        try:
            if fields is not None:
                m.info(fields)  # validates the names
            draw = t.draw(batch_size, beta=beta, seed=seed, fields=fields)
        finally:
            t.close()
        request_ids, sources = m.read_strings(draw.ids)
    return sample_from_draw(draw, request_ids, sources, seed=int(seed), lsn=at_lsn, copy=True)
