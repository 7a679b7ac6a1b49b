"""Zero-copy decoding of ``SampleResponse`` bytes (the sampler's hot path), and one-copy
encoding of ``AppendRequest`` bytes (the writer's).

Parsing a response with protobuf copies every tensor twice (into the message, then out of it
on each ``bytes`` field access): for an Atari batch (256 x 2 x 28 KiB) that is two 14 MiB copies
per batch. Here the response's wire bytes are walked by hand and each column becomes a
read-only ``numpy.frombuffer`` view of the bytes gRPC received; only the small ``SampleInfo``
goes through protobuf. The layout walked is `proto/replaybuf/v1` (service.proto
``SampleResponse``, tensor.proto ``ColumnarBatch``/``Column``/``Tensor``); unknown fields are
skipped as protobuf would skip them.

The walking itself is `replaybuf.wire_batch`, shared with the server's Append stream.

`encode_append` is the way out: building an ``AppendRequest`` message copies each tensor into
it (``tobytes``, then into the message) and gRPC's serializer copies it again; here the request's
wire bytes are joined from the column buffers directly, one copy, and sent as they are
(`passthrough`). The bytes equal protobuf's serialization of the same request.

Thread-safety: pure functions.
"""

from __future__ import annotations


from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from replaybuf.v1 import service_pb2, table_pb2
from replaybuf.wire import varint
from replaybuf.wire_batch import LEN, batch_parts, decode_columns as _decode_columns, fields

__all__ = ["split_sample_response", "decode_columns", "encode_append", "passthrough"]

_TAG_APPEND_DATA = b"\x12"  # AppendRequest.data = 2


def encode_append(table: str, columns: Mapping[str, Any], *,
                  priorities: Sequence[float] | np.ndarray | None = None,
                  lineage: table_pb2.Lineage | None = None, producer_id: bytes = b"",
                  producer_seq: int = 0) -> bytes:
    """``AppendRequest(table, data=<columns>, priorities, lineage, producer_id,
    producer_seq).SerializeToString()``, byte for byte, with each tensor copied once.

    Fields are written in field-number order, as protobuf writes them: the table (1), the batch
    (2, joined from the arrays' memory), then the rest (3-6) serialized by protobuf.
    """

    head = service_pb2.AppendRequest(table=table).SerializeToString()
    tail = service_pb2.AppendRequest(producer_id=producer_id, producer_seq=producer_seq)
    if priorities is not None and len(priorities):
        tail.priorities.extend(np.asarray(priorities, dtype=np.float64).tolist())
    if lineage is not None:
        tail.lineage.CopyFrom(lineage)
    parts, size = batch_parts(columns)
    return b"".join([head, _TAG_APPEND_DATA, varint(size), *parts,
                     tail.SerializeToString(deterministic=True)])


def passthrough(request: bytes) -> bytes:
    """The request serializer of streams whose requests are already wire bytes."""

    return request


def split_sample_response(
    raw: bytes,
) -> tuple[tuple[int, int], table_pb2.SampleInfo, service_pb2.SharedBatch | None]:
    """``((offset, length) of the ColumnarBatch, parsed SampleInfo, parsed SharedBatch or
    None)`` of SampleResponse bytes."""

    data = (0, 0)
    info = table_pb2.SampleInfo()
    shared = None
    for number, wire, value, _ in fields(raw, 0, len(raw), "SampleResponse"):
        if wire != LEN:
            continue
        off, n = value
        if number == 1:
            data = value
        elif number == 2:
            info.MergeFromString(raw[off:off + n])
        elif number == 3:
            if shared is None:
                shared = service_pb2.SharedBatch()
            shared.MergeFromString(raw[off:off + n])
    return data, info, shared


def decode_columns(raw: bytes, span: tuple[int, int]) -> dict[str, np.ndarray]:
    """The ColumnarBatch at ``raw[span]`` as ``{name: read-only array viewing raw}``."""

    return _decode_columns(raw, span, "SampleResponse")
