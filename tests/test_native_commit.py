"""The native group committer (`replaybuf.native_commit`) under FileLog's ``group`` policy:
durable acks under many writers, rolls while the loop syncs, close with waiters, a failing
fdatasync in the loop, a lone writer, the Python twin of the loop, and interpreter exit."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from replaybuf.errors import ClosedError, DurabilityError, InvalidArgumentError
from replaybuf.file_log import FileLog, FileLogConfig
from replaybuf.log import AppendResult
from replaybuf.native_commit import NativeCommit, kernel_ready, native_unavailable

REPO = Path(__file__).resolve().parent.parent
NO_JIT = os.environ.get("NUMBA_DISABLE_JIT") == "1"

pytestmark = pytest.mark.skipif(native_unavailable() is not None,
                                reason=f"no native committer here: {native_unavailable()}")


@pytest.fixture(scope="module", autouse=True)
def compiled_loop() -> None:
    # numba is a dependency: the loop must compile (or load from its cache) here.
    assert kernel_ready(300) is not NO_JIT


def committer(log: FileLog) -> NativeCommit:
    commit = log._commit  # noqa: SLF001 - the tests check which syncs the loop ran
    assert isinstance(commit, NativeCommit)
    return commit


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def hammer(log: FileLog, writers: int, per_writer: int, size: int = 100,
           on_ack=None) -> tuple[dict[int, list[tuple[AppendResult, bytes]]], list[BaseException]]:
    """``writers`` threads append ``per_writer`` records each; their acks and errors."""

    acks: dict[int, list[tuple[AppendResult, bytes]]] = {t: [] for t in range(writers)}
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def writer(t: int) -> None:
        try:
            start.wait()
            for i in range(per_writer):
                data = (f"w{t}-{i}-".encode() * size)[:size]
                ack = log.append([data])
                acks[t].append((ack, data))
                if on_ack is not None:
                    on_ack(ack)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(writers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
        assert not th.is_alive(), "a writer hung"
    return acks, errors


def test_many_writers_get_only_durable_acks_and_contiguous_lsns(tmp_path):
    log = FileLog(tmp_path, FileLogConfig(fsync="group"))
    commit = committer(log)
    seen_durable: list[int] = []
    violations: list[str] = []

    def on_ack(ack: AppendResult) -> None:
        durable = log.durable_lsn
        if not ack.durable or durable < ack.last_lsn:
            violations.append(f"ack {ack} while durable_lsn={durable}")

    stop = threading.Event()

    def watch() -> None:  # durable_lsn never goes backwards
        while not stop.wait(0.0002):
            seen_durable.append(log.durable_lsn)

    watcher = threading.Thread(target=watch)
    watcher.start()
    acks, errors = hammer(log, writers=16, per_writer=150, on_ack=on_ack)
    stop.set()
    watcher.join()
    assert not errors and not violations
    assert all(a <= b for a, b in zip(seen_durable, seen_durable[1:]))
    flat = sorted((ack for items in acks.values() for ack, _ in items), key=lambda a: a.first_lsn)
    assert [a.first_lsn for a in flat] == list(range(1, 16 * 150 + 1))
    assert log.durable_lsn == log.last_lsn == 16 * 150
    assert commit.loop_syncs > 0, "the loop never synced: the test did not exercise it"
    assert commit.compiled is not NO_JIT
    by_lsn = {r.lsn: r.payload for r in log.read()}
    for items in acks.values():
        for ack, data in items:
            assert by_lsn[ack.first_lsn] == data
    log.close()
    with FileLog(tmp_path) as again:
        assert [r.lsn for r in again.read()] == list(range(1, 16 * 150 + 1))


def test_segments_roll_while_the_loop_syncs_and_no_fd_leaks(tmp_path):
    before = fd_count()
    log = FileLog(tmp_path, FileLogConfig(fsync="group", segment_bytes=4096))
    commit = committer(log)
    acks, errors = hammer(log, writers=12, per_writer=120, size=300)
    assert not errors
    segments = sorted(tmp_path.glob("*.seg"))
    assert len(segments) > 20, "too few rolls to test rolling under the loop"
    assert commit.loop_syncs > 0
    assert log.durable_lsn == log.last_lsn == 12 * 120
    # The loop syncs a dup of the newest segment's fd, not one of a sealed segment.
    assert os.fstat(commit._c[4]).st_ino == os.fstat(log._segs.fd).st_ino  # noqa: SLF001
    log.close()
    assert fd_count() == before, "a dup of a segment fd leaked"
    with FileLog(tmp_path) as again:
        got = {r.lsn: r.payload for r in again.read()}
    assert sorted(got) == list(range(1, 12 * 120 + 1))
    for items in acks.values():
        for ack, data in items:
            assert got[ack.first_lsn] == data


def test_close_with_waiters_commits_every_admitted_append_and_ends_the_loop(tmp_path):
    log = FileLog(tmp_path, FileLogConfig(fsync="group", segment_bytes=8192))
    commit = committer(log)
    acked: list[AppendResult] = []
    refused = []
    unexpected: list[BaseException] = []
    go = threading.Barrier(9)

    def writer(t: int) -> None:
        go.wait()
        for i in range(100_000):
            try:
                ack = log.append([f"{t}-{i}".encode() * 10])
            except ClosedError:
                refused.append(t)
                return
            except BaseException as exc:  # reported below
                unexpected.append(exc)
                return
            assert ack.durable
            acked.append(ack)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    go.wait()
    deadline = time.monotonic() + 10
    while commit.loop_syncs < 20 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert commit.loop_syncs >= 20
    log.close()
    for th in threads:
        th.join(10)
        assert not th.is_alive(), "a writer hung in close"
    assert not unexpected and len(refused) == 8
    assert commit._thread is not None and not commit._thread.is_alive()  # noqa: SLF001
    log.close()  # idempotent
    with FileLog(tmp_path) as again:
        assert again.last_lsn >= max(a.last_lsn for a in acked)
        assert [r.lsn for r in again.read()] == list(range(1, again.last_lsn + 1))


def test_a_failed_fdatasync_in_the_loop_fails_the_log_once_and_is_never_retried(tmp_path,
                                                                                 monkeypatch):
    fatal: list[DurabilityError] = []
    log = FileLog(tmp_path, FileLogConfig(fsync="group", on_fatal=fatal.append))
    commit = committer(log)
    acks, errors = hammer(log, writers=8, per_writer=30)
    assert not errors and commit.loop_syncs > 0
    durable_before = log.durable_lsn
    # Put a pipe behind the committer's fd: fdatasync of a pipe fails with EINVAL. The
    # Python-side syncs (an appender leading) go to the segment itself, so only the loop's
    # fdatasync can fail.
    real = os.fdatasync
    segment_fd = log._segs.fd  # noqa: SLF001
    monkeypatch.setattr(os, "fdatasync", lambda fd: real(segment_fd))
    r, w = os.pipe()
    os.dup2(r, commit._c[4])  # noqa: SLF001 - C_FD
    os.close(r)
    os.close(w)
    outcomes: list[str] = []

    def writer(t: int) -> None:
        for i in range(200):
            try:
                log.append([f"after-{t}-{i}".encode()])
                outcomes.append("acked")
            except DurabilityError:
                outcomes.append("failed")
                return

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
        assert not th.is_alive(), "a writer hung after the loop's fdatasync failed"
    assert outcomes.count("failed") == 8, "every writer must end with a DurabilityError"
    assert len(fatal) == 1
    assert "by the group commit loop failed" in str(fatal[0])
    assert "[Errno 22]" in str(fatal[0])
    commit._thread.join(5)  # noqa: SLF001
    assert not commit._thread.is_alive()  # noqa: SLF001 - the loop stopped: no retry
    syncs = commit.loop_syncs
    with pytest.raises(DurabilityError, match="failed earlier"):
        log.append([b"more"])
    with pytest.raises(DurabilityError):
        log.sync()
    assert commit.loop_syncs == syncs and len(fatal) == 1
    log.close()
    monkeypatch.undo()
    with FileLog(tmp_path) as again:  # every acked record survived
        got = {rec.lsn: rec.payload for rec in again.read()}
        assert again.last_lsn >= durable_before
    for items in acks.values():
        for ack, data in items:
            assert got[ack.first_lsn] == data


def test_a_lone_writer_syncs_inline_once_per_append_and_starts_no_thread(tmp_path,
                                                                         monkeypatch):
    calls = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    log = FileLog(tmp_path, FileLogConfig(fsync="group"))
    monkeypatch.setattr(os, "fdatasync", counting)
    for i in range(50):
        ack = log.append([b"x" * i or b"y"])
        assert ack.durable and log.durable_lsn == ack.last_lsn == i + 1
    assert len(calls) == 50
    assert committer(log)._thread is None  # noqa: SLF001
    log.close()


def test_python_committer_is_still_selectable_and_config_is_checked(tmp_path):
    with FileLog(tmp_path, FileLogConfig(committer="python")) as log:
        assert not isinstance(log._commit, NativeCommit)  # noqa: SLF001
        acks, errors = hammer(log, writers=6, per_writer=20)
        assert not errors and log.durable_lsn == 120
    with pytest.raises(InvalidArgumentError, match="committer='c'"):
        FileLogConfig(committer="c")


def test_sync_and_follow_see_what_the_loop_made_durable(tmp_path):
    log = FileLog(tmp_path, FileLogConfig(fsync="group"))
    stop = threading.Event()
    followed: list[int] = []

    def follow() -> None:
        for rec in log.follow(1, stop=stop, durable_only=True):
            assert rec.lsn <= log.durable_lsn
            followed.append(rec.lsn)
            if rec.lsn == 8 * 40:
                return

    follower = threading.Thread(target=follow)
    follower.start()
    acks, errors = hammer(log, writers=8, per_writer=40)
    assert not errors
    assert log.sync() == log.last_lsn == 8 * 40
    follower.join(10)
    stop.set()
    assert followed == list(range(1, 8 * 40 + 1))
    log.close()


def _run_child(code: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_python_twin_runs_the_loop_when_numba_cannot_compile_it(tmp_path):
    proc = _run_child(f"""
        import threading
        from replaybuf.file_log import FileLog, FileLogConfig
        from replaybuf.native_commit import kernel_ready
        assert kernel_ready(60) is False  # NUMBA_DISABLE_JIT: compiling is refused
        log = FileLog({str(tmp_path)!r}, FileLogConfig(fsync="group", segment_bytes=4096))
        def w(t):
            for i in range(100):
                assert log.append([b"%d-%d" % (t, i) * 20]).durable
        ts = [threading.Thread(target=w, args=(t,)) for t in range(8)]
        [t.start() for t in ts]; [t.join() for t in ts]
        commit = log._commit
        assert commit.loop_syncs > 0 and not commit.compiled, (commit.loop_syncs, commit.compiled)
        assert log.durable_lsn == log.last_lsn == 800
        log.close()
        print("ok")
    """, {"NUMBA_DISABLE_JIT": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


def test_interpreter_exit_with_the_loop_busy_neither_hangs_nor_crashes(tmp_path):
    proc = _run_child(f"""
        import threading, time
        from replaybuf.file_log import FileLog, FileLogConfig
        from replaybuf.native_commit import kernel_ready
        kernel_ready(60)
        log = FileLog({str(tmp_path)!r}, FileLogConfig(fsync="group"))
        def w(t):
            while True:
                try:
                    log.append([b"x" * 100])
                except Exception:
                    return
        for t in range(8):
            threading.Thread(target=w, args=(t,), daemon=True).start()
        while log._commit.loop_syncs < 20:
            time.sleep(0.001)
        print("exiting", flush=True)
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "exiting"
    with FileLog(tmp_path) as again:  # whatever was written recovers cleanly
        assert [r.lsn for r in again.read()] == list(range(1, again.last_lsn + 1))


def test_a_forked_child_exits_without_touching_the_parents_loop(tmp_path: Path) -> None:
    # The child has none of the parent's threads, and the loop may hold its mutex at the fork:
    # the child's exit must not try to stop the loop (it would wait on that mutex forever).
    log = FileLog(tmp_path / "log")
    stop = threading.Event()
    acked: list[AppendResult] = []

    def writer() -> None:
        while not stop.is_set():
            acked.append(log.append([b"x" * 100]))

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    atexit._run_exitfuncs()  # what its interpreter's exit would run
                finally:
                    os._exit(0)  # not back into pytest
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.01)
            else:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("a forked child hung at exit")
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        for t in threads:
            t.join()
    last = max(a.last_lsn for a in acked)
    assert log.durable_lsn >= last  # the parent's loop kept syncing
    log.close()
