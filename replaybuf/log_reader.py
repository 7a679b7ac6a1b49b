"""Reading records back from segment files, for `FileLog.read` and for offline tools.

Every frame read is CRC- and LSN-checked; damage raises `LogCorruptionError` naming the file,
offset and LSN. Read-only: nothing here modifies a file, so `iter_log_records` is safe on a log
that is open elsewhere (the tail may then look torn while a frame is being written).
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path

from replaybuf.errors import InvalidArgumentError, LogCorruptionError
from replaybuf.frame import Frame, find_valid_frame, walk_frames
from replaybuf.log import LogRecord
from replaybuf.recovery import Problem, corruption_message, trailing_segment_is_torn
from replaybuf.segment import HEADER_SIZE, list_segments, read_header

__all__ = ["read_frames", "frame_records", "read_records", "iter_log_records"]


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
            corruption_message(Problem(path, fr.offset, fr.base_lsn, str(exc)))
        ) from None
    lsn = fr.base_lsn
    for payload in payloads:
        if from_lsn <= lsn <= to_lsn:
            yield LogRecord(lsn, payload, fr.timestamp_ms, fr.producer_id, fr.producer_seq)
        lsn += 1


def read_records(
    path: Path,
    start: int,
    end: int | None,
    expected_lsn: int,
    from_lsn: int,
    to_lsn: int,
    *,
    last_segment: bool,
) -> Iterator[LogRecord]:
    """Yield the records of one segment with ``from_lsn <= lsn <= to_lsn``.

    ``start``, ``end``, ``expected_lsn`` and ``last_segment`` are as for `read_frames`; frames
    wholly before ``from_lsn`` are skipped and the walk stops at the first one after ``to_lsn``.

    Raises:
        LogCorruptionError: a damaged frame on the way (file, offset and LSN named).
    """

    for fr in read_frames(path, start, end, expected_lsn, last_segment=last_segment):
        if fr.base_lsn + fr.count <= from_lsn:
            continue
        if fr.base_lsn > to_lsn:
            return
        yield from frame_records(fr, path, from_lsn, to_lsn)


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
        last = i == len(files) - 1
        try:
            with open(path, "rb", buffering=0) as f:
                read_header(f.fileno())
        except ValueError as exc:
            if last and trailing_segment_is_torn(path, os.path.getsize(path), base):
                return
            raise LogCorruptionError(corruption_message(Problem(path, 0, base, str(exc)))) from None
        yield from read_records(path, HEADER_SIZE, None, base, from_lsn, stop, last_segment=last)
