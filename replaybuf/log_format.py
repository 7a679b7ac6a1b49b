"""On-disk format of the embedded file log, and the read-only tools that work on it.

`replaybuf.file_log.FileLog` writes this format. This module is its public face: the layout
below, its constants, and the offline tools (:func:`verify_log`, :func:`iter_log_records`), which
never modify a file and so are safe to run on a log that is open elsewhere (the tail may then
look torn while a frame is being written). The code lives in one module per part:

* `replaybuf.segment`: segment names, the segment header, the segment table of an open log.
* `replaybuf.frame`: encoding a frame, walking frames, searching damaged bytes for one.
* `replaybuf.recovery`: scanning a whole log and classifying damage (:func:`analyze_log`).
* `replaybuf.log_reader`: reading records back (:func:`iter_log_records`).
* `replaybuf.verification`: :func:`verify_log` and its `VerifyReport`.

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

# Besides `__all__`, every name below stays importable from here for code that imports the
# internals by their old home (this module held all of them before the split).
from replaybuf.frame import (
    FRAME_OVERHEAD,
    MAX_FRAME_LENGTH,
    NO_PRODUCER,
    RECORD_OVERHEAD,
    BadFrame,
    Frame,
    encode_frame,
    find_valid_frame,
    walk_frames,
)
from replaybuf.log_reader import frame_records, iter_log_records, read_frames
from replaybuf.recovery import LogAnalysis, Problem, analyze_log, corruption_message
from replaybuf.segment import (
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    SegmentState,
    decode_header,
    encode_header,
    list_segments,
    segment_name,
)
from replaybuf.verification import VerifyReport, verify_log

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

