"""Offline verification of a log directory: `verify_log` and its `VerifyReport`.

What ``replaybuf log verify`` runs. Read-only, so it is safe on a log that is open elsewhere.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from replaybuf.recovery import analyze_log
from replaybuf.segment import list_segments

__all__ = ["VerifyReport", "verify_log"]


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
