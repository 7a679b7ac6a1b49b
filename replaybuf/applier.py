"""The applier: how one log event changes the LMDB view, inside a `View.write` transaction.

It is the single code path for live writes, catch-up and rebuild, so a rebuilt view equals the
live one by construction. Every decision is a function of the events before it: items an event
names that are absent (evicted, or of another table) are skipped, the last of repeated ids
wins, and slots come from the table's `SlotSource` (lowest free slot first).

Appends are queued and the records of consecutive appends of one table are made together,
when the transaction next needs them (`Batch._settle`): a catch-up of thousands of appends
does a few numpy passes over joined arrays instead of a few per event, with the same records.

The value formats it writes are described in `replaybuf.view`; each value starts with the
record version `RECORD_VERSION`.

Not thread-safe: one `Batch` lives inside one write transaction of the writer thread.
"""

from __future__ import annotations

import itertools
import logging
import struct
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Protocol

import lmdb
import numpy as np

from replaybuf import hot_meta
from replaybuf.hot_meta import Pending, PrioUpdates
from replaybuf.new_items import FLUSH_ITEMS, NewItems
from replaybuf.errors import DataLossError, ViewDamagedError
from replaybuf.table_config import TableConfig
from replaybuf.new_items import records as _records
from replaybuf.tensors import dtype_to_proto, from_tensor
from replaybuf.v1 import events_pb2

__all__ = [
    "Applied", "Batch", "SlotSource", "TableRecord", "TableStats", "ViewDamagedError",
    "META_DTYPE", "RECORD_VERSION", "FLAG_EVICTED", "FLAG_CORRECTED", "row_dtype", "item_keys",
    "decode_strings", "JOB_VALUE", "broadcast_strings", "mirror_steps",
]

_logger = logging.getLogger(__name__)

#: Version byte at the start of every value the view stores.
RECORD_VERSION = 1
FLAG_EVICTED = 1
FLAG_CORRECTED = 2

#: One item's mutable metadata and lineage (90 bytes, packed, little-endian).
META_DTYPE = np.dtype(
    [
        ("version", "u1"), ("flags", "u1"), ("table", "<u4"), ("slot", "<u4"),
        ("item_id", "<u8"), ("priority", "<f8"), ("times_sampled", "<u8"), ("reward", "<f8"),
        ("append_lsn", "<u8"), ("evicted_lsn", "<u8"), ("episode_id", "<u8"), ("step", "<u8"),
        ("model_version", "<i8"), ("timestamp_ms", "<i8"),
        # Event time (ms) of the last change to ``priority`` (the append, then each
        # PrioritiesUpdated); lets hygiene jobs tell how long a priority has been low.
        ("priority_ms", "<i8"),
    ]
)
TABLE_VALUE = struct.Struct("<BIQ")  # version, table index, created LSN (+ TableConfig proto)
STATS_VALUE = struct.Struct("<BQQQ")  # version, inserts, samples, evictions
JOB_VALUE = struct.Struct("<BQ")  # version, LSN of the JobCompleted event (+ its proto)
U64 = struct.Struct(">Q")
U32 = struct.Struct(">I")
MODEL_VERSION_BIAS = 2**63
_V = RECORD_VERSION
_ITEM_KINDS = ("items_evicted", "priorities_updated", "rewards_corrected", "items_sampled")
_LINEAGE = ("episode_id", "step", "model_version", "timestamp_ms")  # numeric, in META_DTYPE


class SlotSource(Protocol):
    """Hands out table slots during a write; undone with `rollback` if the write fails."""

    def alloc(self, n: int) -> np.ndarray: ...
    def free(self, slots: np.ndarray) -> None: ...
    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


