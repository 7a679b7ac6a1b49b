"""SIGKILL crash campaign for the file event log (DESIGN.md invariant 4; research (b) 1, 7, 14).

A child process (`tests/_crash_child.py`) appends from several threads and reports every ack on
a pipe; the parent SIGKILLs it at a seeded random moment, reopens the log and checks: every
acked LSN is present with the exact payload, LSNs are contiguous from 1, `verify_log` passes,
unacknowledged frames are only in-flight appends, retries of an acked (producer_id, seq) return
the original LSNs with ``duplicate=True``, and the log appends again from ``last_lsn + 1``.
Each trial kills the child twice in the same directory (the second child recovers the first
crash itself).

Knobs (environment):
    REPLAYBUF_CRASH_TRIALS  kills in the random campaign, split over group/always/interval
                            (default 32); e.g. 2000 for a long campaign.
    REPLAYBUF_CRASH_SEED    base seed (default 1); a failure message names the seed to rerun.

For a long campaign with a progress bar use ``bench/crash_campaign.py --trials N``.
"""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path
from typing import Any

import pytest

from _crash_child import (
    PARENT_WRITER,
    ROLL_CRASH_POINTS,
    make_batch,
    parse_payload,
    producer_id,
    run_trial,
)

KILLS = int(os.environ.get("REPLAYBUF_CRASH_TRIALS", "32"))
SEED = int(os.environ.get("REPLAYBUF_CRASH_SEED", "1"))
ROUNDS = 2  # kills per trial directory
SEGMENT_BYTES = 256 << 10  # small, so that segments roll every few appends


