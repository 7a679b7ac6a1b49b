"""How the view stores how often each item was sampled, without a random write per draw.

Sampling is the most frequent change: every batch of B draws names B items spread over the
whole table. Rewriting each drawn item's ``item_meta`` record dirtied one LMDB page per draw
(a 256-draw batch cost a ~1 MB commit). Instead, counts live in two databases:

* ``draws``: one value per table per write transaction, the ids drawn in it (and the ids
  evicted in it), keyed by table, LSN and kind. Appending it touches one page.
* ``sample_counts``: dense counters, ``CHUNK`` items per value (item id // CHUNK), folded
  from ``draws`` when enough draws are pending (`Pending.should_fold`). A fold rewrites each
  touched chunk once, in key order, and empties ``draws``.

An item's times sampled is its chunk counter plus its pending draws (`times_sampled`). A
present item's ``item_meta.times_sampled`` stays 0 and readers fill the field in (`fill`); on
eviction the applier writes the final count into the ``evicted_meta`` record, and the evicted
id is recorded as *gone* so that the next fold clears its counter (and drops chunks that hold
no count any more). So the counters are garbage-collected with the items.

`Pending` mirrors ``draws`` in RAM for the committed state at one ``applied_lsn``; it is
immutable, and the view swaps in a new one after each commit, so readers on other threads may
use the one they hold. A read transaction at another LSN reads ``draws`` itself (`Pending.read`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lmdb
import numpy as np

from replaybuf.errors import ViewDamagedError

__all__ = ["CHUNK", "FOLD_MIN_DRAWS", "Pending", "fold", "times_sampled", "table_counts"]

#: Items per ``sample_counts`` value (uint64 counters, so 8 KiB per value).
CHUNK = 1024
#: Fold when at least this many draws are pending (or 1/8 of the present items, if more).
FOLD_MIN_DRAWS = 1 << 16
_DRAWN, _GONE = 0, 1
_DRAWS_KEY = struct.Struct(">IQB")  # table, LSN of the transaction's last event, kind
_CHUNK_KEY = struct.Struct(">IQ")  # table, item id // CHUNK
_V = 1
_EMPTY = np.empty(0, np.uint64)


def _concat(parts: tuple[np.ndarray, ...]) -> np.ndarray:
    if not parts:
        return _EMPTY
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@dataclass(frozen=True)
class Pending:
    """Draws (and evictions) written to ``draws`` but not yet folded, as of ``lsn``.

    Attributes:
        lsn: the view's ``applied_lsn`` this state belongs to.
        drawn: table index -> arrays of drawn ids (repeats count).
        gone: table index -> arrays of ids evicted since the last fold.
        total: drawn plus gone ids, what `should_fold` compares.
    """

    lsn: int
    drawn: Mapping[int, tuple[np.ndarray, ...]] = field(default_factory=dict)
    gone: Mapping[int, tuple[np.ndarray, ...]] = field(default_factory=dict)
    total: int = 0
    _sorted: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def read(cls, txn: lmdb.Transaction, db: Any, lsn: int) -> Pending:
        """The pending state stored in ``draws`` as seen by `txn` (whose applied LSN is lsn)."""

        drawn: dict[int, list[np.ndarray]] = {}
        gone: dict[int, list[np.ndarray]] = {}
        total = 0
        for key, value in txn.cursor(db=db):
            if len(key) != _DRAWS_KEY.size or (len(value) - 1) % 8 or value[0] != _V:
                raise ViewDamagedError("a 'draws' record has the wrong size or version")
            table, _, kind = _DRAWS_KEY.unpack(key)
            ids = np.frombuffer(value, "<u8", offset=1).astype(np.uint64)
            (drawn if kind == _DRAWN else gone).setdefault(table, []).append(ids)
            total += ids.size
        return cls(lsn, {t: tuple(p) for t, p in drawn.items()},
                   {t: tuple(p) for t, p in gone.items()}, total)

    def with_new(self, lsn: int, drawn: Mapping[int, np.ndarray],
                 gone: Mapping[int, np.ndarray]) -> Pending:
        """This state plus one transaction's draws and evictions (not written here)."""

        out_d = dict(self.drawn)
        out_g = dict(self.gone)
        total = self.total
        for src, out in ((drawn, out_d), (gone, out_g)):
            for t, ids in src.items():
                if ids.size:
                    out[t] = (*out.get(t, ()), ids)
                    total += ids.size
        return Pending(lsn, out_d, out_g, total)

    def should_fold(self, present_items: int, fold_min: int) -> bool:
        """Whether to fold now: enough pending that rewriting the touched chunks is cheap per
        draw, and few enough that RAM and lookups stay small."""

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
                    pos = np.minimum(np.searchsorted(keys, part), keys.size - 1)
                    hit = keys[pos] == part
                    hits += np.bincount(pos[hit], minlength=keys.size).astype(np.uint64)
                return hits[back.reshape(-1)]
            srt = self._sorted[table] = np.sort(_concat(parts))
        if not srt.size or not ids.size:
            return np.zeros(ids.size, np.uint64)
        return (np.searchsorted(srt, ids, "right") - np.searchsorted(srt, ids, "left")).astype(
            np.uint64)

    def put(self, txn: lmdb.Transaction, db: Any, lsn: int, drawn: Mapping[int, np.ndarray],
            gone: Mapping[int, np.ndarray]) -> None:
        """Write one transaction's draws and evictions to ``draws`` (keys never collide: one
        transaction ends at one LSN)."""

        for kind, src in ((_DRAWN, drawn), (_GONE, gone)):
            for t, ids in src.items():
                if ids.size:
                    txn.put(_DRAWS_KEY.pack(t, lsn, kind),
                            bytes([_V]) + np.ascontiguousarray(ids, "<u8").tobytes(), db=db)


