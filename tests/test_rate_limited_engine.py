"""The rate limiter as the engine uses it: min size, samples-per-insert, timeouts, restarts."""

from __future__ import annotations

import threading
import time

import pytest

from _engine_helpers import SIG, batch
from replaybuf.engine import Engine, EngineConfig
from replaybuf.errors import ClosedError, RateLimitTimeoutError
from replaybuf.rate_limiter import RateLimiterConfig
from replaybuf.table_config import SelectorConfig, TableConfig

CONFIG = EngineConfig.for_tests()


@pytest.fixture
def engine(tmp_path):
    with Engine(tmp_path / "db", CONFIG) as e:
        yield e


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def test_blocks_samples_until_min_size_reached(engine):
    engine.create_table(TableConfig("t", SIG, 100, rate_limiter=RateLimiterConfig.min_size(5)))
    result: list = []
    thread = threading.Thread(target=lambda: result.append(engine.sample("t", 3, timeout=30)))
    thread.start()
    wait_until(lambda: engine.describe_table("t").rate_limiter.waiting_samples == 1)
    engine.append("t", batch(range(4)))
    time.sleep(0.05)
    assert thread.is_alive() and not result
    engine.append("t", batch([4]))
    thread.join(10)
    assert len(result) == 1 and result[0].info.table_size == 5
    assert engine.describe_table("t").rate_limiter.blocked_samples == 1


def test_sample_times_out_with_a_clear_error(engine):
    engine.create_table(TableConfig("t", SIG, 100, rate_limiter=RateLimiterConfig.min_size(3)))
    engine.append("t", batch([1]))
    start = time.monotonic()
    with pytest.raises(RateLimitTimeoutError, match=r"table has 1 items, min_size_to_sample is 3"):
        engine.sample("t", 1, timeout=0.05)
    assert time.monotonic() - start >= 0.05
    engine.flush_samples()
    assert engine.describe_table("t").rate_limiter.samples == 0


def test_insert_times_out_when_learners_fall_behind_and_logs_nothing(engine):
    rl = RateLimiterConfig.sample_to_insert_ratio(1.0, min_size_to_sample=1, error_buffer=2.0)
    engine.create_table(TableConfig("t", SIG, 100, rate_limiter=rl))
    for i in range(3):
        engine.append("t", batch([i]), timeout=0)
    last = engine.log.last_lsn
    with pytest.raises(RateLimitTimeoutError, match="the actors are ahead of the learners"):
        engine.append("t", batch([9]), timeout=0.02)
    assert engine.log.last_lsn == last
    engine.sample("t", 1)
    engine.append("t", batch([9]), timeout=0)


def test_samples_per_insert_ratio_is_held_under_concurrent_inserts_and_samples(engine):
    spi, eb, batch_size = 2.0, 8.0, 2
    rl = RateLimiterConfig.sample_to_insert_ratio(spi, min_size_to_sample=4, error_buffer=eb)
    engine.create_table(TableConfig("t", SIG, 1000, rate_limiter=rl,
                                    sampler=SelectorConfig("uniform")))
    inserted = threading.Event()
    diffs: list[float] = []
    errors: list[BaseException] = []

    def observe():
        diffs.append(engine.describe_table("t").rate_limiter.diff)

    def inserter():
        try:
            for i in range(120):
                engine.append("t", batch([i]), timeout=10)
                observe()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            inserted.set()

    def sampler(seed):
        try:
            while True:
                try:
                    engine.sample("t", batch_size, seed=seed, timeout=0.3)
                except RateLimitTimeoutError:
                    if inserted.is_set():
                        return
                    continue
                seed += 1
                observe()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=inserter)] + [
        threading.Thread(target=sampler, args=(k * 10_000,)) for k in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    min_diff, max_diff = 4 * spi - eb, 4 * spi + eb
    # a batch is admitted when its first item is: it may overshoot by less than its size
    low = min_diff - (batch_size - 1)
    assert all(low <= d <= max_diff for d in diffs), (min(diffs), max(diffs))
    stats = engine.describe_table("t").rate_limiter
    assert stats.inserts == 120
    assert stats.inserts * spi - stats.samples <= max_diff
    assert stats.inserts * spi - stats.samples >= min_diff - (batch_size - 1)
    assert stats.blocked_inserts > 0 or stats.blocked_samples > 0


def test_rate_limiter_counts_survive_a_restart(tmp_path):
    rl = RateLimiterConfig.sample_to_insert_ratio(1.0, min_size_to_sample=2, error_buffer=4.0)
    cfg = TableConfig("t", SIG, 4, rate_limiter=rl, max_times_sampled=2)
    with Engine(tmp_path, CONFIG) as engine:
        engine.create_table(cfg)
        engine.append("t", batch(range(4)))
        engine.append("t", batch([4, 5]))  # evicts two (capacity)
        for seed in range(3):
            engine.sample("t", 2, seed=seed)
        engine.flush_samples()
        before = engine.describe_table("t").rate_limiter
    with Engine(tmp_path, CONFIG) as engine:
        after = engine.describe_table("t").rate_limiter
    assert (after.inserts, after.samples, after.deletes) == (
        before.inserts, before.samples, before.deletes)
    assert after.samples == 6 and after.inserts == 6


def test_close_wakes_a_blocked_sampler_with_closed_error(tmp_path):
    engine = Engine(tmp_path, CONFIG)
    engine.create_table(TableConfig("t", SIG, 10, rate_limiter=RateLimiterConfig.min_size(2)))
    errors: list[BaseException] = []

    def sample():
        try:
            engine.sample("t", 1, timeout=30)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=sample)
    thread.start()
    wait_until(lambda: engine.describe_table("t").rate_limiter.waiting_samples == 1)
    engine.close()
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], ClosedError)
