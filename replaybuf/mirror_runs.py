"""Runs of applied events that the RAM mirror can take in one step.

A rebuild or catch-up applies thousands of events per write transaction, mostly long runs of
``items_appended`` (the fill) and of ``items_sampled`` (the learner's draws) of one table.
Mirrored one event at a time, each costs the same few dozen numpy calls and a sum-tree write
whatever its size. `runs` cuts the applied events into maximal runs of consecutive events of
one table and one of these two kinds, and `merged` joins a run into one `Applied` whose effect
on a `replaybuf.table.Table` equals that of its events in order:

* appends: ids ascend across the run and slots are distinct (the view allocated them one
  event after another), so writing the joined rows, ids, priorities, lineage and strings at
  the joined slots, inserting them into the selectors once, raising the max priority to the
  run's max and counting the inserts once is the same state.
* draws: times sampled are counts, so adding the joined draws once gives the same counts;
  retiring the items that reach ``max_times_sampled`` after the run retires the same items as
  checking after each event (counts only grow), and the rate limiter ends with the same
  counters (sample and delete counts are sums).

Any other event is mirrored alone, in log order with the runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from replaybuf.applier import Applied, broadcast_strings

__all__ = ["runs", "merged"]

_RUN_KINDS = ("items_appended", "items_sampled")


def _joinable(a: Applied) -> bool:
    return a.table >= 0 and a.kind in _RUN_KINDS and (
        a.kind == "items_sampled" or (a.rows is not None and a.ids.size > 0
                                      and a.values is not None and a.values.size == a.ids.size))


def runs(applied: list[Applied]) -> Iterator[list[Applied]]:
    """Maximal runs of consecutive events `merged` can join (one table, one kind); every
    other event is a run of its own. Log order is kept."""

    run: list[Applied] = []
    for a in applied:
        if run and _joinable(a) and a.kind == run[0].kind and a.table == run[0].table:
            run.append(a)
            continue
        if run:
            yield run
        run = [a]
        if not _joinable(a):
            yield run
            run = []
    if run:
        yield run


def merged(run: list[Applied]) -> Applied:
    """One `Applied` with the effect of a run from `runs` (the run's only event, if one)."""

    if len(run) == 1:
        return run[0]
    last = run[-1]
    ids = np.concatenate([a.ids for a in run])
    if last.kind == "items_sampled":
        return Applied(last.kind, last.lsn, last.table, ids, np.empty(0, np.int64), None,
                       last.event, count=sum(a.count for a in run))
    rows = np.concatenate([a.rows for a in run])  # type: ignore[misc]
    lineage = {name: np.concatenate([a.lineage[name] for a in run])  # type: ignore[index]
               for name in (run[0].lineage or {})}
    strings: tuple[list[str], list[str]] = ([], [])
    for k in range(2):
        if any(a.strings and a.strings[k] for a in run):
            strings[k].extend(s for a in run for s in broadcast_strings(
                a.strings[k] if a.strings else [], a.ids.size))
    return Applied(last.kind, last.lsn, last.table, ids, np.concatenate([a.slots for a in run]),
                   np.concatenate([a.values for a in run]), last.event,  # type: ignore[misc]
                   rows=rows, lineage=lineage, strings=strings)
