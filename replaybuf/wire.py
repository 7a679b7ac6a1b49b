"""Protobuf wire-format varints, for the code that walks or writes message bytes by hand
(`replaybuf_server.codec`, `replaybuf_client._wire`, `replaybuf.materialize_decode`) to avoid
copying large tensors through protobuf messages."""

from __future__ import annotations

__all__ = ["varint", "read_varint"]


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""

    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """``(value, position after it)`` of the varint at ``buf[pos]``.

    Raises:
        ValueError: the buffer ends inside the varint, or it is longer than 10 bytes.
    """

    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
