"""Plain result and option types of the client: small frozen dataclasses, never raw protos.

Arrays in results are numpy arrays; ids are ``uint64``. Everything here is immutable and safe
to share between threads and to pickle (except `Sample.data` built with ``as_torch=True``,
which pickles like any torch tensor).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple

import numpy as np

from replaybuf.errors import InvalidArgumentError
from replaybuf.tensors import FieldSpec
from replaybuf.v1 import events_pb2, table_pb2

__all__ = [
    "TlsConfig",
    "Lineage",
    "AppendResult",
    "SampleInfo",
    "Sample",
    "RateLimiterInfo",
    "TableInfo",
    "UpdateResult",
    "EvictResult",
    "LogEvent",
    "ItemLineage",
    "FoundItems",
    "WriterStats",
]


@dataclass(frozen=True)
class TlsConfig:
    """TLS settings of a `ReplayClient`: PEM file paths, read once when the client opens.

    Example:
        >>> TlsConfig(root_certificates="ca.pem")  # server auth only
        TlsConfig(root_certificates='ca.pem', certificate_chain=None, private_key=None)
    """

    root_certificates: str | os.PathLike[str] | None = None
    """CA bundle that signed the server's certificate (None = the system's roots)."""

    certificate_chain: str | os.PathLike[str] | None = None
    """This client's certificate, for mutual TLS (needs ``private_key``)."""

    private_key: str | os.PathLike[str] | None = None
    """This client's private key, for mutual TLS (needs ``certificate_chain``)."""

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise InvalidArgumentError(
                "TlsConfig needs both certificate_chain and private_key for mutual TLS, or "
                f"neither (got certificate_chain={self.certificate_chain!r}, "
                f"private_key={self.private_key!r})"
            )


_UINT_COLUMNS = ("episode_id", "step")
_INT_COLUMNS = ("model_version", "timestamp_ms")
_STR_COLUMNS = ("request_id", "source")


