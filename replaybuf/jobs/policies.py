"""Eviction policies of hygiene jobs: each is a pure function of a `Snapshot` (and the run's
reference time) that marks items to evict, with the `EvictionReason` it logs.

Every policy matches on the whole snapshot independently of the others; the runner then gives
an item matched by several policies the reason of the first one in file order. "Newest" means
the highest item id (ids increase with appends, so this is append order).

``low_priority`` ("priority below a threshold for longer than a period"): an item matches when
its priority is below ``below`` now and has not changed for at least ``for``, i.e.
``priority < below and now - priority_ms >= for``, where ``priority_ms`` is the event time of
the item's last priority change (its append, then each ``PrioritiesUpdated`` that names it;
`Snapshot.priority_ms`). A priority that has not changed since then has been below the
threshold for that whole time. An update that keeps the priority below the threshold (even to
the same value) restarts the clock, so the policy may evict later than a full priority history
would allow, never earlier. Times are event times (the clock of the process that logged the
event), not the item time ``timestamp_ms`` that ``max_age`` uses; a priority changed after the
run's reference time never matches.

Example (TOML)::

    [[evict]]
    policy = "model_version"
    keep_newest = 3
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from replaybuf.errors import FailedPreconditionError, InvalidArgumentError
from replaybuf.jobs.jobfile import parse_duration_ms
from replaybuf.jobs.snapshot import Snapshot
from replaybuf.v1 import events_pb2

__all__ = [
    "EvictionPolicy", "MaxAge", "ModelVersion", "TimesSampled", "LowPriority", "InvalidData",
    "Duplicates", "MaxPerEpisode", "MaxPerModelVersion", "POLICIES", "parse_policy",
]


class EvictionPolicy:
    """Base: `select` returns a boolean mask over the snapshot's items."""

    kind: ClassVar[str] = ""
    reason: ClassVar[int] = events_pb2.EVICTION_REASON_UNSPECIFIED
    needs_request_ids: ClassVar[bool] = False
    needs_payload: ClassVar[bool] = False
    needs_priority_ms: ClassVar[bool] = False

    @property
    def reason_name(self) -> str:
        return events_pb2.EvictionReason.Name(self.reason)[len("EVICTION_REASON_"):]

    def select(self, snap: Snapshot, now_ms: int) -> np.ndarray:
        raise NotImplementedError

    def detail(self) -> str:
        raise NotImplementedError


def _newest_per_group(groups: np.ndarray, ids: np.ndarray, keep: int) -> np.ndarray:
    """Mask of items beyond the `keep` newest (highest id) of their group."""

    if not groups.size:
        return np.zeros(0, bool)
    order = np.lexsort((ids, groups))  # by group, then oldest first
    g = groups[order]
    end = np.r_[np.flatnonzero(g[1:] != g[:-1]) + 1, g.size]
    size = np.diff(np.r_[0, end])
    rank = np.repeat(end, size) - 1 - np.arange(g.size)  # 0 = newest of its group
    out = np.zeros(groups.size, bool)
    out[order[rank >= keep]] = True
    return out


@dataclass(frozen=True)
class MaxAge(EvictionPolicy):
    """Items older than `max_age_ms` at the run's reference time (age from ``timestamp_ms``)."""

    max_age_ms: int
    kind: ClassVar[str] = "max_age"
    reason: ClassVar[int] = events_pb2.EVICTION_REASON_AGE

    def select(self, snap: Snapshot, now_ms: int) -> np.ndarray:
        return (now_ms - snap.timestamp_ms) > self.max_age_ms

    def detail(self) -> str:
        return f"age > {self.max_age_ms} ms"


