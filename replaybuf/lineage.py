"""Lineage: where each item came from (episode, step, inference request, model version, time,
source), as columns with one entry per item.

On append a caller may give each column 0 entries (unknown), 1 entry (the same for every item)
or n entries; `Lineage.broadcast` validates and expands them to n. The logged ``ItemsAppended``
event carries the same values in the shortest of those forms (`Lineage.to_proto` with
``compact``), which every reader of events broadcasts back. An unknown or 0 timestamp becomes
the time of the append.

Example:
    >>> lin = Lineage.broadcast({"episode_id": 7, "step": [0, 1, 2], "source": "actor-3"}, 3,
    ...                         now_ms=1_700_000_000_000)
    >>> lin.episode_id.tolist(), lin.source
    ([7, 7, 7], ('actor-3', 'actor-3', 'actor-3'))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from replaybuf.errors import InvalidArgumentError
from replaybuf.v1 import table_pb2

__all__ = ["Lineage", "MAX_REQUEST_ID_BYTES", "MAX_SOURCE_BYTES"]

#: Longest request id (UTF-8 bytes); it is part of an LMDB index key (<= 511 bytes).
MAX_REQUEST_ID_BYTES = 256
#: Longest source name (UTF-8 bytes).
MAX_SOURCE_BYTES = 1024

_NUMERIC = {
    "episode_id": (np.uint64, 0, 2**64 - 1),
    "step": (np.uint64, 0, 2**64 - 1),
    "model_version": (np.int64, -(2**63), 2**63 - 1),
    "timestamp_ms": (np.int64, -(2**63), 2**63 - 1),
}
_STRINGS = {"request_id": MAX_REQUEST_ID_BYTES, "source": MAX_SOURCE_BYTES}
_NAMES = ("episode_id", "step", "request_id", "model_version", "timestamp_ms", "source")


@dataclass(frozen=True)
class Lineage:
    """Lineage of n items, one entry per item in every column.

    Attributes:
        episode_id: uint64 episode of each item (0 = unknown).
        step: uint64 step within the episode.
        request_id: inference request id ("" = unknown).
        model_version: int64 version of the policy that acted.
        timestamp_ms: int64 ms since the epoch when the transition was produced.
        source: producer name ("" = unknown).
    """

    episode_id: np.ndarray
    step: np.ndarray
    request_id: tuple[str, ...]
    model_version: np.ndarray
    timestamp_ms: np.ndarray
    source: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.episode_id.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Lineage):
            return NotImplemented
        return all(
            np.array_equal(np.asarray(getattr(self, f.name)), np.asarray(getattr(other, f.name)))
            for f in fields(self)
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def broadcast(cls, value: object, n: int, *, now_ms: int) -> Lineage:
        """Validate `value` and expand every column to `n` entries.

        Args:
            value: None, a `Lineage`, a ``replaybuf.v1.Lineage`` proto, or a mapping from the
                column names above to a scalar or a sequence of 0, 1 or n entries.
            n: number of items.
            now_ms: timestamp for items without one (or with 0).

        Raises:
            InvalidArgumentError: an unknown column, a column of another length, a value out
                of range, or a string too long; the message names the column.
        """

        if value is None:
            cols: dict[str, Any] = {}
        elif isinstance(value, Lineage):
            cols = {name: getattr(value, name) for name in _NAMES}
        elif isinstance(value, table_pb2.Lineage):
            cols = {name: list(getattr(value, name)) for name in _NAMES}
        elif isinstance(value, Mapping):
            unknown = sorted(set(value) - set(_NAMES))
            if unknown:
                raise InvalidArgumentError(
                    f"lineage has unknown column(s) {unknown}; use {list(_NAMES)}"
                )
            cols = dict(value)
        else:
            raise InvalidArgumentError(
                f"lineage is a {type(value).__name__}; pass a mapping such as "
                f"{{'episode_id': 7, 'step': [0, 1]}}, a Lineage, or None"
            )
        out: dict[str, Any] = {}
        for name, (dt, lo, hi) in _NUMERIC.items():
            arr = _column(name, cols.get(name), n)
            if arr is None or arr.size == 0:
                out[name] = np.zeros(n, dt)
                continue
            if arr.dtype.kind == "f" and not (np.isfinite(arr) & (np.mod(arr, 1) == 0)).all():
                raise InvalidArgumentError(
                    f"lineage {name} holds non-integer values {arr.tolist()[:4]}; use integers"
                )
            bad = (arr.dtype.kind in "if" and arr.min() < lo) or (
                arr.dtype.kind in "uf" and arr.max() > hi
            )
            if bad:
                raise InvalidArgumentError(f"lineage {name} has a value outside [{lo}, {hi}]")
            out[name] = np.broadcast_to(arr.astype(dt), (n,)).copy()
        ts = out["timestamp_ms"]
        ts[ts == 0] = now_ms
        for name, limit in _STRINGS.items():
            raw = cols.get(name)
            if raw is None:
                out[name] = ("",) * n
                continue
            items = [raw] if isinstance(raw, str) else list(raw)
            if len(items) not in (0, 1, n):
                raise InvalidArgumentError(
                    f"lineage {name} has {len(items)} entries for {n} items; give 0, 1 or {n}"
                )
            for i, s in enumerate(items):
                if not isinstance(s, str):
                    raise InvalidArgumentError(f"lineage {name}[{i}] is {s!r}; use a string")
                if len(s.encode()) > limit:
                    raise InvalidArgumentError(
                        f"lineage {name}[{i}] is {len(s.encode())} bytes; at most {limit} "
                        f"UTF-8 bytes are allowed"
                    )
            if not items:
                items = [""]
            out[name] = tuple(items) if len(items) == n else tuple(items) * n
        return cls(**out)

    @classmethod
    def empty(cls, n: int = 0) -> Lineage:
        z = np.zeros(n, np.uint64)
        return cls(z, z.copy(), ("",) * n, np.zeros(n, np.int64), np.zeros(n, np.int64),
                   ("",) * n)

    def to_proto(self, out: table_pb2.Lineage | None = None, *,
                 compact: bool = False) -> table_pb2.Lineage:
        """The columns as a proto, n entries each; with ``compact``, the shortest form the
        wire contract allows for the same lineage: 0 entries for a column that is all unknown
        (0 or ""), 1 for one that holds the same value for every item, else n. (A timestamp
        is never 0 after `broadcast`, so it keeps at least 1 entry.) The engine logs the
        compact form: most batches carry one source and timestamp and no request ids."""

        msg = out if out is not None else table_pb2.Lineage()
        for name in _NAMES:
            values = getattr(self, name)
            if name in _STRINGS:
                if compact and values:
                    first = values[0]
                    if values.count(first) == len(values):
                        values = (first,) if first else ()
                getattr(msg, name)[:] = values
                continue
            if compact and values.size:
                first = values[0]
                if (values == first).all():
                    values = values[:1] if first else values[:0]
            getattr(msg, name)[:] = values.tolist()
        return msg


def _column(name: str, raw: object, n: int) -> np.ndarray | None:
    if raw is None:
        return None
    arr = np.asarray(raw)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.size not in (0, 1, n):
        raise InvalidArgumentError(
            f"lineage {name} has {arr.size} entries (shape {arr.shape}) for {n} items; "
            f"give 0, 1 or {n}"
        )
    if arr.size and arr.dtype.kind not in "iuf":  # bool, str, object
        raise InvalidArgumentError(f"lineage {name} holds {arr.dtype} values; use integers")
    return arr
