from replaybuf.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SelectorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SELECTOR_KIND_UNSPECIFIED: _ClassVar[SelectorKind]
    SELECTOR_KIND_PRIORITIZED: _ClassVar[SelectorKind]
    SELECTOR_KIND_UNIFORM: _ClassVar[SelectorKind]
    SELECTOR_KIND_FIFO: _ClassVar[SelectorKind]
    SELECTOR_KIND_LIFO: _ClassVar[SelectorKind]
    SELECTOR_KIND_LOWEST_PRIORITY: _ClassVar[SelectorKind]
SELECTOR_KIND_UNSPECIFIED: SelectorKind
SELECTOR_KIND_PRIORITIZED: SelectorKind
SELECTOR_KIND_UNIFORM: SelectorKind
SELECTOR_KIND_FIFO: SelectorKind
SELECTOR_KIND_LIFO: SelectorKind
SELECTOR_KIND_LOWEST_PRIORITY: SelectorKind

class SelectorConfig(_message.Message):
    __slots__ = ("kind", "alpha", "without_replacement")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    WITHOUT_REPLACEMENT_FIELD_NUMBER: _ClassVar[int]
    kind: SelectorKind
    alpha: float
    without_replacement: bool
    def __init__(self, kind: _Optional[_Union[SelectorKind, str]] = ..., alpha: _Optional[float] = ..., without_replacement: _Optional[bool] = ...) -> None: ...

class RateLimiterConfig(_message.Message):
    __slots__ = ("min_size_to_sample", "samples_per_insert", "error_buffer")
    MIN_SIZE_TO_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_INSERT_FIELD_NUMBER: _ClassVar[int]
    ERROR_BUFFER_FIELD_NUMBER: _ClassVar[int]
    min_size_to_sample: int
    samples_per_insert: float
    error_buffer: float
    def __init__(self, min_size_to_sample: _Optional[int] = ..., samples_per_insert: _Optional[float] = ..., error_buffer: _Optional[float] = ...) -> None: ...

class TableConfig(_message.Message):
    __slots__ = ("name", "signature", "capacity", "sampler", "remover", "max_times_sampled", "rate_limiter", "reward_field", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    REMOVER_FIELD_NUMBER: _ClassVar[int]
    MAX_TIMES_SAMPLED_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITER_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    signature: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.TensorSpec]
    capacity: int
    sampler: SelectorConfig
    remover: SelectorConfig
    max_times_sampled: int
    rate_limiter: RateLimiterConfig
    reward_field: str
    description: str
    def __init__(self, name: _Optional[str] = ..., signature: _Optional[_Iterable[_Union[_tensor_pb2.TensorSpec, _Mapping]]] = ..., capacity: _Optional[int] = ..., sampler: _Optional[_Union[SelectorConfig, _Mapping]] = ..., remover: _Optional[_Union[SelectorConfig, _Mapping]] = ..., max_times_sampled: _Optional[int] = ..., rate_limiter: _Optional[_Union[RateLimiterConfig, _Mapping]] = ..., reward_field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class Lineage(_message.Message):
    __slots__ = ("episode_id", "step", "request_id", "model_version", "timestamp_ms", "source")
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    episode_id: _containers.RepeatedScalarFieldContainer[int]
    step: _containers.RepeatedScalarFieldContainer[int]
    request_id: _containers.RepeatedScalarFieldContainer[str]
    model_version: _containers.RepeatedScalarFieldContainer[int]
    timestamp_ms: _containers.RepeatedScalarFieldContainer[int]
    source: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, episode_id: _Optional[_Iterable[int]] = ..., step: _Optional[_Iterable[int]] = ..., request_id: _Optional[_Iterable[str]] = ..., model_version: _Optional[_Iterable[int]] = ..., timestamp_ms: _Optional[_Iterable[int]] = ..., source: _Optional[_Iterable[str]] = ...) -> None: ...

class SampleInfo(_message.Message):
    __slots__ = ("item_ids", "priorities", "probabilities", "weights", "times_sampled", "lineage", "lsn", "seed", "table_size")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    TIMES_SAMPLED_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    LSN_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TABLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    priorities: _containers.RepeatedScalarFieldContainer[float]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    weights: _containers.RepeatedScalarFieldContainer[float]
    times_sampled: _containers.RepeatedScalarFieldContainer[int]
    lineage: Lineage
    lsn: int
    seed: int
    table_size: int
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ..., priorities: _Optional[_Iterable[float]] = ..., probabilities: _Optional[_Iterable[float]] = ..., weights: _Optional[_Iterable[float]] = ..., times_sampled: _Optional[_Iterable[int]] = ..., lineage: _Optional[_Union[Lineage, _Mapping]] = ..., lsn: _Optional[int] = ..., seed: _Optional[int] = ..., table_size: _Optional[int] = ...) -> None: ...
