"""Zero-copy decoding of ``SampleResponse`` bytes (the sampler's hot path).

Parsing a response with protobuf copies every tensor twice (into the message, then out of it
on each ``bytes`` field access): for an Atari batch (256 x 2 x 28 KiB) that is two 14 MiB copies
per batch. Here the response's wire bytes are walked by hand and each column becomes a
read-only ``numpy.frombuffer`` view of the bytes gRPC received; only the small ``SampleInfo``
goes through protobuf. The layout walked is `proto/replaybuf/v1` (service.proto
``SampleResponse``, tensor.proto ``ColumnarBatch``/``Column``/``Tensor``); unknown fields are
skipped as protobuf would skip them.

The walking itself is `replaybuf.wire_batch`, shared with the server's Append stream.

Thread-safety: pure functions.
"""

from __future__ import annotations


import numpy as np

from replaybuf.v1 import table_pb2
from replaybuf.wire_batch import LEN, decode_columns as _decode_columns, fields

__all__ = ["split_sample_response", "decode_columns"]


def split_sample_response(raw: bytes) -> tuple[tuple[int, int], table_pb2.SampleInfo]:
    """``((offset, length) of the ColumnarBatch, parsed SampleInfo)`` of SampleResponse bytes."""

    data = (0, 0)
    info = table_pb2.SampleInfo()
    for number, wire, value, _ in fields(raw, 0, len(raw), "SampleResponse"):
        if wire != LEN:
            continue
        if number == 1:
            data = value
        elif number == 2:
            off, n = value
            info.MergeFromString(raw[off:off + n])
    return data, info


def decode_columns(raw: bytes, span: tuple[int, int]) -> dict[str, np.ndarray]:
    """The ColumnarBatch at ``raw[span]`` as ``{name: read-only array viewing raw}``."""

    return _decode_columns(raw, span, "SampleResponse")
