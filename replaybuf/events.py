"""Events: the protobuf `Event` envelope as log records.

Every change to a replay buffer is one `replaybuf.v1.events_pb2.Event`, serialized
deterministically into one log record. The envelope carries a schema version; readers accept
every version up to :data:`EVENT_VERSION` and reject newer ones with a clear error rather than
misreading them.

Example:
    >>> from replaybuf.v1 import events_pb2
    >>> ev = make_event(items_evicted=events_pb2.ItemsEvicted(table="t", item_ids=[1, 2]))
    >>> decode_event(encode_event(ev)).items_evicted.item_ids[:]
    [1, 2]
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf.message import DecodeError

from replaybuf.errors import DataLossError, InvalidArgumentError
from replaybuf.frame import RecordParts
from replaybuf.v1 import events_pb2
from replaybuf.wire import varint
from replaybuf.wire_batch import LEN, EncodedBatch, fields

__all__ = [
    "encode_event_with_batch",
    "EVENT_VERSION",
    "EVENT_KINDS",
    "make_event",
    "encode_event",
    "decode_event",
    "event_kind",
    "event_table",
    "describe_event",
    "message_classes",
]

#: Schema version written by this release.
EVENT_VERSION = 1

#: The oneof field names of `Event.body`, i.e. the event kinds.
EVENT_KINDS: tuple[str, ...] = tuple(
    f.name for f in events_pb2.Event.DESCRIPTOR.oneofs_by_name["body"].fields
)


def make_event(*, timestamp_ms: int | None = None, **body: object) -> events_pb2.Event:
    """Build an envelope around exactly one body, e.g. ``make_event(items_evicted=...)``."""

    if len(body) != 1:
        raise ValueError(f"make_event takes exactly one event body, got {sorted(body)}")
    (kind, message), = body.items()
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}; expected one of {EVENT_KINDS}")
    ev = events_pb2.Event(
        version=EVENT_VERSION,
        timestamp_ms=int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
    )
    getattr(ev, kind).CopyFrom(message)
    return ev


def encode_event(event: events_pb2.Event) -> bytes:
    """Serialize deterministically (the same event always gives the same bytes)."""

    return event.SerializeToString(deterministic=True)


_ITEMS_APPENDED = events_pb2.Event.DESCRIPTOR.fields_by_name["items_appended"].number
_APPENDED_DATA = events_pb2.ItemsAppended.DESCRIPTOR.fields_by_name["data"].number


def encode_event_with_batch(event: events_pb2.Event, batch: EncodedBatch) -> RecordParts:
    """`encode_event` of an ItemsAppended event whose ``data`` is `batch`, given without it.

    The batch's wire bytes are spliced in where protobuf writes field ``data`` (fields in
    number order), so ``bytes(result)`` is byte for byte `encode_event` of the full event. The
    result is a `RecordParts` that views the batch's bytes: the log writes the tensors from
    the received request itself, with no copy in Python (one write into the page cache).
    """

    raw = encode_event(event)
    outer = None
    for number, wire, value, first in fields(raw, 0, len(raw), "Event"):
        if number == _ITEMS_APPENDED and wire == LEN:
            outer = first, value
    if outer is None:
        raise InvalidArgumentError("encode_event_with_batch needs an ItemsAppended event")
    first, (off, n) = outer
    cut = off + n
    for number, _wire, _value, start in fields(raw, off, off + n, "ItemsAppended"):
        if number == _APPENDED_DATA:
            raise InvalidArgumentError("the event already has data; pass it without")
        if number > _APPENDED_DATA:
            cut = start
            break
    data = batch.field(_APPENDED_DATA)
    size = n + sum(len(part) for part in data)
    return RecordParts([raw[:first] + varint(_ITEMS_APPENDED << 3 | LEN) + varint(size)
                        + raw[off:cut], *data, raw[cut:]])


def decode_event(payload: bytes, *, lsn: int | None = None) -> events_pb2.Event:
    """Parse a log record. Raises DataLossError for unreadable or too-new records."""

    where = f" at LSN {lsn}" if lsn is not None else ""
    ev = events_pb2.Event()
    try:
        ev.ParseFromString(payload)
    except DecodeError as exc:
        raise DataLossError(f"log record{where} is not a replaybuf event ({exc})") from exc
    if ev.version > EVENT_VERSION:
        raise DataLossError(
            f"log record{where} has event schema version {ev.version}, newer than this "
            f"replaybuf understands ({EVENT_VERSION}); upgrade replaybuf to read this log"
        )
    if ev.WhichOneof("body") is None:
        raise DataLossError(f"log record{where} is an event with no body")
    return ev


def event_kind(event: events_pb2.Event) -> str:
    """The body's field name, e.g. ``"items_appended"``."""

    kind = event.WhichOneof("body")
    assert kind is not None
    return kind


def event_table(event: events_pb2.Event) -> str:
    """The table an event belongs to."""

    body = getattr(event, event_kind(event))
    if isinstance(body, events_pb2.TableCreated):
        return body.config.name
    return body.table  # type: ignore[no-any-return]


def describe_event(event: events_pb2.Event) -> str:
    """A one-line human summary, used by ``replaybuf log dump``."""

    kind = event_kind(event)
    body = getattr(event, kind)
    table = event_table(event)
    if kind == "table_created":
        fields = ", ".join(
            f"{s.name}{list(s.shape) if s.shape else ''}" for s in body.config.signature
        )
        return f"TableCreated {table!r} capacity={body.config.capacity} signature=[{fields}]"
    if kind == "items_appended":
        ids = body.item_ids
        span = f"ids {ids[0]}..{ids[-1]}" if ids else "no ids"
        versions = sorted(set(body.lineage.model_version))
        return f"ItemsAppended {table!r} n={len(ids)} {span} model_versions={versions}"
    if kind == "priorities_updated":
        return f"PrioritiesUpdated {table!r} n={len(body.item_ids)} source={body.source!r}"
    if kind == "rewards_corrected":
        src = events_pb2.FeedbackSource.Name(body.source)
        return f"RewardsCorrected {table!r} n={len(body.item_ids)} source={src} reason={body.reason!r}"
    if kind == "items_evicted":
        reason = events_pb2.EvictionReason.Name(body.reason)
        return f"ItemsEvicted {table!r} n={len(body.item_ids)} reason={reason} job={body.job_id!r}"
    if kind == "items_sampled":
        return f"ItemsSampled {table!r} n={len(body.item_ids)} seed={body.seed} at_lsn={body.at_lsn}"
    if kind == "items_flagged_for_review":
        return f"ItemsFlaggedForReview {table!r} n={len(body.item_ids)} reason={body.reason!r}"
    if kind == "label_applied":
        return f"LabelApplied {table!r} item={body.item_id} verdict={body.verdict!r}"
    if kind == "job_completed":
        evicted = dict(sorted(body.evicted_by_reason.items()))
        return f"JobCompleted {table!r} job={body.job_id!r} kind={body.kind!r} evicted={evicted}"
    if kind == "retrain_recommended":
        return f"RetrainRecommended {table!r} job={body.job_id!r} {body.detail}"
    return f"{kind} {table!r}"


def message_classes(fd: Any, *names: str) -> tuple[Any, ...]:
    """Message classes of a derived ``FileDescriptorProto`` (a skinny look-alike of one of
    ours), added to the default pool once per process."""

    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(fd.name)
    except KeyError:
        pool.AddSerializedFile(fd.SerializeToString())
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(n)) for n in names)
