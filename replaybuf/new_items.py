"""The LMDB records of appended items, gathered over many events and written in bulk.

An append writes per item a payload (``items``), a metadata record (``item_meta``) and, when
it has strings, an ``item_strings`` record and a ``by_request`` entry; and per run of
consecutive ids with one episode (model version) an entry in ``by_episode``
(``by_model_version``), see `index_runs`. Written event by event, each is a separate ``putmulti`` of
a few hundred records, and the index entries land all over their databases. `NewItems`
instead keeps them until the write transaction needs them (`replaybuf.applier.Batch` flushes
before any event that reads item records, and at its end) or until `FLUSH_ITEMS` are pending,
then writes each database in one ``putmulti``: payloads, metadata and strings in id order with
LMDB's append mode (ids only grow), index entries sorted by key, also in append mode when they
all sort past the database's last key (e.g. a rebuild, or episodes that only grow). The
records and the transaction are the same as written one event at a time; only the order of
the puts differs.

Not thread-safe: it lives inside one write transaction.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import lmdb
import numpy as np

from replaybuf.errors import ViewDamagedError

__all__ = ["NewItems", "INDEX_KEY", "RUN_VALUE", "FLUSH_ITEMS", "records", "index_runs"]

#: Key of ``by_episode`` / ``by_model_version``: u32 table, u64 value, u64 first item id of a
#: run (big-endian, so keys sort numerically); the value is `RUN_VALUE`: version byte, u32
#: number of consecutive ids from the first. One append's items with one episode (or model
#: version) and consecutive ids are one entry, not one per item.
INDEX_KEY = np.dtype([("table", ">u4"), ("value", ">u8"), ("id", ">u8")])
RUN_VALUE = np.dtype([("v", "u1"), ("count", "<u4")])
_V = 1
#: Pending items that trigger a flush (bounds the memory held by a large transaction).
FLUSH_ITEMS = 1 << 16
_INDEX_DBS = ("by_episode", "by_model_version")


#: Records at least this large are handed to LMDB as views of their array, not as bytes
#: copies: a W3 row (56 KiB) is then copied once, into LMDB's pages, instead of twice.
#: Smaller ones are cheaper as one ``tolist`` than as many slices.
VIEW_MIN_BYTES = 4096


def records(arr: np.ndarray) -> list[bytes] | list[memoryview]:
    """One value per record of a structured array: bytes (one copy) for small records,
    memoryviews of the contiguous array (no copy; valid while it is) from `VIEW_MIN_BYTES`."""

    a = np.ascontiguousarray(arr)
    size = a.itemsize
    if size >= VIEW_MIN_BYTES:
        flat = memoryview(a.reshape(-1).view(np.uint8))
        return [flat[i:i + size] for i in range(0, a.nbytes, size)]
    return a.view(np.dtype((np.void, size))).tolist()


def index_runs(tables: np.ndarray, appends: np.ndarray, ids: np.ndarray, values: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Index entries of items (their table, append ordinal, id and indexed value): the runs
    of consecutive ids of one append sharing a value, as (`INDEX_KEY` records, `RUN_VALUE`
    records) in key order. A run never spans two appends, so the entries are a function of
    the log, not of how appends were batched."""

    t, a, v, i = tables, appends, values, ids
    # In append order with ascending ids (as `NewItems` has them), the consecutive ids of an
    # append are next to each other, so its runs are found in place; else sort first.
    if not ((a[1:] > a[:-1]) | ((a[1:] == a[:-1]) & (i[1:] > i[:-1]))).all():
        order = np.lexsort((ids, values, appends))
        t, a, v, i = tables[order], appends[order], values[order], ids[order]
    brk = np.ones(i.size, np.bool_)
    brk[1:] = (a[1:] != a[:-1]) | (v[1:] != v[:-1]) | (i[1:] != i[:-1] + np.uint64(1))
    starts = np.flatnonzero(brk)
    counts = np.diff(np.append(starts, i.size))
    t, v, i = t[starts], v[starts], i[starts]
    order = np.lexsort((i, v, t))
    keys = np.empty(starts.size, INDEX_KEY)
    keys["table"], keys["value"], keys["id"] = t[order], v[order], i[order]
    runs = np.empty(starts.size, RUN_VALUE)
    runs["v"], runs["count"] = _V, counts[order]
    return keys, runs


