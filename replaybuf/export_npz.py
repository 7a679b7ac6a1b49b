"""The npz writer of `replaybuf.export.write_export`.

The file is what ``numpy.savez`` writes: an uncompressed zip (``ZIP_STORED``) with one ``.npy``
member per column, here in a fixed order: ``meta.item_id``, the fields in signature order,
``meta.priority``, ``meta.times_sampled``, the numeric lineage, then ``lineage.request_id`` and
``lineage.source`` as fixed-width unicode (``<U{longest}``, at least 1). Every member is dated
1980-01-01 with mode 0644 and a ZIP64 extra field in its local header, so the bytes depend only
on the content.

How it streams: `NpzWriter.add` appends each column of a chunk to a spill file of its own in a
temporary directory beside the output and folds the bytes into the column's CRC-32;
`NpzWriter.finish` then writes each member's header, has the kernel copy the spill file behind it
(`os.copy_file_range`, falling back to `shutil.copyfileobj`) and combines the header's CRC with
the data's (`crc32_combine`), so the payload crosses user space once and is never read back.
A string column whose chunks had different widths is widened at the end (read back once).
The bulk of the work (writes, CRC, casts) releases the GIL, so `replaybuf.export` runs the
writer on a thread of its own. Memory: O(chunk).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

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

    odd = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    even = square(odd)  # two zero bits
    odd = square(even)  # four
    while True:
        even = square(odd)
        if len2 & 1:
            crc1 = times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = square(even)
        if len2 & 1:
            crc1 = times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
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


class _Spill:
    """One column's bytes so far, in a file, with their CRC-32 and length."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO = open(path, "wb")
        self.crc = 0
        self.size = 0

    def write(self, arr: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(arr)).cast("B")
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        self.file.write(data)


