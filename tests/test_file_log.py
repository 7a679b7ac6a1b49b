"""FileLog: appends, reads, fsync policies, group commit, idempotent retries, follow, misuse."""

from __future__ import annotations

import errno
import os
import queue
import random
import threading
import time

import pytest

from replaybuf import file_log as file_log_module
from replaybuf.errors import (
    ClosedError,
    DurabilityError,
    FailedPreconditionError,
    InvalidArgumentError,
)
from replaybuf.file_log import FileLog, FileLogConfig
from replaybuf.log import FSYNC_POLICIES, AppendResult

PID_A = bytes(range(1, 17))
PID_B = bytes(range(17, 33))


def payload(lsn_hint: int, size: int = 40) -> bytes:
    return (f"rec-{lsn_hint}-".encode() * size)[:size]


def read_all(log: FileLog, from_lsn: int = 1, to_lsn: int | None = None) -> list[tuple[int, bytes]]:
    return [(r.lsn, r.payload) for r in log.read(from_lsn, to_lsn)]


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def test_appends_read_back_with_gap_free_lsns_starting_at_one(tmp_path):
    with FileLog(tmp_path / "log") as log:
        assert (log.last_lsn, log.durable_lsn) == (0, 0)
        a = log.append([b"one"])
        b = log.append([b"two", b"", b"four"])
        assert (a.first_lsn, a.last_lsn, a.count) == (1, 1, 1)
        assert (b.first_lsn, b.last_lsn, b.count) == (2, 4, 3)
        assert read_all(log) == [(1, b"one"), (2, b"two"), (3, b""), (4, b"four")]
        rec = next(iter(log.read(2)))
        assert rec.producer_id == bytes(16) and rec.producer_seq == 0
        assert abs(rec.timestamp_ms - time.time() * 1000) < 60_000


def test_reads_honour_bounds_and_never_go_past_the_end(tmp_path):
    with FileLog(tmp_path) as log:
        for i in range(1, 11):
            log.append([payload(i)])
        assert [lsn for lsn, _ in read_all(log, 3, 5)] == [3, 4, 5]
        assert [lsn for lsn, _ in read_all(log, 9)] == [9, 10]
        assert read_all(log, 11) == []
        assert read_all(log, 7, 6) == []
        assert [lsn for lsn, _ in read_all(log, 10, 1000)] == [10]
        snapshot = log.read(1)
        log.append([b"later"])
        assert len(list(snapshot)) == 10  # the range is fixed when read() is called


def test_lsns_stay_gap_free_across_segment_rolls_and_reopen(tmp_path):
    cfg = FileLogConfig(segment_bytes=4096, fsync="none")
    rng = random.Random(7)
    expected: list[bytes] = []
    with FileLog(tmp_path, cfg) as log:
        for _ in range(120):
            batch = [rng.randbytes(rng.randrange(0, 300)) for _ in range(rng.randrange(1, 4))]
            ack = log.append(batch)
            assert ack.first_lsn == len(expected) + 1
            expected.extend(batch)
    segments = sorted(p.name for p in tmp_path.glob("*.seg"))
    assert len(segments) > 5
    assert all(os.path.getsize(tmp_path / s) <= 4096 for s in segments)
    with FileLog(tmp_path, cfg) as log:
        assert log.last_lsn == len(expected)
        assert [p for _, p in read_all(log)] == expected
        for base in (int(s[:20]) for s in segments):
            for start in (base - 1, base, base + 1):
                if 1 <= start <= len(expected):
                    got = read_all(log, start, start + 5)
                    stop = min(start + 5, len(expected))
                    assert got == [(lsn, expected[lsn - 1]) for lsn in range(start, stop + 1)]
        ack = log.append([b"after-reopen"])
        assert ack.first_lsn == len(expected) + 1


def test_frame_larger_than_a_segment_gets_its_own_segment(tmp_path):
    with FileLog(tmp_path, FileLogConfig(segment_bytes=4096)) as log:
        log.append([b"small"])
        big = os.urandom(100_000)
        ack = log.append([big, b"tail"])
        log.append([b"after"])
        assert read_all(log, 2) == [(2, big), (3, b"tail"), (4, b"after")]
        assert ack.last_lsn == 3
    assert len(list(tmp_path.glob("*.seg"))) == 3