@dataclass(frozen=True)
class ModelVersion(EvictionPolicy):
    """Items of a model version below `below`, or older than the newest `keep_newest` versions
    present in the table."""

    keep_newest: int | None = None
    below: int | None = None
    kind: ClassVar[str] = "model_version"
    reason: ClassVar[int] = events_pb2.EVICTION_REASON_MODEL_VERSION

    def __post_init__(self) -> None:
        if self.keep_newest is None and self.below is None:
            raise InvalidArgumentError("policy model_version needs keep_newest = N or below = V")
        if self.keep_newest is not None and self.keep_newest < 1:
            raise InvalidArgumentError(f"keep_newest={self.keep_newest} must be >= 1")

    def select(self, snap: Snapshot, now_ms: int) -> np.ndarray:
        mask = np.zeros(len(snap), bool)
        if self.below is not None:
            mask |= snap.model_version < self.below
        if self.keep_newest is not None:
            versions = np.unique(snap.model_version)
            if versions.size > self.keep_newest:
                mask |= snap.model_version < versions[-self.keep_newest]
        return mask

    def detail(self) -> str:
        parts = []
        if self.keep_newest is not None:
            parts.append(f"older than the newest {self.keep_newest} model versions")
        if self.below is not None:
            parts.append(f"model_version < {self.below}")
        return " or ".join(parts)


@dataclass(frozen=True)
class TimesSampled(EvictionPolicy):
    """Items sampled at least `at_least` times."""

    at_least: int
    kind: ClassVar[str] = "times_sampled"
    reason: ClassVar[int] = events_pb2.EVICTION_REASON_TIMES_SAMPLED

    def __post_init__(self) -> None:
        if self.at_least < 1:
            raise InvalidArgumentError(f"times_sampled at_least={self.at_least} must be >= 1")

    def select(self, snap: Snapshot, now_ms: int) -> np.ndarray:
        return snap.times_sampled >= self.at_least

    def detail(self) -> str:
        return f"times_sampled >= {self.at_least}"


@dataclass(frozen=True)
class LowPriority(EvictionPolicy):
    """Priority below `below` now and unchanged for at least `for_ms` at the reference time
    (so below for at least `for_ms`; exact semantics in the module docstring)."""

    below: float
    for_ms: int = 0
    kind: ClassVar[str] = "low_priority"
    reason: ClassVar[int] = events_pb2.EVICTION_REASON_LOW_PRIORITY
    needs_priority_ms: ClassVar[bool] = True

    def select(self, snap: Snapshot, now_ms: int) -> np.ndarray:
        if snap.priority_ms is None:
            # Never guess when a priority changed: evicting on a missing time could be early.
            raise FailedPreconditionError(
                f"low_priority needs each item's priority time; the snapshot of table "
                f"{snap.table!r} has none (an Export snapshot: use the view or the log)")
        return (snap.priority < self.below) & ((now_ms - snap.priority_ms) >= self.for_ms)

    def detail(self) -> str:
        return f"priority < {self.below:g}, unchanged for >= {self.for_ms} ms"


@dataclass(frozen=True)
class InvalidData(EvictionPolicy):
    """NaN/inf in any float payload field other than the reward, a non-finite reward, or a
    reward outside ``reward_range`` (inclusive). The reward is its current value, after
    corrections, so a corrected reward makes the item valid again."""

    reward_range: tuple[float, float] | None = None
    kind: ClassVar[str] = "invalid_data"
    reason: ClassVar[int] = events_pb2.EVICTION_REASON_INVALID_DATA
    needs_payload: ClassVar[bool] = True

    def select(self, snap: Snapshot, now_ms: int) -> np.ndarray:
        assert snap.nonfinite is not None, "snapshot taken without payload"
        mask = snap.nonfinite | ~np.isfinite(snap.reward)
        if self.reward_range is not None:
            lo, hi = self.reward_range
            mask |= (snap.reward < lo) | (snap.reward > hi)
        return mask

    def detail(self) -> str:
        rng = "" if self.reward_range is None else f", reward outside {list(self.reward_range)}"
        return f"NaN/inf in a field{rng}"


