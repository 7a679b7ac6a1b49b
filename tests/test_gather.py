"""RowGather against numpy's fancy indexing, buffer recycling that never overwrites a batch
still in use, the helper threads, and the engine's samples built on them.

``REPLAYBUF_SMALL_TESTS=1`` shrinks example counts.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replaybuf.gather as gather_mod
from replaybuf.engine import Engine, EngineConfig
from replaybuf.gather import OutputPool, RowGather
from replaybuf.table_config import TableConfig
from test_sampling_nojit import run_python

SMALL = os.environ.get("REPLAYBUF_SMALL_TESTS") == "1"
SETTINGS = settings(max_examples=15 if SMALL else 80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
HERE = Path(__file__).resolve().parent

_DTYPES = [np.uint8, np.bool_, np.int16, np.float32, np.int64, np.float64,
           np.dtype([("a", np.float32, (3,)), ("b", np.int64), ("c", np.bool_)], align=True),
           np.dtype([("x", np.uint8), ("y", np.int16)])]  # packed: 3-byte records


@st.composite
def columns_and_slots(draw: st.DrawFn) -> tuple[list[np.ndarray], np.ndarray]:
    rows = draw(st.integers(1, 40))
    cols = []
    for _ in range(draw(st.integers(1, 4))):
        dt = np.dtype(draw(st.sampled_from(_DTYPES)))
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=2)))
        raw = np.frombuffer(draw(st.binary(min_size=rows * dt.itemsize * int(np.prod(shape)),
                                           max_size=rows * dt.itemsize * int(np.prod(shape)))),
                            np.uint8)
        cols.append(raw.view(dt).reshape(rows, *shape).copy())
    slots = np.array(draw(st.lists(st.integers(0, rows - 1), max_size=60)), np.int64)
    return cols, slots


def assert_gathered(outs: list[np.ndarray], cols: list[np.ndarray], slots: np.ndarray) -> None:
    assert len(outs) == len(cols)
    for out, col in zip(outs, cols):
        want = col[slots]
        assert out.dtype == col.dtype and out.shape == want.shape
        assert payload(out) == payload(want)


def payload(a: np.ndarray) -> list[bytes]:
    """The bytes of each field (NaN payloads included; record padding, which numpy's own
    gather may leave unset, excluded)."""

    return [a[n].tobytes() for n in a.dtype.names] if a.dtype.names else [a.tobytes()]


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every gather is shared with the helpers in chunks of a few rows."""

    monkeypatch.setattr(gather_mod, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(gather_mod, "CHUNK_BYTES", 16)


@SETTINGS
@given(case=columns_and_slots())
def test_gather_equals_numpy_fancy_indexing(case):
    cols, slots = case
    g = RowGather(parallel=False)
    assert_gathered(g.gather(cols, slots), cols, slots)
    assert_gathered(g.gather(cols, slots[::-1].copy()), cols, slots[::-1])


@SETTINGS
@given(case=columns_and_slots())
def test_gather_shared_with_helpers_in_small_chunks_equals_numpy(tiny_chunks, case):
    cols, slots = case
    g = RowGather()
    for _ in range(3):  # the same plan and recycled buffers again
        assert_gathered(g.gather(cols, slots), cols, slots)


def test_large_image_batch_is_shared_and_exact():
    rng = np.random.default_rng(3)
    obs = rng.integers(0, 256, (300, 4, 84, 84), dtype=np.uint8)
    nxt = rng.integers(0, 256, (300, 4, 84, 84), dtype=np.uint8)
    act = rng.integers(0, 6, 300)
    slots = rng.integers(0, 300, 256)
    assert 256 * obs[0].nbytes * 2 >= gather_mod.PARALLEL_MIN_BYTES
    outs = RowGather().gather([obs, act, nxt], slots)
    assert_gathered(outs, [obs, act, nxt], slots)


def test_a_batch_still_referenced_is_never_overwritten():
    rng = np.random.default_rng(0)
    col = rng.integers(0, 1 << 30, (50, 7))
    g = RowGather(pool_size=2)
    first = g.gather([col], np.arange(10))[0]
    piece = g.gather([col], np.arange(10, 20))[0][2:4]  # only a view of the batch survives
    for start in range(20, 40):  # more batches than the pool holds
        g.gather([col], np.arange(start, start + 10))
    assert first.tolist() == col[:10].tolist()
    assert piece.tolist() == col[12:14].tolist()


def test_a_dropped_batch_buffer_is_reused():
    col = np.arange(40, dtype=np.int64).reshape(20, 2)
    g = RowGather()
    a = g.gather([col], np.arange(5))[0]
    buf = weakref.ref(a.base)  # a strong reference would keep the buffer busy
    del a
    b = g.gather([col], np.arange(5, 10))[0]
    assert b.base is buf() and b.tolist() == col[5:10].tolist()
    assert len(g.pool) == 1


def test_pool_replaces_a_free_buffer_of_another_size_and_caps_its_size():
    pool = OutputPool(size=2)
    a, b = pool.take(10), pool.take(20)
    c = pool.take(30)  # both busy and the pool is full: a buffer of its own
    assert len(pool) == 2 and c.size == 30
    del a
    d = pool.take(40)  # a's buffer is free but 10 bytes: replaced
    assert len(pool) == 2 and d.size == 40
    del d
    assert pool.take(40).size == 40 and len(pool) == 2
    assert b.size == 20


def test_out_of_range_slots_raise_and_leave_columns_unchanged():
    col = np.arange(12, dtype=np.int64).reshape(6, 2)
    before = col.copy()
    g = RowGather()
    with pytest.raises(IndexError, match="outside"):
        g.gather([col], np.array([0, 6]))
    with pytest.raises(IndexError, match="outside"):
        g.gather([col], np.array([-1]))
    assert np.array_equal(col, before)


def test_out_of_range_slots_raise_when_shared(tiny_chunks):
    col = np.zeros((8, 4), np.float32)
    with pytest.raises(IndexError, match="1 of 3 slots"):
        RowGather().gather([col], np.array([0, 9, 1]))


def test_a_strided_column_is_refused_with_its_position():
    col = np.zeros((6, 4))[:, ::2]
    with pytest.raises(ValueError, match="column 1 is not C-contiguous"):
        RowGather().gather([np.zeros(6), col], np.array([0]))


def test_a_replaced_column_is_read_not_the_old_one():
    g = RowGather()
    old = np.zeros((4, 3))
    assert g.gather([old], np.array([1]))[0].tolist() == [[0, 0, 0]]
    new = np.ones((4, 3))
    assert g.gather([new], np.array([1]))[0].tolist() == [[1, 1, 1]]


def test_helper_setting_must_be_a_count(monkeypatch):
    monkeypatch.setenv("REPLAYBUF_GATHER_HELPERS", "two")
    with pytest.raises(ValueError, match="REPLAYBUF_GATHER_HELPERS='two'"):
        gather_mod._helpers_wanted()
    monkeypatch.setenv("REPLAYBUF_GATHER_HELPERS", "0")
    assert gather_mod._helpers_wanted() == 0


def test_no_helpers_still_gathers_large_batches():
    code = ("import numpy as np\nfrom replaybuf.gather import RowGather, helper_count\n"
            "c = np.arange(4 * 300000, dtype=np.int64).reshape(300000, 4)\n"
            "s = np.arange(0, 300000, 7)\n"
            "assert helper_count() == 0\n"
            "assert np.array_equal(RowGather().gather([c], s)[0], c[s])\nprint('ok')\n")
    env = dict(os.environ, REPLAYBUF_GATHER_HELPERS="0")
    proc = subprocess.run([sys.executable, "-c", code], cwd=HERE.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def _gather_in_child(conn) -> None:  # runs in a forked child
    col = np.arange(3 * 100000, dtype=np.int64).reshape(100000, 3)
    slots = np.arange(0, 100000, 3)
    out = RowGather().gather([col], slots)[0]  # a new gatherer shares its first batch
    conn.send((bool(np.array_equal(out, col[slots])), gather_mod._HELPERS._pid == os.getpid()))
    conn.close()


_SHARED = RowGather()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no helpers without JIT")
def test_a_forked_child_starts_its_own_helpers(tiny_chunks):
    col = np.arange(60, dtype=np.int64).reshape(20, 3)
    _SHARED.gather([col], np.arange(20))  # helpers started in the parent
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_gather_in_child, args=(child,))
    proc.start()
    assert parent.poll(60), "the child's gather did not finish"
    assert parent.recv() == (True, True)
    proc.join(30)
    assert proc.exitcode == 0


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="already without JIT")
def test_pure_python_fallback_gathers_the_same_bytes():
    code = """
import json, numpy as np
from replaybuf.gather import RowGather
rng = np.random.default_rng(5)
rec = np.zeros(30, np.dtype([("a", np.float32, (3,)), ("b", np.int64)], align=True))
rec["a"] = rng.random((30, 3)); rec["b"] = rng.integers(0, 99, 30)
img = rng.integers(0, 256, (30, 2, 5), dtype=np.uint8)
slots = rng.integers(0, 30, 40)
outs = RowGather().gather([rec, img], slots) + RowGather().gather([img], slots[:0])
try:
    RowGather().gather([img], np.array([30]))
    err = None
except IndexError as e:
    err = type(e).__name__
print(json.dumps([[o.dtype.str, list(o.shape), o.tobytes().hex()] for o in outs] + [err]))
"""
    outs = [json.loads(run_python(code, jit)) for jit in (True, False)]
    assert outs[0] == outs[1]
    assert outs[0][-1] == "IndexError" and outs[0][2][1] == [0, 2, 5]


