"""Exports: a table's items as of an LSN, to npz, Parquet or a Minari dataset.

The engine (`replaybuf.materialize`) and the gRPC client both produce a stream of `Chunk`s
(ids ascending) and hand it to `write_export`, so ``replaybuf export`` and
``ReplayClient.export`` write the same bytes. This module imports only numpy, the generated
protobuf modules and `replaybuf.tensors` (no numba, lmdb or grpc); pyarrow and minari are
imported lazily, only for their formats (``pip install 'replaybuf[export]'``). The writers
live in `replaybuf.export_npz`, `replaybuf.export_parquet` and `replaybuf.export_minari`, the
readers in `replaybuf.export_read`, the data model in `replaybuf.export_chunk`.

Every export writes a manifest ``PATH.manifest.json`` beside the data (for Minari: inside the
dataset directory) holding the LSN, the table config, the item count, each field's dtype and
shape, a SHA-256 over the content (see `ContentHasher`; the same for every format), a lineage
summary and the log id. Writers are deterministic: the same content (and, for Parquet, the same
codec) gives the same bytes, however the items were chunked.

Two cores: the caller's thread produces the chunks (decoding the log holds the GIL), one worker
thread hashes them and another writes them (hashlib, file writes, CRC-32 and pyarrow's
encoding release the GIL); at most about two Parquet row groups of items are in flight
(`_IN_FLIGHT_ITEMS`).

Array and column names: the signature fields keep their names; the rest are ``meta.item_id``,
``meta.priority``, ``meta.times_sampled`` and ``lineage.episode_id``, ``lineage.step``,
``lineage.model_version``, ``lineage.timestamp_ms``, ``lineage.request_id``,
``lineage.source`` (dots cannot clash with field names).

Example::

    chunks = [Chunk(ids=np.array([1, 2], np.uint64), columns={"x": np.zeros(2, np.float32)},
                    priorities=np.ones(2), times_sampled=np.zeros(2, np.uint64),
                    lineage=empty_lineage(2))]
    manifest = write_export(chunks, "out.npz", "npz", info=ExportInfo(...))
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from replaybuf.errors import FailedPreconditionError, InvalidArgumentError
from replaybuf.export_chunk import (
    NUMERIC_LINEAGE, STRING_LINEAGE, Chunk, ExportInfo, Utf8Strings, empty_lineage,
    utf8_column,
)
from replaybuf.export_minari import minari_dir, write_minari
from replaybuf.export_npz import NpzWriter
from replaybuf.export_parquet import PARQUET_CODECS, PARQUET_DEFAULT_CODEC, check_codec
from replaybuf.export_read import ImportedData, read_export
from replaybuf.tensors import from_batch, to_batch
from replaybuf.v1 import service_pb2, table_pb2

__all__ = [
    "Chunk", "ExportInfo", "ContentHasher", "FORMATS", "MANIFEST_VERSION", "write_export",
    "manifest_path", "empty_lineage", "chunk_to_proto", "chunk_from_proto",
    "manifest_to_proto", "read_export", "ImportedData", "NUMERIC_LINEAGE", "STRING_LINEAGE",
    "Utf8Strings", "utf8_column", "PARQUET_CODECS", "PARQUET_DEFAULT_CODEC",
]

#: Version of the manifest and of the content hash definition.
MANIFEST_VERSION = 1
FORMATS = ("npz", "parquet", "minari")
#: Items queued on each worker thread and not yet done (at least two tasks, whatever their
#: size). Two Parquet row groups: while the writer encodes one (the longest step, about 50 ms
#: for 65,536 W2 items), the next one is ready, so the encoder does not wait on the caller's
#: thread (with three 10,000-item chunks in flight it did). Memory: about 35 MB for W2.
_IN_FLIGHT_ITEMS = 2 * 65536

class ContentHasher:
    """SHA-256 over an export's content, independent of format and chunking.

    One SHA-256 per column (ids, each field in signature order as little-endian C-order
    bytes, priorities, times sampled, numeric lineage, then request ids and sources as two
    columns each: uint32 UTF-8 lengths and the concatenated UTF-8); the result is the SHA-256 of
    ``b"replaybuf-export-v1"`` followed by each column's name and digest. It also gathers the
    lineage summary (model versions, time range).
    """

    def __init__(self, info: ExportInfo) -> None:
        self.info = info
        self._names = (["meta.item_id"] + [f[0] for f in info.fields]
                       + ["meta.priority", "meta.times_sampled"]
                       + [f"lineage.{k}" for k, _ in NUMERIC_LINEAGE]
                       + [f"lineage.{k}{part}" for k in STRING_LINEAGE
                          for part in ("", ".utf8")])
        self._h = {n: hashlib.sha256() for n in self._names}
        self.count = 0
        self.model_versions: set[int] = set()
        self.min_ts: int | None = None
        self.max_ts: int | None = None
        self._last_id = 0

    def update(self, c: Chunk) -> None:
        n = len(c)
        if n and int(c.ids[0]) <= self._last_id:
            raise FailedPreconditionError("export chunks are not in ascending item id order")
        if n:
            self._last_id = int(c.ids[-1])
        h = self._h
        # hashlib reads the arrays' buffers directly (no bytes copies); C-contiguous only.
        h["meta.item_id"].update(np.ascontiguousarray(c.ids, "<u8"))
        for name, dt, _ in self.info.fields:
            h[name].update(np.ascontiguousarray(c.columns[name], dt.newbyteorder("<")))
        h["meta.priority"].update(np.ascontiguousarray(c.priorities, "<f8"))
        h["meta.times_sampled"].update(np.ascontiguousarray(c.times_sampled, "<u8"))
        for k, dt in NUMERIC_LINEAGE:
            h[f"lineage.{k}"].update(np.ascontiguousarray(c.lineage[k], dt))
        for k in STRING_LINEAGE:
            lengths, utf8 = c.utf8_of(k)
            h[f"lineage.{k}"].update(lengths)
            h[f"lineage.{k}.utf8"].update(utf8)
        self.count += n
        if n:
            self.model_versions.update(np.unique(c.lineage["model_version"]).tolist())
            ts = c.lineage["timestamp_ms"]
            lo, hi = int(ts.min()), int(ts.max())
            self.min_ts = lo if self.min_ts is None else min(self.min_ts, lo)
            self.max_ts = hi if self.max_ts is None else max(self.max_ts, hi)

    def hexdigest(self) -> str:
        top = hashlib.sha256(b"replaybuf-export-v1")
        for n in self._names:
            top.update(n.encode() + b"\0" + self._h[n].digest())
        return top.hexdigest()

    def manifest(self, fmt: str, data_file: str) -> dict[str, Any]:
        """The manifest as a JSON-ready dict (deterministic: no paths or clocks)."""

        from google.protobuf import json_format

        info = self.info
        return {
            "version": MANIFEST_VERSION,
            "format": fmt,
            "data": data_file,
            "table": info.table,
            "as_of_lsn": info.as_of_lsn,
            "log_id": info.log_id,
            "item_count": self.count,
            "content_sha256": self.hexdigest(),
            "fields": {n: {"dtype": dt.str, "shape": list(shape)}
                       for n, dt, shape in info.fields},
            "config": json_format.MessageToDict(info.config, preserving_proto_field_name=True),
            "lineage": {
                "model_versions": sorted(self.model_versions),
                "min_timestamp_ms": self.min_ts or 0,
                "max_timestamp_ms": self.max_ts or 0,
            },
        }

    def manifest_proto(self) -> service_pb2.ExportManifest:
        return service_pb2.ExportManifest(
            version=MANIFEST_VERSION, as_of_lsn=self.info.as_of_lsn, config=self.info.config,
            item_count=self.count, content_sha256=self.hexdigest(),
            model_versions=sorted(self.model_versions), min_timestamp_ms=self.min_ts or 0,
            max_timestamp_ms=self.max_ts or 0, log_id=self.info.log_id)


def manifest_to_proto(m: Mapping[str, Any], config: table_pb2.TableConfig
                      ) -> service_pb2.ExportManifest:
    lin = m["lineage"]
    return service_pb2.ExportManifest(
        version=m["version"], as_of_lsn=m["as_of_lsn"], config=config,
        item_count=m["item_count"], content_sha256=m["content_sha256"],
        model_versions=lin["model_versions"], min_timestamp_ms=lin["min_timestamp_ms"],
        max_timestamp_ms=lin["max_timestamp_ms"], log_id=m["log_id"])


# -- wire form (gRPC Export) --------------------------------------------------------------------


def chunk_to_proto(c: Chunk) -> service_pb2.ExportChunk:
    msg = service_pb2.ExportChunk(item_ids=c.ids.tolist(), priorities=c.priorities.tolist(),
                                  times_sampled=c.times_sampled.tolist())
    msg.data.CopyFrom(to_batch(c.columns))
    lin = msg.lineage
    for k, _ in NUMERIC_LINEAGE:
        getattr(lin, k).extend(np.asarray(c.lineage[k]).tolist())
    for k in STRING_LINEAGE:
        getattr(lin, k).extend(c.lineage[k])
    return msg


def chunk_from_proto(msg: service_pb2.ExportChunk) -> Chunk:
    n = len(msg.item_ids)
    lineage: dict[str, Any] = {k: np.asarray(getattr(msg.lineage, k), dt).reshape(n)
                               for k, dt in NUMERIC_LINEAGE}
    lineage.update({k: list(getattr(msg.lineage, k)) for k in STRING_LINEAGE})
    return Chunk(np.asarray(msg.item_ids, np.uint64).reshape(n), from_batch(msg.data),
                 np.asarray(msg.priorities, np.float64).reshape(n),
                 np.asarray(msg.times_sampled, np.uint64).reshape(n), lineage)


# -- writers ------------------------------------------------------------------------------------


def manifest_path(out: str | Path, fmt: str) -> Path:
    """Where the manifest of an export to `out` goes."""

    if fmt == "minari":
        return minari_dir(str(out)) / "replaybuf.manifest.json"
    return Path(str(out) + ".manifest.json")


def write_export(chunks: Iterable[Chunk], out: str | Path, fmt: str, *, info: ExportInfo,
                 total: int | None = None, progress: bool = False,
                 final_info: Callable[[], ExportInfo] | None = None,
                 compression: str | None = None) -> dict[str, Any]:
    """Write `chunks` to `out` in format `fmt` plus the manifest; return the manifest.

    `final_info`, called once the chunks are consumed, gives the manifest's LSN, log id and
    config when they are known only at the end (a gRPC stream carries them last).
    `total`, the item count if known up front, lets the npz writer put the numeric columns
    straight into their places (and is checked). `compression` is the Parquet codec (`PARQUET_CODECS`; None: `PARQUET_DEFAULT_CODEC`,
    snappy); npz files are stored uncompressed, like ``numpy.savez``, and Minari picks its own.

    For ``minari`` `out` is the dataset id (``namespace/name-v0``), created in Minari's local
    root (``MINARI_DATASETS_PATH``). Cost: one pass over the chunks; memory O(chunk) for npz
    and Parquet; for Minari O(chunk + one episode) plus 24 bytes per item of sort keys (the
    payloads reach their episodes through memory-mapped temporary files).

    Raises:
        InvalidArgumentError: an unknown format or codec, a codec for a format other than
            Parquet, or (Minari) a table without the fields a Minari dataset needs.
        FailedPreconditionError: chunks out of ascending item id order.
        ImportError: pyarrow / minari missing for their formats.
    """

    if fmt not in FORMATS:
        raise InvalidArgumentError(f"format is {fmt!r}; use one of {list(FORMATS)}")
    if compression is not None and fmt != "parquet":
        raise InvalidArgumentError(
            f"compression is {compression!r} but format is {fmt!r}; only Parquet takes a codec "
            f"(leave compression unset)")
    codec = check_codec(compression) if fmt == "parquet" else None
    hasher = ContentHasher(info)
    stream = _progress(chunks, total, progress, f"export {info.table}@{info.as_of_lsn}")
    if fmt == "minari":
        write_minari(_hashed(stream, hasher), str(out), info)
        data_file = str(out)
    else:
        if fmt == "npz":
            writer: Any = NpzWriter(Path(out), info, total)
        else:
            from replaybuf.export_parquet import ParquetWriter

            writer = ParquetWriter(Path(out), info, codec)
        _pipeline(stream, hasher, writer)
        data_file = Path(out).name
    if final_info is not None:
        hasher.info = final_info()
    manifest = hasher.manifest(fmt, data_file)
    mp = manifest_path(out, fmt)
    mp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _prepared(c: Chunk) -> Chunk:
    for k in STRING_LINEAGE:
        c.utf8_of(k)  # here, not in a worker: the hasher and the writer both read them
    return c


class _Queue:
    """Tasks handed to one worker thread, in order, with their item counts: `put` first waits
    for the oldest ones while more than `_IN_FLIGHT_ITEMS` items (and at least two tasks)
    would be queued. Used by the caller's thread only."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool
        self._tasks: deque[tuple[int, Future[None]]] = deque()
        self._items = 0

    def put(self, items: int, fn: Callable[..., None], *args: Any) -> None:
        while len(self._tasks) >= 2 and self._items + items > _IN_FLIGHT_ITEMS:
            self._pop()
        self._tasks.append((items, self._pool.submit(fn, *args)))
        self._items += items

    def _pop(self) -> None:
        items, f = self._tasks.popleft()
        self._items -= items
        f.result()

    def drain(self) -> None:
        while self._tasks:
            self._pop()

    def cancel(self) -> None:
        for _, f in self._tasks:
            f.cancel()


