from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from replaybuf.errors import EmptyBatchError, InvalidArgumentError, SignatureMismatchError
from replaybuf.tensors import FieldSpec, check_batch, from_batch, from_tensor, to_batch, to_tensor
from replaybuf.v1 import tensor_pb2

DTYPES = ["bool", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"]


@given(
    st.sampled_from(DTYPES).flatmap(
        lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=4, max_side=5))
    )
)
def test_tensor_round_trip_is_exact(array):
    back = from_tensor(to_tensor(array))
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()


def test_decoded_arrays_are_read_only_views():
    t = to_tensor(np.arange(4, dtype=np.int64))
    arr = from_tensor(t)
    assert not arr.flags.writeable


def test_big_endian_input_is_stored_little_endian():
    arr = np.arange(3, dtype=">i4")
    assert to_tensor(arr).data == np.arange(3, dtype="<i4").tobytes()


def test_wrong_byte_count_names_the_field_and_the_fix():
    t = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[2, 3], data=b"\0" * 20)
    with pytest.raises(InvalidArgumentError, match=r"field 'obs'.*20 bytes.*needs 24"):
        from_tensor(t, name="field 'obs'")


def test_unknown_dtype_code_is_rejected():
    with pytest.raises(InvalidArgumentError, match="dtype code 99"):
        from_tensor(tensor_pb2.Tensor(dtype=99, shape=[1], data=b"\0"))


def test_unsupported_numpy_dtype_is_rejected():
    with pytest.raises(InvalidArgumentError, match="complex64 is not supported"):
        to_tensor(np.zeros(2, dtype=np.complex64))


SIG = [FieldSpec("obs", np.float32, (3,)), FieldSpec("reward", np.float32), FieldSpec("done", np.bool_)]


def _good(n=4):
    return {
        "obs": np.zeros((n, 3), np.float32),
        "reward": np.zeros(n, np.float32),
        "done": np.zeros(n, np.bool_),
    }


def test_check_batch_accepts_a_matching_batch_and_returns_its_size():
    assert check_batch(from_batch(to_batch(_good(5))), SIG, table="t") == 5


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda b: b.pop("done"), r"missing field\(s\) \['done'\]"),
        (lambda b: b.update(extra=np.zeros(4)), r"unknown field\(s\) \['extra'\]"),
        (lambda b: b.update(obs=np.zeros((4, 3), np.float64)), r"'obs'.*dtype float64, expected float32"),
        (lambda b: b.update(obs=np.zeros((4, 2), np.float32)), r"'obs'.*shape \(4, 2\), expected \(n, 3,\)"),
        (lambda b: b.update(reward=np.zeros(3, np.float32)), r"'reward' has 3 items but other fields have 4"),
    ],
)
def test_check_batch_names_the_field_at_fault(mutate, pattern):
    batch = _good()
    mutate(batch)
    with pytest.raises(SignatureMismatchError, match=pattern):
        check_batch(batch, SIG, table="t")


def test_empty_batch_is_rejected():
    with pytest.raises(EmptyBatchError):
        check_batch(_good(0), SIG, table="t")


def test_duplicate_column_is_rejected():
    batch = to_batch({"obs": np.zeros((1, 3), np.float32)})
    batch.columns.add().CopyFrom(batch.columns[0])
    with pytest.raises(InvalidArgumentError, match="twice"):
        from_batch(batch)


def test_field_spec_validates_name_and_shape():
    with pytest.raises(InvalidArgumentError, match="field name"):
        FieldSpec("1obs", np.float32)
    with pytest.raises(InvalidArgumentError, match="dimension < 1"):
        FieldSpec("obs", np.float32, (0, 3))
    spec = FieldSpec("obs", "uint8", (4, 84, 84))
    assert FieldSpec.from_proto(spec.to_proto()) == spec
    assert spec.item_nbytes == 4 * 84 * 84
