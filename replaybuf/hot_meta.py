"""The view's hot per-item metadata: times sampled and priority, without a random write per item.

Sampling and priority updates are the most frequent changes: every batch of B draws, and every
learner step's B new priorities, names B items spread over the whole table. Rewriting each
item's ``item_meta`` record dirtied one LMDB page per item (a 256-item batch cost a ~1 MB
commit). Instead, these two fields live here:

* ``draws``: per write transaction and table, one record per kind, keyed by table, LSN and
  kind: the ids drawn, the ids evicted, and the priority updates (ids, priorities and the
  event times) in event order. Appending them touches one page.
* ``sample_counts`` and ``priority_chunks``: dense per-chunk arrays (``CHUNK`` items per value,
  item id // CHUNK) of sample counters, and of priorities with their event times (NaN: not set
  here, ``item_meta`` has the append-time value). They are folded from ``draws`` when enough
  is pending (`Pending.should_fold`): a fold rewrites each touched chunk once, in key order,
  writes the lineage index entries of the updates (`replaybuf.lineage_index`) in key order,
  and empties ``draws``.

An item's times sampled is its counter plus its pending draws; its priority and
``priority_ms`` are the newest pending update, else its chunk entry, else ``item_meta``'s.
Readers of ``item_meta`` (`fill`) apply this. On eviction the applier writes the final values
into the ``evicted_meta`` record, and the id is recorded as *gone*, so the next fold clears its
chunk entries (and drops chunks left empty): the arrays are garbage-collected with the items.

`Pending` mirrors ``draws`` in RAM for the committed state at one ``applied_lsn``; it is
immutable and the view swaps in a new one after each commit, so readers on other threads may
use the one they hold. A read transaction at another LSN reads ``draws`` itself
(`Pending.read`).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import lmdb
import numpy as np

from replaybuf.errors import ViewDamagedError

__all__ = ["CHUNK", "FOLD_MIN", "PrioUpdates", "Pending", "fill", "fold", "sample_counts"]

#: Items per chunk value (8 KiB of counters; 16 KiB of priorities and times).
CHUNK = 1024
#: Fold when at least this many ids are pending (or 1/8 of the present items, if more).
FOLD_MIN = 1 << 16
_DRAWN, _GONE, _PRIO = 0, 1, 2
_LOG_KEY = struct.Struct(">IQB")  # table, LSN of the transaction's last event, kind
_CHUNK_KEY = struct.Struct(">IQ")  # table, item id // CHUNK
_V = 1
_COUNT_SIZE = 1 + 8 * CHUNK
_PRIO_SIZE = 1 + 16 * CHUNK
_EMPTY = np.empty(0, np.uint64)


def _concat(parts: tuple[np.ndarray, ...], dtype: Any = np.uint64) -> np.ndarray:
    if not parts:
        return np.empty(0, dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@dataclass(frozen=True)
class PrioUpdates:
    """Priority updates of one table, in event order: ids, new priorities, event times (ms)
    and the LSNs of their events (for the lineage index, written at the fold)."""

    ids: np.ndarray
    values: np.ndarray
    ms: np.ndarray
    lsns: np.ndarray

    def encode(self) -> bytes:
        return (bytes([_V]) + np.ascontiguousarray(self.ids, "<u8").tobytes()
                + np.ascontiguousarray(self.values, "<f8").tobytes()
                + np.ascontiguousarray(self.ms, "<i8").tobytes()
                + np.ascontiguousarray(self.lsns, "<u8").tobytes())

    @classmethod
    def decode(cls, value: bytes) -> PrioUpdates:
        n, rest = divmod(len(value) - 1, 32)
        if rest or value[0] != _V:
            raise ViewDamagedError("a 'draws' priority record has the wrong size or version")
        return cls(np.frombuffer(value, "<u8", n, 1).astype(np.uint64),
                   np.frombuffer(value, "<f8", n, 1 + 8 * n).astype(np.float64),
                   np.frombuffer(value, "<i8", n, 1 + 16 * n).astype(np.int64),
                   np.frombuffer(value, "<u8", n, 1 + 24 * n).astype(np.uint64))

    @classmethod
    def join(cls, parts: list[PrioUpdates] | tuple[PrioUpdates, ...]) -> PrioUpdates:
        """One record of several, in order."""

        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("ids", "values", "ms", "lsns")))


def _lookup(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of `values`: its position in sorted, non-empty `keys` (clipped) and whether it
    is there."""

    pos = np.minimum(np.searchsorted(keys, values), keys.size - 1)
    return pos, keys[pos] == values


