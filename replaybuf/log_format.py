"""On-disk format of the embedded file log: segments, frames, scanning and verification.

`replaybuf.file_log.FileLog` writes this format; this module reads it. Everything here is
read-only (it never modifies a file), so :func:`verify_log` and :func:`iter_log_records` are safe
to run on a log that is open elsewhere (the tail may then look torn while a frame is being written).

Format, version 1 (all integers big-endian):

* A log is a directory of segment files named ``{base_lsn:020d}.seg``, where ``base_lsn`` is the
  LSN of the segment's first record. Other files in the directory are ignored (`FileLog` keeps
  an empty ``LOCK`` file there, which it ``flock``s while open).
* A segment starts with a 40-byte header::

      8s magic b"RBUFLOG\\0" | u16 format version (1) | u16 flags (0) | u64 base_lsn
      | 16s log id (UUID bytes) | u32 crc32c(the 36 bytes before it)

  The format version covers the frame layout below. Every segment of a log has the same log id.
* Then frames, one per append::

      u32 length | u32 crc32c(the `length` bytes that follow) | u64 base_lsn | u32 count
      | u64 timestamp_ms | 16s producer_id | u64 producer_seq | count x (u32 len | len bytes)

  ``length`` counts the bytes after the CRC field, so a frame takes ``8 + length`` bytes.
  ``producer_seq == 0`` (with an all-zero ``producer_id``) means the append had no producer.
* LSNs are gap-free: each frame's ``base_lsn`` is the previous frame's ``base_lsn + count``, and
  each segment's ``base_lsn`` continues the previous segment.

Damage classes (see :func:`analyze_log`): invalid bytes running to the end of the *last* segment
with no valid frame after them are a torn tail (a crash mid-write; `FileLog` truncates it on open).
A last segment with a torn header and no valid frame (a crash while creating it) is deleted on
open. Anything else (damage in a sealed segment, or a damaged frame followed by a valid one) is
corruption and stops recovery.
"""

from __future__ import annotations

import os
import re
import struct
import uuid
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import crc32c as _crc32c
import numpy as np

from replaybuf.errors import InvalidArgumentError, LogCorruptionError
from replaybuf.log import LogRecord

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "FRAME_OVERHEAD",
    "RECORD_OVERHEAD",
    "MAX_FRAME_LENGTH",
    "NO_PRODUCER",
    "Problem",
    "VerifyReport",
    "verify_log",
    "iter_log_records",
]

#: Version of the segment header and frame layout written by this module.
FORMAT_VERSION = 1
MAGIC = b"RBUFLOG\x00"
_HEADER = struct.Struct(">8sHHQ16s")
_U32 = struct.Struct(">I")
#: Size of a segment header in bytes.
HEADER_SIZE = _HEADER.size + 4
# length, crc, base_lsn, count, timestamp_ms, producer_id, producer_seq
_FRAME_HEAD = struct.Struct(">IIQIQ16sQ")
#: Bytes a frame takes besides its records.
FRAME_OVERHEAD = _FRAME_HEAD.size
#: Bytes each record takes besides its payload (its length prefix).
RECORD_OVERHEAD = 4
_MIN_LENGTH = FRAME_OVERHEAD - 8 + RECORD_OVERHEAD
#: Largest value of a frame's length field (the frame then takes 8 more bytes).
MAX_FRAME_LENGTH = 2**32 - 1
#: The producer id stored when an append has none.
NO_PRODUCER = bytes(16)

_SEGMENT_RE = re.compile(r"^(\d{20})\.seg$")
_READ_CHUNK = 1 << 20
_SCAN_CHUNK = 1 << 20
# A frame found after damage is only believed if its LSN is this close above the expected one.
_MAX_LSN_JUMP = 1 << 40
# Frames at least this large, with records of this average size, are written with writev
# straight from the payloads; smaller ones are joined into one buffer (one cheap copy).
_WRITEV_MIN_BYTES = 64 * 1024
_WRITEV_MIN_RECORD = 2048


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


