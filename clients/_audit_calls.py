"""The audit side of `ReplayClient`: export, corrections and evictions, job runs, lineage,
review, diff and the event subscription.

`AuditCalls` is a mixin: it holds no state and calls `ReplayClient`'s plumbing (``_unary``,
``_check_open``, ``_resolve``, ``_translate``, ``_stub``, ``_metadata``), so it only works as a
base of `ReplayClient`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from replaybuf.errors import InvalidArgumentError, NotFoundError
from replaybuf.v1 import service_pb2

from ._audit import DiffResult, LabelResult, PendingReview, decode_diff, decode_pending
from ._convert import (
    decode_item_lineage,
    eviction_reason,
    feedback_source,
    ids_array,
    values_array,
)
from ._timeout import DEFAULT_TIMEOUT
from ._types import EvictResult, FoundItems, ItemLineage, UpdateResult
from .subscription import Subscription

if TYPE_CHECKING:
    from .client import ReplayClient

__all__ = ["AuditCalls"]


class AuditCalls:
    """`ReplayClient`'s calls that curate and audit the data rather than feed training."""

    if TYPE_CHECKING:
        _stub: Any
        _metadata: Any

        def _check_open(self) -> None: ...

        def _resolve(self, timeout: Any) -> float | None: ...

        def _translate(self, timeout: float | None = None) -> Any: ...

        def _unary(self, method: str, request: Any, timeout: Any, *, idempotent: bool) -> Any: ...

    # -- export ------------------------------------------------------------------------------

    def export(
        self,
        table: str,
        out: str | Path,
        *,
        as_of_lsn: int | None = None,
        format: str = "npz",
        fields: Iterable[str] | None = None,
        progress: bool = False,
        timeout: Any = None,
        compression: str | None = None,
    ) -> dict[str, Any]:
        """Export `table` as of `as_of_lsn` (None: the server's applied LSN) to `out` with the
        writers of ``replaybuf export`` (same bytes, same manifest); returns the manifest.
        `compression` is the Parquet codec (``snappy``, the default, ``zstd``, ``lz4`` or
        ``none``; Parquet only): the file is written here, so the server never sees it.

        Streams the items (memory O(chunk) for npz/Parquet); pyarrow/minari are needed only
        for their formats. Not retried (a failed stream leaves a partial ``.part`` file).

        Raises:
            DataLossError: the content hash differs from the server's manifest.
        """

        from replaybuf.errors import DataLossError
        from replaybuf.export import ExportInfo, chunk_from_proto, write_export

        self._check_open()
        t = self._resolve(timeout)
        config = self._unary("DescribeTable", service_pb2.DescribeTableRequest(table=table),
                             DEFAULT_TIMEOUT, idempotent=True).config
        names = None if fields is None else list(fields)
        info = ExportInfo.from_config(config, as_of_lsn=as_of_lsn or 0, log_id="", fields=names)
        request = service_pb2.ExportRequest(table=table, as_of_lsn=as_of_lsn or 0,
                                            fields=names or [])
        box: dict[str, Any] = {}

        def chunks() -> Iterator[Any]:
            with self._translate(t):
                for msg in self._stub.Export(request, timeout=t, metadata=self._metadata):
                    if msg.HasField("manifest"):
                        box["manifest"] = msg.manifest
                    if msg.item_ids:
                        yield chunk_from_proto(msg)

        def final() -> ExportInfo:
            m = box.get("manifest")
            if m is None:
                raise DataLossError(f"Export of {table!r} ended without its manifest")
            return ExportInfo.from_config(m.config, as_of_lsn=m.as_of_lsn, log_id=m.log_id,
                                          fields=names)

        manifest = write_export(chunks(), out, format, info=info, progress=progress,
                                final_info=final, compression=compression)
        if manifest["content_sha256"] != box["manifest"].content_sha256:
            raise DataLossError(
                f"export of {table!r}: content hash {manifest['content_sha256']} differs from "
                f"the server's {box['manifest'].content_sha256}")
        return manifest

    def export_stream(
        self,
        table: str,
        *,
        as_of_lsn: int | None = None,
        fields: Iterable[str] | None = None,
        chunk_items: int = 0,
        timeout: Any = None,
    ) -> Iterator[Any]:
        """The raw Export stream: ``service_pb2.ExportChunk`` messages in item-id order, the
        last one carrying the manifest (``as_of_lsn``, config). For readers that want the
        columns rather than a file (batch jobs); `export` writes files. Not retried."""

        self._check_open()
        t = self._resolve(timeout)
        request = service_pb2.ExportRequest(table=table, as_of_lsn=as_of_lsn or 0,
                                            fields=list(fields or []),
                                            chunk_items=int(chunk_items))
        with self._translate(t):
            yield from self._stub.Export(request, timeout=t, metadata=self._metadata)

    # -- corrections and evictions ------------------------------------------------------------

    def correct_rewards(
        self,
        table: str,
        ids: Any,
        rewards: Any,
        *,
        source: str | int = "human",
        fidelity_weight: float = 1.0,
        reason: str = "",
        author: str = "",
        timeout: Any = DEFAULT_TIMEOUT,
        retry: bool = False,
    ) -> UpdateResult:
        """Correct rewards (logged as RewardsCorrected with the previous values).

        Blocks for one round trip. ``source`` is "human", "model" or "rule". Not retried
        unless ``retry=True`` (a retry logs the correction twice, the second time with the
        corrected values as "previous").
        """

        item_ids = ids_array(ids)
        values = values_array(rewards, len(item_ids), "rewards")
        request = service_pb2.CorrectRewardsRequest(
            table=table,
            item_ids=item_ids.tolist(),
            rewards=values.tolist(),
            source=feedback_source(source),
            fidelity_weight=float(fidelity_weight),
            reason=reason,
            author=author,
        )
        response = self._unary("CorrectRewards", request, timeout, idempotent=retry)
        return UpdateResult(int(response.lsn), np.array(response.missing_ids, dtype=np.uint64))

    def evict(
        self,
        table: str,
        ids: Any,
        *,
        reason: str | int = "manual",
        job_id: str = "",
        detail: str = "",
        timeout: Any = DEFAULT_TIMEOUT,
    ) -> EvictResult:
        """Evict items (logged as ItemsEvicted with the reason and job id).

        Blocks for one round trip. Retried on UNAVAILABLE: evicting an item that is already
        gone is a no-op, so a retry after a lost answer reports those ids in ``missing_ids``.
        """

        item_ids = ids_array(ids)
        request = service_pb2.EvictRequest(
            table=table,
            item_ids=item_ids.tolist(),
            reason=eviction_reason(reason),
            job_id=job_id,
            detail=detail,
        )
        response = self._unary("Evict", request, timeout, idempotent=True)
        return EvictResult(
            int(response.lsn), int(response.evicted), np.array(response.missing_ids, dtype=np.uint64)
        )

    # -- job runs ----------------------------------------------------------------------------

    def record_job(
        self, job: Any, retrain: Any = None, *, timeout: Any = DEFAULT_TIMEOUT
    ) -> tuple[int, int]:
        """Record a finished job run (``events_pb2.JobCompleted``, and optionally a
        ``RetrainRecommended``) in one atomic append; returns ``(first_lsn, last_lsn)``.

        Blocks for one round trip; not retried (a retry after a lost answer would fail with
        `AlreadyExistsError`, which callers treat as "recorded").

        Raises:
            AlreadyExistsError: the job id was recorded before; nothing changed.
        """

        request = service_pb2.RecordJobRequest(job=job)
        if retrain is not None:
            request.retrain.CopyFrom(retrain)
        response = self._unary("RecordJob", request, timeout, idempotent=False)
        return int(response.first_lsn), int(response.last_lsn)

    def get_job(self, job_id: str, *, timeout: Any = DEFAULT_TIMEOUT) -> Any:
        """The recorded run (``events_pb2.JobCompleted``) with this id, or None. Blocks;
        retried on UNAVAILABLE."""

        request = service_pb2.GetJobRequest(job_id=job_id)
        try:
            return self._unary("GetJob", request, timeout, idempotent=True)
        except NotFoundError:
            return None

    # -- lineage and events ------------------------------------------------------------------

    def lineage(self, item_id: int, *, timeout: Any = DEFAULT_TIMEOUT) -> ItemLineage:
        """Every event that touched one item, in LSN order. Blocks; retried on UNAVAILABLE.

        Raises:
            ItemNotFoundError: no item ever had this id.
        """

        request = service_pb2.GetLineageRequest(item_id=int(item_id))
        return decode_item_lineage(self._unary("GetLineage", request, timeout, idempotent=True))

    def find_items(
        self,
        table: str,
        *,
        request_id: str | None = None,
        model_version: int | None = None,
        episode_id: int | None = None,
        include_evicted: bool = False,
        limit: int = 0,
        timeout: Any = DEFAULT_TIMEOUT,
    ) -> FoundItems:
        """Item ids by inference request id, model version or episode (exactly one criterion).

        Blocks for one round trip; retried on UNAVAILABLE. ``limit=0`` means the server's
        default (10,000); ``truncated`` says whether more matched.
        """

        given = {
            k: v
            for k, v in (("request_id", request_id), ("model_version", model_version), ("episode_id", episode_id))
            if v is not None
        }
        if len(given) != 1:
            raise InvalidArgumentError(
                f"find_items needs exactly one of request_id, model_version, episode_id; got {sorted(given) or 'none'}"
            )
        request = service_pb2.FindItemsRequest(
            table=table, include_evicted=include_evicted, limit=int(limit), **given
        )
        response = self._unary("FindItems", request, timeout, idempotent=True)
        return FoundItems(np.array(response.item_ids, dtype=np.uint64), bool(response.truncated))

    # -- review and audit --------------------------------------------------------------------

    def flag_for_review(
        self, table: str, ids: Any, *, reason: str = "", author: str = "",
        timeout: Any = DEFAULT_TIMEOUT,
    ) -> UpdateResult:
        """Flag items for human review (logged as ItemsFlaggedForReview). Blocks for one round
        trip; retried on UNAVAILABLE (flagging a pending item again changes nothing). Missing
        ids are skipped and reported."""

        request = service_pb2.FlagForReviewRequest(
            table=table, item_ids=ids_array(ids).tolist(), reason=reason, author=author)
        response = self._unary("FlagForReview", request, timeout, idempotent=True)
        return UpdateResult(int(response.lsn), np.array(response.missing_ids, dtype=np.uint64))

    def pending_reviews(
        self, table: str, *, limit: int = 0, timeout: Any = DEFAULT_TIMEOUT
    ) -> list[PendingReview]:
        """Items flagged and not yet labelled, oldest flag first (``limit=0``: 1000)."""

        request = service_pb2.ListPendingReviewsRequest(table=table, limit=int(limit))
        return decode_pending(self._unary("ListPendingReviews", request, timeout, idempotent=True))

    def apply_label(
        self, table: str, item_id: int, verdict: str, *, reward: float | None = None,
        priority: float | None = None, author: str = "", note: str = "",
        timeout: Any = DEFAULT_TIMEOUT,
    ) -> LabelResult:
        """Record a verdict ("accept", "reject" or "relabel" with ``reward``) on a pending
        item, with its consequences, in one atomic append. Not retried: a retry after a lost
        answer fails with FailedPreconditionError (the item is no longer pending).

        Raises:
            FailedPreconditionError: the item is not pending review.
        """

        request = service_pb2.ApplyLabelRequest(
            table=table, item_id=int(item_id), verdict=verdict, author=author, note=note)
        if reward is not None:
            request.reward = float(reward)
        if priority is not None:
            request.priority = float(priority)
        response = self._unary("ApplyLabel", request, timeout, idempotent=False)
        return LabelResult(int(response.first_lsn), int(response.last_lsn))

    def diff(
        self, from_lsn: int, to_lsn: int = 0, *, table: str = "", timeout: Any = DEFAULT_TIMEOUT
    ) -> DiffResult:
        """What changed in ``(from_lsn, to_lsn]`` (``to_lsn=0``: the latest). Read-only; the
        server replays its log up to ``to_lsn``, so this can take a while on long logs."""

        request = service_pb2.DiffRequest(table=table, from_lsn=int(from_lsn), to_lsn=int(to_lsn))
        return decode_diff(self._unary("Diff", request, timeout, idempotent=True))

    def subscribe(
        self, from_lsn: int = 1, follow: bool = True, tables: Iterable[str] = ()
    ) -> Subscription:
        """Iterate ``(lsn, event)`` from ``from_lsn``; with ``follow``, wait for new events.

        Returns a `Subscription`; each ``next()`` blocks until an event arrives (or, without
        ``follow``, the log's end). On UNAVAILABLE it reconnects from its last LSN + 1, so
        nothing is missed or repeated.
        """

        self._check_open()
        if isinstance(from_lsn, bool) or not isinstance(from_lsn, (int, np.integer)) or from_lsn < 1:
            raise InvalidArgumentError(f"from_lsn={from_lsn!r} must be an int >= 1")
        return Subscription(cast("ReplayClient", self), int(from_lsn), bool(follow), tuple(tables))
