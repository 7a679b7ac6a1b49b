"""The `replaybuf log verify` and `replaybuf log dump` commands."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from replaybuf.cli import describe_payload, main
from replaybuf.file_log import FileLog, FileLogConfig

REPO = Path(__file__).resolve().parents[1]
PID = bytes.fromhex("0123456789abcdef0123456789abcdef")


def make_log(directory: Path, frames: int = 30, segment_bytes: int = 4096) -> list[tuple[int, int]]:
    """Append ``frames`` two-record frames; return each frame's (segment base, end offset)."""

    out = []
    with FileLog(directory, FileLogConfig(fsync="none", segment_bytes=segment_bytes)) as log:
        for i in range(frames):
            batch = [f"event {i}".encode() * 20, bytes([i]) * 7]
            log.append(batch, producer_id=PID, producer_seq=i + 1)
            segment = max(directory.glob("*.seg"))
            out.append((int(segment.name[:20]), segment.stat().st_size))
    return out


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.glob("*.seg")}


def test_verify_of_a_sound_log_exits_0_with_a_summary(tmp_path, capsys):
    make_log(tmp_path)
    assert main(["log", "verify", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "30 frame(s), 60 record(s), LSN 1..60" in out
    assert "every frame passed its CRC-32C and LSN continuity checks" in out
    assert "problem" not in out


def test_verify_names_each_damaged_frame_and_exits_1_without_modifying_files(tmp_path, capsys):
    make_log(tmp_path, frames=60)
    segments = sorted(tmp_path.glob("*.seg"))
    assert len(segments) >= 3
    victim = segments[0]
    with open(victim, "r+b") as f:
        f.seek(200)
        b = f.read(1)
        f.seek(200)
        f.write(bytes([b[0] ^ 1]))
    os.truncate(segments[-1], segments[-1].stat().st_size - 5)  # a torn tail besides
    before = digest(tmp_path)
    assert main(["log", "verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert digest(tmp_path) == before
    problems = [line for line in out.splitlines() if line.startswith("  problem:")]
    assert len(problems) == 1
    assert victim.name in problems[0] and "CRC-32C mismatch" in problems[0]
    assert re.search(r"byte offset \d+ \(where LSN \d+ was expected\)", problems[0])
    assert "torn tail" in out  # noted too, as what the next open will truncate


def test_verify_notes_a_torn_tail_but_exits_0(tmp_path, capsys):
    make_log(tmp_path)
    last = max(tmp_path.glob("*.seg"))
    with open(last, "ab") as f:
        f.write(b"\x00" * 100)
    before = digest(tmp_path)
    assert main(["log", "verify", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "torn tail of 100 bytes" in out
    assert digest(tmp_path) == before


def test_verify_of_a_missing_or_empty_directory_exits_1(tmp_path, capsys):
    assert main(["log", "verify", str(tmp_path / "nope")]) == 1
    assert "no such directory" in capsys.readouterr().out
    assert main(["log", "verify", str(tmp_path)]) == 1
    assert "no segment files" in capsys.readouterr().out


def test_dump_prints_one_line_per_record_in_the_requested_range(tmp_path, capsys):
    make_log(tmp_path)
    assert main(["log", "dump", str(tmp_path), "--from", "5", "--to", "9"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [int(line.split()[0]) for line in lines] == [5, 6, 7, 8, 9]
    lsn, when, producer, size, unit, *preview = lines[0].split()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", when)
    assert producer == "…89abcdef#3"  # frame 3 holds LSNs 5 and 6 (last 8 hex digits of the id)
    assert (size, unit) == ("140", "B")
    assert "|event 2event 2ev|" in lines[0]
    assert main(["log", "dump", str(tmp_path), "--from", "58", "--limit", "10"]) == 0
    assert [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()] == [58, 59, 60]
    assert main(["log", "dump", str(tmp_path), "--from", "2", "--limit", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_dump_shows_a_dash_for_appends_without_a_producer(tmp_path, capsys):
    with FileLog(tmp_path) as log:
        log.append([b""])
    assert main(["log", "dump", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split()[2:] == ["-", "0", "B", "(empty)"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["log"],
        ["log", "dump"],
        ["log", "dump", "DIR", "--from", "0"],
        ["log", "dump", "DIR", "--limit", "x"],
    ],
)
def test_bad_usage_exits_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_describe_payload_previews_hex_and_text():
    assert describe_payload(b"hello") == "68656c6c 6f |hello|"
    assert describe_payload(bytes(range(20))).endswith("… |................|")


def test_module_runs_as_a_program(tmp_path):
    make_log(tmp_path, frames=2)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    def run(directory: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "replaybuf.cli", "log", "verify", str(directory)],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
        )

    ok = run(tmp_path)
    assert ok.returncode == 0 and "LSN 1..4" in ok.stdout
    bad = run(tmp_path / "missing")
    assert bad.returncode == 1


def test_dump_describes_replaybuf_events(tmp_path, capsys):
    from replaybuf.events import encode_event, make_event
    from replaybuf.file_log import FileLog
    from replaybuf.v1 import events_pb2

    with FileLog(tmp_path) as log:
        ev = make_event(items_evicted=events_pb2.ItemsEvicted(
            table="t", item_ids=[4, 5], reason=events_pb2.EVICTION_REASON_AGE, job_id="nightly"))
        log.append([encode_event(ev)])
    assert main(["log", "dump", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ItemsEvicted 't' n=2 reason=EVICTION_REASON_AGE job='nightly'" in out