# -- through the engine ----------------------------------------------------------------------

IMG = {"obs": (np.uint8, (4, 84, 84)), "tag": np.int64, "next_obs": (np.uint8, (4, 84, 84))}


def image_batch(tags: np.ndarray) -> dict[str, np.ndarray]:
    """Items whose every obs byte is tag % 251 and next_obs byte (tag * 7) % 251."""

    tags = np.asarray(tags, np.int64)
    obs = np.broadcast_to((tags % 251).astype(np.uint8)[:, None, None, None], (tags.size, 4, 84,
                                                                                 84))
    return {"obs": obs.copy(), "tag": tags,
            "next_obs": ((obs.astype(np.int64) * 7) % 251).astype(np.uint8)}


def check_rows(data: dict[str, np.ndarray]) -> None:
    tags = data["tag"]
    assert np.array_equal(data["obs"], np.broadcast_to(
        (tags % 251).astype(np.uint8)[:, None, None, None], data["obs"].shape))
    assert np.array_equal(data["next_obs"], np.broadcast_to(
        ((tags % 251) * 7 % 251).astype(np.uint8)[:, None, None, None], data["obs"].shape))


@pytest.fixture
def image_engine(tmp_path):
    with Engine(tmp_path / "db", EngineConfig.for_tests(seed=1)) as e:
        e.create_table(TableConfig("img", IMG, capacity=400))
        e.append("img", image_batch(np.arange(300)), priorities=np.arange(1, 301) / 300)
        yield e


