"""Recovery scanning: walk every segment of a log and classify what is found.

`analyze_log` reads a log directory without modifying it and returns a `LogAnalysis`: the
segment table, the corruption found (`Problem`), and what opening the log would repair.
`FileLog` applies that repair on open; `replaybuf.verification.verify_log` reports it.

Damage classes: invalid bytes running to the end of the *last* segment with no valid frame
after them are a torn tail (a crash mid-write; `FileLog` truncates it on open). A last segment
with a torn header and no valid frame (a crash while creating it) is deleted on open. Anything
else (damage in a sealed segment, or a damaged frame followed by a valid one) is corruption and
stops recovery.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from replaybuf.frame import BadFrame, Frame, find_valid_frame, walk_frames
from replaybuf.segment import (
    HEADER_SIZE,
    INDEX_EVERY,
    SegmentState,
    list_segments,
    read_header,
)

__all__ = [
    "Problem",
    "LogAnalysis",
    "analyze_log",
    "trailing_segment_is_torn",
    "corruption_message",
]


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


def trailing_segment_is_torn(path: Path, size: int, min_lsn: int) -> bool:
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
    index_every: int = INDEX_EVERY,
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
            with open(path, "rb", buffering=0) as f:
                read_header(f.fileno())
            break
        except ValueError as exc:
            if not trailing_segment_is_torn(path, sizes[path], base):
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
                base, log_id = read_header(fd)
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
                        bad = BadFrame(fr.offset, fr.base_lsn, str(exc))
                        break
                seg.add_frame(fr.base_lsn, fr.offset, fr.size, fr.count, index_every)
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
