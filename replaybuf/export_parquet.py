"""The Parquet writer of `replaybuf.export.write_export` (pyarrow, imported lazily).

One row per item; fields are columns of their dtype, tensors fixed-size lists (nested for more
than one dimension) whose elements are declared non-null, the other columns as in the npz
export; all columns are non-null. The schema metadata carries ``replaybuf.fields`` (dtypes and
shapes, for `replaybuf.export_read.read_export`) and ``replaybuf.table``.

Deterministic bytes: row groups of exactly `PARQUET_ROW_GROUP` items (the last one shorter),
each one contiguous Arrow chunk whatever the chunking of the input, no dictionaries, fixed
writer settings, and the codec the caller names. Statistics (min/max) only for the columns that
are not tensors (`stats_columns`): on the W2 benchmark, statistics over every tensor element
were about 0.1 CPU s per million rows (10% of the encoding) and prune nothing. Dictionaries
stay off: on the string columns they cost more CPU and made the file bigger (request ids are
unique). Page size and batch size are pyarrow's defaults (others measured no better).
Codecs (`PARQUET_CODECS`), measured on the 1M-item W2 benchmark (``bench/RESULTS.md``):
``snappy``, the default, is the fastest to write and read by every Parquet reader (DuckDB,
pandas, Spark); ``lz4`` is about as fast and as big but older readers may lack the codec;
``zstd`` (level 3) makes files about 15% smaller for random floats and costs about 0.7-1 CPU s
more per million W2 rows; ``none`` is the biggest.
Declaring list elements non-null halves pyarrow's cost of encoding the tensor columns (their
definition levels are then constant).

`ParquetWriter.stage` converts a chunk to Arrow and returns the row groups it completes;
`ParquetWriter.write_group` encodes one, during which pyarrow releases the GIL, so
`replaybuf.export` stages on the caller's thread and encodes on a thread of its own.
Memory: the pending rows (less than a row group, plus a chunk) and, in `replaybuf.export`, up
to two staged row groups waiting for the encoder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from replaybuf.errors import InvalidArgumentError
from replaybuf.export_chunk import (
    NUMERIC_LINEAGE, STRING_LINEAGE, Chunk, ExportInfo, meta_arrays,
)

__all__ = ["ParquetWriter", "PARQUET_CODECS", "PARQUET_DEFAULT_CODEC", "PARQUET_ROW_GROUP",
           "arrow_strings", "stats_columns"]

#: Items per Parquet row group (fixed, so the bytes do not depend on how chunks arrived).
PARQUET_ROW_GROUP = 65536
#: Codecs a Parquet export may use, with the level passed to pyarrow (None: its default).
PARQUET_CODECS: dict[str, int | None] = {"snappy": None, "lz4": None, "zstd": 3, "none": None}
PARQUET_DEFAULT_CODEC = "snappy"


def check_codec(compression: str | None) -> str:
    """The codec to use for `compression` (None: the default); raises on an unknown one."""

    if compression is None:
        return PARQUET_DEFAULT_CODEC
    if compression not in PARQUET_CODECS:
        raise InvalidArgumentError(
            f"compression is {compression!r}; use one of {list(PARQUET_CODECS)} (Parquet only)")
    return compression


def stats_columns(schema: Any) -> list[str]:
    """The columns whose Parquet statistics (min/max per row group and page) are written:
    every column but the tensor fields (fixed-size lists). Row-group pruning in DuckDB or
    Spark uses the scalar ones (item id, priority, lineage); min/max over a tensor's
    flattened elements prunes nothing and costs a pass over every element."""

    import pyarrow as pa

    return [f.name for f in schema if not pa.types.is_fixed_size_list(f.type)]


def _arrow_type(pa: Any, dt: np.dtype, shape: tuple[int, ...]) -> Any:
    t = pa.from_numpy_dtype(dt)
    for d in reversed(shape):
        t = pa.list_(pa.field("element", t, nullable=False), d)
    return t


def _arrow_column(pa: Any, arr: np.ndarray, dt: np.dtype, shape: tuple[int, ...]) -> Any:
    flat = pa.array(np.ascontiguousarray(arr, dt).reshape(-1))
    for i in reversed(range(len(shape))):
        flat = pa.FixedSizeListArray.from_arrays(flat, type=_arrow_type(pa, dt, shape[i:]))
    return flat


def arrow_strings(pa: Any, c: Chunk, key: str) -> Any:
    """``lineage[key]`` as an Arrow string array built from its UTF-8 buffers (no
    per-string conversion; the same array as ``pa.array(strings, pa.string())``)."""

    lengths, utf8 = c.utf8_of(key)
    if len(utf8) >= 2**31:  # beyond int32 offsets: let pyarrow decide
        return pa.array(list(c.lineage[key]), pa.string())
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.StringArray.from_buffers(len(lengths), pa.py_buffer(offsets), pa.py_buffer(utf8))


class ParquetWriter:
    """Writes a Parquet export chunk by chunk (see the module docstring).

    Call `add` for each chunk in order, then `finish` (which moves the file into place) or,
    on failure, `abort`. Or split `add` in two: `stage` each chunk on one thread and
    `write_group` the row groups it returns, in order, on another (`stage` and `write_group`
    touch different state, so they may run at the same time; `finish` comes after both).
    Otherwise not thread-safe.

    Args:
        out: the ``.parquet`` path; written as ``OUT.part`` and renamed at the end.
        info: the exported fields.
        compression: a key of `PARQUET_CODECS` (None: `PARQUET_DEFAULT_CODEC`).

    Raises:
        InvalidArgumentError: an unknown codec.
        ImportError: pyarrow is not installed.
    """

    def __init__(self, out: Path, info: ExportInfo, compression: str | None = None) -> None:
        codec = check_codec(compression)
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self.info = info
        cols = ([("meta.item_id", pa.uint64())]
                + [(n, _arrow_type(pa, dt, s)) for n, dt, s in info.fields]
                + [("meta.priority", pa.float64()), ("meta.times_sampled", pa.uint64())]
                + [(f"lineage.{k}", pa.from_numpy_dtype(np.dtype(dt)))
                   for k, dt in NUMERIC_LINEAGE]
                + [(f"lineage.{k}", pa.string()) for k in STRING_LINEAGE])
        meta = {b"replaybuf.fields": json.dumps(
            {n: {"dtype": dt.str, "shape": list(s)} for n, dt, s in info.fields}).encode(),
            b"replaybuf.table": info.table.encode()}
        self.schema = pa.schema([pa.field(n, t, nullable=False) for n, t in cols], metadata=meta)
        self.out = out
        self.part = out.with_name(out.name + ".part")
        out.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(
            self.part, self.schema, compression=codec, compression_level=PARQUET_CODECS[codec],
            use_dictionary=False, write_statistics=stats_columns(self.schema), version="2.6")
        self._pending: list[Any] = []
        self._rows = 0

    def add(self, c: Chunk) -> None:
        """Convert the chunk to Arrow and write every full row group pending."""

        for group in self.stage(c):
            self.write_group(group)

    def stage(self, c: Chunk) -> list[Any]:
        """Convert the chunk to Arrow and return the row groups it completes, each exactly
        `PARQUET_ROW_GROUP` rows in one contiguous Arrow chunk per column, for `write_group`
        in order; the rest stays pending. Cheap (zero-copy views, plus one copy of the rows
        of each completed group); `replaybuf.export` calls it on the caller's thread."""

        pa = self._pa
        meta = meta_arrays(c)
        arrays = [pa.array(meta[0][1])]
        arrays += [_arrow_column(pa, c.columns[n], dt, s) for n, dt, s in self.info.fields]
        arrays += [pa.array(a) for _, a in meta[1:]]
        arrays += [arrow_strings(pa, c, k) for k in STRING_LINEAGE]
        self._pending.append(pa.Table.from_arrays(arrays, schema=self.schema))
        self._rows += len(c)
        return self._groups(final=False) if self._rows >= PARQUET_ROW_GROUP else []

    def write_group(self, group: Any) -> None:
        """Encode and write one row group from `stage` (pyarrow releases the GIL)."""

        self._writer.write_table(group, row_group_size=PARQUET_ROW_GROUP)

    def _groups(self, *, final: bool) -> list[Any]:
        if not self._pending:
            return []
        pa = self._pa
        table = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        rows = self._rows
        cut = rows if final else rows - rows % PARQUET_ROW_GROUP
        # one contiguous chunk per row group: pages must not depend on the chunking
        groups = [table.slice(start, min(PARQUET_ROW_GROUP, cut - start)).combine_chunks()
                  for start in range(0, cut, PARQUET_ROW_GROUP)]
        rest = table.slice(cut)
        self._pending, self._rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
        return groups

    def finish(self) -> None:
        """Write the last row group, close the file and move it to `out`."""

        try:
            for group in self._groups(final=True):
                self.write_group(group)
            self._writer.close()
            os.replace(self.part, self.out)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the partial file. Idempotent."""

        try:
            self._writer.close()
        finally:
            self.part.unlink(missing_ok=True)