def test_held_samples_keep_their_data_while_later_samples_reuse_buffers(image_engine):
    e = image_engine
    held = [e.sample("img", 64, seed=s) for s in range(3)]
    copies = [{k: v.copy() for k, v in s.data.items()} for s in held]
    for s in range(3, 40):  # the held batches' size and another
        check_rows(e.sample("img", 64 if s % 2 else 256, seed=s).data)
    for s, c in zip(held, copies):
        assert all(np.array_equal(s.data[k], c[k]) for k in c)
        check_rows(s.data)


def test_same_seed_gives_the_same_rows_with_recycled_buffers(image_engine):
    e = image_engine
    a = e.sample("img", 256, seed=11)
    a_data = {k: v.copy() for k, v in a.data.items()}
    del a
    e.sample("img", 256, seed=12)
    b = e.sample("img", 256, seed=11)
    assert all(np.array_equal(b.data[k], a_data[k]) for k in a_data)


def test_concurrent_samplers_and_an_appender_get_consistent_rows(tmp_path, tiny_chunks):
    with Engine(tmp_path / "db", EngineConfig.for_tests(seed=2)) as e:
        e.create_table(TableConfig("img", IMG, capacity=200))
        e.append("img", image_batch(np.arange(100)))
        errors: list[BaseException] = []
        stop = threading.Event()

        def sampler(k: int) -> None:
            try:
                for s in range(30):
                    smp = e.sample("img", 32, seed=k * 1000 + s)
                    check_rows(smp.data)
                    assert np.array_equal(smp.data["tag"] + 1,
                                          smp.info.item_ids.astype(np.int64))
            except BaseException as exc:  # reported below
                errors.append(exc)

        def appender() -> None:
            tag = 100
            while not stop.is_set() and tag < 190:
                e.append("img", image_batch(np.arange(tag, tag + 10)))
                tag += 10

        threads = [threading.Thread(target=sampler, args=(k,)) for k in range(3)]
        writer = threading.Thread(target=appender)
        for t in [*threads, writer]:
            t.start()
        for t in threads:
            t.join(120)
        stop.set()
        writer.join(120)
        assert not errors, errors[0]


def test_large_batches_go_the_way_that_has_been_faster_and_sometimes_the_other(tiny_chunks):
    if gather_mod.helper_count() == 0:
        pytest.skip("one core: nothing to share with")
    rng = np.random.default_rng(9)
    col = rng.integers(0, 1 << 40, (64, 32))
    g = RowGather()
    g._cost = [1.0, 50.0]  # copying alone has been faster
    for _ in range(1, gather_mod._EXPLORE):
        slots = rng.integers(0, 64, 40)
        assert np.array_equal(g.gather([col], slots)[0], col[slots])
    assert g._cost[1] == 50.0  # never shared so far
    g.gather([col], np.arange(64))  # the explored batch
    assert g._cost[1] != 50.0


@pytest.fixture
def release_gil_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every single-threaded gather goes through the GIL-releasing kernel."""

    monkeypatch.setattr(gather_mod, "HOLD_GIL_MAX_BYTES", 0)


@SETTINGS
@given(case=columns_and_slots())
def test_gather_that_releases_the_gil_equals_numpy_and_the_held_path(release_gil_always,
                                                                      case):
    cols, slots = case
    released = RowGather(parallel=False).gather(cols, slots)
    assert_gathered(released, cols, slots)
    gather_mod.HOLD_GIL_MAX_BYTES = 1 << 40  # the same batch, kept under the GIL
    held = RowGather(parallel=False).gather(cols, slots)
    assert [payload(a) for a in held] == [payload(a) for a in released]


def test_small_batches_keep_the_gil_and_large_ones_release_it():
    if gather_mod._memcpy is None:
        pytest.skip("no JIT: numpy copies")
    assert gather_mod._copy_chunks.targetoptions.get("nogil") is True
    assert not gather_mod._copy_chunks_held.targetoptions.get("nogil")
    w2_batch = 256 * 168  # 256 W2 rows
    assert w2_batch < gather_mod.HOLD_GIL_MAX_BYTES <= gather_mod.PARALLEL_MIN_BYTES
