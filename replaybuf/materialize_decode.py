"""Decoding log records for `replaybuf.materialize`: skinny event classes and wire-level cuts.

The materializer reads every event up to an LSN once (the scan) and the append events of the
present items a second time (the stream). Parsing a batch's per-item lineage strings costs more
than all the rest of an append, so both reads use look-alike message classes built at first
use from the real descriptors:

* the scan (`_scan_decode`): ``items_appended`` without its lineage;
* the stream (`_stream_decode`): the lineage kept as raw bytes, its numeric columns parsed by a
  ``Lineage`` look-alike without the string fields, and the string fields cut out of the bytes
  in bulk by `_wire_strings` (`replaybuf.export_chunk.Utf8Strings`, never a ``str`` per item).

Anything these fast paths do not handle falls back to `replaybuf.events.decode_event`, which
raises the proper errors. The column helpers (`_column`, `_strings`, `_broadcast_strings`)
expand lineage and priority columns of 0, 1 or n entries to n values the way the applier
stores them. Pure functions and lazily built classes; thread-safe.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from replaybuf.events import EVENT_VERSION, decode_event, message_classes
from replaybuf.export_chunk import Utf8Strings
from replaybuf.v1 import events_pb2
from replaybuf.wire import read_varint


def _table_of(ev: events_pb2.Event) -> str | None:
    kind = ev.WhichOneof("body")
    if kind is None:
        return None
    body = getattr(ev, kind)
    if isinstance(body, events_pb2.TableCreated):
        return body.config.name
    return getattr(body, "table", None)


_SCAN_EVENT: Any = None


def _scan_event_class() -> Any:
    """An ``Event`` look-alike whose ``items_appended`` lacks the lineage (field 5): the scan
    needs ids, priorities and the reward column, and a batch's per-item strings cost more to
    parse than all the rest of it. Every other body is the real message type."""

    global _SCAN_EVENT
    if _SCAN_EVENT is None:
        from google.protobuf import descriptor_pb2

        from replaybuf.v1 import tensor_pb2  # noqa: F401 - registers ColumnarBatch

        fd = descriptor_pb2.FileDescriptorProto(
            name="replaybuf/v1/_materialize_scan.proto", package="replaybuf.v1.scan",
            syntax="proto3",
            dependency=[events_pb2.DESCRIPTOR.name, tensor_pb2.DESCRIPTOR.name])
        app = fd.message_type.add()
        events_pb2.ItemsAppended.DESCRIPTOR.CopyToProto(app)
        app.name = "Appended"
        kept = [f for f in app.field if f.name != "lineage"]
        del app.field[:]
        app.field.extend(kept)
        ev = fd.message_type.add()
        events_pb2.Event.DESCRIPTOR.CopyToProto(ev)
        for f in ev.field:
            if f.name == "items_appended":
                f.type_name = ".replaybuf.v1.scan.Appended"
        _SCAN_EVENT, = message_classes(fd, "replaybuf.v1.scan.Event")
    return _SCAN_EVENT


def _scan_decode(payload: bytes, lsn: int) -> Any:
    """`decode_event` with the scan's skinny class: the same checks, the same errors."""

    try:
        ev = _scan_event_class().FromString(payload)
    except Exception:  # noqa: BLE001 - decode_event raises the proper DataLossError
        return decode_event(payload, lsn=lsn)
    if ev.version > EVENT_VERSION or ev.WhichOneof("body") is None:
        return decode_event(payload, lsn=lsn)
    return ev


def _stream_decode(payload: bytes, lsn: int) -> tuple[Any, Any, dict[str, Utf8Strings] | None]:
    """An append event for the stream: ``(body, numeric lineage, string columns)``; the
    string columns are None when the lineage was parsed the ordinary way (then the numeric
    lineage object carries the strings too)."""

    event_cls, numbers_cls = _stream_classes()
    try:
        ev = event_cls.FromString(payload)
    except Exception:  # noqa: BLE001 - decode_event raises the proper DataLossError
        ev = None
    if ev is not None and ev.version <= EVENT_VERSION and ev.HasField("items_appended"):
        body = ev.items_appended
        strings = _wire_strings(body.lineage)
        if strings is not None:
            return body, numbers_cls.FromString(body.lineage), strings
    full = decode_event(payload, lsn=lsn).items_appended
    return full, full.lineage, None


_STREAM: Any = None
#: Lineage fields that are strings (field number -> name), read from the wire by `_wire_strings`.
_STRING_FIELDS = {3: "request_id", 6: "source"}


