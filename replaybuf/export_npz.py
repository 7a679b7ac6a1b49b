"""The npz writer of `replaybuf.export.write_export`.

The file is what ``numpy.savez`` writes: an uncompressed zip (``ZIP_STORED``) with one ``.npy``
member per column, here in a fixed order: ``meta.item_id``, the fields in signature order,
``meta.priority``, ``meta.times_sampled``, the numeric lineage, then ``lineage.request_id`` and
``lineage.source`` as fixed-width unicode (``<U{longest}``, at least 1). Every member is dated
1980-01-01 with mode 0644 and a ZIP64 extra field in its local header, so the bytes depend only
on the content.

How it streams: `NpzWriter.add` writes each column of a chunk and folds its bytes into the
column's CRC-32. When the item count is known up front (the engine's exports) the numeric
columns go straight to their final places in the file (their sizes and headers follow from the
count); otherwise (a client's stream), and always for the string columns (whose width is the
longest string's), they go to a spill file of their own in a temporary directory beside the
output, which `NpzWriter.finish` has the kernel copy behind the member's header
(`os.copy_file_range`, else a user-space copy). The headers come last, with each member's CRC
combined from the npy header's and the data's (`crc32_combine`), so no byte is read back. A
string column whose chunks had different widths is widened at the end (read back once).
The bulk of the work (writes, CRC, casts) releases the GIL, so `replaybuf.export` runs the
writer on a thread of its own. Memory: O(chunk).
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from replaybuf.errors import FailedPreconditionError
from replaybuf.export_chunk import (
    NUMERIC_LINEAGE, STRING_LINEAGE, Chunk, ExportInfo, meta_arrays,
)

__all__ = ["NpzWriter", "crc32_combine", "fixed_unicode"]

_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
_DOS_TIME = 0
_ZIP64_VERSION = 45
_MADE_BY = (3 << 8) | _ZIP64_VERSION  # unix
_MODE = 0o100644 << 16  # a regular file, rw-r--r--
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<IHHHHIIH")
_EOCD64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
_MAX32 = 0xFFFFFFFF  # the marker of a value held in the ZIP64 records
#: Sizes and offsets from this one up go to ZIP64 records (a module constant so that tests
#: can lower it and read back a file in which every value is a ZIP64 one).
ZIP64_LIMIT = _MAX32
_COPY_BLOCK = 1 << 24


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """``zlib.crc32(a + b)`` from ``crc1 = zlib.crc32(a)``, ``crc2 = zlib.crc32(b)`` and
    ``len(b)`` (zlib's ``crc32_combine``, which Python's zlib does not expose): O(log len2)
    products of 32x32 matrices over GF(2)."""

    if len2 <= 0:
        return crc1

    def times(mat: list[int], vec: int) -> int:
        out = i = 0
        while vec:
            if vec & 1:
                out ^= mat[i]
            vec >>= 1
            i += 1
        return out

    def square(mat: list[int]) -> list[int]:
        return [times(mat, row) for row in mat]

    op = [0xEDB88320] + [1 << n for n in range(31)]  # appending one zero bit
    for _ in range(3):
        op = square(op)  # two, four, eight zero bits: one zero byte
    while len2:  # op appends 2**k zero bytes; apply it for each bit k of len2
        if len2 & 1:
            crc1 = times(op, crc1)
        len2 >>= 1
        if len2:
            op = square(op)
    return crc1 ^ crc2


def fixed_unicode(c: Chunk, key: str) -> np.ndarray:
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


class _Column:
    """One member's data as it is written: at `base` in the file `fd` (the export itself, or
    a spill file of its own), with its length so far, at most `limit` bytes, and the CRC-32
    so far (of `head`, the member's npy header when known up front, and the data)."""

    def __init__(self, fd: int, base: int = 0, limit: int | None = None,
                 path: Path | None = None, head: bytes | None = None) -> None:
        self.fd = fd
        self.base = base
        self.limit = limit
        self.path = path  # a spill file's path (None: the data is in place in the export)
        self.head = head
        self.crc = zlib.crc32(head) if head is not None else 0
        self.size = 0

    def member_crc(self, head: bytes) -> int:
        """The CRC-32 of `head` followed by the data."""

        if self.head is not None:
            if head != self.head:
                raise RuntimeError("an npz member's header changed after it was reserved")
            return self.crc
        return crc32_combine(zlib.crc32(head), self.crc, self.size)

    @staticmethod
    def spill(path: Path) -> _Column:
        return _Column(os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600), path=path)

    def write(self, arr: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(arr)).cast("B")
        if self.limit is not None and self.size + len(data) > self.limit:
            raise FailedPreconditionError(
                f"the export's chunks hold more items than the {self.limit} bytes of a column "
                f"the announced total leaves room for")
        self.crc = zlib.crc32(data, self.crc)
        _pwrite(self.fd, data, self.base + self.size)
        self.size += len(data)

    def close(self) -> None:
        if self.path is not None and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class NpzWriter:
    """Writes an npz export chunk by chunk (see the module docstring).

    With `total` (the item count, known up front on the engine's side) the numeric columns
    are written straight into their places in the file; without it (a client's stream) they
    go to spill files first and are copied into the file at the end. String columns always
    spill (their width is the longest string's). Call `add` for each chunk in order, then
    `finish` (which moves the file into place) or, on failure, `abort`. Not thread-safe: one
    thread at a time (calls may come from different threads one after another).

    Args:
        out: the ``.npz`` path; written as ``OUT.part`` and renamed at the end.
        info: the exported fields.
        total: the number of items the chunks will hold, if known.
    """

    def __init__(self, out: Path, info: ExportInfo, total: int | None = None) -> None:
        self.out = out
        self.part = out.with_name(out.name + ".part")
        self.total = total
        self._fixed = ([("meta.item_id", np.dtype("<u8"), ())]
                       + [(n, dt.newbyteorder("<") if dt.itemsize > 1 else dt, s)
                          for n, dt, s in info.fields]
                       + [("meta.priority", np.dtype("<f8"), ()),
                          ("meta.times_sampled", np.dtype("<u8"), ())]
                       + [(f"lineage.{k}", np.dtype(dt), ()) for k, dt in NUMERIC_LINEAGE])
        out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
        self._fd = os.open(self.part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._columns: list[_Column] = []
        self._end = 0  # where the members written at `finish` start
        if total is None:
            self._columns = [_Column.spill(self._tmp / f"{i}.raw")
                             for i in range(len(self._fixed))]
        else:  # reserve each member's place: local header, npy header, data
            for name, dt, shape in self._fixed:
                size = total * dt.itemsize * int(np.prod(shape, dtype=np.int64))
                npy = _npy_header(dt, (total, *shape))
                start = self._end + _ZipWriter.local_size(name + ".npy") + len(npy)
                self._columns.append(_Column(self._fd, start, size, head=npy))
                self._end = start + size
        self._strings = [_Column.spill(self._tmp / f"s{i}.raw")
                         for i in range(len(STRING_LINEAGE))]
        self._widths: list[list[tuple[int, int]]] = [[] for _ in STRING_LINEAGE]
        self.count = 0

    def add(self, c: Chunk) -> None:
        """Write the chunk's columns (ids ascending across calls: the caller checks)."""

        self.count += len(c)
        arrays = dict(meta_arrays(c))
        for (name, dt, _), col in zip(self._fixed, self._columns):
            col.write(np.asarray(c.columns[name] if name in c.columns else arrays[name], dt))
        for k, col, widths in zip(STRING_LINEAGE, self._strings, self._widths):
            strs = fixed_unicode(c, k)
            widths.append((strs.size, max(1, strs.dtype.itemsize // 4)))
            col.write(strs)

    def finish(self) -> None:
        """Write the zip's headers and the spilled members, and move the file to `out`."""

        try:
            n = self.count
            if self.total is not None and n != self.total:
                raise FailedPreconditionError(
                    f"the export's chunks held {n} items, not the {self.total} announced")
            zw = _ZipWriter(self._fd, self._end)
            offset = 0
            for (name, dt, shape), col in zip(self._fixed, self._columns):
                head = _npy_header(dt, (n, *shape))
                if col.path is None:
                    zw.in_place(name + ".npy", head, col, offset)
                    offset = col.base + col.size
                else:
                    zw.copied(name + ".npy", head, col)
            for k, col, widths in zip(STRING_LINEAGE, self._strings, self._widths):
                width = max([w for _, w in widths], default=1)
                if any(w != width for _, w in widths):
                    col = _widened(col, widths, width, self._tmp / f"w-{k}.raw")
                zw.copied(f"lineage.{k}.npy", _npy_header(np.dtype(f"<U{width}"), (n,)), col)
            zw.close()
            os.close(self._fd)
            self._fd = -1
            os.replace(self.part, self.out)
        except BaseException:
            self.abort()
            raise
        finally:
            self._close_spills()

    def _close_spills(self) -> None:
        for col in [*self._columns, *self._strings]:
            col.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def abort(self) -> None:
        """Drop everything written so far. Idempotent."""

        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.part.unlink(missing_ok=True)
        self._close_spills()


def _widened(col: _Column, widths: list[tuple[int, int]], width: int, path: Path) -> _Column:
    """The string column re-spilled at one width (its chunks came at several)."""

    out = _Column.spill(path)
    with open(col.path, "rb") as r:  # type: ignore[arg-type]
        for count, w in widths:
            out.write(np.fromfile(r, f"<U{w}", count).astype(f"<U{width}"))
    col.close()
    return out


def _npy_header(dt: np.dtype, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False,
              "shape": shape})
    return buf.getvalue()


def _pwrite(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def _copy(src: _Column, fd: int, offset: int) -> None:
    """Copy the spilled bytes of `src` to `offset` in `fd` (in the kernel where it can)."""

    size, done = src.size, 0
    copy_range = getattr(os, "copy_file_range", None)
    try:
        while copy_range is not None and done < size:
            moved = copy_range(src.fd, fd, min(_COPY_BLOCK, size - done), done, offset + done)
            if moved <= 0:
                break
            done += moved
    except OSError:  # not across these file systems: copy in user space
        pass
    while done < size:
        block = os.pread(src.fd, min(_COPY_BLOCK, size - done), done)
        if not block:
            raise OSError(f"spill file {src.path} is {done} bytes, not {size}")
        _pwrite(fd, memoryview(block), offset + done)
        done += len(block)


class _ZipWriter:
    """A minimal deterministic zip writer: stored members, a ZIP64 extra field in every
    local header and ZIP64 records where sizes and offsets need them. Members are written
    at explicit offsets of `fd`: `in_place` for data already at its reserved place, `copied`
    for a spilled column appended at the end (`end`)."""

    def __init__(self, fd: int, end: int) -> None:
        self.fd = fd
        self.end = end
        self.entries: list[tuple[bytes, int, int, int]] = []  # name, crc, size, offset

    @staticmethod
    def local_size(name: str) -> int:
        return _LOCAL.size + len(name.encode()) + 20

    def _local(self, raw: bytes, crc: int, size: int) -> bytes:
        extra = struct.pack("<HHQQ", 1, 16, size, size)
        return _LOCAL.pack(0x04034B50, _ZIP64_VERSION, _flags(raw), 0, _DOS_TIME, _DOS_DATE,
                           crc, _MAX32, _MAX32, len(raw), len(extra)) + raw + extra

    def in_place(self, name: str, head: bytes, col: _Column, offset: int) -> None:
        raw = name.encode()
        size = len(head) + col.size
        crc = col.member_crc(head)
        local = self._local(raw, crc, size)
        if offset + len(local) + len(head) != col.base:
            raise RuntimeError(f"npz member {name} was reserved at the wrong offset")
        _pwrite(self.fd, memoryview(local + head), offset)
        self.entries.append((raw, crc, size, offset))

    def copied(self, name: str, head: bytes, col: _Column) -> None:
        raw = name.encode()
        size = len(head) + col.size
        crc = col.member_crc(head)
        local = self._local(raw, crc, size)
        offset = self.end
        _pwrite(self.fd, memoryview(local + head), offset)
        _copy(col, self.fd, offset + len(local) + len(head))
        self.entries.append((raw, crc, size, offset))
        self.end = offset + len(local) + size

    def close(self) -> None:
        start = self.end
        out = []
        for raw, crc, size, offset in self.entries:
            big = [v for v in (size, size, offset) if v >= ZIP64_LIMIT]
            extra = struct.pack(f"<HH{len(big)}Q", 1, 8 * len(big), *big) if big else b""
            out.append(_CENTRAL.pack(
                0x02014B50, _MADE_BY, _ZIP64_VERSION, _flags(raw), 0, _DOS_TIME, _DOS_DATE,
                crc, _small(size), _small(size), len(raw), len(extra), 0, 0, 0, _MODE,
                _small(offset)) + raw + extra)
        cd = b"".join(out)
        end = start + len(cd)
        count = len(self.entries)
        if count >= 0xFFFF or start >= ZIP64_LIMIT or len(cd) >= ZIP64_LIMIT:
            cd += _EOCD64.pack(0x06064B50, _EOCD64.size - 12, _MADE_BY, _ZIP64_VERSION, 0, 0,
                               count, count, len(cd), start)
            cd += _LOCATOR64.pack(0x07064B50, 0, end, 1)
        cd += _EOCD.pack(0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                         _small(end - start), _small(start), 0)
        _pwrite(self.fd, memoryview(cd), start)
        os.ftruncate(self.fd, start + len(cd))


def _small(value: int) -> int:
    """A size or offset as the 32-bit field holds it (the marker if ZIP64 holds it)."""

    return value if value < ZIP64_LIMIT else _MAX32


def _flags(raw_name: bytes) -> int:
    return 0 if raw_name.isascii() else 0x800  # bit 11: the name is UTF-8
