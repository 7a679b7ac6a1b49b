from replaybuf.v1 import events_pb2 as _events_pb2
from replaybuf.v1 import table_pb2 as _table_pb2
from replaybuf.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateTableRequest(_message.Message):
    __slots__ = ("config", "exist_ok")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    EXIST_OK_FIELD_NUMBER: _ClassVar[int]
    config: _table_pb2.TableConfig
    exist_ok: bool
    def __init__(self, config: _Optional[_Union[_table_pb2.TableConfig, _Mapping]] = ..., exist_ok: _Optional[bool] = ...) -> None: ...

class CreateTableResponse(_message.Message):
    __slots__ = ("table", "lsn")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    LSN_FIELD_NUMBER: _ClassVar[int]
    table: TableInfo
    lsn: int
    def __init__(self, table: _Optional[_Union[TableInfo, _Mapping]] = ..., lsn: _Optional[int] = ...) -> None: ...

class ListTablesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTablesResponse(_message.Message):
    __slots__ = ("tables",)
    TABLES_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedCompositeFieldContainer[TableInfo]
    def __init__(self, tables: _Optional[_Iterable[_Union[TableInfo, _Mapping]]] = ...) -> None: ...

class DescribeTableRequest(_message.Message):
    __slots__ = ("table",)
    TABLE_FIELD_NUMBER: _ClassVar[int]
    table: str
    def __init__(self, table: _Optional[str] = ...) -> None: ...

class RateLimiterInfo(_message.Message):
    __slots__ = ("inserts", "samples", "min_diff", "max_diff", "blocked_inserts", "blocked_samples")
    INSERTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MIN_DIFF_FIELD_NUMBER: _ClassVar[int]
    MAX_DIFF_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_INSERTS_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    inserts: int
    samples: int
    min_diff: float
    max_diff: float
    blocked_inserts: int
    blocked_samples: int
    def __init__(self, inserts: _Optional[int] = ..., samples: _Optional[int] = ..., min_diff: _Optional[float] = ..., max_diff: _Optional[float] = ..., blocked_inserts: _Optional[int] = ..., blocked_samples: _Optional[int] = ...) -> None: ...

