"""The materialized view: the log's events applied, exactly once, to an LMDB environment.

The view is derived data (DESIGN.md, invariant 1): it can be deleted at any time and is rebuilt
from the log. It exists so that a restart does not replay the whole log, and so that lineage
queries (by request id, episode, model version) are index lookups.

Exactly once: every write transaction stores ``applied_lsn`` together with the changes it
covers (invariant 3), and `View.write` refuses records that do not continue at
``applied_lsn + 1``. The engine applies only what `Log.append` returned, so under the ``group``
and ``always`` fsync policies ``applied_lsn <= durable_lsn`` always holds (invariant 2). Under
``interval``/``none`` an ack is not durable, and the view may run ahead of the log's
``durable_lsn`` until the next log sync; a power loss then leaves the view ahead of the log,
which `View.open` detects and answers with a rebuild. A process crash loses nothing (the log's
recovery keeps what the process wrote).

LMDB settings for this role (`open_env`), each a durability trade-off:

* ``map_size`` 1 TiB by default: the file is sparse, so only used pages cost disk. When it is
  still too small, the write transaction is aborted, the map is doubled and the write retried.
* ``metasync=False``: commits skip the meta-page fsync, halving the cost of a commit. A crash
  can undo the last commit only; that commit's events are still in the log and are re-applied
  from ``applied_lsn`` on the next open.
* ``sync=False`` by default (`EngineConfig.view_sync`) and ``writemap=False``: commits are not
  fsynced, since the log already is; a process crash loses nothing (the page cache keeps every
  committed page), and a view left open across an OS crash or power loss is rebuilt from the
  log (`replaybuf.view_marker`: a marker with the boot id). ``writemap=False`` because a stray
  write must not corrupt the map (py-lmdb: never pair ``writemap`` with unsynced commits).
  ``view_sync=True`` fsyncs every commit instead.
* ``max_readers=1024`` and `lmdb.Environment.reader_check` at open, which clears the reader
  slots of processes killed with SIGKILL.

Layout (named databases; integers in keys are big-endian so that keys sort numerically, values
are little-endian and start with a format version byte ``v``):

====================  ========================================  ===============================
database              key                                       value
====================  ========================================  ===============================
``meta``              ``format`` ``log_id`` ``applied_lsn``     u32 / utf-8 / u64 / u64 / u32
                      ``next_item_id`` ``next_table``           / 32 hex digits
                      ``view_id``
``tables``            table name (utf-8)                        v, u32 index, u64 created LSN,
                                                                TableConfig proto
``table_stats``       u32 table index                           v, u64 inserts, samples,
                                                                evictions
``items``             u64 item id                               v, fields in signature order
                                                                (immutable; present items)
``item_meta``         u64 item id                               `META_DTYPE` (present items)
``evicted_meta``      u64 item id                               `META_DTYPE`, EVICTED flag
``item_strings``      u64 item id                               v, u16 len, request id, u16
                                                                len, source (kept on evict)
``by_request``        u32 table, u16 len, request id, u64 id    empty
``by_episode``        u32 table, u64 episode id, u64 first id   v, u32 count of consecutive
                      of a run                                  ids (one append's run)
``by_model_version``  u32 table, u64 (version + 2**63), u64     v, u32 count (as above)
                      first id of a run
``jobs``              job id (utf-8)                            v, u64 LSN of JobCompleted,
                                                                JobCompleted proto
``item_events``       u64 item id, u64 LSN                      empty (`replaybuf.lineage_index`)
``pending_reviews``   u32 table, u64 item id                    v, u64 flag LSN, reason, author
                                                                (`replaybuf.review`)
``draws``             u32 table, u64 LSN, u8 kind               v, ids drawn, ids evicted, or
                                                                priority updates (ids, values,
                                                                times) of one transaction
``sample_counts``     u32 table, u64 item id // 1024            v, 1024 u64 sample counters
``priority_chunks``   u32 table, u64 item id // 1024            v, 1024 f64 priorities (NaN:
                                                                unset), 1024 i64 times (ms)
====================  ========================================  ===============================

A reward correction rewrites only the small fixed-size ``item_meta`` record, never the payload.
Sample counts and priority updates do not even do that (``item_meta`` keeps the append-time
priority and a zero count, and the readers here fill in the current values): they are
appended to ``draws`` and folded into the chunk arrays in bulk (`replaybuf.hot_meta`), so a
sampled batch or a learner's priority update costs one small write instead of one dirty page
per item. Evicting an item deletes its payload and moves its
metadata to ``evicted_meta``; index entries stay, so lineage can still find it. Opening scans
``item_meta`` and ``items`` with one cursor each into numpy arrays (no Python work per item).
How each event changes these databases is `replaybuf.applier`.

Thread-safety: `View.write` is called by one thread at a time (the engine's writer lock). Read
methods may be called from any thread concurrently; they hold a shared lock that map growth
takes exclusively (``set_mapsize`` requires that no transaction is open in the process).
"""