def test_large_and_many_record_frames_round_trip(tmp_path):
    big = [os.urandom(200_000), os.urandom(70_000), b"x"]
    many = [i.to_bytes(4, "big") * (i % 5) for i in range(3000)]  # more records than IOV_MAX
    views = [memoryview(b"abc"), bytearray(b"defg")]
    with FileLog(tmp_path) as log:
        log.append(big)
        log.append(many)
        log.append(views)
        got = [p for _, p in read_all(log)]
    assert got == big + many + [b"abc", b"defg"]


@pytest.mark.parametrize("policy", FSYNC_POLICIES)
def test_each_fsync_policy_reports_durability_truthfully(tmp_path, policy):
    with FileLog(tmp_path, FileLogConfig(fsync=policy, interval=0.01)) as log:
        ack = log.append([b"a", b"b"])
        if policy in ("always", "group"):
            assert ack.durable is True
            assert log.durable_lsn == 2
        else:
            assert ack.durable is False
        if policy == "interval":
            assert wait_until(lambda: log.durable_lsn == 2)
        if policy == "none":
            time.sleep(0.02)
            assert log.durable_lsn == 0
        assert log.sync() == 2
        assert log.durable_lsn == log.last_lsn == 2


def test_durable_lsn_counts_everything_found_on_reopen(tmp_path):
    with FileLog(tmp_path, FileLogConfig(fsync="none")) as log:
        log.append([b"a", b"b", b"c"])
    with FileLog(tmp_path, FileLogConfig(fsync="none")) as log:
        assert log.durable_lsn == log.last_lsn == 3


def test_group_commit_gives_concurrent_writers_distinct_contiguous_ranges(tmp_path, monkeypatch):
    syncs = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd):
        syncs.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    threads, per_thread = 12, 15
    results: dict[int, list[tuple[AppendResult, list[bytes]]]] = {t: [] for t in range(threads)}
    errors = []
    cfg = FileLogConfig(fsync="group", group_window=0.005, segment_bytes=16384)
    with FileLog(tmp_path, cfg) as log:
        start = threading.Barrier(threads)

        def writer(t: int) -> None:
            try:
                start.wait()
                for i in range(per_thread):
                    batch = [f"t{t}-i{i}-r{r}".encode() for r in range(1 + (t + i) % 3)]
                    ack = log.append(batch)
                    assert ack.durable and log.durable_lsn >= ack.last_lsn
                    results[t].append((ack, batch))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert not errors
        acks = sorted((ack for r in results.values() for ack, _ in r), key=lambda a: a.first_lsn)
        next_lsn = 1
        for ack in acks:
            assert ack.first_lsn == next_lsn
            next_lsn = ack.last_lsn + 1
        assert log.last_lsn == next_lsn - 1
        by_lsn = dict(read_all(log))
        for t, items in results.items():
            for ack, batch in items:
                assert [by_lsn[lsn] for lsn in range(ack.first_lsn, ack.last_lsn + 1)] == batch
            firsts = [ack.first_lsn for ack, _ in items]
            assert firsts == sorted(firsts)  # one writer's appends stay in its order
    appends = threads * per_thread
    assert len(syncs) < appends, f"{len(syncs)} fdatasyncs for {appends} appends: no grouping"