class TableInfo(_message.Message):
    __slots__ = ("config", "size", "total_priority", "max_priority", "rate_limiter", "applied_lsn", "durable_lsn", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MAX_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITER_FIELD_NUMBER: _ClassVar[int]
    APPLIED_LSN_FIELD_NUMBER: _ClassVar[int]
    DURABLE_LSN_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    config: _table_pb2.TableConfig
    size: int
    total_priority: float
    max_priority: float
    rate_limiter: RateLimiterInfo
    applied_lsn: int
    durable_lsn: int
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, config: _Optional[_Union[_table_pb2.TableConfig, _Mapping]] = ..., size: _Optional[int] = ..., total_priority: _Optional[float] = ..., max_priority: _Optional[float] = ..., rate_limiter: _Optional[_Union[RateLimiterInfo, _Mapping]] = ..., applied_lsn: _Optional[int] = ..., durable_lsn: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class AppendRequest(_message.Message):
    __slots__ = ("table", "data", "priorities", "lineage", "producer_id", "producer_seq")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_SEQ_FIELD_NUMBER: _ClassVar[int]
    table: str
    data: _tensor_pb2.ColumnarBatch
    priorities: _containers.RepeatedScalarFieldContainer[float]
    lineage: _table_pb2.Lineage
    producer_id: bytes
    producer_seq: int
    def __init__(self, table: _Optional[str] = ..., data: _Optional[_Union[_tensor_pb2.ColumnarBatch, _Mapping]] = ..., priorities: _Optional[_Iterable[float]] = ..., lineage: _Optional[_Union[_table_pb2.Lineage, _Mapping]] = ..., producer_id: _Optional[bytes] = ..., producer_seq: _Optional[int] = ...) -> None: ...

class AppendAck(_message.Message):
    __slots__ = ("producer_seq", "first_lsn", "last_lsn", "item_ids", "durable", "duplicate")
    PRODUCER_SEQ_FIELD_NUMBER: _ClassVar[int]
    FIRST_LSN_FIELD_NUMBER: _ClassVar[int]
    LAST_LSN_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    producer_seq: int
    first_lsn: int
    last_lsn: int
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    durable: bool
    duplicate: bool
    def __init__(self, producer_seq: _Optional[int] = ..., first_lsn: _Optional[int] = ..., last_lsn: _Optional[int] = ..., item_ids: _Optional[_Iterable[int]] = ..., durable: _Optional[bool] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("table", "batch_size", "beta", "seed", "prefetch", "num_batches", "timeout_ms", "fields", "at_lsn", "shared_ring")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    NUM_BATCHES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    AT_LSN_FIELD_NUMBER: _ClassVar[int]
    SHARED_RING_FIELD_NUMBER: _ClassVar[int]
    table: str
    batch_size: int
    beta: float
    seed: int
    prefetch: int
    num_batches: int
    timeout_ms: int
    fields: _containers.RepeatedScalarFieldContainer[str]
    at_lsn: int
    shared_ring: SharedRing
    def __init__(self, table: _Optional[str] = ..., batch_size: _Optional[int] = ..., beta: _Optional[float] = ..., seed: _Optional[int] = ..., prefetch: _Optional[int] = ..., num_batches: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., fields: _Optional[_Iterable[str]] = ..., at_lsn: _Optional[int] = ..., shared_ring: _Optional[_Union[SharedRing, _Mapping]] = ...) -> None: ...

class SharedRing(_message.Message):
    __slots__ = ("path", "slot_bytes", "slots")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SLOT_BYTES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    path: str
    slot_bytes: int
    slots: int
    def __init__(self, path: _Optional[str] = ..., slot_bytes: _Optional[int] = ..., slots: _Optional[int] = ...) -> None: ...

class SharedBatch(_message.Message):
    __slots__ = ("slot", "columns")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    slot: int
    columns: _containers.RepeatedCompositeFieldContainer[SharedColumn]
    def __init__(self, slot: _Optional[int] = ..., columns: _Optional[_Iterable[_Union[SharedColumn, _Mapping]]] = ...) -> None: ...

class SharedColumn(_message.Message):
    __slots__ = ("name", "dtype", "shape", "offset", "strides")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    STRIDES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: _tensor_pb2.DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    strides: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ..., strides: _Optional[_Iterable[int]] = ...) -> None: ...

class SampleStreamRequest(_message.Message):
    __slots__ = ("request", "consumed", "unconsumed")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    CONSUMED_FIELD_NUMBER: _ClassVar[int]
    UNCONSUMED_FIELD_NUMBER: _ClassVar[int]
    request: SampleRequest
    consumed: int
    unconsumed: int
    def __init__(self, request: _Optional[_Union[SampleRequest, _Mapping]] = ..., consumed: _Optional[int] = ..., unconsumed: _Optional[int] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("data", "info", "shared")
    DATA_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    data: _tensor_pb2.ColumnarBatch
    info: _table_pb2.SampleInfo
    shared: SharedBatch
    def __init__(self, data: _Optional[_Union[_tensor_pb2.ColumnarBatch, _Mapping]] = ..., info: _Optional[_Union[_table_pb2.SampleInfo, _Mapping]] = ..., shared: _Optional[_Union[SharedBatch, _Mapping]] = ...) -> None: ...

class UpdatePrioritiesRequest(_message.Message):
    __slots__ = ("table", "item_ids", "priorities", "source")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    table: str
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    priorities: _containers.RepeatedScalarFieldContainer[float]
    source: str
    def __init__(self, table: _Optional[str] = ..., item_ids: _Optional[_Iterable[int]] = ..., priorities: _Optional[_Iterable[float]] = ..., source: _Optional[str] = ...) -> None: ...

class UpdatePrioritiesResponse(_message.Message):
    __slots__ = ("lsn", "missing_ids")
    LSN_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    missing_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, lsn: _Optional[int] = ..., missing_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class CorrectRewardsRequest(_message.Message):
    __slots__ = ("table", "item_ids", "rewards", "source", "fidelity_weight", "reason", "author")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    table: str
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    rewards: _containers.RepeatedScalarFieldContainer[float]
    source: _events_pb2.FeedbackSource
    fidelity_weight: float
    reason: str
    author: str
    def __init__(self, table: _Optional[str] = ..., item_ids: _Optional[_Iterable[int]] = ..., rewards: _Optional[_Iterable[float]] = ..., source: _Optional[_Union[_events_pb2.FeedbackSource, str]] = ..., fidelity_weight: _Optional[float] = ..., reason: _Optional[str] = ..., author: _Optional[str] = ...) -> None: ...

class CorrectRewardsResponse(_message.Message):
    __slots__ = ("lsn", "missing_ids")
    LSN_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    missing_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, lsn: _Optional[int] = ..., missing_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class EvictRequest(_message.Message):
    __slots__ = ("table", "item_ids", "reason", "job_id", "detail")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    table: str
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    reason: _events_pb2.EvictionReason
    job_id: str
    detail: str
    def __init__(self, table: _Optional[str] = ..., item_ids: _Optional[_Iterable[int]] = ..., reason: _Optional[_Union[_events_pb2.EvictionReason, str]] = ..., job_id: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class EvictResponse(_message.Message):
    __slots__ = ("lsn", "evicted", "missing_ids")
    LSN_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    evicted: int
    missing_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, lsn: _Optional[int] = ..., evicted: _Optional[int] = ..., missing_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("from_lsn", "follow", "tables")
    FROM_LSN_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    from_lsn: int
    follow: bool
    tables: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, from_lsn: _Optional[int] = ..., follow: _Optional[bool] = ..., tables: _Optional[_Iterable[str]] = ...) -> None: ...

class LogEvent(_message.Message):
    __slots__ = ("lsn", "event")
    LSN_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    event: _events_pb2.Event
    def __init__(self, lsn: _Optional[int] = ..., event: _Optional[_Union[_events_pb2.Event, _Mapping]] = ...) -> None: ...

class GetLineageRequest(_message.Message):
    __slots__ = ("item_id",)
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    def __init__(self, item_id: _Optional[int] = ...) -> None: ...

class LineageEntry(_message.Message):
    __slots__ = ("lsn", "event")
    LSN_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    event: _events_pb2.Event
    def __init__(self, lsn: _Optional[int] = ..., event: _Optional[_Union[_events_pb2.Event, _Mapping]] = ...) -> None: ...

class GetLineageResponse(_message.Message):
    __slots__ = ("item_id", "table", "entries", "present")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    table: str
    entries: _containers.RepeatedCompositeFieldContainer[LineageEntry]
    present: bool
    def __init__(self, item_id: _Optional[int] = ..., table: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[LineageEntry, _Mapping]]] = ..., present: _Optional[bool] = ...) -> None: ...

