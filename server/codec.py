"""Encoding of the two big streamed replies straight to wire bytes.

A sampled batch holds fresh numpy columns. Building a ``SampleResponse`` message would copy
each column three times (``tobytes``, into the protobuf arena, then out again when
serializing); :func:`encode_sample` instead writes the small parts with protobuf and joins the
column buffers in with **one copy per column**. The bytes equal
``sample.to_proto().SerializeToString(deterministic=True)`` (tested), so any protobuf client
parses them as a ``SampleResponse``.

Likewise :func:`encode_log_event` frames a log record's payload, which already is a serialized
``Event``, as a ``LogEvent`` without re-encoding it.

The server registers these RPCs with a serializer that passes ``bytes`` through
(:func:`passthrough_serializer`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from replaybuf.v1 import service_pb2
from replaybuf.wire import varint
from replaybuf.wire_batch import EncodedBatch, batch_parts, split_message

__all__ = ["encode_sample", "encode_shared_sample", "encode_log_event", "passthrough_serializer",
           "AppendRequestView", "decode_append_request"]

# Tags (field number << 3 | wire type 2 = length-delimited) of the fields written by hand.
_TAG_RESPONSE_DATA = b"\x0a"  # SampleResponse.data = 1
_TAG_LOG_EVENT_LSN = b"\x08"  # LogEvent.lsn = 1 (varint)
_TAG_LOG_EVENT_EVENT = b"\x12"  # LogEvent.event = 2


def encode_sample(data: Mapping[str, np.ndarray], info: Any) -> bytes:
    """Serialize ``SampleResponse(data=<columns>, info=info.to_proto())`` with one copy per column.

    Args:
        data: field name -> array with a leading batch dimension (the engine's `Sample.data`).
        info: the engine's `SampleInfo` (anything with ``to_proto()``) or a proto SampleInfo.
    """

    columns, columns_len = batch_parts(data)
    parts: list[Any] = [_TAG_RESPONSE_DATA + varint(columns_len), *columns]
    info_msg = info if hasattr(info, "SerializeToString") else info.to_proto()
    parts.append(service_pb2.SampleResponse(info=info_msg).SerializeToString(deterministic=True))
    return b"".join(parts)


def encode_shared_sample(shared: Any, info: Any) -> bytes:
    """Serialize ``SampleResponse(info=..., shared=shared)``: a batch whose columns were
    gathered into the client's shared ring (`replaybuf.shared_ring`), so no data travels."""

    info_msg = info if hasattr(info, "SerializeToString") else info.to_proto()
    return service_pb2.SampleResponse(info=info_msg, shared=shared).SerializeToString(
        deterministic=True)


def encode_log_event(lsn: int, payload: bytes) -> bytes:
    """Serialize ``LogEvent(lsn=lsn, event=<payload parsed as Event>)`` without parsing it."""

    head = (_TAG_LOG_EVENT_LSN + varint(lsn)) if lsn else b""
    return b"".join((head, _TAG_LOG_EVENT_EVENT, varint(len(payload)), payload))


def passthrough_serializer(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """A response serializer that sends ``bytes`` as they are and serializes messages."""

    def serializer(message: Any) -> bytes:
        if isinstance(message, bytes):
            return message
        return serialize(message)

    return serializer


_APPEND_DATA = service_pb2.AppendRequest.DESCRIPTOR.fields_by_name["data"].number


class AppendRequestView:
    """An ``AppendRequest`` as received, with its ``data`` left in the received bytes.

    The Append handler's request deserializer (`decode_append_request`): protobuf parses only
    the small fields (table, priorities, lineage, producer); `batch` decodes the tensors as
    read-only views of the received bytes, which the engine logs with one copy
    (`replaybuf.wire_batch`). Other attributes read through to the parsed message, whose
    ``data`` is empty.
    """

    __slots__ = ("message", "_raw", "_span")

    def __init__(self, raw: bytes) -> None:
        self._span, rest = split_message(raw, _APPEND_DATA, "AppendRequest")
        self._raw = raw
        self.message = service_pb2.AppendRequest.FromString(rest)

    def batch(self) -> EncodedBatch | Any:
        """The batch: an `EncodedBatch`, or the (empty) parsed one when none was sent.

        Raises:
            InvalidArgumentError: a column whose data does not match its dtype and shape, or a
                field sent twice.
        """

        if self._span is None:
            return self.message.data
        return EncodedBatch.decode(self._raw, self._span, "AppendRequest.data")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.message, name)


def decode_append_request(raw: bytes) -> AppendRequestView:
    """Request deserializer of Append (see `AppendRequestView`)."""

    return AppendRequestView(raw)