from __future__ import annotations

import itertools
import logging
import operator
import shutil
import struct
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import lmdb
import numpy as np

from replaybuf.applier import (
    FLAG_CORRECTED, FLAG_EVICTED, META_DTYPE, MODEL_VERSION_BIAS, RECORD_VERSION, STATS_VALUE,
    TABLE_VALUE, U32, U64, Applied, Batch, SlotSource, TableRecord, TableStats, ViewDamagedError,
    decode_strings, item_keys, row_dtype,
)
from replaybuf.applier import JOB_VALUE
from replaybuf import hot_meta, lineage_index, review, view_marker
from replaybuf.hot_meta import Pending
from replaybuf.new_items import RUN_VALUE
from replaybuf.errors import ClosedError, FailedPreconditionError, ResourceExhaustedError
from replaybuf.locks import SharedLock
from replaybuf.table_config import TableConfig
from replaybuf.table_snapshot import SnapshotKey
from replaybuf.v1 import events_pb2, table_pb2

__all__ = [
    "View", "ViewDamagedError", "Applied", "SlotSource", "TableRecord", "TableStats",
    "META_DTYPE", "VIEW_FORMAT", "FLAG_EVICTED", "FLAG_CORRECTED", "row_dtype", "open_env",
]

_logger = logging.getLogger(__name__)

#: Layout version of the whole view; a different one on disk makes `View.open` rebuild.
VIEW_FORMAT = 7  # 2: item_events, pending_reviews; 3: META priority_ms; 4-5: hot_meta;
#                6: view_id (a snapshot file of the tables names the view it was taken of);
#                7: by_episode / by_model_version hold runs of ids (`replaybuf.new_items`)
_V = RECORD_VERSION
_DBS = ("meta", "tables", "table_stats", "items", "item_meta", "evicted_meta", "item_strings",
        "by_request", "by_episode", "by_model_version", "item_events", "pending_reviews", "jobs",
        "draws", "sample_counts", "priority_chunks")


def open_env(path: Path, *, map_size: int, max_readers: int = 1024,
             sync: bool = True) -> lmdb.Environment:
    """Open (or create) the LMDB environment with this role's settings (module docstring)."""

    env = lmdb.open(
        str(path), map_size=map_size, max_dbs=len(_DBS) + 2, max_readers=max_readers,
        subdir=True, metasync=False, sync=sync, writemap=False, lock=True,
    )
    env.reader_check()
    return env


