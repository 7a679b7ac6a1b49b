"""Row gathers for samples: one compiled call copies every field's drawn rows into one
recycled buffer, and large batches may share the copy with a helper thread.

A sample copies the drawn rows of each column (`replaybuf.table.Table` keeps one column per
field, or one record array for small rows) into new arrays handed to the caller. For image
rows (W3: 2 x 28 KB per item, 14 MB per batch of 256) that copy is most of a sample; it runs
at memory speed (measured here: ~2.7 ms of CPU per W3 batch, the same as numpy's fancy
indexing, whose fresh output usually comes back from malloc already mapped).

- `_copy_chunks`: one numba call per batch (not one numpy gather per field) copies each row
  with memcpy; slots out of range are counted, never read.
- `OutputPool`: a batch's buffer is reused once its reference count shows that nothing holds
  the batch or a view of it any more, so a learner keeping one or two batches at a time
  reuses two buffers, and a fresh 7 MB array never has to be faulted in page by page.
- Sharing: a large batch is cut into chunks that the caller's thread and helper threads
  claim from one iterator (`_copy_chunks` releases the GIL). The caller only ever waits for
  a chunk a helper has started. Whether sharing pays depends on the machine's load: with an
  idle core the copy took 1.4-2.3x less wall time in our runs; with every core busy the
  helper gets the CPU late and the caller waits for it (up to 1.4x slower). So `RowGather` times both ways per byte and uses the one
  that has lately been faster, trying the other every `_EXPLORE`-th large batch. Batches
  under `PARALLEL_MIN_BYTES` are always copied by the caller alone, and those under
  `HOLD_GIL_MAX_BYTES` without releasing the GIL.

Under ``NUMBA_DISABLE_JIT=1`` the copy is numpy's fancy indexing of the same bytes.

Thread-safety: a `RowGather` is used under its owner's lock (the table's); the helper threads
are shared by the process (``REPLAYBUF_GATHER_HELPERS`` sets their number, default one per
core beyond the first) and restarted in a forked child.

Example::

    g = RowGather()
    col = np.arange(12, dtype=np.int64).reshape(6, 2)
    (out,) = g.gather([col], np.array([4, 0, 4]))
    assert out.tolist() == [[8, 9], [0, 1], [8, 9]]
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from llvmlite import ir
from numba import config as _numba_config
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from replaybuf._simd import JIT_OPTIONS
from replaybuf.output_pool import POOL_SIZE, OutputPool

__all__ = ["RowGather", "OutputPool", "PARALLEL_MIN_BYTES", "HOLD_GIL_MAX_BYTES", "CHUNK_BYTES",
           "helper_count"]

#: A batch smaller than this is copied by the caller's thread alone.
PARALLEL_MIN_BYTES = 1 << 20
#: A batch smaller than this is copied without releasing the GIL (`_copy_chunks_held`): a
#: W2 batch of 256 rows is 43 KB, a few tens of microseconds. Releasing the GIL buys nothing
#: there, and taking it back can wait for as long as another thread keeps dropping and
#: retaking it at a high rate (an LMDB write of thousands of keys: CPython wakes the waiter
#: at each drop, the other thread has usually retaken it by then, and the waiter's
#: switch-interval timer starts over; see `replaybuf.sum_tree.HOLD_GIL_MAX_BATCH`).
HOLD_GIL_MAX_BYTES = 1 << 18
#: Bytes per chunk claimed by one thread (small enough to balance two threads, large enough
#: that the per-chunk dispatch, a few microseconds, stays near 1% of the copy).
CHUNK_BYTES = 1 << 20
_ENV_HELPERS = "REPLAYBUF_GATHER_HELPERS"
_EXPLORE = 8  # every 8th large batch is copied the way that has lately been slower
_EWMA = 0.25  # weight of the newest measurement in the per-byte costs
_ALIGN = 64  # each field's rows start on a cache line of the shared buffer
# Columns of the per-field table handed to the kernel.
_SRC, _ROW, _OFF, _ROWS = range(4)


if _numba_config.DISABLE_JIT:
    _memcpy = None

    def _copy_chunks(buf: np.ndarray, fields: np.ndarray, slots: np.ndarray,
                     chunks: np.ndarray, c0: int, c1: int) -> int:
        raise AssertionError("RowGather copies with numpy without JIT")

    _copy_chunks_held = _copy_chunks
else:
    @intrinsic
    def _memcpy(typingctx: Any, dst: Any, src: Any, nbytes: Any) -> Any:  # pragma: no cover
        """memcpy(dst, src, nbytes) on integer addresses (llvm.memcpy: glibc's memcpy for
        large rows, inline moves for small ones)."""

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            d, s, n = args
            i8p = ir.IntType(8).as_pointer()
            cgutils.raw_memcpy(builder, builder.inttoptr(d, i8p), builder.inttoptr(s, i8p), n, 1)
            return context.get_dummy_value()

        return types.void(types.intp, types.intp, types.intp), codegen

    @njit(**JIT_OPTIONS)
    def _copy_chunks(buf: np.ndarray, fields: np.ndarray, slots: np.ndarray,
                     chunks: np.ndarray, c0: int, c1: int) -> int:  # pragma: no cover
        """Copy chunks ``c0 .. c1-1``; chunk ``(f, lo, hi)`` copies rows ``slots[lo:hi]`` of
        field f (``fields[f]``: source address, row bytes, offset in buf, source rows) to
        rows ``lo .. hi-1`` of its part of buf. Returns how many slots were out of range
        (their rows are left as they were). Prefetching rows ahead measured no faster.
        """

        base = buf.ctypes.data
        bad = 0
        for c in range(c0, c1):
            f, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
            src, row, dst, rows = fields[f, 0], fields[f, 1], base + fields[f, 2], fields[f, 3]
            for i in range(lo, hi):
                s = slots[i]
                if s < 0 or s >= rows:
                    bad += 1
                else:
                    _memcpy(dst + i * row, src + s * row, row)
        return bad

    @njit(**{**JIT_OPTIONS, "nogil": False})
    def _copy_chunks_held(buf: np.ndarray, fields: np.ndarray, slots: np.ndarray,
                          chunks: np.ndarray, c0: int, c1: int) -> int:  # pragma: no cover
        """`_copy_chunks`, keeping the GIL (batches under `HOLD_GIL_MAX_BYTES`)."""

        return _copy_chunks(buf, fields, slots, chunks, c0, c1)


class _Job:
    """Chunks of one gather, claimed one at a time by whichever thread is free.

    A helper joins only while the job is open and counts itself active until it is done; the
    caller, done with its own claims, closes the job and waits until no helper is active, so
    no thread writes into the buffer once the caller returns it.
    """

    __slots__ = ("args", "claim", "cond", "active", "closed", "bad", "error")

    def __init__(self, args: tuple[Any, ...], n_chunks: int) -> None:
        self.args = args
        self.claim: Iterator[int] = iter(range(n_chunks))  # next() is atomic under the GIL
        self.cond = threading.Condition(threading.Lock())
        self.active = 0
        self.closed = False
        self.bad: list[int] = []  # one count per thread (list.append is atomic)
        self.error: BaseException | None = None

    def work(self) -> None:
        args = self.args
        bad = 0
        for c in self.claim:
            bad += _copy_chunks(*args, c, c + 1)
        self.bad.append(bad)

    def help(self) -> None:
        """A helper's part: claim chunks unless the caller has already closed the job."""

        with self.cond:
            if self.closed:
                return
            self.active += 1
        try:
            self.work()
        except BaseException as exc:  # handed to the caller, who raises it
            self.error = exc
        finally:
            with self.cond:
                self.active -= 1
                self.cond.notify_all()

    def close(self) -> None:
        """The caller's end: no helper joins any more, and none is still copying."""

        with self.cond:
            self.closed = True
            self.cond.wait_for(lambda: self.active == 0)
            self.args = ()


