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
