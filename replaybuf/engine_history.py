"""`EngineHistory`: what an `replaybuf.engine.Engine` answers about the past without changing
anything: one item's lineage, reverse lookups, pending reviews, job runs, diffs, and tables as of
any LSN (materialize, export, deterministic replay of a draw).

A mixin of `Engine`, apart from the write and sample paths because nothing here takes the writer
lock: each method reads the log (`replaybuf.materialize`, `replaybuf.diff`) or the view's
indexes (`replaybuf.audit`), which are safe to read beside the writer.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from replaybuf import audit
from replaybuf.engine_config import _is_int
from replaybuf.errors import InvalidArgumentError
from replaybuf.export import Chunk, write_export
from replaybuf.log import Log
from replaybuf.materialize import Materialized, replay_sample
from replaybuf.results import Sample
from replaybuf.v1 import events_pb2
from replaybuf.view import View

if TYPE_CHECKING:
    from replaybuf.table import Table

__all__ = ["EngineHistory"]

_U64_MAX = 2**64 - 1


class EngineHistory:
    """Read-only queries of `Engine` (see the module docstring)."""

    _log: Log
    _view: View

    if TYPE_CHECKING:  # provided by Engine
        def _check_open(self) -> None: ...

        def _table(self, name: str) -> Table: ...

    # -- job runs, lineage, reviews and diffs (the logic lives in replaybuf.audit) ------------

    def get_job(self, job_id: str) -> events_pb2.JobCompleted | None:
        """The recorded run with this job id, or None. O(log n)."""

        self._check_open()
        found = self._view.get_job(job_id)
        return None if found is None else events_pb2.JobCompleted.FromString(found[1])

    def get_lineage(self, item_id: int) -> audit.ItemHistory:
        """Every event that touched one item (present or evicted), in LSN order, each reduced
        to the item's row. O(events of the item); see `replaybuf.lineage_index`.

        Raises:
            ItemNotFoundError: no item ever had this id.
        """

        self._check_open()
        return audit.item_history(self._view, self._log, item_id)

    def find_items(self, table: str, *, request_id: str | None = None,
                   model_version: int | None = None, episode_id: int | None = None,
                   include_evicted: bool = False, limit: int = 10_000) -> audit.FoundItems:
        """Item ids of `table` by exactly one of request id, model version or episode,
        ascending, at most `limit` (0 = 10,000). O(matches) index reads."""

        self._check_open()
        return audit.find_items(self, self._table(table), request_id=request_id,
                                model_version=model_version, episode_id=episode_id,
                                include_evicted=include_evicted, limit=limit)

    def list_pending_reviews(self, table: str, limit: int = 1000) -> list[audit.PendingReview]:
        """Items of `table` flagged and not yet labelled (nor evicted), oldest flag first."""

        self._check_open()
        t = self._table(table)
        if not _is_int(limit) or limit < 0:
            raise InvalidArgumentError(f"limit is {limit!r}; pass an integer >= 0 (0 = 1000)")
        return audit.pending(self._view, t.index, int(limit) or 1000)

    def diff(self, from_lsn: int, to_lsn: int = 0, table: str | None = None) -> audit.DiffResult:
        """What changed in ``(from_lsn, to_lsn]`` (to_lsn 0 = the applied LSN). Replays the
        log up to `to_lsn` (see `replaybuf.diff`)."""

        self._check_open()
        if table:
            self._table(table)
        return audit.diff(self._log, from_lsn, to_lsn, self._view.applied_lsn, table or None)


    # -- time travel and export (replaybuf.materialize, replaybuf.export) ---------------------

    def _as_of(self, as_of_lsn: int | None) -> int:
        if as_of_lsn is None or as_of_lsn == "latest" or as_of_lsn == 0:
            return self._view.applied_lsn
        if not _is_int(as_of_lsn):
            raise InvalidArgumentError(f"as_of_lsn is {as_of_lsn!r}; pass an LSN or None")
        return int(as_of_lsn)

    def as_of(self, table: str, as_of_lsn: int | None = None) -> Materialized:
        """`table` as of `as_of_lsn` (None: the applied LSN) in a scratch view; close it
        (context manager). For streaming exports (the gRPC Export RPC)."""

        self._check_open()
        return Materialized(self._log, table, self._as_of(as_of_lsn))

    def materialize(self, table: str, as_of_lsn: int | None = None, *,
                    chunk_items: int = 4096, fields: Sequence[str] | None = None,
                    ) -> Iterator[Chunk]:
        """Chunks of `table`'s items exactly as of `as_of_lsn` (None: the applied LSN), in id
        order (see `replaybuf.materialize.Materialized`). O(events <= LSN), O(chunk) memory."""

        self._check_open()
        lsn = self._as_of(as_of_lsn)
        with Materialized(self._log, table, lsn) as m:
            yield from m.chunks(chunk_items, fields)

    def export(self, table: str, out: str | Path, *, as_of_lsn: int | None = None,
               format: str = "npz", fields: Sequence[str] | None = None,
               progress: bool = False, compression: str | None = None) -> dict[str, object]:
        """Write `table` as of `as_of_lsn` (None: the applied LSN) to `out` as ``npz``,
        ``parquet`` or ``minari`` (out = dataset id) plus ``OUT.manifest.json``; returns the
        manifest. Deterministic: the same LSN (and codec) gives the same bytes
        (`replaybuf.export`). `compression`: the Parquet codec (`replaybuf.export.PARQUET_CODECS`;
        None: snappy); other formats refuse one."""

        self._check_open()
        lsn = self._as_of(as_of_lsn)
        with Materialized(self._log, table, lsn) as m:
            return write_export(m.chunks(fields=fields), out, format, info=m.info(fields),
                                total=m.count, progress=progress, compression=compression)

    def replay_sample(self, table: str, at_lsn: int, batch_size: int, *, beta: float = 0.4,
                      seed: int | None = None, fields: Sequence[str] | None = None) -> Sample:
        """Redo the draw (table, LSN, seed, batch size, beta): the same ids and weights as
        the original draw whose ``info.lsn`` was `at_lsn`. Not logged; changes no counts.
        See `replaybuf.materialize.replay_sample` (cost, and the max_times_sampled caveat)."""

        self._check_open()
        if not _is_int(batch_size) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size is {batch_size!r}; it must be an integer >= 1")
        if (type(beta) is not float and not isinstance(beta, numbers.Real)) or not (
                0.0 <= float(beta) <= 1.0):
            raise InvalidArgumentError(f"beta is {beta!r}; it must be a number in [0, 1]")
        if not _is_int(seed) or not 0 <= seed <= _U64_MAX:  # type: ignore[operator]
            raise InvalidArgumentError(
                f"seed is {seed!r}; a replay needs the original draw's seed (SampleInfo.seed)")
        return replay_sample(self._log, table, self._as_of(at_lsn), int(batch_size),
                             beta=float(beta), seed=int(seed), fields=fields)