@dataclass(frozen=True)
class Duplicates(EvictionPolicy):
    """Items whose (non-empty) inference request id an earlier item already has; the first
    (lowest id) is kept."""

    kind: ClassVar[str] = "duplicates"
    reason: ClassVar[int] = events_pb2.EVICTION_REASON_DUPLICATE
    needs_request_ids: ClassVar[bool] = True

    def select(self, snap: Snapshot, now_ms: int) -> np.ndarray:
        assert snap.request_id is not None, "snapshot taken without request ids"
        mask = np.zeros(len(snap), bool)
        has = np.flatnonzero(snap.request_id != "")
        if has.size:
            _, first = np.unique(snap.request_id[has].astype(str), return_index=True)
            mask[has] = True
            mask[has[first]] = False
        return mask

    def detail(self) -> str:
        return "same request id as an earlier item"


@dataclass(frozen=True)
class MaxPerEpisode(EvictionPolicy):
    """All but the newest `max_items` items of each episode."""

    max_items: int
    kind: ClassVar[str] = "max_per_episode"
    reason: ClassVar[int] = events_pb2.EVICTION_REASON_EPISODE_LIMIT

    def select(self, snap: Snapshot, now_ms: int) -> np.ndarray:
        return _newest_per_group(snap.episode, snap.ids, self.max_items)

    def detail(self) -> str:
        return f"more than {self.max_items} items in the episode (kept the newest)"


@dataclass(frozen=True)
class MaxPerModelVersion(EvictionPolicy):
    """All but the newest `max_items` items of each model version."""

    max_items: int
    kind: ClassVar[str] = "max_per_model_version"
    reason: ClassVar[int] = events_pb2.EVICTION_REASON_MODEL_VERSION_LIMIT

    def select(self, snap: Snapshot, now_ms: int) -> np.ndarray:
        return _newest_per_group(snap.model_version, snap.ids, self.max_items)

    def detail(self) -> str:
        return f"more than {self.max_items} items of the model version (kept the newest)"


POLICIES: dict[str, type[EvictionPolicy]] = {
    p.kind: p for p in (MaxAge, ModelVersion, TimesSampled, LowPriority, InvalidData,
                        Duplicates, MaxPerEpisode, MaxPerModelVersion)
}


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgumentError(f"{what} is {value!r}; give an integer >= 0")
    return value


def parse_policy(doc: dict[str, Any], where: str) -> EvictionPolicy:
    """One ``[[evict]]`` table -> a policy. Unknown keys are errors."""

    d = dict(doc)
    kind = d.pop("policy", None)
    if kind not in POLICIES:
        raise InvalidArgumentError(f"{where}: policy is {kind!r}; use one of {sorted(POLICIES)}")
    try:
        if kind == "max_age":
            p: EvictionPolicy = MaxAge(parse_duration_ms(d.pop("max_age", None), "max_age"))
        elif kind == "model_version":
            kn, below = d.pop("keep_newest", None), d.pop("below", None)
            p = ModelVersion(None if kn is None else _count(kn, "keep_newest"),
                             None if below is None else int(below))
        elif kind == "times_sampled":
            p = TimesSampled(_count(d.pop("at_least", None), "at_least"))
        elif kind == "low_priority":
            below = d.pop("below", None)
            if not isinstance(below, (int, float)) or isinstance(below, bool) or not math.isfinite(
                    below):
                raise InvalidArgumentError(f"below is {below!r}; give a number")
            p = LowPriority(float(below), parse_duration_ms(d.pop("for", 0), "for"))
        elif kind == "invalid_data":
            rng = d.pop("reward_range", None)
            if rng is not None and (not isinstance(rng, list) or len(rng) != 2
                                    or not rng[0] <= rng[1]):
                raise InvalidArgumentError(f"reward_range is {rng!r}; give [low, high]")
            p = InvalidData(None if rng is None else (float(rng[0]), float(rng[1])))
        elif kind == "duplicates":
            p = Duplicates()
        elif kind == "max_per_episode":
            p = MaxPerEpisode(_count(d.pop("max_items", None), "max_items"))
        else:
            p = MaxPerModelVersion(_count(d.pop("max_items", None), "max_items"))
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{where} ({kind}): {exc}") from None
    if d:
        raise InvalidArgumentError(f"{where} ({kind}): unknown keys {sorted(d)}")
    return p
