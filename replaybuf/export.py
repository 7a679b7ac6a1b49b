"""Export writers: a table's items as of an LSN, to npz, Parquet or a Minari dataset.

The engine (`replaybuf.materialize`) and the gRPC client both produce a stream of `Chunk`s
(ids ascending) and hand it to `write_export`, so ``replaybuf export`` and
``ReplayClient.export`` write the same bytes. This module imports only numpy, the generated
protobuf modules and `replaybuf.tensors` (no numba, lmdb or grpc); pyarrow and minari are
imported lazily, only for their formats (``pip install 'replaybuf[export]'``).

Every export writes a manifest ``PATH.manifest.json`` beside the data (for Minari: inside the
dataset directory) holding the LSN, the table config, the item count, each field's dtype and
shape, a SHA-256 over the content (see `ContentHasher`; the same for every format), a lineage
summary and the log id. Writers are deterministic: the same content gives the same bytes
(fixed zip timestamps, fixed Parquet row groups and settings).

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
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from replaybuf.errors import FailedPreconditionError, InvalidArgumentError
from replaybuf.tensors import dtype_from_proto, from_batch, to_batch, to_tensor
from replaybuf.v1 import service_pb2, table_pb2

__all__ = [
    "Chunk", "ExportInfo", "ContentHasher", "FORMATS", "MANIFEST_VERSION", "write_export",
    "manifest_path", "empty_lineage", "chunk_to_proto", "chunk_from_proto",
    "manifest_to_proto", "read_export", "NUMERIC_LINEAGE", "STRING_LINEAGE", "Utf8Strings",
    "utf8_column",
]

#: Version of the manifest and of the content hash definition.
MANIFEST_VERSION = 1
FORMATS = ("npz", "parquet", "minari")
NUMERIC_LINEAGE = (("episode_id", "<u8"), ("step", "<u8"), ("model_version", "<i8"),
                   ("timestamp_ms", "<i8"))
STRING_LINEAGE = ("request_id", "source")
_META = (("item_id", "<u8"), ("priority", "<f8"), ("times_sampled", "<u8"))
#: Items per Parquet row group (fixed, so the bytes do not depend on how chunks arrived).
PARQUET_ROW_GROUP = 65536
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


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
        return _minari_dir(str(out)) / "replaybuf.manifest.json"
    return Path(str(out) + ".manifest.json")


def write_export(chunks: Iterable[Chunk], out: str | Path, fmt: str, *, info: ExportInfo,
                 total: int | None = None, progress: bool = False,
                 final_info: Callable[[], ExportInfo] | None = None) -> dict[str, Any]:
    """Write `chunks` to `out` in format `fmt` plus the manifest; return the manifest.

    `final_info`, called once the chunks are consumed, gives the manifest's LSN, log id and
    config when they are known only at the end (a gRPC stream carries them last).

    For ``minari`` `out` is the dataset id (``namespace/name-v0``), created in Minari's local
    root (``MINARI_DATASETS_PATH``). Cost: one pass over the chunks; memory O(chunk) for npz
    and Parquet; for Minari O(chunk + one episode) plus 24 bytes per item of sort keys (the
    payloads reach their episodes through memory-mapped temporary files).

    Raises:
        InvalidArgumentError: an unknown format, or (Minari) a table without the fields a
            Minari dataset needs.
        ImportError: pyarrow / minari missing for their formats.
    """

    if fmt not in FORMATS:
        raise InvalidArgumentError(f"format is {fmt!r}; use one of {list(FORMATS)}")
    hasher = ContentHasher(info)
    stream = _progress(chunks, total, progress, f"export {info.table}@{info.as_of_lsn}")

    def hashed() -> Iterator[Chunk]:
        # SHA-256 runs on a worker thread (hashlib releases the GIL) while the writer handles
        # the same chunk; chunks are hashed one at a time, in order.
        with ThreadPoolExecutor(1, thread_name_prefix="replaybuf-hash") as pool:
            previous: Future[None] | None = None
            for c in stream:
                for k in STRING_LINEAGE:
                    c.utf8_of(k)  # here, not in the worker: the writer reads them too
                if previous is not None:
                    previous.result()
                previous = pool.submit(hasher.update, c)
                yield c
            if previous is not None:
                previous.result()

    if fmt == "npz":
        _write_npz(hashed(), Path(out), info)
        data_file = Path(out).name
    elif fmt == "parquet":
        _write_parquet(hashed(), Path(out), info)
        data_file = Path(out).name
    else:
        _write_minari(hashed(), str(out), info)
        data_file = str(out)
    if final_info is not None:
        hasher.info = final_info()
    manifest = hasher.manifest(fmt, data_file)
    mp = manifest_path(out, fmt)
    mp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


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


def _meta_arrays(c: Chunk) -> list[tuple[str, np.ndarray]]:
    out = [("meta.item_id", np.asarray(c.ids, "<u8")),
           ("meta.priority", np.asarray(c.priorities, "<f8")),
           ("meta.times_sampled", np.asarray(c.times_sampled, "<u8"))]
    out += [(f"lineage.{k}", np.asarray(c.lineage[k], dt)) for k, dt in NUMERIC_LINEAGE]
    return out


def _write_npz(chunks: Iterator[Chunk], out: Path, info: ExportInfo) -> None:
    fixed = ([("meta.item_id", np.dtype("<u8"), ())]
             + [(n, dt.newbyteorder("<") if dt.itemsize > 1 else dt, s) for n, dt, s in info.fields]
             + [("meta.priority", np.dtype("<f8"), ()), ("meta.times_sampled", np.dtype("<u8"), ())]
             + [(f"lineage.{k}", np.dtype(dt), ()) for k, dt in NUMERIC_LINEAGE])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        files = {n: open(tmp / f"{i}.raw", "wb") for i, (n, _, _) in enumerate(fixed)}
        # strings: one raw file per column, each chunk at its own width, widened at the end
        string_files = {k: open(tmp / f"s{i}.raw", "wb") for i, k in enumerate(STRING_LINEAGE)}
        widths: dict[str, list[tuple[int, int]]] = {k: [] for k in STRING_LINEAGE}
        maxlen = dict.fromkeys(STRING_LINEAGE, 1)
        n = 0
        try:
            for c in chunks:
                n += len(c)
                arrays = dict(_meta_arrays(c))
                for name, dt, _ in info.fields:
                    arrays[name] = c.columns[name]
                for name, dt, _ in fixed:
                    files[name].write(np.ascontiguousarray(arrays[name], dt).data)
                for k in STRING_LINEAGE:
                    strs = _fixed_unicode(c, k)
                    width = max(1, strs.dtype.itemsize // 4)
                    maxlen[k] = max(maxlen[k], width)
                    widths[k].append((strs.size, width))
                    string_files[k].write(np.ascontiguousarray(strs, f"<U{width}").data)
        finally:
            for f in [*files.values(), *string_files.values()]:
                f.close()
        part = out.with_name(out.name + ".part")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for i, (name, dt, shape) in enumerate(fixed):
                with _zip_member(zf, name) as w:
                    _npy_header(w, dt, (n, *shape))
                    with open(tmp / f"{i}.raw", "rb") as r:
                        shutil.copyfileobj(r, w, 1 << 20)
            for i, k in enumerate(STRING_LINEAGE):
                dt = np.dtype(f"<U{maxlen[k]}")
                with _zip_member(zf, f"lineage.{k}") as w, open(tmp / f"s{i}.raw", "rb") as r:
                    _npy_header(w, dt, (n,))
                    for count, width in widths[k]:
                        part_strs = np.fromfile(r, f"<U{width}", count)
                        w.write(part_strs.astype(dt).data)
        os.replace(part, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _zip_member(zf: zipfile.ZipFile, name: str) -> Any:
    zi = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE)
    zi.compress_type = zipfile.ZIP_STORED
    zi.external_attr = 0o644 << 16
    return zf.open(zi, "w", force_zip64=True)


def _npy_header(w: Any, dt: np.dtype, shape: tuple[int, ...]) -> None:
    np.lib.format.write_array_header_1_0(
        w, {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False, "shape": shape})


def _arrow_type(pa: Any, dt: np.dtype, shape: tuple[int, ...]) -> Any:
    t = pa.from_numpy_dtype(dt)
    for d in reversed(shape):
        t = pa.list_(t, d)
    return t


def _arrow_column(pa: Any, arr: np.ndarray, shape: tuple[int, ...]) -> Any:
    flat = pa.array(np.ascontiguousarray(arr).reshape(-1))
    for d in reversed(shape):
        flat = pa.FixedSizeListArray.from_arrays(flat, d)
    return flat


def _arrow_strings(pa: Any, c: Chunk, key: str) -> Any:
    """``lineage[key]`` as an Arrow string array built from its UTF-8 buffers (no
    per-string conversion; the same array as ``pa.array(strings, pa.string())``)."""

    lengths, utf8 = c.utf8_of(key)
    if len(utf8) >= 2**31:  # beyond int32 offsets: let pyarrow decide
        return pa.array(list(c.lineage[key]), pa.string())
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.StringArray.from_buffers(len(lengths), pa.py_buffer(offsets), pa.py_buffer(utf8))


def _fixed_unicode(c: Chunk, key: str) -> np.ndarray:
    """``lineage[key]`` as ``numpy.asarray(strings, dtype=str)`` would give it (width = the
    longest string, at least 1), straight from the UTF-8 bytes when they are ASCII strings of
    one length (typical ids), else through numpy's per-string conversion."""

    lengths, utf8 = c.utf8_of(key)
    n = len(lengths)
    if n and utf8.isascii():
        width = int(lengths[0])
        if not (lengths != width).any():
            if width == 0:
                return np.zeros(n, "<U1")
            codes = np.frombuffer(utf8, np.uint8).reshape(n, width).astype("<u4")
            return codes.view(f"<U{width}").reshape(n)
    return np.asarray(list(c.lineage[key]), dtype=str)


