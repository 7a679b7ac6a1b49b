"""replaybuf_client: the Python client library for learners, actors and analysts.

Imports grpc, numpy and protobuf only: neither numba nor lmdb, and torch only when you use
``as_torch=True`` or import `replaybuf_client.torch` (`ReplayDataset` for DataLoader workers).

Example:
    >>> import numpy as np
    >>> from replaybuf_client import ReplayClient
    >>> with ReplayClient("127.0.0.1:50051") as client:  # doctest: +SKIP
    ...     client.create_table("replay", {"obs": (np.float32, (4,)), "reward": np.float32},
    ...                         capacity=10_000, exist_ok=True)
    ...     client.append("replay", {"obs": np.zeros((8, 4), np.float32),
    ...                              "reward": np.ones(8, np.float32)})
    ...     batch = client.sample("replay", 4, seed=0)

Errors are the engine's classes, re-exported here (`TableNotFoundError`, ...).
"""

from __future__ import annotations

from replaybuf.errors import (
    AlreadyExistsError,
    ClosedError,
    DataLossError,
    DurabilityError,
    EmptyBatchError,
    FailedPreconditionError,
    InvalidArgumentError,
    InvalidPriorityError,
    ItemNotFoundError,
    LogCorruptionError,
    MessageTooLargeError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitTimeoutError,
    ReplayError,
    ResourceExhaustedError,
    SignatureMismatchError,
    TableNotFoundError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    ViewDamagedError,
)
from replaybuf.tensors import FieldSpec

from ._audit import DiffResult, LabelResult, PendingReview
from ._retry import RetryPolicy
from ._types import (
    AppendResult,
    EvictResult,
    FoundItems,
    ItemLineage,
    Lineage,
    LogEvent,
    RateLimiterInfo,
    Sample,
    SampleInfo,
    TableInfo,
    TlsConfig,
    UpdateResult,
    WriterStats,
)
from .client import DEFAULT_TIMEOUT, ReplayClient
from .sampler import Sampler
from .subscription import Subscription
from .writer import Writer

__all__ = [
    # client and streams
    "ReplayClient",
    "Writer",
    "Sampler",
    "Subscription",
    # options
    "RetryPolicy",
    "TlsConfig",
    "DEFAULT_TIMEOUT",
    "FieldSpec",
    # results
    "AppendResult",
    "Sample",
    "SampleInfo",
    "Lineage",
    "TableInfo",
    "RateLimiterInfo",
    "UpdateResult",
    "EvictResult",
    "ItemLineage",
    "LogEvent",
    "FoundItems",
    "WriterStats",
    # errors (the engine's classes)
    "ReplayError",
    "InvalidArgumentError",
    "InvalidPriorityError",
    "SignatureMismatchError",
    "NotFoundError",
    "TableNotFoundError",
    "ItemNotFoundError",
    "AlreadyExistsError",
    "ResourceExhaustedError",
    "MessageTooLargeError",
    "FailedPreconditionError",
    "ClosedError",
    "RateLimitTimeoutError",
    "DataLossError",
    "PermissionDeniedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "PendingReview",
    "LabelResult",
    "DiffResult",
    "EmptyBatchError",
    "DurabilityError",
    "LogCorruptionError",
    "ViewDamagedError",
]
