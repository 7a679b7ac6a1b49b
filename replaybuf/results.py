"""What the engine's calls return: plain frozen dataclasses with numpy arrays, plus ``to_proto``
for the server's replies.

Example:
    >>> ack = AppendAck("replay", np.array([1, 2], np.uint64), 3, 4, durable=True)
    >>> ack.item_ids.tolist(), ack.to_proto().last_lsn
    ([1, 2], 4)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from replaybuf.lineage import Lineage
from replaybuf.rate_limiter import RateLimiterStats
from replaybuf.table_config import TableConfig
from replaybuf.tensors import to_batch
from replaybuf.v1 import service_pb2, table_pb2

__all__ = ["AppendAck", "SampleInfo", "Sample", "TableInfo", "UpdateResult", "EvictResult"]


@dataclass(frozen=True)
class AppendAck:
    """The acknowledgement of one append.

    Attributes:
        table: table name.
        item_ids: ids assigned to the items, in batch order (uint64).
        first_lsn: LSN of the frame's first event (a CAPACITY eviction, if one was needed).
        last_lsn: LSN of the ``ItemsAppended`` event.
        durable: the frame was fsynced before the ack (fsync policies always/group).
        duplicate: a retry of an earlier ``(producer_id, producer_seq)``: nothing new was
            written; ids and LSNs are the original ones.
        evicted_ids: items the remover evicted to make room (empty for a duplicate).
    """

    table: str
    item_ids: np.ndarray
    first_lsn: int
    last_lsn: int
    durable: bool
    duplicate: bool = False
    evicted_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))

    def to_proto(self, producer_seq: int = 0) -> service_pb2.AppendAck:
        return service_pb2.AppendAck(
            producer_seq=producer_seq, first_lsn=self.first_lsn, last_lsn=self.last_lsn,
            item_ids=self.item_ids.tolist(), durable=self.durable, duplicate=self.duplicate,
        )


@dataclass(frozen=True)
class SampleInfo:
    """Everything about a sampled batch besides the data; one entry per sampled item.

    Attributes:
        item_ids: ids (uint64).
        priorities: raw priority of each item when drawn.
        probabilities: probability with which each was drawn.
        weights: importance weights ``(N * P(i))^-beta / max_j (N * P(j))^-beta``.
        times_sampled: times each item has been sampled, this batch included.
        lineage: lineage of each item.
        lsn: the LSN whose table state the batch was drawn from; with `seed`, enough to
            replay the draw.
        seed: seed of ``numpy.random.default_rng`` used for the draw.
        table_size: sampleable items when drawn (N in the weights).
    """

    item_ids: np.ndarray
    priorities: np.ndarray
    probabilities: np.ndarray
    weights: np.ndarray
    times_sampled: np.ndarray
    lineage: Lineage
    lsn: int
    seed: int
    table_size: int

    def to_proto(self) -> table_pb2.SampleInfo:
        msg = table_pb2.SampleInfo(
            item_ids=self.item_ids.tolist(), priorities=self.priorities.tolist(),
            probabilities=self.probabilities.tolist(), weights=self.weights.tolist(),
            times_sampled=self.times_sampled.tolist(), lsn=self.lsn, seed=self.seed,
            table_size=self.table_size,
        )
        self.lineage.to_proto(msg.lineage)
        return msg


@dataclass(frozen=True)
class Sample:
    """A sampled batch: ``data`` maps each field to an array with a leading batch dimension.

    The arrays are the caller's own (copied out of the table), but a table with small rows
    returns them as strided views of one gathered record array rather than contiguous
    blocks; use ``np.ascontiguousarray`` where contiguity matters."""

    data: dict[str, np.ndarray]
    info: SampleInfo

    def to_proto(self) -> service_pb2.SampleResponse:
        return service_pb2.SampleResponse(data=to_batch(self.data), info=self.info.to_proto())


@dataclass(frozen=True)
class TableInfo:
    """A table's config and live state (``DescribeTable``).

    Attributes:
        config: the table's configuration.
        size: sampleable items present.
        total_priority: sum of p^alpha over sampleable items (prioritized sampler; raw p
            otherwise).
        max_priority: largest raw priority present (the default of new items; 0 if empty).
        rate_limiter: the rate limiter's counters and call statistics.
        applied_lsn: the view has applied every event up to this LSN.
        durable_lsn: every event up to this LSN is fsynced in the log.
        created_lsn: LSN of the table's ``TableCreated`` event.
        metrics: rolling metrics (`replaybuf.rolling_metrics`; reset on restart).
    """

    config: TableConfig
    size: int
    total_priority: float
    max_priority: float
    rate_limiter: RateLimiterStats
    applied_lsn: int
    durable_lsn: int
    created_lsn: int
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def capacity(self) -> int:
        return self.config.capacity

    def to_proto(self) -> service_pb2.TableInfo:
        rl = self.rate_limiter
        return service_pb2.TableInfo(
            config=self.config.to_proto(), size=self.size,
            total_priority=self.total_priority, max_priority=self.max_priority,
            rate_limiter=service_pb2.RateLimiterInfo(
                inserts=rl.inserts, samples=rl.samples, min_diff=rl.min_diff,
                max_diff=rl.max_diff, blocked_inserts=rl.waiting_inserts,
                blocked_samples=rl.waiting_samples,
            ),
            applied_lsn=self.applied_lsn, durable_lsn=self.durable_lsn,
            metrics=dict(self.metrics),
        )


@dataclass(frozen=True)
class UpdateResult:
    """Result of `Engine.update_priorities` and `Engine.correct_rewards`.

    Attributes:
        lsn: LSN of the logged event; 0 when every id was missing (nothing was logged).
        missing_ids: ids that were not present in the table and were skipped (uint64).
    """

    lsn: int
    missing_ids: np.ndarray


@dataclass(frozen=True)
class EvictResult:
    """Result of `Engine.evict`.

    Attributes:
        lsn: LSN of the ``ItemsEvicted`` event; 0 when nothing was present.
        evicted: number of items evicted.
        missing_ids: ids that were not present (already evicted or never existed).
    """

    lsn: int
    evicted: int
    missing_ids: np.ndarray


def sample_from_draw(draw: Any, request_ids: Sequence[str], sources: Sequence[str], *,
                     seed: int, lsn: int, copy: bool = False) -> Sample:
    """The `Sample` of a `replaybuf.table.Draw`, with its request ids and sources.

    Args:
        lsn: the LSN the draw reflects (the live view's, or the replayed one).
        copy: copy the data columns (when the table they came from is about to close).
    """

    lin = draw.lineage
    info = SampleInfo(
        item_ids=draw.ids, priorities=draw.priorities, probabilities=draw.probabilities,
        weights=draw.weights, times_sampled=draw.times_sampled,
        lineage=Lineage(lin["episode_id"], lin["step"], tuple(request_ids),
                        lin["model_version"], lin["timestamp_ms"], tuple(sources)),
        lsn=lsn, seed=int(seed), table_size=draw.table_size,
    )
    data = {k: np.array(v) for k, v in draw.data.items()} if copy else draw.data
    return Sample(data, info)