@dataclass(frozen=True, eq=False)
class Lineage:
    """Provenance of items: where each transition came from.

    Each field is None (unknown), one value (applies to every item of the batch), or a
    sequence/array with one value per item. In `SampleInfo.lineage`, present columns are
    numpy arrays (``uint64`` ids and steps, ``int64`` versions and times) or tuples of str,
    one entry per sampled item.

    Example:
        >>> Lineage(episode_id=7, step=[0, 1, 2], model_version=12).to_proto(3).step
        [0, 1, 2]
    """

    episode_id: Any = None
    """Episode each item belongs to (uint64)."""
    step: Any = None
    """Step of each item within its episode, 0-based (uint64)."""
    request_id: Any = None
    """Inference request (actor forward pass) that chose the action (str)."""
    model_version: Any = None
    """Version of the policy that produced the action; larger = newer (int64)."""
    timestamp_ms: Any = None
    """When the transition was produced, ms since the Unix epoch (0 = time of append)."""
    source: Any = None
    """Producer of the data: actor name, dataset name, ... (str)."""

    @classmethod
    def coerce(cls, value: Lineage | Mapping[str, Any] | None) -> Lineage | None:
        """Accept a Lineage, a dict with its field names, or None."""

        if value is None or isinstance(value, Lineage):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {f.name for f in fields(cls)})
            if unknown:
                raise InvalidArgumentError(
                    f"lineage has unknown key(s) {unknown}; use {[f.name for f in fields(cls)]}"
                )
            return cls(**value)
        raise InvalidArgumentError(
            f"lineage must be a Lineage, a dict of its fields or None, not {type(value).__name__}"
        )

    def keys(self) -> tuple[str, ...]:
        """Names of the columns that are set."""

        return tuple(f.name for f in fields(self) if getattr(self, f.name) is not None)

    def to_proto(self, n: int) -> table_pb2.Lineage:
        """Encode for a batch of ``n`` items; each set column must have 1 or ``n`` values."""

        out = table_pb2.Lineage()
        for name in self.keys():
            values = _column(getattr(self, name), name)
            if len(values) not in (1, n):
                raise InvalidArgumentError(
                    f"lineage.{name} has {len(values)} values for a batch of {n} items; give "
                    "one value for the whole batch or one per item"
                )
            try:
                getattr(out, name).extend(values)
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(f"lineage.{name}: {exc}") from None
        return out

    @classmethod
    def from_proto(cls, proto: table_pb2.Lineage) -> Lineage:
        """Decode: numpy arrays for numeric columns, tuples for strings, None when empty."""

        kwargs: dict[str, Any] = {}
        for name in _UINT_COLUMNS:
            col = getattr(proto, name)
            kwargs[name] = np.array(col, dtype=np.uint64) if len(col) else None
        for name in _INT_COLUMNS:
            col = getattr(proto, name)
            kwargs[name] = np.array(col, dtype=np.int64) if len(col) else None
        for name in _STR_COLUMNS:
            col = getattr(proto, name)
            kwargs[name] = tuple(col) if len(col) else None
        return cls(**kwargs)

    def slice(self, start: int, stop: int) -> Lineage:
        """The lineage of items ``[start, stop)``: per-item columns are cut, scalars kept."""

        kwargs: dict[str, Any] = {}
        for name in self.keys():
            values = _column(getattr(self, name), name)
            kwargs[name] = values if len(values) == 1 else values[start:stop]
        return Lineage(**kwargs)

    @staticmethod
    def concat(parts: Sequence[Lineage | None], counts: Sequence[int]) -> Lineage | None:
        """Join per-row or per-chunk lineages (same keys) into one, broadcasting scalars."""

        if not parts or parts[0] is None:
            return None
        kwargs: dict[str, Any] = {}
        for name in parts[0].keys():
            merged: list[Any] = []
            for part, n in zip(parts, counts):
                values = _column(getattr(part, name), name)
                merged.extend(values * n if len(values) == 1 and n != 1 else values)
            kwargs[name] = merged
        return Lineage(**kwargs)


def _column(value: Any, name: str) -> list[Any]:
    """One lineage column as a list of Python values (1 entry for a scalar)."""

    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return [value]
    arr = np.asarray(value)
    if arr.ndim > 1:
        raise InvalidArgumentError(f"lineage.{name} must be a scalar or 1-D, got shape {arr.shape}")
    return [arr.item()] if arr.ndim == 0 else arr.tolist()


@dataclass(frozen=True, eq=False)
class AppendResult:
    """The server's acknowledgement of one appended batch."""

    item_ids: np.ndarray
    """Ids assigned to the items, in batch order (uint64)."""
    first_lsn: int
    """LSN of the batch's ItemsAppended event."""
    last_lsn: int
    """Last LSN of the batch (> first_lsn when appending evicted items for capacity)."""
    durable: bool
    """True when the batch was fsynced before the ack."""
    duplicate: bool
    """True when this was a retry of a batch the server had already appended (ids are the
    original ones; nothing was added twice)."""


