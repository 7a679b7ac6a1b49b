from replaybuf.v1 import table_pb2 as _table_pb2
from replaybuf.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvictionReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVICTION_REASON_UNSPECIFIED: _ClassVar[EvictionReason]
    EVICTION_REASON_CAPACITY: _ClassVar[EvictionReason]
    EVICTION_REASON_MAX_TIMES_SAMPLED: _ClassVar[EvictionReason]
    EVICTION_REASON_MANUAL: _ClassVar[EvictionReason]
    EVICTION_REASON_AGE: _ClassVar[EvictionReason]
    EVICTION_REASON_MODEL_VERSION: _ClassVar[EvictionReason]
    EVICTION_REASON_TIMES_SAMPLED: _ClassVar[EvictionReason]
    EVICTION_REASON_LOW_PRIORITY: _ClassVar[EvictionReason]
    EVICTION_REASON_INVALID_DATA: _ClassVar[EvictionReason]
    EVICTION_REASON_DUPLICATE: _ClassVar[EvictionReason]
    EVICTION_REASON_EPISODE_LIMIT: _ClassVar[EvictionReason]
    EVICTION_REASON_MODEL_VERSION_LIMIT: _ClassVar[EvictionReason]
    EVICTION_REASON_REVIEW_REJECTED: _ClassVar[EvictionReason]

class FeedbackSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_SOURCE_UNSPECIFIED: _ClassVar[FeedbackSource]
    FEEDBACK_SOURCE_HUMAN: _ClassVar[FeedbackSource]
    FEEDBACK_SOURCE_MODEL: _ClassVar[FeedbackSource]
    FEEDBACK_SOURCE_RULE: _ClassVar[FeedbackSource]
EVICTION_REASON_UNSPECIFIED: EvictionReason
EVICTION_REASON_CAPACITY: EvictionReason
EVICTION_REASON_MAX_TIMES_SAMPLED: EvictionReason
EVICTION_REASON_MANUAL: EvictionReason
EVICTION_REASON_AGE: EvictionReason
EVICTION_REASON_MODEL_VERSION: EvictionReason
EVICTION_REASON_TIMES_SAMPLED: EvictionReason
EVICTION_REASON_LOW_PRIORITY: EvictionReason
EVICTION_REASON_INVALID_DATA: EvictionReason
EVICTION_REASON_DUPLICATE: EvictionReason
EVICTION_REASON_EPISODE_LIMIT: EvictionReason
EVICTION_REASON_MODEL_VERSION_LIMIT: EvictionReason
EVICTION_REASON_REVIEW_REJECTED: EvictionReason
FEEDBACK_SOURCE_UNSPECIFIED: FeedbackSource
FEEDBACK_SOURCE_HUMAN: FeedbackSource
FEEDBACK_SOURCE_MODEL: FeedbackSource
FEEDBACK_SOURCE_RULE: FeedbackSource

