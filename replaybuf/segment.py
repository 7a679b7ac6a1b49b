"""Segment files: naming, the 40-byte header, and the segment table of an open log.

A log is a directory of segment files named ``{base_lsn:020d}.seg`` (layout in
`replaybuf.log_format`). `SegmentTable` creates them (header, fdatasync, directory fsync),
rolls to a new one, and plans reads through its sparse per-segment index (`SegmentState`).
"""

from __future__ import annotations

import errno
import os
import re
import struct
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

import crc32c as _crc32c

from replaybuf.frame import pread

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "HEADER_SIZE",
    "INDEX_EVERY",
    "segment_name",
    "list_segments",
    "encode_header",
    "decode_header",
    "read_header",
    "SegmentState",
    "SegmentTable",
    "write_all",
    "fsync_dir",
]

#: Version of the segment header and frame layout written by this module.
FORMAT_VERSION = 1
MAGIC = b"RBUFLOG\x00"
_HEADER = struct.Struct(">8sHHQ16s")
_U32 = struct.Struct(">I")
#: Size of a segment header in bytes.
HEADER_SIZE = _HEADER.size + 4
#: Spacing in bytes of the sparse index entries of an open log's segments.
INDEX_EVERY = 64 * 1024

_SEGMENT_RE = re.compile(r"^(\d{20})\.seg$")
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


def segment_name(base_lsn: int) -> str:
    """File name of the segment whose first record has LSN ``base_lsn``."""

    return f"{base_lsn:020d}.seg"