@dataclass(frozen=True, eq=False)
class SampleInfo:
    """Everything about a sampled batch besides its data; one entry per item, in batch order."""

    item_ids: np.ndarray
    """Server-assigned ids (uint64); pass them to `ReplayClient.update_priorities`."""
    priorities: np.ndarray
    """Raw priority of each item when drawn (float64)."""
    probabilities: np.ndarray
    """Probability with which each item was drawn (float64)."""
    weights: np.ndarray
    """Importance weights ``(N * P(i))^-beta / max_j``, in (0, 1] (float64)."""
    times_sampled: np.ndarray
    """How often each item has been sampled, including this draw (uint64)."""
    lineage: Lineage
    """Provenance of each item (columns the producers left unset are None)."""
    lsn: int
    """The view LSN the batch was drawn at; with ``seed`` it replays the draw."""
    seed: int
    """The seed of this batch."""
    table_size: int
    """Items in the table when drawn (N in the weights)."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One sampled batch: ``data`` (field -> array with leading dimension ``batch_size``) and ``info``.

    With numpy output the arrays are **read-only views** over the bytes of the response message
    (no copy); ``np.array(sample["obs"])`` gives a writable copy. With ``as_torch=True`` they are
    writable torch tensors (one copy, into pinned memory with ``pin_memory=True``).
    """

    data: dict[str, Any]
    info: SampleInfo

    def __getitem__(self, name: str) -> Any:
        return self.data[name]

    def __len__(self) -> int:
        return len(self.info.item_ids)

    def pin_memory(self) -> Sample:
        """A copy whose torch tensors sit in page-locked memory (used by ``DataLoader(pin_memory=True)``)."""

        from replaybuf_client.torch import to_torch

        return replace(self, data=to_torch(self.data, pin_memory=True))


@dataclass(frozen=True)
class RateLimiterInfo:
    """A table's rate-limiter counters, for monitoring."""

    inserts: int
    samples: int
    min_diff: float
    max_diff: float
    blocked_inserts: int
    blocked_samples: int


@dataclass(frozen=True)
class TableInfo:
    """A table's configuration and live state, as `ReplayClient.describe_table` returns it."""

    name: str
    signature: tuple[FieldSpec, ...]
    """The fields every item carries."""
    capacity: int
    sampler: str
    """Sampler kind, e.g. ``"prioritized"``, ``"uniform"``."""
    alpha: float
    """Priority exponent of a prioritized sampler."""
    remover: str
    """Remover kind, e.g. ``"fifo"``, ``"lowest_priority"``."""
    max_times_sampled: int
    size: int
    """Items present."""
    total_priority: float
    max_priority: float
    rate_limiter: RateLimiterInfo
    applied_lsn: int
    durable_lsn: int
    metrics: dict[str, float] = field(default_factory=dict)
    config: table_pb2.TableConfig | None = field(default=None, repr=False, compare=False)
    """The full configuration message, for fields not copied above."""

    @property
    def fields(self) -> dict[str, FieldSpec]:
        """The signature by field name."""

        return {spec.name: spec for spec in self.signature}


@dataclass(frozen=True, eq=False)
class UpdateResult:
    """Result of `ReplayClient.update_priorities` and `ReplayClient.correct_rewards`."""

    lsn: int
    """LSN of the logged event (0 when every id was missing)."""
    missing_ids: np.ndarray
    """Ids that were no longer present and were skipped (uint64)."""


@dataclass(frozen=True, eq=False)
class EvictResult:
    """Result of `ReplayClient.evict`."""

    lsn: int
    """LSN of the ItemsEvicted event (0 when nothing was present)."""
    evicted: int
    missing_ids: np.ndarray
    """Ids not present (already evicted, never existed, or evicted by a lost earlier attempt
    of this same call that the client retried)."""


class LogEvent(NamedTuple):
    """One event of the log and its LSN; unpacks as ``lsn, event``."""

    lsn: int
    event: events_pb2.Event


@dataclass(frozen=True)
class ItemLineage:
    """Every event that touched one item, in LSN order."""

    item_id: int
    table: str
    present: bool
    """False once the item has been evicted."""
    entries: tuple[LogEvent, ...]


@dataclass(frozen=True, eq=False)
class FoundItems:
    """Result of `ReplayClient.find_items`."""

    item_ids: np.ndarray
    """Matching ids, ascending (uint64)."""
    truncated: bool
    """More matches exist beyond ``limit``."""


@dataclass(frozen=True)
class WriterStats:
    """Counters of one `Writer` since it opened."""

    batches_sent: int
    items_acked: int
    duplicates: int
    """Acks that answered a retried batch the server already had (nothing was appended twice)."""
    reconnects: int
    last_lsn: int