def _write_parquet(chunks: Iterator[Chunk], out: Path, info: ExportInfo) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = ([("meta.item_id", pa.uint64())]
            + [(n, _arrow_type(pa, dt, s)) for n, dt, s in info.fields]
            + [("meta.priority", pa.float64()), ("meta.times_sampled", pa.uint64())]
            + [(f"lineage.{k}", pa.from_numpy_dtype(np.dtype(dt))) for k, dt in NUMERIC_LINEAGE]
            + [(f"lineage.{k}", pa.string()) for k in STRING_LINEAGE])
    meta = {b"replaybuf.fields": json.dumps(
        {n: {"dtype": dt.str, "shape": list(s)} for n, dt, s in info.fields}).encode(),
        b"replaybuf.table": info.table.encode()}
    schema = pa.schema([pa.field(n, t, nullable=False) for n, t in cols], metadata=meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    try:
        _parquet_rows(pa, pq, chunks, part, schema, info)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, out)


def _parquet_rows(pa: Any, pq: Any, chunks: Iterator[Chunk], part: Path, schema: Any,
                  info: ExportInfo) -> None:
    # Row groups are encoded and compressed by pyarrow (GIL released) on one worker thread
    # while this thread decodes and hashes the next chunk; at most one group is in flight, and
    # groups are written in order, so the bytes are those of a serial write.
    pending: list[Any] = []
    rows = 0
    inflight: Future[None] | None = None
    with pq.ParquetWriter(part, schema, compression="zstd", compression_level=3,
                          use_dictionary=False, write_statistics=True,
                          version="2.6") as writer, ThreadPoolExecutor(
                              1, thread_name_prefix="replaybuf-parquet") as pool:

        def write(group: Any) -> None:
            nonlocal inflight
            if inflight is not None:
                inflight.result()
            inflight = pool.submit(writer.write_table, group, row_group_size=PARQUET_ROW_GROUP)

        def flush(final: bool) -> None:
            nonlocal pending, rows
            if not pending:
                return
            table = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
            cut = rows if final else rows - rows % PARQUET_ROW_GROUP
            for start in range(0, cut, PARQUET_ROW_GROUP):
                # one contiguous chunk per row group: pages must not depend on the chunking
                write(table.slice(start, min(PARQUET_ROW_GROUP, cut - start)).combine_chunks())
            rest = table.slice(cut)
            pending, rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)

        for c in chunks:
            arrays = [pa.array(np.ascontiguousarray(c.ids, np.uint64))]
            arrays += [_arrow_column(pa, np.asarray(c.columns[n], dt), s)
                       for n, dt, s in info.fields]
            arrays += [pa.array(a) for _, a in _meta_arrays(c)[1:]]
            arrays += [_arrow_strings(pa, c, k) for k in STRING_LINEAGE]
            pending.append(pa.Table.from_arrays(arrays, schema=schema))
            rows += len(c)
            if rows >= PARQUET_ROW_GROUP:
                flush(False)
        flush(True)
        if inflight is not None:
            inflight.result()


