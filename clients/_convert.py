"""Conversions between the client's friendly Python forms and the wire messages.

Pure functions over numpy and the generated protobuf modules; no I/O, no grpc.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from replaybuf.errors import InvalidArgumentError, SignatureMismatchError
from replaybuf.shared_ring import ClientRing
from replaybuf.tensors import FieldSpec, dtype_from_proto, from_batch
from replaybuf.v1 import events_pb2, service_pb2, table_pb2, tensor_pb2

from ._wire import decode_columns, split_sample_response
from ._types import (
    AppendResult,
    ItemLineage,
    Lineage,
    LogEvent,
    RateLimiterInfo,
    Sample,
    SampleInfo,
    TableInfo,
)

__all__ = [
    "table_config_proto",
    "selector_proto",
    "signature_protos",
    "feedback_source",
    "eviction_reason",
    "coerce_columns",
    "decode_sample",
    "decode_sample_bytes",
    "decode_stream_response",
    "decode_table_info",
    "decode_ack",
    "decode_item_lineage",
    "ids_array",
    "values_array",
]

_SELECTORS: dict[str, int] = {
    "prioritized": table_pb2.SELECTOR_KIND_PRIORITIZED,
    "uniform": table_pb2.SELECTOR_KIND_UNIFORM,
    "fifo": table_pb2.SELECTOR_KIND_FIFO,
    "lifo": table_pb2.SELECTOR_KIND_LIFO,
    "lowest_priority": table_pb2.SELECTOR_KIND_LOWEST_PRIORITY,
}
_SELECTOR_NAMES = {code: name for name, code in _SELECTORS.items()}

_MISSING: Any = object()


def _proto_of(value: Any, cls: type, what: str) -> Any:
    """``value`` itself if it is a ``cls`` message, or ``value.to_proto()``; else None."""

    if isinstance(value, cls):
        return value
    to_proto = getattr(value, "to_proto", None)
    if callable(to_proto):
        proto = to_proto()
        if not isinstance(proto, cls):
            raise InvalidArgumentError(
                f"{what}.to_proto() returned {type(proto).__name__}, expected {cls.__name__}"
            )
        return proto
    return None


def selector_proto(value: Any, *, alpha: float = 0.6, what: str = "sampler") -> table_pb2.SelectorConfig:
    """A SelectorConfig from a name (``"prioritized"``), a dict, a message or a ``to_proto()`` object.

    ``alpha`` applies to a prioritized selector given by name only.
    """

    proto = _proto_of(value, table_pb2.SelectorConfig, what)
    if proto is not None:
        return proto
    if isinstance(value, str):
        value = {"kind": value}
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"kind", "alpha", "without_replacement"})
        if unknown:
            raise InvalidArgumentError(
                f"{what} has unknown key(s) {unknown}; use kind, alpha, without_replacement"
            )
        kind = str(value.get("kind", "")).lower()
        if kind not in _SELECTORS:
            raise InvalidArgumentError(
                f"{what} kind {value.get('kind')!r} is unknown; use one of {sorted(_SELECTORS)}"
            )
        code = _SELECTORS[kind]
        a = float(value.get("alpha", alpha if code == table_pb2.SELECTOR_KIND_PRIORITIZED else 0.0))
        return table_pb2.SelectorConfig(
            kind=code, alpha=a, without_replacement=bool(value.get("without_replacement", False))
        )
    raise InvalidArgumentError(
        f"{what}={value!r} must be a kind name such as 'prioritized', a dict, or a SelectorConfig"
    )


def _field_spec(name: str, value: Any) -> tensor_pb2.TensorSpec:
    if isinstance(value, tensor_pb2.TensorSpec):
        return tensor_pb2.TensorSpec(name=name, dtype=value.dtype, shape=list(value.shape))
    if isinstance(value, FieldSpec):
        return FieldSpec(name, value.dtype, value.shape).to_proto()
    if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[1], str):
        dtype, shape = value
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        return FieldSpec(name, dtype, shape).to_proto()
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise InvalidArgumentError(
            f"signature field {name!r}: {value!r} is not a dtype, (dtype, shape), FieldSpec or "
            "TensorSpec; e.g. {'obs': (np.float32, (17,)), 'reward': np.float32}"
        ) from None
    return FieldSpec(name, dtype, ()).to_proto()


def signature_protos(signature: Any) -> list[tensor_pb2.TensorSpec]:
    """TensorSpecs from ``{name: dtype | (dtype, shape) | FieldSpec}`` or a list of specs."""

    if isinstance(signature, Mapping):
        return [_field_spec(str(name), spec) for name, spec in signature.items()]
    if isinstance(signature, Sequence) and not isinstance(signature, (str, bytes)):
        out = []
        for spec in signature:
            if isinstance(spec, tensor_pb2.TensorSpec):
                out.append(spec)
            elif isinstance(spec, FieldSpec):
                out.append(spec.to_proto())
            else:
                raise InvalidArgumentError(
                    f"signature list entries must be FieldSpec or TensorSpec, not {spec!r}; or "
                    "pass a dict {name: (dtype, shape)}"
                )
        return out
    raise InvalidArgumentError(
        f"signature={signature!r} must be a dict {{name: (dtype, shape)}} or a list of FieldSpec"
    )


def _rate_limiter_proto(value: Any) -> table_pb2.RateLimiterConfig:
    proto = _proto_of(value, table_pb2.RateLimiterConfig, "rate_limiter")
    if proto is not None:
        return proto
    get = value.get if isinstance(value, Mapping) else lambda k, d=None: getattr(value, k, d)
    return table_pb2.RateLimiterConfig(
        min_size_to_sample=int(get("min_size_to_sample", 1) or 0),
        samples_per_insert=float(get("samples_per_insert", 0.0) or 0.0),
        error_buffer=float(get("error_buffer", 0.0) or 0.0),
    )


def table_config_proto(
    config: Any = None,
    signature: Any = None,
    capacity: Any = None,
    *,
    name: str | None = None,
    sampler: Any = "prioritized",
    alpha: float = 0.6,
    remover: Any = "fifo",
    max_times_sampled: int = 0,
    min_size_to_sample: int = 1,
    samples_per_insert: float | None = None,
    error_buffer: float | None = None,
    rate_limiter: Any = None,
    reward_field: str = "",
    description: str = "",
) -> table_pb2.TableConfig:
    """A TableConfig from a message, a ``to_proto()`` object, a dict, or name + keywords.

    The server validates the result; this only builds it (and rejects forms it cannot read).
    """

    if config is not None and not isinstance(config, str):
        if signature is not None or capacity is not None or name is not None:
            raise InvalidArgumentError(
                "pass either a table config object or name/signature/capacity keywords, not both"
            )
        proto = _proto_of(config, table_pb2.TableConfig, "config")
        if proto is not None:
            return proto
        if isinstance(config, Mapping):
            return table_config_proto(**dict(config))
        raise InvalidArgumentError(
            f"config of type {type(config).__name__} is not a TableConfig, an object with "
            "to_proto(), a dict or a table name"
        )
    name = config if isinstance(config, str) else name
    if not name:
        raise InvalidArgumentError("create_table needs a table name, e.g. create_table('replay', ...)")
    if signature is None or capacity is None:
        raise InvalidArgumentError(
            f"table {name!r} needs signature= (e.g. {{'obs': (np.float32, (17,))}}) and capacity="
        )
    if rate_limiter is not None:
        limiter = _rate_limiter_proto(rate_limiter)
    else:
        if samples_per_insert and error_buffer is None:
            raise InvalidArgumentError(
                f"table {name!r}: samples_per_insert={samples_per_insert} needs error_buffer= "
                f"too (how far the ratio may drift, >= max(1, samples_per_insert))"
            )
        limiter = table_pb2.RateLimiterConfig(
            min_size_to_sample=int(min_size_to_sample),
            samples_per_insert=float(samples_per_insert or 0.0),
            error_buffer=float(error_buffer or 0.0),
        )
    try:
        cap = int(capacity)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"capacity={capacity!r} must be an int >= 1") from None
    return table_pb2.TableConfig(
        name=name,
        signature=signature_protos(signature),
        capacity=cap,
        sampler=selector_proto(sampler, alpha=alpha, what="sampler"),
        remover=selector_proto(remover, alpha=alpha, what="remover"),
        max_times_sampled=int(max_times_sampled),
        rate_limiter=limiter,
        reward_field=reward_field,
        description=description,
    )


def _enum_value(value: Any, enum: Any, prefix: str, what: str) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if int(value) not in enum.values():
            raise InvalidArgumentError(f"{what}={value} is not a valid code")
        return int(value)
    if isinstance(value, str):
        key = value.upper()
        key = key if key.startswith(prefix) else prefix + key
        if key in enum.keys() and not key.endswith("UNSPECIFIED"):
            return int(enum.Value(key))
    choices = sorted(k[len(prefix):].lower() for k in enum.keys() if not k.endswith("UNSPECIFIED"))
    raise InvalidArgumentError(f"{what}={value!r} is unknown; use one of {choices}")


def feedback_source(value: Any) -> int:
    """FeedbackSource code from ``"human"``, ``"model"``, ``"rule"`` or a code."""

    return _enum_value(value, events_pb2.FeedbackSource, "FEEDBACK_SOURCE_", "source")


def eviction_reason(value: Any) -> int:
    """EvictionReason code from a name such as ``"manual"`` or ``"invalid_data"``, or a code."""

    return _enum_value(value, events_pb2.EvictionReason, "EVICTION_REASON_", "reason")


def ids_array(ids: Any, what: str = "ids") -> np.ndarray:
    """Item ids as a 1-D uint64 array (accepts lists, numpy arrays, CPU torch tensors)."""

    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "ui":
        raise InvalidArgumentError(f"{what} must be integers (item ids), got dtype {arr.dtype}")
    if arr.size and arr.dtype.kind == "i" and arr.min() < 0:
        raise InvalidArgumentError(f"{what} holds a negative id ({arr.min()}); ids are >= 0")
    return arr.astype(np.uint64, copy=False)


def values_array(values: Any, n: int, what: str) -> np.ndarray:
    """Per-item float values (priorities, rewards) as float64, one per id."""

    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise InvalidArgumentError(f"{what} has {arr.shape[0]} values for {n} ids; give one per id")
    return arr


def coerce_columns(
    columns: Mapping[str, Any], signature: Mapping[str, FieldSpec] | None, *, table: str
) -> dict[str, np.ndarray]:
    """Columns as numpy arrays in the signature's dtypes (``same_kind`` casts only, e.g. float64
    to float32; never float to int). Without a signature the arrays are only made numpy."""

    out: dict[str, np.ndarray] = {}
    for name, value in columns.items():
        arr = np.asarray(value)
        spec = signature.get(name) if signature is not None else None
        if spec is not None and arr.dtype != spec.dtype:
            if not np.can_cast(arr.dtype, spec.dtype, casting="same_kind"):
                raise SignatureMismatchError(
                    f"field {name!r} of table {table!r} has dtype {arr.dtype}, expected "
                    f"{spec.dtype}; convert with .astype(np.{spec.dtype.name})"
                )
            arr = arr.astype(spec.dtype)
        out[name] = arr
    return out


def decode_sample(resp: service_pb2.SampleResponse) -> Sample:
    """Decode a response: data as read-only numpy views over its bytes, info as arrays."""

    return Sample(data=from_batch(resp.data), info=_sample_info(resp.info))


def decode_sample_bytes(raw: bytes) -> Sample:
    """Decode serialized SampleResponse bytes without copying the data (`._wire`): each
    column is a read-only view of `raw`."""

    return decode_stream_response(raw, None)[0]


def decode_stream_response(raw: bytes, ring: ClientRing | None) -> tuple[Sample, bool]:
    """`decode_sample_bytes`, or for a batch the server wrote into the stream's shared
    ``ring``, a copy out of it (`ClientRing.read`: writable arrays). Returns the batch and
    whether it came through the ring.

    Raises:
        InvalidArgumentError: malformed bytes, or a shared batch without a ring.
    """

    span, info, shared = split_sample_response(raw)
    if shared is None:
        return Sample(data=decode_columns(raw, span), info=_sample_info(info)), False
    if ring is None:
        raise InvalidArgumentError(
            "SampleResponse.shared is set but this stream offered no shared ring"
        )
    return Sample(data=ring.read(shared), info=_sample_info(info)), True


def _sample_info(info: Any) -> SampleInfo:
    return SampleInfo(
        item_ids=np.array(info.item_ids, dtype=np.uint64),
        priorities=np.array(info.priorities, dtype=np.float64),
        probabilities=np.array(info.probabilities, dtype=np.float64),
        weights=np.array(info.weights, dtype=np.float64),
        times_sampled=np.array(info.times_sampled, dtype=np.uint64),
        lineage=Lineage.from_proto(info.lineage),
        lsn=int(info.lsn),
        seed=int(info.seed),
        table_size=int(info.table_size),
    )


def decode_ack(ack: service_pb2.AppendAck) -> AppendResult:
    return AppendResult(
        item_ids=np.array(ack.item_ids, dtype=np.uint64),
        first_lsn=int(ack.first_lsn),
        last_lsn=int(ack.last_lsn),
        durable=bool(ack.durable),
        duplicate=bool(ack.duplicate),
    )


def decode_table_info(info: service_pb2.TableInfo) -> TableInfo:
    cfg = info.config
    rl = info.rate_limiter
    return TableInfo(
        name=cfg.name,
        signature=tuple(
            FieldSpec(s.name, dtype_from_proto(s.dtype), tuple(s.shape)) for s in cfg.signature
        ),
        capacity=int(cfg.capacity),
        sampler=_SELECTOR_NAMES.get(cfg.sampler.kind, "unspecified"),
        alpha=float(cfg.sampler.alpha),
        remover=_SELECTOR_NAMES.get(cfg.remover.kind, "unspecified"),
        max_times_sampled=int(cfg.max_times_sampled),
        size=int(info.size),
        total_priority=float(info.total_priority),
        max_priority=float(info.max_priority),
        rate_limiter=RateLimiterInfo(
            inserts=int(rl.inserts),
            samples=int(rl.samples),
            min_diff=float(rl.min_diff),
            max_diff=float(rl.max_diff),
            blocked_inserts=int(rl.blocked_inserts),
            blocked_samples=int(rl.blocked_samples),
        ),
        applied_lsn=int(info.applied_lsn),
        durable_lsn=int(info.durable_lsn),
        metrics=dict(info.metrics),
        config=cfg,
    )


def decode_item_lineage(resp: service_pb2.GetLineageResponse) -> ItemLineage:
    return ItemLineage(
        item_id=int(resp.item_id),
        table=resp.table,
        present=bool(resp.present),
        entries=tuple(LogEvent(int(e.lsn), e.event) for e in resp.entries),
    )
