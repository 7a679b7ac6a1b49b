"""A table's rate limiter: a minimum size to sample and a samples-per-insert ratio.

The model is Reverb's (`reverb/rate_limiters.py`, `reverb/cc/rate_limiter.cc`), so RL readers
know the words. The limiter keeps three counters: ``inserts`` (items ever appended), ``samples``
(items ever handed to a learner; a batch of B counts as B) and ``deletes`` (items removed by
eviction or by the remover). From them:

* ``size = inserts - deletes``. No sample is allowed while ``size < min_size_to_sample``
  ("stage 1"); inserts are always allowed then.
* ``diff = inserts * samples_per_insert - samples``. With a ratio limit, a sample is allowed
  while ``diff - 1 >= min_diff`` and an insert while ``diff + samples_per_insert <= max_diff``,
  where ``min_diff, max_diff = min_size_to_sample * samples_per_insert -/+ error_buffer``. The
  offset makes the ratio count only what happens after the table first reached its minimum size.

Batches: a batch of n is admitted when its *first* item is, and then counts as n. It may thus
overshoot a bound by less than its size (``diff`` stays within
``[min_diff - (B - 1), max_diff + (n - 1) * samples_per_insert]`` for sample batches of at most
B and insert batches of at most n, as long as concurrent callers use reservations and no
delete takes the table back below its minimum size, which frees inserts as in Reverb). We chose this over "the whole batch must fit" because that
rule deadlocks as soon as a batch is larger than the window ``2 * error_buffer`` (no diff lets
it in), and a learner's batch of 256 against a small error buffer is a normal configuration.
Admission also stops depending on n, so waiters are woken one at a time in order (no herd).
Reverb checks each item and may return a partial batch; our batches are all or nothing.

Validation guarantees liveness as in Reverb: ``error_buffer >= max(1, samples_per_insert)``,
so whenever no reservation is outstanding an insert or a sample is allowed (a process that only inserts and one
that only samples can never deadlock each other through the limiter).

Concurrency: a reservation (``reserve_insert``/``reserve_sample``) counts against the limit
from admission until the event is applied, so callers that wait and then append to the log in
parallel cannot all pass one check and overshoot together; pending inserts count as done for the
insert check and as absent for the sample check (and vice versa), so whichever reservations
commit or are released, the bounds hold.

Thread-safety: every method is thread-safe. One lock guards the counters; blocking calls wait on
one of two conditions sharing it (one for inserts, one for samples, as in Reverb), and each
state change wakes at most one waiter of each kind, which wakes the next if there is still room.
Every call is O(1) except :meth:`RateLimiter.cancel`, which wakes every waiter.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from replaybuf._validation import is_int as _is_int, is_real as _is_real
from replaybuf.errors import (
    ClosedError,
    FailedPreconditionError,
    InvalidArgumentError,
    RateLimitTimeoutError,
)

__all__ = [
    "RateLimiterConfig",
    "RateLimiter",
    "RateLimiterStats",
    "RateLimiterState",
    "Reservation",
]

_Kind = Literal["insert", "sample"]


def _num(x: float) -> str:
    """Formats a count or a diff for messages: ``3`` not ``3.0``, ``2.5`` as is."""

    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.6g}"


@dataclass(frozen=True)
class RateLimiterConfig:
    """How fast learners may sample a table relative to how fast actors fill it.

    Example::

        # Learners wait for 1000 items, then sample each item about 8 times on average,
        # running at most 800 samples ahead of or behind that ratio.
        cfg = RateLimiterConfig.sample_to_insert_ratio(8.0, min_size_to_sample=1000,
                                                       error_buffer=800.0)
        assert (cfg.min_diff, cfg.max_diff) == (7200.0, 8800.0)
    """

    min_size_to_sample: int = 1
    """Samples block until the table holds at least this many items (>= 1). Inserts never
    block while the table is smaller than this."""

    samples_per_insert: float | None = None
    """Target average number of times each item is sampled (a batch of B counts as B samples).
    None: no ratio limit, only `min_size_to_sample` applies (Reverb's ``MinSize``)."""

    error_buffer: float | None = None
    """How far (in samples) the learners may run ahead of or behind `samples_per_insert` before
    the limiter blocks them or the actors. Required with `samples_per_insert`, and at least
    ``max(1, samples_per_insert)`` so that one insert or one sample always fits."""

    def __post_init__(self) -> None:
        m = self.min_size_to_sample
        if not _is_int(m) or m < 1:
            raise InvalidArgumentError(
                f"min_size_to_sample is {m!r}; it must be an integer >= 1 "
                f"(use 1 to allow sampling as soon as the table holds an item)"
            )
        object.__setattr__(self, "min_size_to_sample", int(m))
        spi, eb = self.samples_per_insert, self.error_buffer
        if spi is None:
            if eb is not None:
                raise InvalidArgumentError(
                    f"error_buffer is {eb!r} but samples_per_insert is None; set "
                    f"samples_per_insert to limit the ratio, or leave error_buffer as None"
                )
            return
        if not _is_real(spi) or not math.isfinite(spi) or spi <= 0:
            raise InvalidArgumentError(
                f"samples_per_insert is {spi!r}; it must be a finite number > 0 "
                f"(or None for no ratio limit)"
            )
        object.__setattr__(self, "samples_per_insert", float(spi))
        if eb is None:
            raise InvalidArgumentError(
                f"error_buffer is None but samples_per_insert is {spi!r}; a ratio limit needs "
                f"one: set error_buffer >= max(1, samples_per_insert) = "
                f"{_num(max(1.0, float(spi)))}"
            )
        floor = max(1.0, float(spi))
        if not _is_real(eb) or not math.isfinite(eb) or eb < floor:
            # Reverb: a smaller buffer could block samples and/or inserts for good.
            raise InvalidArgumentError(
                f"error_buffer is {eb!r}; with samples_per_insert={spi!r} it must be a finite "
                f"number >= max(1, samples_per_insert) = {_num(floor)}, or a smaller window "
                f"could block both inserts and samples forever; raise error_buffer"
            )
        object.__setattr__(self, "error_buffer", float(eb))

    @classmethod
    def min_size(cls, min_size_to_sample: int) -> RateLimiterConfig:
        """Blocks samples until the table holds `min_size_to_sample` items; no ratio limit."""

        return cls(min_size_to_sample=min_size_to_sample)

    @classmethod
    def sample_to_insert_ratio(
        cls, samples_per_insert: float, min_size_to_sample: int, error_buffer: float
    ) -> RateLimiterConfig:
        """Reverb's ``SampleToInsertRatio(samples_per_insert, min_size_to_sample, error_buffer)``."""

        return cls(
            min_size_to_sample=min_size_to_sample,
            samples_per_insert=samples_per_insert,
            error_buffer=error_buffer,
        )

    @property
    def min_diff(self) -> float:
        """Lowest allowed ``inserts * samples_per_insert - samples`` (-inf without a ratio)."""

        if self.samples_per_insert is None or self.error_buffer is None:
            return -math.inf
        return self.min_size_to_sample * self.samples_per_insert - self.error_buffer

    @property
    def max_diff(self) -> float:
        """Highest allowed ``inserts * samples_per_insert - samples`` (+inf without a ratio)."""

        if self.samples_per_insert is None or self.error_buffer is None:
            return math.inf
        return self.min_size_to_sample * self.samples_per_insert + self.error_buffer


@dataclass(frozen=True)
class RateLimiterState:
    """The limiter's counters, as :meth:`RateLimiter.state` returns and `restore` takes.

    The limiter persists nothing. After a restart the table rebuilds these from the log while
    it replays it into the view: ``inserts`` = items appended, ``deletes`` = items evicted or
    removed, ``samples`` = items sampled as recorded in the log (a batch of B counts as B).
    """

    inserts: int = 0
    samples: int = 0
    deletes: int = 0

    def __post_init__(self) -> None:
        for name in ("inserts", "samples", "deletes"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise InvalidArgumentError(f"{name} is {v!r}; it must be an integer >= 0")
            object.__setattr__(self, name, int(v))
        if self.deletes > self.inserts:
            raise InvalidArgumentError(
                f"deletes is {self.deletes} but inserts is only {self.inserts}; a table cannot "
                f"delete more items than were inserted: recount both from the log"
            )


@dataclass(frozen=True)
class RateLimiterStats:
    """A consistent snapshot of a limiter, for DescribeTable.

    Attributes:
        size: items in the table as the limiter counts them (``inserts - deletes``).
        inserts: items inserted so far (committed).
        samples: items sampled so far (committed; a batch of B counts as B).
        deletes: items deleted so far.
        diff: ``inserts * samples_per_insert - samples`` (samples_per_insert taken as 1 when
            there is no ratio limit, as in Reverb's MinSize; it then limits nothing).
        min_diff: lower bound for diff (-inf without a ratio limit).
        max_diff: upper bound for diff (+inf without a ratio limit).
        pending_inserts: inserts reserved and not yet committed or released.
        pending_samples: samples reserved and not yet committed or released.
        waiting_inserts: insert calls blocked right now.
        waiting_samples: sample calls blocked right now.
        blocked_inserts: insert calls that found the limit closed on arrival (they waited,
            or with ``timeout=0`` were refused), whatever their outcome.
        blocked_samples: the same for sample calls.
        insert_wait_s: total seconds insert calls have spent blocked (finished waits only;
            concurrent waits add up, so this can exceed wall time).
        sample_wait_s: the same for sample calls.
        cancelled: True after :meth:`RateLimiter.cancel`.
    """

    size: int
    inserts: int
    samples: int
    deletes: int
    diff: float
    min_diff: float
    max_diff: float
    pending_inserts: int
    pending_samples: int
    waiting_inserts: int
    waiting_samples: int
    blocked_inserts: int
    blocked_samples: int
    insert_wait_s: float
    sample_wait_s: float
    cancelled: bool


@dataclass
class _Side:
    """Per-kind bookkeeping (one for inserts, one for samples); guarded by the limiter's lock."""

    cond: threading.Condition
    committed: int = 0
    pending: int = 0
    waiting: int = 0
    blocked: int = 0
    wait_s: float = 0.0


class Reservation:
    """The right to insert or sample n items, held from admission until the event is applied.

    Returned by :meth:`RateLimiter.reserve_insert` and :meth:`RateLimiter.reserve_sample`.
    While held, its n items count against the limit, so concurrent callers cannot all pass
    the check and then overshoot together. Use it as a context manager: it commits on normal
    exit and is released (counts for nothing) on an exception. Do not wait on the same limiter
    while holding one: the pending items could be what blocks you.
    """

    __slots__ = ("_limiter", "_side", "n", "kind", "_done")

    def __init__(self, limiter: RateLimiter, side: _Side, kind: _Kind, n: int) -> None:
        self._limiter = limiter
        self._side = side
        self.kind: _Kind = kind
        self.n = n
        self._done: str | None = None

    def commit(self, n: int | None = None) -> None:
        """Records that the event was applied, for `n` items (default all; the rest are released).

        Raises:
            InvalidArgumentError: `n` is not in ``1..self.n``.
            FailedPreconditionError: the reservation was already committed or released.
        """

        k = self.n if n is None else _check_count(n, "n")
        if k > self.n:
            raise InvalidArgumentError(
                f"n is {k} but this {self.kind} reservation holds only {self.n}; "
                f"commit at most {self.n}"
            )
        self._limiter._finish(self, k)

    def release(self) -> None:
        """Gives the reservation back without recording anything (the event failed)."""

        self._limiter._finish(self, 0)

    @property
    def done(self) -> bool:
        """Committed or released already."""

        return self._done is not None

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._done is None:
            self._limiter._finish(self, self.n if exc_type is None else 0)

    def __repr__(self) -> str:
        return f"Reservation(kind={self.kind!r}, n={self.n}, done={self._done!r})"


def _check_count(n: object, what: str = "n") -> int:
    if not _is_int(n) or n < 1:  # type: ignore[operator]
        raise InvalidArgumentError(f"{what} is {n!r}; it must be an integer >= 1")
    return int(n)  # type: ignore[call-overload]


def _deadline(timeout: object) -> float | None:
    if timeout is None:
        return None
    if not _is_real(timeout) or math.isnan(timeout) or timeout < 0:  # type: ignore[arg-type,operator]
        raise InvalidArgumentError(
            f"timeout is {timeout!r}; use None to wait forever, 0 to try without waiting, "
            f"or a number of seconds > 0"
        )
    if math.isinf(timeout):  # type: ignore[arg-type]
        return None
    return time.monotonic() + float(timeout)  # type: ignore[arg-type]


class RateLimiter:
    """Blocks inserts and samples on one table to keep the learners in step with the actors.

    See the module docstring for the model. Two ways to use it:

    * ``reserve_insert`` / ``reserve_sample`` (preferred where calls run concurrently): wait,
      then hold the right until the event is applied; nothing can overshoot in between.
    * ``await_can_insert`` / ``await_can_sample`` then ``insert`` / ``sample`` (Reverb's
      ``AwaitCanInsert`` then ``Insert``): the wait reserves nothing, so callers that are not
      serialized by an outer lock between the two calls may overshoot the bounds by what they
      do concurrently. ``insert``/``sample``/``delete`` alone also record events replayed
      without waiting.

    Example::

        limiter = RateLimiter(RateLimiterConfig.min_size(2), name="replay")
        limiter.insert(2)                       # the append was applied to the view
        with limiter.reserve_sample(32, timeout=1.0):
            pass                                # draw 32 items from the sum-tree here
        assert limiter.stats().samples == 32

    Thread-safety: all methods are thread-safe and O(1) (``cancel`` is O(waiters)).
    """

    def __init__(self, config: RateLimiterConfig | None = None, *, name: str = "table") -> None:
        self._config = config if config is not None else RateLimiterConfig()
        if not isinstance(self._config, RateLimiterConfig):
            raise InvalidArgumentError(
                f"config is {config!r}; pass a RateLimiterConfig (or None for the defaults)"
            )
        self._name = name
        self._min_size = self._config.min_size_to_sample
        self._spi = self._config.samples_per_insert
        self._min_diff = self._config.min_diff
        self._max_diff = self._config.max_diff
        self._lock = threading.Lock()
        self._ins = _Side(threading.Condition(self._lock))
        self._smp = _Side(threading.Condition(self._lock))
        self._deletes = 0
        self._cancelled = False

    @property
    def config(self) -> RateLimiterConfig:
        return self._config

    @property
    def name(self) -> str:
        return self._name

    # -- admission (callers hold self._lock) ------------------------------------------------

    def _insert_allowed(self) -> bool:
        # Pending inserts count as done (they may all commit); pending samples as not done (they
        # may all be released). So whatever subset of reservations commits, diff stays in bounds.
        ins = self._ins.committed + self._ins.pending
        if ins - self._deletes + 1 <= self._min_size or self._spi is None:
            return True
        return (ins + 1) * self._spi - self._smp.committed <= self._max_diff

    def _sample_allowed(self) -> bool:
        # The mirror image: pending samples count as done, pending inserts as not done.
        if self._ins.committed - self._deletes < self._min_size:
            return False
        if self._spi is None:
            return True
        return self._ins.committed * self._spi - self._smp.committed - self._smp.pending - 1 >= (
            self._min_diff
        )

    def _allowed(self, kind: _Kind) -> bool:
        return self._insert_allowed() if kind == "insert" else self._sample_allowed()

    def _signal(self) -> None:
        # Wake one waiter per kind that can go; an admitted waiter calls this again, so the
        # wake-up passes down the line while there is room (Reverb's MaybeSignalCondVars).
        if self._ins.waiting and self._insert_allowed():
            self._ins.cond.notify()
        if self._smp.waiting and self._sample_allowed():
            self._smp.cond.notify()

    def _await(self, kind: _Kind, n: int, timeout: float | None, reserve: bool) -> None:
        n = _check_count(n)
        deadline = _deadline(timeout)
        side = self._ins if kind == "insert" else self._smp
        with self._lock:
            if self._cancelled:
                raise ClosedError(self._closed_message(kind, n))
            if not self._allowed(kind):
                side.blocked += 1
                side.waiting += 1
                start = time.monotonic()
                admitted = False
                try:
                    while True:
                        # Checked after every wake-up, timed out or not: a wake-up meant for
                        # this waiter must not be lost because its deadline passed meanwhile.
                        if self._cancelled:
                            raise ClosedError(self._closed_message(kind, n))
                        if self._allowed(kind):
                            admitted = True
                            break
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            raise RateLimitTimeoutError(self._timeout_message(kind, n, timeout))
                        side.cond.wait(remaining)
                finally:
                    side.waiting -= 1
                    side.wait_s += time.monotonic() - start
                    if not admitted and not self._cancelled:
                        self._signal()  # pass on a wake-up this waiter took as it gave up
            if reserve:
                side.pending += n
            self._signal()

    # -- blocking and non-blocking checks ----------------------------------------------------

    def await_can_insert(self, n: int = 1, timeout: float | None = None) -> None:
        """Blocks until an insert of `n` items is allowed; reserves nothing (see the class doc).

        Args:
            n: batch size (admitted when its first item is; see the module docstring).
            timeout: seconds to wait; None waits forever; 0 tries without waiting.

        Raises:
            RateLimitTimeoutError: still not allowed after `timeout` seconds; the message says
                what it waited for and which setting to change.
            ClosedError: :meth:`cancel` was called, before or during the wait.
            InvalidArgumentError: `n` < 1 or `timeout` < 0.
        """

        self._await("insert", n, timeout, reserve=False)

    def await_can_sample(self, n: int = 1, timeout: float | None = None) -> None:
        """Blocks until a sample of a batch of `n` items is allowed; reserves nothing.

        Same arguments and errors as :meth:`await_can_insert`.
        """

        self._await("sample", n, timeout, reserve=False)

    def reserve_insert(self, n: int = 1, timeout: float | None = None) -> Reservation:
        """Blocks like :meth:`await_can_insert`, then reserves `n` inserts until committed."""

        self._await("insert", n, timeout, reserve=True)
        return Reservation(self, self._ins, "insert", int(n))

    def reserve_sample(self, n: int = 1, timeout: float | None = None) -> Reservation:
        """Blocks like :meth:`await_can_sample`, then reserves `n` samples until committed."""

        self._await("sample", n, timeout, reserve=True)
        return Reservation(self, self._smp, "sample", int(n))

    def can_insert(self, n: int = 1) -> bool:
        """True iff ``await_can_insert(n, timeout=0)`` would return now (False once cancelled)."""

        _check_count(n)
        with self._lock:
            return not self._cancelled and self._insert_allowed()

    def can_sample(self, n: int = 1) -> bool:
        """True iff ``await_can_sample(n, timeout=0)`` would return now (False once cancelled)."""

        _check_count(n)
        with self._lock:
            return not self._cancelled and self._sample_allowed()

    # -- recording ----------------------------------------------------------------------------

    def insert(self, n: int = 1) -> None:
        """Records that `n` items were inserted (call after the event is applied to the view)."""

        n = _check_count(n)
        with self._lock:
            self._ins.committed += n
            self._signal()

    def sample(self, n: int = 1) -> None:
        """Records that a batch of `n` items was sampled: it counts as `n` samples."""

        n = _check_count(n)
        with self._lock:
            self._smp.committed += n
            self._signal()

    def delete(self, n: int = 1) -> None:
        """Records that `n` items left the table (evicted or removed); the size shrinks.

        Raises:
            InvalidArgumentError: `n` exceeds the size; the caller recorded an eviction before
                the insert it undoes (record both in log order, under the table's apply lock).
        """

        n = _check_count(n)
        with self._lock:
            size = self._ins.committed - self._deletes
            if n > size:
                raise InvalidArgumentError(
                    f"delete of {n} items on table {self._name!r} but the rate limiter counts "
                    f"only {size}; record inserts and deletes in log order"
                )
            self._deletes += n
            self._signal()

    def _finish(self, r: Reservation, k: int) -> None:
        with self._lock:
            if r._done is not None:
                raise FailedPreconditionError(
                    f"this {r.kind} reservation of {r.n} on table {self._name!r} was already "
                    f"{r._done}; reserve again for another {r.kind}"
                )
            r._done = "committed" if k else "released"
            r._side.pending -= r.n
            r._side.committed += k
            self._signal()

    def cancel(self) -> None:
        """Wakes every waiter with `ClosedError`; later waits raise it at once (on table close).

        Recording (``insert``, ``sample``, ``delete``, committing reservations) still works, so
        events already in flight can finish. Idempotent.
        """

        with self._lock:
            self._cancelled = True
            self._ins.cond.notify_all()
            self._smp.cond.notify_all()

    # -- state --------------------------------------------------------------------------------

    def state(self) -> RateLimiterState:
        """The committed counters (see `RateLimiterState` for how a table derives them)."""

        with self._lock:
            return RateLimiterState(self._ins.committed, self._smp.committed, self._deletes)

    def restore(self, state: RateLimiterState) -> None:
        """Replaces the counters, e.g. with those rebuilt from the log after a restart.

        Raises:
            FailedPreconditionError: reservations are outstanding (restore before serving).
        """

        if not isinstance(state, RateLimiterState):
            raise InvalidArgumentError(f"state is {state!r}; pass a RateLimiterState")
        with self._lock:
            if self._ins.pending or self._smp.pending:
                raise FailedPreconditionError(
                    f"cannot restore table {self._name!r}'s rate limiter with "
                    f"{self._ins.pending} inserts and {self._smp.pending} samples reserved; "
                    f"restore before the table serves calls"
                )
            self._ins.committed = state.inserts
            self._smp.committed = state.samples
            self._deletes = state.deletes
            self._signal()

    def stats(self) -> RateLimiterStats:
        """A consistent snapshot of counters and call statistics, taken under the lock."""

        with self._lock:
            spi = 1.0 if self._spi is None else self._spi
            return RateLimiterStats(
                size=self._ins.committed - self._deletes,
                inserts=self._ins.committed,
                samples=self._smp.committed,
                deletes=self._deletes,
                diff=self._ins.committed * spi - self._smp.committed,
                min_diff=self._min_diff,
                max_diff=self._max_diff,
                pending_inserts=self._ins.pending,
                pending_samples=self._smp.pending,
                waiting_inserts=self._ins.waiting,
                waiting_samples=self._smp.waiting,
                blocked_inserts=self._ins.blocked,
                blocked_samples=self._smp.blocked,
                insert_wait_s=self._ins.wait_s,
                sample_wait_s=self._smp.wait_s,
                cancelled=self._cancelled,
            )

    # -- messages (callers hold self._lock) ---------------------------------------------------

    def _closed_message(self, kind: _Kind, n: int) -> str:
        what = kind if n == 1 else f"{kind} of {n} items"
        return (
            f"{what} on table {self._name!r} was cancelled: the table's rate limiter was "
            f"cancelled because the table is closing; reopen the table or its client"
        )

    def _timeout_message(self, kind: _Kind, n: int, timeout: float | None) -> str:
        what = kind if n == 1 else f"{kind} of {n} items"
        if timeout == 0:
            head = f"{what} on table {self._name!r} could not proceed without waiting (timeout=0)"
        else:
            head = f"{what} on table {self._name!r} waited {_num(float(timeout or 0))} s"
        ins, smp = self._ins, self._smp
        size = ins.committed - self._deletes
        spi = self._spi
        if kind == "sample":
            if size < self._min_size:
                why = (
                    f"table has {size} items, min_size_to_sample is {self._min_size}; "
                    f"append more items or lower min_size_to_sample"
                )
            else:
                assert spi is not None
                diff = ins.committed * spi - smp.committed - smp.pending
                reserved = f", counting {smp.pending} reserved samples" if smp.pending else ""
                why = (
                    f"the learners are ahead of the actors: diff = inserts * samples_per_insert "
                    f"- samples = {ins.committed} * {_num(spi)} - "
                    f"{smp.committed + smp.pending} = {_num(diff)}{reserved}, and one more "
                    f"sample would take it below min_diff {_num(self._min_diff)} "
                    f"(min_size_to_sample * samples_per_insert - error_buffer); append more "
                    f"items, or raise samples_per_insert or error_buffer"
                )
            if ins.pending:
                why += f" ({ins.pending} inserts are reserved but not yet applied)"
        else:
            assert spi is not None
            total = ins.committed + ins.pending
            diff = total * spi - smp.committed
            reserved = f", counting {ins.pending} reserved inserts" if ins.pending else ""
            why = (
                f"the actors are ahead of the learners: diff = inserts * samples_per_insert - "
                f"samples = {total} * {_num(spi)} - {smp.committed} = {_num(diff)}{reserved}, "
                f"and one more insert would take it above max_diff {_num(self._max_diff)} "
                f"(min_size_to_sample * samples_per_insert + error_buffer); sample more, or "
                f"lower samples_per_insert or raise error_buffer"
            )
            if smp.pending:
                why += f" ({smp.pending} samples are reserved but not yet applied)"
        return f"{head}: {why}"

    def __repr__(self) -> str:
        return f"RateLimiter({self._config!r}, name={self._name!r})"
