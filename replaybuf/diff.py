"""What changed between two LSNs (`Engine.diff`, ``replaybuf diff``, the Diff RPC).

Counts come from the events in ``(from_lsn, to_lsn]``. The priority mass (sum of p^alpha over
present items with a prioritized sampler, of raw p otherwise, as `TableInfo.total_priority`)
at an LSN is computed by replaying the log from LSN 1: table definitions, appends, priority
updates and evictions, one dict entry per present item. Simple and exact, at the cost of one
pass over the log up to `to_lsn` (about the cost of a view rebuild without LMDB writes), so this
is an analyst's tool, not a hot path. Item counts count items actually changed: ids that were
absent when the event applied are skipped, as the applier skips them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from replaybuf.events import decode_event
from replaybuf.table_config import TableConfig
from replaybuf.v1 import events_pb2, service_pb2

if TYPE_CHECKING:
    from replaybuf.log import Log

__all__ = ["DiffResult", "compute_diff", "reason_name", "source_name"]


def reason_name(code: int) -> str:
    """``EVICTION_REASON_CAPACITY`` -> ``capacity`` (the names `Engine.evict` accepts)."""

    return events_pb2.EvictionReason.Name(code)[len("EVICTION_REASON_"):].lower()


def source_name(code: int) -> str:
    """``FEEDBACK_SOURCE_HUMAN`` -> ``human``."""

    return events_pb2.FeedbackSource.Name(code)[len("FEEDBACK_SOURCE_"):].lower()


@dataclass(frozen=True)
class DiffResult:
    """The changes in ``(from_lsn, to_lsn]``; see ``DiffResponse`` in service.proto.

    Reasons and sources are lower-case names without prefix (``"capacity"``, ``"human"``).
    """

    from_lsn: int
    to_lsn: int
    appended: int = 0
    evicted_by_reason: dict[str, int] = field(default_factory=dict)
    corrected_by_source: dict[str, int] = field(default_factory=dict)
    flagged: int = 0
    labelled: int = 0
    priority_updates: int = 0
    priority_mass_from: float = 0.0
    priority_mass_to: float = 0.0
    events_by_kind: dict[str, int] = field(default_factory=dict)

    def to_proto(self) -> service_pb2.DiffResponse:
        return service_pb2.DiffResponse(
            from_lsn=self.from_lsn, to_lsn=self.to_lsn, appended=self.appended,
            evicted_by_reason=self.evicted_by_reason,
            corrected_by_source=self.corrected_by_source, flagged=self.flagged,
            labelled=self.labelled, priority_updates=self.priority_updates,
            priority_mass_from=self.priority_mass_from, priority_mass_to=self.priority_mass_to,
            events_by_kind=self.events_by_kind)

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def table_text(self) -> str:
        """A two-column human table."""

        rows: list[tuple[str, str]] = [
            ("range", f"({self.from_lsn}, {self.to_lsn}]"),
            ("appended", str(self.appended)),
        ]
        rows += [(f"evicted {k}", str(v)) for k, v in sorted(self.evicted_by_reason.items())]
        rows += [(f"corrected {k}", str(v)) for k, v in sorted(self.corrected_by_source.items())]
        rows += [("flagged", str(self.flagged)), ("labelled", str(self.labelled)),
                 ("priority updates", str(self.priority_updates)),
                 ("priority mass from", f"{self.priority_mass_from:.6g}"),
                 ("priority mass to", f"{self.priority_mass_to:.6g}")]
        rows += [(f"events {k}", str(v)) for k, v in sorted(self.events_by_kind.items())]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


class _Replay:
    """Present items and their raw priorities per table, as of the last event fed."""

    def __init__(self) -> None:
        self.configs: dict[str, TableConfig] = {}
        self.prios: dict[str, dict[int, float]] = {}

    def mass(self, table: str | None) -> float:
        total = 0.0
        for name, prios in self.prios.items():
            if table is not None and name != table or not prios:
                continue
            p = np.fromiter(prios.values(), np.float64, len(prios))
            sampler = self.configs[name].sampler
            total += float((p ** sampler.alpha).sum() if sampler.kind == "prioritized"
                           else p.sum())
        return total


def compute_diff(log: Log, from_lsn: int, to_lsn: int, table: str | None) -> DiffResult:
    """Replay the log up to `to_lsn` and count the changes after `from_lsn` (bounds checked by
    the caller: ``0 <= from_lsn <= to_lsn <= applied LSN``)."""

    state = _Replay()
    mass_from = 0.0
    counts: Counter[str] = Counter()
    evicted: Counter[str] = Counter()
    corrected: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for rec in log.read(1, to_lsn) if to_lsn >= 1 else ():
        ev = decode_event(rec.payload, lsn=rec.lsn)
        kind = ev.WhichOneof("body") or ""
        body = getattr(ev, kind)
        name = body.config.name if kind == "table_created" else getattr(body, "table", "")
        counted = rec.lsn > from_lsn and (table is None or name == table)
        if counted:
            kinds[kind] += 1
        if kind == "table_created":
            if name not in state.configs:
                state.configs[name] = TableConfig.from_proto(body.config)
                state.prios[name] = {}
        elif name in state.prios:
            prios = state.prios[name]
            if kind == "items_appended":
                prios.update(zip(body.item_ids, body.priorities))
                if counted:
                    counts["appended"] += len(body.item_ids)
            elif kind == "priorities_updated":
                n = 0
                for i, p in zip(body.item_ids, body.priorities):
                    if i in prios:
                        prios[i] = p
                        n += 1
                if counted:
                    counts["priority_updates"] += n
            elif kind == "items_evicted":
                n = sum(prios.pop(i, None) is not None for i in set(body.item_ids))
                if counted and n:
                    evicted[reason_name(body.reason)] += n
            elif kind == "rewards_corrected" and counted:
                n = sum(i in prios for i in body.item_ids)
                if n:
                    corrected[source_name(body.source)] += n
            elif kind == "items_flagged_for_review" and counted:
                counts["flagged"] += sum(i in prios for i in set(body.item_ids))
            elif kind == "label_applied" and counted:
                counts["labelled"] += 1
        if rec.lsn == from_lsn:
            mass_from = state.mass(table)
    return DiffResult(
        from_lsn=from_lsn, to_lsn=to_lsn, appended=counts["appended"],
        evicted_by_reason=dict(evicted), corrected_by_source=dict(corrected),
        flagged=counts["flagged"], labelled=counts["labelled"],
        priority_updates=counts["priority_updates"], priority_mass_from=mass_from,
        priority_mass_to=state.mass(table), events_by_kind=dict(kinds))