class FindItemsRequest(_message.Message):
    __slots__ = ("table", "request_id", "model_version", "episode_id", "include_evicted", "limit")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EVICTED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    table: str
    request_id: str
    model_version: int
    episode_id: int
    include_evicted: bool
    limit: int
    def __init__(self, table: _Optional[str] = ..., request_id: _Optional[str] = ..., model_version: _Optional[int] = ..., episode_id: _Optional[int] = ..., include_evicted: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class FindItemsResponse(_message.Message):
    __slots__ = ("item_ids", "truncated")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    truncated: bool
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("table", "as_of_lsn", "fields", "chunk_items")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    AS_OF_LSN_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ITEMS_FIELD_NUMBER: _ClassVar[int]
    table: str
    as_of_lsn: int
    fields: _containers.RepeatedScalarFieldContainer[str]
    chunk_items: int
    def __init__(self, table: _Optional[str] = ..., as_of_lsn: _Optional[int] = ..., fields: _Optional[_Iterable[str]] = ..., chunk_items: _Optional[int] = ...) -> None: ...

class ExportManifest(_message.Message):
    __slots__ = ("version", "as_of_lsn", "config", "item_count", "content_sha256", "model_versions", "min_timestamp_ms", "max_timestamp_ms", "log_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AS_OF_LSN_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    version: int
    as_of_lsn: int
    config: _table_pb2.TableConfig
    item_count: int
    content_sha256: str
    model_versions: _containers.RepeatedScalarFieldContainer[int]
    min_timestamp_ms: int
    max_timestamp_ms: int
    log_id: str
    def __init__(self, version: _Optional[int] = ..., as_of_lsn: _Optional[int] = ..., config: _Optional[_Union[_table_pb2.TableConfig, _Mapping]] = ..., item_count: _Optional[int] = ..., content_sha256: _Optional[str] = ..., model_versions: _Optional[_Iterable[int]] = ..., min_timestamp_ms: _Optional[int] = ..., max_timestamp_ms: _Optional[int] = ..., log_id: _Optional[str] = ...) -> None: ...

class ExportChunk(_message.Message):
    __slots__ = ("item_ids", "data", "priorities", "times_sampled", "lineage", "manifest")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    TIMES_SAMPLED_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    data: _tensor_pb2.ColumnarBatch
    priorities: _containers.RepeatedScalarFieldContainer[float]
    times_sampled: _containers.RepeatedScalarFieldContainer[int]
    lineage: _table_pb2.Lineage
    manifest: ExportManifest
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ..., data: _Optional[_Union[_tensor_pb2.ColumnarBatch, _Mapping]] = ..., priorities: _Optional[_Iterable[float]] = ..., times_sampled: _Optional[_Iterable[int]] = ..., lineage: _Optional[_Union[_table_pb2.Lineage, _Mapping]] = ..., manifest: _Optional[_Union[ExportManifest, _Mapping]] = ...) -> None: ...

class FlagForReviewRequest(_message.Message):
    __slots__ = ("table", "item_ids", "reason", "author")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    table: str
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    reason: str
    author: str
    def __init__(self, table: _Optional[str] = ..., item_ids: _Optional[_Iterable[int]] = ..., reason: _Optional[str] = ..., author: _Optional[str] = ...) -> None: ...

class FlagForReviewResponse(_message.Message):
    __slots__ = ("lsn", "missing_ids")
    LSN_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    missing_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, lsn: _Optional[int] = ..., missing_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ListPendingReviewsRequest(_message.Message):
    __slots__ = ("table", "limit")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    table: str
    limit: int
    def __init__(self, table: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class PendingReview(_message.Message):
    __slots__ = ("item_id", "reason", "author", "flagged_lsn", "reward", "priority")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_LSN_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    reason: str
    author: str
    flagged_lsn: int
    reward: float
    priority: float
    def __init__(self, item_id: _Optional[int] = ..., reason: _Optional[str] = ..., author: _Optional[str] = ..., flagged_lsn: _Optional[int] = ..., reward: _Optional[float] = ..., priority: _Optional[float] = ...) -> None: ...

class ListPendingReviewsResponse(_message.Message):
    __slots__ = ("reviews",)
    REVIEWS_FIELD_NUMBER: _ClassVar[int]
    reviews: _containers.RepeatedCompositeFieldContainer[PendingReview]
    def __init__(self, reviews: _Optional[_Iterable[_Union[PendingReview, _Mapping]]] = ...) -> None: ...

class ApplyLabelRequest(_message.Message):
    __slots__ = ("table", "item_id", "verdict", "reward", "priority", "author", "note")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    table: str
    item_id: int
    verdict: str
    reward: float
    priority: float
    author: str
    note: str
    def __init__(self, table: _Optional[str] = ..., item_id: _Optional[int] = ..., verdict: _Optional[str] = ..., reward: _Optional[float] = ..., priority: _Optional[float] = ..., author: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class ApplyLabelResponse(_message.Message):
    __slots__ = ("first_lsn", "last_lsn")
    FIRST_LSN_FIELD_NUMBER: _ClassVar[int]
    LAST_LSN_FIELD_NUMBER: _ClassVar[int]
    first_lsn: int
    last_lsn: int
    def __init__(self, first_lsn: _Optional[int] = ..., last_lsn: _Optional[int] = ...) -> None: ...

class DiffRequest(_message.Message):
    __slots__ = ("table", "from_lsn", "to_lsn")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    FROM_LSN_FIELD_NUMBER: _ClassVar[int]
    TO_LSN_FIELD_NUMBER: _ClassVar[int]
    table: str
    from_lsn: int
    to_lsn: int
    def __init__(self, table: _Optional[str] = ..., from_lsn: _Optional[int] = ..., to_lsn: _Optional[int] = ...) -> None: ...

class DiffResponse(_message.Message):
    __slots__ = ("from_lsn", "to_lsn", "appended", "evicted_by_reason", "corrected_by_source", "flagged", "labelled", "priority_updates", "priority_mass_from", "priority_mass_to", "events_by_kind")
    class EvictedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class CorrectedBySourceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class EventsByKindEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    FROM_LSN_FIELD_NUMBER: _ClassVar[int]
    TO_LSN_FIELD_NUMBER: _ClassVar[int]
    APPENDED_FIELD_NUMBER: _ClassVar[int]
    EVICTED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    CORRECTED_BY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    LABELLED_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_UPDATES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_MASS_FROM_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_MASS_TO_FIELD_NUMBER: _ClassVar[int]
    EVENTS_BY_KIND_FIELD_NUMBER: _ClassVar[int]
    from_lsn: int
    to_lsn: int
    appended: int
    evicted_by_reason: _containers.ScalarMap[str, int]
    corrected_by_source: _containers.ScalarMap[str, int]
    flagged: int
    labelled: int
    priority_updates: int
    priority_mass_from: float
    priority_mass_to: float
    events_by_kind: _containers.ScalarMap[str, int]
    def __init__(self, from_lsn: _Optional[int] = ..., to_lsn: _Optional[int] = ..., appended: _Optional[int] = ..., evicted_by_reason: _Optional[_Mapping[str, int]] = ..., corrected_by_source: _Optional[_Mapping[str, int]] = ..., flagged: _Optional[int] = ..., labelled: _Optional[int] = ..., priority_updates: _Optional[int] = ..., priority_mass_from: _Optional[float] = ..., priority_mass_to: _Optional[float] = ..., events_by_kind: _Optional[_Mapping[str, int]] = ...) -> None: ...

class RecordJobRequest(_message.Message):
    __slots__ = ("job", "retrain")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RETRAIN_FIELD_NUMBER: _ClassVar[int]
    job: _events_pb2.JobCompleted
    retrain: _events_pb2.RetrainRecommended
    def __init__(self, job: _Optional[_Union[_events_pb2.JobCompleted, _Mapping]] = ..., retrain: _Optional[_Union[_events_pb2.RetrainRecommended, _Mapping]] = ...) -> None: ...

class RecordJobResponse(_message.Message):
    __slots__ = ("first_lsn", "last_lsn")
    FIRST_LSN_FIELD_NUMBER: _ClassVar[int]
    LAST_LSN_FIELD_NUMBER: _ClassVar[int]
    first_lsn: int
    last_lsn: int
    def __init__(self, first_lsn: _Optional[int] = ..., last_lsn: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...
