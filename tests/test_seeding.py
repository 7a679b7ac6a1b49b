"""`replaybuf.seeding` gives exactly numpy's ``default_rng(seed)`` stream."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replaybuf.seeding import Reseeder, seed_words

EDGES = [0, 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**63, 2**64 - 1]


@settings(max_examples=300, deadline=None)
@given(seed=st.one_of(st.sampled_from(EDGES), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)))
def test_reseeded_stream_equals_default_rng(seed):
    assert seed_words(seed) == tuple(
        np.random.SeedSequence(seed).generate_state(4, np.uint64).tolist())
    want = np.random.default_rng(seed)
    got = Reseeder().reseed(seed)
    assert (got.random(7) == want.random(7)).all()
    assert (got.integers(0, 1000, 5) == want.integers(0, 1000, 5)).all()


def test_one_reseeder_reused_restarts_every_stream():
    r = Reseeder()
    first = r.reseed(7).random(3)
    r.reseed(8).random(10)
    assert (r.reseed(7).random(3) == first).all()
    assert r.reseed(7) is r.generator


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_seed_out_of_range(seed):
    with pytest.raises(ValueError, match="outside"):
        seed_words(seed)
