"""FileLog recovery: torn tails are truncated, corruption stops the open with file/offset/LSN."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from replaybuf.errors import LogCorruptionError
from replaybuf.file_log import FileLog, FileLogConfig
from replaybuf.log_format import FRAME_OVERHEAD, HEADER_SIZE, RECORD_OVERHEAD, encode_header

REPO = Path(__file__).resolve().parents[1]
PID = bytes(range(100, 116))


@dataclass(frozen=True)
class Written:
    segment: Path
    start: int
    end: int
    first_lsn: int
    last_lsn: int
    payloads: list[bytes]


def build_log(directory: Path, frames: int = 24, segment_bytes: int = 256 * 2**20, seed: int = 0,
              producer: bool = False) -> list[Written]:
    rng = random.Random(seed)
    out = []
    cfg = FileLogConfig(fsync="none", segment_bytes=segment_bytes)
    with FileLog(directory, cfg) as log:
        for i in range(frames):
            batch = [rng.randbytes(rng.randrange(1, 200)) for _ in range(rng.randrange(1, 4))]
            kw = {"producer_id": PID, "producer_seq": i + 1} if producer else {}
            ack = log.append(batch, **kw)
            segment = max(directory.glob("*.seg"))
            end = segment.stat().st_size
            size = FRAME_OVERHEAD + sum(RECORD_OVERHEAD + len(p) for p in batch)
            out.append(Written(segment, end - size, end, ack.first_lsn, ack.last_lsn, batch))
    return out


def records(frames: list[Written]) -> list[tuple[int, bytes]]:
    return [(f.first_lsn + i, p) for f in frames for i, p in enumerate(f.payloads)]


def read_all(log: FileLog) -> list[tuple[int, bytes]]:
    return [(r.lsn, r.payload) for r in log.read()]


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.glob("*.seg")}


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def assert_recovers_to(directory: Path, kept: list[Written]) -> None:
    """Reopen: exactly the frames in ``kept`` remain, the tail is cut after them, appends go on."""

    with FileLog(directory) as log:
        last = kept[-1].last_lsn if kept else 0
        assert log.last_lsn == log.durable_lsn == last
        assert read_all(log) == records(kept)
        segment = max(directory.glob("*.seg"))
        in_last = [f for f in kept if f.segment == segment]
        assert segment.stat().st_size == (in_last[-1].end if in_last else HEADER_SIZE)
        ack = log.append([b"after recovery"])
        assert ack.first_lsn == last + 1
        assert list(log.read(last + 1))[0].payload == b"after recovery"


@pytest.mark.parametrize("seed", range(8))
def test_torn_tail_at_a_random_offset_is_cut_back_to_the_last_whole_frame(tmp_path, seed):
    frames = build_log(tmp_path, segment_bytes=4096, frames=40, seed=seed)
    segment = frames[-1].segment
    cut = random.Random(seed).randrange(HEADER_SIZE, segment.stat().st_size)
    os.truncate(segment, cut)
    assert_recovers_to(tmp_path, [f for f in frames if f.segment != segment or f.end <= cut])


def test_zero_filled_tail_is_cut_off(tmp_path):
    frames = build_log(tmp_path)
    with open(frames[-1].segment, "ab") as f:
        f.write(bytes(5000))
    assert_recovers_to(tmp_path, frames)


def test_frame_overwritten_by_zeros_at_the_end_is_dropped(tmp_path):
    # The file size reached the disk but the data did not: the last frame reads as zeros.
    frames = build_log(tmp_path)
    last = frames[-1]
    with open(last.segment, "r+b") as f:
        f.seek(last.start + 3)
        f.write(bytes(last.end - last.start - 3 + 1000))
    assert_recovers_to(tmp_path, frames[:-1])


@pytest.mark.parametrize("seed", range(4))
def test_random_garbage_tail_is_cut_off(tmp_path, seed):
    frames = build_log(tmp_path, seed=seed)
    rng = random.Random(seed)
    with open(frames[-1].segment, "ab") as f:
        f.write(rng.randbytes(rng.randrange(1, 6000)))
    assert_recovers_to(tmp_path, frames)


def test_damage_in_the_last_frame_counts_as_a_torn_tail(tmp_path):
    frames = build_log(tmp_path)
    flip_byte(frames[-1].segment, frames[-1].end - 1)
    assert_recovers_to(tmp_path, frames[:-1])


@pytest.mark.parametrize("where", ["payload", "length field", "lsn field"])
def test_flipped_byte_in_a_sealed_segment_stops_recovery_naming_file_offset_lsn(tmp_path, where):
    frames = build_log(tmp_path, segment_bytes=4096, frames=40)
    first_segment = frames[0].segment
    sealed = [f for f in frames if f.segment == first_segment]
    assert len(sealed) >= 3 and frames[-1].segment != first_segment
    victim = sealed[len(sealed) // 2]
    offset = {"payload": victim.end - 2, "length field": victim.start + 2,
              "lsn field": victim.start + 15}
    flip_byte(first_segment, offset[where])
    before = digest(tmp_path)
    with pytest.raises(LogCorruptionError) as info:
        FileLog(tmp_path)
    message = str(info.value)
    assert first_segment.name in message
    assert f"byte offset {victim.start}" in message
    assert f"LSN {victim.first_lsn}" in message
    assert "sealed" in message and "replaybuf log verify" in message
    assert digest(tmp_path) == before  # recovery modified nothing


def test_damaged_frame_followed_by_valid_frames_in_the_last_segment_is_corruption(tmp_path):
    frames = build_log(tmp_path, frames=10)
    victim = frames[6]
    flip_byte(victim.segment, victim.start + FRAME_OVERHEAD + 1)
    before = digest(tmp_path)
    with pytest.raises(LogCorruptionError) as info:
        FileLog(tmp_path)
    message = str(info.value)
    assert victim.segment.name in message
    assert f"byte offset {victim.start}" in message and f"LSN {victim.first_lsn}" in message
    assert f"a valid frame follows at byte offset {frames[7].start}" in message
    assert digest(tmp_path) == before


def test_damaged_header_of_a_sealed_segment_is_corruption(tmp_path):
    frames = build_log(tmp_path, segment_bytes=4096, frames=40)
    flip_byte(frames[0].segment, 20)
    name = frames[0].segment.name
    with pytest.raises(LogCorruptionError, match=rf"{name}: byte offset 0 .*header CRC"):
        FileLog(tmp_path)


def test_damaged_header_of_a_last_segment_holding_frames_is_corruption_not_a_torn_header(tmp_path):
    frames = build_log(tmp_path, segment_bytes=4096, frames=40)
    flip_byte(frames[-1].segment, 3)
    with pytest.raises(LogCorruptionError, match="bad magic"):
        FileLog(tmp_path)


def test_missing_middle_segment_breaks_lsn_continuity(tmp_path):
    frames = build_log(tmp_path, segment_bytes=4096, frames=60)
    segments = sorted({f.segment for f in frames})
    assert len(segments) >= 3
    segments[1].unlink()
    name = segments[2].name
    with pytest.raises(LogCorruptionError, match=rf"{name}: byte offset 0 .*continuity"):
        FileLog(tmp_path)


@pytest.mark.parametrize("content", ["empty", "torn header", "zero header", "zero page"])
def test_trailing_segment_with_no_header_is_removed_without_an_lsn_gap(tmp_path, content):
    # A crash between creating a segment and writing (or syncing) its header.
    frames = build_log(tmp_path, segment_bytes=4096, frames=40)
    with FileLog(tmp_path) as log:
        log_id = log.log_id
    header = encode_header(frames[-1].last_lsn + 1, uuid.UUID(log_id).bytes)
    data = {"empty": b"", "torn header": header[:17], "zero header": bytes(HEADER_SIZE),
            "zero page": bytes(4096)}[content]
    stray = tmp_path / f"{frames[-1].last_lsn + 1:020d}.seg"
    stray.write_bytes(data)
    with FileLog(tmp_path, FileLogConfig(segment_bytes=4096)) as log:
        assert log.last_lsn == frames[-1].last_lsn
        assert read_all(log) == records(frames)
        ack = log.append([b"next"])
        assert ack.first_lsn == frames[-1].last_lsn + 1
        assert [r.lsn for r in log.read()] == list(range(1, ack.last_lsn + 1))


def test_trailing_segment_holding_only_its_header_is_reused(tmp_path):
    frames = build_log(tmp_path, frames=5)
    with FileLog(tmp_path) as log:
        log_id = log.log_id
    stray = tmp_path / f"{frames[-1].last_lsn + 1:020d}.seg"
    stray.write_bytes(encode_header(frames[-1].last_lsn + 1, uuid.UUID(log_id).bytes))
    with FileLog(tmp_path) as log:
        assert log.last_lsn == frames[-1].last_lsn
        log.append([b"into the new segment"])
    assert stray.stat().st_size > HEADER_SIZE


def test_dedup_table_is_rebuilt_from_what_survived_recovery(tmp_path):
    frames = build_log(tmp_path, frames=6, producer=True)
    os.truncate(frames[-1].segment, frames[-1].start + 10)  # seq 6 was never acknowledged
    with FileLog(tmp_path) as log:
        assert log.append(frames[2].payloads, producer_id=PID, producer_seq=3).duplicate
        redo = log.append(frames[5].payloads, producer_id=PID, producer_seq=6)
        assert not redo.duplicate and redo.first_lsn == frames[5].first_lsn


_SHORT_WRITE_CHILD = r"""
import json, os, resource, signal, sys
from replaybuf.errors import DurabilityError
from replaybuf.file_log import FileLog, FileLogConfig

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
directory, limit = sys.argv[1], int(sys.argv[2])
out = {"acked": [], "short_writes": []}
real_write = os.write