def _records_of(arrays: Iterator[np.ndarray]) -> list[Any]:
    """`records` of several arrays, as one list."""

    return list(itertools.chain.from_iterable(records(a) for a in arrays))


def _key_order(keys: list[bytes]) -> list[bytes]:
    return keys if all(a < b for a, b in zip(keys, keys[1:])) else sorted(keys)


class NewItems:
    """Records of appended items not yet written; see the module docstring."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]) -> None:
        self._txn = txn
        self._dbs = dbs
        # per `add`: table, ids, payload rows, META records, episode ids, model versions
        self._parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                np.ndarray]] = []
        self._sizes: list[int] = []  # items per append, over all parts
        self._tables: list[int] = []  # table per append
        self._n = 0
        self._strings: list[tuple[bytes, bytes]] = []
        self._by_request: list[bytes] = []

    def __len__(self) -> int:
        return self._n

    def add(self, ids: np.ndarray, rows: np.ndarray, metas: np.ndarray, table: int,
            episode_ids: np.ndarray, model_versions_biased: np.ndarray,
            sizes: list[int] | None = None) -> None:
        """Items of one append, or of several consecutive appends of one table (`sizes`:
        the items of each, in order): ids (ascending, past every id in the view), payload
        rows, META records and the values of the two numeric indexes."""

        self._parts.append((table, np.asarray(ids, np.uint64), rows, metas,
                            np.asarray(episode_ids, np.uint64),
                            np.asarray(model_versions_biased, np.uint64)))
        sizes = [ids.size] if sizes is None else sizes
        if sum(sizes) != ids.size:
            raise ValueError(f"appends of {sizes} items but {ids.size} ids")
        self._sizes += sizes
        self._tables += [table] * len(sizes)
        self._n += ids.size

    def add_strings(self, strings: list[tuple[bytes, bytes]], by_request: list[bytes]) -> None:
        """``item_strings`` records (ascending keys) and ``by_request`` keys of one append."""

        self._strings += strings
        self._by_request += by_request

    def flush(self) -> None:
        """Write everything pending into the transaction.

        Raises:
            ViewDamagedError: an item id, its strings or an index entry already exists.
        """

        if not self._n:
            return
        parts = self._parts
        ids = np.concatenate([p[1] for p in parts])
        keys = np.ascontiguousarray(ids, ">u8").view("V8").tolist()  # big-endian: id order
        # Each append's records straight from its arrays: no joined copy of them all.
        rows = _records_of(p[2] for p in parts)
        # Append mode, always: every id in the view is below these, and a key that is not
        # past the last one fails (is not added) instead of overwriting a record.
        added = self._put("items", keys, rows, True)
        added += self._put("item_meta", keys, _records_of(p[3] for p in parts),
                           True)
        if added != 2 * ids.size:
            raise ViewDamagedError(
                f"appended items {int(ids[0])}.. already exist in the view; the view does not "
                "match the log")
        if self._strings and self._put("item_strings", [k for k, _ in self._strings],
                                       [v for _, v in self._strings], True) != len(self._strings):
            raise ViewDamagedError("strings of appended items already exist in the view")
        tables = np.repeat(np.array(self._tables, np.uint32), self._sizes)
        appends = np.repeat(np.arange(len(self._sizes)), self._sizes)
        for i, db in enumerate(_INDEX_DBS):
            values = np.concatenate([p[4 + i] for p in parts])
            index_keys, runs = index_runs(tables, appends, ids, values)
            self._put(db, records(index_keys), records(runs))
        if self._by_request:
            self._put("by_request", _key_order(self._by_request))
        self.__init__(self._txn, self._dbs)  # type: ignore[misc]

    def _put(self, db: str, keys: list[bytes], values: list[bytes] | None = None,
             append: bool = False) -> int:
        """putmulti of keys (ascending) and values (default empty); in append mode when
        asked or when all sort past the database's last key. Returns how many were added."""

        cur = self._txn.cursor(db=self._dbs[db])
        if not append:
            append = not cur.last() or cur.key() < keys[0]
        # A lazy zip, not a list: no million live tuples for the garbage collector to walk.
        pairs = zip(keys, values if values is not None else itertools.repeat(b""))
        return cur.putmulti(pairs, append=append)[1]