# -- Minari -------------------------------------------------------------------------------------

#: Fields a table needs for a Minari export (the signature's conventional names).
MINARI_FIELDS = ("obs", "action", "reward", "next_obs", "done")


def _minari_dir(dataset_id: str) -> Path:
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path(dataset_id))


def _box(dt: np.dtype, shape: tuple[int, ...]) -> Any:
    from gymnasium import spaces

    if dt.kind == "f":
        return spaces.Box(-np.inf, np.inf, shape, dt)
    if dt.kind == "b":
        return spaces.Box(0, 1, shape, np.int8)
    info = np.iinfo(dt)
    return spaces.Box(info.min, info.max, shape, dt)


def _write_minari(chunks: Iterator[Chunk], dataset_id: str, info: ExportInfo) -> None:
    """Episodes are rebuilt from (episode id, step): items sorted by step, split where steps
    are not consecutive (an evicted middle). An episode piece whose last item is not ``done``
    (still running, or its tail evicted) is exported as *truncated*; observations are the
    items' ``obs`` plus the last item's ``next_obs``. The item ids of each piece go in the
    first step's info (``infos["item_id"]``) so an import keeps the order.

    Memory: the five fields stream to raw files in a temporary directory beside Minari's
    dataset root and are read back memory-mapped, one episode at a time, as Minari writes
    it; RAM holds the sort keys (24 bytes per item) and one episode."""

    import minari
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"{dataset_id!r} is not a Minari dataset id; use namespace/name-v0 ({exc})"
        ) from None
    specs = {n: (dt, s) for n, dt, s in info.fields}
    missing = [f for f in MINARI_FIELDS if f not in specs]
    if missing:
        raise InvalidArgumentError(
            f"a Minari export needs fields {list(MINARI_FIELDS)}; table {info.table!r} "
            f"lacks {missing} (or they were left out with fields=)")
    path = _minari_dir(dataset_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        keys: dict[str, list[np.ndarray]] = {"ids": [], "episode_id": [], "step": []}
        files = {f: open(tmp / f"{f}.raw", "wb") for f in MINARI_FIELDS}
        n = 0
        try:
            for c in chunks:
                n += len(c)
                keys["ids"].append(np.asarray(c.ids, np.uint64))
                keys["episode_id"].append(np.asarray(c.lineage["episode_id"], np.uint64))
                keys["step"].append(np.asarray(c.lineage["step"], np.uint64))
                for f in MINARI_FIELDS:
                    files[f].write(np.ascontiguousarray(c.columns[f], specs[f][0]).data)
        finally:
            for fh in files.values():
                fh.close()
        col = {f: np.memmap(tmp / f"{f}.raw", specs[f][0], "r", shape=(n, *specs[f][1]))
               if n else np.empty((0, *specs[f][1]), specs[f][0]) for f in MINARI_FIELDS}
        ids, ep, step = (np.concatenate(keys[k]) if n else np.empty(0, np.uint64)
                         for k in ("ids", "episode_id", "step"))
        del keys
        if path.exists():
            shutil.rmtree(path)
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id, buffer=_minari_episodes(col, ids, ep, step),
            observation_space=_box(*specs["obs"]), action_space=_box(*specs["action"]),
            algorithm_name="replaybuf export", data_format="arrow",
            description=f"replaybuf table {info.table!r} as of LSN {info.as_of_lsn} "
                        f"(log {info.log_id})")
        col.clear()  # drop the memory maps before their files go
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _minari_episodes(col: Mapping[str, np.ndarray], ids: np.ndarray, ep: np.ndarray,
                     step: np.ndarray) -> Iterator[Any]:
    """Minari episode buffers, one per episode piece (see `_write_minari`), made on demand
    (Minari writes each before asking for the next)."""

    from minari.data_collector import EpisodeBuffer

    order = np.lexsort((ids, step, ep))
    eo, so = ep[order], step[order]
    # a piece ends where the episode changes or the steps stop being consecutive
    cuts = np.flatnonzero((eo[1:] != eo[:-1]) | (so[1:] != so[:-1] + np.uint64(1))) + 1
    bounds = np.concatenate([[0], cuts, [order.size]]).tolist() if order.size else [0]
    for k, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        sel = order[start:end]
        done = np.asarray(col["done"][sel]).astype(bool).reshape(-1)
        term = done.copy()
        trunc = np.zeros_like(term)
        trunc[-1] = not term[-1]
        pad = np.concatenate([sel, sel[-1:]])  # infos have T + 1 entries, like observations
        yield EpisodeBuffer(
            id=k,
            observations=np.concatenate([col["obs"][sel], col["next_obs"][sel[-1:]]]),
            actions=np.asarray(col["action"][sel]),
            rewards=np.asarray(col["reward"][sel], np.float64).reshape(-1).tolist(),
            terminations=term.tolist(),
            truncations=trunc.tolist(),
            infos={"item_id": ids[pad].astype(np.int64).tolist(),
                   "episode_id": ep[pad].astype(np.int64).tolist(),
                   "step": step[pad].astype(np.int64).tolist()},
        )


