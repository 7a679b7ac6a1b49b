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

import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from replaybuf.tensors import dtype_to_proto
from replaybuf.v1 import service_pb2, tensor_pb2
from replaybuf.wire import varint
from replaybuf.wire_batch import EncodedBatch, split_message

__all__ = ["encode_sample", "encode_log_event", "passthrough_serializer",
           "AppendRequestView", "decode_append_request"]

_LITTLE = sys.byteorder == "little"

# Tags (field number << 3 | wire type 2 = length-delimited) of the fields written by hand.
_TAG_RESPONSE_DATA = b"\x0a"  # SampleResponse.data = 1
_TAG_BATCH_COLUMN = b"\x0a"  # ColumnarBatch.columns = 1
_TAG_COLUMN_TENSOR = b"\x12"  # Column.tensor = 2
_TAG_TENSOR_DATA = b"\x1a"  # Tensor.data = 3
_TAG_LOG_EVENT_LSN = b"\x08"  # LogEvent.lsn = 1 (varint)
_TAG_LOG_EVENT_EVENT = b"\x12"  # LogEvent.event = 2


def _wire_array(array: np.ndarray) -> np.ndarray:
    """The array as contiguous little-endian memory (no copy in the common case)."""

    arr = np.asarray(array)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not _LITTLE):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr


def encode_sample(data: Mapping[str, np.ndarray], info: Any) -> bytes:
    """Serialize ``SampleResponse(data=<columns>, info=info.to_proto())`` with one copy per column.

    Args:
        data: field name -> array with a leading batch dimension (the engine's `Sample.data`).
        info: the engine's `SampleInfo` (anything with ``to_proto()``) or a proto SampleInfo.
    """

    parts: list[Any] = []
    columns_len = 0
    column_parts: list[list[Any]] = []
    for name, array in data.items():
        arr = _wire_array(array)
        head = tensor_pb2.Tensor(dtype=dtype_to_proto(arr.dtype), shape=arr.shape).SerializeToString()
        nbytes = arr.nbytes
        tensor_len = len(head) + 1 + len(varint(nbytes)) + nbytes
        name_part = tensor_pb2.Column(name=name).SerializeToString()
        column_len = len(name_part) + 1 + len(varint(tensor_len)) + tensor_len
        column_parts.append([
            _TAG_BATCH_COLUMN + varint(column_len) + name_part + _TAG_COLUMN_TENSOR
            + varint(tensor_len) + head + _TAG_TENSOR_DATA + varint(nbytes),
            memoryview(arr.reshape(-1).view(np.uint8)) if nbytes else b"",
        ])
        columns_len += 1 + len(varint(column_len)) + column_len
    parts.append(_TAG_RESPONSE_DATA + varint(columns_len))
    for cp in column_parts:
        parts.extend(cp)
    info_msg = info if hasattr(info, "SerializeToString") else info.to_proto()
    parts.append(service_pb2.SampleResponse(info=info_msg).SerializeToString(deterministic=True))
    return b"".join(parts)


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
