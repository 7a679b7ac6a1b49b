"""Lineage and audit queries behind `Engine`'s issue-6 methods, kept out of engine.py.

* lineage of one item: `replaybuf.lineage_index` (item id -> LSNs, read back from the log);
* reverse queries (`find_items`): the view's ``by_request``/``by_model_version``/``by_episode``;
* the review flow: `replaybuf.review`;
* diffs between LSNs: `replaybuf.diff`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from replaybuf._validation import is_int as _is_int
from replaybuf.diff import DiffResult, compute_diff
from replaybuf.errors import InvalidArgumentError
from replaybuf.lineage_index import ItemHistory, item_history
from replaybuf.review import PendingReview, is_pending, label_events, pending
from replaybuf.v1 import service_pb2

if TYPE_CHECKING:
    from replaybuf.engine import Engine
    from replaybuf.log import Log
    from replaybuf.table import Table

__all__ = [
    "DiffResult", "FoundItems", "ItemHistory", "PendingReview", "diff", "find_items",
    "is_pending", "item_history", "label_events", "pending",
]

DEFAULT_FIND_LIMIT = 10_000


@dataclass(frozen=True, eq=False)
class FoundItems:
    """Result of `Engine.find_items`: matching ids ascending (uint64), and whether more
    matched beyond the limit."""

    item_ids: np.ndarray
    truncated: bool

    def to_proto(self) -> service_pb2.FindItemsResponse:
        return service_pb2.FindItemsResponse(item_ids=self.item_ids.tolist(),
                                             truncated=self.truncated)


def find_items(engine: Engine, table: Table, *, request_id: str | None,
               model_version: int | None, episode_id: int | None, include_evicted: bool,
               limit: int) -> FoundItems:
    """See `Engine.find_items`. Without `include_evicted`, evicted matches are dropped before
    the limit applies (O(all matches) then)."""

    given = [k for k, v in (("request_id", request_id), ("model_version", model_version),
                            ("episode_id", episode_id)) if v is not None]
    if len(given) != 1:
        raise InvalidArgumentError(
            f"find_items needs exactly one of request_id, model_version, episode_id; got "
            f"{given or 'none'}")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidArgumentError(f"request_id is {request_id!r}; pass a string")
    if model_version is not None and not (_is_int(model_version)
                                          and -(2**63) <= model_version < 2**63):
        raise InvalidArgumentError(f"model_version is {model_version!r}; pass an int64")
    if episode_id is not None and not (_is_int(episode_id) and 0 <= episode_id < 2**64):
        raise InvalidArgumentError(f"episode_id is {episode_id!r}; pass an integer >= 0")
    if not _is_int(limit) or limit < 0:
        raise InvalidArgumentError(f"limit is {limit!r}; pass an integer >= 0 (0 = 10,000)")
    limit = int(limit) or DEFAULT_FIND_LIMIT
    view = engine.view
    kw = dict(request_id=request_id,
              model_version=None if model_version is None else int(model_version),
              episode_id=None if episode_id is None else int(episode_id))
    if include_evicted:
        ids, truncated = view.find_items(table.index, limit=limit, **kw)
        return FoundItems(_id_array(ids), truncated)
    ids, _ = view.find_items(table.index, limit=2**63, **kw)
    arr = _id_array(ids)
    arr = arr[table.present(arr)] if arr.size else arr
    return FoundItems(arr[:limit].copy(), bool(arr.size > limit))


def _id_array(ids: list[int]) -> np.ndarray:
    """Item ids as uint64: `numpy.fromiter` converts a list of ints in a third less time
    than `numpy.asarray` (0.33 ms against 0.52 ms for 10,000 ids)."""

    return np.fromiter(ids, np.uint64, len(ids))


def diff(log: Log, from_lsn: int, to_lsn: int, applied_lsn: int,
         table: str | None) -> DiffResult:
    """Check the bounds and compute the diff (`replaybuf.diff.compute_diff`)."""

    if not _is_int(from_lsn) or from_lsn < 0:
        raise InvalidArgumentError(f"from_lsn is {from_lsn!r}; pass an LSN >= 0")
    if not _is_int(to_lsn) or to_lsn < 0:
        raise InvalidArgumentError(f"to_lsn is {to_lsn!r}; pass an LSN >= 0 (0 = latest)")
    to_lsn = int(to_lsn) or applied_lsn
    if to_lsn > applied_lsn:
        raise InvalidArgumentError(
            f"to_lsn={to_lsn} is beyond the applied LSN {applied_lsn}; pass at most that")
    if from_lsn > to_lsn:
        raise InvalidArgumentError(f"from_lsn={from_lsn} is after to_lsn={to_lsn}")
    return compute_diff(log, int(from_lsn), to_lsn, table)