def _pipeline(chunks: Iterable[Chunk], hasher: ContentHasher, writer: Any) -> None:
    """Hash and write `chunks` on two worker threads (each in order), at most
    `_IN_FLIGHT_ITEMS` items (and at least two tasks) queued on each, then
    `writer.finish()`; the caller's thread produces the chunks. A writer with a ``stage``
    method (Parquet) converts each chunk on the caller's thread and hands the worker only the
    row groups to encode (``write_group``), one GIL hand-over per row group instead of
    several per chunk. On any error the workers are drained and `writer.abort()` drops the
    partial output."""

    stage = getattr(writer, "stage", None)
    ok = False
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="replaybuf-hash") as hash_pool, \
                ThreadPoolExecutor(1, thread_name_prefix="replaybuf-write") as write_pool:
            hashing, writing = _Queue(hash_pool), _Queue(write_pool)
            try:
                for c in chunks:
                    _prepared(c)
                    hashing.put(len(c), hasher.update, c)
                    if stage is None:
                        writing.put(len(c), writer.add, c)
                    else:
                        for group in stage(c):
                            writing.put(group.num_rows, writer.write_group, group)
                hashing.drain()
                writing.drain()
                write_pool.submit(writer.finish).result()
                ok = True
            finally:
                hashing.cancel()
                writing.cancel()
    finally:
        if not ok:
            writer.abort()


def _hashed(chunks: Iterable[Chunk], hasher: ContentHasher) -> Iterator[Chunk]:
    """`chunks`, hashed one at a time on a worker thread while the consumer handles them."""

    with ThreadPoolExecutor(1, thread_name_prefix="replaybuf-hash") as pool:
        previous: Future[None] | None = None
        for c in chunks:
            _prepared(c)
            if previous is not None:
                previous.result()
            previous = pool.submit(hasher.update, c)
            yield c
        if previous is not None:
            previous.result()


def _progress(chunks: Iterable[Chunk], total: int | None, on: bool, desc: str
              ) -> Iterable[Chunk]:
    if not on:
        return chunks
    from tqdm import tqdm

    def it() -> Iterator[Chunk]:
        with tqdm(total=total, unit="item", desc=desc) as bar:
            for c in chunks:
                bar.update(len(c))
                yield c

    return it()
