"""SIGKILL crash campaign for `replaybuf.file_log`: the child writer and the parent's oracle.

Run as a script, this file is the *child*: it opens a `FileLog` and appends batches from several
threads as fast as it can, until it is killed. It reports on stdout (one ``os.write`` per line,
so lines are never interleaved or buffered):

    O <last_lsn> <durable_lsn>                       the log is open (recovery finished)
    B <writer> <seq>                                 about to append batch <seq> of <writer>
    A <writer> <seq> <first> <last> <durable> <dup>  the append returned (the ack)
    C <crash point> <path>                           a crash point fired; SIGKILL follows
    X <writer> <message>                             an append raised; the child exits with 70

Imported, it is the *parent* side (`run_trial`, used by ``tests/test_log_crash.py`` and
``bench/crash_campaign.py``): start the child, let it ack a random number of batches (seeded),
SIGKILL it, reopen the log and check it against everything the child reported.

Payloads are self-describing and checkable without the log: a header (round, writer, seq, index,
count, size), a body derived from the header by BLAKE2b, and a CRC-32C of both. A batch's sizes
come from a RNG seeded by ``(seed, round, writer, seq)``, so the parent can rebuild any batch
byte for byte from four numbers. Each writer thread is one producer: ``producer_id`` names
(round, writer) and ``producer_seq`` is the batch's ``seq``, so retries can be checked too.

Crash points (``--crash-point``) kill the child from inside the log's own system calls by
wrapping ``os`` functions in the child, so `file_log.py` needs no test hook:

    seg-created   right after a new segment file is created (empty file, no header)
    torn-header   inside the write of a new segment's header (a prefix of it is written)
    seg-fsync     at the first fsync/fdatasync of a new segment, before it runs
    dir-fsync     at the first fsync of the log directory after a segment was created, before it runs
    dir-synced    right after that directory fsync returned
    torn-write    inside the write of a frame (a random prefix of it is written)
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import queue
import random
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import crc32c

MAGIC = b"RBCT"
HEADER = struct.Struct(">4sHHIIII")  # magic, round, writer, seq, index, count, size
MIN_PAYLOAD = HEADER.size + 4
PARENT_WRITER = 0xFFFF  # the parent's own appends after recovery
HUGE_BATCH_SHARE = 1 / 30
ROLL_CRASH_POINTS = ("seg-created", "torn-header", "seg-fsync", "dir-fsync", "dir-synced")
CRASH_POINTS = (*ROLL_CRASH_POINTS, "torn-write")
EXIT_WRITER_ERROR = 70
HERE = Path(__file__).resolve()


# ---------------------------------------------------------------------------------------------
# Payloads: deterministic, self-describing, CRC-protected


def producer_id(round_: int, writer: int) -> bytes:
    """The 16-byte producer id of one writer thread in one child round."""

    return b"RBCRASH\0" + struct.pack(">HHI", round_, writer, 0)


def batch_sizes(seed: int, round_: int, writer: int, seq: int, max_frame_bytes: int) -> list[int]:
    """Sizes of the records of batch ``seq``: 1..64 records, mostly small, a few large.

    About one batch in 30 is huge instead (1..4 records of 256 KiB..2 MiB, larger than a test
    segment): its write takes long enough for a kill to land inside it, leaving a torn tail.
    """

    rng = random.Random(f"{seed}/{round_}/{writer}/{seq}")
    if rng.random() < HUGE_BATCH_SHARE:
        return [rng.randint(256 << 10, 2 << 20) for _ in range(rng.randint(1, 4))]
    count = rng.randint(1, 64)
    sizes = []
    total = 0
    for _ in range(count):
        u = rng.random()
        if u < 0.03:
            size = rng.randint(16 << 10, 128 << 10)
        elif u < 0.20:
            size = rng.randint(1 << 10, 8 << 10)
        else:
            size = rng.randint(MIN_PAYLOAD, 300)
        if total + size > max_frame_bytes:
            size = MIN_PAYLOAD
        sizes.append(size)
        total += size
    return sizes


def make_payload(seed: int, round_: int, writer: int, seq: int, index: int, count: int,
                 size: int) -> bytes:
    head = HEADER.pack(MAGIC, round_, writer, seq, index, count, size)
    body_len = size - MIN_PAYLOAD
    block = hashlib.blake2b(head, digest_size=64, key=str(seed).encode()).digest()
    body = (block * (body_len // 64 + 1))[:body_len]
    msg = head + body
    return msg + crc32c.crc32c(msg).to_bytes(4, "big")


def make_batch(seed: int, round_: int, writer: int, seq: int, max_frame_bytes: int) -> list[bytes]:
    sizes = batch_sizes(seed, round_, writer, seq, max_frame_bytes)
    return [make_payload(seed, round_, writer, seq, i, len(sizes), s) for i, s in enumerate(sizes)]


def parse_payload(payload: bytes) -> tuple[int, int, int, int, int]:
    """(round, writer, seq, index, count) of a payload; ValueError when it is not one of ours."""

    if len(payload) < MIN_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than {MIN_PAYLOAD}")
    magic, round_, writer, seq, index, count, size = HEADER.unpack_from(payload)
    if magic != MAGIC or size != len(payload):
        raise ValueError(f"bad payload header {payload[:HEADER.size]!r} (len {len(payload)})")
    if crc32c.crc32c(payload[:-4]) != int.from_bytes(payload[-4:], "big"):
        raise ValueError(f"payload CRC mismatch in {(round_, writer, seq, index, count)}")
    return round_, writer, seq, index, count


# ---------------------------------------------------------------------------------------------
# The child


def _say(line: str) -> None:
    data = (line + "\n").encode()
    while data:  # a pipe write <= PIPE_BUF is atomic: lines never interleave
        data = data[os.write(1, data):]


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL us when the parent dies, so a crashed test leaves no writers."""

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class CrashPoint:
    """SIGKILLs this process at one step of the log's own I/O, by wrapping ``os`` functions.

    The point fires at its ``after``-th occurrence counted once the log is open (the first
    segment of a new log is not a roll): the ``after``-th segment roll for the roll points, the
    ``after``-th frame write for ``torn-write``. Torn writes write a seeded random prefix of the
    data through the real call, then kill: what a kill inside ``write(2)`` leaves behind.
    """

    def __init__(self, point: str, after: int, seed: int) -> None:
        self.point = point
        self.after = after
        self.rng = random.Random(f"{seed}/{point}/{after}")
        self.armed = False  # set once the log is open
        self.rolls = 0
        self.frame_writes = 0
        self.seg_fds: set[int] = set()  # segment files open for writing
        self.new_fds: dict[int, str] = {}  # the segment being created, until its first sync
        self.unwritten: set[int] = set()  # ...and until its first write (the header)
        self.pending_dir_sync: str | None = None
        self.lock = threading.RLock()
        self._real = {n: getattr(os, n) for n in ("open", "close", "write", "writev", "fsync",
                                                  "fdatasync")}
        for name in self._real:
            setattr(os, name, getattr(self, name))

    def fire(self, path: str) -> None:
        _say(f"C {self.point} {path}")
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # never returns

    def open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        p = os.fsdecode(path)
        is_seg = p.endswith(".seg") and flags & (os.O_WRONLY | os.O_RDWR)
        is_new = self.armed and is_seg and flags & os.O_CREAT and not os.path.exists(p)
        fd = self._real["open"](path, flags, mode, dir_fd=dir_fd)
        with self.lock:
            if is_seg:
                self.seg_fds.add(fd)
            if is_new:
                self.rolls += 1
                if self.rolls == self.after:
                    if self.point == "seg-created":
                        self.fire(p)
                    self.new_fds[fd] = p
                    self.unwritten.add(fd)
                    self.pending_dir_sync = p
        return fd

    def close(self, fd: int) -> None:
        with self.lock:
            self.seg_fds.discard(fd)
            self.unwritten.discard(fd)
            self.new_fds.pop(fd, None)
        self._real["close"](fd)

    def _torn(self, fd: int, data: bytes) -> bool:
        """Whether this write is the one to tear; if so, write a prefix and die."""

        with self.lock:
            if fd not in self.seg_fds:
                return False
            tear = False
            if fd in self.unwritten:
                self.unwritten.discard(fd)
                tear = self.point == "torn-header"
            elif self.armed and self.point == "torn-write" and len(data) >= 64:
                self.frame_writes += 1
                tear = self.frame_writes == self.after
            if not tear:
                return False
            n = self.rng.randint(1, len(data) - 1)
            done = 0
            while done < n:
                done += self._real["write"](fd, data[done:n])
            self.fire(f"{self.new_fds.get(fd, fd)}@{n}/{len(data)}")
        return True

    def write(self, fd: int, data: Any) -> int:
        if self._torn(fd, bytes(data)):
            return 0
        return self._real["write"](fd, data)

    def writev(self, fd: int, buffers: Any) -> int:
        buffers = list(buffers)
        if self._torn(fd, b"".join(bytes(b) for b in buffers)):
            return 0
        return self._real["writev"](fd, buffers)

    def _sync(self, name: str, fd: int) -> None:
        is_dir = False
        with self.lock:
            target = self.new_fds.pop(fd, None)
            if target is not None and self.point == "seg-fsync":
                self.fire(target)
            if self.pending_dir_sync is not None and stat.S_ISDIR(os.fstat(fd).st_mode):
                is_dir = True
                if self.point == "dir-fsync":
                    self.fire(self.pending_dir_sync)
        self._real[name](fd)
        if is_dir and self.point == "dir-synced":
            self.fire(self.pending_dir_sync or "")

    def fsync(self, fd: int) -> None:
        self._sync("fsync", fd)

    def fdatasync(self, fd: int) -> None:
        self._sync("fdatasync", fd)