def test_group_writes_of_many_frames_survive_short_writevs(tmp_path, monkeypatch):
    # A group commit writes every queued frame with one writev; a short writev (a full disk
    # nearly reached, a signal) must be finished from where it stopped, mid-buffer included.
    real_writev = os.writev
    short = []

    def short_writev(fd, buffers):
        data = b"".join(bytes(b) for b in buffers)
        if len(data) < 3:
            return real_writev(fd, [data])
        short.append(len(data))
        return real_writev(fd, [data[: len(data) // 3]])

    monkeypatch.setattr(os, "writev", short_writev)
    threads, per_thread = 8, 12
    results: dict[int, list[tuple[AppendResult, list[bytes]]]] = {t: [] for t in range(threads)}
    errors = []
    with FileLog(tmp_path, FileLogConfig(fsync="group")) as log:
        start = threading.Barrier(threads)

        def writer(t: int) -> None:
            try:
                start.wait()
                for i in range(per_thread):
                    size = 70_000 if (t + i) % 5 == 0 else 50 + t  # large frames: writev too
                    batch = [payload(t * 100 + i, size), payload(i, 3000 if size > 999 else 7)]
                    results[t].append((log.append(batch), batch))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert not errors
        by_lsn = dict(read_all(log))
    assert short, "no writev was cut short: the test did not exercise the resume path"
    assert sorted(by_lsn) == list(range(1, threads * per_thread * 2 + 1))
    for items in results.values():
        for ack, batch in items:
            assert [by_lsn[lsn] for lsn in range(ack.first_lsn, ack.last_lsn + 1)] == batch
    monkeypatch.undo()
    with FileLog(tmp_path) as again:  # recovery agrees: every frame whole, CRCs valid
        assert dict(read_all(again)) == by_lsn


def test_acks_are_plain_append_results_equal_to_the_constructors(tmp_path):
    # FileLog builds its acks without the dataclass __init__ (replaybuf.log.make_ack).
    with FileLog(tmp_path) as log:
        ack = log.append([b"a", b"b"], producer_id=PID_A, producer_seq=1)
        retry = log.append([b"a", b"b"], producer_id=PID_A, producer_seq=1)
    expected = AppendResult(1, 2, durable=True)
    assert type(ack) is AppendResult and ack == expected and hash(ack) == hash(expected)
    assert repr(ack) == repr(expected) and ack.count == 2
    assert retry == AppendResult(1, 2, durable=True, duplicate=True)
    with pytest.raises(AttributeError):
        ack.first_lsn = 5  # still frozen


def test_retry_of_a_producer_sequence_returns_the_original_lsns(tmp_path):
    with FileLog(tmp_path) as log:
        first = log.append([b"a", b"b"], producer_id=PID_A, producer_seq=1)
        log.append([b"c"], producer_id=PID_B, producer_seq=1)
        retry = log.append([b"a", b"b"], producer_id=PID_A, producer_seq=1)
        assert (retry.first_lsn, retry.last_lsn) == (first.first_lsn, first.last_lsn) == (1, 2)
        assert retry.duplicate and not first.duplicate and retry.durable
        assert log.last_lsn == 3
        rec = next(iter(log.read(1)))
        assert (rec.producer_id, rec.producer_seq) == (PID_A, 1)
    with FileLog(tmp_path) as log:  # the dedup table is rebuilt from the log
        again = log.append([b"a", b"b"], producer_id=PID_A, producer_seq=1)
        assert again.duplicate and (again.first_lsn, again.last_lsn) == (1, 2)
        assert log.append([b"c"], producer_id=PID_B, producer_seq=1).duplicate
        fresh = log.append([b"d"], producer_id=PID_A, producer_seq=2)
        assert not fresh.duplicate and fresh.first_lsn == 4
        assert log.last_lsn == 4


def test_dedup_window_accepts_out_of_order_sequences_and_rejects_too_old_ones(tmp_path):
    with FileLog(tmp_path, FileLogConfig(dedup_window=4)) as log:
        for seq in (1, 2, 3, 5, 6, 8):
            log.append([b"x"], producer_id=PID_A, producer_seq=seq)
        late = log.append([b"seven"], producer_id=PID_A, producer_seq=7)  # never appended
        assert not late.duplicate and late.first_lsn == 7
        assert log.append([b"x"], producer_id=PID_A, producer_seq=5).duplicate
        with pytest.raises(InvalidArgumentError, match=r"producer_seq=4 .*older than the dedup"):
            log.append([b"x"], producer_id=PID_A, producer_seq=4)
        with pytest.raises(InvalidArgumentError, match="producer_seq=8 .*already used for a batch"):
            log.append([b"x", b"y"], producer_id=PID_A, producer_seq=8)
        assert log.last_lsn == 7
    with FileLog(tmp_path, FileLogConfig(dedup_window=4)) as log:
        with pytest.raises(InvalidArgumentError, match="older than the dedup window"):
            log.append([b"x"], producer_id=PID_A, producer_seq=3)


def test_least_recently_used_producers_are_forgotten(tmp_path):
    with FileLog(tmp_path, FileLogConfig(dedup_producers=2)) as log:
        log.append([b"a"], producer_id=PID_A, producer_seq=1)
        log.append([b"b"], producer_id=PID_B, producer_seq=1)
        log.append([b"c"], producer_id=bytes(range(40, 56)), producer_seq=1)
        assert log.append([b"b"], producer_id=PID_B, producer_seq=1).duplicate
        assert not log.append([b"a"], producer_id=PID_A, producer_seq=1).duplicate


def test_follow_yields_existing_records_then_new_appends(tmp_path):
    got: queue.Queue = queue.Queue()
    stop = threading.Event()
    with FileLog(tmp_path) as log:
        log.append([b"r1", b"r2"])

        def follower() -> None:
            for rec in log.follow(2, stop=stop, poll=0.5):
                got.put((rec.lsn, rec.payload))

        t = threading.Thread(target=follower)
        t.start()
        assert got.get(timeout=5) == (2, b"r2")
        log.append([b"r3"])
        assert got.get(timeout=5) == (3, b"r3")
        log.append([b"r4", b"r5"])
        assert [got.get(timeout=5) for _ in range(2)] == [(4, b"r4"), (5, b"r5")]
        stop.set()
        t.join(timeout=5)
        assert not t.is_alive()


def test_follow_of_durable_records_waits_for_the_sync(tmp_path):
    with FileLog(tmp_path, FileLogConfig(fsync="none")) as log:
        log.append([b"a"])
        stop = threading.Event()
        stop.set()  # an already-set stop ends the iteration at once
        assert [r.lsn for r in log.follow(1, stop=stop, durable_only=False)] == []
        unsynced = log.follow(1, durable_only=False, poll=0.01)
        assert next(unsynced).payload == b"a"
        durable = log.follow(1, poll=0.01)
        got: queue.Queue = queue.Queue()
        t = threading.Thread(target=lambda: got.put(next(durable).payload))
        t.start()
        with pytest.raises(queue.Empty):
            got.get(timeout=0.05)
        log.sync()
        assert got.get(timeout=5) == b"a"
        t.join()


def test_follow_ends_when_the_log_is_closed(tmp_path):
    log = FileLog(tmp_path)
    log.append([b"a"])
    done = threading.Event()
    seen = []

    def follower() -> None:
        seen.extend(r.lsn for r in log.follow(1, poll=10))
        done.set()

    t = threading.Thread(target=follower)
    t.start()
    assert wait_until(lambda: seen == [1])
    log.close()
    assert done.wait(5)
    t.join()


def test_reader_never_sees_a_partial_frame_while_writers_append(tmp_path):
    with FileLog(tmp_path, FileLogConfig(fsync="none", segment_bytes=8192)) as log:
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set() and i < 400:
                log.append([f"{i}-{k}".encode() * 10 for k in range(5)])
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        try:
            for _ in range(30):
                lsns = [r.lsn for r in log.read()]
                assert len(lsns) % 5 == 0
                assert lsns == list(range(1, len(lsns) + 1))
        finally:
            stop.set()
            t.join()


def test_close_is_idempotent_and_later_calls_raise_closed_error(tmp_path):
    log = FileLog(tmp_path)
    log.append([b"a"])
    log.close()
    log.close()
    calls = [
        lambda: log.append([b"b"]),
        lambda: list(log.read()),
        lambda: list(log.follow()),
        log.sync,
        lambda: log.last_lsn,
        lambda: log.durable_lsn,
        lambda: log.log_id,
    ]
    for call in calls:
        with pytest.raises(ClosedError, match="closed"):
            call()
    with FileLog(tmp_path) as again:  # closing released the directory lock
        assert again.last_lsn == 1


def test_log_id_is_a_uuid_fixed_at_creation(tmp_path):
    with FileLog(tmp_path) as log:
        log_id = log.log_id
        assert len(log_id) == 36
    with FileLog(tmp_path) as log:
        assert log.log_id == log_id
    with FileLog(tmp_path / "other") as other:
        assert other.log_id != log_id


def test_a_directory_is_opened_by_one_log_at_a_time(tmp_path):
    with FileLog(tmp_path):
        with pytest.raises(FailedPreconditionError, match="already open"):
            FileLog(tmp_path)


@pytest.mark.parametrize(
    "payloads, match",
    [
        ([], "empty"),
        (b"abc", "sequence of records"),
        ("abc", "sequence of records"),
        ([b"ok", "text"], r"payloads\[1\] is a str"),
        ([b"ok", 17], r"payloads\[1\] is a int"),
        ([memoryview(bytes(8))[::2]], "not contiguous"),
    ],
)
def test_bad_payloads_are_rejected_and_nothing_is_written(tmp_path, payloads, match):
    with FileLog(tmp_path) as log:
        with pytest.raises(InvalidArgumentError, match=match):
            log.append(payloads)
        assert log.last_lsn == 0
        assert log.append([b"still works"]).first_lsn == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"producer_id": PID_A}, "give both"),
        ({"producer_seq": 1}, "give both"),
        ({"producer_id": b"short", "producer_seq": 1}, "16 bytes"),
        ({"producer_id": "x" * 16, "producer_seq": 1}, "16 bytes"),
        ({"producer_id": bytes(16), "producer_seq": 1}, "all zero"),
        ({"producer_id": PID_A, "producer_seq": 0}, "producer_seq=0"),
        ({"producer_id": PID_A, "producer_seq": -3}, "producer_seq=-3"),
        ({"producer_id": PID_A, "producer_seq": True}, "producer_seq=True"),
        ({"producer_id": PID_A, "producer_seq": 2**64}, "producer_seq="),
    ],
)
def test_bad_producer_ids_and_sequences_are_rejected(tmp_path, kwargs, match):
    with FileLog(tmp_path) as log:
        with pytest.raises(InvalidArgumentError, match=match):
            log.append([b"x"], **kwargs)
        assert log.last_lsn == 0


