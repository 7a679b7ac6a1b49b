"""Input checks shared by the sampling structures, and the kernels' error codes.

The numba kernels validate a whole batch before writing anything and report the first bad
item as an integer code (``code * ERROR_SCALE + index``); :func:`raise_for` turns that into
the matching :mod:`replaybuf.errors` class with a message naming the index and the value.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from replaybuf.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    InvalidPriorityError,
)

__all__ = [
    "FORMAT_VERSION",
    "is_int",
    "is_real",
    "as_slots",
    "as_values",
    "as_rng",
    "raise_for",
    "check_capacity",
    "check_count",
    "check_exponent",
    "check_state_header",
    "state_array",
]

def is_int(x: object) -> bool:
    """An integer (Python or numpy), not a bool."""

    if type(x) is int:  # the usual case, without the slower ABC check
        return True
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_real(x: object) -> bool:
    """A real number (Python or numpy, integers included), not a bool."""

    if type(x) is float:
        return True
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


#: Version of the dicts written by ``state()`` (sum tree and selectors).
FORMAT_VERSION = 1

# kernel return codes: 0 = ok, else code * ERROR_SCALE + index of the offending item
ERROR_SCALE = 1 << 40
E_SLOT = 1  # slot out of range
E_VALUE = 2  # NaN, inf or negative value
E_NOT_OCCUPIED = 3  # update/remove of a slot that holds no item
E_OVERFLOW = 4  # priority ** alpha overflows float64
E_EMPTY = 5  # total is zero: nothing to sample
E_TARGET = 6  # prefix-sum target outside [0, total]
E_TOO_FEW = 7  # sampling without replacement needs more items with positive priority
E_TOTAL = 8  # the total would overflow float64

_I64 = np.dtype(np.int64)
_F64 = np.dtype(np.float64)
_Generator = np.random.Generator


def as_slots(slots: Any, name: str = "slots") -> np.ndarray:
    """Return ``slots`` as a contiguous 1-D int64 array, or raise InvalidArgumentError."""
    if type(slots) is np.ndarray and slots.dtype == _I64 and slots.ndim == 1:
        return slots if slots.flags.c_contiguous else np.ascontiguousarray(slots)
    arr = np.asarray(slots)
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{name} must be a 1-D array of integers; got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, np.int64)
    if arr.dtype.kind not in "iu":
        raise InvalidArgumentError(f"{name} must hold integers; got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        i = int(np.argmax(arr > np.iinfo(np.int64).max))
        raise InvalidArgumentError(f"{name}[{i}] = {arr[i]} is out of range")
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_values(values: Any, n: int | None, name: str = "priorities") -> np.ndarray:
    """Return ``values`` as a contiguous 1-D float64 array (of length n unless None), or raise."""
    if type(values) is np.ndarray and values.dtype == _F64 and values.ndim == 1:
        arr = values if values.flags.c_contiguous else np.ascontiguousarray(values)
    else:
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise InvalidArgumentError(
                f"{name} must be a 1-D array of numbers; got shape {arr.shape}"
            )
        if arr.size and arr.dtype.kind not in "fiu":
            raise InvalidArgumentError(f"{name} must hold real numbers; got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float64)
    if n is not None and arr.size != n:
        raise InvalidArgumentError(
            f"{name} has {arr.size} entries but slots has {n}; pass one per slot"
        )
    return arr


def raise_for(rc: int, slots: np.ndarray, values: np.ndarray | None, capacity: int,
              value_name: str = "priorities") -> None:
    """Turn a kernel return code into the matching error (no-op for 0)."""
    if rc == 0:
        return
    code, i = divmod(int(rc), ERROR_SCALE)
    if code == E_SLOT:
        raise InvalidArgumentError(
            f"slots[{i}] = {int(slots[i])} is out of range [0, {capacity}); "
            "slots must index the table's capacity"
        )
    if code == E_VALUE:
        assert values is not None
        v = float(values[i])
        why = "NaN" if math.isnan(v) else ("infinite" if math.isinf(v) else "negative")
        raise InvalidPriorityError(
            f"{value_name}[{i}] = {v!r} (slot {int(slots[i])}) is {why}; "
            f"{value_name} must be finite and >= 0"
        )
    if code == E_NOT_OCCUPIED:
        raise InvalidArgumentError(
            f"slots[{i}] = {int(slots[i])} holds no item; insert it before updating or removing it"
        )
    if code == E_OVERFLOW:
        assert values is not None
        raise InvalidPriorityError(
            f"{value_name}[{i}] = {float(values[i])!r} (slot {int(slots[i])}) overflows "
            "float64 when raised to alpha; use smaller priorities or a smaller alpha"
        )
    if code == E_EMPTY:
        raise FailedPreconditionError(
            "nothing to sample: the total priority is 0 (empty, or every priority is 0)"
        )
    if code == E_TARGET:
        assert values is not None
        raise InvalidArgumentError(
            f"targets[{i}] = {float(values[i])!r} is outside [0, total()]; "
            "prefix-sum targets must be finite and within the tree's total"
        )
    if code == E_TOTAL:
        raise InvalidPriorityError(
            f"these {value_name} would make the total exceed the float64 range; "
            "scale priorities down"
        )
    if code == E_TOO_FEW:
        raise FailedPreconditionError(
            "sampling without replacement needs at least batch_size items with positive "
            "priority; sample fewer or with replacement"
        )
    raise AssertionError(f"unknown kernel return code {rc}")  # pragma: no cover


def check_capacity(capacity: Any) -> int:
    if isinstance(capacity, (bool, np.bool_)) or not isinstance(capacity, (int, np.integer)):
        raise InvalidArgumentError(f"capacity must be an int; got {capacity!r}")
    if not 1 <= int(capacity) <= 1 << 40:
        raise InvalidArgumentError(f"capacity = {capacity} must be in [1, 2**40]")
    return int(capacity)


def as_rng(rng: Any) -> np.random.Generator:
    """Accept a Generator or an int seed; anything else is an error (no hidden global RNG)."""
    if isinstance(rng, _Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise InvalidArgumentError(
        f"rng must be a numpy.random.Generator or an int seed; got {type(rng).__name__}. "
        "Use numpy.random.default_rng(seed)"
    )


def check_count(n: Any, name: str = "batch_size") -> int:
    """An int >= 1, or InvalidArgumentError."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidArgumentError(f"{name} = {n!r} must be an int >= 1")
    return int(n)