@dataclass
class Applied:
    """What applying one event changed, for the engine to mirror in RAM.

    Attributes:
        kind: the event kind (`replaybuf.events.event_kind`).
        lsn: its LSN.
        table: table index (-1 for events the view does not apply).
        ids: items actually affected, absent ones skipped (for ``items_sampled``: every draw
            of the event; the table skips absent items itself).
        slots: their slots (empty for ``items_sampled``).
        values: new priorities or rewards (``priorities_updated``, ``rewards_corrected``,
            ``items_appended``), else None.
        event: the event itself.
        count: for ``items_sampled``, the number of draws in the event (present or not).
        rows: for ``items_appended``, the decoded payloads (`row_dtype` records), so that the
            RAM mirror does not decode the tensors again.
        lineage: for ``items_appended``, the numeric lineage columns (n values each).
        strings: for ``items_appended``, the request ids and sources as logged (0, 1 or n
            each).
        run: for ``items_appended`` applied together with the appends of the same table
            next to it in one transaction: all of them as one `Applied` (arrays joined, in
            log order; LSN and event of the last), which the RAM mirror may apply in one
            step instead of each; the same object for each of them. Else None.
    """

    kind: str
    lsn: int
    table: int
    ids: np.ndarray
    slots: np.ndarray
    values: np.ndarray | None
    event: events_pb2.Event
    count: int = 0
    rows: np.ndarray | None = None
    lineage: dict[str, np.ndarray] | None = None
    strings: tuple[list[str], list[str]] | None = None
    run: Applied | None = None


@dataclass
class _Part:
    """An ItemsAppended queued in `Batch._run`: its table, its `Applied` (ids and
    priorities so far) and per signature field what its values are made from: the tensor's
    bytes when they are the field's dtype and shape as is, else an array to assign."""

    table: TableRecord
    applied: Applied
    sources: list[bytes | np.ndarray]


@dataclass(frozen=True)
class TableRecord:
    """A table as the view knows it."""

    name: str
    index: int
    created_lsn: int
    config: TableConfig


@dataclass
class TableStats:
    """Committed counters of a table (the rate limiter restarts from them)."""

    inserts: int = 0
    samples: int = 0
    evictions: int = 0


def mirror_steps(applied: Sequence[Applied], *, live: bool) -> Iterator[Applied]:
    """`applied` (one `View.write`, in order) as the steps a RAM mirror takes: each event as
    is, except that all the appends of one `Applied.run` become that run, and (not `live`)
    consecutive ``items_sampled`` of one table become one with their draws joined. A table
    mirrors either exactly as it mirrors each event: no other event falls between them,
    slots of one run are allocated in order, and draws only add up counts."""

    i, n = 0, len(applied)
    while i < n:
        a = applied[i]
        j = i + 1
        if a.run is not None:
            size = a.ids.size
            while j < n and applied[j].run is a.run:
                size += applied[j].ids.size
                j += 1
            if size == a.run.ids.size:  # the whole run (a pipeline may mirror frame by frame)
                yield a.run
                i = j
                continue
        elif a.kind == "items_sampled" and a.table >= 0 and not live:
            while j < n and applied[j].kind == "items_sampled" and applied[j].table == a.table:
                j += 1
            if j - i > 1:
                last = applied[j - 1]
                yield Applied("items_sampled", last.lsn, a.table,
                              np.concatenate([x.ids for x in applied[i:j]]), a.slots, None,
                              last.event, count=sum(x.count for x in applied[i:j]))
                i = j
                continue
        yield a
        i += 1


def row_dtype(config: TableConfig) -> np.dtype:
    """The packed structured dtype of one stored payload: version byte, then the fields."""

    return np.dtype([("_v", "u1")] + [(s.name, s.dtype, s.shape) for s in config.signature])


def _u64(values: Any) -> np.ndarray:
    """A repeated uint64 field as a uint64 array. numpy converts a sequence of Python ints
    several times faster when it infers the dtype than when it is told uint64."""

    arr = np.asarray(values)
    if arr.dtype.kind not in "iu" and arr.size:  # cannot happen for a uint64 field
        raise ValueError(f"item ids of dtype {arr.dtype}")
    return arr.astype(np.uint64, copy=False)


def item_keys(ids: np.ndarray) -> list[bytes]:
    """8-byte big-endian keys of item ids (they sort numerically)."""

    return np.ascontiguousarray(ids, dtype=">u8").view("V8").tolist()  # bytes objects


