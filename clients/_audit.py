"""Result types and decoders of the review and audit calls (`ReplayClient.flag_for_review`,
`pending_reviews`, `apply_label`, `diff`). No engine imports: the client stays lmdb-free."""

from __future__ import annotations

from dataclasses import dataclass, field

from replaybuf.v1 import service_pb2

__all__ = ["PendingReview", "LabelResult", "DiffResult", "decode_pending", "decode_diff"]

_EVICTION_PREFIX = "EVICTION_REASON_"


@dataclass(frozen=True)
class PendingReview:
    """One item waiting for a reviewer's verdict."""

    item_id: int
    reason: str
    author: str
    flagged_lsn: int
    reward: float
    """The item's current reward."""
    priority: float
    """The item's current raw priority."""


@dataclass(frozen=True)
class LabelResult:
    """LSN range of ``LabelApplied`` and its consequences (one atomic append)."""

    first_lsn: int
    last_lsn: int


@dataclass(frozen=True)
class DiffResult:
    """What changed in ``(from_lsn, to_lsn]``. Reasons and sources are lower-case names
    (``"capacity"``, ``"human"``)."""

    from_lsn: int
    to_lsn: int
    appended: int
    evicted_by_reason: dict[str, int] = field(default_factory=dict)
    corrected_by_source: dict[str, int] = field(default_factory=dict)
    flagged: int = 0
    labelled: int = 0
    priority_updates: int = 0
    priority_mass_from: float = 0.0
    priority_mass_to: float = 0.0
    events_by_kind: dict[str, int] = field(default_factory=dict)


def decode_pending(resp: service_pb2.ListPendingReviewsResponse) -> list[PendingReview]:
    return [PendingReview(int(r.item_id), r.reason, r.author, int(r.flagged_lsn),
                          float(r.reward), float(r.priority)) for r in resp.reviews]


def decode_diff(resp: service_pb2.DiffResponse) -> DiffResult:
    return DiffResult(
        from_lsn=int(resp.from_lsn), to_lsn=int(resp.to_lsn), appended=int(resp.appended),
        evicted_by_reason={k: int(v) for k, v in resp.evicted_by_reason.items()},
        corrected_by_source={k: int(v) for k, v in resp.corrected_by_source.items()},
        flagged=int(resp.flagged), labelled=int(resp.labelled),
        priority_updates=int(resp.priority_updates),
        priority_mass_from=float(resp.priority_mass_from),
        priority_mass_to=float(resp.priority_mass_to),
        events_by_kind={k: int(v) for k, v in resp.events_by_kind.items()},
    )
