"""The lineage index: item id -> LSNs of the events that touched it, and item histories.

DESIGN.md promise 3 says every item traces back to the request and model version that produced
it and to every correction and priority change since. The log holds all of that; this index
makes finding it O(events of that item) instead of a scan of the log.

Write side (`index_event`): called by `replaybuf.view.View.write` for every applied event, in
the same LMDB transaction (so it is exactly-once with ``applied_lsn`` and rebuilt with the
view). One empty-valued key ``u64 item id, u64 LSN`` (big-endian, 16 bytes) per item an event
actually changed:

* ``rewards_corrected`` and ``items_evicted``: the items the applier reports as affected
  (absent ids are skipped, as the applier skips them).
* ``items_appended`` is not indexed: the item's record keeps its ``append_lsn``.
* ``priorities_updated`` entries are written in bulk when the view folds its hot metadata
  (`replaybuf.hot_meta`, in key order, instead of one random insert per item per learner
  step); until then they are found among the view's pending updates (`View.pending_update_lsns`).
* ``items_flagged_for_review`` and ``label_applied``: the items `replaybuf.review` flagged or
  labelled (present, respectively pending).
* ``items_sampled`` is **not** indexed: draws are the most frequent event (batch size per
  sample) and say nothing about where an item came from; the item's ``times_sampled`` is on its
  record, and the draws themselves are in the log (``replaybuf log dump``).

Priority updates are frequent; their entries cost 16 bytes per (item, LSN) plus LMDB overhead.

Read side (`item_history`): one read transaction for the item's record and a cursor range over
its keys, then one log read per LSN, each event reduced to this item's row (`reduce_event`).
Cost: O(events of the item) log reads (each a bisect and a short seek,
`replaybuf.file_log.FileLog.read`), independent of table size. The append entry of a present
item is the exception: its payload, append-time priority and lineage are in the view, so it
is built from there plus a few small reads of the record's head (`_append_from_view`) instead
of reading and CRC-checking its whole frame (megabytes for a big batch); evicted items, and
anything that path does not handle, read the record. Thread-safe (LMDB read transactions;
the log is thread-safe).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lmdb
import numpy as np

from replaybuf.applier import (
    FLAG_EVICTED, META_DTYPE, U64, Applied, decode_strings, item_keys, row_dtype,
)
from replaybuf.errors import (
    DataLossError, InvalidArgumentError, ItemNotFoundError, ViewDamagedError,
)
from replaybuf.events import EVENT_VERSION, decode_event, message_classes
from replaybuf.tensors import dtype_from_proto
from replaybuf.v1 import events_pb2, service_pb2

if TYPE_CHECKING:
    from replaybuf.log import Log
    from replaybuf.table_config import TableConfig
    from replaybuf.view import View

__all__ = ["ItemHistory", "index_event", "item_lsns", "item_history", "reduce_event"]

_INDEXED = frozenset({
    "rewards_corrected", "items_evicted", "items_flagged_for_review", "label_applied",
})


def index_event(txn: lmdb.Transaction, dbs: dict[str, Any], applied: Applied) -> None:
    """Record ``(item, lsn)`` for every item `applied` changed (inside the view's write txn)."""

    if applied.kind not in _INDEXED or applied.ids.size == 0:
        return
    lsn = U64.pack(applied.lsn)
    ids = np.unique(applied.ids)
    txn.cursor(db=dbs["item_events"]).putmulti([(k + lsn, b"") for k in item_keys(ids)])


def item_lsns(txn: lmdb.Transaction, dbs: dict[str, Any], item_id: int) -> list[int]:
    """LSNs of the indexed events of one item, ascending."""

    prefix = U64.pack(item_id)
    out: list[int] = []
    cur = txn.cursor(db=dbs["item_events"])
    if cur.set_range(prefix):
        for key in cur.iternext(values=False):
            if key[:8] != prefix:
                break
            out.append(U64.unpack(key[8:16])[0])
    return out


@dataclass(frozen=True)
class ItemHistory:
    """Every event that touched one item, in LSN order (`Engine.get_lineage`).

    Attributes:
        item_id: the item.
        table: its table's name.
        present: False once the item has been evicted.
        entries: ``(lsn, event)`` pairs, each event reduced to this item's row.
        times_sampled: how often the item was drawn (draws are not listed, see module doc).
    """

    item_id: int
    table: str
    present: bool
    entries: tuple[tuple[int, events_pb2.Event], ...]
    times_sampled: int = 0

    def to_proto(self) -> service_pb2.GetLineageResponse:
        msg = service_pb2.GetLineageResponse(item_id=self.item_id, table=self.table,
                                             present=self.present)
        for lsn, ev in self.entries:
            entry = msg.entries.add(lsn=lsn)
            entry.event.CopyFrom(ev)
        return msg


def item_history(view: View, log: Log, item_id: int) -> ItemHistory:
    """The history of `item_id` from the index and the log.

    Raises:
        ItemNotFoundError: no item ever had this id.
    """

    if isinstance(item_id, bool) or not isinstance(item_id, (int, np.integer)) or item_id < 0:
        raise InvalidArgumentError(f"item_id is {item_id!r}; pass an integer >= 1")
    item_id = int(item_id)
    with view.reading() as (txn, dbs):  # one snapshot for the record and the index
        stored = _read_stored(txn, dbs, item_id)
        if stored is not None:  # present: `View.records` without a second transaction
            recs = np.frombuffer(stored[0], META_DTYPE).copy()
            view.fill_hot(txn, recs)
            rec = recs[0]
        else:
            raw = txn.get(U64.pack(item_id), db=dbs["evicted_meta"])
            rec = None if raw is None else np.frombuffer(raw, META_DTYPE).copy()[0]
        if rec is None:
            raise ItemNotFoundError(
                f"no item ever had id {item_id} (ids so far are 1..{view.next_item_id - 1})"
            )
        found_lsns = set(item_lsns(txn, dbs, item_id))
        found_lsns.update(view.pending_update_lsns(txn, int(rec["table"]), item_id))
    evicted = bool(int(rec["flags"]) & FLAG_EVICTED)
    append_lsn = int(rec["append_lsn"])
    found_lsns.add(append_lsn)
    lsns = sorted(found_lsns)
    entries = []
    for lsn in lsns:
        if lsn == append_lsn and stored is not None and not evicted:
            ev = _append_from_view(log, lsn, item_id, stored, _config(view, int(rec["table"])))
            if ev is not None:
                entries.append((lsn, ev))
                continue
        found = next(iter(log.read(lsn, lsn)), None)
        if found is None:
            raise DataLossError(f"LSN {lsn} of item {item_id}'s lineage is not in the log")
        ev = _reduce_append(found.payload, lsn, item_id, rec, view)
        if ev is None:
            ev = reduce_event(decode_event(found.payload, lsn=lsn), item_id)
        entries.append((lsn, ev))
    return ItemHistory(item_id, view.table_name(int(rec["table"])), not evicted,
                       tuple(entries), int(rec["times_sampled"]))


def _config(view: View, idx: int) -> TableConfig | None:
    return next((t.config for t in view.tables() if t.index == idx), None)


_SKINNY: Any = None


def _skinny_event_class() -> Any:
    """An ``Event`` look-alike whose ``items_appended`` lacks the lineage column (field 5),
    which the parser then skips: a batch's per-item strings cost far more to parse than the
    rest of it, and the view holds the item's lineage anyway (the applier stored it from this
    very event)."""

    global _SKINNY
    if _SKINNY is None:
        from google.protobuf import descriptor_pb2

        from replaybuf.v1 import tensor_pb2  # noqa: F401 - registers ColumnarBatch

        f = descriptor_pb2.FieldDescriptorProto
        fd = descriptor_pb2.FileDescriptorProto(
            name="replaybuf/v1/_lineage_skinny.proto", package="replaybuf.v1.skinny",
            syntax="proto3", dependency=["replaybuf/v1/tensor.proto"])
        app = fd.message_type.add(name="Appended")
        app.field.add(name="table", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
        app.field.add(name="item_ids", number=2, type=f.TYPE_UINT64, label=f.LABEL_REPEATED)
        app.field.add(name="data", number=3, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
                      type_name=".replaybuf.v1.ColumnarBatch")
        app.field.add(name="priorities", number=4, type=f.TYPE_DOUBLE, label=f.LABEL_REPEATED)
        ev = fd.message_type.add(name="Event")
        ev.field.add(name="version", number=1, type=f.TYPE_UINT32, label=f.LABEL_OPTIONAL)
        ev.field.add(name="timestamp_ms", number=2, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL)
        ev.field.add(name="items_appended", number=11, type=f.TYPE_MESSAGE,
                     label=f.LABEL_OPTIONAL, type_name=".replaybuf.v1.skinny.Appended")
        _SKINNY, = message_classes(fd, "replaybuf.v1.skinny.Event")
    return _SKINNY


def _reduce_append(payload: bytes, lsn: int, item_id: int, rec: Any,
                   view: View) -> events_pb2.Event | None:
    """The item's row of an ``ItemsAppended`` record, lineage taken from the view; None when
    the record is another kind (the caller decodes it fully)."""

    try:
        sk = _skinny_event_class().FromString(payload)
    except Exception:  # noqa: BLE001 - decode_event reports a damaged record properly
        return None
    if not sk.HasField("items_appended") or sk.version > EVENT_VERSION:
        return None
    out = events_pb2.Event(version=sk.version, timestamp_ms=sk.timestamp_ms)
    _copy_row(sk.items_appended, out.items_appended, item_id)
    lin = out.items_appended.lineage
    for name in ("episode_id", "step", "model_version", "timestamp_ms"):
        getattr(lin, name).append(int(rec[name]))
    req, src = view.read_strings([item_id])
    lin.request_id.append(req[0])
    lin.source.append(src[0])
    return out


def _copy_row(body: Any, new: Any, item_id: int) -> None:
    new.table = body.table
    i = _last_index(body.item_ids, item_id, increasing=True)
    if i < 0:
        return
    new.item_ids.append(item_id)
    if len(body.priorities) > i:
        new.priorities.append(body.priorities[i])
    n = len(body.item_ids)
    for col in body.data.columns:
        raw = col.tensor.data
        row = len(raw) // n if n else 0
        c = new.data.columns.add(name=col.name)
        c.tensor.dtype = col.tensor.dtype
        c.tensor.shape[:] = [1, *col.tensor.shape[1:]]
        c.tensor.data = raw[i * row : (i + 1) * row]


def _last_index(ids: Any, item_id: int, *, increasing: bool) -> int:
    n = len(ids)
    if not n:
        return -1
    if increasing:  # appends: ids increase (usually consecutive): no scan of a big batch
        guess = item_id - ids[0]
        if 0 <= guess < n and ids[guess] == item_id:
            return guess
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if ids[mid] < item_id:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < n and ids[lo] == item_id else -1
    hits = np.flatnonzero(np.asarray(ids, dtype=np.uint64) == np.uint64(item_id))
    return int(hits[-1]) if hits.size else -1


def reduce_event(ev: events_pb2.Event, item_id: int) -> events_pb2.Event:
    """A copy of `ev` with only the parts about `item_id` (its row of a batch; the last row
    when the event names the item several times, as the applier applies the last)."""

    kind = ev.WhichOneof("body")
    out = events_pb2.Event(version=ev.version, timestamp_ms=ev.timestamp_ms)
    body = getattr(ev, kind)
    if kind == "label_applied":
        out.label_applied.CopyFrom(body)
        return out
    i = _last_index(body.item_ids, item_id, increasing=kind == "items_appended")
    if i < 0:  # not about this item after all: keep the envelope only
        getattr(out, kind).table = body.table
        return out
    new = getattr(out, kind)
    new.table = body.table
    new.item_ids.append(item_id)
    if kind == "items_appended":
        new.ClearField("item_ids")
        _copy_row(body, new, item_id)
        for name in ("episode_id", "step", "request_id", "model_version", "timestamp_ms",
                     "source"):
            col = getattr(body.lineage, name)
            if len(col):
                getattr(new.lineage, name).append(col[min(i, len(col) - 1)])
    elif kind == "priorities_updated":
        new.priorities.append(body.priorities[i])
        new.source = body.source
    elif kind == "rewards_corrected":
        new.rewards.append(body.rewards[i])
        if len(body.previous_rewards) > i:
            new.previous_rewards.append(body.previous_rewards[i])
        new.source, new.fidelity_weight = body.source, body.fidelity_weight
        new.reason, new.author = body.reason, body.author
    elif kind == "items_evicted":
        new.reason, new.job_id, new.detail = body.reason, body.job_id, body.detail
    elif kind == "items_flagged_for_review":
        new.reason, new.author = body.reason, body.author
    elif kind == "items_sampled":
        new.seed, new.at_lsn = body.seed, body.at_lsn
    return out


# -- the append entry of a present item, from the view -----------------------------------------
#
# A present item's payload, append-time priority (``item_meta`` keeps it: priority updates live
# in `replaybuf.hot_meta`), lineage and strings are all in the view, so its reduced append
# entry needs from the log only what the view does not keep: the event's version and time, the
# table name, the column order, dtype codes and shapes as sent, and whether the batch carried
# this item's priority. Those sit in the first bytes of the record and between the columns, so
# they are read by walking the frame headers from the log's sparse index and the record's
# protobuf tags with a few small preads, skipping the tensor bytes: O(columns) small reads
# instead of reading, CRC-checking and parsing the whole frame (megabytes for a big batch).
# The result is the same message `_reduce_append` builds from the full record; anything
# unexpected (another log backend, an unusual encoding) returns None and the caller reads the
# record as before.

# `replaybuf.frame`'s header: length, crc, base LSN, count, ... (the equality test of
# tests/test_lineage_audit.py fails if the layout drifts: the fast path then gives up).
_FRAME_HEAD = struct.Struct(">IIQIQ16sQ")
_REC_LEN = struct.Struct(">I")
_WINDOW = 16 * 1024
_MAX_FRAMES = 1 << 16  # frames walked from an index entry before giving up
_BODY_FIELDS = frozenset(
    f.number for f in events_pb2.Event.DESCRIPTOR.oneofs_by_name["body"].fields)
_APPENDED_FIELD = events_pb2.Event.DESCRIPTOR.fields_by_name["items_appended"].number


def _read_stored(txn: lmdb.Transaction, dbs: dict[str, Any], item_id: int
                 ) -> tuple[bytes, bytes, bytes | None] | None:
    """``(raw item_meta record, payload, item_strings value)`` of a present item, else None
    (the append entry checks the payload's size)."""

    key = U64.pack(item_id)
    meta = txn.get(key, db=dbs["item_meta"])
    if meta is None:
        return None
    if len(meta) != META_DTYPE.itemsize:
        raise ViewDamagedError(f"item_meta of item {item_id} has {len(meta)} bytes")
    payload = txn.get(key, db=dbs["items"])
    strings = txn.get(key, db=dbs["item_strings"])
    return (bytes(meta), b"" if payload is None else bytes(payload),
            None if strings is None else bytes(strings))


class _File:
    """Reads of one segment file through a small window (one pread per miss)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.at = 0
        self.buf = b""

    def get(self, pos: int, n: int) -> bytes:
        o = pos - self.at
        if o < 0 or o + n > len(self.buf):
            self.buf, self.at, o = os.pread(self.fd, max(n, _WINDOW), pos), pos, 0
            if len(self.buf) < n:
                raise ValueError("segment ended early")
        return self.buf[o : o + n]

    def varint(self, pos: int, stop: int) -> tuple[int, int]:
        raw = self.get(pos, min(10, stop - pos))
        value = shift = 0
        for k, b in enumerate(raw):
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value, pos + k + 1
            shift += 7
        raise ValueError("bad varint")

    def fields(self, pos: int, stop: int) -> Iterator[tuple[int, int, int, int]]:
        """``(field number, wire type, a, b)`` of a message in ``[pos, stop)``: varints as
        ``(value, end)``, length-delimited as ``(start, end)``, fixed as ``(start, end)``."""

        while pos < stop:
            key, pos = self.varint(pos, stop)
            num, wt = key >> 3, key & 7
            if wt == 0:
                value, pos = self.varint(pos, stop)
                yield num, wt, value, pos
                continue
            if wt == 2:
                n, pos = self.varint(pos, stop)
                end = pos + n
            elif wt in (1, 5):
                end = pos + (8 if wt == 1 else 4)
            else:
                raise ValueError(f"wire type {wt}")
            if end > stop:
                raise ValueError("field runs past its message")
            yield num, wt, pos, end
            pos = end


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _locate(log: Log, lsn: int) -> tuple[str, int, int, int] | None:
    """``(segment path, offset, end, LSN at offset)`` to walk to record `lsn` in a `FileLog`
    (its sparse index entry before the record), else None."""

    segs, lock = getattr(log, "_segs", None), getattr(log, "_lock", None)
    if segs is None or lock is None or not hasattr(segs, "plan"):
        return None
    with lock:
        if lsn > getattr(log, "_last_lsn", 0):
            return None
        plan = segs.plan(lsn, lsn)
    if not plan:
        return None
    path, off, end, at = plan[0]
    return str(path), off, end, at


def _append_head(log: Log, lsn: int) -> tuple[int, int, str, int, int, list] | None:
    """What the view lacks of the ItemsAppended at `lsn`: ``(version, timestamp_ms, table,
    first item id, number of priorities, [(column name, dtype code, shape)])``, else None."""

    where = _locate(log, lsn)
    if where is None:
        return None
    path, off, end, at = where
    fd = os.open(path, os.O_RDONLY)
    try:
        f = _File(fd)
        for _ in range(_MAX_FRAMES):  # frame headers from the index entry to lsn's frame
            if off + _FRAME_HEAD.size > end:
                return None
            length, _, base, count = _FRAME_HEAD.unpack(f.get(off, _FRAME_HEAD.size))[:4]
            if base != at or count == 0 or off + 8 + length > end:
                return None
            if lsn < base + count:
                break
            off, at = off + 8 + length, base + count
        else:
            return None
        q, frame_end = off + _FRAME_HEAD.size, off + 8 + length
        for _ in range(lsn - base + 1):
            (n,) = _REC_LEN.unpack(f.get(q, 4))
            start, q = q + 4, q + 4 + n
            if q > frame_end:
                return None
        return _parse_append(f, start, q)
    finally:
        os.close(fd)


def _parse_append(f: _File, pos: int, stop: int) -> tuple[int, int, str, int, int, list] | None:
    version = ts = 0
    body = None
    for num, wt, a, b in f.fields(pos, stop):
        if num == 1 and wt == 0:
            version = a & 0xFFFFFFFF
        elif num == 2 and wt == 0:
            ts = _signed(a)
        elif num in _BODY_FIELDS:
            if num != _APPENDED_FIELD or wt != 2 or body is not None:
                return None  # another kind, or a body the parser would merge
            body = (a, b)
        elif num in (1, 2):
            return None
    if body is None:
        return None
    table, first, n_prios, data = "", -1, -1, None
    for num, wt, a, b in f.fields(*body):
        if num == 1 and wt == 2:
            table = f.get(a, b - a).decode()
        elif num == 2 and wt == 2 and first < 0 and b > a:
            first = f.varint(a, b)[0]
        elif num == 3 and wt == 2 and data is None:
            data = (a, b)
        elif num == 4 and wt == 2 and n_prios < 0 and (b - a) % 8 == 0:
            n_prios = (b - a) // 8
        elif num in (1, 2, 3, 4, 5) and not (num == 5 and wt == 2):
            return None  # repeated or unpacked: leave it to the protobuf parser
    if first < 0 or data is None:
        return None
    columns = []
    for num, wt, a, b in f.fields(*data):
        if num != 1 or wt != 2:
            return None
        name, tensor = "", None
        for cn, cw, ca, cb in f.fields(a, b):
            if cn == 1 and cw == 2:
                name = f.get(ca, cb - ca).decode()
            elif cn == 2 and cw == 2 and tensor is None:
                tensor = (ca, cb)
            elif cn in (1, 2):
                return None
        if tensor is None:
            return None
        code, shape = 0, []
        for tn, tw, ta, tb in f.fields(*tensor):
            if tn == 1 and tw == 0:
                code = ta
            elif tn == 2 and tw == 2:
                p = ta
                while p < tb:
                    v, p = f.varint(p, tb)
                    shape.append(_signed(v))
            elif tn == 2 and tw == 0:
                shape.append(_signed(ta))
            elif tn in (1, 2) or (tn == 3 and tw != 2):
                return None
        columns.append((name, code, shape))
    if len({name for name, _, _ in columns}) != len(columns):
        return None  # a name twice: the view kept the last one's bytes only
    return version, ts, table, first, max(n_prios, 0), columns


def _append_from_view(log: Log, lsn: int, item_id: int,
                      stored: tuple[bytes, bytes, bytes | None],
                      config: TableConfig | None) -> events_pb2.Event | None:
    """The item's reduced append entry (as `_reduce_append` builds it) from the view and the
    record's head; None when that cannot be done exactly (the caller reads the record)."""

    if config is None:
        return None
    try:
        head = _append_head(log, lsn)
    except (OSError, ValueError, struct.error, UnicodeDecodeError):
        return None
    if head is None:
        return None
    version, ts, table, first, n_prios, columns = head
    meta_raw, payload, strings = stored
    meta = np.frombuffer(meta_raw, META_DTYPE)[0]
    dt = row_dtype(config)
    # item_meta keeps the append's event time in priority_ms (hot_meta holds later ones):
    # a mismatch means the record is not what the view was built from.
    if (version > EVENT_VERSION or item_id < first or ts != int(meta["priority_ms"])
            or int(meta["append_lsn"]) != lsn or len(payload) != dt.itemsize):
        return None
    out = events_pb2.Event(version=version, timestamp_ms=ts)
    app = out.items_appended
    app.table = table
    app.item_ids.append(item_id)
    # ids increase, so the item's row is at most item_id - first: the batch has its
    # priority when it has more than that many (else `_copy_row` looks it up in the record).
    if n_prios > item_id - first:
        app.priorities.append(float(meta["priority"]))
    elif n_prios:
        return None
    for name, code, shape in columns:
        field = dt.fields.get(name)
        if field is None or not shape:
            return None
        fdt, offset = field[0], field[1]
        try:
            if dtype_from_proto(code) != fdt.base or tuple(shape[1:]) != fdt.shape:
                return None
        except Exception:  # noqa: BLE001 - an unknown code: the full parse reports it
            return None
        col = app.data.columns.add(name=name)
        col.tensor.dtype = code
        col.tensor.shape[:] = [1, *shape[1:]]
        col.tensor.data = payload[offset : offset + fdt.itemsize]
    lin = app.lineage
    for name in ("episode_id", "step", "model_version", "timestamp_ms"):
        getattr(lin, name).append(int(meta[name]))
    req, src = decode_strings(strings) if strings is not None else ("", "")
    lin.request_id.append(req)
    lin.source.append(src)
    return out