def broadcast_strings(values: Any, n: int) -> list[str]:
    """A lineage string column as n values: 0 entries -> "", 1 -> repeated, n -> as is
    (longer or shorter lists repeat their last entry, as the engine validated them)."""

    vals = list(values)
    if len(vals) == n:
        return vals
    if not vals:
        return [""] * n
    return vals[:n] + [vals[-1]] * (n - len(vals)) if len(vals) < n else vals[:n]


def encode_strings(request_id: bytes, source: bytes) -> bytes:
    return (bytes([_V]) + len(request_id).to_bytes(2, "little") + request_id
            + len(source).to_bytes(2, "little") + source)


def decode_strings(value: bytes) -> tuple[str, str]:
    """``(request_id, source)`` of an ``item_strings`` value."""

    n = int.from_bytes(value[1:3], "little")
    m = int.from_bytes(value[3 + n : 5 + n], "little")
    return value[3 : 3 + n].decode(), value[5 + n : 5 + n + m].decode()


class Batch:
    """The changes of one write transaction: applies events, then `finish` writes the
    counters and ``applied_lsn``. Caches start from the view's committed state and are
    merged back by the view only after the commit."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any], *,
                 tables: dict[str, TableRecord], stats: dict[int, TableStats],
                 next_item_id: int, next_table: int,
                 slots: Callable[[int, TableConfig], SlotSource],
                 pending: Pending | None = None,
                 columns: Mapping[int, Mapping[str, np.ndarray]] | None = None) -> None:
        self.txn = txn
        self._dbs = dbs
        self.tables = dict(tables)
        self._committed_stats = stats
        self.stats: dict[int, TableStats] = {}
        self.next_item_id = next_item_id
        self.next_table = next_table
        self._slots = slots
        self._sampled: dict[int, list[np.ndarray]] = {}  # table -> ids drawn, to count
        self._gone: dict[int, list[np.ndarray]] = {}  # table -> ids evicted (hot_meta)
        self._prios: dict[int, list[PrioUpdates]] = {}  # table -> priority updates (hot_meta)
        self.pending = pending if pending is not None else Pending(0)
        self.pending_after = self.pending  # the state after this transaction (`finish`)
        self._columns = columns or {}  # LSN -> decoded arrays of a live ItemsAppended
        self._new = NewItems(txn, dbs)  # records of appends, written in bulk
        self._row_dtypes: dict[int, np.dtype] = {}  # table -> `row_dtype` (made once)
        self._wires: dict[int, list[tuple[int, int] | None]] = {}  # table -> `_wire`
        # Appends of one table whose records are not made yet (`_settle`): a catch-up makes
        # those of thousands of events in a few joined numpy passes instead of each.
        self._run: list[_Part] = []
        self._run_items = 0

    # -- helpers ------------------------------------------------------------------------------

    def _stats(self, idx: int) -> TableStats:
        st = self.stats.get(idx)
        if st is None:
            old = self._committed_stats.get(idx, TableStats())
            st = self.stats[idx] = TableStats(old.inserts, old.samples, old.evictions)
        return st

    def _cursor(self, name: str) -> lmdb.Cursor:
        return self.txn.cursor(db=self._dbs[name])

    def _metas(self, idx: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Present items of table idx among ids: (positions into ids, META records)."""

        self._settle()
        self._new.flush()  # the appends so far, which these may name
        keys = item_keys(ids)
        found = self._cursor("item_meta").getmulti(keys)
        if not found:
            return np.empty(0, np.int64), np.empty(0, META_DTYPE)
        found_keys, values = zip(*found)
        recs = np.frombuffer(b"".join(values), META_DTYPE).copy()
        got = np.frombuffer(b"".join(found_keys), ">u8").astype(np.uint64)
        order = np.argsort(ids, kind="stable")
        pos = order[np.searchsorted(ids, got, sorter=order)].astype(np.int64)
        keep = recs["table"] == idx
        return pos[keep], recs[keep]

    def _put_metas(self, recs: np.ndarray, db: str = "item_meta") -> None:
        values = _records(recs)
        self._cursor(db).putmulti(list(zip(item_keys(recs["item_id"]), values)))

    # -- events -------------------------------------------------------------------------------

    def apply(self, lsn: int, ev: events_pb2.Event) -> Applied:
        """Apply one event. Cost: O(items it names) LMDB operations, batched."""

        kind = ev.WhichOneof("body") or ""
        body = getattr(ev, kind) if kind else None

        def skip() -> Applied:
            return Applied(kind, lsn, -1, np.empty(0, np.uint64), np.empty(0, np.int64), None, ev)

        if kind == "table_created":
            return self._create(lsn, ev) or skip()
        if kind == "job_completed":
            # Job ids make job runs idempotent (`Engine.record_job`); the first record wins.
            job = ev.job_completed
            self.txn.put(job.job_id.encode(), JOB_VALUE.pack(_V, lsn)
                         + job.SerializeToString(deterministic=True), db=self._dbs["jobs"],
                         overwrite=False)
            return skip()
        if body is None or not hasattr(body, "table") or body.table not in self.tables:
            return skip()
        if kind not in ("items_appended", "items_sampled"):
            # Review events read ``item_meta`` after this (`replaybuf.review`): the appends
            # of this transaction must be there (a catch-up puts thousands in one). Draws
            # only need `next_item_id`, which an append sets when it is queued.
            self._settle()
            self._new.flush()
        rec = self.tables[body.table]
        if kind == "items_appended":
            return self._append(lsn, ev, rec)
        if kind not in _ITEM_KINDS:
            return skip()  # review and drift events change no item state (issue 6 onwards)
        idx = rec.index
        ids = _u64(body.item_ids)
        if kind == "items_sampled":
            # Written in `finish` as one ``draws`` record (`replaybuf.hot_meta`), not a
            # write per item. An id not yet appended at this LSN is skipped now; one evicted
            # later in this batch gets its count before its record moves (see below).
            self._stats(idx).samples += ids.size
            self._sampled.setdefault(idx, []).append(ids[ids < self.next_item_id])
            return Applied(kind, lsn, idx, ids, np.empty(0, np.int64), None, ev,
                           count=int(ids.size))
        rev_u, rev_i = np.unique(ids[::-1], return_index=True)  # the last of repeated ids wins
        last = ids.size - 1 - rev_i
        pos, recs = self._metas(idx, rev_u)
        order = np.argsort(last[pos], kind="stable")  # back to event order
        pos, recs = pos[order], recs[order]
        src_pos = last[pos]
        slots = recs["slot"].astype(np.int64)
        if kind == "items_evicted":
            # The final count goes into the evicted record: counters and pending draws of
            # earlier transactions, plus this transaction's draws (taken out of `_sampled`).
            # Likewise its newest priority: chunks and pending, then this transaction's.
            hot_meta.fill(self.txn, self._dbs, self.pending, idx, recs)
            own = self._prios.get(idx)
            if own:
                found, vals, ms = Pending(0, prios={idx: tuple(own)}).newest_priorities(
                    idx, recs["item_id"])
                recs["priority"][found], recs["priority_ms"][found] = vals[found], ms[found]
            pending = self._sampled.get(idx)
            if pending:
                drawn = np.concatenate(pending)
                hit = np.isin(drawn, recs["item_id"])
                if hit.any():
                    u, c = np.unique(drawn[hit], return_counts=True)
                    at = np.minimum(np.searchsorted(u, recs["item_id"]), u.size - 1)
                    recs["times_sampled"] += np.where(u[at] == recs["item_id"], c[at],
                                                      0).astype(np.uint64)
                    drawn = drawn[~hit]
                self._sampled[idx] = [drawn]
            self._gone.setdefault(idx, []).append(recs["item_id"].copy())
            # One database after the other, in key order (ids ascend), the loop in C (`map`):
            # the deletes are most of this apply's CPU time, which a concurrent learner feels.
            keys = item_keys(recs["item_id"])
            for name in ("items", "item_meta"):
                deque(map(self.txn.delete, keys, repeat(b""), repeat(self._dbs[name])), 0)
            recs["flags"] |= FLAG_EVICTED
            recs["evicted_lsn"] = lsn
            self._put_metas(recs, "evicted_meta")
            self._stats(idx).evictions += recs.size
            self._slots(idx, rec.config).free(slots)
            return Applied(kind, lsn, idx, recs["item_id"].copy(), slots, None, ev)
        if kind == "priorities_updated":
            # Not a rewrite of each record: one ``draws`` record per transaction (`finish`).
            vals = np.asarray(body.priorities, dtype=np.float64)[src_pos]
            self._prios.setdefault(idx, []).append(PrioUpdates(
                recs["item_id"].copy(), vals, np.full(vals.size, ev.timestamp_ms, np.int64),
                np.full(vals.size, lsn, np.uint64)))
            return Applied(kind, lsn, idx, recs["item_id"].copy(), slots, vals, ev)
        vals = np.asarray(body.rewards, dtype=np.float64)[src_pos]
        recs["reward"] = vals
        recs["flags"] |= FLAG_CORRECTED
        self._put_metas(recs)
        return Applied(kind, lsn, idx, recs["item_id"].copy(), slots, vals, ev)

    def _create(self, lsn: int, ev: events_pb2.Event) -> Applied | None:
        cfg = TableConfig.from_proto(ev.table_created.config)
        if cfg.name in self.tables:
            _logger.warning("LSN %d creates table %r again; ignored", lsn, cfg.name)
            return None
        idx = self.next_table
        self.next_table += 1
        self.tables[cfg.name] = TableRecord(cfg.name, idx, lsn, cfg)
        value = TABLE_VALUE.pack(_V, idx, lsn) + cfg.to_proto().SerializeToString(
            deterministic=True)
        self.txn.put(cfg.name.encode(), value, db=self._dbs["tables"])
        self._stats(idx)
        return Applied("table_created", lsn, idx, np.empty(0, np.uint64), np.empty(0, np.int64),
                       None, ev)

    def _append(self, lsn: int, ev: events_pb2.Event, rec: TableRecord) -> Applied:
        """Check an append and queue it in `_run`; its records are made by `_settle`,
        together with the appends of the same table that follow it in this transaction."""

        body = ev.items_appended
        cfg = rec.config
        ids = _u64(body.item_ids)
        n = ids.size
        if n == 0:
            return Applied("items_appended", lsn, rec.index, ids, np.empty(0, np.int64), None, ev)
        increasing = n == 1 or bool((ids[1:] > ids[:-1]).all())
        if int(ids[0]) < self.next_item_id or not increasing:
            raise ViewDamagedError(
                f"ItemsAppended at LSN {lsn} has item ids {int(ids[0])}.. that do not increase "
                f"past {self.next_item_id}; the view does not match the log"
            )
        decoded = self._columns.get(lsn)
        cols = {c.name: c for c in body.data.columns} if decoded is None else decoded
        prios = np.asarray(body.priorities, dtype=np.float64)
        lin = body.lineage
        # Regular: every value has one entry per item (or one for all, for lineage), so that
        # the records can be made later without any error.
        regular = prios.size == n and all(len(getattr(lin, name)) in (0, 1, n)
                                          for name in _LINEAGE)
        sources: list[bytes | np.ndarray] = []
        for spec, wire in zip(cfg.signature, self._wire(rec)):
            if spec.name not in cols:
                raise DataLossError(f"ItemsAppended at LSN {lsn} lacks field {spec.name!r}")
            if decoded is not None:
                arr = decoded[spec.name]
                regular = regular and arr.shape == (n, *spec.shape)
                sources.append(arr)
                continue
            tensor = cols[spec.name].tensor
            if wire is not None and tensor.dtype == wire[0] and tuple(tensor.shape) == (
                    n, *spec.shape):
                data = tensor.data  # a new bytes object per access: read it once
                if len(data) == n * wire[1]:  # the field's dtype and shape, as is
                    sources.append(data)
                    continue
            sources.append(from_tensor(tensor, name=spec.name))  # raises if malformed
            regular = False  # a cast or a broadcast, which may fail: made right away
        applied = Applied("items_appended", lsn, rec.index, ids, np.empty(0, np.int64), prios,
                          ev)
        if self._run and self._run[0].table is not rec:
            self._settle()
        self._run.append(_Part(rec, applied, sources))
        self._run_items += n
        self._stats(rec.index).inserts += n
        self.next_item_id = int(ids[-1]) + 1
        if not regular or self._run_items >= FLUSH_ITEMS:
            self._settle()
        return applied

    def _wire(self, rec: TableRecord) -> list[tuple[int, int] | None]:
        """Per field of the signature: (wire dtype code, bytes per item) of a tensor whose
        bytes are the field's values as they are; None when the field's dtype is not one
        the wire carries as is (e.g. big-endian: it is cast)."""

        wire = self._wires.get(rec.index)
        if wire is None:
            wire = self._wires[rec.index] = [
                (dtype_to_proto(s.dtype), s.item_nbytes) if s.dtype.byteorder != ">" else None
                for s in rec.config.signature]
        return wire

    def _settle(self) -> None:
        """Make the records of the queued appends (`_run`, all of one table) in one pass over
        joined arrays: payload rows, metadata, slots (one allocation: the lowest free slots,
        as one per append would give), strings; hand them to `NewItems` and fill in each
        append's `Applied` (and, for several, the joined `Applied.run`)."""

        parts = self._run
        if not parts:
            return
        self._run, self._run_items = [], 0
        rec = parts[0].table
        cfg, idx = rec.config, rec.index
        sizes = [p.applied.ids.size for p in parts]
        n = sum(sizes)
        ends = list(itertools.accumulate(sizes))
        bounds = list(zip([0, *ends[:-1]], ends))
        one = len(parts) == 1
        ids = parts[0].applied.ids if one else np.concatenate([p.applied.ids for p in parts])
        dt = self._row_dtypes.get(idx)
        if dt is None:
            dt = self._row_dtypes[idx] = row_dtype(cfg)
        rows = np.empty(n, dt)
        rows["_v"] = _V
        for j, spec in enumerate(cfg.signature):
            srcs = [p.sources[j] for p in parts]
            if all(type(s) is bytes for s in srcs):  # one copy of them all
                data = srcs[0] if one else b"".join(srcs)  # type: ignore[arg-type]
                rows[spec.name] = np.frombuffer(data, spec.dtype).reshape(n, *spec.shape)
                continue
            col = rows[spec.name]
            for (a, b), s in zip(bounds, srcs):
                col[a:b] = (np.frombuffer(s, spec.dtype).reshape(b - a, *spec.shape)
                            if type(s) is bytes else s)
        slots = np.asarray(self._slots(idx, cfg).alloc(n), np.int64)
        metas = np.zeros(n, META_DTYPE)
        metas["version"] = _V
        metas["table"] = idx
        metas["slot"] = slots
        metas["item_id"] = ids
        values = [p.applied.values for p in parts]
        if all(v.size == s for v, s in zip(values, sizes)):  # type: ignore[union-attr]
            prios = values[0] if one else np.concatenate(values)  # type: ignore[arg-type]
            metas["priority"] = prios
        else:  # broadcast each append's (see `_append`)
            for (a, b), v in zip(bounds, values):
                metas["priority"][a:b] = v
            prios = metas["priority"].copy()  # contiguous, for the sum-trees
        if cfg.has_reward:
            metas["reward"] = rows[cfg.reward_field]
        metas["append_lsn"] = np.repeat(np.array([p.applied.lsn for p in parts], np.uint64),
                                        sizes)
        metas["priority_ms"] = np.repeat(
            np.array([p.applied.event.timestamp_ms for p in parts], np.int64), sizes)
        lins = [p.applied.event.items_appended.lineage for p in parts]
        for name in _LINEAGE:
            col = metas[name]
            for (a, b), lin in zip(bounds, lins):
                vals = getattr(lin, name)
                if len(vals):
                    col[a:b] = np.asarray(vals)
        # Written in bulk with the other appends of this transaction (`replaybuf.new_items`).
        biased = metas["model_version"].astype(np.int64).view(np.uint64) ^ np.uint64(
            MODEL_VERSION_BIAS)
        self._new.add(ids, rows, metas, idx, metas["episode_id"], biased, sizes=sizes)
        strings = [self._add_strings(p.applied.ids, lin, idx) for p, lin in zip(parts, lins)]
        if len(self._new) >= FLUSH_ITEMS:
            self._new.flush()
        lineage = {name: metas[name] for name in _LINEAGE}
        whole = None
        if not one:
            joined = tuple([] if not any(s[k] for s in strings) else list(itertools.chain(
                *(broadcast_strings(s[k], size) for s, size in zip(strings, sizes))))
                for k in (0, 1))
            last = parts[-1].applied
            whole = Applied("items_appended", last.lsn, idx, ids, slots, prios, last.event,
                            rows=rows, lineage=lineage, strings=joined)  # type: ignore[arg-type]
        for (a, b), p, s in zip(bounds, parts, strings):
            ap = p.applied
            ap.slots, ap.rows, ap.strings, ap.run = slots[a:b], rows[a:b], s, whole
            ap.lineage = {name: col[a:b] for name, col in lineage.items()}

    def _add_strings(self, ids: np.ndarray, lin: Any, idx: int) -> tuple[list[str], list[str]]:
        """Queue the ``item_strings`` and ``by_request`` records of one append; returns its
        request ids and sources as logged (empty when all are empty)."""

        # Items without request id or source need no string record and no per-item work.
        # ("".join is a C loop; any() a Python one per string.)
        req_col: list[str] = list(lin.request_id) if "".join(lin.request_id) else []
        src_col: list[str] = list(lin.source) if "".join(lin.source) else []
        if req_col or src_col:
            n = ids.size
            keys = item_keys(ids)
            reqs = [r.encode() for r in broadcast_strings(req_col, n)]
            srcs = [s.encode() for s in broadcast_strings(src_col, n)]
            if len(set(srcs)) == 1:  # one source for the batch (the usual case)
                tail = len(srcs[0]).to_bytes(2, "little") + srcs[0]
                values = [b"%c%b%b%b" % (_V, len(r).to_bytes(2, "little"), r, tail)
                          for r in reqs]
            else:
                values = [encode_strings(r, s) for r, s in zip(reqs, srcs)]
            t = U32.pack(idx)
            self._new.add_strings(
                [(k, v) for k, v, r, s in zip(keys, values, reqs, srcs) if r or s],
                [t + len(r).to_bytes(2, "big") + r + k for r, k in zip(reqs, keys) if r])
        return req_col, src_col

    # -- end of the transaction ---------------------------------------------------------------

    def finish(self, lsn: int, *, fold_min: int = hot_meta.FOLD_MIN) -> None:
        """Write this transaction's draws, evictions and priority updates (`replaybuf.hot_meta`,
        folded when enough are pending), the table counters and ``applied_lsn = lsn``. Sets
        `pending_after`."""

        self._settle()
        self._new.flush()
        drawn = {idx: np.concatenate(parts) for idx, parts in self._sampled.items() if parts}
        gone = {idx: np.concatenate(parts) for idx, parts in self._gone.items()}
        prios = {idx: PrioUpdates.join(ups) for idx, ups in self._prios.items()}
        after = self.pending.with_new(lsn, drawn, gone, prios)
        stats = {**self._committed_stats, **self.stats}
        present = sum(st.inserts - st.evictions for st in stats.values())
        if after.should_fold(present, fold_min):
            hot_meta.fold(self.txn, self._dbs, after)
            self.pending_after = Pending(lsn)
        else:
            after.put(self.txn, self._dbs["draws"], lsn, drawn, gone, prios)
            self.pending_after = after
        meta = self._dbs["meta"]
        for idx, s in self.stats.items():
            self.txn.put(U32.pack(idx), STATS_VALUE.pack(_V, s.inserts, s.samples, s.evictions),
                         db=self._dbs["table_stats"])
        self.txn.put(b"next_item_id", U64.pack(self.next_item_id), db=meta)
        self.txn.put(b"next_table", U32.pack(self.next_table), db=meta)
        self.txn.put(b"applied_lsn", U64.pack(lsn), db=meta)