class NpzWriter:
    """Writes an npz export chunk by chunk (see the module docstring).

    Call `add` for each chunk in order, then `finish` (which moves the file into place) or,
    on failure, `abort`. Not thread-safe: one thread at a time (calls may come from different
    threads one after another).

    Args:
        out: the ``.npz`` path; written as ``OUT.part`` and renamed at the end.
        info: the exported fields.
    """

    def __init__(self, out: Path, info: ExportInfo) -> None:
        self.out = out
        self.part = out.with_name(out.name + ".part")
        self._fixed = ([("meta.item_id", np.dtype("<u8"), ())]
                       + [(n, dt.newbyteorder("<") if dt.itemsize > 1 else dt, s)
                          for n, dt, s in info.fields]
                       + [("meta.priority", np.dtype("<f8"), ()),
                          ("meta.times_sampled", np.dtype("<u8"), ())]
                       + [(f"lineage.{k}", np.dtype(dt), ()) for k, dt in NUMERIC_LINEAGE])
        out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
        self._spills = [_Spill(self._tmp / f"{i}.raw") for i in range(len(self._fixed))]
        self._strings = [_Spill(self._tmp / f"s{i}.raw") for i in range(len(STRING_LINEAGE))]
        self._widths: list[list[tuple[int, int]]] = [[] for _ in STRING_LINEAGE]
        self.count = 0

    def add(self, c: Chunk) -> None:
        """Spill the chunk's columns (ids ascending across calls: the caller checks)."""

        self.count += len(c)
        arrays = dict(meta_arrays(c))
        for (name, dt, _), spill in zip(self._fixed, self._spills):
            col = c.columns[name] if name in c.columns else arrays[name]
            spill.write(np.asarray(col, dt))
        for k, spill, widths in zip(STRING_LINEAGE, self._strings, self._widths):
            strs = fixed_unicode(c, k)
            widths.append((strs.size, max(1, strs.dtype.itemsize // 4)))
            spill.write(strs)

    def finish(self) -> None:
        """Write the zip and move it to `out`; removes the spill files."""

        try:
            for s in [*self._spills, *self._strings]:
                s.file.close()
            with open(self.part, "wb", buffering=0) as f:
                zw = _ZipWriter(f)
                n = self.count
                for (name, dt, shape), spill in zip(self._fixed, self._spills):
                    zw.member(name + ".npy", _npy_header(dt, (n, *shape)), spill)
                for k, spill, widths in zip(STRING_LINEAGE, self._strings, self._widths):
                    width = max([w for _, w in widths], default=1)
                    head = _npy_header(np.dtype(f"<U{width}"), (n,))
                    if any(w != width for _, w in widths):
                        spill = _widened(spill, widths, width, self._tmp / f"w-{k}.raw")
                    zw.member(f"lineage.{k}.npy", head, spill)
                zw.close()
            os.replace(self.part, self.out)
        except BaseException:
            self.part.unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def abort(self) -> None:
        """Drop everything written so far. Idempotent."""

        for s in [*self._spills, *self._strings]:
            s.file.close()
        self.part.unlink(missing_ok=True)
        shutil.rmtree(self._tmp, ignore_errors=True)


def _widened(spill: _Spill, widths: list[tuple[int, int]], width: int, path: Path) -> _Spill:
    """The string column re-spilled at one width (its chunks came at several)."""

    out = _Spill(path)
    with open(spill.path, "rb") as r:
        for count, w in widths:
            out.write(np.fromfile(r, f"<U{w}", count).astype(f"<U{width}"))
    out.file.close()
    return out


def _npy_header(dt: np.dtype, shape: tuple[int, ...]) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False,
              "shape": shape})
    return buf.getvalue()


def _copy(src: Path, dst: Any, size: int) -> None:
    """Append `size` bytes of file `src` to `dst`, an unbuffered file open for writing at
    its end (copied in the kernel where it can be)."""

    copy_range = getattr(os, "copy_file_range", None)
    with open(src, "rb", buffering=0) as r:
        done = 0
        try:
            while copy_range is not None and done < size:
                moved = copy_range(r.fileno(), dst.fileno(), min(_COPY_BLOCK, size - done))
                if moved <= 0:
                    break
                done += moved
        except OSError:  # not across these file systems: copy in user space
            pass
        if done < size:
            r.seek(done)
            dst.seek(0, os.SEEK_END)
            shutil.copyfileobj(r, dst, 1 << 20)


class _ZipWriter:
    """A minimal deterministic zip writer: stored members, ZIP64 where sizes need it."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.entries: list[tuple[bytes, int, int, int]] = []  # name, crc, size, offset

    def member(self, name: str, head: bytes, spill: _Spill) -> None:
        raw = name.encode()
        size = len(head) + spill.size
        crc = crc32_combine(zlib.crc32(head), spill.crc, spill.size)
        offset = self.f.tell()
        extra = struct.pack("<HHQQ", 1, 16, size, size)
        self.f.write(_LOCAL.pack(0x04034B50, _ZIP64_VERSION, _flags(raw), 0, _DOS_TIME,
                                 _DOS_DATE, crc, _MAX32, _MAX32, len(raw), len(extra)))
        self.f.write(raw + extra + head)
        _copy(spill.path, self.f, spill.size)
        if self.f.tell() != offset + _LOCAL.size + len(raw) + len(extra) + size:
            raise OSError(f"short copy of {spill.path} into {name}")
        self.entries.append((raw, crc, size, offset))

    def close(self) -> None:
        start = self.f.tell()
        for raw, crc, size, offset in self.entries:
            big = [v for v in (size, size, offset) if v >= ZIP64_LIMIT]
            extra = struct.pack(f"<HH{len(big)}Q", 1, 8 * len(big), *big) if big else b""
            self.f.write(_CENTRAL.pack(
                0x02014B50, _MADE_BY, _ZIP64_VERSION, _flags(raw), 0, _DOS_TIME, _DOS_DATE,
                crc, _small(size), _small(size), len(raw), len(extra), 0, 0, 0, _MODE,
                _small(offset)))
            self.f.write(raw + extra)
        end = self.f.tell()
        count, cd_size = len(self.entries), end - start
        if count >= 0xFFFF or start >= ZIP64_LIMIT or cd_size >= ZIP64_LIMIT:
            self.f.write(_EOCD64.pack(0x06064B50, _EOCD64.size - 12, _MADE_BY, _ZIP64_VERSION,
                                      0, 0, count, count, cd_size, start))
            self.f.write(_LOCATOR64.pack(0x07064B50, 0, end, 1))
        self.f.write(_EOCD.pack(0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                                _small(cd_size), _small(start), 0))


def _small(value: int) -> int:
    """A size or offset as the 32-bit field holds it (the marker if ZIP64 holds it)."""

    return value if value < ZIP64_LIMIT else _MAX32


def _flags(raw_name: bytes) -> int:
    return 0 if raw_name.isascii() else 0x800  # bit 11: the name is UTF-8