def _stream_classes() -> tuple[Any, Any]:
    """``(Event, Numbers)`` look-alikes for the second read of append events: the event's
    ``items_appended.lineage`` stays raw bytes, and ``Numbers`` is ``Lineage`` without its
    string fields, so upb parses the numeric columns while `_wire_strings` cuts the strings
    out of the bytes in bulk (a ``str`` per item costs more than all the rest)."""

    global _STREAM
    if _STREAM is None:
        from google.protobuf import descriptor_pb2

        from replaybuf.v1 import table_pb2, tensor_pb2

        f = descriptor_pb2.FieldDescriptorProto
        fd = descriptor_pb2.FileDescriptorProto(
            name="replaybuf/v1/_materialize_stream.proto", package="replaybuf.v1.stream",
            syntax="proto3", dependency=[events_pb2.DESCRIPTOR.name,
                                         tensor_pb2.DESCRIPTOR.name, table_pb2.DESCRIPTOR.name])
        numbers = fd.message_type.add()
        table_pb2.Lineage.DESCRIPTOR.CopyToProto(numbers)
        numbers.name = "Numbers"
        kept = [x for x in numbers.field if x.number not in _STRING_FIELDS]
        del numbers.field[:]
        numbers.field.extend(kept)
        app = fd.message_type.add()
        events_pb2.ItemsAppended.DESCRIPTOR.CopyToProto(app)
        app.name = "Appended"
        for x in app.field:
            if x.name == "lineage":
                x.type = f.TYPE_BYTES
                x.ClearField("type_name")
        ev = fd.message_type.add()
        events_pb2.Event.DESCRIPTOR.CopyToProto(ev)
        for x in ev.field:
            if x.name == "items_appended":
                x.type_name = ".replaybuf.v1.stream.Appended"
        _STREAM = message_classes(fd, "replaybuf.v1.stream.Event", "replaybuf.v1.stream.Numbers")
    return _STREAM


def _wire_strings(raw: bytes, max_runs: int = 64) -> dict[str, Utf8Strings] | None:
    """The string fields of a serialized ``Lineage`` as `Utf8Strings`, or None to say "parse
    it the ordinary way".

    A repeated string field is one record (tag, length, bytes) per string. Ids of one width
    make runs of records with the same tag and length at a fixed stride; each run is checked
    and cut out with numpy in one step. Fields are walked in Python one run at a time, so
    strings of varying lengths (many short runs) give up after `max_runs` and return None.
    """

    arr = np.frombuffer(raw, np.uint8)
    size = len(raw)
    parts: dict[int, tuple[list[np.ndarray], list[bytes]]] = {
        k: ([], []) for k in _STRING_FIELDS}
    pos = runs = 0
    try:
        while pos < size:
            runs += 1
            if runs > max_runs:
                return None
            tag, p = read_varint(raw, pos)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                pos = read_varint(raw, p)[1]
            elif wire == 1:
                pos = p + 8
            elif wire == 5:
                pos = p + 4
            elif wire != 2:
                return None
            else:
                length, q = read_varint(raw, p)
                if field not in _STRING_FIELDS:
                    pos = q + length
                    continue
                head = q - pos
                stride = head + length
                if pos + stride > size:
                    return None
                starts = pos + stride * np.arange((size - pos) // stride)
                same = np.ones(starts.size, np.bool_)
                for j in range(head):  # the same tag and length bytes, record after record
                    same &= arr[starts + j] == arr[pos + j]
                k = starts.size if same.all() else int(np.argmin(same))
                block = arr[pos : pos + k * stride].reshape(k, stride)[:, head:]
                parts[field][0].append(np.full(k, length, "<u4"))
                parts[field][1].append(block.tobytes())
                pos += k * stride
    except ValueError:
        return None
    if pos != size:
        return None
    return {name: Utf8Strings(np.concatenate(parts[k][0]) if parts[k][0]
                              else np.empty(0, "<u4"), b"".join(parts[k][1]))
            for k, name in _STRING_FIELDS.items()}


def _broadcast_strings(col: Utf8Strings, n: int) -> Utf8Strings:
    """`_strings` for a `Utf8Strings` column: n strings, the last one repeating."""

    count = len(col)
    if count == n:
        return col
    if count > n:
        return col[:n]  # type: ignore[no-any-return]
    if count == 0:
        return Utf8Strings(np.zeros(n, "<u4"), b"")
    last = col.lengths[-1:]
    tail = col.utf8[len(col.utf8) - int(last[0]) :]
    return Utf8Strings(np.concatenate([col.lengths, np.repeat(last, n - count)]),
                       col.utf8 + tail * (n - count))


def _column(values: Any, n: int, dtype: np.dtype) -> np.ndarray:
    """A lineage or priority column of 0, 1 or n entries as n values (numpy broadcasting,
    the way the applier assigns it into the item records)."""

    out = np.zeros(n, dtype)
    if len(values):
        out[:] = np.asarray(values)
    return out


def _strings(values: Any, n: int) -> list[str]:
    """A string lineage column of 0..n entries as n strings: the last one repeats (as the
    applier stores it), none gives empty strings."""

    got = list(values)
    if len(got) >= n:
        return got[:n] if len(got) > n else got
    return got + [got[-1]] * (n - len(got)) if got else [""] * n