class View:
    """The LMDB materialized view of one log. See the module docstring for the model.

    Example::

        view, reason = View.open(path, log_id=log.log_id, log_end=log.durable_lsn)
        applied = view.write([(lsn, event)], slots_for)   # one transaction
        view.close()

    Thread-safety: one writer thread; readers from any thread (see the module docstring).
    """

    def __init__(self, path: Path, env: lmdb.Environment, map_size: int) -> None:
        self.path = path
        self._env = env
        self._map_size = map_size
        self._rw = SharedLock()
        self._dbs = {name: env.open_db(name.encode(), create=True) for name in _DBS}
        self._tables: dict[str, TableRecord] = {}
        self._by_index: dict[int, TableRecord] = {}
        self._stats: dict[int, TableStats] = {}
        self.applied_lsn = 0
        self.next_item_id = 1
        self._next_table = 0
        self.log_id = ""
        #: Random id given to the view when it is created (a rebuilt view gets a new one).
        self.view_id = ""
        self._closed = False
        self._unsynced = False  # commits not fsynced: `close` syncs and clears the marker
        self._pending = Pending(0)  # hot metadata not yet folded, as of applied_lsn
        #: Pending changes that trigger a fold (`replaybuf.hot_meta`); tests lower it.
        self.fold_min = hot_meta.FOLD_MIN

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | Path, *, log_id: str, log_end: int, map_size: int = 2**40,
        max_readers: int = 1024, sync: bool = True, scratch: bool = False,
    ) -> tuple[View, str | None]:
        """Open the view at `path` for the log `log_id` whose last LSN is `log_end`.

        Returns ``(view, reason)``: reason is None when the existing view can be caught up,
        else why it was (re)created empty: missing, damaged, another format, another log, or
        ahead of the log. The caller then replays the log from `View.applied_lsn` + 1.

        With ``sync=False`` commits are not fsynced: a process crash loses nothing, and a
        view left open by a machine that went down since is rebuilt (`replaybuf.view_marker`);
        `close` syncs. ``scratch=True``: a throwaway view (no marker, no sync at close).

        Cost: opening LMDB and reading a handful of keys; O(size of the view) to delete one.
        """

        path = Path(path)
        reason: str | None = None
        unsynced = not sync and not scratch
        if not (path / "data.mdb").exists():
            reason = f"view {path} is missing"
        elif (distrusted := view_marker.distrust(path)) is not None:
            reason = f"view {path} cannot be trusted: {distrusted}"
            _logger.warning("%s; rebuilding it from the log", reason)
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                view = cls._open_existing(path, map_size, max_readers, sync)
                try:
                    reason = view._check(log_id, log_end)
                except BaseException:
                    view.close()
                    raise
                if reason is None:
                    view._settle_marker(unsynced)
                    return view, None
                view.close()
            except (lmdb.Error, ViewDamagedError, struct.error, ValueError) as exc:
                reason = f"view {path} is damaged ({type(exc).__name__}: {exc})"
            _logger.warning("%s; rebuilding it from the log", reason)
            shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        env = open_env(path, map_size=map_size, max_readers=max_readers, sync=sync)
        view = cls(path, env, map_size)
        view._settle_marker(unsynced)
        with env.begin(write=True) as txn:
            meta = view._dbs["meta"]
            txn.put(b"format", struct.pack(">I", VIEW_FORMAT), db=meta)
            txn.put(b"log_id", log_id.encode(), db=meta)
            txn.put(b"applied_lsn", U64.pack(0), db=meta)
            txn.put(b"next_item_id", U64.pack(1), db=meta)
            txn.put(b"next_table", U32.pack(0), db=meta)
            txn.put(b"view_id", uuid.uuid4().hex.encode(), db=meta)
        view.log_id = log_id
        view._load_meta()
        return view, reason

    @classmethod
    def _open_existing(cls, path: Path, map_size: int, max_readers: int, sync: bool) -> View:
        env = open_env(path, map_size=map_size, max_readers=max_readers, sync=sync)
        try:
            view = cls(path, env, map_size)
            view._load_meta()
        except BaseException:
            env.close()
            raise
        return view

    def _load_meta(self) -> None:
        with self._env.begin() as txn:
            meta = self._dbs["meta"]
            fmt = txn.get(b"format", db=meta)
            if fmt is None or len(fmt) != 4:
                raise ViewDamagedError("meta 'format' is missing")
            if struct.unpack(">I", fmt)[0] != VIEW_FORMAT:
                raise ViewDamagedError(
                    f"view format {struct.unpack('>I', fmt)[0]} is not this version's "
                    f"{VIEW_FORMAT}"
                )
            self.log_id = bytes(txn.get(b"log_id", db=meta) or b"").decode()
            self.applied_lsn = U64.unpack(txn.get(b"applied_lsn", db=meta) or b"")[0]
            self.next_item_id = U64.unpack(txn.get(b"next_item_id", db=meta) or b"")[0]
            self._next_table = U32.unpack(txn.get(b"next_table", db=meta) or b"")[0]
            self.view_id = bytes(txn.get(b"view_id", db=meta) or b"").decode()
            if len(self.view_id) != 32:
                raise ViewDamagedError("meta 'view_id' is missing")
            for key, value in txn.cursor(db=self._dbs["tables"]):
                version, idx, created = TABLE_VALUE.unpack_from(value)
                if version != _V:
                    raise ViewDamagedError(f"table record version {version}")
                msg = table_pb2.TableConfig.FromString(value[TABLE_VALUE.size :])
                rec = TableRecord(bytes(key).decode(), idx, created, TableConfig.from_proto(msg))
                self._tables[rec.name] = rec
                self._by_index[idx] = rec
            for key, value in txn.cursor(db=self._dbs["table_stats"]):
                version, ins, smp, ev = STATS_VALUE.unpack(value)
                if version != _V:
                    raise ViewDamagedError(f"table stats record version {version}")
                self._stats[U32.unpack(key)[0]] = TableStats(ins, smp, ev)
            self._pending = Pending.read(txn, self._dbs["draws"], self.applied_lsn)
        if len(self._by_index) != self._next_table:
            raise ViewDamagedError(
                f"{len(self._by_index)} tables but next_table {self._next_table}"
            )

    def _check(self, log_id: str, log_end: int) -> str | None:
        if self.log_id != log_id:
            return f"view {self.path} was built from log {self.log_id!r}, not {log_id!r}"
        if self.applied_lsn > log_end:
            return (
                f"view {self.path} is ahead of the log (applied_lsn {self.applied_lsn} > log end "
                f"{log_end}; the log lost its tail or was restored from an older copy)"
            )
        return None

    # -- reading ------------------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[None]:
        with self._rw.shared():
            if self._closed:
                raise ClosedError(f"view {self.path} is closed")
            yield

    def _pending_in(self, txn: lmdb.Transaction) -> Pending:
        """The pending draws as `txn` sees them (the cached state unless a write committed
        since the transaction began)."""

        pending = self._pending
        raw = txn.get(b"applied_lsn", db=self._dbs["meta"])
        lsn = U64.unpack(raw)[0] if raw is not None and len(raw) == 8 else -1
        return pending if lsn == pending.lsn else Pending.read(txn, self._dbs["draws"], lsn)

    def pending_update_lsns(self, txn: lmdb.Transaction, table: int, item_id: int) -> list[int]:
        """LSNs of priority updates of an item not yet in the lineage index (`hot_meta`)."""

        return self._pending_in(txn).update_lsns(table, item_id)

    def fill_hot(self, txn: lmdb.Transaction, metas: np.ndarray) -> None:
        """Set ``times_sampled``, ``priority`` and ``priority_ms`` of `metas`, records read from
        ``item_meta`` in `txn` (present items; writable; one table or several), from where
        the view keeps them (`replaybuf.hot_meta`)."""

        if not metas.size:
            return
        pending = self._pending_in(txn)
        tables = np.unique(metas["table"])
        if tables.size == 1:
            hot_meta.fill(txn, self._dbs, pending, int(tables[0]), metas)
            return
        for idx in tables.tolist():
            sel = np.flatnonzero(metas["table"] == idx)
            part = metas[sel]
            hot_meta.fill(txn, self._dbs, pending, idx, part)
            metas[sel] = part

    def snapshot_key(self) -> SnapshotKey:
        """What a snapshot of the tables taken now must name (`replaybuf.table_snapshot`)."""

        return SnapshotKey(VIEW_FORMAT, self.view_id, self.log_id, self.applied_lsn,
                           self.next_item_id)

    def times_sampled(self, table: int, ids: np.ndarray) -> np.ndarray:
        """Times sampled of present items `ids` (most of table index `table`), without
        reading their ``item_meta`` records (`replaybuf.hot_meta.sample_counts`)."""

        with self._reading(), self._env.begin() as txn:
            return hot_meta.sample_counts(txn, self._dbs, self._pending_in(txn), table, ids,
                                          scan=True)

    def tables(self) -> list[TableRecord]:
        """Every table, by index (creation order)."""

        return [self._by_index[i] for i in sorted(self._by_index)]

    def stats(self, idx: int) -> TableStats:
        """Committed counters of table `idx` (inserts, samples, evictions)."""

        st = self._stats.get(idx, TableStats())
        return TableStats(st.inserts, st.samples, st.evictions)

    def load(self, payloads_from: int = 0) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Every present item of every table: ``{index: (META records, payload rows)}``.

        Rows are `row_dtype` structured arrays; both are in item id order. One cursor scan
        of ``item_meta`` and one of ``items``, joined into single buffers: O(view size) with
        no Python work per item beyond LMDB's iterator. With `payloads_from`, the rows are
        only those of items with ids from it on (payloads never change, so a caller may
        have the older ones already: `replaybuf.table_snapshot.read_snapshot`).

        Raises:
            ViewDamagedError: records of the wrong size or version, or the two scans disagree.
        """

        with self._reading(), self._env.begin() as txn:
            raw = b"".join(txn.cursor(db=self._dbs["item_meta"]).iternext(keys=False))
            if len(raw) % META_DTYPE.itemsize:
                raise ViewDamagedError("item_meta holds a record of the wrong size")
            metas = np.frombuffer(raw, META_DTYPE).copy()
            if metas.size and not (metas["version"] == _V).all():
                raise ViewDamagedError("item_meta holds a record of an unknown version")
            pending = self._pending_in(txn)
            single = len(self._by_index) <= 1 and bool((metas["table"] == next(
                iter(self._by_index), 0)).all())
            for idx in self._by_index:
                if single:  # no copies of the records to pick the table's
                    hot_meta.fill(txn, self._dbs, pending, idx, metas, scan=True)
                    continue
                sel = np.flatnonzero(metas["table"] == idx)
                part = metas[sel]
                hot_meta.fill(txn, self._dbs, pending, idx, part, scan=True)
                metas[sel] = part
            items = txn.cursor(db=self._dbs["items"])
            cursor: Iterator[bytes] = items.iternext(keys=False)
            if payloads_from > 0:
                metas_rows = metas["item_id"] >= payloads_from  # metas with a row here
                if not items.set_range(U64.pack(payloads_from)):
                    cursor = iter(())  # (an unpositioned cursor would start at the first)
            joined, payloads = b"", []
            if single:  # one table: no need to split the payloads
                joined = b"".join(cursor)
            else:
                payloads = list(cursor)
        rowed = metas if payloads_from <= 0 else metas[metas_rows]
        if not single and len(payloads) != rowed.size:
            raise ViewDamagedError(f"{len(payloads)} payloads but {rowed.size} metadata records")
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for idx, rec in self._by_index.items():
            sel = np.flatnonzero(rowed["table"] == idx)
            if single:
                buf = joined
            elif sel.size == 1:
                buf = payloads[int(sel[0])]
            else:
                buf = b"".join(operator.itemgetter(*sel.tolist())(payloads)) if sel.size else b""
            dt = row_dtype(rec.config)
            if len(buf) != sel.size * dt.itemsize:
                raise ViewDamagedError(f"payloads of table {rec.name!r} have the wrong size")
            rows = np.frombuffer(buf, dt)
            if rows.size and not (rows["_v"] == _V).all():
                raise ViewDamagedError(f"a payload of table {rec.name!r} has an unknown version")
            out[idx] = (metas if single else metas[metas["table"] == idx], rows)
        return out

    def iter_items(self, table: int, chunk_items: int = 4096
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Present items of table index `table` in id order, ``chunk_items`` at a time:
        ``(META records, payload rows)`` per chunk (copies, safe to keep).

        One read transaction (a consistent snapshot) walks ``item_meta`` and ``items`` side by
        side, so memory is O(chunk_items) however large the table. Not for use while the
        caller itself writes to this view.
        """

        rec = self._by_index[table]
        dt = row_dtype(rec.config)
        with self._reading(), self._env.begin() as txn:
            metas_it = txn.cursor(db=self._dbs["item_meta"]).iternext(keys=False)
            rows_it = txn.cursor(db=self._dbs["items"]).iternext(keys=False)
            pairs = zip(metas_it, rows_it)
            while True:
                block = list(itertools.islice(pairs, chunk_items))
                if not block:
                    return
                metas = np.frombuffer(b"".join(m for m, _ in block), META_DTYPE)
                keep = metas["table"] == table
                if keep.all():
                    raw = b"".join(r for _, r in block)
                else:
                    raw = b"".join(block[i][1] for i in np.flatnonzero(keep).tolist())
                    metas = metas[keep]
                if metas.size:
                    metas = metas.copy()
                    self.fill_hot(txn, metas)
                    yield metas, np.frombuffer(raw, dt).copy()

    def read_strings(self, ids: Sequence[int] | np.ndarray) -> tuple[list[str], list[str]]:
        """Request ids and sources of items (present or evicted); "" where none. O(len(ids))."""

        arr = np.asarray(ids, dtype=np.uint64)
        keys = item_keys(arr)
        with self._reading(), self._env.begin() as txn:
            found = dict(txn.cursor(db=self._dbs["item_strings"]).getmulti(keys))
        req: list[str] = []
        src: list[str] = []
        for k in keys:
            v = found.get(k)
            r, s = decode_strings(v) if v is not None else ("", "")
            req.append(r)
            src.append(s)
        return req, src

    def records(self, ids: Sequence[int] | np.ndarray) -> dict[int, np.void]:
        """META records of items, present or evicted (evicted have `FLAG_EVICTED`)."""

        keys = item_keys(np.asarray(ids, dtype=np.uint64))
        out: dict[int, np.void] = {}
        with self._reading(), self._env.begin() as txn:
            for db in ("evicted_meta", "item_meta"):
                found = txn.cursor(db=self._dbs[db]).getmulti(keys)
                if not found:
                    continue
                recs = np.frombuffer(b"".join(v for _, v in found), META_DTYPE).copy()
                if db == "item_meta":
                    self.fill_hot(txn, recs)
                for (k, _), r in zip(found, recs):
                    out[U64.unpack(k)[0]] = r
        return out

    def find_items(
        self, table: int, *, request_id: str | None = None, episode_id: int | None = None,
        model_version: int | None = None, limit: int = 10_000,
    ) -> tuple[list[int], bool]:
        """Item ids of table index `table` matching exactly one criterion, ascending by
        index key (present and evicted), at most `limit`; returns ``(ids, truncated)``."""

        runs = request_id is None  # by_episode and by_model_version hold runs of ids
        if request_id is not None:
            r = request_id.encode()
            db, prefix = "by_request", U32.pack(table) + len(r).to_bytes(2, "big") + r
        elif episode_id is not None:
            db, prefix = "by_episode", U32.pack(table) + U64.pack(episode_id)
        elif model_version is not None:
            biased = U64.pack(model_version + MODEL_VERSION_BIAS)
            db, prefix = "by_model_version", U32.pack(table) + biased
        else:
            raise ValueError("give one of request_id, episode_id, model_version")
        want = min(limit, sys.maxsize - 1) + 1
        with self._reading(), self._env.begin() as txn:
            cur = txn.cursor(db=self._dbs[db])
            if not cur.set_range(prefix):
                return [], False
            # Every key with this prefix is prefix + u64 id (a request id's length is in the
            # prefix), so the first key at or past prefix + 9 x 0xff ends the range: the walk
            # stops on it by a comparison in C, with no Python call per key.
            end = txn.cursor(db=self._dbs[db])
            stop = end.key() if end.set_range(prefix + b"\xff" * 9) else None
            it = cur.iternext(values=False)
            keys = list(itertools.islice(it if stop is None else iter(it.__next__, stop), want))
            counts = None
            if runs and keys:
                vals = txn.cursor(db=self._dbs[db]).getmulti(keys)
                run = np.frombuffer(b"".join(v for _, v in vals), RUN_VALUE)
                if run.size != len(keys) or not (run["v"] == _V).all():
                    raise ViewDamagedError(f"an entry of {db!r} has the wrong size or version")
                counts = run["count"].astype(np.int64)
        firsts = np.frombuffer(b"".join(keys), [("key", f"V{len(prefix)}"), ("id", ">u8")]
                               )["id"].astype(np.uint64)
        if counts is not None:  # expand the runs (in key order: ascending first ids)
            ends = np.cumsum(counts)
            cut = int(np.searchsorted(ends, want))  # the run holding the want-th id
            if cut < ends.size:  # expand only up to want ids
                firsts, counts, ends = firsts[: cut + 1], counts[: cut + 1], ends[: cut + 1]
                counts[cut] -= int(ends[cut]) - want
                ends[cut] = want
            step = np.ones(int(ends[-1]), np.uint64)
            step[0] = firsts[0]
            step[ends[:-1]] = firsts[1:] - (firsts[:-1] + counts[:-1].astype(np.uint64)) + 1
            firsts = np.cumsum(step, dtype=np.uint64)
        ids = firsts[:limit].copy()
        ids.sort()
        return ids.tolist(), firsts.size > limit

    @contextmanager
    def reading(self) -> Iterator[tuple[lmdb.Transaction, dict[str, object]]]:
        """A read transaction and the named databases, for the query modules
        (`replaybuf.lineage_index`, `replaybuf.review`). Hold it briefly."""

        with self._reading(), self._env.begin() as txn:
            yield txn, self._dbs

    def table_name(self, idx: int) -> str:
        """Name of table index `idx`."""

        return self._by_index[idx].name

    def get_job(self, job_id: str) -> tuple[int, bytes] | None:
        """``(lsn, JobCompleted bytes)`` of a recorded job run, or None. O(log n)."""

        with self._reading(), self._env.begin() as txn:
            value = txn.get(job_id.encode(), db=self._dbs["jobs"])
        if value is None:
            return None
        value = bytes(value)
        return JOB_VALUE.unpack_from(value)[1], value[JOB_VALUE.size :]

    @property
    def map_size(self) -> int:
        return int(self._env.info()["map_size"])

    # -- writing ------------------------------------------------------------------------------

    def write(
        self,
        records: Sequence[tuple[int, events_pb2.Event]],
        slots_for: Callable[[int, TableConfig], SlotSource],
        columns: Mapping[int, Mapping[str, np.ndarray]] | None = None,
    ) -> list[Applied]:
        """Apply `records` (consecutive ``(lsn, event)`` from ``applied_lsn + 1``) in ONE write
        transaction that also stores the new ``applied_lsn``.

        `slots_for(index, config)` returns the slot source of a table; the slots it hands out
        are undone if the transaction fails. On `lmdb.MapFullError` the transaction is aborted,
        the map doubled and the whole write retried. Cost: O(items touched) LMDB operations,
        batched with ``putmulti``/``getmulti``. Not thread-safe (one writer). `columns` maps
        the LSN of an ItemsAppended to its already decoded and validated arrays (live appends),
        which are used instead of decoding the event's tensors again.

        Raises:
            FailedPreconditionError: the records do not continue at ``applied_lsn + 1``.
            ResourceExhaustedError: the map cannot grow (the message names ``map_size``).
        """

        if not records:
            return []
        if records[0][0] != self.applied_lsn + 1 or any(
            b[0] != a[0] + 1 for a, b in zip(records, records[1:])
        ):
            raise FailedPreconditionError(
                f"view {self.path} has applied up to LSN {self.applied_lsn}; records starting "
                f"at {records[0][0]} do not continue it (the view and log are out of step; "
                f"reopen the engine to recover)"
            )
        while True:
            touched: dict[int, SlotSource] = {}

            def slots(idx: int, config: TableConfig) -> SlotSource:
                src = touched.get(idx)
                if src is None:
                    src = touched[idx] = slots_for(idx, config)
                    src.begin()
                return src

            try:
                with self._env.begin(write=True) as txn:
                    batch = Batch(txn, self._dbs, tables=self._tables, stats=self._stats,
                                  next_item_id=self.next_item_id, next_table=self._next_table,
                                  slots=slots, pending=self._pending, columns=columns)
                    out = []
                    for lsn, ev in records:
                        applied = batch.apply(lsn, ev)
                        review.apply_event(batch, self._dbs, applied)  # before indexing
                        lineage_index.index_event(txn, self._dbs, applied)
                        out.append(applied)
                    batch.finish(records[-1][0], fold_min=self.fold_min)
            except lmdb.MapFullError:
                for src in touched.values():
                    src.rollback()
                self._grow()
                continue
            except BaseException:
                for src in touched.values():
                    src.rollback()
                raise
            for src in touched.values():
                src.commit()
            self._tables = batch.tables
            self._by_index = {rec.index: rec for rec in batch.tables.values()}
            self._stats.update(batch.stats)
            self.next_item_id, self._next_table = batch.next_item_id, batch.next_table
            self.applied_lsn = records[-1][0]
            self._pending = batch.pending_after
            return out

    def _grow(self) -> None:
        new = self.map_size * 2
        _logger.warning("LMDB map of view %s is full; growing it to %d bytes", self.path, new)
        try:
            with self._rw.exclusive():
                self._env.set_mapsize(new)
        except lmdb.Error as exc:
            raise ResourceExhaustedError(
                f"cannot grow the LMDB map of view {self.path} to {new} bytes ({exc}); free "
                f"disk or address space, or set EngineConfig.map_size to a larger value"
            ) from exc

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the environment. Idempotent."""

        with self._rw.exclusive():
            if not self._closed:
                self._closed = True
                try:
                    if self._unsynced:  # every commit on disk, then the marker can go
                        self._env.sync(True)
                        view_marker.clear(self.path)
                finally:
                    self._env.close()

    def _settle_marker(self, unsynced: bool) -> None:
        """Before the first commit: mark the view as taking unsynced commits, or, when
        commits are synced from now on, sync what an earlier unsynced session left and drop
        its marker (`replaybuf.view_marker`)."""

        if unsynced:
            view_marker.mark(self.path)
        elif (self.path / view_marker.MARKER).exists():
            self._env.sync(True)
            view_marker.clear(self.path)
        self._unsynced = unsynced