def check_exponent(value: Any, name: str = "beta") -> float:
    """A finite float >= 0 (alpha, beta), or InvalidArgumentError."""
    try:
        b = float(value)
    except (TypeError, ValueError):
        b = math.nan
    if isinstance(value, bool) or not 0.0 <= b < math.inf:
        raise InvalidArgumentError(f"{name} = {value!r} must be a finite float >= 0")
    return b


def check_state_header(state: Any, kind: str) -> None:
    """Raise InvalidArgumentError unless ``state`` is a dict of this kind and version."""
    if not isinstance(state, dict):
        raise InvalidArgumentError(f"state must be a dict; got {type(state).__name__}")
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise InvalidArgumentError(
            f"state format_version = {version!r} is not supported (this build reads "
            f"{FORMAT_VERSION}); export it again with a matching replaybuf"
        )
    if state.get("kind") != kind:
        raise InvalidArgumentError(f"state kind = {state.get('kind')!r}; expected {kind!r}")


def state_array(state: dict[str, Any], name: str, shape: tuple[int, ...], kinds: str
                 ) -> np.ndarray:
    arr = np.asarray(state.get(name))
    if arr.shape != shape or arr.dtype.kind not in kinds:
        raise InvalidArgumentError(
            f"state[{name!r}] must have shape {shape} and dtype kind {kinds!r}; "
            f"got {arr.dtype} {arr.shape}"
        )
    return arr