def list_segments(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Return ``(base_lsn, path)`` of every segment file in ``directory``, by base LSN."""

    out = []
    for entry in os.scandir(directory):
        m = _SEGMENT_RE.match(entry.name)
        if m and entry.is_file(follow_symlinks=False):
            out.append((int(m.group(1)), Path(entry.path)))
    out.sort()
    return out


def encode_header(base_lsn: int, log_id: bytes) -> bytes:
    """Return the 40-byte header of a segment starting at ``base_lsn``."""

    body = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, base_lsn, log_id)
    return body + _U32.pack(_crc32c.crc32c(body))


def decode_header(data: bytes) -> tuple[int, bytes]:
    """Return ``(base_lsn, log_id)`` from a segment header.

    Raises:
        ValueError: the header is torn, damaged or of an unknown version (the reason says which).
    """

    if len(data) < HEADER_SIZE:
        raise ValueError(f"segment header is torn ({len(data)} of {HEADER_SIZE} bytes)")
    magic, version, _flags, base_lsn, log_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"bad magic {magic!r}: not a replaybuf log segment")
    (stored,) = _U32.unpack_from(data, _HEADER.size)
    if _crc32c.crc32c(data[: _HEADER.size]) != stored:
        raise ValueError("segment header CRC-32C mismatch")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"segment format version {version} is not supported (this replaybuf reads version "
            f"{FORMAT_VERSION}); open the log with the replaybuf release that wrote it"
        )
    return base_lsn, log_id


def read_header(fd: int) -> tuple[int, bytes]:
    """Read and decode the header of the segment open as ``fd``: ``(base_lsn, log_id)``.

    Raises:
        ValueError: as `decode_header`.
    """

    return decode_header(pread(fd, HEADER_SIZE, 0))


@dataclass
class SegmentState:
    """What a scan learned about one segment (`FileLog` keeps it as its segment table).

    ``index_lsns[i]`` is the base LSN of the frame at byte ``index_offsets[i]``: a sparse index
    with an entry at least every ``index_every`` bytes, so a read seeks at most that far.
    """

    base_lsn: int
    path: Path
    end: int
    next_lsn: int
    frames: int = 0
    index_lsns: array = field(default_factory=lambda: array("Q"))
    index_offsets: array = field(default_factory=lambda: array("Q"))

    @property
    def last_lsn(self) -> int:
        return self.next_lsn - 1

    def add_index(self, lsn: int, offset: int, index_every: int) -> None:
        if not self.index_offsets or offset - self.index_offsets[-1] >= index_every:
            self.index_lsns.append(lsn)
            self.index_offsets.append(offset)

    def add_frame(
        self, base_lsn: int, offset: int, size: int, count: int, index_every: int
    ) -> None:
        """Account for a frame of ``count`` records and ``size`` bytes at byte ``offset``."""

        self.add_index(base_lsn, offset, index_every)
        self.frames += 1
        self.end = offset + size
        self.next_lsn = base_lsn + count

    def add_frames(self, frames: list[tuple[int, int, int, int]], index_every: int) -> None:
        """Account for frames written back to back at the end: ``(first_lsn, last_lsn,
        size, _)`` each, as `replaybuf.group_commit` queues them. O(len(frames))."""

        offset = self.end
        offsets = self.index_offsets
        last_indexed = offsets[-1] if offsets else -index_every
        for first, _, size, _ in frames:
            if offset - last_indexed >= index_every:
                self.index_lsns.append(first)
                offsets.append(offset)
                last_indexed = offset
            offset += size
        self.frames += len(frames)
        self.end = offset
        self.next_lsn = frames[-1][1] + 1


def write_all(fd: int, parts: list, total: int) -> None:
    """Write ``parts`` fully, looping on short writes. Raises OSError (ENOSPC when stuck).

    One ``write`` (one part) or ``writev`` call in the common case; views into the parts are
    only built after a short write (or for more than ``IOV_MAX`` parts).
    """

    if 1 < len(parts) <= _IOV_MAX:
        n = os.writev(fd, parts)
        if n == total:
            return
        if n <= 0:
            raise OSError(errno.ENOSPC, "writev made no progress")
        _write_rest(fd, parts, n)
        return
    if len(parts) == 1:
        with memoryview(parts[0]) as mv:
            done = 0
            while done < total:
                n = os.write(fd, mv[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, "write made no progress")
                done += n
        return
    _write_rest(fd, parts, 0)


def _write_rest(fd: int, parts: list, done: int) -> None:
    """Write what is left of ``parts`` after the first ``done`` bytes, looping on short
    writes and writing at most ``IOV_MAX`` buffers per call."""

    pending = [memoryview(p).cast("B") for p in parts]
    i = 0
    while done:
        if done >= len(pending[i]):
            done -= len(pending[i])
            i += 1
        else:
            pending[i] = pending[i][done:]
            done = 0
    while i < len(pending):
        n = os.writev(fd, pending[i : i + _IOV_MAX])
        if n <= 0:
            raise OSError(errno.ENOSPC, "writev made no progress")
        while i < len(pending) and n >= len(pending[i]):
            n -= len(pending[i])
            i += 1
        if n:
            pending[i] = pending[i][n:]


def fsync_dir(path: Path) -> None:
    """fsync a directory, making the entries created or removed in it durable."""

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentTable:
    """The segments of an open log, oldest first; appends go to the last (``fd``).

    Not thread-safe: `FileLog` calls it under its write lock. Raises OSError from file
    operations; the caller decides what a failure means for the log.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.log_id = b""
        self.segments: list[SegmentState] = []
        self.bases: list[int] = []
        #: The last segment, open for appending (None until opened, and after `close`).
        self.fd: int | None = None

    @property
    def current(self) -> SegmentState:
        """The last segment, which appends go to."""

        return self.segments[-1]

    def load(self, segments: list[SegmentState], log_id: bytes) -> None:
        """Adopt the segments a recovery scan found (see `replaybuf.recovery.analyze_log`)."""

        self.segments = segments
        self.bases = [s.base_lsn for s in segments]
        self.log_id = log_id

    def open_current(self) -> int:
        """Open the last segment for appending; return its fd (also kept as ``fd``)."""

        self.fd = os.open(self.current.path, os.O_WRONLY | os.O_APPEND)
        return self.fd

    def create(self, base_lsn: int) -> None:
        """Create, header, fdatasync and dir-fsync a segment at ``base_lsn``; make it current."""

        path = self.directory / segment_name(base_lsn)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_all(fd, [encode_header(base_lsn, self.log_id)], HEADER_SIZE)
            os.fdatasync(fd)
            fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        if self.fd is not None:
            os.close(self.fd)
        self.fd = fd
        self.segments.append(SegmentState(base_lsn, path, HEADER_SIZE, base_lsn))
        self.bases.append(base_lsn)

    def roll(self, base_lsn: int) -> None:
        """Seal the current segment (fdatasync) and start a new one at ``base_lsn``.

        Sealing first means only the last segment can ever have a torn tail.
        """

        assert self.fd is not None
        os.fdatasync(self.fd)
        self.create(base_lsn)

    def plan(self, from_lsn: int, to_lsn: int) -> list[tuple[Path, int, int, int]]:
        """``(path, start offset, end offset, LSN at start)`` per segment to read.

        Cost: a bisect over the segments and one over the start segment's sparse index.
        """

        plan = []
        i = max(0, bisect_right(self.bases, from_lsn) - 1)
        for seg in self.segments[i:]:
            if seg.base_lsn > to_lsn:
                break
            if not seg.frames or seg.last_lsn < from_lsn:
                continue
            if seg.base_lsn <= from_lsn:
                k = bisect_right(seg.index_lsns, from_lsn) - 1
                plan.append((seg.path, seg.index_offsets[k], seg.end, seg.index_lsns[k]))
            else:
                plan.append((seg.path, HEADER_SIZE, seg.end, seg.base_lsn))
        return plan

    def close(self) -> None:
        """Close the last segment's fd. Idempotent."""

        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
