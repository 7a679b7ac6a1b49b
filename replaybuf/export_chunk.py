"""The export data model: `Chunk` (a run of items as of an LSN), `ExportInfo` (what the
manifest says besides the content) and `Utf8Strings` (a string column kept as UTF-8).

The engine (`replaybuf.materialize`) and the gRPC client both produce `Chunk`s and hand them to
`replaybuf.export.write_export`. This module imports numpy, `replaybuf.errors`,
`replaybuf.tensors` and the generated protobuf modules (no numba, lmdb, grpc or pyarrow).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from replaybuf.errors import InvalidArgumentError
from replaybuf.tensors import dtype_from_proto
from replaybuf.v1 import table_pb2

__all__ = [
    "Chunk", "ExportInfo", "NUMERIC_LINEAGE", "STRING_LINEAGE", "Utf8Strings", "empty_lineage",
    "meta_arrays", "utf8_column",
]

NUMERIC_LINEAGE = (("episode_id", "<u8"), ("step", "<u8"), ("model_version", "<i8"),
                   ("timestamp_ms", "<i8"))
STRING_LINEAGE = ("request_id", "source")


@dataclass
class Chunk:
    """Consecutive items of an export, ids ascending.

    Attributes:
        ids: item ids (uint64).
        columns: field name -> array ``(n, *shape)`` (the reward as of the export LSN).
        priorities: raw priorities (float64).
        times_sampled: draws counted up to the export LSN (uint64).
        lineage: ``episode_id``, ``step`` (uint64), ``model_version``, ``timestamp_ms``
            (int64) arrays and ``request_id``, ``source`` sequences of str (lists, or
            `Utf8Strings` from the engine).
        utf8: the string lineage columns in UTF-8 form (`utf8_column`), filled on first use
            by `Chunk.utf8_of` so the hasher and the writers encode each column once.
    """

    ids: np.ndarray
    columns: dict[str, np.ndarray]
    priorities: np.ndarray
    times_sampled: np.ndarray
    lineage: dict[str, Any]
    utf8: dict[str, tuple[np.ndarray, bytes]] = field(default_factory=dict, repr=False,
                                                       compare=False)

    def __len__(self) -> int:
        return int(self.ids.size)

    def utf8_of(self, key: str) -> tuple[np.ndarray, bytes]:
        """`utf8_column` of ``lineage[key]``, computed once (not thread-safe: call it before
        handing the chunk to other threads)."""

        got = self.utf8.get(key)
        if got is None:
            got = self.utf8[key] = utf8_column(self.lineage[key])
        return got


def empty_lineage(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {k: np.zeros(n, dt) for k, dt in NUMERIC_LINEAGE}
    out.update({k: [""] * n for k in STRING_LINEAGE})
    return out


@dataclass(frozen=True)
class ExportInfo:
    """What the manifest says besides the content.

    Attributes:
        table: table name.
        as_of_lsn: the LSN the items were materialized at.
        log_id: id of the log they came from.
        config: the table's config (proto) at that LSN.
        fields: exported fields, ``(name, dtype, shape)`` in signature order.
    """

    table: str
    as_of_lsn: int
    log_id: str
    config: table_pb2.TableConfig
    fields: tuple[tuple[str, np.dtype, tuple[int, ...]], ...]

    @staticmethod
    def from_config(config: table_pb2.TableConfig, *, as_of_lsn: int, log_id: str,
                    fields: Sequence[str] | None = None) -> ExportInfo:
        specs = [(s.name, dtype_from_proto(s.dtype), tuple(int(d) for d in s.shape))
                 for s in config.signature]
        if fields is not None:
            if isinstance(fields, str):
                raise InvalidArgumentError(f"fields is {fields!r}; pass a list of field names")
            names = {s[0] for s in specs}
            unknown = sorted(set(fields) - names)
            if unknown:
                raise InvalidArgumentError(
                    f"fields {unknown} are not in table {config.name!r}'s signature "
                    f"{[s[0] for s in specs]}")
            specs = [s for s in specs if s[0] in set(fields)]
        return ExportInfo(config.name, int(as_of_lsn), log_id, config, tuple(specs))


class Utf8Strings(Sequence[str]):
    """A read-only column of strings kept as their UTF-8 bytes and byte lengths.

    The engine's export stream carries string lineage this way, straight from the log
    records, so that the hasher and the writers never make a Python ``str`` per item; indexing
    and iterating decode on demand, so it reads like the list of str `Chunk` documents.

    Args:
        lengths: UTF-8 byte length of each string (uint32).
        utf8: the strings' UTF-8, concatenated.
    """

    __slots__ = ("lengths", "utf8", "_offsets")

    def __init__(self, lengths: np.ndarray, utf8: bytes) -> None:
        self.lengths = np.ascontiguousarray(lengths, "<u4")
        self.utf8 = bytes(utf8)
        self._offsets: np.ndarray | None = None
        if int(self.lengths.sum(dtype=np.uint64)) != len(self.utf8):
            raise ValueError(f"{len(self.utf8)} bytes of UTF-8 but lengths sum to "
                             f"{int(self.lengths.sum(dtype=np.uint64))}")

    @staticmethod
    def concat(parts: Sequence[Utf8Strings]) -> Utf8Strings:
        return Utf8Strings(np.concatenate([p.lengths for p in parts]) if parts
                           else np.empty(0, "<u4"), b"".join(p.utf8 for p in parts))

    def _bounds(self) -> np.ndarray:
        if self._offsets is None:
            offsets = np.zeros(self.lengths.size + 1, np.int64)
            np.cumsum(self.lengths, out=offsets[1:])
            self._offsets = offsets
        return self._offsets

    def __len__(self) -> int:
        return int(self.lengths.size)

    def __getitem__(self, index: Any) -> Any:
        off = self._bounds()
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            stop = max(start, stop)
            return Utf8Strings(self.lengths[start:stop],
                               self.utf8[int(off[start]) : int(off[stop])])
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} strings")
        return self.utf8[int(off[i]) : int(off[i + 1])].decode()

    def take(self, indices: np.ndarray) -> Utf8Strings:
        """The strings at `indices` (ascending or not), as a new column."""

        off = self._bounds()
        idx = np.asarray(indices, np.int64)
        starts, ends = off[idx].tolist(), off[idx + 1].tolist()
        return Utf8Strings(self.lengths[idx],
                           b"".join([self.utf8[a:b] for a, b in zip(starts, ends)]))

    def __iter__(self) -> Iterator[str]:
        if self.utf8.isascii():
            text = self.utf8.decode("ascii")
            off = self._bounds().tolist()
            return (text[a:b] for a, b in zip(off, off[1:]))
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Utf8Strings):
            return self.utf8 == other.utf8 and np.array_equal(self.lengths, other.lengths)
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Utf8Strings({list(self)!r})"


def meta_arrays(c: Chunk) -> list[tuple[str, np.ndarray]]:
    """The chunk's numeric columns other than fields, under their export names: item ids
    first, then priorities, times sampled and the numeric lineage."""

    out = [("meta.item_id", np.asarray(c.ids, "<u8")),
           ("meta.priority", np.asarray(c.priorities, "<f8")),
           ("meta.times_sampled", np.asarray(c.times_sampled, "<u8"))]
    out += [(f"lineage.{k}", np.asarray(c.lineage[k], dt)) for k, dt in NUMERIC_LINEAGE]
    return out


def utf8_column(strings: Sequence[str]) -> tuple[np.ndarray, bytes]:
    """``(uint32 little-endian UTF-8 byte lengths, the concatenated UTF-8)`` of strings.

    The concatenation is encoded in one call; when it is ASCII (request ids and sources
    usually are) the lengths are the character counts, so no string is encoded on its own.
    A `Utf8Strings` column already is this pair.
    """

    if isinstance(strings, Utf8Strings):
        return strings.lengths, strings.utf8
    joined = "".join(strings)
    if joined.isascii():
        return np.fromiter(map(len, strings), "<u4", len(strings)), joined.encode("ascii")
    enc = [x.encode() for x in strings]
    return np.fromiter(map(len, enc), "<u4", len(enc)), b"".join(enc)