class TableCreated(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: _table_pb2.TableConfig
    def __init__(self, config: _Optional[_Union[_table_pb2.TableConfig, _Mapping]] = ...) -> None: ...

class ItemsAppended(_message.Message):
    __slots__ = ("table", "item_ids", "data", "priorities", "lineage")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    table: str
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    data: _tensor_pb2.ColumnarBatch
    priorities: _containers.RepeatedScalarFieldContainer[float]
    lineage: _table_pb2.Lineage
    def __init__(self, table: _Optional[str] = ..., item_ids: _Optional[_Iterable[int]] = ..., data: _Optional[_Union[_tensor_pb2.ColumnarBatch, _Mapping]] = ..., priorities: _Optional[_Iterable[float]] = ..., lineage: _Optional[_Union[_table_pb2.Lineage, _Mapping]] = ...) -> None: ...

class PrioritiesUpdated(_message.Message):
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

class RewardsCorrected(_message.Message):
    __slots__ = ("table", "item_ids", "rewards", "previous_rewards", "source", "fidelity_weight", "reason", "author")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_REWARDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    table: str
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    rewards: _containers.RepeatedScalarFieldContainer[float]
    previous_rewards: _containers.RepeatedScalarFieldContainer[float]
    source: FeedbackSource
    fidelity_weight: float
    reason: str
    author: str
    def __init__(self, table: _Optional[str] = ..., item_ids: _Optional[_Iterable[int]] = ..., rewards: _Optional[_Iterable[float]] = ..., previous_rewards: _Optional[_Iterable[float]] = ..., source: _Optional[_Union[FeedbackSource, str]] = ..., fidelity_weight: _Optional[float] = ..., reason: _Optional[str] = ..., author: _Optional[str] = ...) -> None: ...

class ItemsEvicted(_message.Message):
    __slots__ = ("table", "item_ids", "reason", "job_id", "detail")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    table: str
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    reason: EvictionReason
    job_id: str
    detail: str
    def __init__(self, table: _Optional[str] = ..., item_ids: _Optional[_Iterable[int]] = ..., reason: _Optional[_Union[EvictionReason, str]] = ..., job_id: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ItemsSampled(_message.Message):
    __slots__ = ("table", "item_ids", "seed", "at_lsn")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    AT_LSN_FIELD_NUMBER: _ClassVar[int]
    table: str
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    seed: int
    at_lsn: int
    def __init__(self, table: _Optional[str] = ..., item_ids: _Optional[_Iterable[int]] = ..., seed: _Optional[int] = ..., at_lsn: _Optional[int] = ...) -> None: ...

class ItemsFlaggedForReview(_message.Message):
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

class LabelApplied(_message.Message):
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

class RetrainRecommended(_message.Message):
    __slots__ = ("table", "job_id", "detail", "statistics")
    class StatisticsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TABLE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    table: str
    job_id: str
    detail: str
    statistics: _containers.ScalarMap[str, float]
    def __init__(self, table: _Optional[str] = ..., job_id: _Optional[str] = ..., detail: _Optional[str] = ..., statistics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class JobCompleted(_message.Message):
    __slots__ = ("job_id", "table", "at_lsn", "kind", "evicted_by_reason", "duration_s", "report_json")
    class EvictedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    AT_LSN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EVICTED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    table: str
    at_lsn: int
    kind: str
    evicted_by_reason: _containers.ScalarMap[str, int]
    duration_s: float
    report_json: str
    def __init__(self, job_id: _Optional[str] = ..., table: _Optional[str] = ..., at_lsn: _Optional[int] = ..., kind: _Optional[str] = ..., evicted_by_reason: _Optional[_Mapping[str, int]] = ..., duration_s: _Optional[float] = ..., report_json: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("version", "timestamp_ms", "table_created", "items_appended", "priorities_updated", "rewards_corrected", "items_evicted", "items_sampled", "items_flagged_for_review", "label_applied", "retrain_recommended", "job_completed")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    TABLE_CREATED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_APPENDED_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_UPDATED_FIELD_NUMBER: _ClassVar[int]
    REWARDS_CORRECTED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_EVICTED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_SAMPLED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FLAGGED_FOR_REVIEW_FIELD_NUMBER: _ClassVar[int]
    LABEL_APPLIED_FIELD_NUMBER: _ClassVar[int]
    RETRAIN_RECOMMENDED_FIELD_NUMBER: _ClassVar[int]
    JOB_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    version: int
    timestamp_ms: int
    table_created: TableCreated
    items_appended: ItemsAppended
    priorities_updated: PrioritiesUpdated
    rewards_corrected: RewardsCorrected
    items_evicted: ItemsEvicted
    items_sampled: ItemsSampled
    items_flagged_for_review: ItemsFlaggedForReview
    label_applied: LabelApplied
    retrain_recommended: RetrainRecommended
    job_completed: JobCompleted
    def __init__(self, version: _Optional[int] = ..., timestamp_ms: _Optional[int] = ..., table_created: _Optional[_Union[TableCreated, _Mapping]] = ..., items_appended: _Optional[_Union[ItemsAppended, _Mapping]] = ..., priorities_updated: _Optional[_Union[PrioritiesUpdated, _Mapping]] = ..., rewards_corrected: _Optional[_Union[RewardsCorrected, _Mapping]] = ..., items_evicted: _Optional[_Union[ItemsEvicted, _Mapping]] = ..., items_sampled: _Optional[_Union[ItemsSampled, _Mapping]] = ..., items_flagged_for_review: _Optional[_Union[ItemsFlaggedForReview, _Mapping]] = ..., label_applied: _Optional[_Union[LabelApplied, _Mapping]] = ..., retrain_recommended: _Optional[_Union[RetrainRecommended, _Mapping]] = ..., job_completed: _Optional[_Union[JobCompleted, _Mapping]] = ...) -> None: ...