def _helpers_wanted() -> int:
    """``REPLAYBUF_GATHER_HELPERS`` if set (0: every gather on the caller's thread), else one
    per core available to the process beyond the first (at most 7)."""

    env = os.environ.get(_ENV_HELPERS, "").strip()
    if env:
        if not env.isdigit():
            raise ValueError(f"{_ENV_HELPERS}={env!r}; set it to a whole number of threads "
                             f"(0 copies on the sampling thread only) or unset it")
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(0, min(cores, 8) - 1)


class _Helpers:
    """Process-wide daemon threads that copy chunks beside the caller (one per extra core).

    They idle on a queue; a forked child starts its own on first use.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Job] | None = None
        self._pid = 0
        self.count = 0

    def started(self) -> _Helpers:
        """Start the threads on first use, and again in a forked child (threads don't
        survive a fork)."""

        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._start()
        return self

    def submit(self, job: _Job) -> None:
        """Offer `job` to every helper (none on one core: the caller copies alone)."""

        q = self.started()._queue
        for _ in range(self.count if q is not None else 0):
            q.put(job)  # type: ignore[union-attr]

    def _start(self) -> None:
        self.count = _helpers_wanted()
        self._queue = queue.SimpleQueue() if self.count else None
        self._pid = os.getpid()
        for i in range(self.count):
            threading.Thread(target=self._run, args=(self._queue,), daemon=True,
                             name=f"replaybuf-gather-{i}").start()

    @staticmethod
    def _run(q: queue.SimpleQueue[_Job]) -> None:
        while True:
            job = q.get()
            job.help()
            del job


_HELPERS = _Helpers()


def helper_count() -> int:
    """Helper threads a large gather is shared with (cores available to us, minus one)."""

    return _HELPERS.started().count


class _Plan:
    """How one list of columns and batch size lay out in a buffer (cached per table)."""

    __slots__ = ("columns", "fields", "chunks", "total", "parts")

    def __init__(self, columns: tuple[np.ndarray, ...], n: int) -> None:
        self.columns = columns  # keeps the source addresses alive
        self.fields = np.zeros((len(columns), 4), np.int64)
        chunks, parts, total = [], [], 0
        for f, col in enumerate(columns):
            if not col.flags.c_contiguous:
                raise ValueError(f"column {f} is not C-contiguous; gathered columns must be")
            row = col[:1].nbytes
            self.fields[f] = (col.ctypes.data, row, total, col.shape[0])
            parts.append((total, n * row, col.dtype, (n, *col.shape[1:])))
            if row:
                step = max(1, CHUNK_BYTES // row)
                chunks.extend((f, a, min(a + step, n)) for a in range(0, n, step))
            total += -(-n * row // _ALIGN) * _ALIGN
        self.chunks = np.array(chunks, np.int64).reshape(-1, 3)
        self.total = total
        self.parts = parts


class RowGather:
    """Gathers drawn rows of several columns into one recycled buffer (see module docstring).

    Cost: O(batch x row bytes) copied, shared by up to ``1 + helper_count()`` threads for a
    batch of `PARALLEL_MIN_BYTES` or more, plus ~10 us of fixed cost. Not thread-safe (call
    under the table's lock).
    """

    def __init__(self, pool_size: int = POOL_SIZE, *, parallel: bool = True) -> None:
        self.pool = OutputPool(pool_size)
        self._parallel = parallel
        self._cost = [0.0, 0.0]  # recent wall ns per byte of large batches: alone, shared
        self._count = 0
        self._plans: dict[tuple[int, ...], _Plan] = {}

    def _plan(self, columns: Sequence[np.ndarray], n: int) -> _Plan:
        # A plan holds its columns, so while it is cached no other array can take their ids.
        key = (n, *map(id, columns))
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 64:  # columns replaced or many batch sizes: start over
                self._plans.clear()
            plan = self._plans[key] = _Plan(tuple(columns), n)
        return plan

    def gather(self, columns: Sequence[np.ndarray], slots: np.ndarray, *,
               out: np.ndarray | None = None) -> list[np.ndarray]:
        """``[col[slots] for col in columns]``, as views of one pooled buffer.

        Args:
            columns: C-contiguous arrays with the rows on axis 0 (any dtype, records too).
            slots: int64 row indexes, each in ``[0, len(col))``.
            out: a writable, C-contiguous uint8 buffer (64-byte aligned, e.g. a slot of a
                shared-memory ring) to gather into instead of a pooled one, used when the
                batch fits in it; the returned arrays then view ``out``.

        Raises:
            IndexError: a slot is out of range for a column.
        """

        n = slots.size
        plan = self._plans.get((n, *map(id, columns))) or self._plan(columns, n)
        if out is not None and out.nbytes >= plan.total:
            buf = out[:plan.total]
        else:
            buf = self.pool.take(plan.total)
        outs = [buf[off:off + nb].view(dt).reshape(shape) for off, nb, dt, shape in plan.parts]
        if _memcpy is None:  # no JIT: numpy gathers the same bytes (record padding included)
            self._numpy_gather(plan, buf, slots)
            return outs
        if slots.dtype != np.int64 or not slots.flags.c_contiguous:
            slots = np.ascontiguousarray(slots, np.int64)
        k = plan.chunks.shape[0]
        if k > 1 and plan.total >= PARALLEL_MIN_BYTES and self._parallel:
            bad = self._large((buf, plan.fields, slots, plan.chunks), k, plan.total)
        elif plan.total < HOLD_GIL_MAX_BYTES:
            bad = _copy_chunks_held(buf, plan.fields, slots, plan.chunks, 0, k)
        else:
            bad = _copy_chunks(buf, plan.fields, slots, plan.chunks, 0, k)
        if bad:
            raise IndexError(f"{bad} of {n} slots are outside the columns' rows")
        return outs

    @staticmethod
    def _numpy_gather(plan: _Plan, buf: np.ndarray, slots: np.ndarray) -> None:
        n = slots.size
        rows = int(plan.fields[:, _ROWS].min()) if plan.columns else 0
        bad = int(np.count_nonzero((slots < 0) | (slots >= rows))) if plan.columns else 0
        if bad:
            raise IndexError(f"{bad} of {n} slots are outside the columns' rows")
        for (off, nb, _, _), col in zip(plan.parts, plan.columns):
            if nb:
                src = col.reshape(col.shape[0], -1).view(np.uint8)
                buf[off:off + nb].reshape(n, -1)[...] = src[slots]

    def _large(self, args: tuple[Any, ...], k: int, nbytes: int) -> int:
        """Copy a large batch alone or shared with the helpers, whichever has lately been
        faster per byte (every `_EXPLORE`-th batch tries the other way). Shared wins on idle
        cores; on a machine whose cores are all busy a helper gets the CPU late, and the
        caller would wait for its chunk."""

        cost = self._cost
        shared = cost[1] <= cost[0]
        self._count += 1
        if self._count % _EXPLORE == 0:
            shared = not shared
        if shared and not _HELPERS.started().count:
            shared = False
        t0 = time.perf_counter_ns()
        bad = self._share(args, k) if shared else _copy_chunks(*args, 0, k)
        per_byte = (time.perf_counter_ns() - t0) / nbytes
        old = cost[shared]
        cost[shared] = per_byte if old == 0.0 else old + (per_byte - old) * _EWMA
        return bad

    @staticmethod
    def _share(args: tuple[Any, ...], k: int) -> int:
        job = _Job(args, k)
        _HELPERS.submit(job)
        try:
            job.work()
        finally:
            job.close()  # whatever happened, no helper still writes into the buffer
        if job.error is not None:
            raise job.error
        return sum(job.bad)
