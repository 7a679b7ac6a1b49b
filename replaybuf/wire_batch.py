"""Zero-copy encoding and decoding of ``ColumnarBatch`` wire bytes, and messages that carry one.

Parsing a message with protobuf copies every tensor twice (into the message, then out of it on
each ``bytes`` field access): for an Atari batch (256 x 2 x 28 KiB) two 14 MiB copies. Here the
wire bytes are walked by hand and each column becomes a read-only ``numpy.frombuffer`` view of
the bytes gRPC received; the small rest of the message goes through protobuf. Used by the
client's sampler (``SampleResponse``) and the server's Append stream (``AppendRequest``). The
layout walked is `proto/replaybuf/v1` (tensor.proto ``ColumnarBatch``/``Column``/``Tensor``);
unknown fields are skipped as protobuf would skip them. `batch_parts` is the other direction:
a batch's wire bytes as small headers plus each column's own memory, so that one
``b"".join`` is the only copy of the tensors (the server's SampleResponse, the client's
AppendRequest). Light: numpy and protobuf only (the client imports it).

Thread-safety: pure functions.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from replaybuf.errors import InvalidArgumentError
from replaybuf.tensors import dtype_from_proto, dtype_to_proto
from replaybuf.v1 import tensor_pb2
from replaybuf.wire import read_varint, varint

__all__ = ["EncodedBatch", "batch_parts", "decode_columns", "fields", "split_message",
           "wire_array"]

VARINT, I64, LEN, I32 = 0, 1, 2, 5

_LITTLE = sys.byteorder == "little"
_TAG_BATCH_COLUMN = b"\x0a"  # ColumnarBatch.columns = 1
_TAG_COLUMN_TENSOR = b"\x12"  # Column.tensor = 2
_TAG_TENSOR_DATA = b"\x1a"  # Tensor.data = 3


def wire_array(array: Any) -> np.ndarray:
    """The array as contiguous little-endian memory (no copy in the common case)."""

    arr = np.asarray(array)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not _LITTLE):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr


def batch_parts(columns: Mapping[str, Any]) -> tuple[list[bytes | memoryview], int]:
    """``ColumnarBatch`` of `columns` (name -> array, leading batch dimension) as wire parts
    and their total length: ``b"".join(parts)`` equals `replaybuf.tensors.to_batch`'s
    serialization, byte for byte, with each tensor copied once, by the join.

    The parts view the arrays (after `wire_array`): join them before changing the arrays.
    """

    parts: list[bytes | memoryview] = []
    total = 0
    for name, array in columns.items():
        arr = wire_array(array)
        head = tensor_pb2.Tensor(dtype=dtype_to_proto(arr.dtype),
                                 shape=arr.shape).SerializeToString()
        nbytes = arr.nbytes
        data_head = _TAG_TENSOR_DATA + varint(nbytes) if nbytes else b""  # proto3 omits b""
        tensor_len = len(head) + len(data_head) + nbytes
        name_part = tensor_pb2.Column(name=name).SerializeToString()
        column_len = len(name_part) + 1 + len(varint(tensor_len)) + tensor_len
        header = (_TAG_BATCH_COLUMN + varint(column_len) + name_part + _TAG_COLUMN_TENSOR
                  + varint(tensor_len) + head + data_head)
        parts.append(header)
        total += len(header) + nbytes
        if nbytes:
            parts.append(memoryview(arr.reshape(-1).view(np.uint8)))
    return parts, total


def _varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    try:
        return read_varint(buf, pos)
    except ValueError as exc:
        raise InvalidArgumentError(f"{what}: {exc}") from None


def fields(buf: bytes, start: int, end: int, what: str = "message") -> Iterator[
        tuple[int, int, Any, int]]:
    """``(field number, wire type, value or (offset, length), start of the field)`` of each
    field in ``buf[start:end]``.

    Raises:
        InvalidArgumentError: malformed bytes (named by `what`).
    """

    pos = start
    while pos < end:
        first = pos
        key, pos = _varint(buf, pos, what)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(buf, pos, what)
            yield number, wire, value, first
        elif wire == LEN:
            n, pos = _varint(buf, pos, what)
            if pos + n > end:
                raise InvalidArgumentError(f"{what}: a field runs past its message")
            yield number, wire, (pos, n), first
            pos += n
        elif wire == I64:
            pos += 8
            yield number, wire, None, first
        elif wire == I32:
            pos += 4
            yield number, wire, None, first
        else:
            raise InvalidArgumentError(f"{what}: unsupported wire type {wire}")
    if pos != end:
        raise InvalidArgumentError(f"{what}: truncated message")


def split_message(raw: bytes, number: int, what: str) -> tuple[tuple[int, int] | None, bytes]:
    """Split a message's bytes into the span of its length-delimited field `number` (the last
    one, as protobuf keeps the last; None if absent) and the bytes of every other field."""

    span = None
    rest: list[bytes] = []
    prev = 0
    for num, wire, value, first in fields(raw, 0, len(raw), what):
        if num == number and wire == LEN:
            rest.append(raw[prev:first])
            span = value
            prev = value[0] + value[1]
    rest.append(raw[prev:])
    return span, b"".join(rest)


def decode_columns(raw: bytes, span: tuple[int, int], what: str = "batch") -> dict[str, np.ndarray]:
    """The ColumnarBatch at ``raw[span]`` as ``{name: read-only array viewing raw}``.

    Raises:
        InvalidArgumentError: malformed bytes, a field twice, or data that does not match the
            dtype and shape.
    """

    out: dict[str, np.ndarray] = {}
    off, n = span
    for number, wire, value, _ in fields(raw, off, off + n, what):
        if number != 1 or wire != LEN:
            continue
        name, tensor = "", None
        for cnum, cwire, cval, _ in fields(raw, value[0], value[0] + value[1], what):
            if cnum == 1 and cwire == LEN:
                name = raw[cval[0]:cval[0] + cval[1]].decode()
            elif cnum == 2 and cwire == LEN:
                tensor = cval
        if name in out:
            raise InvalidArgumentError(f"batch has field {name!r} twice; send each field once")
        out[name] = _tensor(raw, tensor, name, what)
    return out


def _tensor(raw: bytes, span: tuple[int, int] | None, name: str, what: str) -> np.ndarray:
    dtype_code, shape, data = 0, [], (0, 0)
    if span is not None:
        for number, wire, value, _ in fields(raw, span[0], span[0] + span[1], what):
            if number == 1 and wire == VARINT:
                dtype_code = value
            elif number == 2 and wire == LEN:  # packed int64
                pos, end = value[0], value[0] + value[1]
                while pos < end:
                    d, pos = _varint(raw, pos, what)
                    shape.append(d - (1 << 64) if d >= 1 << 63 else d)
            elif number == 2 and wire == VARINT:  # unpacked
                shape.append(value - (1 << 64) if value >= 1 << 63 else value)
            elif number == 3 and wire == LEN:
                data = value
    dtype = dtype_from_proto(dtype_code)
    if any(d < 0 for d in shape):
        raise InvalidArgumentError(f"field {name!r}: shape {tuple(shape)} has a negative dimension")
    count = int(np.prod(shape, dtype=np.int64))
    if data[1] != count * dtype.itemsize:
        raise InvalidArgumentError(
            f"field {name!r}: data has {data[1]} bytes but shape {tuple(shape)} of {dtype} needs "
            f"{count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype, count, data[0]).reshape(shape)


@dataclass(frozen=True, eq=False)
class EncodedBatch:
    """A ``ColumnarBatch`` as it arrived on the wire: ``raw[span]`` are its bytes and `columns`
    read-only arrays viewing them (`decode_columns`). `Engine.append` takes one and logs the
    bytes as they are (one copy into the event) instead of re-encoding the arrays."""

    raw: bytes
    span: tuple[int, int]
    columns: dict[str, np.ndarray]

    @classmethod
    def decode(cls, raw: bytes, span: tuple[int, int], what: str = "batch") -> EncodedBatch:
        return cls(raw, span, decode_columns(raw, span, what))

    def field(self, number: int) -> list[bytes | memoryview]:
        """This batch as field `number` of a message: its wire parts, to join."""

        off, n = self.span
        return [varint(number << 3 | LEN) + varint(n), memoryview(self.raw)[off:off + n]]
