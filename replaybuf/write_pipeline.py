"""The engine's write pipeline: frames logged in order under the writer lock, made durable and
applied to the view outside it, in LSN order, several frames per view transaction.

Why: a durable append costs a log fdatasync and a view commit (another fsync). With the writer
lock held across both, concurrent appends queue behind each other's fsyncs and never share one.
Here an append holds the writer lock only to validate, assign ids and pick victims, and to queue
its frame in the log (`Log.begin_append`, which fixes its LSNs). It then releases the lock and
waits for the frame's ack; frames queued meanwhile by other callers join the same group commit.
Once its frame is durable, a caller applies the head of the queue in one view transaction: its
own frame, the frames before it (durable too: the log makes frames durable in order) and the
frames after it whose callers are already waiting to apply. Every other caller whose frame that
transaction covered returns without a view write.

Invariants kept:

* ``applied_lsn <= durable_lsn`` under ``group``/``always``: a frame is applied only after a
  frame at or after it was acked.
* The view applies frames in LSN order, each exactly once (`View.write` checks it too).
* The RAM state the writer path reads (`Table.occupied`, the remover) plus the frames still in
  flight (`InFlight.added`, `InFlight.victims`) describe the table as it will be once they are
  applied: `state` is the lock that makes the two consistent; mirroring holds it.
* Writers that need the exact state (every change but an append; an append that must pick
  victims from items that are in flight) call `settle` under the writer lock first: it waits
  until nothing is in flight, which makes them behave exactly as with one lock held throughout.

A failure (the log's fsync, the view write) fails the engine: every waiting caller gets the
error, later calls get `FailedPreconditionError` from the engine, and reopening recovers from
the log.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from replaybuf.errors import FailedPreconditionError
from replaybuf.log import AppendResult, PendingAppend
from replaybuf.rate_limiter import Reservation
from replaybuf.results import AppendAck
from replaybuf.v1 import events_pb2
from replaybuf.view import Applied

__all__ = ["AppendTicket", "InFlight", "WritePipeline"]

Records = list[tuple[int, events_pb2.Event]]


class InFlight:
    """One logged frame, from `WritePipeline.begin` until it is applied.

    Attributes:
        pending: the log's handle of the frame.
        events: its events, in LSN order.
        columns: the decoded arrays of its ItemsAppended (LSN -> field -> array), if any.
        table: the table index an append adds to (-1 for other frames).
        added: items the frame adds to `table`.
        victims: ids it evicts from `table` to make room (empty if none).
        reservation: the append's rate-limiter reservation, committed right after the frame
            is mirrored, in LSN order: a later frame of the same transaction may evict these
            items, and the limiter must count an insert before its delete.
    """

    __slots__ = ("pending", "events", "columns", "table", "added", "victims", "reservation",
                 "ready", "done", "applied", "error")

    def __init__(self, pending: PendingAppend, events: list[events_pb2.Event],
                 columns: Mapping[int, Mapping[str, np.ndarray]] | None = None, *,
                 table: int = -1, added: int = 0,
                 victims: np.ndarray | None = None,
                 reservation: Reservation | None = None) -> None:
        self.pending = pending
        self.events = events
        self.columns = columns
        self.table = table
        self.added = added
        self.victims = victims if victims is not None else np.empty(0, np.uint64)
        self.reservation = reservation
        self.ready = False  # its caller holds the ack and waits to apply
        self.done = False
        self.applied: list[Applied] = []
        self.error: BaseException | None = None

    def records(self) -> Records:
        first = self.pending.first_lsn
        return [(first + i, ev) for i, ev in enumerate(self.events)]


class WritePipeline:
    """The frames in flight of one engine, and their ordered, grouped application.

    Args:
        write: writes records to the view in one transaction and returns what it applied
            (`View.write`); called by one thread at a time, without `state` held.
        mirror: mirrors applied events in RAM; called with `state` held.
        fail: puts the engine in its failed state.
    """

    def __init__(self, write: Callable[[Records, Mapping[int, Mapping[str, np.ndarray]]],
                                       list[Applied]],
                 mirror: Callable[[Records, list[Applied]], None],
                 fail: Callable[[BaseException], None]) -> None:
        self._write = write
        self._mirror = mirror
        self._fail = fail
        self._queue: deque[InFlight] = deque()
        self._apply_lock = threading.Lock()  # one view transaction at a time
        self.state = threading.Lock()
        """Held while mirroring and while the writer path reads RAM state with `in_flight`."""
        self._cond = threading.Condition(self.state)
        self._added: dict[int, int] = {}
        self._victims: dict[int, list[np.ndarray]] = {}
        self._failure: BaseException | None = None
        self._open = 0  # frames begun and not yet applied (queued, or taken by an applier)

    # -- under the writer lock ---------------------------------------------------------------

    def begin(self, entry: InFlight) -> InFlight:
        """Queue a frame whose LSNs the log just fixed (call under the writer lock, right
        after `Log.begin_append`, so that the queue is in LSN order)."""

        with self.state:
            self._queue.append(entry)
            self._open += 1
            if entry.table >= 0:
                self._added[entry.table] = self._added.get(entry.table, 0) + entry.added
                if entry.victims.size:
                    self._victims.setdefault(entry.table, []).append(entry.victims)
        return entry

    def in_flight(self, table: int) -> tuple[int, np.ndarray]:
        """Items that frames in flight add to `table`, and the ids they evict from it. Call
        with `state` held (with the writer lock), together with the table's RAM state."""

        parts = self._victims.get(table)
        victims = np.concatenate(parts) if parts else np.empty(0, np.uint64)
        return self._added.get(table, 0), victims

    @property
    def busy(self) -> bool:
        """Frames are in flight."""

        return self._open > 0

    def settle(self) -> None:
        """Wait until every frame in flight is applied (call with the writer lock held, so
        that none is added meanwhile).

        Raises:
            FailedPreconditionError: the engine failed meanwhile.
        """

        with self._cond:
            while self._open and self._failure is None:
                self._cond.wait()
            self._raise_failure()

    # -- outside the writer lock --------------------------------------------------------------

    def finish(self, entry: InFlight) -> tuple[AppendResult, list[Applied]]:
        """Wait for the entry's ack, then apply it (with whatever is ready around it) unless
        another caller did; returns the ack and what the view applied for its events.

        Raises:
            DurabilityError: the log failed to make the frame durable.
            FailedPreconditionError: an earlier frame's apply failed.
            Exception: the view write's error, when this call ran it.
        """

        try:
            ack = entry.pending.wait()
        except BaseException as exc:
            self._abort(exc)
            raise
        with self.state:
            entry.ready = True
        while True:
            with self._apply_lock:
                with self.state:
                    if entry.done:
                        break
                    self._raise_failure()
                    batch = self._take(entry)
                self._apply(batch)
        if entry.error is not None:
            raise entry.error
        return ack, entry.applied

    def _take(self, entry: InFlight) -> list[InFlight]:
        """The head of the queue through `entry`, then the ready frames right after it."""

        batch: list[InFlight] = []
        queue = self._queue
        taken = False
        while queue and not (taken and not queue[0].ready):
            e = queue.popleft()
            batch.append(e)
            taken = taken or e is entry
        return batch

    def _apply(self, batch: list[InFlight]) -> None:
        records: Records = []
        columns: dict[int, Mapping[str, np.ndarray]] = {}
        for e in batch:
            records.extend(e.records())
            if e.columns:
                columns.update(e.columns)
        try:
            applied = self._write(records, columns)
        except BaseException as exc:
            with self._cond:
                for e in batch:
                    e.error, e.done = exc, True
            self._abort(exc)
            raise
        with self._cond:
            by_lsn = iter(applied)
            pending = next(by_lsn, None)
            for e in batch:
                last = e.pending.last_lsn
                while pending is not None and pending.lsn <= last:
                    e.applied.append(pending)
                    pending = next(by_lsn, None)
            try:
                for e in batch:  # frame by frame: each append's inserts count before the next
                    self._mirror(e.records(), e.applied)
                    if e.reservation is not None:
                        e.reservation.commit()
            except BaseException as exc:
                for e in batch:
                    e.error, e.done = exc, True
                self._abort_locked(exc)
                raise
            for e in batch:
                e.done = True
                if e.table >= 0:
                    self._forget(e)
            self._open -= len(batch)
            self._cond.notify_all()

    def _forget(self, e: InFlight) -> None:
        left = self._added[e.table] - e.added
        if left:
            self._added[e.table] = left
        else:
            del self._added[e.table]
        if e.victims.size:
            parts = self._victims[e.table]
            del parts[next(i for i, p in enumerate(parts) if p is e.victims)]
            if not parts:
                del self._victims[e.table]

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise FailedPreconditionError(
                f"the engine's write path failed ({type(self._failure).__name__}: "
                f"{self._failure}); close and reopen the engine to recover from the log"
            ) from self._failure

    def _abort(self, exc: BaseException) -> None:
        with self._cond:
            self._abort_locked(exc)

    def _abort_locked(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._fail(exc)
        self._cond.notify_all()


class AppendTicket:
    """An engine append whose frame is logged, in call order (`Engine.begin_append`).

    `result` waits for the frame's fsync and view apply (`WritePipeline.finish`; the pipeline
    commits the rate-limiter reservation when it mirrors the frame; an error or a duplicate
    releases it) and returns the `AppendAck`; later calls return the same ack. Call it promptly and from one thread:
    under group commit the caller may hold the log's committer role, which the frames queued
    behind it wait for.
    """

    __slots__ = ("_table", "_ids", "_victims", "_reservation", "_pending", "_entry",
                 "_pipeline", "_ids_of_frame", "_ack")

    def __init__(self, table: str, ids: np.ndarray, victims: np.ndarray,
                 reservation: Reservation | None, pending: PendingAppend | None,
                 entry: InFlight | None, pipeline: WritePipeline | None,
                 ids_of_frame: Callable[[AppendResult], np.ndarray] | None) -> None:
        self._table, self._ids, self._victims = table, ids, victims
        self._reservation, self._pending, self._entry = reservation, pending, entry
        self._pipeline, self._ids_of_frame = pipeline, ids_of_frame
        self._ack: AppendAck | None = None

    @classmethod
    def done(cls, ack: AppendAck) -> AppendTicket:
        """A ticket answered already (a producer's retry found in the log)."""

        t = cls(ack.table, ack.item_ids, ack.evicted_ids, None, None, None, None, None)
        t._ack = ack
        return t

    def result(self) -> AppendAck:
        """The append's ack once its frame is durable and applied.

        Raises:
            DurabilityError, FailedPreconditionError: the log or the view failed (the
                engine is now failed; reopening recovers from the log).
        """

        if self._ack is not None:
            return self._ack
        res: Any = self._reservation  # the pipeline commits it when the frame is mirrored
        try:
            if self._entry is None:
                ack = self._pending.wait()  # type: ignore[union-attr]
            else:
                ack, _ = self._pipeline.finish(self._entry)  # type: ignore[union-attr]
        except BaseException:
            if not res.done:
                res.release()
            raise
        ids, victims = self._ids, self._victims
        if ack.duplicate:
            res.release()
            ids, victims = self._ids_of_frame(ack), np.empty(0, np.uint64)  # type: ignore[misc]
        self._ack = AppendAck(self._table, ids, ack.first_lsn, ack.last_lsn, ack.durable,
                              ack.duplicate, victims)
        return self._ack