def child_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="crash-campaign child: append until killed")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--policy", required=True)
    p.add_argument("--segment-bytes", type=int, required=True)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--crash-point", choices=CRASH_POINTS, default=None)
    p.add_argument("--crash-after", type=int, default=1,
                   help="fire at the N-th roll (roll points) or frame write (torn-write)")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="exit on our own after this long (the parent should have killed us)")
    a = p.parse_args(argv)
    _die_with_parent()

    crash = CrashPoint(a.crash_point, a.crash_after, a.seed) if a.crash_point else None
    from replaybuf.file_log import FileLog, FileLogConfig

    max_frame = max(MIN_PAYLOAD * 64, a.segment_bytes // 2)
    log = FileLog(a.dir, FileLogConfig(fsync=a.policy, segment_bytes=a.segment_bytes))
    if crash is not None:
        crash.armed = True
    _say(f"O {log.last_lsn} {log.durable_lsn}")

    def writer(w: int) -> None:
        pid = producer_id(a.round, w)
        seq = 0
        try:
            while True:
                seq += 1
                batch = make_batch(a.seed, a.round, w, seq, max_frame)
                _say(f"B {w} {seq}")
                r = log.append(batch, producer_id=pid, producer_seq=seq)
                _say(f"A {w} {seq} {r.first_lsn} {r.last_lsn} {int(r.durable)} {int(r.duplicate)}")
        except BaseException as e:  # report and die loudly: the parent fails the trial
            _say(f"X {w} {type(e).__name__}: {str(e)[:800]!r}")
            os._exit(EXIT_WRITER_ERROR)

    for w in range(a.writers):
        threading.Thread(target=writer, args=(w,), daemon=True).start()
    time.sleep(a.max_seconds)
    _say("X -1 max-seconds elapsed without being killed")
    os._exit(EXIT_WRITER_ERROR)


# ---------------------------------------------------------------------------------------------
# The parent


class CampaignFailure(AssertionError):
    """An invariant of the crash campaign was violated; the message says how to reproduce."""


@dataclass
class Book:
    """What the parent knows about the log: frames known present, and frames possibly written."""

    present: dict[tuple[int, int, int], tuple[int, int]] = field(default_factory=dict)
    acked: set[tuple[int, int, int]] = field(default_factory=set)
    begun: set[tuple[int, int, int]] = field(default_factory=set)
    last_lsn: int = 0


@dataclass
class TrialReport:
    seed: int
    policy: str
    directory: str
    kills: int = 0
    acks: int = 0
    records: int = 0
    in_flight_found: int = 0
    in_flight_below_last_ack: int = 0
    retries_checked: int = 0
    segments: int = 0
    crash_points_fired: list[str] = field(default_factory=list)
    dropped_segments: list[str] = field(default_factory=list)
    torn_tails: int = 0  # kills that left a partial frame or segment for recovery to cut
    seconds: float = 0.0


def _reader(stream: Any, q: queue.Queue[str | None]) -> None:
    for raw in iter(stream.readline, b""):
        q.put(raw.decode(errors="replace").rstrip("\n"))
    q.put(None)


def _fail(ctx: str, msg: str) -> None:
    raise CampaignFailure(f"{ctx}: {msg}")


def run_trial(
    directory: Path,
    *,
    seed: int,
    policy: str,
    rounds: int = 2,
    writers: int = 4,
    segment_bytes: int = 256 << 10,
    max_acks: int = 120,
    crash_point: str | None = None,
    crash_after: int = 1,
    drop_unsynced_segment: bool = False,
    python: str = sys.executable,
    timeout: float = 60.0,
) -> TrialReport:
    """Kill a writing child ``rounds`` times in one log directory, checking the log after each.

    Without ``crash_point``, each round kills the child after a random number (1..max_acks,
    from ``seed``) of acks, half the time then waits for a huge batch to begin, and sleeps a random
    0..5 ms (sometimes 0) before the kill. With ``crash_point``, the child kills itself at the
    ``crash_after``-th occurrence of that step (see `CrashPoint`). With
    ``drop_unsynced_segment`` (``dir-fsync`` only) the parent then deletes the segment whose
    directory entry was never fsynced, as a power loss may: no ack may depend on it.

    Raises:
        CampaignFailure: an invariant did not hold; the message names seed, policy and round.
    """

    from replaybuf.file_log import FileLog, FileLogConfig, verify_log

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rep = TrialReport(seed=seed, policy=policy, directory=str(directory))
    t_start = time.perf_counter()
    book = Book()
    max_frame = max(MIN_PAYLOAD * 64, segment_bytes // 2)
    cfg = FileLogConfig(fsync=policy, segment_bytes=segment_bytes)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for round_ in range(1, rounds + 1):
        ctx = (f"seed={seed} policy={policy} round={round_} crash_point={crash_point} "
               f"dir={directory}")
        rng = random.Random(f"{seed}/{policy}/{round_}/kill")
        kill_after = rng.randint(1, max_acks)
        # Half the kills wait, after kill_after acks, for a huge batch to begin: its write is
        # long, so the kill often lands inside it and leaves a torn tail.
        in_huge_write = rng.random() < 0.5
        delay = rng.uniform(0, 0.005) if in_huge_write or rng.random() < 0.5 else 0.0
        huge_begun = False
        cmd = [python, str(HERE), "--dir", str(directory), "--policy", policy,
               "--segment-bytes", str(segment_bytes), "--writers", str(writers),
               "--seed", str(seed), "--round", str(round_)]
        if crash_point:
            cmd += ["--crash-point", crash_point, "--crash-after", str(crash_after)]
        stderr_path = directory.parent / f"{directory.name}.child{round_}.stderr"
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=stderr, env=env)
        q: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True)
        reader.start()
        acks_this_round = 0
        fired: str | None = None
        killed = False
        eof = False
        deadline = time.monotonic() + timeout

        def handle(line: str) -> None:
            nonlocal acks_this_round, fired, huge_begun
            kind, _, rest = line.partition(" ")
            f = rest.split()
            if kind == "O":
                if int(f[0]) != book.last_lsn:
                    _fail(ctx, f"child recovered last_lsn={f[0]}, parent left {book.last_lsn}")
            elif kind == "B":
                book.begun.add((round_, int(f[0]), int(f[1])))
                if acks_this_round >= kill_after and sum(
                        batch_sizes(seed, round_, int(f[0]), int(f[1]), max_frame)) > 1 << 20:
                    huge_begun = True
            elif kind == "A":
                w, s, first, last, durable, dup = map(int, f)
                key = (round_, w, s)
                n = len(batch_sizes(seed, round_, w, s, max_frame))
                if last - first + 1 != n or dup:
                    _fail(ctx, f"ack {line!r}: expected {n} records, duplicate=0")
                if policy in ("always", "group") and not durable:
                    _fail(ctx, f"ack {line!r} under {policy} must say durable=1")
                book.acked.add(key)
                book.present[key] = (first, last)
                acks_this_round += 1
            elif kind == "C":
                fired = rest
            elif kind == "X":
                _fail(ctx, f"child error: {rest}")

        try:
            while not eof:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    _fail(ctx, f"no progress after {timeout} s ({acks_this_round} acks)")
                try:
                    line = q.get(timeout=remaining)
                except queue.Empty:
                    continue
                if line is None:
                    eof = True
                    break
                handle(line)
                if (not crash_point and not killed and acks_this_round >= kill_after
                        and (huge_begun or not in_huge_write)):
                    if delay:
                        time.sleep(delay)  # a random moment, not a synchronisation
                    proc.kill()
                    killed = True
            proc.wait(timeout=timeout)
            reader.join(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != -signal.SIGKILL:
            err = stderr_path.read_text(errors="replace")[-3000:]
            _fail(ctx, f"child exited with {proc.returncode}, not SIGKILL; stderr:\n{err}")
        if crash_point and fired is None:
            _fail(ctx, "the crash point never fired")
        if fired:
            rep.crash_points_fired.append(fired)
        rep.kills += 1
        rep.acks += acks_this_round

        if drop_unsynced_segment and fired:
            seg = Path(fired.split(" ", 1)[1])
            if seg.exists():
                seg.unlink()
                rep.dropped_segments.append(seg.name)

        before = verify_log(directory)
        if not before.ok:
            _fail(ctx, f"verify_log right after the kill: {before.problems}")
        rep.torn_tails += bool(before.warnings)  # a torn tail or torn trailing segment
        with FileLog(directory, cfg) as log:
            _check_recovered(log, book, seed, round_, max_frame, rng, rep, ctx)
        report = verify_log(directory)
        if not report.ok:
            _fail(ctx, f"verify_log after recovery: {report.problems}")
        with FileLog(directory, cfg) as log:
            if log.last_lsn != book.last_lsn:
                _fail(ctx, f"reopened last_lsn={log.last_lsn}, expected {book.last_lsn}")
        rep.segments = len(list(directory.glob("*.seg")))
    rep.records = book.last_lsn
    rep.seconds = time.perf_counter() - t_start
    return rep


def _check_recovered(log: Any, book: Book, seed: int, round_: int, max_frame: int,
                     rng: random.Random, rep: TrialReport, ctx: str) -> None:
    """The oracle: the recovered log holds exactly the frames it may hold, and works again."""

    records = list(log.read())
    lsns = [r.lsn for r in records]
    if lsns != list(range(1, len(records) + 1)):
        gaps = [(a, b) for a, b in zip(lsns, lsns[1:]) if b != a + 1][:5]
        _fail(ctx, f"LSNs not contiguous from 1: first={lsns[:1]} gaps={gaps}")
    if log.last_lsn != len(records):
        _fail(ctx, f"last_lsn={log.last_lsn} but {len(records)} records read")

    # Split the records into frames by their self-describing headers.
    frames: dict[tuple[int, int, int], tuple[int, int]] = {}
    i = 0
    while i < len(records):
        try:
            r0, w, s, idx, count = parse_payload(records[i].payload)
        except ValueError as e:
            _fail(ctx, f"LSN {records[i].lsn}: {e}")
        key = (r0, w, s)
        if idx != 0 or i + count > len(records):
            _fail(ctx, f"LSN {records[i].lsn}: frame {key} starts at index {idx} of {count}")
        if key in frames:
            _fail(ctx, f"frame {key} appears twice: LSN {frames[key][0]} and {records[i].lsn}")
        if w == PARENT_WRITER:
            expected = _parent_batch(seed, r0, s)
        else:
            expected = make_batch(seed, r0, w, s, max_frame)
        got = records[i:i + count]
        if [r.payload for r in got] != expected:
            _fail(ctx, f"frame {key} at LSN {got[0].lsn}: payloads differ from what was appended")
        pid = producer_id(r0, w)
        for r in got:
            if r.producer_id != pid or r.producer_seq != s:
                _fail(ctx, f"LSN {r.lsn}: producer ({r.producer_id!r}, {r.producer_seq}) "
                           f"!= ({pid!r}, {s})")
            if r.timestamp_ms != got[0].timestamp_ms:
                _fail(ctx, f"LSN {r.lsn}: timestamp differs within frame {key}")
        frames[key] = (got[0].lsn, got[-1].lsn)
        i += count

    for key, rng_ in book.present.items():
        if frames.get(key) != rng_:
            _fail(ctx, f"acknowledged/known frame {key} at LSNs {rng_} is "
                       f"{'at ' + str(frames[key]) if key in frames else 'missing'}")
    last_ack = max((book.present[k][1] for k in book.acked if k[0] == round_), default=0)
    for key, rng_ in frames.items():
        if key in book.present:
            continue
        if key not in book.begun:
            _fail(ctx, f"frame {key} at LSNs {rng_} was never appended by anyone")
        rep.in_flight_found += 1
        if rng_[1] < last_ack:
            rep.in_flight_below_last_ack += 1  # written in a group with later acks, kill before ack
    # A writer's batches are sequential, so their LSNs rise with seq.
    per_writer: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for (r0, w, s), (first, _) in frames.items():
        per_writer.setdefault((r0, w), []).append((s, first))
    for key, seqs in per_writer.items():
        seqs.sort()
        if [f for _, f in seqs] != sorted(f for _, f in seqs):
            _fail(ctx, f"writer {key}: batches out of seq order in the log: {seqs[:10]}")
        if key[1] != PARENT_WRITER and [s for s, _ in seqs] != list(range(1, len(seqs) + 1)):
            _fail(ctx, f"writer {key}: seqs present {[s for s, _ in seqs][:20]}... have a hole")
    book.present = dict(frames)
    book.last_lsn = len(records)

    # Idempotent retries, as a client that lost its ack would send them.
    this_round = sorted(k for k in frames if k[0] == round_ and k[1] != PARENT_WRITER)
    latest: dict[int, tuple[int, int, int]] = {}
    for k in this_round:
        latest[k[1]] = k
    retry = list(latest.values())
    # Plus one earlier frame of any round, within the log's dedup window (older sequences of a
    # producer are rejected by design, not deduplicated).
    window = getattr(getattr(log, "config", None), "dedup_window", None) or 2**63
    newest: dict[tuple[int, int], int] = {}
    for r0, w, s in frames:
        newest[(r0, w)] = max(s, newest.get((r0, w), 0))
    older = sorted(k for k in frames if k[2] > newest[k[:2]] - window)
    if older:
        retry.append(rng.choice(older))
    for key in retry:
        r0, w, s = key
        batch = _parent_batch(seed, r0, s) if w == PARENT_WRITER else make_batch(
            seed, r0, w, s, max_frame)
        res = log.append(batch, producer_id=producer_id(r0, w), producer_seq=s)
        if not res.duplicate or (res.first_lsn, res.last_lsn) != frames[key]:
            _fail(ctx, f"retry of {key} returned {res}, expected duplicate of {frames[key]}")
        rep.retries_checked += 1
    # In-flight batches that did not make it: a retry appends them now, after everything else.
    lost = sorted(k for k in book.begun - set(frames) if k[0] == round_)
    for key in lost:
        r0, w, s = key
        batch = make_batch(seed, r0, w, s, max_frame)
        res = log.append(batch, producer_id=producer_id(r0, w), producer_seq=s)
        if res.duplicate or res.first_lsn != book.last_lsn + 1 or res.count != len(batch):
            _fail(ctx, f"retry of lost in-flight {key} returned {res}, "
                       f"expected new LSNs from {book.last_lsn + 1}")
        book.present[key] = (res.first_lsn, res.last_lsn)
        book.last_lsn = res.last_lsn
        rep.retries_checked += 1
    # The log takes new appends, continuing the sequence.
    batch = _parent_batch(seed, round_, 1)
    res = log.append(batch, producer_id=producer_id(round_, PARENT_WRITER), producer_seq=1)
    if res.duplicate or res.first_lsn != book.last_lsn + 1 or res.count != len(batch):
        _fail(ctx, f"append after recovery returned {res}, expected LSNs from {book.last_lsn + 1}")
    book.present[(round_, PARENT_WRITER, 1)] = (res.first_lsn, res.last_lsn)
    book.last_lsn = res.last_lsn
    if log.last_lsn != book.last_lsn:
        _fail(ctx, f"last_lsn={log.last_lsn} after appends, expected {book.last_lsn}")
    book.acked |= set(book.present)
    book.begun.clear()


def _parent_batch(seed: int, round_: int, seq: int) -> list[bytes]:
    return [make_payload(seed, round_, PARENT_WRITER, seq, i, 3, 100 + i) for i in range(3)]


if __name__ == "__main__":
    sys.exit(child_main())
