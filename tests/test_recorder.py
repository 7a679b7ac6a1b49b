"""SampleRecorder: draws are logged in order, exactly once, coalesced into turns that start
at least ``min_gap`` apart unless a frame fills, a backlog builds, a caller waits or it stops.

The gaps here are a minute long, so a turn that starts early can only have been started by
the condition under test (no timing is asserted).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from replaybuf.locks import FairLock
from replaybuf.recorder import RecordedDraw, SampleRecorder

GAP = 60.0


class Log:
    """The `write` callback: keeps each turn's draw seeds; can be made to block or fail."""

    def __init__(self) -> None:
        self.turns: list[list[int]] = []
        self.cond = threading.Condition()
        self.fail: BaseException | None = None

    def __call__(self, draws: list[RecordedDraw]) -> None:
        if self.fail is not None:
            raise self.fail
        with self.cond:
            self.turns.append([d.seed for d in draws])
            self.cond.notify_all()

    def wait_for(self, n_seeds: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: sum(map(len, self.turns)) >= n_seeds, 60), (
                f"only {self.turns} logged")


def draw(seed: int) -> RecordedDraw:
    return RecordedDraw("t", np.array([seed], np.uint64), seed, 1, np.empty(0, np.uint64))


def recorder(log: Log, **kw) -> SampleRecorder:
    args = dict(write=log, lock=FairLock(), max_pending=1000, window=0.0, frame=4,
                min_gap=GAP)
    args.update(kw)
    return SampleRecorder(**args)


def test_draws_after_a_turn_wait_for_the_gap_until_a_caller_waits():
    log = Log()
    rec = recorder(log)
    try:
        rec.submit(draw(0))
        log.wait_for(1)  # the first turn starts at once
        for s in (1, 2, 3):
            rec.submit(draw(s))
        rec.wait(None)
        assert log.turns == [[0], [1, 2, 3]]
    finally:
        rec.stop()


@pytest.mark.parametrize("limits", [{"frame": 3}, {"frame": 256, "max_pending": 6}],
                         ids=["a full frame", "half the backpressure limit"])
def test_a_full_frame_or_a_backlog_is_logged_without_waiting_for_the_gap(limits):
    log = Log()
    rec = recorder(log, **limits)
    try:
        rec.submit(draw(0))
        log.wait_for(1)
        for s in (1, 2, 3):
            rec.submit(draw(s))
        log.wait_for(4)
        assert log.turns == [[0], [1, 2, 3]]
    finally:
        rec.stop()


def test_stop_logs_what_is_pending_in_order():
    log = Log()
    rec = recorder(log, frame=256)
    rec.submit(draw(0))
    log.wait_for(1)
    for s in range(1, 6):
        rec.submit(draw(s))
    rec.stop()
    assert [s for turn in log.turns for s in turn] == list(range(6))
    rec.stop()  # idempotent


def test_wait_times_out_while_the_writer_lock_is_held():
    log = Log()
    lock = FairLock()
    rec = recorder(log, lock=lock)
    try:
        lock.acquire()
        try:
            rec.submit(draw(0))
            with pytest.raises(TimeoutError, match="1 draws not logged"):
                rec.wait(0.2)
        finally:
            lock.release()
        rec.wait(None)
        assert log.turns == [[0]]
    finally:
        rec.stop()


def test_a_failed_write_stops_the_recorder_and_reports_once():
    log = Log()
    errors: list[BaseException] = []
    log.fail = OSError("disk gone")
    rec = recorder(log, on_error=errors.append)
    rec.submit(draw(0))
    rec.wait(None)  # returns: the error ends the wait
    assert isinstance(rec.error, OSError) and errors == [rec.error]
    rec.stop()