def encode_frame(
    payloads: Sequence[bytes | bytearray | memoryview],
    sizes: Sequence[int],
    base_lsn: int,
    timestamp_ms: int,
    producer_id: bytes,
    producer_seq: int,
) -> tuple[list[bytes | bytearray | memoryview], int]:
    """Encode one frame; return ``(buffers, total_bytes)`` to write in order (``os.writev``).

    Small frames are joined into one buffer (one copy); large ones reference the payloads
    themselves, so writing them costs no copy in Python. Cost: O(total bytes) for the CRC.

    Raises:
        InvalidArgumentError: the frame would exceed `MAX_FRAME_LENGTH`.
    """

    count = len(payloads)
    length = FRAME_OVERHEAD - 8 + RECORD_OVERHEAD * count + sum(sizes)
    if length > MAX_FRAME_LENGTH:
        raise InvalidArgumentError(
            f"an append of {count} records and {sum(sizes)} payload bytes exceeds the frame limit "
            f"of {MAX_FRAME_LENGTH} bytes; split it into several appends"
        )
    total = 8 + length
    crc = _crc32c.crc32c
    if total < _WRITEV_MIN_BYTES or total < _WRITEV_MIN_RECORD * count:
        buf = bytearray(total)
        _FRAME_HEAD.pack_into(
            buf, 0, length, 0, base_lsn, count, timestamp_ms, producer_id, producer_seq
        )
        o = FRAME_OVERHEAD
        pack_into = _U32.pack_into
        for p, n in zip(payloads, sizes):
            pack_into(buf, o, n)
            o += 4
            buf[o : o + n] = p
            o += n
        with memoryview(buf) as mv:
            _U32.pack_into(buf, 4, crc(mv[8:]))
        return [buf], total
    head = bytearray(
        _FRAME_HEAD.pack(length, 0, base_lsn, count, timestamp_ms, producer_id, producer_seq)
    )
    value = crc(bytes(head[8:]))
    parts: list[bytes | bytearray | memoryview] = [head]
    for p, n in zip(payloads, sizes):
        prefix = _U32.pack(n)
        value = crc(p, crc(prefix, value))
        parts.append(prefix)
        parts.append(p)
    _U32.pack_into(head, 4, value)
    return parts, total


class Frame(NamedTuple):
    """A frame read and checked (length, CRC, LSN). ``buf[pos : pos + size]`` holds it."""

    offset: int
    size: int
    base_lsn: int
    count: int
    timestamp_ms: int
    producer_id: bytes
    producer_seq: int
    buf: bytes
    pos: int

    @property
    def last_lsn(self) -> int:
        return self.base_lsn + self.count - 1

    def payloads(self) -> list[bytes]:
        """The frame's records. Raises ValueError when they do not fill the frame exactly."""

        buf, q, end = self.buf, self.pos + FRAME_OVERHEAD, self.pos + self.size
        out = []
        unpack = _U32.unpack_from
        for i in range(self.count):
            if q + 4 > end:
                raise ValueError(f"record {i} of {self.count} starts past the end of its frame")
            (n,) = unpack(buf, q)
            q += 4
            if q + n > end:
                raise ValueError(f"record {i} of {self.count} ({n} bytes) runs past its frame")
            out.append(buf[q : q + n])
            q += n
        if q != end:
            raise ValueError(f"{end - q} bytes follow the last record of the frame")
        return out


class BadFrame(NamedTuple):
    """Where a frame walk stopped: the first bytes that do not form a valid frame."""

    offset: int
    expected_lsn: int | None
    reason: str


