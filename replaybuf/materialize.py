"""Time travel: a table exactly as it stood at LSN n, rebuilt from the log.

`Materialized` replays the log's events ``1..n`` through the engine's own applier
(`replaybuf.view.View.write`, the code path of live writes, catch-up and rebuild) into a
scratch LMDB view in a temporary directory, keeping only the events of the one table (the
others are replaced by empty events, which the applier skips; every event names its table, so
this changes nothing for the table kept). "As of n" is therefore equal to the live view at
n by construction, and an export at n is byte-identical after a restart or a rebuild.

The scratch view keeps payloads on disk, so `Materialized.chunks` streams items in id order
with O(chunk) memory; `Materialized.table` loads the RAM runtime (`replaybuf.table.Table`,
O(capacity) memory) for deterministic replay of a draw (`replay_sample`).

Cost: O(events <= n) to replay (the events of other tables are decoded and dropped) plus the
LMDB writes of the table's items. Not thread-safe; one `Materialized` per caller.

Example::

    with Materialized(engine.log, "replay", 42) as m:
        for chunk in m.chunks():
            print(chunk.ids, chunk.priorities)
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from replaybuf.errors import FailedPreconditionError, InvalidArgumentError, TableNotFoundError
from replaybuf.events import decode_event
from replaybuf.export import Chunk, ExportInfo, NUMERIC_LINEAGE
from replaybuf.log import Log
from replaybuf.results import Sample, sample_from_draw
from replaybuf.table import SlotAllocator, Table
from replaybuf.table_config import TableConfig
from replaybuf.v1 import events_pb2
from replaybuf.view import View

__all__ = ["Materialized", "replay_sample", "DEFAULT_CHUNK_ITEMS"]

DEFAULT_CHUNK_ITEMS = 4096
_BATCH_EVENTS = 2048
_BATCH_BYTES = 64 << 20


def _table_of(ev: events_pb2.Event) -> str | None:
    kind = ev.WhichOneof("body")
    if kind is None:
        return None
    body = getattr(ev, kind)
    if isinstance(body, events_pb2.TableCreated):
        return body.config.name
    return getattr(body, "table", None)


class _Clock:
    lsn = 0


class Materialized:
    """One table as of one LSN, in a scratch view. See the module docstring.

    Args:
        log: the log to replay (read-only use).
        table: table name.
        as_of_lsn: the LSN (1 .. the log's last LSN).
        tmp_dir: parent directory of the scratch view (default: the system temp dir).

    Raises:
        InvalidArgumentError: `as_of_lsn` outside the log.
        TableNotFoundError: the table did not exist at `as_of_lsn`.
    """

    def __init__(self, log: Log, table: str, as_of_lsn: int, *,
                 tmp_dir: str | Path | None = None) -> None:
        end = log.last_lsn
        if not isinstance(as_of_lsn, int) or isinstance(as_of_lsn, bool) or not (
                1 <= as_of_lsn <= end):
            raise InvalidArgumentError(
                f"as_of_lsn is {as_of_lsn!r}; it must be an LSN in [1, {end}] (the log's "
                f"end)")
        self.table_name = table
        self.as_of_lsn = as_of_lsn
        self.log_id = log.log_id
        self._dir = Path(tempfile.mkdtemp(prefix="replaybuf-asof-", dir=tmp_dir))
        self._closed = False
        try:
            self._view, _ = View.open(self._dir / "view", log_id=log.log_id, log_end=as_of_lsn,
                                      map_size=2**40, sync=False)
            self._slots: dict[int, SlotAllocator] = {}
            self._replay(log)
            recs = [r for r in self._view.tables() if r.name == table]
            if not recs:
                raise TableNotFoundError(f"table {table!r} did not exist at LSN {as_of_lsn}")
            self._rec = recs[0]
        except BaseException:
            self.close()
            raise

    def _slots_for(self, idx: int, config: TableConfig) -> SlotAllocator:
        return self._slots.setdefault(idx, SlotAllocator(config.capacity))

    def _replay(self, log: Log) -> None:
        batch: list[tuple[int, events_pb2.Event]] = []
        size = 0
        for rec in log.read(1, self.as_of_lsn):
            ev = decode_event(rec.payload, lsn=rec.lsn)
            if _table_of(ev) != self.table_name:
                ev = events_pb2.Event()  # keeps the LSNs gap-free; the applier skips it
            else:
                size += len(rec.payload)
            batch.append((rec.lsn, ev))
            if len(batch) >= _BATCH_EVENTS or size >= _BATCH_BYTES:
                self._view.write(batch, self._slots_for)
                batch, size = [], 0
        if batch:
            self._view.write(batch, self._slots_for)
        if self._view.applied_lsn != self.as_of_lsn:
            raise FailedPreconditionError(
                f"the log ended at LSN {self._view.applied_lsn} before {self.as_of_lsn}")

    # -- results ------------------------------------------------------------------------------

    @property
    def config(self) -> TableConfig:
        """The table's config at the LSN."""

        return self._rec.config

    @property
    def count(self) -> int:
        """Items present at the LSN (retired-but-not-evicted included)."""

        st = self._view.stats(self._rec.index)
        return st.inserts - st.evictions

    def info(self, fields: Sequence[str] | None = None) -> ExportInfo:
        return ExportInfo.from_config(self.config.to_proto(), as_of_lsn=self.as_of_lsn,
                                      log_id=self.log_id, fields=fields)

    def chunks(self, chunk_items: int = DEFAULT_CHUNK_ITEMS,
               fields: Sequence[str] | None = None) -> Iterator[Chunk]:
        """The present items in id order: data (reward as corrected up to the LSN),
        priorities, times sampled and lineage as of the LSN. O(chunk_items) memory."""

        if not isinstance(chunk_items, int) or chunk_items < 1:
            raise InvalidArgumentError(f"chunk_items is {chunk_items!r}; it must be >= 1")
        names = [f[0] for f in self.info(fields).fields]
        cfg = self.config
        for metas, rows in self._view.iter_items(self._rec.index, chunk_items):
            ids = metas["item_id"].astype(np.uint64)
            columns = {n: np.ascontiguousarray(rows[n]) for n in names}
            if cfg.has_reward and cfg.reward_field in columns:
                columns[cfg.reward_field] = metas["reward"].astype(
                    cfg.field(cfg.reward_field).dtype)
            req, src = self._view.read_strings(ids)
            lineage: dict[str, object] = {k: metas[k].astype(dt) for k, dt in NUMERIC_LINEAGE}
            lineage.update(request_id=req, source=src)
            yield Chunk(ids, columns, metas["priority"].astype(np.float64),
                        metas["times_sampled"].astype(np.uint64), lineage)

    def table(self) -> Table:
        """The RAM runtime as of the LSN, loaded the way the engine loads it on open."""

        clock = _Clock()
        clock.lsn = self.as_of_lsn
        rec = self._rec
        t = Table(rec.index, rec.config, created_lsn=rec.created_lsn, clock=clock)
        metas, rows = self._view.load()[rec.index]
        st = self._view.stats(rec.index)
        t.load(metas, rows, inserts=st.inserts, samples=st.samples, evictions=st.evictions)
        return t

    def read_strings(self, ids: np.ndarray) -> tuple[list[str], list[str]]:
        return self._view.read_strings(ids)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close and delete the scratch view. Idempotent."""

        if self._closed:
            return
        self._closed = True
        view = getattr(self, "_view", None)
        if view is not None:
            view.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Materialized:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def replay_sample(log: Log, table: str, at_lsn: int, batch_size: int, *, beta: float,
                  seed: int, fields: Sequence[str] | None = None,
                  tmp_dir: str | Path | None = None) -> Sample:
    """Redo a draw on the table as of `at_lsn` (not logged; changes no counts anywhere).

    The same (table, LSN, seed, batch size, beta) gives the ids and weights of the original
    draw whose ``SampleInfo.lsn`` was `at_lsn`. Caveat: with ``max_times_sampled`` a live
    table retires items the moment a draw reaches the limit, before that draw's
    ``ItemsSampled`` is logged; a later draw reporting the same LSN then saw those items
    gone, which a replay at that LSN cannot know. Without ``max_times_sampled`` replay is exact.

    Cost: materializing the table (see `Materialized`) plus loading it into RAM.
    """

    with Materialized(log, table, at_lsn, tmp_dir=tmp_dir) as m:
        t = m.table()
        try:
            if fields is not None:
                m.info(fields)  # validates the names
            draw = t.draw(batch_size, beta=beta, seed=seed, fields=fields)
        finally:
            t.close()
        request_ids, sources = m.read_strings(draw.ids)
    return sample_from_draw(draw, request_ids, sources, seed=int(seed), lsn=at_lsn, copy=True)
