"""The client's zero-copy SampleResponse decoder (`replaybuf_client._wire`) against protobuf."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replaybuf.errors import InvalidArgumentError
from replaybuf.tensors import to_batch
from replaybuf.v1 import service_pb2, table_pb2
from replaybuf_client._convert import decode_sample, decode_sample_bytes
from replaybuf_server.codec import encode_sample

DTYPES = [np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_, np.float16, np.uint64]

column_st = st.tuples(st.sampled_from(DTYPES),
                      st.lists(st.integers(0, 4), min_size=0, max_size=3))


def _columns(specs: list, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"f{i}": (rng.random((n, *shape)) * 100).astype(dt) for i, (dt, shape) in
            enumerate(specs)}


def _info(n: int) -> table_pb2.SampleInfo:
    return table_pb2.SampleInfo(item_ids=list(range(1, n + 1)), priorities=[0.5] * n,
                                probabilities=[1 / max(n, 1)] * n, weights=[1.0] * n,
                                times_sampled=[1] * n, lsn=7, seed=2**63 + 5, table_size=n,
                                lineage=table_pb2.Lineage(request_id=["r"] * n, step=[3]))


def _same(a, b) -> None:
    assert list(a.data) == list(b.data)
    for k in a.data:
        assert a.data[k].dtype == b.data[k].dtype and a.data[k].shape == b.data[k].shape
        assert np.array_equal(a.data[k], b.data[k])
    for f in ("item_ids", "priorities", "probabilities", "weights", "times_sampled"):
        assert np.array_equal(getattr(a.info, f), getattr(b.info, f))
    assert (a.info.lsn, a.info.seed, a.info.table_size) == (b.info.lsn, b.info.seed,
                                                            b.info.table_size)
    assert repr(a.info.lineage) == repr(b.info.lineage)


@settings(max_examples=80, deadline=None)
@given(specs=st.lists(column_st, max_size=5), n=st.integers(0, 6), seed=st.integers(0, 99))
def test_decodes_what_protobuf_decodes(specs, n, seed):
    cols = _columns(specs, n, seed)
    raw = service_pb2.SampleResponse(data=to_batch(cols), info=_info(n)).SerializeToString()
    fast = decode_sample_bytes(raw)
    _same(fast, decode_sample(service_pb2.SampleResponse.FromString(raw)))
    # the server's own encoder too, and the columns are views of the received bytes
    raw2 = encode_sample(cols, _info(n))
    _same(decode_sample_bytes(raw2), fast)
    for arr in decode_sample_bytes(raw2).data.values():
        assert not arr.flags.writeable


def test_truncated_or_inconsistent_bytes_are_refused():
    cols = {"obs": np.ones((4, 3), np.float32)}
    raw = service_pb2.SampleResponse(data=to_batch(cols), info=_info(4)).SerializeToString()
    with pytest.raises((InvalidArgumentError, IndexError)):
        decode_sample_bytes(raw[:-5])
    bad = service_pb2.SampleResponse(data=to_batch(cols), info=_info(4))
    bad.data.columns[0].tensor.shape[:] = [4, 4]  # 64 bytes promised, 48 sent
    with pytest.raises(InvalidArgumentError, match="obs"):
        decode_sample_bytes(bad.SerializeToString())