def _pread(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = os.pread(fd, n - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def walk_frames(
    fd: int, start: int, end: int, expected_lsn: int | None
) -> Iterator[Frame | BadFrame]:
    """Yield the valid frames in bytes ``[start, end)`` of a segment, in order.

    Stops after yielding a `BadFrame` for the first invalid one: a bad length, a frame running
    past ``end``, a CRC mismatch, or a base LSN other than ``expected_lsn`` (not checked when
    None). Reads in 1 MiB chunks; O(bytes) with a CRC-32C pass over each frame.
    """

    off = start
    buf = b""
    bstart = start
    crc = _crc32c.crc32c
    unpack = _FRAME_HEAD.unpack_from
    while off < end:
        p = off - bstart
        avail = len(buf) - p
        if avail < FRAME_OVERHEAD:
            buf = _pread(fd, min(_READ_CHUNK, end - off), off)
            bstart, p, avail = off, 0, len(buf)
            if avail < FRAME_OVERHEAD:
                yield BadFrame(
                    off,
                    expected_lsn,
                    f"only {avail} bytes remain, fewer than a frame header ({FRAME_OVERHEAD})",
                )
                return
        length, stored, base, count, ts, pid, seq = unpack(buf, p)
        if count == 0 or length < FRAME_OVERHEAD - 8 + RECORD_OVERHEAD * count:
            yield BadFrame(
                off, expected_lsn, f"invalid frame header (length {length}, record count {count})"
            )
            return
        size = 8 + length
        if size > end - off:
            yield BadFrame(
                off,
                expected_lsn,
                f"a frame of {size} bytes runs past the end ({end - off} bytes remain)",
            )
            return
        if avail < size:
            buf = _pread(fd, max(size, min(_READ_CHUNK, end - off)), off)
            bstart, p = off, 0
            if len(buf) < size:
                yield BadFrame(off, expected_lsn, "the file ended inside the frame")
                return
        with memoryview(buf) as mv:
            computed = crc(mv[p + 8 : p + size])
        if computed != stored:
            yield BadFrame(
                off,
                expected_lsn,
                f"CRC-32C mismatch (stored {stored:#010x}, computed {computed:#010x})",
            )
            return
        if expected_lsn is not None and base != expected_lsn:
            yield BadFrame(
                off,
                expected_lsn,
                f"the frame holds LSN {base}..{base + count - 1}, not LSN {expected_lsn} "
                "(LSN continuity broken)",
            )
            return
        yield Frame(off, size, base, count, ts, pid, seq, buf, p)
        expected_lsn = base + count
        off += size


def _be(a: np.ndarray, idx: np.ndarray, nbytes: int) -> np.ndarray:
    out = np.zeros(idx.shape, dtype=np.uint64)
    for k in range(nbytes):
        out = (out << np.uint64(8)) | a[idx + k].astype(np.uint64)
    return out


def find_valid_frame(fd: int, start: int, end: int, min_lsn: int) -> int | None:
    """Return the offset of the first valid frame starting in ``[start, end)``, else None.

    "Valid" means a plausible header, a matching CRC and a base LSN in
    ``[min_lsn, min_lsn + 2**40)``. Used to tell a torn tail (nothing valid after the damage)
    from corruption. Vectorized with numpy over 1 MiB chunks: O(bytes), ~10 ms per MiB.
    """

    pos = start
    while end - pos >= FRAME_OVERHEAD:
        n = min(_SCAN_CHUNK, end - pos - FRAME_OVERHEAD + 1)
        buf = _pread(fd, n + FRAME_OVERHEAD - 1, pos)
        n = min(n, len(buf) - FRAME_OVERHEAD + 1)
        if n <= 0:
            return None
        a = np.frombuffer(buf, dtype=np.uint8)
        idx = np.arange(n, dtype=np.int64)
        length = _be(a, idx, 4).astype(np.int64)
        room = (end - pos - 8) - idx
        cand = np.flatnonzero((length >= _MIN_LENGTH) & (length <= room))
        if cand.size:
            count = _be(a, cand + 16, 4).astype(np.int64)
            keep = (count >= 1) & (length[cand] >= FRAME_OVERHEAD - 8 + RECORD_OVERHEAD * count)
            cand = cand[keep]
        if cand.size:
            base = _be(a, cand + 8, 8)
            lo = np.uint64(min_lsn)
            keep = (base >= lo) & ((base - lo) < np.uint64(_MAX_LSN_JUMP))
            for c in cand[keep].tolist():
                off = pos + c
                data = _pread(fd, 8 + int(length[c]), off)
                (stored,) = _U32.unpack_from(data, 4)
                if _crc32c.crc32c(data[8:]) == stored:
                    return off
        pos += n
    return None


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


@dataclass(frozen=True)
class Problem:
    """One piece of corruption: where it is and which LSN was expected there."""

    path: Path
    offset: int
    lsn: int | None
    message: str

    def __str__(self) -> str:
        lsn = f" (where LSN {self.lsn} was expected)" if self.lsn is not None else ""
        return f"{self.path}: byte offset {self.offset}{lsn}: {self.message}"


@dataclass
class LogAnalysis:
    """Result of :func:`analyze_log`: the segment table, the problems, and what recovery would do.

    Attributes:
        log_id: the log id from the segment headers (None when no header is readable).
        segments: the usable segments, oldest first (torn-header trailing ones left out).
        problems: corruption found (empty when the log is sound); each names file, offset, LSN.
        warnings: recoverable conditions (torn tail, torn trailing segment) and what open does.
        truncate: ``(path, offset)`` of a torn tail to cut off, or None.
        remove: trailing segment files holding only a torn header, to delete.
        total_bytes: size of all segment files as found.
        records: number of records in valid frames.
    """

    log_id: bytes | None = None
    segments: list[SegmentState] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    truncate: tuple[Path, int] | None = None
    remove: list[Path] = field(default_factory=list)
    total_bytes: int = 0
    records: int = 0


def _trailing_segment_is_torn(path: Path, size: int, min_lsn: int) -> bool:
    """True when a last segment with an unreadable header holds no valid frame at all."""

    if size < HEADER_SIZE:
        return True
    with open(path, "rb", buffering=0) as f:
        return find_valid_frame(f.fileno(), 0, size, min_lsn) is None


def analyze_log(
    directory: str | os.PathLike[str],
    *,
    stop_at_first: bool = False,
    check_records: bool = False,
    on_frame: Callable[[Frame], None] | None = None,
    index_every: int = 64 * 1024,
) -> LogAnalysis:
    """Scan every segment of a log and classify what it finds. Never modifies a file.

    Args:
        directory: the log directory.
        stop_at_first: return at the first problem (recovery does; verification does not).
        check_records: also check that each frame's records fill it exactly.
        on_frame: called with each valid frame in LSN order (recovery rebuilds its dedup table).
        index_every: sparse index spacing in bytes (see `SegmentState`).

    Cost: reads every byte once and CRC-checks every frame: O(log size).
    """

    an = LogAnalysis()
    files = list_segments(directory)
    sizes = {path: path.stat().st_size for _, path in files}
    an.total_bytes = sum(sizes.values())
    # A crash between creating a segment and writing its header leaves a trailing file with a
    # torn header and no frames: it never held acknowledged data, so recovery deletes it.
    while files:
        base, path = files[-1]
        try:
            with open(path, "rb") as f:
                decode_header(f.read(HEADER_SIZE))
            break
        except ValueError as exc:
            if not _trailing_segment_is_torn(path, sizes[path], base):
                break
            an.remove.append(path)
            an.warnings.append(
                f"{path}: the last segment holds no frame and its header is unreadable ({exc}), "
                "as after a crash while creating it; opening the log deletes it"
            )
            files.pop()
    expected: int | None = None
    for i, (name_base, path) in enumerate(files):
        is_last = i == len(files) - 1
        size = sizes[path]
        found = len(an.problems)
        with open(path, "rb", buffering=0) as f:
            fd = f.fileno()
            try:
                base, log_id = decode_header(_pread(fd, HEADER_SIZE, 0))
            except ValueError as exc:
                an.problems.append(Problem(path, 0, expected or name_base, str(exc)))
                expected = None
                if stop_at_first:
                    return an
                continue
            if base != name_base:
                an.problems.append(
                    Problem(path, 0, None, f"header says base LSN {base}, file name {name_base}")
                )
            if an.log_id is None:
                an.log_id = log_id
            elif log_id != an.log_id:
                an.problems.append(
                    Problem(
                        path,
                        0,
                        None,
                        f"segment belongs to log {uuid.UUID(bytes=log_id)}, not to "
                        f"{uuid.UUID(bytes=an.log_id)} like the segments before it",
                    )
                )
            if expected is not None and base != expected:
                an.problems.append(
                    Problem(
                        path,
                        0,
                        expected,
                        f"segment starts at LSN {base} but the previous segment ends at LSN "
                        f"{expected - 1} (LSN continuity broken)",
                    )
                )
            if len(an.problems) > found and stop_at_first:
                return an
            seg = SegmentState(base, path, HEADER_SIZE, base)
            bad: BadFrame | None = None
            for fr in walk_frames(fd, HEADER_SIZE, size, base):
                if isinstance(fr, BadFrame):
                    bad = fr
                    break
                if check_records:
                    try:
                        fr.payloads()
                    except ValueError as exc:
                        reason = f"the frame passes its CRC but {exc}"
                        bad = BadFrame(fr.offset, fr.base_lsn, reason)
                        break
                seg.add_index(fr.base_lsn, fr.offset, index_every)
                seg.frames += 1
                seg.end = fr.offset + fr.size
                seg.next_lsn = fr.base_lsn + fr.count
                an.records += fr.count
                if on_frame is not None:
                    on_frame(fr)
            an.segments.append(seg)
            expected = seg.next_lsn
            if bad is None:
                continue
            if not is_last:
                why = "this segment is sealed (a later segment follows), so this is corruption"
            else:
                nxt = find_valid_frame(fd, bad.offset + 1, size, seg.next_lsn)
                if nxt is None:
                    an.truncate = (path, bad.offset)
                    an.warnings.append(
                        f"{path}: torn tail of {size - bad.offset} bytes from byte offset "
                        f"{bad.offset} ({bad.reason}; no valid frame follows); opening the log "
                        "truncates it"
                    )
                    continue
                why = (
                    f"a valid frame follows at byte offset {nxt}, so this is corruption, "
                    "not a torn tail"
                )
            an.problems.append(Problem(path, bad.offset, bad.expected_lsn, f"{bad.reason}; {why}"))
            expected = None
            if stop_at_first:
                return an
    return an


@dataclass(frozen=True)
class VerifyReport:
    """The result of :func:`verify_log`.

    Attributes:
        directory: the log directory checked.
        ok: True when the log can be opened without losing a valid frame (a torn tail is fine:
            it only ever holds an unacknowledged frame, and open truncates it).
        problems: corruption found, each naming file, byte offset and the LSN expected there.
        warnings: recoverable findings (torn tail, torn trailing segment) and what open will do.
        log_id: the log's UUID string, or None when no segment header is readable.
        segments: number of segment files.
        frames: number of valid frames.
        records: number of records in valid frames.
        first_lsn: LSN of the first record (0 when there is none).
        last_lsn: LSN of the last valid record (0 when there is none).
        bytes: total size of the segment files.
    """

    directory: str
    ok: bool
    problems: list[str]
    warnings: list[str]
    log_id: str | None
    segments: int
    frames: int
    records: int
    first_lsn: int
    last_lsn: int
    bytes: int

    def summary(self) -> str:
        """A one-paragraph human-readable summary (what ``replaybuf log verify`` prints)."""

        span = f"LSN {self.first_lsn}..{self.last_lsn}" if self.records else "no records"
        head = (
            f"log {self.directory} (id {self.log_id}): {self.segments} segment(s), "
            f"{self.frames} frame(s), {self.records} record(s), {span}, {self.bytes} bytes"
        )
        if self.ok:
            text = head + "; every frame passed its CRC-32C and LSN continuity checks."
        else:
            text = head + f"; {len(self.problems)} problem(s) found."
        for w in self.warnings:
            text += f" Note: {w}."
        return text


def verify_log(directory: str | os.PathLike[str]) -> VerifyReport:
    """Check a log directory thoroughly and report; never modifies a file.

    Checks every segment header, every frame's CRC-32C and record layout, and LSN continuity
    within and across segments, and goes on after a problem to list them all.
    Cost: O(log size), one read of every byte. Safe to call concurrently with a writer (a frame
    being written at that moment may be reported as a torn tail).
    """

    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return VerifyReport(
            directory, False, [f"{directory}: no such directory"], [], None, 0, 0, 0, 0, 0, 0
        )
    an = analyze_log(directory, check_records=True)
    segments = len(list_segments(directory))
    problems = [str(p) for p in an.problems]
    if segments == 0:
        problems.append(
            f"{directory}: no segment files (*.seg); is this a replaybuf log directory?"
        )
    with_records = [s for s in an.segments if s.frames]
    return VerifyReport(
        directory=directory,
        ok=not problems,
        problems=problems,
        warnings=list(an.warnings),
        log_id=str(uuid.UUID(bytes=an.log_id)) if an.log_id else None,
        segments=segments,
        frames=sum(s.frames for s in an.segments),
        records=an.records,
        first_lsn=with_records[0].base_lsn if with_records else 0,
        last_lsn=with_records[-1].last_lsn if with_records else 0,
        bytes=an.total_bytes,
    )


def corruption_message(problem: Problem) -> str:
    """The message of a `LogCorruptionError`: what is wrong, where, and how to proceed."""

    lsn = problem.lsn
    lost = f"LSN {lsn} and everything after it" if lsn is not None else "everything after it"
    return (
        f"event log corrupt: {problem}. The log was not modified. Run `replaybuf log verify "
        f"{problem.path.parent}` to list every problem; then restore the segment from a backup "
        f"or replica, or, accepting the loss of {lost}, truncate {problem.path.name} to "
        f"{problem.offset} bytes and move the later segments away."
    )


def read_frames(
    path: Path,
    start: int,
    end: int | None,
    expected_lsn: int,
    *,
    last_segment: bool,
) -> Iterator[Frame]:
    """Yield the valid frames of one segment from byte ``start`` (a frame boundary).

    Args:
        end: stop at this offset (a committed end), or None for the file's end.
        last_segment: with ``end=None``, treat invalid bytes running to the end of the file with
            no valid frame after them as a torn tail and stop there quietly.

    Raises:
        LogCorruptionError: any other invalid frame; names the file, offset and LSN.
    """

    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        stop = os.fstat(fd).st_size if end is None else end
        for fr in walk_frames(fd, start, stop, expected_lsn):
            if isinstance(fr, Frame):
                yield fr
                continue
            if end is None and last_segment:
                if find_valid_frame(fd, fr.offset + 1, stop, fr.expected_lsn or 1) is None:
                    return
            raise LogCorruptionError(
                corruption_message(Problem(path, fr.offset, fr.expected_lsn, fr.reason))
            )


def frame_records(fr: Frame, path: Path, from_lsn: int, to_lsn: int) -> Iterator[LogRecord]:
    """Yield the records of ``fr`` with ``from_lsn <= lsn <= to_lsn``."""

    try:
        payloads = fr.payloads()
    except ValueError as exc:
        raise LogCorruptionError(
            corruption_message(
                Problem(path, fr.offset, fr.base_lsn, f"the frame passes its CRC but {exc}")
            )
        ) from None
    lsn = fr.base_lsn
    for payload in payloads:
        if from_lsn <= lsn <= to_lsn:
            yield LogRecord(lsn, payload, fr.timestamp_ms, fr.producer_id, fr.producer_seq)
        lsn += 1


def iter_log_records(
    directory: str | os.PathLike[str], from_lsn: int = 1, to_lsn: int | None = None
) -> Iterator[LogRecord]:
    """Read records straight from a log directory, without opening (or locking) the log.

    Read-only: a torn tail is skipped, never truncated. Used by ``replaybuf log dump`` and
    offline tools. Cost: O(bytes from the start of ``from_lsn``'s segment).

    Raises:
        LogCorruptionError: a damaged frame on the way (file, offset and LSN named).
    """

    if from_lsn < 1:
        raise InvalidArgumentError(f"from_lsn={from_lsn}; LSNs start at 1")
    stop = to_lsn if to_lsn is not None else 2**64
    files = list_segments(directory)
    bases = [b for b, _ in files]
    first = max(0, bisect_right(bases, from_lsn) - 1)
    for i in range(first, len(files)):
        base, path = files[i]
        if base > stop:
            return
        with open(path, "rb") as f:
            header = f.read(HEADER_SIZE)
        try:
            decode_header(header)
        except ValueError as exc:
            last = i == len(files) - 1
            if last and _trailing_segment_is_torn(path, os.path.getsize(path), base):
                return
            raise LogCorruptionError(corruption_message(Problem(path, 0, base, str(exc)))) from None
        for fr in read_frames(path, HEADER_SIZE, None, base, last_segment=i == len(files) - 1):
            if fr.base_lsn + fr.count <= from_lsn:
                continue
            if fr.base_lsn > stop:
                return
            yield from frame_records(fr, path, from_lsn, stop)

