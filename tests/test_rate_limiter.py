"""Tests for `replaybuf.rate_limiter`: real threads, waits on events and limiter state."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replaybuf.errors import (
    ClosedError,
    FailedPreconditionError,
    InvalidArgumentError,
    RateLimitTimeoutError,
)
from replaybuf.rate_limiter import (
    RateLimiter,
    RateLimiterConfig,
    RateLimiterState,
)

WAIT = 10.0  # generous bound for things that must happen; never reached when tests pass


def eventually(pred: Callable[[], bool], timeout: float = WAIT) -> None:
    """Waits until `pred()` holds (polling limiter state, which has no event to wait on)."""

    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        pause.wait(0.001)


class Call:
    """Runs `fn` on a thread and keeps its outcome; `done` is set when it returns or raises."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._fn = fn
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            self.error = e
        finally:
            self.done.set()

    def join(self) -> None:
        assert self.done.wait(WAIT), "call did not finish"
        self.thread.join(WAIT)


def ratio(spi: float, min_size: int, eb: float, name: str = "t") -> RateLimiter:
    return RateLimiter(RateLimiterConfig.sample_to_insert_ratio(spi, min_size, eb), name=name)


# -- configuration ----------------------------------------------------------------------------


def test_error_buffer_gives_reverb_min_and_max_diff() -> None:
    cfg = RateLimiterConfig.sample_to_insert_ratio(4.0, min_size_to_sample=100, error_buffer=50)
    assert (cfg.min_diff, cfg.max_diff) == (350.0, 450.0)
    assert cfg.error_buffer == 50.0 and isinstance(cfg.error_buffer, float)
    plain = RateLimiterConfig.min_size(7)
    assert plain == RateLimiterConfig(min_size_to_sample=7)
    assert (plain.min_diff, plain.max_diff) == (-math.inf, math.inf)


