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

Read side (`item_history`): one cursor range over the item's keys, then one log read per LSN,
each event reduced to this item's row (`reduce_event`). Cost: O(events of the item) log reads
(each a bisect and a short seek, `replaybuf.file_log.FileLog.read`), independent of table size.
Thread-safe (LMDB read transactions; the log is thread-safe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lmdb
import numpy as np

from replaybuf.applier import FLAG_EVICTED, U64, Applied, item_keys
from replaybuf.errors import DataLossError, ItemNotFoundError, InvalidArgumentError
from replaybuf.events import EVENT_VERSION, decode_event
from replaybuf.v1 import events_pb2, service_pb2

if TYPE_CHECKING:
    from replaybuf.log import Log
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
    rec = view.records([item_id]).get(item_id)
    if rec is None:
        raise ItemNotFoundError(
            f"no item ever had id {item_id} (ids so far are 1..{view.next_item_id - 1})"
        )
    with view.reading() as (txn, dbs):
        found_lsns = set(item_lsns(txn, dbs, item_id))
        found_lsns.update(view.pending_update_lsns(txn, int(rec["table"]), item_id))
    found_lsns.add(int(rec["append_lsn"]))
    lsns = sorted(found_lsns)
    entries = []
    for lsn in lsns:
        found = next(iter(log.read(lsn, lsn)), None)
        if found is None:
            raise DataLossError(f"LSN {lsn} of item {item_id}'s lineage is not in the log")
        ev = _reduce_append(found.payload, lsn, item_id, rec, view)
        if ev is None:
            ev = reduce_event(decode_event(found.payload, lsn=lsn), item_id)
        entries.append((lsn, ev))
    return ItemHistory(item_id, view.table_name(int(rec["table"])),
                       not int(rec["flags"]) & FLAG_EVICTED, tuple(entries),
                       int(rec["times_sampled"]))


_SKINNY: Any = None


def _skinny_event_class() -> Any:
    """An ``Event`` look-alike whose ``items_appended`` lacks the lineage column (field 5),
    which the parser then skips: a batch's per-item strings cost far more to parse than the
    rest of it, and the view holds the item's lineage anyway (the applier stored it from this
    very event)."""

    global _SKINNY
    if _SKINNY is None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

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
        pool = descriptor_pool.Default()
        try:
            pool.FindFileByName(fd.name)
        except KeyError:
            pool.AddSerializedFile(fd.SerializeToString())
        _SKINNY = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("replaybuf.v1.skinny.Event"))
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
