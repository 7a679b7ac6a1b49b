"""Snapshots: a table's items as numpy columns at one LSN, the input of every job.

Three builders give the same snapshot of the same state:

* `from_view`: one LMDB read transaction over ``item_meta`` (plus ``item_strings`` for request
  ids, ``items`` only when payload checks or features are needed), scanned in chunks of
  `CHUNK_ITEMS` into preallocated columns, so peak memory is the output columns (72 bytes per
  item, plus 1 with payload checks and 8 per feature element) plus one chunk.
* `from_events`: replays ``(lsn, event)`` pairs with the applier's rules (absent ids skipped,
  the last of repeated ids wins); used online, where the events come from the server's
  Subscribe stream when the job needs append LSNs (drift windows by LSN) or priority times
  (``low_priority``), or the server has no Export, and in tests as a cross-check of the view.
* `from_export`: the server's Export stream (online runs); see its docstring for what it
  lacks (append LSNs, priority times).

Thread-safety: builders share no state; a `Snapshot` is immutable by convention.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from replaybuf.applier import META_DTYPE, decode_strings, item_keys, row_dtype
from replaybuf.errors import TableNotFoundError, ViewDamagedError
from replaybuf.table_config import TableConfig
from replaybuf.tensors import from_tensor
from replaybuf.v1 import events_pb2

__all__ = ["Snapshot", "from_view", "from_events", "from_export", "CHUNK_ITEMS", "nonfinite_rows"]

#: Items per LMDB scan chunk. Each chunk's cursor walk holds the GIL (a few ms at this size);
#: the scan yields it between chunks, so threads sampling beside a job wait little.
CHUNK_ITEMS = 16_384

_COLS = {
    "ids": np.uint64, "priority": np.float64, "times_sampled": np.uint64, "reward": np.float64,
    "model_version": np.int64, "episode": np.uint64, "timestamp_ms": np.int64,
    "append_lsn": np.uint64, "priority_ms": np.int64,
}
_META = {"ids": "item_id", "episode": "episode_id"}


@dataclass
class Snapshot:
    """Present items of one table as of `lsn`, in item id order (ids increase with appends).

    ``priority_ms`` is the event time (ms since the epoch) of the last change of each item's
    priority: its ``ItemsAppended``, then each ``PrioritiesUpdated`` naming it (even one that
    sets the same value). It is None only in a snapshot of an Export stream, which does not
    carry it (`from_export`).

    ``request_id`` is filled when asked for, ``nonfinite`` (NaN/inf in any float field of
    the payload) and ``features`` (float payload fields, as float64 ``(n, k)``) likewise.
    """

    table: str
    lsn: int
    config: TableConfig
    ids: np.ndarray
    priority: np.ndarray
    times_sampled: np.ndarray
    reward: np.ndarray
    model_version: np.ndarray
    episode: np.ndarray
    timestamp_ms: np.ndarray
    append_lsn: np.ndarray
    priority_ms: np.ndarray | None = None
    request_id: np.ndarray | None = None
    nonfinite: np.ndarray | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ids.size)

    def columns(self) -> dict[str, np.ndarray]:
        """The per-item columns this snapshot has (``priority_ms`` left out when None)."""

        return {k: getattr(self, k) for k in _COLS if getattr(self, k) is not None}


def nonfinite_rows(rows: np.ndarray | dict[str, np.ndarray], config: TableConfig) -> np.ndarray:
    """Per item: does any float field other than the reward hold NaN or inf. (The reward is
    judged by its current value, `Snapshot.reward`, so that a correction can fix it.)"""

    n = len(rows[config.signature[0].name]) if config.signature else 0
    bad = np.zeros(n, bool)
    skip = config.reward_field if config.has_reward else None
    for spec in config.signature:
        col = np.asarray(rows[spec.name])
        if col.dtype.kind in "fc" and spec.name != skip:
            bad |= ~np.isfinite(col.reshape(n, -1)).all(axis=1)
    return bad


def _feature(col: np.ndarray) -> np.ndarray:
    col = np.asarray(col, dtype=np.float64)
    return col.reshape(col.shape[0], -1)


def _progress(total: int, desc: str, enabled: bool):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, leave=False)


def _assemble(table: str, lsn: int, cfg: TableConfig, parts: dict[str, list[np.ndarray]],
              reqs: list[str] | None, bad: list[np.ndarray] | None,
              fparts: dict[str, list[np.ndarray]]) -> Snapshot:
    """One `Snapshot` from per-chunk column parts (``reqs``/``bad`` None when not asked for)."""

    cols = {k: (np.concatenate(v) if v else np.empty(0, _COLS[k])) for k, v in parts.items()}
    snap = Snapshot(table, lsn, cfg, **cols)
    if reqs is not None:
        snap.request_id = np.asarray(reqs, dtype=object)
    if bad is not None:
        snap.nonfinite = np.concatenate(bad) if bad else np.zeros(0, bool)
    for f, chunks in fparts.items():
        snap.features[f] = np.concatenate(chunks) if chunks else np.zeros((0, 1))
    return snap


def from_view(view, table: str, *, request_ids: bool = False,  # type: ignore[no-untyped-def]
              payload: bool = False, features: Sequence[str] = (),
              progress: bool = False) -> Snapshot:
    """Snapshot `table` from a `replaybuf.view.View` in one consistent read transaction.

    Args:
        request_ids: also read each item's inference request id.
        payload: also read payloads to fill ``nonfinite``.
        features: float signature fields to return in ``features``.
        progress: show a tqdm progress bar.

    Cost: one cursor walk of ``item_meta`` (and of ``items`` when payloads are needed) in
    chunks of `CHUNK_ITEMS`, no Python work per item except for request ids (one lookup
    each). Memory: the output columns plus one chunk (module docstring).
    """

    rec = next((r for r in view.tables() if r.name == table), None)
    if rec is None:
        raise TableNotFoundError(f"table {table!r} does not exist in view {view.path}")
    cfg, idx = rec.config, rec.index
    feats = [f for f in features if cfg.field(f) is not None]
    need_rows = payload or bool(feats)
    dt = row_dtype(cfg)
    reqs: list[str] = []
    with view.reading() as (txn, dbs):
        raw_lsn = txn.get(b"applied_lsn", db=dbs["meta"])
        lsn = int.from_bytes(bytes(raw_lsn), "big") if raw_lsn else 0
        total = txn.stat(dbs["item_meta"])["entries"]  # every table's items: an upper bound
        cols = {k: np.empty(total, t) for k, t in _COLS.items()}
        bad = np.empty(total if payload else 0, bool)
        fcols = {f: np.empty((total, _feature_width(cfg, f))) for f in feats}
        n = 0
        meta_cur = txn.cursor(db=dbs["item_meta"]).iternext(keys=False)
        # ``items`` holds the same keys as ``item_meta`` (written and deleted together), so a
        # second cursor walks it in step: no lookup per item.
        row_cur = txn.cursor(db=dbs["items"]).iternext(keys=False) if need_rows else None
        with _progress(total, f"scan {table}", progress) as bar:
            while True:
                # Joined in C (islice + join): no Python work per item.
                raw = b"".join(islice(meta_cur, CHUNK_ITEMS))
                if not raw:
                    break
                if len(raw) % META_DTYPE.itemsize:
                    raise ViewDamagedError("item_meta holds a record of the wrong size")
                metas = np.frombuffer(raw, META_DTYPE)
                bar.update(metas.size)
                mine = metas["table"] == idx
                rows = _rows(row_cur, mine, dt) if row_cur is not None else None
                metas = metas[mine]  # a writable copy (fill_hot writes into it)
                m = metas.size
                if m:
                    view.fill_hot(txn, metas)  # sample counts and priorities live apart (hot_meta)
                    s = slice(n, n + m)
                    for k in _COLS:
                        cols[k][s] = metas[_META.get(k, k)]
                    if request_ids:
                        keys = item_keys(metas["item_id"])
                        found = dict(txn.cursor(db=dbs["item_strings"]).getmulti(keys))
                        reqs.extend(decode_strings(found[k])[0] if k in found else ""
                                    for k in keys)
                    if rows is not None:
                        if payload:
                            bad[s] = nonfinite_rows(rows, cfg)
                        for f in feats:
                            fcols[f][s] = _feature(rows[f])
                    n += m
                time.sleep(0)  # let other threads (learners sampling) take the GIL

    def trim(a: np.ndarray) -> np.ndarray:
        # To this table's items, one column at a time; no copy when it is the only table.
        return a if n == total else a[:n].copy()

    snap = Snapshot(table, lsn, cfg, **{k: trim(cols.pop(k)) for k in list(cols)})
    if request_ids:
        snap.request_id = np.asarray(reqs, dtype=object)
    if payload:
        snap.nonfinite = trim(bad)
    for f in feats:
        snap.features[f] = trim(fcols[f])
    return snap


def _feature_width(cfg: TableConfig, name: str) -> int:
    spec = cfg.field(name)
    assert spec is not None
    return int(np.prod(spec.shape, dtype=np.int64))


def _rows(cursor: Iterator[bytes], mine: np.ndarray, dt: np.dtype) -> np.ndarray:
    """The payload rows of the chunk's items of this table (`mine`), read from a cursor over
    ``items`` that is in step with the ``item_meta`` cursor."""

    if mine.all():
        raw = b"".join(islice(cursor, mine.size))
    else:
        vals = list(islice(cursor, mine.size))
        sel = np.flatnonzero(mine).tolist()
        raw = b"".join([vals[i] for i in sel])
    if len(raw) != int(mine.sum()) * dt.itemsize:
        raise ViewDamagedError("items and item_meta of the view disagree (payload sizes)")
    return np.frombuffer(raw, dt)


def from_export(messages: Iterable[object], table: str, *, request_ids: bool = False,
                payload: bool = False, features: Sequence[str] = ()) -> Snapshot:
    """Snapshot `table` from an Export stream (``service_pb2.ExportChunk`` messages, the last
    with the manifest). Equal to `from_view` at the manifest's LSN except: ``append_lsn`` is
    0 and ``priority_ms`` is None (the stream carries neither), and rewards come in the reward
    field's dtype (a correction to a float64 value is rounded to a float32 field).
    Memory: O(items)."""

    from replaybuf.export import chunk_from_proto

    parts: dict[str, list[np.ndarray]] = {k: [] for k in _COLS if k != "priority_ms"}
    reqs: list[str] = []
    bad: list[np.ndarray] = []
    fparts: dict[str, list[np.ndarray]] = {f: [] for f in features}
    chunks = []
    manifest = None
    for msg in messages:
        if msg.HasField("manifest"):  # type: ignore[attr-defined]
            manifest = msg.manifest  # type: ignore[attr-defined]
        if msg.item_ids:  # type: ignore[attr-defined]
            chunks.append(chunk_from_proto(msg))  # type: ignore[arg-type]
    if manifest is None:
        from replaybuf.errors import DataLossError

        raise DataLossError(f"Export of {table!r} ended without its manifest")
    cfg = TableConfig.from_proto(manifest.config)
    feats = [f for f in features if cfg.field(f) is not None]
    for c in chunks:
        n = len(c)
        lin = c.lineage
        cols = {"ids": c.ids, "priority": c.priorities, "times_sampled": c.times_sampled,
                "model_version": lin["model_version"], "episode": lin["episode_id"],
                "timestamp_ms": lin["timestamp_ms"], "append_lsn": np.zeros(n, np.uint64),
                "reward": (np.asarray(c.columns[cfg.reward_field], np.float64).reshape(n)
                           if cfg.has_reward else np.zeros(n))}
        for k, v in cols.items():
            parts[k].append(np.asarray(v).astype(_COLS[k]))
        if request_ids:
            reqs.extend(lin["request_id"] or [""] * n)
        if payload:
            bad.append(nonfinite_rows(c.columns, cfg))
        for f in feats:
            fparts[f].append(_feature(c.columns[f]))
    return _assemble(table, int(manifest.as_of_lsn), cfg, parts,
                     reqs if request_ids else None, bad if payload else None,
                     {f: fparts[f] for f in feats})


class _Store:
    """Growable columns of one table's items, located by (increasing) id."""

    def __init__(self, feats: Sequence[str]) -> None:
        self.n = 0
        self.cols = {k: np.empty(0, t) for k, t in _COLS.items()}
        self.present = np.empty(0, bool)
        self.nonfinite = np.empty(0, bool)
        self.req: list[str] = []
        self.feats: dict[str, list[np.ndarray]] = {f: [] for f in feats}

    def add(self, cols: dict[str, np.ndarray], bad: np.ndarray, reqs: list[str]) -> None:
        m = cols["ids"].size
        if self.n + m > self.present.size:
            cap = max(2 * self.present.size, self.n + m, 1024)
            for k in self.cols:
                grown = np.empty(cap, _COLS[k])
                grown[: self.n] = self.cols[k][: self.n]
                self.cols[k] = grown
            for name in ("present", "nonfinite"):
                grown = np.zeros(cap, bool)
                grown[: self.n] = getattr(self, name)[: self.n]
                setattr(self, name, grown)
        s = slice(self.n, self.n + m)
        for k, v in cols.items():
            self.cols[k][s] = v
        self.present[s] = True
        self.nonfinite[s] = bad
        self.req.extend(reqs)
        self.n += m

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the present items among ids: (mask over ids, positions)."""

        have = self.cols["ids"][: self.n]
        pos = np.searchsorted(have, ids)
        pos = np.minimum(pos, max(self.n - 1, 0))
        ok = (have[pos] == ids) & self.present[pos] if self.n else np.zeros(ids.size, bool)
        return ok, pos[ok]


def _last_wins(ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rev_u, rev_i = np.unique(ids[::-1], return_index=True)
    return rev_u, values[ids.size - 1 - rev_i]


def from_events(events: Iterable[tuple[int, events_pb2.Event]], table: str, *,
                request_ids: bool = False, payload: bool = False,
                features: Sequence[str] = ()) -> Snapshot:
    """Snapshot `table` by replaying ``(lsn, event)`` pairs from LSN 1 (every table's events,
    so that the snapshot's LSN is the last one given). Same result as `from_view` on a view
    that applied the same events. Memory: O(items of the table ever appended)."""

    cfg: TableConfig | None = None
    store: _Store | None = None
    lsn = 0
    for lsn, ev in events:
        kind = ev.WhichOneof("body")
        if kind == "table_created":
            if ev.table_created.config.name == table and cfg is None:
                cfg = TableConfig.from_proto(ev.table_created.config)
                store = _Store([f for f in features if cfg.field(f) is not None])
            continue
        if cfg is None or store is None or kind is None:
            continue
        body = getattr(ev, kind)
        if getattr(body, "table", None) != table:
            continue
        if kind == "items_appended":
            ids = np.asarray(body.item_ids, dtype=np.uint64)
            n = ids.size
            if not n:
                continue
            data = {c.name: from_tensor(c.tensor, name=c.name) for c in body.data.columns}
            lin = body.lineage
            cols = {"ids": ids, "priority": np.asarray(body.priorities, np.float64),
                    "times_sampled": np.zeros(n, np.uint64),
                    "append_lsn": np.full(n, lsn, np.uint64),
                    "priority_ms": np.full(n, ev.timestamp_ms, np.int64)}
            cols["reward"] = (np.asarray(data[cfg.reward_field]).astype(np.float64).reshape(n)
                              if cfg.has_reward else np.zeros(n))
            for name, key in (("model_version", "model_version"), ("episode_id", "episode"),
                              ("timestamp_ms", "timestamp_ms")):
                col = getattr(lin, name)  # 0, 1 or n entries (`Lineage.to_proto`)
                cols[key] = np.zeros(n, _COLS[key])
                if len(col):
                    cols[key][:] = np.asarray(col).astype(_COLS[key])
            reqs = list(lin.request_id)
            req = [reqs[min(i, len(reqs) - 1)] for i in range(n)] if reqs else [""] * n
            bad = nonfinite_rows(data, cfg) if payload else np.zeros(n, bool)
            store.add(cols, bad, req)
            for f in store.feats:
                store.feats[f].append(_feature(data[f]))
        elif kind == "items_sampled":
            ok, pos = store.locate(np.asarray(body.item_ids, dtype=np.uint64))
            np.add.at(store.cols["times_sampled"], pos, np.uint64(1))
        elif kind in ("priorities_updated", "rewards_corrected"):
            vals = body.priorities if kind == "priorities_updated" else body.rewards
            ids, v = _last_wins(np.asarray(body.item_ids, dtype=np.uint64),
                                np.asarray(vals, np.float64))
            ok, pos = store.locate(ids)
            if kind == "priorities_updated":
                store.cols["priority"][pos] = v[ok]
                store.cols["priority_ms"][pos] = ev.timestamp_ms
            else:
                store.cols["reward"][pos] = v[ok]
        elif kind == "items_evicted":
            ok, pos = store.locate(np.asarray(body.item_ids, dtype=np.uint64))
            store.present[pos] = False
    if cfg is None or store is None:
        raise TableNotFoundError(f"table {table!r} does not exist (no TableCreated event)")
    keep = store.present[: store.n]
    cols = {k: v[: store.n][keep].copy() for k, v in store.cols.items()}
    snap = Snapshot(table, lsn, cfg, **cols)
    if request_ids:
        snap.request_id = np.asarray(store.req, dtype=object)[keep]
    if payload:
        snap.nonfinite = store.nonfinite[: store.n][keep].copy()
    for f, chunks in store.feats.items():
        snap.features[f] = (np.concatenate(chunks) if chunks else np.zeros((0, 1)))[keep]
    return snap