def _latest(parts: tuple[PrioUpdates, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Last-wins over updates in order: (sorted unique ids, their priorities, their times)."""

    ids = _concat(tuple(p.ids for p in parts))
    vals = _concat(tuple(p.values for p in parts), np.float64)
    ms = _concat(tuple(p.ms for p in parts), np.int64)
    uids, first = np.unique(ids[::-1], return_index=True)
    last = ids.size - 1 - first
    return uids, vals[last], ms[last]


@dataclass(frozen=True)
class Pending:
    """What ``draws`` holds (not yet folded) as of ``lsn``.

    Attributes:
        lsn: the view's ``applied_lsn`` this state belongs to.
        drawn: table index -> arrays of drawn ids (repeats count).
        gone: table index -> arrays of ids evicted since the last fold.
        prios: table index -> priority updates, in LSN order.
        total: pending ids of all kinds, what `should_fold` compares.
    """

    lsn: int
    drawn: Mapping[int, tuple[np.ndarray, ...]] = field(default_factory=dict)
    gone: Mapping[int, tuple[np.ndarray, ...]] = field(default_factory=dict)
    prios: Mapping[int, tuple[PrioUpdates, ...]] = field(default_factory=dict)
    total: int = 0
    _sorted: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    _newest: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, compare=False, repr=False)
    _by_item: dict[int, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, compare=False, repr=False)

    @classmethod
    def read(cls, txn: lmdb.Transaction, db: Any, lsn: int) -> Pending:
        """The pending state stored in ``draws`` as seen by `txn` (whose applied LSN is lsn)."""

        drawn: dict[int, list[np.ndarray]] = {}
        gone: dict[int, list[np.ndarray]] = {}
        prios: dict[int, list[PrioUpdates]] = {}
        total = 0
        for key, value in txn.cursor(db=db):  # key order: table, then LSN order
            if len(key) != _LOG_KEY.size:
                raise ViewDamagedError("a 'draws' record has a key of the wrong size")
            table, _, kind = _LOG_KEY.unpack(key)
            if kind == _PRIO:
                upd = PrioUpdates.decode(value)
                prios.setdefault(table, []).append(upd)
                total += upd.ids.size
                continue
            if (len(value) - 1) % 8 or value[0] != _V or kind not in (_DRAWN, _GONE):
                raise ViewDamagedError("a 'draws' record has the wrong size or version")
            ids = np.frombuffer(value, "<u8", offset=1).astype(np.uint64)
            (drawn if kind == _DRAWN else gone).setdefault(table, []).append(ids)
            total += ids.size
        return cls(lsn, {t: tuple(p) for t, p in drawn.items()},
                   {t: tuple(p) for t, p in gone.items()},
                   {t: tuple(p) for t, p in prios.items()}, total)

    def with_new(self, lsn: int, drawn: Mapping[int, np.ndarray],
                 gone: Mapping[int, np.ndarray],
                 prios: Mapping[int, PrioUpdates] | None = None) -> Pending:
        """This state plus one transaction's changes (not written here)."""

        out_d, out_g, out_p = dict(self.drawn), dict(self.gone), dict(self.prios)
        total = self.total
        for src, out in ((drawn, out_d), (gone, out_g)):
            for t, ids in src.items():
                if ids.size:
                    out[t] = (*out.get(t, ()), ids)
                    total += ids.size
        for t, upd in (prios or {}).items():
            if upd.ids.size:
                out_p[t] = (*out_p.get(t, ()), upd)
                total += upd.ids.size
        return Pending(lsn, out_d, out_g, out_p, total)

    def should_fold(self, present_items: int, fold_min: int) -> bool:
        """Whether to fold now: enough pending that rewriting the touched chunks is cheap per
        change, and few enough that RAM and lookups stay small."""

        return self.total >= max(fold_min, present_items // 8)

    def draw_counts(self, table: int, ids: np.ndarray) -> np.ndarray:
        """Pending draws of each of `ids` (uint64, aligned with ids). A few ids: O(P log k)
        without caching; many: O(len(ids) log P) once the state's sorted draws are cached
        (O(P log P) the first time per state)."""

        ids = np.asarray(ids, np.uint64)
        srt = self._sorted.get(table)
        if srt is None:
            parts = self.drawn.get(table, ())
            pending = sum(p.size for p in parts)
            if not pending or not ids.size:
                return np.zeros(ids.size, np.uint64)
            if ids.size * 64 < pending:
                # A few ids (an eviction) against many draws: count the draws falling on them
                # instead of sorting every draw of a state that may change right after.
                keys, back = np.unique(ids, return_inverse=True)
                hits = np.zeros(keys.size, np.uint64)
                for part in parts:
                    pos, hit = _lookup(keys, part)
                    hits += np.bincount(pos[hit], minlength=keys.size).astype(np.uint64)
                return hits[back.reshape(-1)]
            srt = self._sorted[table] = np.sort(_concat(parts))
        if not srt.size or not ids.size:
            return np.zeros(ids.size, np.uint64)
        return (np.searchsorted(srt, ids, "right") - np.searchsorted(srt, ids, "left")).astype(
            np.uint64)

    def newest_priorities(self, table: int, ids: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each of `ids`: (has a pending update, its newest priority, its event time)."""

        ids = np.asarray(ids, np.uint64)
        parts = self.prios.get(table, ())
        found = np.zeros(ids.size, np.bool_)
        vals = np.zeros(ids.size, np.float64)
        ms = np.zeros(ids.size, np.int64)
        if not parts or not ids.size:
            return found, vals, ms
        newest = self._newest.get(table)
        if newest is None and ids.size * 64 < sum(p.ids.size for p in parts):
            # A few ids: only the updates that name them, newest last.
            keys = np.unique(ids)
            hit_parts = []
            for p in parts:
                _, hit = _lookup(keys, p.ids)
                if hit.any():
                    hit_parts.append(PrioUpdates(p.ids[hit], p.values[hit], p.ms[hit],
                                                 p.lsns[hit]))
            newest = _latest(tuple(hit_parts)) if hit_parts else (_EMPTY, vals[:0], ms[:0])
        elif newest is None:
            newest = self._newest[table] = _latest(parts)
        uids, uvals, ums = newest
        if uids.size:
            pos, found = _lookup(uids, ids)
            vals[found], ms[found] = uvals[pos[found]], ums[pos[found]]
        return found, vals, ms

    def update_lsns(self, table: int, item_id: int) -> list[int]:
        """LSNs of the pending priority updates of one item (the lineage index has the folded
        ones), ascending. O(log P) once this state's updates are sorted by id (O(P log P) the
        first time per state)."""

        idx = self._by_item.get(table)
        if idx is None:
            parts = self.prios.get(table, ())
            if not parts:
                return []
            ids = _concat(tuple(p.ids for p in parts))
            lsns = _concat(tuple(p.lsns for p in parts))
            order = np.argsort(ids, kind="stable")  # keeps LSN order within an id
            idx = self._by_item[table] = (ids[order], lsns[order])
        ids, lsns = idx
        key = np.uint64(item_id)
        return lsns[np.searchsorted(ids, key, "left"):np.searchsorted(ids, key, "right")].tolist()

    def put(self, txn: lmdb.Transaction, db: Any, lsn: int, drawn: Mapping[int, np.ndarray],
            gone: Mapping[int, np.ndarray], prios: Mapping[int, PrioUpdates]) -> None:
        """Write one transaction's changes to ``draws`` (keys never collide: one transaction
        ends at one LSN)."""

        for kind, src in ((_DRAWN, drawn), (_GONE, gone)):
            for t, ids in src.items():
                if ids.size:
                    txn.put(_LOG_KEY.pack(t, lsn, kind),
                            bytes([_V]) + np.ascontiguousarray(ids, "<u8").tobytes(), db=db)
        for t, upd in prios.items():
            if upd.ids.size:
                txn.put(_LOG_KEY.pack(t, lsn, _PRIO), upd.encode(), db=db)


def _chunks(txn: lmdb.Transaction, db: Any, table: int, which: np.ndarray, size: int,
            scan: bool) -> Iterator[tuple[int, bytes, np.ndarray]]:
    """(chunk number, value, positions into `which` of the ids in it) for each stored chunk
    that holds one of the ids; `scan` walks the table's chunks with a cursor instead of one
    lookup per chunk (for a whole table)."""

    order = np.argsort(which, kind="stable")
    srt = which[order]
    if scan:
        cur = txn.cursor(db=db)
        prefix = struct.pack(">I", table)
        found: Any = []
        if cur.set_range(prefix):
            found = ((k, v) for k, v in cur if k.startswith(prefix))
    else:
        keys = [_CHUNK_KEY.pack(table, c) for c in np.unique(which).tolist()]
        found = txn.cursor(db=db).getmulti(keys)
    for key, value in found:
        if len(value) != size or value[0] != _V:
            raise ViewDamagedError(f"a chunk record of {len(value)} bytes is damaged")
        c = _CHUNK_KEY.unpack(key)[1]
        lo, hi = np.searchsorted(srt, [c, c + 1])
        if hi > lo:
            yield c, value, order[lo:hi]


def sample_counts(txn: lmdb.Transaction, dbs: Mapping[str, Any], pending: Pending, table: int,
                  ids: np.ndarray, *, scan: bool = False) -> np.ndarray:
    """Times sampled (uint64) of present items `ids` of table index `table`: their counters
    plus their pending draws. `scan`: walk the table's chunks with one cursor (for most of
    a table) instead of one lookup per chunk. No read of ``item_meta`` (its count is 0)."""

    ids = np.asarray(ids, np.uint64)
    counts = pending.draw_counts(table, ids)
    if not ids.size:
        return counts
    which = (ids // np.uint64(CHUNK)).astype(np.int64)
    pos = (ids % np.uint64(CHUNK)).astype(np.int64)
    for _, value, sel in _chunks(txn, dbs["sample_counts"], table, which, _COUNT_SIZE, scan):
        counts[sel] += np.frombuffer(value, "<u8", CHUNK, 1)[pos[sel]]
    return counts


def fill(txn: lmdb.Transaction, dbs: Mapping[str, Any], pending: Pending, table: int,
         metas: np.ndarray, *, scan: bool = False) -> None:
    """Set ``times_sampled``, ``priority`` and ``priority_ms`` of `metas` (writable META
    records of present items of table index `table`, read from ``item_meta`` in `txn`)."""

    if not metas.size:
        return
    ids = metas["item_id"].astype(np.uint64)
    which = (ids // np.uint64(CHUNK)).astype(np.int64)
    pos = (ids % np.uint64(CHUNK)).astype(np.int64)
    metas["times_sampled"] = sample_counts(txn, dbs, pending, table, ids, scan=scan)
    prio, ms = metas["priority"].copy(), metas["priority_ms"].copy()
    for _, value, sel in _chunks(txn, dbs["priority_chunks"], table, which, _PRIO_SIZE, scan):
        p = np.frombuffer(value, "<f8", CHUNK, 1)[pos[sel]]
        t = np.frombuffer(value, "<i8", CHUNK, 1 + 8 * CHUNK)[pos[sel]]
        have = ~np.isnan(p)
        prio[sel[have]], ms[sel[have]] = p[have], t[have]
    found, vals, times = pending.newest_priorities(table, ids)
    prio[found], ms[found] = vals[found], times[found]
    metas["priority"], metas["priority_ms"] = prio, ms


def fold(txn: lmdb.Transaction, dbs: Mapping[str, Any], pending: Pending) -> None:
    """Fold everything pending into the chunk arrays and empty ``draws``: add draws to their
    counters, set the newest priorities, clear the entries of gone ids, drop chunks left
    empty. Cost: O(pending) plus one read and write of each touched chunk, in key order."""

    for table in sorted(set(pending.drawn) | set(pending.gone) | set(pending.prios)):
        gone = np.unique(_concat(pending.gone.get(table, ())))
        drawn = _concat(pending.drawn.get(table, ()))
        if gone.size and drawn.size:
            drawn = drawn[~np.isin(drawn, gone)]
        uids, add = np.unique(drawn, return_counts=True)
        _fold_counts(txn, dbs["sample_counts"], table, uids, add.astype(np.uint64), gone)
        parts = pending.prios.get(table, ())
        pids, pvals, pms = _latest(parts) if parts else (_EMPTY, np.empty(0), np.empty(0, np.int64))
        if gone.size and pids.size:
            keep = ~np.isin(pids, gone)
            pids, pvals, pms = pids[keep], pvals[keep], pms[keep]
        _fold_priorities(txn, dbs["priority_chunks"], table, pids, pvals, pms, gone)
        if parts:  # every update, of gone items too: their lineage stays
            _index_updates(txn, dbs["item_events"], PrioUpdates.join(parts))
    txn.drop(dbs["draws"], delete=False)


def _index_updates(txn: lmdb.Transaction, db: Any, updates: PrioUpdates) -> None:
    """Lineage index entries ``u64 item id, u64 LSN`` (`replaybuf.lineage_index`) of priority
    updates, in key order."""

    keys = np.empty(updates.ids.size, [("id", ">u8"), ("lsn", ">u8")])
    order = np.lexsort((updates.lsns, updates.ids))
    keys["id"], keys["lsn"] = updates.ids[order], updates.lsns[order]
    raw = keys.view(np.dtype((np.void, 16))).tolist()
    txn.cursor(db=db).putmulti(list(zip(raw, itertools.repeat(b""))))


def _split_by_chunk(chunks: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """For sorted `ids`: their in-chunk positions and, per chunk of `chunks`, the [start, end)
    range of ids in it."""

    of = (ids // np.uint64(CHUNK)).astype(np.int64)
    return ((ids % np.uint64(CHUNK)).astype(np.int64), np.searchsorted(of, chunks),
            np.searchsorted(of, chunks, "right"))


def _touched(uids: np.ndarray, gone: np.ndarray) -> np.ndarray:
    return np.unique(np.concatenate([uids // np.uint64(CHUNK),
                                     gone // np.uint64(CHUNK)])).astype(np.int64)


def _rewrite_chunks(txn: lmdb.Transaction, db: Any, table: int, uids: np.ndarray,
                    gone: np.ndarray, size: int,
                    update: Callable[[bytes | None, slice, np.ndarray, np.ndarray], bytes | None],
                    ) -> None:
    """Rewrite each chunk that sorted `uids` or `gone` fall in, in key order: ``update(old
    value or None, slice of uids in the chunk, their positions, positions of gone ids)``
    returns the new value, or None to delete the chunk."""

    chunks = _touched(uids, gone)
    if not chunks.size:
        return
    current = {c: v for c, v, _ in _chunks(txn, db, table, chunks, size, False)}
    d_pos, d_at, d_end = _split_by_chunk(chunks, uids)
    g_pos, g_at, g_end = _split_by_chunk(chunks, gone)
    puts: list[tuple[bytes, bytes]] = []
    for i, c in enumerate(chunks.tolist()):
        old = current.get(c)
        sel = slice(d_at[i], d_end[i])
        new = update(old, sel, d_pos[sel], g_pos[g_at[i]:g_end[i]])
        key = _CHUNK_KEY.pack(table, c)
        if new is not None:
            puts.append((key, new))
        elif old is not None:
            txn.delete(key, db=db)
    if puts:
        txn.cursor(db=db).putmulti(puts)


def _fold_counts(txn: lmdb.Transaction, db: Any, table: int, uids: np.ndarray,
                 add: np.ndarray, gone: np.ndarray) -> None:
    def update(old: bytes | None, sel: slice, pos: np.ndarray, gpos: np.ndarray
               ) -> bytes | None:
        counts = (np.frombuffer(old, "<u8", CHUNK, 1).copy() if old is not None
                  else np.zeros(CHUNK, np.uint64))
        counts[pos] += add[sel]
        counts[gpos] = 0
        return bytes([_V]) + counts.astype("<u8").tobytes() if counts.any() else None

    _rewrite_chunks(txn, db, table, uids, gone, _COUNT_SIZE, update)


def _fold_priorities(txn: lmdb.Transaction, db: Any, table: int, uids: np.ndarray,
                     vals: np.ndarray, ms: np.ndarray, gone: np.ndarray) -> None:
    def update(old: bytes | None, sel: slice, pos: np.ndarray, gpos: np.ndarray
               ) -> bytes | None:
        if old is not None:
            p = np.frombuffer(old, "<f8", CHUNK, 1).copy()
            t = np.frombuffer(old, "<i8", CHUNK, 1 + 8 * CHUNK).copy()
        else:
            p, t = np.full(CHUNK, np.nan), np.zeros(CHUNK, np.int64)
        p[pos], t[pos] = vals[sel], ms[sel]
        p[gpos] = np.nan
        if np.isnan(p).all():
            return None
        return bytes([_V]) + p.astype("<f8").tobytes() + t.astype("<i8").tobytes()

    _rewrite_chunks(txn, db, table, uids, gone, _PRIO_SIZE, update)
