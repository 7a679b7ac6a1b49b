"""Table configuration: small frozen dataclasses, validated on construction, and their protos.

A table is a named, bounded buffer of items that share one signature (field -> dtype, shape).
Its config says how items are sampled (the *sampler*), which leave when the table is full (the
*remover*), after how many samples an item is retired, and how the rate limiter paces learners
against actors. The config travels in the ``TableCreated`` event, so it is part of the state at
every later LSN; `TableConfig.to_proto` and `TableConfig.from_proto` convert it losslessly.

Example:
    >>> import numpy as np
    >>> cfg = TableConfig(
    ...     name="replay",
    ...     signature={"obs": (np.float32, (4,)), "action": np.int64, "reward": np.float32},
    ...     capacity=1000,
    ...     sampler=SelectorConfig("prioritized", alpha=0.6),
    ... )
    >>> TableConfig.from_proto(cfg.to_proto()) == cfg
    True
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from replaybuf._validation import is_int as _is_int, is_real as _is_real
from replaybuf.errors import InvalidArgumentError
from replaybuf.rate_limiter import RateLimiterConfig
from replaybuf.tensors import FieldSpec
from replaybuf.v1 import table_pb2

__all__ = [
    "SelectorConfig",
    "TableConfig",
    "SAMPLER_KINDS",
    "REMOVER_KINDS",
    "TABLE_NAME",
    "parse_signature",
]

#: Valid table names (the proto's rule): letters, digits, ``_ . -``; not first a digit/dot/dash.
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")

#: Strategies a table may sample with.
SAMPLER_KINDS = ("prioritized", "uniform", "fifo", "lifo")
#: Strategies a table may evict with when full. Both are deterministic given the table's state,
#: which keeps capacity evictions reproducible from the log alone.
REMOVER_KINDS = ("fifo", "lowest_priority")

_KIND_TO_PROTO = {
    "prioritized": table_pb2.SELECTOR_KIND_PRIORITIZED,
    "uniform": table_pb2.SELECTOR_KIND_UNIFORM,
    "fifo": table_pb2.SELECTOR_KIND_FIFO,
    "lifo": table_pb2.SELECTOR_KIND_LIFO,
    "lowest_priority": table_pb2.SELECTOR_KIND_LOWEST_PRIORITY,
}
_PROTO_TO_KIND = {v: k for k, v in _KIND_TO_PROTO.items()}
_MAX_CAPACITY = 2**32 - 2  # slots are uint32 in the view


@dataclass(frozen=True)
class SelectorConfig:
    """A sampler or remover strategy.

    Example::

        SelectorConfig("prioritized", alpha=0.7)   # PER sampler
        SelectorConfig("lowest_priority")          # remover: drop the least useful when full
    """

    kind: str = "prioritized"
    """One of ``"prioritized"``, ``"uniform"``, ``"fifo"``, ``"lifo"``, ``"lowest_priority"``
    (which ones a table accepts as sampler or remover: `SAMPLER_KINDS`, `REMOVER_KINDS`)."""

    alpha: float = 0.6
    """Priority exponent of ``"prioritized"``: P(i) = p_i^alpha / sum_j p_j^alpha. 0 samples
    uniformly, 1 fully proportionally. Kept but unused by the other kinds."""

    with_replacement: bool = True
    """Whether one batch may hold the same item more than once (PER's default). Without
    replacement a batch can never be larger than the table."""

    def __post_init__(self) -> None:
        if self.kind not in _KIND_TO_PROTO:
            raise InvalidArgumentError(
                f"selector kind {self.kind!r} is unknown; use one of {tuple(_KIND_TO_PROTO)}"
            )
        a = self.alpha
        if not _is_real(a) or not math.isfinite(a) or a < 0:
            raise InvalidArgumentError(
                f"alpha is {a!r}; it must be a finite number >= 0 (0 = uniform, 1 = fully "
                f"proportional; PER uses 0.6)"
            )
        object.__setattr__(self, "alpha", float(a))
        if not isinstance(self.with_replacement, (bool, np.bool_)):
            raise InvalidArgumentError(
                f"with_replacement is {self.with_replacement!r}; pass True or False"
            )
        object.__setattr__(self, "with_replacement", bool(self.with_replacement))

    def to_proto(self) -> table_pb2.SelectorConfig:
        return table_pb2.SelectorConfig(
            kind=_KIND_TO_PROTO[self.kind],
            alpha=self.alpha,
            without_replacement=not self.with_replacement,
        )

    @classmethod
    def from_proto(cls, msg: table_pb2.SelectorConfig, *, default: str) -> SelectorConfig:
        """Build from a proto; an unset kind means `default`.

        proto3 cannot tell an unset alpha from 0, so alpha 0 means PER's 0.6 where it cannot
        have been meant: for a kind that ignores alpha, or with an unset kind.
        """

        if msg.kind == table_pb2.SELECTOR_KIND_UNSPECIFIED:
            kind = default
        else:
            found = _PROTO_TO_KIND.get(msg.kind)
            if found is None:
                raise InvalidArgumentError(
                    f"selector kind code {msg.kind} is unknown to this replaybuf version; "
                    f"use one of {tuple(_KIND_TO_PROTO)}"
                )
            kind = found
        alpha = msg.alpha
        unset_kind = msg.kind == table_pb2.SELECTOR_KIND_UNSPECIFIED
        if alpha == 0 and (kind != "prioritized" or unset_kind):
            alpha = 0.6
        return cls(kind, alpha=alpha, with_replacement=not msg.without_replacement)


def parse_signature(signature: object) -> tuple[FieldSpec, ...]:
    """Normalize a signature to a tuple of `FieldSpec`.

    Accepts a sequence of `FieldSpec` (or ``(name, dtype[, shape])`` tuples), or a mapping
    ``{name: FieldSpec | dtype | (dtype, shape)}``, e.g.
    ``{"obs": (np.float32, (17,)), "reward": np.float32}``. Order is kept: it is the order of
    the fields in stored payloads.

    Raises:
        InvalidArgumentError: empty, a duplicate name, or a bad dtype/shape/name.
    """

    specs: list[FieldSpec] = []
    if isinstance(signature, Mapping):
        for name, value in signature.items():
            if isinstance(value, FieldSpec):
                if value.name != name:
                    raise InvalidArgumentError(
                        f"signature key {name!r} maps to FieldSpec named {value.name!r}; "
                        f"use the same name for both"
                    )
                specs.append(value)
            elif isinstance(value, tuple) and len(value) == 2 and not isinstance(value[1], str):
                specs.append(FieldSpec(str(name), value[0], tuple(value[1])))
            else:
                specs.append(FieldSpec(str(name), value, ()))
    elif isinstance(signature, Sequence) and not isinstance(signature, (str, bytes)):
        for value in signature:
            if isinstance(value, FieldSpec):
                specs.append(value)
            elif isinstance(value, tuple) and len(value) in (2, 3):
                shape = tuple(value[2]) if len(value) == 3 else ()
                specs.append(FieldSpec(value[0], value[1], shape))
            else:
                raise InvalidArgumentError(
                    f"signature entry {value!r} is not a FieldSpec or (name, dtype, shape) tuple"
                )
    else:
        raise InvalidArgumentError(
            f"signature is a {type(signature).__name__}; pass a mapping such as "
            f"{{'obs': (np.float32, (17,)), 'reward': np.float32}} or a sequence of FieldSpec"
        )
    if not specs:
        raise InvalidArgumentError("signature is empty; a table needs at least one field")
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise InvalidArgumentError(
                f"signature has field {spec.name!r} twice; give each field once"
            )
        seen.add(spec.name)
    return tuple(specs)


@dataclass(frozen=True)
class TableConfig:
    """How one table stores, samples, evicts and paces its items. Immutable once created.

    Example::

        TableConfig("replay", {"obs": (np.float32, (17,)), "reward": np.float32},
                    capacity=1_000_000,
                    remover=SelectorConfig("lowest_priority"),
                    rate_limiter=RateLimiterConfig.min_size(1000))
    """

    name: str
    """Unique table name: letters, digits, ``_``, ``.``, ``-`` (not first a digit), <= 128."""

    signature: tuple[FieldSpec, ...]
    """The fields of every item, in payload order; a mapping is accepted (see
    `parse_signature`)."""

    capacity: int
    """Most items present at once (1 .. 2**32 - 2). An append into a full table first evicts
    with the remover (logged as ``ItemsEvicted`` with reason CAPACITY). RAM cost: about
    ``capacity * (item bytes + 40)`` bytes, allocated lazily by the OS."""

    sampler: SelectorConfig = field(default_factory=SelectorConfig)
    """How samples are drawn (`SAMPLER_KINDS`)."""

    remover: SelectorConfig = field(default_factory=lambda: SelectorConfig("fifo"))
    """Which items leave when the table is full (`REMOVER_KINDS`)."""

    max_times_sampled: int = 0
    """Retire an item after its k-th sample (logged as ``ItemsEvicted`` with reason
    MAX_TIMES_SAMPLED); 0 = unlimited."""

    rate_limiter: RateLimiterConfig = field(default_factory=RateLimiterConfig)
    """Minimum size to sample and optional samples-per-insert ratio."""

    reward_field: str = "reward"
    """Scalar numeric field that `Engine.correct_rewards` rewrites. With the default name the
    field may be absent (the table then refuses corrections); a non-default name must exist."""

    description: str = ""
    """Free-form text for humans."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not TABLE_NAME.match(self.name):
            raise InvalidArgumentError(
                f"table name {self.name!r} is invalid; use 1-128 letters, digits, '_', '.' or "
                f"'-', starting with a letter or '_'"
            )
        sig = parse_signature(self.signature)
        object.__setattr__(self, "signature", sig)
        cap = self.capacity
        if not _is_int(cap) or not 1 <= cap <= _MAX_CAPACITY:
            raise InvalidArgumentError(
                f"capacity of table {self.name!r} is {cap!r}; it must be an integer in "
                f"[1, {_MAX_CAPACITY}]"
            )
        object.__setattr__(self, "capacity", int(cap))
        for role, cfg, allowed in (
            ("sampler", self.sampler, SAMPLER_KINDS),
            ("remover", self.remover, REMOVER_KINDS),
        ):
            if isinstance(cfg, str):
                cfg = SelectorConfig(cfg)
                object.__setattr__(self, role, cfg)
            if not isinstance(cfg, SelectorConfig):
                raise InvalidArgumentError(
                    f"{role} of table {self.name!r} is {cfg!r}; pass a SelectorConfig, e.g. "
                    f"SelectorConfig({allowed[0]!r})"
                )
            if cfg.kind not in allowed:
                raise InvalidArgumentError(
                    f"{role} kind {cfg.kind!r} of table {self.name!r} is not supported as a "
                    f"{role}; use one of {allowed}"
                )
        mts = self.max_times_sampled
        if not _is_int(mts) or mts < 0:
            raise InvalidArgumentError(
                f"max_times_sampled of table {self.name!r} is {mts!r}; it must be an integer "
                f">= 0 (0 = unlimited)"
            )
        object.__setattr__(self, "max_times_sampled", int(mts))
        if not isinstance(self.rate_limiter, RateLimiterConfig):
            raise InvalidArgumentError(
                f"rate_limiter of table {self.name!r} is {self.rate_limiter!r}; pass a "
                f"RateLimiterConfig, e.g. RateLimiterConfig.min_size(1)"
            )
        if not isinstance(self.reward_field, str) or not self.reward_field:
            raise InvalidArgumentError(
                f"reward_field of table {self.name!r} is {self.reward_field!r}; name a scalar "
                f"field of the signature (default 'reward')"
            )
        spec = self.field(self.reward_field)
        if spec is None and self.reward_field != "reward":
            raise InvalidArgumentError(
                f"reward_field {self.reward_field!r} of table {self.name!r} is not in the "
                f"signature {[s.name for s in sig]}; add the field or fix the name"
            )
        if spec is not None and (spec.shape != () or spec.dtype.kind not in "iuf"):
            raise InvalidArgumentError(
                f"reward_field {self.reward_field!r} of table {self.name!r} has dtype "
                f"{spec.dtype} and shape {spec.shape}; a reward must be a scalar number "
                f"(shape (), an int or float dtype)"
            )
        if not isinstance(self.description, str):
            raise InvalidArgumentError(
                f"description of table {self.name!r} is {self.description!r}; pass a string"
            )

    # -- helpers ------------------------------------------------------------------------------

    def field(self, name: str) -> FieldSpec | None:
        """The signature's spec named `name`, or None."""

        for spec in self.signature:
            if spec.name == name:
                return spec
        return None

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.signature)

    @property
    def has_reward(self) -> bool:
        """True when `reward_field` is in the signature (corrections are possible)."""

        return self.field(self.reward_field) is not None

    @property
    def item_nbytes(self) -> int:
        """Bytes of one item's payload (all fields)."""

        return sum(s.item_nbytes for s in self.signature)

    # -- proto --------------------------------------------------------------------------------

    def to_proto(self) -> table_pb2.TableConfig:
        """The wire/log form (``replaybuf.v1.TableConfig``)."""

        rl = self.rate_limiter
        return table_pb2.TableConfig(
            name=self.name,
            signature=[s.to_proto() for s in self.signature],
            capacity=self.capacity,
            sampler=self.sampler.to_proto(),
            remover=self.remover.to_proto(),
            max_times_sampled=self.max_times_sampled,
            rate_limiter=table_pb2.RateLimiterConfig(
                min_size_to_sample=rl.min_size_to_sample,
                samples_per_insert=rl.samples_per_insert or 0.0,
                error_buffer=rl.error_buffer or 0.0,
            ),
            reward_field=self.reward_field,
            description=self.description,
        )

    @classmethod
    def from_proto(cls, msg: table_pb2.TableConfig) -> TableConfig:
        """Build and validate from the wire/log form. Unset fields take the defaults:
        sampler prioritized (alpha 0.6), remover fifo, min_size_to_sample 1, no ratio limit,
        reward_field "reward".

        Raises:
            InvalidArgumentError: the config is invalid (the message names the field).
        """

        rl = msg.rate_limiter
        spi = rl.samples_per_insert or None
        limiter = RateLimiterConfig(
            min_size_to_sample=max(1, int(rl.min_size_to_sample)),
            samples_per_insert=spi,
            error_buffer=(rl.error_buffer if spi is not None else None),
        )
        return cls(
            name=msg.name,
            signature=tuple(FieldSpec.from_proto(s) for s in msg.signature),
            capacity=int(msg.capacity),
            sampler=SelectorConfig.from_proto(msg.sampler, default="prioritized")
            if msg.HasField("sampler")
            else SelectorConfig(),
            remover=SelectorConfig.from_proto(msg.remover, default="fifo")
            if msg.HasField("remover")
            else SelectorConfig("fifo"),
            max_times_sampled=int(msg.max_times_sampled),
            rate_limiter=limiter,
            reward_field=msg.reward_field or "reward",
            description=msg.description,
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary (for logs and the CLI)."""

        return {
            "name": self.name,
            "signature": {s.name: [str(s.dtype), list(s.shape)] for s in self.signature},
            "capacity": self.capacity,
            "sampler": self.sampler.kind,
            "remover": self.remover.kind,
            "max_times_sampled": self.max_times_sampled,
        }
