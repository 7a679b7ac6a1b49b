"""numpy <-> wire tensors, and signature checks for columnar batches.

Imports only numpy and the generated protobuf modules, so the client library can use it
without numba or lmdb. Decoding is zero-copy: the returned arrays are read-only views over
the message's bytes (`numpy.frombuffer`); copy them if you need to write.

Example:
    >>> import numpy as np
    >>> t = to_tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    >>> from_tensor(t).shape
    (2, 3)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from replaybuf.errors import InvalidArgumentError, SignatureMismatchError
from replaybuf.v1 import tensor_pb2

__all__ = [
    "FieldSpec",
    "to_tensor",
    "from_tensor",
    "to_batch",
    "from_batch",
    "dtype_to_proto",
    "dtype_from_proto",
    "check_batch",
    "FIELD_NAME",
]

#: Valid field names (also valid Python identifiers, so they work as attribute names).
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

_DTYPES: dict[int, np.dtype] = {
    tensor_pb2.DTYPE_BOOL: np.dtype(np.bool_),
    tensor_pb2.DTYPE_INT8: np.dtype("<i1"),
    tensor_pb2.DTYPE_UINT8: np.dtype("<u1"),
    tensor_pb2.DTYPE_INT16: np.dtype("<i2"),
    tensor_pb2.DTYPE_UINT16: np.dtype("<u2"),
    tensor_pb2.DTYPE_INT32: np.dtype("<i4"),
    tensor_pb2.DTYPE_UINT32: np.dtype("<u4"),
    tensor_pb2.DTYPE_INT64: np.dtype("<i8"),
    tensor_pb2.DTYPE_UINT64: np.dtype("<u8"),
    tensor_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
    tensor_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.DTYPE_FLOAT64: np.dtype("<f8"),
}
_CODES: dict[np.dtype, int] = {dt: code for code, dt in _DTYPES.items()}
_NAMES = ", ".join(str(dt) for dt in _DTYPES.values())


def dtype_to_proto(dtype: np.dtype | type | str) -> int:
    """The wire code of a numpy dtype (native or little-endian)."""

    dt = np.dtype(dtype)
    code = _CODES.get(dt.newbyteorder("<") if dt.byteorder == ">" else dt)
    if code is None:
        raise InvalidArgumentError(f"dtype {np.dtype(dtype)} is not supported; use one of: {_NAMES}")
    return code


def dtype_from_proto(code: int) -> np.dtype:
    """The numpy dtype of a wire code."""

    try:
        return _DTYPES[code]
    except KeyError:
        raise InvalidArgumentError(
            f"tensor dtype code {code} is unknown (DTYPE_UNSPECIFIED or newer than this version)"
        ) from None


@dataclass(frozen=True)
class FieldSpec:
    """One field of a table signature: name, numpy dtype and per-item shape.

    Attributes:
        name: field name, e.g. ``"obs"``.
        dtype: numpy dtype of each element.
        shape: per-item shape (``()`` for a scalar such as a reward).
    """

    name: str
    dtype: np.dtype
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not FIELD_NAME.match(self.name):
            raise InvalidArgumentError(
                f"field name {self.name!r} is invalid; use letters, digits and _ (not first a digit)"
            )
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        dtype_to_proto(self.dtype)  # validates
        shape = tuple(int(d) for d in self.shape)
        if any(d < 1 for d in shape):
            raise InvalidArgumentError(
                f"field {self.name!r} shape {shape} has a dimension < 1; every dimension must be >= 1"
            )
        object.__setattr__(self, "shape", shape)

    @property
    def item_nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def to_proto(self) -> tensor_pb2.TensorSpec:
        return tensor_pb2.TensorSpec(
            name=self.name, dtype=dtype_to_proto(self.dtype), shape=list(self.shape)
        )

    @classmethod
    def from_proto(cls, spec: tensor_pb2.TensorSpec) -> FieldSpec:
        return cls(spec.name, dtype_from_proto(spec.dtype), tuple(spec.shape))


def to_tensor(array: np.ndarray, out: tensor_pb2.Tensor | None = None) -> tensor_pb2.Tensor:
    """Encode an array (any numeric dtype above) as a Tensor; one copy into the message."""

    arr = np.asarray(array)
    code = dtype_to_proto(arr.dtype)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    t = out if out is not None else tensor_pb2.Tensor()
    t.dtype = code
    t.shape[:] = arr.shape
    t.data = arr.tobytes()  # C order, one copy, whether or not arr is contiguous
    return t


def from_tensor(tensor: tensor_pb2.Tensor, *, name: str = "tensor") -> np.ndarray:
    """Decode a Tensor to a read-only numpy array viewing the message's bytes (no copy)."""

    dtype = dtype_from_proto(tensor.dtype)
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidArgumentError(f"{name}: shape {shape} has a negative dimension")
    expected = math.prod(shape) * dtype.itemsize  # not np.prod: ~10 us per call
    data = tensor.data  # each access of a bytes field makes a new bytes object: read it once
    if len(data) != expected:
        raise InvalidArgumentError(
            f"{name}: data has {len(data)} bytes but shape {shape} of {dtype} needs "
            f"{expected}; send prod(shape) * itemsize bytes"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def to_batch(columns: Mapping[str, np.ndarray],
             out: tensor_pb2.ColumnarBatch | None = None) -> tensor_pb2.ColumnarBatch:
    """Encode ``{field: array}`` (leading dimension = batch) as a ColumnarBatch (into `out`,
    e.g. a field of a larger message, so that nothing is copied again)."""

    batch = out if out is not None else tensor_pb2.ColumnarBatch()
    for name, array in columns.items():
        col = batch.columns.add()
        col.name = name
        to_tensor(array, out=col.tensor)
    return batch


def from_batch(batch: tensor_pb2.ColumnarBatch) -> dict[str, np.ndarray]:
    """Decode a ColumnarBatch to ``{field: read-only array}`` (zero-copy)."""

    out: dict[str, np.ndarray] = {}
    for col in batch.columns:
        if col.name in out:
            raise InvalidArgumentError(f"batch has field {col.name!r} twice; send each field once")
        out[col.name] = from_tensor(col.tensor, name=f"field {col.name!r}")
    return out


def check_batch(columns: Mapping[str, np.ndarray], signature: Sequence[FieldSpec], *, table: str) -> int:
    """Check a decoded batch against a signature and return its size n.

    Raises:
        SignatureMismatchError: a missing or extra field, or a wrong dtype or shape; the
            message names the field, what was expected and what arrived.
        EmptyBatchError: n == 0.
    """

    from replaybuf.errors import EmptyBatchError

    expected = {spec.name for spec in signature}
    got = set(columns)
    if got != expected:
        missing = sorted(expected - got)
        extra = sorted(got - expected)
        parts = []
        if missing:
            parts.append(f"missing field(s) {missing}")
        if extra:
            parts.append(f"unknown field(s) {extra}")
        raise SignatureMismatchError(
            f"batch for table {table!r} has {' and '.join(parts)}; the signature is {sorted(expected)}"
        )
    n: int | None = None
    for spec in signature:
        arr = columns[spec.name]
        if arr.dtype != spec.dtype:
            raise SignatureMismatchError(
                f"field {spec.name!r} of table {table!r} has dtype {arr.dtype}, expected {spec.dtype}; "
                f"convert with .astype(np.{spec.dtype.name})"
            )
        if arr.ndim != len(spec.shape) + 1 or tuple(arr.shape[1:]) != spec.shape:
            raise SignatureMismatchError(
                f"field {spec.name!r} of table {table!r} has shape {tuple(arr.shape)}, expected "
                f"(n, {', '.join(map(str, spec.shape))}{',' if len(spec.shape) == 1 else ''}) "
                f"with a leading batch dimension"
            )
        if n is None:
            n = int(arr.shape[0])
        elif arr.shape[0] != n:
            raise SignatureMismatchError(
                f"field {spec.name!r} has {arr.shape[0]} items but other fields have {n}; "
                "every field needs the same leading dimension"
            )
    if not n:
        raise EmptyBatchError(f"batch for table {table!r} holds no items; send at least one")
    return n
