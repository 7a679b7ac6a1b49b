"""`EngineFeedback`: the changes an `replaybuf.engine.Engine` makes to items already stored:
new priorities, reward corrections, evictions, job runs, review flags and labels.

A mixin of `Engine`, apart from the append and sample paths. Each method validates its input
before taking the writer lock, then, under it and once no append is in flight
(`Engine._check_settled`), checks which items are present and logs one event (`Engine._commit`),
which is applied to the view and the tables before it returns. Ids that are not present are
skipped and returned, so repeating a call changes nothing.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from replaybuf import audit
from replaybuf.engine_config import _is_int
from replaybuf.errors import (
    AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, InvalidPriorityError,
)
from replaybuf.events import make_event
from replaybuf.results import EvictResult, UpdateResult
from replaybuf.v1 import events_pb2
from replaybuf.view import View

if TYPE_CHECKING:
    from replaybuf.log import AppendResult
    from replaybuf.table import Table
    from replaybuf.view import Applied

__all__ = ["EngineFeedback"]


class EngineFeedback:
    """Changes of stored items by `Engine` (see the module docstring)."""

    _view: View
    _write_lock: threading.Lock

    if TYPE_CHECKING:  # provided by Engine
        def _check_open(self) -> None: ...

        def _check_settled(self) -> None: ...

        def _table(self, name: str) -> Table: ...

        def _commit(self, events: list[events_pb2.Event]) -> tuple[AppendResult, list[Applied]]: ...

    def update_priorities(self, table: str, item_ids: Sequence[int] | np.ndarray,
                          priorities: Sequence[float] | np.ndarray, *,
                          source: str = "") -> UpdateResult:
        """Set new raw priorities (logged as ``PrioritiesUpdated``; the last of repeated ids
        wins). Missing ids are skipped and returned; nothing is logged if all are missing.

        Raises:
            InvalidPriorityError: a NaN, infinite or negative priority (nothing logged).
        """

        self._check_open()
        t = self._table(table)
        ids = _ids(item_ids)
        prios = _priorities(priorities, ids.size, "priorities")
        with self._write_lock:
            self._check_settled()
            mask = t.present(ids)
            if not mask.any():
                return UpdateResult(0, np.unique(ids[~mask]))
            ev = events_pb2.PrioritiesUpdated(table=table, item_ids=ids[mask].tolist(),
                                              priorities=prios[mask].tolist(), source=source)
            ack, _ = self._commit([make_event(priorities_updated=ev)])
        return UpdateResult(ack.last_lsn, np.unique(ids[~mask]))

    def correct_rewards(
        self, table: str, item_ids: Sequence[int] | np.ndarray,
        rewards: Sequence[float] | np.ndarray, *, source: str | int = "human",
        fidelity_weight: float = 1.0, reason: str = "", author: str = "",
    ) -> UpdateResult:
        """Correct rewards (logged as ``RewardsCorrected`` with the previous values). Later
        samples return the corrected reward; the stored payload keeps the original.

        Args:
            source: ``"human"``, ``"model"``, ``"rule"`` or a ``FeedbackSource`` value.
            fidelity_weight: trust in the source, in [0, 1].

        Raises:
            FailedPreconditionError: the table has no reward field.
            InvalidArgumentError: a non-finite reward (or non-integer for an integer field).
        """

        self._check_open()
        t = self._table(table)
        if not t.config.has_reward:
            raise FailedPreconditionError(
                f"table {table!r} has no reward field {t.config.reward_field!r}; set "
                f"TableConfig.reward_field to a scalar field to allow corrections"
            )
        ids = _ids(item_ids)
        vals = _priorities(rewards, ids.size, "rewards", negative_ok=True)
        if t.config.field(t.config.reward_field).dtype.kind in "iu" and (vals % 1).any():
            raise InvalidArgumentError(
                f"rewards {vals[(vals % 1) != 0][:3].tolist()} are not integers but table "
                f"{table!r}'s reward field is {t.config.field(t.config.reward_field).dtype}"
            )
        src = _enum(events_pb2.FeedbackSource, source, "FEEDBACK_SOURCE_", "source")
        if not isinstance(fidelity_weight, numbers.Real) or not 0 <= fidelity_weight <= 1:
            raise InvalidArgumentError(
                f"fidelity_weight is {fidelity_weight!r}; it must be a number in [0, 1]"
            )
        with self._write_lock:
            self._check_settled()
            mask, slots = t.slots_of(ids)
            if not mask.any():
                return UpdateResult(0, np.unique(ids[~mask]))
            ev = events_pb2.RewardsCorrected(
                table=table, item_ids=ids[mask].tolist(), rewards=vals[mask].tolist(),
                previous_rewards=t.rewards(slots[mask]).tolist(), source=src,
                fidelity_weight=float(fidelity_weight), reason=reason, author=author)
            ack, _ = self._commit([make_event(rewards_corrected=ev)])
        return UpdateResult(ack.last_lsn, np.unique(ids[~mask]))

    def evict(self, table: str, item_ids: Sequence[int] | np.ndarray, *,
              reason: str | int = "manual", job_id: str = "", detail: str = "") -> EvictResult:
        """Evict items (logged as ``ItemsEvicted``). Missing ids are skipped and returned, so
        re-running the same eviction changes nothing.

        Args:
            reason: an ``EvictionReason`` name without prefix (``"manual"``, ``"age"``, ...)
                or value.
        """

        self._check_open()
        t = self._table(table)
        ids = np.unique(_ids(item_ids))
        code = _enum(events_pb2.EvictionReason, reason, "EVICTION_REASON_", "reason")
        with self._write_lock:
            self._check_settled()
            mask = t.present(ids)
            if not mask.any():
                return EvictResult(0, 0, ids[~mask])
            ev = events_pb2.ItemsEvicted(table=table, item_ids=ids[mask].tolist(), reason=code,
                                         job_id=job_id, detail=detail)
            ack, _ = self._commit([make_event(items_evicted=ev)])
        return EvictResult(ack.last_lsn, int(mask.sum()), ids[~mask])

    # -- job runs -----------------------------------------------------------------------------

    def record_job(self, job: events_pb2.JobCompleted,
                   retrain: events_pb2.RetrainRecommended | None = None) -> tuple[int, int]:
        """Record a finished job run (``JobCompleted``, plus ``RetrainRecommended`` when given)
        in one atomic append; returns its ``(first_lsn, last_lsn)``.

        Raises:
            AlreadyExistsError: a run with this job id was recorded before (nothing logged);
                `get_job` returns it.
            InvalidArgumentError: no job id.
            TableNotFoundError: the job's table does not exist.
        """

        self._check_open()
        if not isinstance(job, events_pb2.JobCompleted) or not job.job_id:
            raise InvalidArgumentError(f"job is {job!r}; pass a JobCompleted with a job_id")
        self._table(job.table)
        events = [make_event(job_completed=job)]
        if retrain is not None:
            if retrain.table not in ("", job.table) or retrain.job_id not in ("", job.job_id):
                raise InvalidArgumentError(
                    f"retrain names table {retrain.table!r} and job {retrain.job_id!r}; it "
                    f"must name the job's table {job.table!r} and id {job.job_id!r}"
                )
            r = events_pb2.RetrainRecommended()
            r.CopyFrom(retrain)
            r.job_id, r.table = job.job_id, job.table
            events.append(make_event(retrain_recommended=r))
        with self._write_lock:
            self._check_settled()
            old = self._view.get_job(job.job_id)
            if old is not None:
                raise AlreadyExistsError(
                    f"job {job.job_id!r} was already recorded at LSN {old[0]}; use a new job id "
                    f"to run it again"
                )
            ack, _ = self._commit(events)
        return ack.first_lsn, ack.last_lsn

    # -- lineage, review and audit (issue 6; the logic lives in replaybuf.audit) -------------

    def flag_for_review(self, table: str, item_ids: Sequence[int] | np.ndarray, *,
                        reason: str = "", author: str = "") -> UpdateResult:
        """Flag present items for human review (``ItemsFlaggedForReview``); missing ids are
        skipped and returned, nothing is logged if all are missing."""

        self._check_open()
        t = self._table(table)
        ids = _ids(item_ids)
        with self._write_lock:
            self._check_settled()
            mask = t.present(ids)
            if not mask.any():
                return UpdateResult(0, np.unique(ids[~mask]))
            ev = events_pb2.ItemsFlaggedForReview(table=table, item_ids=ids[mask].tolist(),
                                                  reason=reason, author=author)
            ack, _ = self._commit([make_event(items_flagged_for_review=ev)])
        return UpdateResult(ack.last_lsn, np.unique(ids[~mask]))

    def apply_label(self, table: str, item_id: int, verdict: str, *,
                    reward: float | None = None, priority: float | None = None,
                    author: str = "", note: str = "") -> tuple[int, int]:
        """Record a verdict on a pending item: ``LabelApplied`` plus its consequences
        (`replaybuf.review`) in one atomic append; returns ``(first_lsn, last_lsn)``.

        Raises:
            FailedPreconditionError: the item is not pending review (nothing logged).
            InvalidArgumentError: a bad verdict/reward/priority combination.
        """

        self._check_open()
        t = self._table(table)
        if not _is_int(item_id) or item_id < 1:
            raise InvalidArgumentError(f"item_id is {item_id!r}; pass an integer >= 1")
        if reward is not None and not t.config.has_reward:
            raise FailedPreconditionError(
                f"table {table!r} has no reward field {t.config.reward_field!r}; relabel needs "
                f"one (TableConfig.reward_field)")
        with self._write_lock:
            self._check_settled()
            if not audit.is_pending(self._view, t.index, int(item_id)):
                raise FailedPreconditionError(
                    f"item {item_id} of table {table!r} is not pending review; flag it first "
                    f"(flag_for_review) or see list_pending_reviews")
            mask, slots = t.slots_of([int(item_id)])
            previous = float(t.rewards(slots)[0]) if reward is not None and mask[0] else None
            events = audit.label_events(table, int(item_id), verdict, reward=reward,
                                        priority=priority, author=author, note=note,
                                        previous_reward=previous)
            ack, _ = self._commit(events)
        return ack.first_lsn, ack.last_lsn


def _ids(item_ids: object) -> np.ndarray:
    arr = np.asarray(item_ids)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise InvalidArgumentError(
            f"item_ids must be a 1-D sequence of integers; got {arr.dtype} of shape {arr.shape}"
        )
    if arr.size and arr.dtype.kind == "i" and arr.min() < 0:
        raise InvalidArgumentError(f"item_ids holds {int(arr.min())}; ids are >= 1")
    return arr.astype(np.uint64)


def _priorities(values: object, n: int, name: str, *, negative_ok: bool = False) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.ndim != 1 or arr.size != n or (arr.size and arr.dtype.kind not in "iuf"):
        raise InvalidArgumentError(
            f"{name} must be {n} real numbers (one per item); got {arr.dtype} of shape "
            f"{arr.shape}"
        )
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr) if negative_ok else ~(np.isfinite(arr) & (arr >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        v = float(arr[i])
        why = "NaN" if math.isnan(v) else "infinite" if math.isinf(v) else "negative"
        cls = InvalidArgumentError if negative_ok else InvalidPriorityError
        need = "finite" if negative_ok else "finite and >= 0"
        raise cls(f"{name}[{i}] is {why} ({v!r}); {name} must be {need}")
    return arr


def _enum(enum: object, value: str | int, prefix: str, what: str) -> int:
    names = [n[len(prefix):].lower() for n in enum.keys()][1:]  # type: ignore[attr-defined]
    if isinstance(value, str) and value.lower() in names:
        return int(enum.Value(prefix + value.upper()))  # type: ignore[attr-defined]
    if _is_int(value) and value in enum.values()[1:]:  # type: ignore[attr-defined]
        return int(value)  # type: ignore[arg-type]
    raise InvalidArgumentError(f"{what} is {value!r}; use one of {names}")