def recording_write(fd, data):
    n = real_write(fd, data)
    if n < len(data):
        out["short_writes"].append(n)
    return n

os.write = recording_write
log = FileLog(directory, FileLogConfig(fsync="group", on_fatal=lambda exc: None))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    for i in range(100):
        out["acked"].append(log.append([bytes([i]) * 1000]).last_lsn)
except DurabilityError as exc:
    out["error"] = str(exc)
try:
    log.append([b"after the failure"])
except DurabilityError as exc:
    out["after"] = type(exc).__name__
log.close()
print(json.dumps(out))
"""


def test_short_write_under_rlimit_fsize_fails_the_child_and_leaves_only_whole_frames(tmp_path):
    frames = build_log(tmp_path, frames=3)
    segment = frames[-1].segment
    size = segment.stat().st_size
    frame = FRAME_OVERHEAD + RECORD_OVERHEAD + 1000
    limit = size + 5 * frame + frame // 3  # the 6th frame gets a short write, then EFBIG
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.run(
        [sys.executable, "-c", _SHORT_WRITE_CHILD, str(tmp_path), str(limit)],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
    )
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout)
    last = frames[-1].last_lsn
    assert out["acked"] == [last + i for i in range(1, 6)]
    assert out["short_writes"] == [frame // 3]  # the write loop saw the short write, then EFBIG
    assert "File too large" in out["error"] and "truncated" in out["error"]
    assert out["after"] == "DurabilityError"
    assert segment.stat().st_size == size + 5 * frame  # the partial frame was cut back
    with FileLog(tmp_path) as log:
        assert log.last_lsn == last + 5
        got = read_all(log)
        assert got[: len(records(frames))] == records(frames)
        assert [p for _, p in got[-5:]] == [bytes([i]) * 1000 for i in range(5)]


def test_recovery_fsyncs_the_directory_before_accepting_appends(tmp_path, monkeypatch):
    # The last segment may have been created by a process that died before fsyncing the
    # directory; acks into it are only power-loss durable once recovery fsyncs it.
    build_log(tmp_path, frames=3)
    synced_dirs = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            synced_dirs.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    with FileLog(tmp_path):
        assert str(tmp_path.resolve()) in synced_dirs
