"""`replaybuf.mirror_runs`: mirroring joined runs leaves a table exactly as mirroring each
event does. Real view (LMDB in a temp dir) and real tables; hypothesis picks the events."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from replaybuf import mirror_runs
from replaybuf.events import make_event
from replaybuf.table import Table
from replaybuf.table_config import SelectorConfig, TableConfig
from replaybuf.tensors import to_batch
from replaybuf.v1 import events_pb2, table_pb2
from replaybuf.view import View

SIG = {"obs": (np.float32, (3,)), "reward": (np.float32, ())}


def _config(max_times: int) -> TableConfig:
    return TableConfig("t", SIG, capacity=64, max_times_sampled=max_times,
                       sampler=SelectorConfig("prioritized", alpha=0.6))


def _events(ops: list[tuple[str, int, int]], cfg: TableConfig) -> list[events_pb2.Event]:
    events = [make_event(table_created=events_pb2.TableCreated(config=cfg.to_proto()))]
    next_id, present = 1, 0
    rng = np.random.default_rng(0)
    for kind, n, strings in ops:
        if kind == "append" and present + n <= cfg.capacity:
            ids = list(range(next_id, next_id + n))
            next_id += n
            present += n
            cols = {"obs": rng.random((n, 3), dtype=np.float32),
                    "reward": rng.random(n, dtype=np.float32)}
            lin = table_pb2.Lineage(episode_id=[7] * n, step=list(range(n)))
            if strings == 1:
                lin.request_id.extend([f"r{i}" for i in ids])
            elif strings == 2:
                lin.source.append("actor")  # one entry: broadcast
            events.append(make_event(items_appended=events_pb2.ItemsAppended(
                table="t", item_ids=ids, priorities=rng.random(n) + 0.5, lineage=lin,
                data=to_batch(cols))))
        elif kind == "sample" and next_id > 1:
            ids = rng.integers(1, next_id + 2, size=n).tolist()  # some absent, some repeated
            events.append(make_event(items_sampled=events_pb2.ItemsSampled(
                table="t", item_ids=ids)))
        elif kind == "update" and next_id > 1:
            ids = rng.integers(1, next_id, size=n).tolist()
            events.append(make_event(priorities_updated=events_pb2.PrioritiesUpdated(
                table="t", item_ids=ids, priorities=(rng.random(n) + 0.1).tolist())))
    return events


def _state(t: Table) -> tuple:
    s = t.export_state()
    info = t.limiter.state()
    return (s.ids.tolist(), s.slots.tolist(), s.priorities.tolist(),
            {k: v.tolist() for k, v in s.lineage.items()},
            {k: c[s.slots].tolist() for k, c in t._columns.items()},
            t._times[s.slots].tolist(), t._req[s.slots].tolist(), t._src[s.slots].tolist(),
            sorted(t._retired), info, t.lsn,
            t._sampler.total() if hasattr(t._sampler, "total") else None)


OPS = st.lists(st.tuples(st.sampled_from(["append", "sample", "update"]),
                         st.integers(1, 9), st.integers(0, 2)), max_size=25)


@settings(max_examples=40, deadline=None)
@given(ops=OPS, max_times=st.sampled_from([0, 2]), live=st.booleans())
def test_merged_runs_mirror_like_single_events(ops, max_times, live):
    cfg = _config(max_times)
    events = _events(ops, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        view, _ = View.open(Path(tmp) / "view", log_id="x" * 32, log_end=10**6, sync=False)
        try:
            one = Table(0, cfg, created_lsn=1)
            joined = Table(0, cfg, created_lsn=1)
            applied = view.write(list(enumerate(events, start=1)),
                                 lambda idx, c: one.allocator)
        finally:
            view.close()
    for a in applied[1:]:
        one.mirror(a, live=live)
    runs = list(mirror_runs.runs(applied[1:]))
    assert [a for run in runs for a in run] == applied[1:]  # every event once, in order
    for run in runs:
        assert len({(a.kind, a.table) for a in run}) == 1
        joined.mirror(mirror_runs.merged(run), live=live)
    assert _state(joined) == _state(one)


def test_runs_keep_other_events_alone():
    cfg = _config(0)
    events = _events([("append", 3, 0), ("append", 2, 1), ("update", 2, 0), ("sample", 4, 0),
                      ("sample", 3, 0), ("append", 1, 2)], cfg)
    with tempfile.TemporaryDirectory() as tmp:
        view, _ = View.open(Path(tmp) / "view", log_id="y" * 32, log_end=10**6, sync=False)
        t = Table(0, cfg, created_lsn=1)
        try:
            applied = view.write(list(enumerate(events, start=1)), lambda idx, c: t.allocator)
        finally:
            view.close()
    kinds = [[a.kind for a in run] for run in mirror_runs.runs(applied)]
    assert kinds == [["table_created"], ["items_appended"] * 2, ["priorities_updated"],
                     ["items_sampled"] * 2, ["items_appended"]]
    m = mirror_runs.merged(list(applied[1:3]))
    assert m.ids.tolist() == [1, 2, 3, 4, 5] and m.lsn == 3
    assert m.strings == (["", "", "", "r4", "r5"], [])
