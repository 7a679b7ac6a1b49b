"""Time travel: a table materialized as of LSN n equals the state after the events <= n.

A hypothesis sequence of appends, priority updates, reward corrections, evictions and samples
runs against the engine and a brute-force reference (a dict per item); after every operation
the reference is snapshotted at the engine's applied LSN. Each snapshot must equal
`Engine.materialize` at that LSN, and a replayed draw must equal the original one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replaybuf.engine import Engine, EngineConfig
from replaybuf.errors import InvalidArgumentError, TableNotFoundError
from replaybuf.table_config import SelectorConfig, TableConfig

SIG = {"obs": (np.float32, (2,)), "tag": np.int64, "reward": np.float32}
CAP = 6

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 4)),
        st.tuples(st.just("update"), st.integers(0, 30), st.floats(0.1, 5.0)),
        st.tuples(st.just("correct"), st.integers(0, 30), st.floats(-3.0, 3.0)),
        st.tuples(st.just("evict"), st.integers(0, 30)),
        st.tuples(st.just("sample"), st.integers(1, 4), st.integers(0, 2**32)),
    ),
    min_size=1, max_size=14,
)


def _config() -> TableConfig:
    return TableConfig("t", SIG, capacity=CAP, remover=SelectorConfig("fifo"))


def _state(engine: Engine, lsn: int) -> dict[int, tuple[Any, ...]]:
    out = {}
    for c in engine.materialize("t", lsn, chunk_items=3):
        for i, item_id in enumerate(c.ids.tolist()):
            out[item_id] = (float(c.columns["obs"][i][0]), int(c.columns["tag"][i]),
                            float(c.columns["reward"][i]), float(c.priorities[i]),
                            int(c.times_sampled[i]), int(c.lineage["step"][i]))
    return out


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_materialized_state_equals_the_events_up_to_each_lsn(tmp_path_factory, sequence) -> None:
    d = tmp_path_factory.mktemp("mat")
    ref: dict[int, list[Any]] = {}
    snaps: dict[int, dict[int, tuple[Any, ...]]] = {}
    draws = []
    tag = 0
    with Engine(d, EngineConfig.for_tests()) as engine:
        engine.create_table(_config())
        snaps[engine.applied_lsn] = {}
        for op in sequence:
            live = sorted(ref)
            if op[0] == "append":
                n = op[1]
                tags = np.arange(tag, tag + n)
                tag += n
                ack = engine.append("t", {"obs": np.repeat(tags[:, None], 2, 1).astype(np.float32),
                                          "tag": tags, "reward": (tags * 0.5).astype(np.float32)},
                                    priorities=np.full(n, 1.0), lineage={"step": tags})
                over = len(ref) + n - CAP
                for v in sorted(ref)[:max(over, 0)]:  # fifo remover: oldest ids first
                    del ref[v]
                for i, t in zip(ack.item_ids.tolist(), tags.tolist()):
                    ref[i] = [float(t), t, t * 0.5, 1.0, 0, t]
            elif not live:
                continue
            elif op[0] == "update":
                i = live[op[1] % len(live)]
                engine.update_priorities("t", [i], [op[2]])
                ref[i][3] = op[2]
            elif op[0] == "correct":
                i = live[op[1] % len(live)]
                engine.correct_rewards("t", [i], [op[2]])
                ref[i][2] = float(np.float32(op[2]))
            elif op[0] == "evict":
                i = live[op[1] % len(live)]
                engine.evict("t", [i])
                del ref[i]
            else:
                s = engine.sample("t", op[1], seed=op[2], beta=0.5)
                draws.append(s)
                engine.flush_samples()
                for i in s.info.item_ids.tolist():
                    ref[i][4] += 1
            snaps[engine.applied_lsn] = {k: tuple(v) for k, v in ref.items()}
        for lsn, expected in snaps.items():
            assert _state(engine, lsn) == expected, lsn
        for s in draws:
            r = engine.replay_sample("t", s.info.lsn, len(s.info.item_ids), beta=0.5,
                                     seed=s.info.seed)
            assert r.info.item_ids.tolist() == s.info.item_ids.tolist()
            np.testing.assert_array_equal(r.info.weights, s.info.weights)


def test_replayed_draw_matches_the_original_and_changes_nothing(tmp_path) -> None:
    with Engine(tmp_path, EngineConfig.for_tests()) as engine:
        engine.create_table(_config())
        tags = np.arange(5)
        engine.append("t", {"obs": np.zeros((5, 2), np.float32), "tag": tags,
                            "reward": np.zeros(5, np.float32)}, priorities=[1, 2, 3, 4, 5])
        first = engine.sample("t", 4, seed=7)
        engine.update_priorities("t", [1, 2], [9.0, 0.1])
        engine.flush_samples()
        lsn = engine.applied_lsn
        again = engine.sample("t", 4, seed=7, at_lsn=first.info.lsn)
        assert again.info.item_ids.tolist() == first.info.item_ids.tolist()
        np.testing.assert_array_equal(again.info.weights, first.info.weights)
        np.testing.assert_array_equal(again.info.probabilities, first.info.probabilities)
        assert engine.flush_samples() == lsn  # nothing logged
        with pytest.raises(InvalidArgumentError, match="seed"):
            engine.replay_sample("t", lsn, 2)


def test_materialize_rejects_lsns_outside_the_log_and_tables_not_yet_created(tmp_path) -> None:
    with Engine(tmp_path, EngineConfig.for_tests()) as engine:
        engine.create_table(_config())
        engine.create_table(TableConfig("u", SIG, capacity=4))
        with pytest.raises(InvalidArgumentError, match="as_of_lsn"):
            list(engine.materialize("t", engine.applied_lsn + 5))
        with pytest.raises(TableNotFoundError, match="did not exist at LSN 1"):
            list(engine.materialize("u", 1))
        assert list(engine.materialize("u")) == []


# -- the scan equals the applier's LMDB view ----------------------------------------------------

TWO_SIG = {"obs": (np.float32, (2,)), "reward": np.float32, "done": np.bool_}

mixed_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from("tu"), st.integers(1, 5),
                  st.sampled_from(["none", "one", "each"])),
        st.tuples(st.just("update"), st.sampled_from("tu"), st.lists(st.integers(0, 8),
                                                                     min_size=1, max_size=6)),
        st.tuples(st.just("correct"), st.sampled_from("tu"), st.lists(st.integers(0, 8),
                                                                     min_size=1, max_size=6)),
        st.tuples(st.just("evict"), st.sampled_from("tu"), st.lists(st.integers(0, 8),
                                                                    min_size=1, max_size=3)),
        st.tuples(st.just("sample"), st.sampled_from("tu"), st.integers(1, 6)),
        st.tuples(st.just("flag"), st.sampled_from("tu"), st.integers(0, 8)),
    ),
    min_size=1, max_size=25,
)


def _recent(back: list[int], step: int) -> np.ndarray:
    """Ids counted back from the newest (likely present, repeats likely, either table)."""

    return np.maximum(step - np.asarray(back), 1).astype(np.uint64)


def _view_items(view: Any, name: str) -> list[tuple[Any, ...]]:
    """Every present item of table `name` as the LMDB view (the applier) holds it."""

    rec = next(r for r in view.tables() if r.name == name)
    out = []
    for metas, rows in view.iter_items(rec.index, 7):
        req, src = view.read_strings(metas["item_id"])
        for i, m in enumerate(metas):
            out.append((int(m["item_id"]), rows["obs"][i].tolist(), float(np.float32(m["reward"])),
                        bool(rows["done"][i]), float(m["priority"]), int(m["times_sampled"]),
                        int(m["episode_id"]), int(m["step"]), int(m["model_version"]),
                        int(m["timestamp_ms"]), req[i], src[i]))
    return out


def _chunk_items(chunks: Any) -> list[tuple[Any, ...]]:
    out = []
    for c in chunks:
        for i in range(len(c)):
            lin = c.lineage
            out.append((int(c.ids[i]), c.columns["obs"][i].tolist(), float(c.columns["reward"][i]),
                        bool(c.columns["done"][i]), float(c.priorities[i]),
                        int(c.times_sampled[i]), int(lin["episode_id"][i]), int(lin["step"][i]),
                        int(lin["model_version"][i]), int(lin["timestamp_ms"][i]),
                        lin["request_id"][i], lin["source"][i]))
    return out


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mixed_ops, st.integers(1, 9))
def test_scan_equals_the_applier_view_at_every_lsn_with_two_tables(tmp_path_factory, sequence,
                                                                    chunk_items) -> None:
    """Repeated ids, absent ids, other tables' ids, 0/1/n lineage entries, capacity and
    manual evictions, draws and review flags: the vectorized scan gives, item for item, what
    the applier writes into LMDB (the live view at the end, a scratch view at each LSN)."""

    from replaybuf.materialize import Materialized

    d = tmp_path_factory.mktemp("scan")
    step = 0
    with Engine(d, EngineConfig.for_tests()) as engine:
        engine.create_table(TableConfig("t", TWO_SIG, capacity=5))
        engine.create_table(TableConfig("u", TWO_SIG, capacity=30))
        lsns = [engine.applied_lsn]
        for op in sequence:
            kind, table = op[0], op[1]
            if kind == "append":
                n, how = op[2], op[3]
                k = np.arange(step, step + n)
                step += n
                lineage: dict[str, Any] = {}
                if how == "one":
                    lineage = {"episode_id": 7, "request_id": f"r{step}", "source": "s"}
                elif how == "each":
                    lineage = {"episode_id": k // 3, "step": k, "model_version": -k,
                               "timestamp_ms": 1000 + k, "request_id": [f"q{i}" for i in k],
                               "source": [f"é{i % 2}" for i in k]}
                engine.append(table, {"obs": np.stack([k, -k], 1).astype(np.float32),
                                      "reward": (k * 0.25).astype(np.float32),
                                      "done": k % 2 == 0},
                              priorities=(k % 4 + 1).astype(float), lineage=lineage)
            elif kind in ("update", "correct"):
                ids = _recent(op[2], step)
                vals = np.arange(len(ids), dtype=float) + 0.5
                if kind == "update":
                    engine.update_priorities(table, ids, vals)
                else:
                    engine.correct_rewards(table, ids, -vals)
            elif kind == "evict":
                engine.evict(table, _recent(op[2], step))
            elif kind == "sample":
                if engine.describe_table(table).size:
                    engine.sample(table, op[2], seed=len(lsns))
                    engine.flush_samples()
            else:
                engine.flag_for_review(table, _recent([op[2]], step), reason="check")
            lsns.append(engine.applied_lsn)
        engine.flush_samples()
        for name in "tu":
            with engine.as_of(name) as m:
                assert _chunk_items(m.chunks(chunk_items)) == _view_items(engine.view, name)
                assert m.count == len(_view_items(engine.view, name))
        for lsn in sorted(set(lsns))[-4:]:
            with Materialized(engine.log, "t", lsn) as m:
                got = _chunk_items(m.chunks(chunk_items))
                view, _ = m._scratch()  # the applier's replay of the same events
                assert got == _view_items(view, "t"), lsn
                assert all(len(c) <= chunk_items for c in m.chunks(chunk_items))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=3) | st.sampled_from(["req-000001", "x" * 130, ""]),
                max_size=40),
       st.lists(st.sampled_from(["actor-0", "é", ""]), max_size=3),
       st.lists(st.integers(0, 2**64 - 1), max_size=5))
def test_wire_strings_cut_from_the_bytes_equal_the_parsed_strings(requests, sources,
                                                                  episodes) -> None:
    """The bulk cut of a serialized Lineage's string fields equals protobuf's parse, or
    declines (None) when the strings vary too much in length."""

    from replaybuf.materialize_decode import _wire_strings
    from replaybuf.v1 import table_pb2

    raw = table_pb2.Lineage(episode_id=episodes, request_id=requests, source=sources,
                            step=episodes).SerializeToString(deterministic=True)
    got = _wire_strings(raw, max_runs=8)
    if got is None:
        assert len(set(map(len, requests))) > 1  # only varying widths give up
        return
    assert list(got["request_id"]) == requests and list(got["source"]) == sources
    assert got["request_id"] == requests and len(got["source"]) == len(sources)


def test_utf8_strings_read_like_a_list_of_str() -> None:
    from replaybuf.export import Utf8Strings, utf8_column

    words = ["a", "", "日本", "req-1", "é"]
    col = Utf8Strings(*utf8_column(words))
    assert list(col) == words and len(col) == 5 and col[2] == "日本" and col[-1] == "é"
    assert list(col[1:4]) == words[1:4] and list(col[::2]) == words[::2]
    assert list(col.take(np.array([4, 0, 2]))) == ["é", "a", "日本"]
    assert list(Utf8Strings.concat([col[:2], col[2:]])) == words and col == words
    (la, ua), (lb, ub) = utf8_column(col), utf8_column(words)
    assert la.tolist() == lb.tolist() and ua == ub
    with pytest.raises(IndexError):
        col[5]
    with pytest.raises(ValueError, match="lengths sum"):
        Utf8Strings(np.array([3], np.uint32), b"ab")

