"""The human review flow: flag items, list what waits for a verdict, apply labels.

Model: ``ItemsFlaggedForReview`` puts present items of a table in its *pending set*;
``LabelApplied`` takes one out; an eviction (any reason) takes evicted items out, since nobody
can review what left the table. A verdict is one atomic append of ``LabelApplied`` followed by
its consequences (`label_events`): ``relabel`` -> ``RewardsCorrected`` (source HUMAN),
a new priority -> ``PrioritiesUpdated``, ``reject`` -> ``ItemsEvicted`` (REVIEW_REJECTED).

The pending set lives in the view's ``pending_reviews`` database, written by `apply_event` in
the view's write transaction from the events alone, so a rebuilt view has the same set. Key
``u32 table, u64 item id``; value ``v, u64 flag LSN, u16 len, reason, u16 len, author``. An
item flagged again while pending keeps its first flag. Listing sorts the table's pending set
by flag LSN: O(pending items of the table), meant for review queues, not millions of items.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lmdb
import numpy as np

from replaybuf.applier import META_DTYPE, RECORD_VERSION, U32, U64, Applied, Batch, item_keys
from replaybuf.errors import InvalidArgumentError
from replaybuf.events import make_event
from replaybuf.v1 import events_pb2, service_pb2

if TYPE_CHECKING:
    from replaybuf.view import View

__all__ = ["PendingReview", "VERDICTS", "apply_event", "pending", "is_pending", "label_events"]

#: Verdicts `Engine.apply_label` accepts.
VERDICTS = ("accept", "reject", "relabel")
_HEAD = struct.Struct("<BQ")


@dataclass(frozen=True)
class PendingReview:
    """One item waiting for a verdict, with its current reward and priority."""

    item_id: int
    reason: str
    author: str
    flagged_lsn: int
    reward: float
    priority: float

    def to_proto(self) -> service_pb2.PendingReview:
        return service_pb2.PendingReview(
            item_id=self.item_id, reason=self.reason, author=self.author,
            flagged_lsn=self.flagged_lsn, reward=self.reward, priority=self.priority)


def _encode(lsn: int, reason: str, author: str) -> bytes:
    r, a = reason.encode(), author.encode()
    return (_HEAD.pack(RECORD_VERSION, lsn) + len(r).to_bytes(2, "little") + r
            + len(a).to_bytes(2, "little") + a)


def _decode(value: bytes) -> tuple[int, str, str]:
    _, lsn = _HEAD.unpack_from(value)
    o = _HEAD.size
    n = int.from_bytes(value[o : o + 2], "little")
    reason = bytes(value[o + 2 : o + 2 + n]).decode()
    o += 2 + n
    m = int.from_bytes(value[o : o + 2], "little")
    return lsn, reason, bytes(value[o + 2 : o + 2 + m]).decode()


def apply_event(batch: Batch, dbs: dict[str, Any], applied: Applied) -> None:
    """Update the pending sets for one applied event (inside the view's write transaction).

    For flags and labels it sets ``applied.ids`` to the items actually flagged or labelled,
    which the lineage index then records.
    """

    txn: lmdb.Transaction = batch.txn
    ev = applied.event
    kind = applied.kind
    db = dbs["pending_reviews"]
    if kind == "items_evicted":
        if applied.ids.size and txn.stat(db)["entries"]:
            t = U32.pack(applied.table)
            for k in item_keys(applied.ids):
                txn.delete(t + k, db=db)
        return
    if kind not in ("items_flagged_for_review", "label_applied"):
        return
    body = getattr(ev, kind)
    rec = batch.tables.get(body.table)
    if rec is None:
        return
    t = U32.pack(rec.index)
    if kind == "label_applied":
        if txn.delete(t + U64.pack(body.item_id), db=db):
            applied.ids = np.array([body.item_id], np.uint64)
        return
    ids = np.asarray(body.item_ids, dtype=np.uint64)
    if not ids.size:
        return
    ids = ids[np.sort(np.unique(ids, return_index=True)[1])]
    keys = item_keys(ids)
    found = txn.cursor(db=dbs["item_meta"]).getmulti(keys)
    present = {k for k, v in found if np.frombuffer(v, META_DTYPE)[0]["table"] == rec.index}
    value = _encode(applied.lsn, body.reason, body.author)
    flagged = []
    for i, k in zip(ids.tolist(), keys):
        if k in present:
            txn.put(t + k, value, db=db, overwrite=False)
            flagged.append(i)
    applied.ids = np.asarray(flagged, dtype=np.uint64)


def is_pending(view: View, table_index: int, item_id: int) -> bool:
    with view.reading() as (txn, dbs):
        return txn.get(U32.pack(table_index) + U64.pack(item_id), db=dbs["pending_reviews"]) \
            is not None


def pending(view: View, table_index: int, limit: int) -> list[PendingReview]:
    """The table's pending reviews, oldest flag first, at most `limit`."""

    prefix = U32.pack(table_index)
    rows: list[tuple[int, int, str, str]] = []
    with view.reading() as (txn, dbs):
        cur = txn.cursor(db=dbs["pending_reviews"])
        if cur.set_range(prefix):
            for key, value in cur:
                if key[:4] != prefix:
                    break
                lsn, reason, author = _decode(value)
                rows.append((lsn, U64.unpack(key[4:12])[0], reason, author))
    rows.sort()
    rows = rows[:limit]
    recs = view.records([r[1] for r in rows])
    return [PendingReview(i, reason, author, lsn, float(recs[i]["reward"]),
                          float(recs[i]["priority"]))
            for lsn, i, reason, author in rows if i in recs]


def label_events(table: str, item_id: int, verdict: str, *, reward: float | None,
                 priority: float | None, author: str, note: str,
                 previous_reward: float | None) -> list[events_pb2.Event]:
    """``LabelApplied`` and its consequences, in the order they are logged.

    Raises:
        InvalidArgumentError: an unknown verdict, ``relabel`` without a reward, a reward with
            another verdict, a priority with ``reject``, or a non-finite/negative value.
    """

    if verdict not in VERDICTS:
        raise InvalidArgumentError(f"verdict is {verdict!r}; use one of {list(VERDICTS)}")
    if verdict == "relabel" and reward is None:
        raise InvalidArgumentError("verdict 'relabel' needs the new reward; pass reward=")
    if verdict != "relabel" and reward is not None:
        raise InvalidArgumentError(
            f"verdict {verdict!r} takes no reward; use verdict 'relabel' to change it")
    if verdict == "reject" and priority is not None:
        raise InvalidArgumentError("verdict 'reject' evicts the item; drop priority=")
    if reward is not None and not np.isfinite(reward):
        raise InvalidArgumentError(f"reward is {reward!r}; it must be finite")
    if priority is not None and not (np.isfinite(priority) and priority >= 0):
        raise InvalidArgumentError(f"priority is {priority!r}; it must be finite and >= 0")
    label = events_pb2.LabelApplied(table=table, item_id=item_id, verdict=verdict,
                                    author=author, note=note)
    if reward is not None:
        label.reward = float(reward)
    if priority is not None:
        label.priority = float(priority)
    events = [make_event(label_applied=label)]
    if reward is not None:
        events.append(make_event(rewards_corrected=events_pb2.RewardsCorrected(
            table=table, item_ids=[item_id], rewards=[float(reward)],
            previous_rewards=[] if previous_reward is None else [previous_reward],
            source=events_pb2.FEEDBACK_SOURCE_HUMAN, fidelity_weight=1.0,
            reason=note or "review relabel", author=author)))
    if priority is not None:
        events.append(make_event(priorities_updated=events_pb2.PrioritiesUpdated(
            table=table, item_ids=[item_id], priorities=[float(priority)],
            source=f"review:{author}" if author else "review")))
    if verdict == "reject":
        events.append(make_event(items_evicted=events_pb2.ItemsEvicted(
            table=table, item_ids=[item_id], reason=events_pb2.EVICTION_REASON_REVIEW_REJECTED,
            job_id=f"review:{author}" if author else "review", detail=note)))
    return events
