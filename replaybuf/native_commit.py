"""Group commit whose committer loop runs without the GIL: `NativeCommit`.

Under ``fsync="group"`` with many concurrent writers, a Python committer thread must win the
GIL back from the appenders it just released before it can start the next fdatasync, and that
handoff, not the disk, sets the pace (`bench/bench_group_floor.py`). Here the loop that runs
fdatasyncs back to back is a numba ``nogil`` function calling libc directly (fdatasync,
pthread mutex and condition, POSIX semaphores), so consecutive fdatasyncs never wait for the
GIL. It is compiled lazily (``cache=True``) in a background thread the first time a log needs
it; until then the same function runs as plain Python with ctypes (the "twin"), and it
switches to the compiled one between two syncs.

Model (all shared state is one int64 array and one block of pthread/semaphore memory, guarded
by a pthread mutex that Python threads take only for a few loads and stores):

* Appenders write their own frames under the log's write lock, then publish "written up to
  LSN w" (``C_WRITTEN``) and wait until ``C_DURABLE >= w``.
* The *sync role* (``C_ROLE``) says who fdatasyncs: nobody (idle), a Python appender (it found
  the role idle: a lone writer pays one write and one fdatasync, no thread handoff), or the
  loop. A Python leader that finds more written after its fdatasync hands the role to the loop,
  which keeps it while anything written is not yet durable and frees it when nothing is left.
* A waiter registers its LSN in a slot with its own semaphore and blocks in ``sem_wait``
  without the GIL; whoever advances ``C_DURABLE`` posts exactly the satisfied slots.
* The role holder fdatasyncs a dup of the current segment's fd owned by this class; a segment
  roll swaps it (`rolled`), and a dup retired while a sync uses it is closed by the role
  holder afterwards, so no fd is synced after it was closed or reused.
* A failed fdatasync is never retried: the loop records errno and stops, and the log fails
  (`FileLog` calls `stop`, which releases every waiter).

Linux with glibc on a 64-bit platform only (`native_unavailable` says why not); elsewhere
`FileLog` uses the Python committer of `replaybuf.group_commit`.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import logging
import os
import sys
import threading
import time
import types as _pytypes
import weakref
from collections.abc import Callable

import numpy as np

from replaybuf.errors import DurabilityError
from replaybuf.group_commit import sync_failure
from replaybuf.segment import SegmentTable

__all__ = ["NativeCommit", "native_unavailable", "kernel_ready"]

_logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- shared layout

# Fields of the int64 control array.
C_WRITTEN = 0  # every LSN <= this is written (readable) in the log
C_DURABLE = 1  # every LSN <= this is fdatasynced
C_ROLE = 2  # who fdatasyncs: ROLE_*
C_STATE = 3  # STATE_*
C_FD = 4  # dup of the current segment's fd (owned by NativeCommit)
C_BUSY_FD = 5  # the fd the role holder is syncing now, else -1
C_ERRNO = 6  # errno of the loop's failed fdatasync
C_FAIL_TARGET = 7  # the LSN that fdatasync was to make durable
C_SLOTS = 8  # waiter slots initialized so far (the loop scans lsns[:C_SLOTS])
C_SWITCH = 9  # the compiled loop is ready: the twin returns RC_SWITCH between syncs
C_TRACE_CAP = 10  # trace at most this many of the loop's fdatasyncs (0: none)
C_TRACE_N = 11  # fdatasyncs traced so far
C_TS = 12  # timespec scratch (2 fields) for clock_gettime
C_LOOP_SYNCS = 14  # fdatasyncs the loop ran (for benchmarks and tests)
C_LINGER_NS = 15  # the most the loop waits for new writes before freeing the role
C_FIELDS = 16

ROLE_IDLE, ROLE_PY, ROLE_LOOP = 0, 1, 2
STATE_RUNNING, STATE_STOPPED, STATE_FAILED = 0, 1, 2
RC_STOPPED, RC_FAILED, RC_SWITCH = 0, 1, 2

# Byte offsets in the sync block: a pthread mutex, a pthread condition, then one sem_t per
# waiter slot. glibc's are 40-48, 48 and 32 bytes on x86-64 and aarch64: 64 each is ample.
_MUTEX = 0
_COND = 64
_SEMS = 128
_STRIDE = 64
#: The most the loop waits (yielding the CPU) for a new write after a sync that left nothing
#: to do, before it frees the sync role; it waits at most as long as that sync took.
LINGER_NS = 1_000_000
#: Waiter slots per log: at most this many appends can wait at once (more wait for a slot).
MAX_WAITERS = 4096
_PTHREAD_MUTEX_ERRORCHECK = 2  # glibc, all architectures
_CLOCK_MONOTONIC = 1  # Linux, all architectures

# ---------------------------------------------------------------------------- libc via ctypes


class _Libc:
    """libc entry points for the Python side (``gil``: called holding the GIL, for calls that
    never block; ``nogil``: ctypes releases the GIL around the call)."""

    def __init__(self) -> None:
        nogil = ctypes.CDLL(None, use_errno=True)
        gil = ctypes.PyDLL(None, use_errno=True)
        vp, i = ctypes.c_void_p, ctypes.c_int

        def fn(lib: ctypes.CDLL, name: str, *args: type) -> Callable[..., int]:
            f = getattr(lib, name)
            f.argtypes = list(args)
            f.restype = ctypes.c_int
            return f

        self.mutexattr_init = fn(gil, "pthread_mutexattr_init", vp)
        self.mutexattr_settype = fn(gil, "pthread_mutexattr_settype", vp, i)
        self.mutexattr_destroy = fn(gil, "pthread_mutexattr_destroy", vp)
        self.mutex_init = fn(gil, "pthread_mutex_init", vp, vp)
        self.cond_init = fn(gil, "pthread_cond_init", vp, vp)
        self.sem_init = fn(gil, "sem_init", vp, i, ctypes.c_uint)
        self.trylock = fn(gil, "pthread_mutex_trylock", vp)
        self.unlock = fn(gil, "pthread_mutex_unlock", vp)
        self.signal = fn(gil, "pthread_cond_signal", vp)
        self.sem_post = fn(gil, "sem_post", vp)
        self.lock = fn(nogil, "pthread_mutex_lock", vp)
        self.sem_wait = fn(nogil, "sem_wait", vp)
        # The twin loop's (all release the GIL).
        self.t_lock = self.lock
        self.t_unlock = fn(nogil, "pthread_mutex_unlock", vp)
        self.t_cond_wait = fn(nogil, "pthread_cond_wait", vp, vp)
        self.t_sem_post = fn(nogil, "sem_post", vp)
        self.t_fdatasync = fn(nogil, "fdatasync", i)
        self.t_close = fn(nogil, "close", i)
        self.t_clock_gettime = fn(nogil, "clock_gettime", i, vp)
        self.t_sched_yield = fn(nogil, "sched_yield")
        self.syscall = nogil.syscall
        self.syscall.restype = ctypes.c_long
        gnu_get_libc_version = nogil.gnu_get_libc_version
        gnu_get_libc_version.restype = ctypes.c_char_p
        self.version = gnu_get_libc_version().decode()


_libc: _Libc | None = None
_libc_error: str | None = None


def native_unavailable() -> str | None:
    """Why `NativeCommit` cannot run here (None: it can). Cheap; numba is not imported."""

    global _libc, _libc_error
    if _libc is None and _libc_error is None:
        if not sys.platform.startswith("linux"):
            _libc_error = f"not Linux (sys.platform={sys.platform!r})"
        elif ctypes.sizeof(ctypes.c_void_p) != 8:
            _libc_error = "not a 64-bit platform"
        else:
            try:
                _libc = _Libc()
            except (OSError, AttributeError) as exc:
                _libc_error = f"no glibc with pthreads and POSIX semaphores ({exc})"
    return _libc_error


class _SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32),
                ("flags", ctypes.c_uint64), ("nice", ctypes.c_int32),
                ("priority", ctypes.c_uint32), ("runtime", ctypes.c_uint64),
                ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64)]


#: ``(sched_setattr, sched_getattr)`` syscall numbers; glibc before 2.41 has no wrappers.
_SCHED_ATTR_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}
#: The calling thread's EEVDF time slice asked for by `_shorten_slice` (the kernel's minimum).
SLICE_NS = 100_000


def _shorten_slice(ns: int) -> bool:
    """Ask the kernel for a short time slice for the calling thread (Linux >= 6.12 honours
    ``sched_attr.sched_runtime`` for normal threads, unprivileged; older kernels ignore it).

    Why: on a busy machine the loop must get a CPU the moment its fdatasync returns, and must
    not be preempted by the appenders it wakes before it starts the next one. A thread with a
    short slice gets an earlier EEVDF deadline, so it wins both races; it runs microseconds
    per sync, so it takes little from anyone. Measured beside a nice-10 CPU hog on 2 CPUs
    (bench_group_floor.py, 16 writers): commit cycle 1.06-1.18x the raw loop with it,
    1.72-1.99x without (bench/RESULTS.md). Keeps the thread's policy and nice value; returns
    False where unsupported.
    """

    import platform

    nums = _SCHED_ATTR_SYSCALLS.get(platform.machine())
    if nums is None or _libc is None:
        return False
    syscall = _libc.syscall
    attr = _SchedAttr()
    c_long = ctypes.c_long
    if syscall(c_long(nums[1]), c_long(0), ctypes.byref(attr), c_long(ctypes.sizeof(attr)),
               c_long(0)) != 0:
        return False
    attr.size = ctypes.sizeof(attr)
    attr.flags = 0
    attr.runtime = ns
    return syscall(c_long(nums[0]), c_long(0), ctypes.byref(attr), c_long(0)) == 0


# ---------------------------------------------------------------------------- the loop
#
# `_loop` is written once and runs two ways: as plain Python with the ctypes functions below
# (the twin: while the compiled one loads, or if numba cannot compile it), and compiled by
# numba with the same names bound to libc symbols (`_compile_kernel`). Addresses are computed
# from the arrays inside the loop (``.ctypes.data``), so the compiler knows the libc calls
# may touch that memory and reloads it after each call.


def _twin_errno() -> tuple[int]:
    return (ctypes.get_errno(),)


def _twin_globals() -> dict[str, object]:
    assert _libc is not None
    return {
        "_mutex_lock": _libc.t_lock,
        "_mutex_unlock": _libc.t_unlock,
        "_cond_wait": _libc.t_cond_wait,
        "_sem_post": _libc.t_sem_post,
        "_fdatasync": _libc.t_fdatasync,
        "_close": _libc.t_close,
        "_clock_gettime": _libc.t_clock_gettime,
        "_sched_yield": _libc.t_sched_yield,
        "_errno_location": _twin_errno,
    }


def _loop(ctl, lsns, sync, trace, twin):  # type: ignore[no-untyped-def]
    """The committer loop: while it holds the sync role and something written is not durable,
    fdatasync and post the satisfied waiters; otherwise sleep on the condition.

    Returns RC_STOPPED (the log closed or failed), RC_FAILED (its fdatasync failed: errno in
    ``C_ERRNO``) or RC_SWITCH (``C_SWITCH`` was set: call it again, compiled if loaded).
    ``twin`` is 1 when it runs as Python (for the record; both behave the same).
    """

    base = int(sync.ctypes.data)
    m = base + _MUTEX
    cv = base + _COND
    sems = base + _SEMS
    ts = int(ctl.ctypes.data) + C_TS * 8
    todo = np.empty(lsns.shape[0], np.int64)
    last_sync = 0  # ns the last fdatasync took
    _mutex_lock(m)
    while True:
        if ctl[C_STATE] != STATE_RUNNING:
            _mutex_unlock(m)
            return RC_STOPPED
        if ctl[C_SWITCH] != 0:  # the compiled loop loaded, or new arrays (`trace`)
            _mutex_unlock(m)
            return RC_SWITCH
        if ctl[C_ROLE] != ROLE_LOOP:
            _cond_wait(cv, m)
            continue
        if ctl[C_WRITTEN] <= ctl[C_DURABLE]:
            # Nothing to sync. Under load the next write is usually microseconds away (its
            # appender was just released and needs the GIL): wait for it a little, yielding
            # the CPU, rather than freeing the role and have the next appender sync inline
            # and hand the role back (two thread handoffs). A lone writer never gets here.
            linger = min(ctl[C_LINGER_NS], last_sync)
            if linger > 0:
                _mutex_unlock(m)
                _clock_gettime(_CLOCK_MONOTONIC, ts)
                t_end = ctl[C_TS] * 1_000_000_000 + ctl[C_TS + 1] + linger
                while ctl[C_WRITTEN] <= ctl[C_DURABLE] and ctl[C_STATE] == STATE_RUNNING:
                    _sched_yield()
                    _clock_gettime(_CLOCK_MONOTONIC, ts)
                    if ctl[C_TS] * 1_000_000_000 + ctl[C_TS + 1] >= t_end:
                        break
                _mutex_lock(m)
                if ctl[C_WRITTEN] > ctl[C_DURABLE]:
                    continue
            ctl[C_ROLE] = ROLE_IDLE  # nothing left: the next appender syncs inline
            continue
        target = ctl[C_WRITTEN]
        fd = ctl[C_FD]
        ctl[C_BUSY_FD] = fd
        _mutex_unlock(m)
        _clock_gettime(_CLOCK_MONOTONIC, ts)
        t0 = ctl[C_TS] * 1_000_000_000 + ctl[C_TS + 1]
        rc = _fdatasync(int(fd))
        err = 0
        if rc != 0:
            err = _errno_location()[0]
        _clock_gettime(_CLOCK_MONOTONIC, ts)
        t1 = ctl[C_TS] * 1_000_000_000 + ctl[C_TS + 1]
        last_sync = t1 - t0
        _mutex_lock(m)
        ctl[C_BUSY_FD] = -1
        if fd != ctl[C_FD]:  # a roll retired it while we synced: ours to close
            _close(int(fd))
        if rc != 0:
            ctl[C_ERRNO] = err
            ctl[C_FAIL_TARGET] = target
            if ctl[C_STATE] == STATE_RUNNING:
                ctl[C_STATE] = STATE_FAILED
            ctl[C_ROLE] = ROLE_IDLE
            _mutex_unlock(m)
            return RC_FAILED  # never retried; the log fails and `stop` releases the waiters
        ctl[C_LOOP_SYNCS] += 1
        if target > ctl[C_DURABLE]:
            ctl[C_DURABLE] = target
        durable = ctl[C_DURABLE]
        k = 0
        for i in range(ctl[C_SLOTS]):
            v = lsns[i]
            if v != 0 and v <= durable:
                lsns[i] = 0
                todo[k] = i
                k += 1
        if k:
            # Post outside the mutex: Python threads waiting for it would block the GIL.
            _mutex_unlock(m)
            for j in range(k):
                _sem_post(sems + int(todo[j]) * _STRIDE)
            _mutex_lock(m)
        if ctl[C_TRACE_N] < ctl[C_TRACE_CAP]:
            _clock_gettime(_CLOCK_MONOTONIC, ts)
            n = ctl[C_TRACE_N]
            if n < ctl[C_TRACE_CAP] and 4 * n + 3 < trace.shape[0]:
                trace[4 * n] = t0
                trace[4 * n + 1] = t1
                trace[4 * n + 2] = ctl[C_TS] * 1_000_000_000 + ctl[C_TS + 1]
                trace[4 * n + 3] = k
                ctl[C_TRACE_N] = n + 1


_kernel: Callable[..., int] | None = None
_kernel_state = "unloaded"  # -> "loading" -> "ready" | "failed"
_kernel_lock = threading.Lock()
_live: weakref.WeakSet[NativeCommit] = weakref.WeakSet()
# A forked child has none of the parent's loop threads, and a mutex one of them held at the
# fork stays locked in the child: its exit must not try to stop them.
os.register_at_fork(after_in_child=_live.clear)


def _compile_kernel() -> Callable[..., int]:
    """`_loop` compiled by numba (nopython, nogil, cached on disk)."""

    import numba
    from numba import types

    if numba.config.DISABLE_JIT:
        raise RuntimeError("NUMBA_DISABLE_JIT is set")
    ext = types.ExternalFunction
    ptr, i32 = types.intp, types.intc
    g = dict(_loop.__globals__)
    g.update(
        _mutex_lock=ext("pthread_mutex_lock", i32(ptr)),
        _mutex_unlock=ext("pthread_mutex_unlock", i32(ptr)),
        _cond_wait=ext("pthread_cond_wait", i32(ptr, ptr)),
        _sem_post=ext("sem_post", i32(ptr)),
        _fdatasync=ext("fdatasync", i32(i32)),
        _close=ext("close", i32(i32)),
        _clock_gettime=ext("clock_gettime", i32(i32, ptr)),
        _sched_yield=ext("sched_yield", i32()),
        _errno_location=ext("__errno_location", types.CPointer(i32)()),
    )
    fn = _pytypes.FunctionType(_loop.__code__, g, "_loop")
    sig = "int64(int64[::1], int64[::1], uint8[::1], int64[::1], int64)"
    return numba.njit(sig, nogil=True, cache=True)(fn)


def _load_kernel() -> None:
    global _kernel, _kernel_state
    try:
        kernel = _compile_kernel()
    except Exception as exc:  # numba is a dependency: this is a broken install, say so loudly
        log = _logger.info if "NUMBA_DISABLE_JIT" in str(exc) else _logger.error
        log("the native group-commit loop is not compiled (%r); logs run it as Python", exc)
        with _kernel_lock:
            _kernel_state = "failed"
        return
    with _kernel_lock:
        _kernel, _kernel_state = kernel, "ready"
        live = list(_live)
    for commit in live:
        commit._kernel_loaded()


def _request_kernel() -> None:
    """Start compiling (or loading from numba's cache) the loop, once per process."""

    global _kernel_state
    with _kernel_lock:
        if _kernel_state != "unloaded":
            return
        _kernel_state = "loading"
    threading.Thread(target=_load_kernel, name="replaybuf-native-commit-jit", daemon=True).start()


def kernel_ready(timeout: float | None = None) -> bool:
    """Load the compiled loop if not yet done and wait up to ``timeout`` seconds for it (for
    benchmarks and tests, which want to measure or exercise the compiled loop). True when
    it is ready."""

    if native_unavailable() is not None:
        return False
    _request_kernel()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _kernel_lock:
            if _kernel_state in ("ready", "failed"):
                return _kernel_state == "ready"
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


@atexit.register
def _stop_all_at_exit() -> None:
    # A compiled loop must not be running while the interpreter tears its code down.
    for commit in list(_live):
        commit._stop_loop_at_exit()


# ---------------------------------------------------------------------------- Python side


class NativeCommit:
    """The fdatasync scheduling of one `FileLog` under ``"group"``, with a GIL-free loop.

    `FileLog` writes each frame under its write lock, calls `publish` there, and then (without
    the lock) `wait_durable`, which either runs the fdatasync inline (the role was idle) or
    blocks without the GIL until a sync covers the frame. Thread-safe; lock order: the log's
    write lock, then this class's mutex (Python threads never take the write lock while
    holding the mutex, and never block on the mutex holding the GIL).

    Args:
        lock: the log's write lock (taken to fail the log).
        segments: the log's segment table; ``segments.fd`` is dup'd at `start` and `rolled`.
        fail: puts the log in its failed state and returns the error (called holding
            ``lock``); must call `stop`.
        report_fatal: reports a failure to the log's ``on_fatal`` (called without the lock).
    """

    def __init__(
        self,
        lock: threading.Lock,
        segments: SegmentTable,
        *,
        fail: Callable[[DurabilityError], DurabilityError],
        report_fatal: Callable[[DurabilityError], None],
    ) -> None:
        reason = native_unavailable()
        if reason is not None:
            raise RuntimeError(f"the native group committer cannot run here: {reason}")
        assert _libc is not None
        self._libc = _libc
        self._lock = lock
        self._segments = segments
        self._fail = fail
        self._report_fatal = report_fatal
        self._ctl = np.zeros(C_FIELDS, np.int64)
        self._ctl[C_FD] = self._ctl[C_BUSY_FD] = -1
        self._ctl[C_LINGER_NS] = LINGER_NS
        self._lsns = np.zeros(MAX_WAITERS, np.int64)
        raw = np.zeros(_SEMS + _STRIDE * MAX_WAITERS + 64, np.uint8)
        off = (-raw.ctypes.data) % 64
        self._sync = raw[off : off + _SEMS + _STRIDE * MAX_WAITERS]
        self._trace = np.zeros(2, np.int64)
        base = self._sync.ctypes.data
        self._m = base + _MUTEX
        self._cv = base + _COND
        self._sems = base + _SEMS
        # Python-side views: memoryview item access is several times cheaper than numpy's.
        self._c = memoryview(self._ctl)
        self._l = memoryview(self._lsns)
        attr = (ctypes.c_char * 64)()
        lib = self._libc
        if (
            lib.mutexattr_init(attr)
            or lib.mutexattr_settype(attr, _PTHREAD_MUTEX_ERRORCHECK)
            or lib.mutex_init(self._m, attr)
            or lib.cond_init(self._cv, None)
        ):
            raise OSError(ctypes.get_errno(), "initializing the group commit's mutex failed")
        lib.mutexattr_destroy(attr)
        self._free: list[int] = []  # initialized slots not in use
        self._slot_wait = threading.Condition(threading.Lock())  # all MAX_WAITERS in use
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    # --------------------------------------------------------------------- state

    @property
    def durable_lsn(self) -> int:
        """LSN up to which every record is fdatasynced. Lock-free."""

        return self._c[C_DURABLE]

    @durable_lsn.setter
    def durable_lsn(self, lsn: int) -> None:
        # Only before `start` (recovery) and on close: nothing else runs.
        self._c[C_DURABLE] = lsn
        if self._c[C_WRITTEN] < lsn:
            self._c[C_WRITTEN] = lsn

    @property
    def loop_syncs(self) -> int:
        """fdatasyncs run by the loop (not by Python leaders) so far."""

        return self._c[C_LOOP_SYNCS]

    @property
    def compiled(self) -> bool:
        """The compiled loop is loaded in this process (else the loop runs as Python)."""

        return _kernel is not None

    def start(self) -> None:
        """Take a dup of the current segment's fd. The loop's thread starts on first need."""

        assert self._segments.fd is not None
        self._c[C_FD] = os.dup(self._segments.fd)
        _live.add(self)

    # --------------------------------------------------------------------- appender side

    def publish(self, lsn: int) -> None:
        """Everything up to ``lsn`` is written. Holds the log's write lock (so calls come in
        LSN order); a plain store: the loop reads it under the mutex and may see it late."""

        self._c[C_WRITTEN] = lsn

    def wait_durable(self, lsn: int) -> bool:
        """Block until everything up to ``lsn`` (written) is durable: run the fdatasync here
        if nobody is syncing, else wait for the sync that covers it. Called without the lock.

        Returns False when the log stopped (closed or failed) first.

        Raises:
            DurabilityError: this thread's fdatasync failed (the log is now failed).
        """

        c = self._c
        if c[C_DURABLE] >= lsn:
            return True
        slot = self._take_slot()
        self._mlock()
        if c[C_WRITTEN] < lsn:
            c[C_WRITTEN] = lsn
        if c[C_DURABLE] >= lsn or c[C_STATE] != STATE_RUNNING:
            ok = c[C_DURABLE] >= lsn
            failed = c[C_STATE] == STATE_FAILED
            self._unlock()
            self._free.append(slot)
            if not ok and failed:
                self._loop_failed()
            return ok
        if c[C_ROLE] == ROLE_IDLE:
            c[C_ROLE] = ROLE_PY
            fd = c[C_FD]
            c[C_BUSY_FD] = fd
            target = c[C_WRITTEN]
            self._unlock()
            self._free.append(slot)
            self._lead(fd, target)
            return c[C_DURABLE] >= lsn
        self._l[slot] = lsn
        self._unlock()
        try:
            self._sem_wait(slot)
        except BaseException:
            self._abandon(slot)
            raise
        self._free.append(slot)
        if c[C_DURABLE] >= lsn:
            return True
        if c[C_STATE] == STATE_FAILED:
            self._loop_failed()
        return False

    def advance(self, lsn: int) -> None:
        """Everything up to ``lsn`` is durable (a sealed segment). Holds the log's lock."""

        self._mlock()
        c = self._c
        if lsn > c[C_DURABLE]:
            c[C_DURABLE] = lsn
        posts = self._collect(c[C_DURABLE])
        self._unlock()
        self._post(posts)

    def rolled(self) -> None:
        """The log rolled to a new segment: sync a dup of its fd from now on. Holds the log's
        lock, after `advance` covered the sealed segment."""

        assert self._segments.fd is not None
        new = os.dup(self._segments.fd)
        self._mlock()
        c = self._c
        old = c[C_FD]
        c[C_FD] = new
        busy = old == c[C_BUSY_FD]
        self._unlock()
        if not busy and old >= 0:
            os.close(old)  # else the role holder closes it after its sync

    # --------------------------------------------------------------------- lifecycle

    def finish(self, lsn: int) -> bool:
        """Make everything up to ``lsn`` durable (for `FileLog.close`, with appends stopped).

        Raises:
            DurabilityError: the final fdatasync failed.
        """

        return self.wait_durable(lsn)

    def stop(self) -> None:
        """The log closed or failed: release every waiter and end the loop. Holds the log's
        lock (or none)."""

        self._mlock()
        c = self._c
        if c[C_STATE] == STATE_RUNNING:
            c[C_STATE] = STATE_STOPPED
        posts = self._collect(None)
        self._unlock()
        self._post(posts)
        self._libc.signal(self._cv)

    def join_thread(self, timeout: float | None = None) -> None:
        """Wait for the loop's thread to end (after `stop`), then close the fd dup."""

        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                return  # it still owns the fds; leave them
        _live.discard(self)
        self._mlock()
        c = self._c
        fd, c[C_FD] = c[C_FD], -1
        self._unlock()
        if fd >= 0:
            os.close(fd)

    def trace(self, capacity: int) -> None:
        """Record the loop's next ``capacity`` fdatasyncs (see `traced`), from now on; for
        benchmarks (the loop calls libc's fdatasync, which wrapping `os.fdatasync` cannot
        see). Syncs run by Python leaders, rolls and close go through `os.fdatasync`."""

        buf = np.zeros(4 * max(1, capacity), np.int64)
        self._mlock()
        self._trace = buf  # the loop picks the new array up on its next call only:
        self._c[C_TRACE_N] = 0
        self._c[C_TRACE_CAP] = 0
        self._unlock()
        self._restart_loop(capacity)

    def traced(self) -> list[tuple[float, float, float, int]]:
        """``(start, end, released, waiters)`` of each traced sync: when the fdatasync started
        and returned and when its waiters were released, in seconds (the `time.perf_counter`
        clock on Linux), and how many waiters it released."""

        n = self._c[C_TRACE_N]
        t = self._trace[: 4 * n].reshape(-1, 4)
        return [(a / 1e9, b / 1e9, c / 1e9, int(k)) for a, b, c, k in t.tolist()]

    # --------------------------------------------------------------------- internals

    def _mlock(self) -> None:
        # Never block on the mutex holding the GIL: its holder may be a Python thread that
        # needs the GIL to release it.
        if self._libc.trylock(self._m):
            self._libc.lock(self._m)

    def _unlock(self) -> None:
        self._libc.unlock(self._m)

    def _take_slot(self) -> int:
        try:
            return self._free.pop()
        except IndexError:
            pass
        with self._slot_wait:
            while True:
                n = self._c[C_SLOTS]
                if n < MAX_WAITERS:
                    if self._libc.sem_init(self._sems + n * _STRIDE, 0, 0):
                        raise OSError(ctypes.get_errno(), "sem_init failed")
                    self._mlock()
                    self._c[C_SLOTS] = n + 1
                    self._unlock()
                    return n
                try:
                    return self._free.pop()
                except IndexError:
                    self._slot_wait.wait(0.001)  # MAX_WAITERS appends are waiting

    def _sem_wait(self, slot: int) -> None:
        addr = self._sems + slot * _STRIDE
        while self._libc.sem_wait(addr):
            err = ctypes.get_errno()
            if err != errno.EINTR:
                raise OSError(err, f"sem_wait failed: {os.strerror(err)}")

    def _abandon(self, slot: int) -> None:
        """A waiter is leaving early (an exception in `sem_wait`): unregister its slot, or
        take the post already on its way, so the slot goes back clean."""

        self._mlock()
        registered = self._l[slot] != 0
        self._l[slot] = 0
        self._unlock()
        if not registered:
            self._sem_wait(slot)  # deregistered by a poster: its sem_post is imminent
        self._free.append(slot)

    def _collect(self, durable: int | None) -> list[int]:
        """Unregister the slots whose LSN is ``<= durable`` (all if None); return them.
        Holds the mutex."""

        lsns = self._l
        out = []
        for i in range(self._c[C_SLOTS]):
            v = lsns[i]
            if v and (durable is None or v <= durable):
                lsns[i] = 0
                out.append(i)
        return out

    def _post(self, slots: list[int]) -> None:
        post, sems = self._libc.sem_post, self._sems
        for i in slots:
            post(sems + i * _STRIDE)

    def _lead(self, fd: int, target: int) -> None:
        """Holding the sync role: fdatasync ``fd`` up to ``target``, release the satisfied
        waiters, then free the role or hand it to the loop if more was written meanwhile."""

        c = self._c
        try:
            os.fdatasync(fd)
        except OSError as exc:
            self._mlock()
            if c[C_STATE] == STATE_RUNNING:
                c[C_STATE] = STATE_FAILED
            c[C_ROLE] = ROLE_IDLE
            c[C_BUSY_FD] = -1
            retired = fd != c[C_FD]
            self._unlock()
            if retired:
                os.close(fd)
            with self._lock:
                raise self._fail(sync_failure(self._segments, target, exc)) from exc
        self._mlock()
        c[C_BUSY_FD] = -1
        retired = fd != c[C_FD]
        if target > c[C_DURABLE]:
            c[C_DURABLE] = target
        posts = self._collect(c[C_DURABLE])
        handoff = c[C_STATE] == STATE_RUNNING and c[C_WRITTEN] > c[C_DURABLE]
        c[C_ROLE] = ROLE_LOOP if handoff else ROLE_IDLE
        self._unlock()
        if retired:
            os.close(fd)
        self._post(posts)
        if handoff:
            if self._thread is None:
                try:
                    self._start_thread()
                except BaseException as exc:  # nobody would sync for the waiters
                    with self._lock:
                        error = self._fail(DurabilityError(
                            f"starting the group commit thread of {self._segments.directory} "
                            f"failed: {exc!r}"))
                    self._report_fatal(error)
                    raise error from exc
            self._libc.signal(self._cv)

    def _start_thread(self) -> None:
        with self._thread_lock:
            if self._thread is not None:
                return
            _request_kernel()
            self._thread = threading.Thread(
                target=self._run, name=f"FileLog-commit:{self._segments.directory.name}",
                daemon=True,
            )
            self._thread.start()

    def _run(self) -> None:
        """The loop's thread: the compiled loop when loaded, else its Python twin."""

        rc = RC_STOPPED
        _shorten_slice(SLICE_NS)
        try:
            while True:
                kernel = _kernel
                if kernel is not None:
                    rc = kernel(self._ctl, self._lsns, self._sync, self._trace, 0)
                else:
                    twin = _pytypes.FunctionType(_loop.__code__, {**_loop.__globals__,
                                                                   **_twin_globals()})
                    rc = twin(self._ctl, self._lsns, self._sync, self._trace, 1)
                if rc != RC_SWITCH:
                    break
                self._mlock()
                self._c[C_SWITCH] = 0
                self._unlock()
        except BaseException as exc:  # a bug here must fail the log loudly
            self._unlock()  # an error-checking mutex: a no-op unless this thread holds it
            self._mlock()
            self._c[C_STATE] = STATE_FAILED
            self._unlock()
            with self._lock:
                error = self._fail(DurabilityError(
                    f"the group committer of {self._segments.directory} crashed: {exc!r}"))
            self._report_fatal(error)
            raise
        if rc == RC_FAILED:
            self._report_fatal(self._loop_failed())

    def _restart_loop(self, trace_capacity: int) -> None:
        """Make the loop return and be called again (with new arrays), then set the trace."""

        self._mlock()
        self._c[C_TRACE_CAP] = trace_capacity
        self._c[C_SWITCH] = 1 if self._thread is not None else 0
        self._unlock()
        self._libc.signal(self._cv)

    def _kernel_loaded(self) -> None:
        """The compiled loop is ready: make a running twin return so `_run` switches."""

        self._mlock()
        self._c[C_SWITCH] = 1
        self._unlock()
        self._libc.signal(self._cv)

    def _loop_failed(self) -> DurabilityError:
        """The loop's fdatasync failed: fail the log (first failure wins); return the error."""

        c = self._c
        err = c[C_ERRNO]
        with self._lock:
            return self._fail(
                DurabilityError(
                    f"fdatasync of {self._segments.current.path} by the group commit loop "
                    f"failed (LSN up to {c[C_FAIL_TARGET]} not durable): [Errno {err}] "
                    f"{os.strerror(err)}"
                )
            )

    def _stop_loop_at_exit(self) -> None:
        self.stop()
        thread = self._thread
        if thread is not None:
            thread.join(5)