def _campaign() -> list[tuple[str, int]]:
    """(policy, trial index) pairs: KILLS kills in trials of ROUNDS kills, policies interleaved."""

    trials = max(3, -(-KILLS // ROUNDS))
    policies = ("group", "always", "interval")
    return [(policies[i % 3], i) for i in range(trials)]


@pytest.mark.parametrize(("policy", "trial"), _campaign(),
                         ids=[f"{p}-{i}" for p, i in _campaign()])
def test_acked_appends_survive_sigkill_at_random_moments(tmp_path: Path, policy: str,
                                                         trial: int) -> None:
    rep = run_trial(tmp_path / "log", seed=SEED * 100_000 + trial, policy=policy,
                    rounds=ROUNDS, segment_bytes=SEGMENT_BYTES)
    assert rep.kills == ROUNDS
    assert rep.acks >= ROUNDS  # each child acked at least once before it was killed


@pytest.mark.parametrize("policy", ["group", "always"])
@pytest.mark.parametrize("point", ROLL_CRASH_POINTS)
def test_crash_inside_a_segment_roll_recovers_without_lsn_gap(tmp_path: Path, point: str,
                                                              policy: str) -> None:
    rolls = random.Random(f"{SEED}/{point}/{policy}").randint(1, 3)
    rep = run_trial(tmp_path / "log", seed=SEED, policy=policy, rounds=ROUNDS,
                    segment_bytes=SEGMENT_BYTES, crash_point=point, crash_after=rolls)
    assert len(rep.crash_points_fired) == ROUNDS
    if point in ("seg-created", "torn-header"):
        assert rep.torn_tails == ROUNDS  # recovery found and removed the torn segment


@pytest.mark.parametrize("policy", ["group", "always", "interval"])
def test_kill_inside_a_frame_write_leaves_a_torn_tail_that_recovery_cuts(tmp_path: Path,
                                                                         policy: str) -> None:
    after = random.Random(f"{SEED}/torn-write/{policy}").randint(1, 30)
    rep = run_trial(tmp_path / "log", seed=SEED + 3, policy=policy, rounds=ROUNDS,
                    segment_bytes=SEGMENT_BYTES, crash_point="torn-write", crash_after=after)
    assert len(rep.crash_points_fired) == ROUNDS
    assert rep.torn_tails == ROUNDS


@pytest.mark.parametrize("policy", ["group", "always"])
def test_no_ack_depends_on_a_segment_whose_directory_entry_was_not_fsynced(
        tmp_path: Path, policy: str) -> None:
    # The child dies just before the directory fsync that follows a segment's creation; the
    # parent then deletes that segment, as a power loss may. Every ack must survive.
    rep = run_trial(tmp_path / "log", seed=SEED + 7, policy=policy, rounds=ROUNDS,
                    segment_bytes=SEGMENT_BYTES, crash_point="dir-fsync",
                    drop_unsynced_segment=True)
    assert len(rep.crash_points_fired) == ROUNDS


@pytest.mark.parametrize("policy", ["group", "interval"])
def test_every_frame_retried_after_crash_returns_its_original_lsns(tmp_path: Path,
                                                                   policy: str) -> None:
    from replaybuf.file_log import FileLog, FileLogConfig

    seed = SEED + 11
    directory = tmp_path / "log"
    run_trial(directory, seed=seed, policy=policy, rounds=1, segment_bytes=SEGMENT_BYTES,
              max_acks=60)
    cfg = FileLogConfig(fsync=policy, segment_bytes=SEGMENT_BYTES)
    for _reopen in range(2):  # the dedup state is rebuilt from the log on every open
        with FileLog(directory, cfg) as log:
            records = list(log.read())
            last = log.last_lsn
            frames = {}
            for rec in records:
                round_, w, s, idx, count = parse_payload(rec.payload)
                if idx == 0:
                    frames[(round_, w, s)] = (rec.lsn, rec.lsn + count - 1)
            writers = [k for k in frames if k[1] != PARENT_WRITER]
            assert writers, "the child acked nothing"
            newest: dict[tuple[int, int], int] = {}
            for round_, w, s in writers:
                newest[(round_, w)] = max(s, newest.get((round_, w), 0))
            for (round_, w, s), lsns in sorted(frames.items()):
                if w == PARENT_WRITER or s <= newest[(round_, w)] - cfg.dedup_window:
                    continue  # the parent's probe, or a sequence older than the dedup window
                batch = make_batch(seed, round_, w, s, SEGMENT_BYTES // 2)
                res = log.append(batch, producer_id=producer_id(round_, w), producer_seq=s)
                assert res.duplicate, (round_, w, s)
                assert (res.first_lsn, res.last_lsn) == lsns
            assert log.last_lsn == last


@pytest.mark.parametrize("point", ["seg-fsync", "dir-fsync"])
@pytest.mark.parametrize("policy", ["group", "always"])
def test_recovery_fsyncs_the_directory_before_acking_into_a_segment_created_before_the_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str, policy: str) -> None:
    # The child dies after creating a segment but before fsyncing the directory, so the
    # segment's directory entry may not survive a power loss. Recovery keeps the segment (its
    # header is valid) and appends into it: an ack there is only power-loss durable if the
    # directory was fsynced (by recovery or by anything else) before it.
    from replaybuf.file_log import FileLog

    directory = tmp_path / "log"
    directory.mkdir()
    st = directory.stat()
    events: list[tuple[str, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        s = os.fstat(fd)
        if stat.S_ISDIR(s.st_mode) and (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino):
            events.append(("dir-fsync", 0))

    real_append = FileLog.append

    def append(self: FileLog, *args: Any, **kwargs: Any) -> Any:
        res = real_append(self, *args, **kwargs)
        if not res.duplicate:
            events.append(("ack", res.last_lsn))
        return res

    monkeypatch.setattr(os, "fsync", fsync)  # this process only: the child is not affected
    monkeypatch.setattr(FileLog, "append", append)
    rep = run_trial(directory, seed=SEED + 5, policy=policy, rounds=1,
                    segment_bytes=SEGMENT_BYTES, crash_point=point)
    segment = Path(rep.crash_points_fired[0].split(" ", 1)[1])
    assert segment.exists()
    base = int(segment.stem)
    first_ack_in_segment = next(i for i, (kind, lsn) in enumerate(events)
                                if kind == "ack" and lsn >= base)
    assert ("dir-fsync", 0) in events[:first_ack_in_segment], (
        f"recovery acked LSN {events[first_ack_in_segment][1]} in {segment.name}, whose directory "
        f"entry was never fsynced; events: {events[:first_ack_in_segment + 1]}")