@pytest.mark.parametrize(
    ("kwargs", "field", "bad"),
    [
        ({"min_size_to_sample": 0}, "min_size_to_sample", "0"),
        ({"min_size_to_sample": -3}, "min_size_to_sample", "-3"),
        ({"min_size_to_sample": 1.5}, "min_size_to_sample", "1.5"),
        ({"min_size_to_sample": True}, "min_size_to_sample", "True"),
        ({"samples_per_insert": 0.0, "error_buffer": 1.0}, "samples_per_insert", "0.0"),
        ({"samples_per_insert": -2.0, "error_buffer": 4.0}, "samples_per_insert", "-2.0"),
        ({"samples_per_insert": math.nan, "error_buffer": 4.0}, "samples_per_insert", "nan"),
        ({"samples_per_insert": math.inf, "error_buffer": 4.0}, "samples_per_insert", "inf"),
        ({"samples_per_insert": 2.0}, "error_buffer", "None"),
        ({"error_buffer": 5.0}, "error_buffer", "5.0"),
        ({"samples_per_insert": 4.0, "error_buffer": 3.9}, "error_buffer", "3.9"),
        ({"samples_per_insert": 0.5, "error_buffer": 0.5}, "error_buffer", "0.5"),
        ({"samples_per_insert": 1.0, "error_buffer": math.inf}, "error_buffer", "inf"),
        ({"samples_per_insert": 1.0, "error_buffer": "2"}, "error_buffer", "'2'"),
    ],
)
def test_invalid_config_raises_naming_the_field_and_value(
    kwargs: dict[str, object], field: str, bad: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        RateLimiterConfig(**kwargs)  # type: ignore[arg-type]
    msg = str(info.value)
    assert msg.startswith(f"{field} is {bad}"), msg
    assert "must" in msg or "set" in msg


def test_smallest_valid_error_buffer_is_max_of_one_and_samples_per_insert() -> None:
    RateLimiterConfig.sample_to_insert_ratio(4.0, 1, 4.0)
    RateLimiterConfig.sample_to_insert_ratio(0.25, 1, 1.0)


@pytest.mark.parametrize("bad", [0, -1, 1.0, True])
def test_counts_must_be_positive_integers(bad: object) -> None:
    limiter = RateLimiter(name="t")
    for call in (limiter.insert, limiter.sample, limiter.can_insert, limiter.await_can_sample):
        with pytest.raises(InvalidArgumentError, match="n is"):
            call(bad)  # type: ignore[operator]


@pytest.mark.parametrize("bad", [-0.5, math.nan, "1"])
def test_bad_timeout_is_rejected(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="timeout is"):
        RateLimiter().await_can_insert(1, timeout=bad)  # type: ignore[arg-type]


# -- blocking ---------------------------------------------------------------------------------


def test_blocks_samples_until_min_size_reached() -> None:
    limiter = RateLimiter(RateLimiterConfig.min_size(3), name="t")
    call = Call(lambda: limiter.await_can_sample(4, timeout=WAIT))
    eventually(lambda: limiter.stats().waiting_samples == 1)
    limiter.insert(2)
    assert not limiter.can_sample()
    assert not call.done.is_set()  # two inserts do not wake it: it is still waiting
    assert limiter.stats().waiting_samples == 1
    limiter.insert()
    call.join()
    assert call.error is None
    s = limiter.stats()
    assert (s.blocked_samples, s.waiting_samples, s.samples) == (1, 0, 0)
    assert s.sample_wait_s > 0


def test_one_insert_reaching_min_size_wakes_every_waiting_sampler() -> None:
    limiter = RateLimiter(RateLimiterConfig.min_size(1))
    calls = [Call(lambda: limiter.await_can_sample(timeout=None)) for _ in range(4)]
    try:
        eventually(lambda: limiter.stats().waiting_samples == 4)
        limiter.insert()  # wakes one waiter, which passes the wake-up on while there is room
        for call in calls:
            call.join()
            assert call.error is None
    finally:
        limiter.cancel()


def test_deletes_shrink_the_table_and_block_samples_again() -> None:
    limiter = RateLimiter(RateLimiterConfig.min_size(2))
    limiter.insert(2)
    assert limiter.can_sample()
    limiter.delete()
    assert not limiter.can_sample() and limiter.stats().size == 1
    with pytest.raises(InvalidArgumentError, match="delete of 2 items"):
        limiter.delete(2)


def test_ratio_blocks_inserts_until_a_sample_makes_room() -> None:
    limiter = ratio(spi=1.0, min_size=2, eb=2.0)  # diff must stay in [0, 4]
    limiter.insert(4)  # diff 4 == max_diff
    assert not limiter.can_insert()
    call = Call(lambda: limiter.await_can_insert(timeout=WAIT))
    eventually(lambda: limiter.stats().waiting_inserts == 1)
    limiter.sample()
    call.join()
    assert call.error is None


def test_timeout_names_what_a_sample_waited_for() -> None:
    limiter = RateLimiter(RateLimiterConfig.min_size(100), name="x")
    limiter.insert(3)
    t0 = time.monotonic()
    with pytest.raises(RateLimitTimeoutError) as info:
        limiter.await_can_sample(timeout=0.05)
    assert time.monotonic() - t0 >= 0.05
    assert str(info.value) == (
        "sample on table 'x' waited 0.05 s: table has 3 items, min_size_to_sample is 100; "
        "append more items or lower min_size_to_sample"
    )
    assert isinstance(info.value, TimeoutError)
    assert limiter.stats().waiting_samples == 0


def test_timeout_names_the_ratio_and_the_settings_to_change() -> None:
    limiter = ratio(spi=2.0, min_size=2, eb=2.0, name="x")  # diff in [2, 6]
    limiter.insert(3)  # diff 6
    with pytest.raises(RateLimitTimeoutError) as info:
        limiter.await_can_insert(5, timeout=0.01)
    msg = str(info.value)
    assert msg.startswith("insert of 5 items on table 'x' waited 0.01 s: the actors are ahead")
    assert "above max_diff 6" in msg and "sample more" in msg and "error_buffer" in msg
    limiter.sample(4)  # diff 2 == min_diff
    with pytest.raises(RateLimitTimeoutError) as info:
        limiter.await_can_sample(timeout=0.01)
    msg = str(info.value)
    assert "the learners are ahead" in msg and "below min_diff 2" in msg
    assert "append more items" in msg


def test_timeout_zero_tries_without_waiting() -> None:
    limiter = RateLimiter(RateLimiterConfig.min_size(2), name="x")
    with pytest.raises(RateLimitTimeoutError, match=r"could not proceed without waiting \(timeout=0\)"):
        limiter.await_can_sample(timeout=0)
    with pytest.raises(RateLimitTimeoutError):
        limiter.reserve_sample(timeout=0)
    limiter.await_can_insert(timeout=0)  # allowed: returns at once
    s = limiter.stats()
    assert (s.blocked_samples, s.pending_samples, s.waiting_samples) == (2, 0, 0)
    assert s.sample_wait_s < 1.0


def test_cancel_wakes_waiters_with_closed_error() -> None:
    limiter = ratio(spi=1.0, min_size=1, eb=1.0, name="x")  # diff in [0, 2]
    held = limiter.reserve_insert(2, timeout=0)  # blocks further inserts and (size 0) samples
    waiters = [Call(lambda: limiter.await_can_insert(timeout=None)) for _ in range(2)]
    waiters += [Call(lambda: limiter.reserve_sample(3, timeout=WAIT)) for _ in range(2)]
    eventually(lambda: (s := limiter.stats()).waiting_inserts + s.waiting_samples == 4)
    limiter.cancel()
    for call in waiters:
        call.join()
        assert isinstance(call.error, ClosedError), call.error
        assert "table 'x'" in str(call.error) and "closing" in str(call.error)
    with pytest.raises(ClosedError):
        limiter.await_can_sample(timeout=0)
    assert not limiter.can_insert() and not limiter.can_sample()
    limiter.cancel()  # idempotent
    held.commit()  # events in flight can still be recorded
    s = limiter.stats()
    assert s.cancelled and (s.inserts, s.pending_samples, s.waiting_inserts) == (2, 0, 0)


# -- reservations and state -------------------------------------------------------------------


def test_reservations_count_against_the_limit_until_released() -> None:
    limiter = ratio(spi=1.0, min_size=1, eb=2.0)  # diff in [-1, 3]
    r1 = limiter.reserve_insert(3, timeout=0)  # stage 1: first item fits
    assert not limiter.can_insert()  # the 3 reserved inserts count as done
    assert not limiter.can_sample()  # ... but not as present
    r1.commit(2)
    assert limiter.stats().inserts == 2 and limiter.stats().pending_inserts == 0
    with pytest.raises(FailedPreconditionError, match="already committed"):
        r1.release()
    with pytest.raises(RuntimeError), limiter.reserve_sample(2, timeout=0):
        raise RuntimeError("sampling failed")
    s = limiter.stats()
    assert (s.samples, s.pending_samples) == (0, 0)
    with limiter.reserve_sample(2, timeout=0) as r2:
        assert r2.kind == "sample" and limiter.stats().pending_samples == 2
    assert limiter.stats().samples == 2
    with pytest.raises(InvalidArgumentError, match="holds only 1"):
        limiter.reserve_insert(timeout=0).commit(2)


def test_state_and_restore_rebuild_the_counters() -> None:
    a = ratio(spi=2.0, min_size=3, eb=4.0)
    a.insert(10)
    a.sample(15)
    a.delete(4)
    b = ratio(spi=2.0, min_size=3, eb=4.0)
    b.restore(a.state())
    assert b.state() == RateLimiterState(inserts=10, samples=15, deletes=4)
    assert (b.can_insert(), b.can_sample()) == (a.can_insert(), a.can_sample())
    with pytest.raises(InvalidArgumentError, match="deletes is 5 but inserts is only 4"):
        RateLimiterState(inserts=4, deletes=5)
    b.reserve_insert(timeout=0)
    with pytest.raises(FailedPreconditionError, match="reserved"):
        b.restore(RateLimiterState())


def test_restore_wakes_a_waiter_it_unblocks() -> None:
    limiter = RateLimiter(RateLimiterConfig.min_size(5))
    call = Call(lambda: limiter.await_can_sample(timeout=WAIT))
    eventually(lambda: limiter.stats().waiting_samples == 1)
    limiter.restore(RateLimiterState(inserts=5))
    call.join()
    assert call.error is None


# -- concurrency ------------------------------------------------------------------------------


def run_actors_and_learners(
    limiter: RateLimiter,
    insert_batches: list[int],
    sample_batches: list[int],
    check: Callable[[], None],
) -> None:
    """Inserter threads (one per entry, 60 reservations each) and sampler threads until done."""

    done = threading.Event()
    failures: list[BaseException] = []

    def actor(n: int) -> None:
        for _ in range(60):
            if done.is_set():  # another thread failed: stop early
                return
            with limiter.reserve_insert(n, timeout=WAIT):
                check()
                time.sleep(0.0002)  # the log append: lets other threads in meanwhile
            check()

    def learner(b: int) -> None:
        while not done.is_set():
            try:
                with limiter.reserve_sample(b, timeout=0.02):
                    check()
                    time.sleep(0.0001)  # drawing from the sum-tree
            except RateLimitTimeoutError:
                continue
            check()

    def guard(fn: Callable[[int], None], n: int) -> Callable[[], None]:
        def run() -> None:
            try:
                fn(n)
            except BaseException as e:  # noqa: BLE001
                failures.append(e)
                done.set()

        return run

    actors = [Call(guard(actor, n)) for n in insert_batches]
    learners = [Call(guard(learner, b)) for b in sample_batches]
    for call in actors:
        call.join()
    done.set()
    for call in learners:
        call.join()
    assert not failures, failures
    assert limiter.stats().inserts == 60 * sum(insert_batches)


def test_ratio_stays_within_error_buffer_under_concurrent_inserts_and_samples() -> None:
    spi, min_size, eb = 2.0, 4, 6.0  # diff in [2, 14]
    limiter = ratio(spi, min_size, eb)
    max_insert, max_sample = 3, 5
    low, high = 2.0 - (max_sample - 1), 14.0 + (max_insert - 1) * spi
    seen: list[float] = []

    def check() -> None:
        s = limiter.stats()  # one snapshot under the limiter's lock
        seen.append(s.diff)
        assert s.diff <= high, s
        assert s.size < min_size or s.diff >= low, s
        # Worst cases over the reservations in flight stay inside too.
        assert (s.inserts + s.pending_inserts) * spi - s.samples <= high, s
        if s.size >= min_size:
            assert s.inserts * spi - s.samples - s.pending_samples >= low, s

    run_actors_and_learners(limiter, [1, 3, 1], [1, 5], check)
    assert len(seen) > 500 and limiter.stats().samples > 0


def test_no_deadlock_when_batches_exceed_the_error_buffer() -> None:
    # Window [0, 4]. Under "the whole batch must fit", a sample of 16 would need diff >= 16,
    # which inserts (stopped near 4 + 6) never reach: it would wait forever.
    limiter = ratio(spi=1.0, min_size=2, eb=2.0)
    run_actors_and_learners(limiter, [7], [16], check=lambda: None)
    s = limiter.stats()
    assert s.samples >= 7 * 60 - 4 - 16  # the learner kept up to within a batch


def test_one_of_insert_or_sample_is_always_allowed_with_big_batches() -> None:
    limiter = ratio(spi=3.0, min_size=5, eb=3.0)
    for _ in range(500):
        if limiter.can_sample(50):
            limiter.sample(50)
        else:
            assert limiter.can_insert(11)
            limiter.insert(11)
    assert limiter.stats().samples > 0


# -- model-based ------------------------------------------------------------------------------


class Model:
    """Brute-force reference: exact arithmetic and Reverb's rules, first item of a batch."""

    def __init__(self, min_size: int, spi: Fraction | None, eb: Fraction | None) -> None:
        self.min_size, self.spi, self.eb = min_size, spi, eb
        self.inserts = self.samples = self.deletes = 0
        self.pending_inserts = self.pending_samples = 0

    def bounds(self) -> tuple[Fraction, Fraction]:
        assert self.spi is not None and self.eb is not None
        return self.min_size * self.spi - self.eb, self.min_size * self.spi + self.eb

    def can_insert(self) -> bool:
        total = self.inserts + self.pending_inserts
        if total + 1 - self.deletes <= self.min_size or self.spi is None:
            return True
        return (total + 1) * self.spi - self.samples <= self.bounds()[1]

    def can_sample(self) -> bool:
        if self.inserts - self.deletes < self.min_size:
            return False
        if self.spi is None:
            return True
        return self.inserts * self.spi - self.samples - self.pending_samples - 1 >= self.bounds()[0]


configs = st.one_of(
    st.builds(lambda m: (m, None, None), st.integers(1, 5)),
    st.tuples(
        st.integers(1, 5),
        st.sampled_from([Fraction(1, 4), Fraction(1, 2), Fraction(1), Fraction(2), Fraction(3)]),
        st.sampled_from([Fraction(0), Fraction(1, 2), Fraction(1), Fraction(5, 2), Fraction(6)]),
    ).map(lambda t: (t[0], t[1], max(Fraction(1), t[1]) + t[2])),
)
ops = st.lists(
    st.tuples(
        st.sampled_from(
            ["try_insert", "try_sample", "reserve_insert", "reserve_sample", "finish", "delete"]
        ),
        st.integers(1, 4),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(configs, ops)
def test_random_operations_match_the_reference_model(
    config: tuple[int, Fraction | None, Fraction | None], steps: list[tuple[str, int]]
) -> None:
    min_size, spi, eb = config
    limiter = RateLimiter(
        RateLimiterConfig(
            min_size,
            None if spi is None else float(spi),
            None if eb is None else float(eb),
        )
    )
    model = Model(min_size, spi, eb)
    held: list[tuple[object, int]] = []
    for op, n in steps:
        assert limiter.can_insert(n) == model.can_insert()
        assert limiter.can_sample(n) == model.can_sample()
        if not held:  # liveness: with nothing in flight, some call can always go
            assert model.can_insert() or model.can_sample()
        kind = op.split("_")[-1]
        allowed = model.can_insert() if kind == "insert" else model.can_sample()
        if op.startswith("try_"):
            wait = limiter.await_can_insert if kind == "insert" else limiter.await_can_sample
            if allowed:
                wait(n, timeout=0)
                if kind == "insert":
                    limiter.insert(n)
                    model.inserts += n
                else:
                    limiter.sample(n)
                    model.samples += n
            else:
                with pytest.raises(RateLimitTimeoutError):
                    wait(n, timeout=0)
        elif op.startswith("reserve_"):
            reserve = limiter.reserve_insert if kind == "insert" else limiter.reserve_sample
            if allowed:
                held.append((reserve(n, timeout=0), n))
                if kind == "insert":
                    model.pending_inserts += n
                else:
                    model.pending_samples += n
            else:
                with pytest.raises(RateLimitTimeoutError):
                    reserve(n, timeout=0)
        elif op == "finish" and held:
            r, k = held.pop(0)
            keep = n % (k + 1)  # 0 releases, else commits that many
            if keep:
                r.commit(keep)  # type: ignore[attr-defined]
            else:
                r.release()  # type: ignore[attr-defined]
            if r.kind == "insert":  # type: ignore[attr-defined]
                model.pending_inserts -= k
                model.inserts += keep
            else:
                model.pending_samples -= k
                model.samples += keep
        elif op == "delete":
            if n <= model.inserts - model.deletes:
                limiter.delete(n)
                model.deletes += n
            else:
                with pytest.raises(InvalidArgumentError):
                    limiter.delete(n)
        s = limiter.stats()
        assert (s.inserts, s.samples, s.deletes) == (model.inserts, model.samples, model.deletes)
        assert (s.pending_inserts, s.pending_samples) == (
            model.pending_inserts,
            model.pending_samples,
        )