# -- reading back (import) ----------------------------------------------------------------------


@dataclass
class ImportedData:
    """Items read back from an export, for ``replaybuf import``."""

    columns: dict[str, np.ndarray]
    lineage: dict[str, Any]
    priorities: np.ndarray | None
    manifest: dict[str, Any] | None = None
    fields: dict[str, tuple[np.dtype, tuple[int, ...]]] = field(default_factory=dict)


def read_export(source: str | Path) -> ImportedData:
    """Read an npz or Parquet export file, or a Minari dataset id, whole (O(size) RAM)."""

    src = str(source)
    mp = Path(src + ".manifest.json")
    manifest = json.loads(mp.read_text()) if mp.is_file() else None
    if src.endswith(".npz") or (manifest and manifest.get("format") == "npz"):
        with np.load(src, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return _imported(arrays, manifest)
    if src.endswith(".parquet") or (manifest and manifest.get("format") == "parquet"):
        import pyarrow.parquet as pq

        t = pq.read_table(src)
        fmeta = json.loads((t.schema.metadata or {}).get(b"replaybuf.fields", b"{}"))
        arrays = {}
        for name in t.column_names:
            col = t.column(name).combine_chunks()
            if name in fmeta:
                dt, shape = np.dtype(fmeta[name]["dtype"]), tuple(fmeta[name]["shape"])
                flat = col
                for _ in shape:
                    flat = flat.flatten()
                arrays[name] = np.asarray(flat.to_numpy(zero_copy_only=False), dt).reshape(
                    (len(col), *shape))
            elif name.startswith("lineage.") and name[8:] in STRING_LINEAGE:
                arrays[name] = np.asarray(col.to_pylist(), dtype=str)
            else:
                arrays[name] = col.to_numpy()
        return _imported(arrays, manifest)
    return _read_minari(src)


def _imported(arrays: dict[str, np.ndarray], manifest: dict[str, Any] | None) -> ImportedData:
    cols = {k: v for k, v in arrays.items() if "." not in k}
    lineage: dict[str, Any] = {k: arrays[f"lineage.{k}"] for k, _ in NUMERIC_LINEAGE
                               if f"lineage.{k}" in arrays}
    lineage.update({k: [str(s) for s in arrays[f"lineage.{k}"]] for k in STRING_LINEAGE
                    if f"lineage.{k}" in arrays})
    fields = {k: (v.dtype, tuple(v.shape[1:])) for k, v in cols.items()}
    if manifest:
        order = list(manifest["fields"])
        fields = {k: (np.dtype(manifest["fields"][k]["dtype"]),
                      tuple(manifest["fields"][k]["shape"])) for k in order}
    return ImportedData(cols, lineage, arrays.get("meta.priority"), manifest, fields)


def _read_minari(dataset_id: str) -> ImportedData:
    import minari

    ds = minari.load_dataset(dataset_id)
    parts: dict[str, list[np.ndarray]] = {f: [] for f in MINARI_FIELDS}
    ep_ids: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    for e in ds.iterate_episodes():
        t = len(e.actions)
        parts["obs"].append(np.asarray(e.observations)[:t])
        parts["next_obs"].append(np.asarray(e.observations)[1 : t + 1])
        parts["action"].append(np.asarray(e.actions))
        parts["reward"].append(np.asarray(e.rewards))
        parts["done"].append(np.asarray(e.terminations))
        infos = e.infos or {}
        ep_ids.append(np.asarray(infos.get("episode_id", np.full(t, e.id))[:t], np.uint64))
        steps.append(np.asarray(infos.get("step", np.arange(t))[:t], np.uint64))
    cols = {f: np.concatenate(v) for f, v in parts.items()} if ep_ids else {}
    lineage: dict[str, Any] = {}
    if ep_ids:
        lineage = {"episode_id": np.concatenate(ep_ids), "step": np.concatenate(steps)}
    fields = {k: (v.dtype, tuple(v.shape[1:])) for k, v in cols.items()}
    return ImportedData(cols, lineage, None, None, fields)
