"""`Lineage.broadcast` and the compact form the engine logs (`Lineage.to_proto(compact=True)`)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from replaybuf.lineage import Lineage
from replaybuf.materialize_decode import _column, _strings
from replaybuf.v1 import table_pb2

NOW = 1_700_000_000_000


@st.composite
def lineages(draw):
    n = draw(st.integers(1, 6))

    def numeric(lo, hi):
        return draw(st.none() | st.integers(lo, hi) | st.lists(st.integers(lo, hi), min_size=n,
                                                               max_size=n))

    def text():
        return draw(st.none() | st.sampled_from(["", "a", "é"]) | st.lists(
            st.sampled_from(["", "a", "b"]), min_size=n, max_size=n))

    cols = {"episode_id": numeric(0, 3), "step": numeric(0, 3), "model_version": numeric(-2, 2),
            "timestamp_ms": numeric(0, 2), "request_id": text(), "source": text()}
    return n, {k: v for k, v in cols.items() if v is not None}


@settings(max_examples=300, deadline=None)
@given(lineages())
def test_the_compact_form_broadcasts_back_to_the_same_lineage(case):
    n, cols = case
    lin = Lineage.broadcast(cols, n, now_ms=NOW)
    full = lin.to_proto()
    compact = table_pb2.Lineage.FromString(lin.to_proto(compact=True).SerializeToString())
    for name in ("episode_id", "step", "model_version", "timestamp_ms"):
        col = getattr(compact, name)
        assert len(col) in (0, 1, n)
        if len(col) == n and n > 1:  # only when the items differ
            assert len(set(col)) > 1
        want = np.asarray(getattr(full, name))
        np.testing.assert_array_equal(_column(col, n, want.dtype), want)
    assert len(compact.timestamp_ms) >= 1  # never "unknown": the time of the append
    for name in ("request_id", "source"):
        col = list(getattr(compact, name))
        assert len(col) in (0, 1, n)
        assert _strings(col, n) == list(getattr(full, name))
        assert col != [""]  # all unknown is no entry at all


def test_a_typical_actor_batch_logs_one_entry_per_constant_column():
    lin = Lineage.broadcast({"episode_id": 7, "step": [0, 1, 2], "source": "actor-3"}, 3,
                            now_ms=NOW)
    msg = lin.to_proto(compact=True)
    assert list(msg.episode_id) == [7] and list(msg.step) == [0, 1, 2]
    assert list(msg.source) == ["actor-3"] and list(msg.request_id) == []
    assert list(msg.timestamp_ms) == [NOW] and list(msg.model_version) == []