def _read_chunks(txn: lmdb.Transaction, db: Any, table: int,
                 chunks: np.ndarray) -> dict[int, np.ndarray]:
    keys = [_CHUNK_KEY.pack(table, c) for c in chunks.tolist()]
    out: dict[int, np.ndarray] = {}
    for key, value in txn.cursor(db=db).getmulti(keys):
        if len(value) != 1 + 8 * CHUNK or value[0] != _V:
            raise ViewDamagedError("a 'sample_counts' record has the wrong size or version")
        out[_CHUNK_KEY.unpack(key)[1]] = np.frombuffer(value, "<u8", offset=1)
    return out


def times_sampled(txn: lmdb.Transaction, dbs: Mapping[str, Any], pending: Pending, table: int,
                  ids: np.ndarray) -> np.ndarray:
    """Times sampled of present items `ids` of table index `table` (uint64, aligned)."""

    ids = np.asarray(ids, np.uint64)
    out = pending.draw_counts(table, ids)
    if not ids.size:
        return out
    which = ids // np.uint64(CHUNK)
    found = _read_chunks(txn, dbs["sample_counts"], table, np.unique(which))
    if found:
        order = np.argsort(which, kind="stable")
        srt = which[order]
        pos = (ids % np.uint64(CHUNK)).astype(np.int64)
        for c, counts in found.items():
            lo, hi = np.searchsorted(srt, [c, c + 1])
            sel = order[lo:hi]
            out[sel] += counts[pos[sel]]
    return out


def table_counts(txn: lmdb.Transaction, dbs: Mapping[str, Any], pending: Pending,
                 table: int, ids: np.ndarray) -> np.ndarray:
    """Like `times_sampled` for all (sorted) present ids of a table at once: one cursor scan of
    the table's chunks instead of a lookup per chunk. Used on open."""

    ids = np.asarray(ids, np.uint64)
    out = pending.draw_counts(table, ids)
    cur = txn.cursor(db=dbs["sample_counts"])
    prefix = struct.pack(">I", table)
    if not ids.size or not cur.set_range(prefix):
        return out
    which = (ids // np.uint64(CHUNK)).astype(np.int64)
    pos = (ids % np.uint64(CHUNK)).astype(np.int64)
    for key, value in cur:
        if not key.startswith(prefix):
            break
        c = _CHUNK_KEY.unpack(key)[1]
        lo, hi = np.searchsorted(which, [c, c + 1])
        if hi > lo:
            if len(value) != 1 + 8 * CHUNK or value[0] != _V:
                raise ViewDamagedError("a 'sample_counts' record has the wrong size or version")
            out[lo:hi] += np.frombuffer(value, "<u8", offset=1)[pos[lo:hi]]
    return out


def fold(txn: lmdb.Transaction, dbs: Mapping[str, Any], pending: Pending) -> None:
    """Add every pending draw to its chunk counter, clear the counters of gone ids, drop
    chunks left all zero, and empty ``draws``. Cost: O(pending) plus one read and write of
    each touched chunk (8 KiB), in key order."""

    db = dbs["sample_counts"]
    for table in sorted(set(pending.drawn) | set(pending.gone)):
        drawn = _concat(pending.drawn.get(table, ()))
        gone = np.unique(_concat(pending.gone.get(table, ())))
        if gone.size and drawn.size:
            drawn = drawn[~np.isin(drawn, gone, assume_unique=False)]
        uids, add = np.unique(drawn, return_counts=True)
        which = np.concatenate([uids // np.uint64(CHUNK), gone // np.uint64(CHUNK)])
        chunks = np.unique(which)
        if not chunks.size:
            continue
        current = _read_chunks(txn, db, table, chunks)
        d_chunk = uids // np.uint64(CHUNK)  # both sorted: split by chunk with searchsorted
        g_chunk = gone // np.uint64(CHUNK)
        d_pos = (uids % np.uint64(CHUNK)).astype(np.int64)
        g_pos = (gone % np.uint64(CHUNK)).astype(np.int64)
        d_at = np.searchsorted(d_chunk, chunks)
        d_end = np.searchsorted(d_chunk, chunks, "right")
        g_at = np.searchsorted(g_chunk, chunks)
        g_end = np.searchsorted(g_chunk, chunks, "right")
        puts: list[tuple[bytes, bytes]] = []
        for i, c in enumerate(chunks.tolist()):
            counts = current.get(c)
            counts = counts.copy() if counts is not None else np.zeros(CHUNK, np.uint64)
            counts[d_pos[d_at[i]:d_end[i]]] += add[d_at[i]:d_end[i]].astype(np.uint64)
            counts[g_pos[g_at[i]:g_end[i]]] = 0
            key = _CHUNK_KEY.pack(table, c)
            if counts.any():
                puts.append((key, bytes([_V]) + counts.astype("<u8").tobytes()))
            elif c in current:
                txn.delete(key, db=db)
        if puts:
            txn.cursor(db=db).putmulti(puts)
    txn.drop(dbs["draws"], delete=False)