def test_bad_read_and_follow_arguments_are_rejected(tmp_path):
    with FileLog(tmp_path) as log:
        with pytest.raises(InvalidArgumentError, match="from_lsn=0"):
            log.read(0)
        with pytest.raises(InvalidArgumentError, match="to_lsn='5'"):
            log.read(1, "5")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="from_lsn=-1"):
            log.follow(-1)
        with pytest.raises(InvalidArgumentError, match="poll=0"):
            log.follow(1, poll=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fsync": "sometimes"}, "fsync='sometimes'"),
        ({"group_window": -0.1}, "group_window=-0.1"),
        ({"group_window": float("nan")}, "group_window=nan"),
        ({"interval": 0}, "interval=0"),
        ({"segment_bytes": 100}, "segment_bytes=100"),
        ({"segment_bytes": 4096.0}, "segment_bytes=4096.0"),
        ({"dedup_window": 0}, "dedup_window=0"),
        ({"dedup_producers": True}, "dedup_producers=True"),
        ({"on_fatal": 3}, "on_fatal=3"),
    ],
)
def test_bad_config_values_are_named_in_the_error(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        FileLogConfig(**kwargs)


def test_fsync_failure_is_fatal_and_never_retried(tmp_path, monkeypatch):
    fatal = []
    log = FileLog(tmp_path, FileLogConfig(on_fatal=fatal.append))
    log.append([b"durable"])
    calls = []

    def failing_fdatasync(fd):
        calls.append(fd)
        raise OSError(errno.EIO, "injected I/O error")

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    with pytest.raises(DurabilityError, match="injected I/O error"):
        log.append([b"lost?"])
    assert len(calls) == 1
    assert len(fatal) == 1 and isinstance(fatal[0], DurabilityError)
    with pytest.raises(DurabilityError, match="failed earlier"):
        log.append([b"more"])
    with pytest.raises(DurabilityError):
        log.sync()
    with pytest.raises(DurabilityError):
        list(log.read())
    assert len(calls) == 1 and len(fatal) == 1
    log.close()  # releases the files without another fsync
    assert len(calls) == 1
    monkeypatch.undo()
    with FileLog(tmp_path) as again:  # the unacknowledged frame may or may not be there
        assert read_all(again)[0] == (1, b"durable")
        assert again.last_lsn in (1, 2)


def test_write_error_truncates_the_partial_frame_and_fails_the_log(tmp_path, monkeypatch):
    log = FileLog(tmp_path)
    log.append([b"kept"])
    segment = next(tmp_path.glob("*.seg"))
    size = segment.stat().st_size
    real_write_all = file_log_module._write_all

    def half_then_enospc(fd, parts, total):
        os.write(fd, bytes(parts[0])[: total // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_log_module, "_write_all", half_then_enospc)
    with pytest.raises(DurabilityError, match=f"truncated .* back to {size} bytes"):
        log.append([b"x" * 500])
    assert segment.stat().st_size == size
    monkeypatch.setattr(file_log_module, "_write_all", real_write_all)
    with pytest.raises(DurabilityError):
        log.append([b"y"])
    log.close()
    with FileLog(tmp_path) as again:
        assert read_all(again) == [(1, b"kept")]
        assert again.append([b"next"]).first_lsn == 2


@pytest.mark.parametrize("policy", ["group", "interval"])
def test_close_during_concurrent_appends_keeps_every_acknowledged_frame(tmp_path, policy):
    log = FileLog(tmp_path, FileLogConfig(fsync=policy, interval=0.001, segment_bytes=8192))
    acked: list[AppendResult] = []
    unexpected = []
    started = threading.Barrier(7)

    def writer(t: int) -> None:
        started.wait()
        for i in range(10_000):
            try:
                acked.append(log.append([f"{t}-{i}".encode() * 8]))
            except ClosedError:
                return
            except BaseException as exc:  # pragma: no cover - reported below
                unexpected.append(exc)
                return

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
    for w in workers:
        w.start()
    started.wait()
    assert wait_until(lambda: len(acked) >= 50)
    log.close()
    for w in workers:
        w.join(timeout=10)
        assert not w.is_alive()
    assert not unexpected
    with FileLog(tmp_path) as again:
        assert again.last_lsn >= max(a.last_lsn for a in acked)
        assert [r.lsn for r in again.read()] == list(range(1, again.last_lsn + 1))


def test_failed_group_fsync_fails_every_waiting_writer_and_reports_once(tmp_path, monkeypatch):
    fatal = []
    log = FileLog(tmp_path, FileLogConfig(fsync="group", on_fatal=fatal.append))
    log.append([b"before"])
    gate = threading.Event()
    calls = []

    def slow_failing_fdatasync(fd):
        calls.append(fd)
        gate.wait(5)  # let the other writers queue behind this sync
        raise OSError(errno.EIO, "injected I/O error")

    monkeypatch.setattr(os, "fdatasync", slow_failing_fdatasync)
    outcomes: queue.Queue = queue.Queue()

    def writer(i: int) -> None:
        try:
            log.append([f"w{i}".encode()])
            outcomes.put("acked")
        except DurabilityError:
            outcomes.put("DurabilityError")

    workers = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for w in workers:
        w.start()
    assert wait_until(lambda: calls)
    time.sleep(0.05)
    gate.set()
    for w in workers:
        w.join(timeout=10)
    assert sorted(outcomes.get(timeout=1) for _ in workers) == ["DurabilityError"] * 6
    assert len(fatal) == 1
    assert len(calls) <= 2  # the failing fdatasync is never retried
    log.close()


def test_failed_background_fsync_under_interval_fails_the_log(tmp_path, monkeypatch):
    fatal = threading.Event()
    log = FileLog(tmp_path, FileLogConfig(fsync="interval", interval=0.005,
                                          on_fatal=lambda exc: fatal.set()))

    def failing_fdatasync(fd):
        raise OSError(errno.EIO, "injected I/O error")

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    assert log.append([b"x"]).durable is False
    assert fatal.wait(5)
    with pytest.raises(DurabilityError, match="injected I/O error"):
        log.append([b"y"])
    log.close()


def test_failed_fsync_on_close_raises(tmp_path, monkeypatch):
    log = FileLog(tmp_path, FileLogConfig(fsync="none"))
    log.append([b"x"])
    def failing_fdatasync(fd):
        raise OSError(errno.EIO, "boom")

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    with pytest.raises(DurabilityError, match="on close"):
        log.close()
    log.close()  # still idempotent
