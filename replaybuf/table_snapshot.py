"""A file of the tables' RAM state written at a clean close, so that a reopen skips the view scan.

Opening the engine from the LMDB view scans every present item's two records (about 2 s per
million items with py-lmdb). At a clean close the engine writes instead what the scan would
produce, per table: item ids, slots, priorities, numeric lineage and the field columns, in id
order (`TableState`). The next open uses the file only when it belongs to exactly the view it
finds: the same view identity (a random id written when the view is created), log id, view
format, ``applied_lsn`` and ``next_item_id``, the same table configurations, and a CRC-32C of
the whole file that matches. Anything else (no file, a stale one left by a crash after more
writes, a torn or damaged one) falls back to the scan; the file is never trusted blindly.

Times sampled and the rate limiter's counters are not in the file: they are read from the view
(`replaybuf.hot_meta` keeps the counters without a per-item scan), because a draw changes them
in RAM before its ``ItemsSampled`` is logged. Everything in the file changes only by events
applied to the view, and the engine mirrors each view transaction into RAM under its writer
lock, so at a clean close RAM and view agree.

Format (version `SNAPSHOT_FORMAT`; little-endian):

=========================  ================================================================
``RBTABLES`` magic          8 bytes
u32 format, u32 H           the format version and the header's length
header                      H bytes of JSON: the identity above, and per table its index,
                            name, config digest, item count and array layout
arrays                      each 64-byte aligned, at the offsets the header gives
u32 CRC-32C                 of every byte before it
=========================  ================================================================

Written atomically: a temporary file, fsync (when the view is synced), rename, directory fsync.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
import numpy as np

from replaybuf.table_config import TableConfig

__all__ = ["TableState", "Gathered", "SnapshotKey", "older_columns", "SNAPSHOT_NAME",
           "SNAPSHOT_FORMAT", "write_snapshot", "read_snapshot", "remove_snapshot"]

_logger = logging.getLogger(__name__)

SNAPSHOT_NAME = "tables.snapshot"
SNAPSHOT_FORMAT = 1
_MAGIC = b"RBTABLES"
_HEAD = struct.Struct("<8sII")
_CRC = struct.Struct("<I")
_ALIGN = 64
_SCALARS = ("ids", "slots", "priorities")
_PIECE_BYTES = 16 << 20


@dataclass(frozen=True)
class Gathered:
    """``source[index]``, gathered piece by piece as it is written, so that writing a
    snapshot does not hold a second copy of the tables' columns."""

    source: np.ndarray
    index: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.index.size), *self.source.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.source.dtype

    @property
    def nbytes(self) -> int:
        return int(self.index.size) * int(self.source[:1].nbytes if self.source.size else 0)

    def pieces(self) -> Iterator[np.ndarray]:
        row = max(1, self.nbytes // max(1, self.index.size))
        step = max(1, _PIECE_BYTES // row)
        for i in range(0, self.index.size, step):
            yield self.source[self.index[i : i + step]]


def _pieces(arr: np.ndarray | Gathered) -> Iterator[np.ndarray]:
    if isinstance(arr, Gathered):
        yield from arr.pieces()
    else:
        yield np.ascontiguousarray(arr)


@dataclass
class TableState:
    """A table's present items in id order, as a view scan or a snapshot gives them.

    Attributes:
        ids: item ids, ascending (uint64).
        slots: their slots (int64).
        priorities: raw priorities (float64).
        lineage: numeric lineage columns by name (`replaybuf.table.LINEAGE_NUMERIC`).
        columns: field -> array of shape ``(n, *field shape)`` (or, to be written, a
            `Gathered`); the reward field holds the current (maybe corrected) reward.
    """

    ids: np.ndarray
    slots: np.ndarray
    priorities: np.ndarray
    lineage: dict[str, np.ndarray]
    columns: dict[str, Any]
    #: For a state read from a snapshot: the view's next item id when it was taken.
    next_item_id: int = 0

    def arrays(self) -> list[tuple[str, Any]]:
        """Every array with a unique name, in file order."""

        return ([(n, getattr(self, n)) for n in _SCALARS]
                + [(f"lineage.{n}", a) for n, a in self.lineage.items()]
                + [(f"field.{n}", a) for n, a in self.columns.items()])


@dataclass(frozen=True)
class SnapshotKey:
    """What a snapshot must match to be used: the view it was taken of, at which point."""

    view_format: int
    view_id: str
    log_id: str
    applied_lsn: int
    next_item_id: int

    def as_dict(self) -> dict[str, Any]:
        return {"view_format": self.view_format, "view_id": self.view_id,
                "log_id": self.log_id, "applied_lsn": self.applied_lsn,
                "next_item_id": self.next_item_id}


def config_digest(config: TableConfig) -> str:
    """A digest of a table's configuration (its deterministic proto encoding)."""

    return hashlib.sha256(config.to_proto().SerializeToString(deterministic=True)).hexdigest()


def _layout(state: TableState, start: int) -> tuple[list[dict[str, Any]], int]:
    out, offset = [], start
    for name, arr in state.arrays():
        offset = -(-offset // _ALIGN) * _ALIGN
        out.append({"name": name, "dtype": np.dtype(arr.dtype).str, "shape": list(arr.shape),
                    "offset": offset, "nbytes": int(arr.nbytes)})
        offset += int(arr.nbytes)
    return out, offset


def write_snapshot(directory: Path, key: SnapshotKey,
                   tables: Sequence[tuple[int, TableConfig, TableState]], *,
                   sync: bool) -> Path:
    """Write the snapshot file into `directory` atomically; returns its path.

    Cost: one sequential write of the tables' state (about 220 MB per million W2 items) and,
    with `sync`, its fsync.
    """

    entries, offset = [], 0
    for index, config, state in tables:
        arrays, offset = _layout(state, offset)
        entries.append({"index": index, "name": config.name, "config": config_digest(config),
                        "items": int(state.ids.size), "arrays": arrays})
    header = json.dumps({**key.as_dict(), "tables": entries}).encode()
    head = _HEAD.pack(_MAGIC, SNAPSHOT_FORMAT, len(header)) + header
    base = -(-len(head) // _ALIGN) * _ALIGN  # array offsets count from here
    final = directory / SNAPSHOT_NAME
    tmp = directory / (SNAPSHOT_NAME + ".tmp")
    try:
        with open(tmp, "wb") as f:
            crc = crc32c.crc32c(head)
            f.write(head)
            pos = len(head)
            for (_, _, state), entry in zip(tables, entries):
                for (_, arr), spec in zip(state.arrays(), entry["arrays"]):
                    pad = bytes(base + spec["offset"] - pos)
                    crc = crc32c.crc32c(pad, crc)
                    f.write(pad)
                    pos += len(pad)
                    for piece in _pieces(arr):
                        data = memoryview(piece).cast("B")
                        crc = crc32c.crc32c(data, crc)
                        f.write(data)
                        pos += len(data)
                    if pos != base + spec["offset"] + spec["nbytes"]:
                        raise ValueError(f"array {spec['name']!r} changed while written")
            f.write(_CRC.pack(crc))
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, final)
        if sync:
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def remove_snapshot(directory: Path) -> None:
    """Delete the snapshot file (and a leftover temporary one) if present."""

    for name in (SNAPSHOT_NAME, SNAPSHOT_NAME + ".tmp"):
        (directory / name).unlink(missing_ok=True)


def read_snapshot(directory: Path, key: SnapshotKey, configs: Mapping[int, TableConfig], *,
                  older: bool = False) -> tuple[dict[int, TableState] | None, str]:
    """The tables' states from the snapshot in `directory` if it matches `key` and `configs`
    (table index -> config) exactly and its checksum holds; else ``(None, why not)``.

    With `older`, a snapshot of the same view taken at an earlier point is accepted too
    (its ``applied_lsn`` and ``next_item_id`` not past the key's): what a crash after more
    writes leaves. Only its payload columns are still right, for the items with ids below
    its ``next_item_id`` that are present now (a payload never changes, an id is never
    reused); the states carry that ``next_item_id`` and `older_columns` joins them with the
    newer payloads read from the view.

    The arrays are read-only views of one buffer holding the file. Cost: reading the header;
    when it matches, reading and checksumming the file.
    """

    path = directory / SNAPSHOT_NAME
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            first = f.read(_HEAD.size)
            if len(first) < _HEAD.size:
                return None, f"snapshot {path} is truncated"
            magic, fmt, hlen = _HEAD.unpack(first)
            if magic != _MAGIC or fmt != SNAPSHOT_FORMAT:
                return None, f"snapshot {path} has magic {magic!r} and format {fmt}"
            raw = f.read(hlen)
            try:
                header = json.loads(raw)
            except ValueError:
                return None, f"snapshot {path} has a damaged header"
            if not isinstance(header, dict):
                return None, f"snapshot {path} has a damaged header"
            want = key.as_dict()
            got = {k: header.get(k) for k in want}
            if older:  # the same view, at or before the key's point
                later = [k for k in ("applied_lsn", "next_item_id")
                         if not isinstance(got[k], int) or got[k] > want[k]]
                want |= {k: got[k] for k in ("applied_lsn", "next_item_id")}
                if later:
                    return None, f"snapshot {path} is past the view ({later})"
            if got != want:
                return None, f"snapshot {path} is of {got}, not of the view as it is ({want})"
            tables = header.get("tables")
            digests = {i: config_digest(c) for i, c in configs.items()}
            if not isinstance(tables, list) or {
                    t.get("index"): t.get("config") for t in tables if isinstance(t, dict)
            } != digests or len(tables) != len(digests):
                return None, f"snapshot {path} holds other tables than the view"
            buf = np.empty(size, np.uint8)
            f.seek(0)
            if f.readinto(memoryview(buf)) != size:
                return None, f"snapshot {path} changed while being read"
    except FileNotFoundError:
        return None, f"no snapshot {path}"
    except OSError as exc:
        return None, f"snapshot {path} is unreadable ({exc})"
    if size < _CRC.size or crc32c.crc32c(buf[: size - _CRC.size]) != _CRC.unpack_from(
            buf, size - _CRC.size)[0]:
        return None, f"snapshot {path} fails its checksum"
    base = -(-(_HEAD.size + hlen) // _ALIGN) * _ALIGN
    buf.flags.writeable = False
    try:
        states = {t["index"]: _state(buf, base, size - _CRC.size, t) for t in tables}
        for st in states.values():
            st.next_item_id = int(header["next_item_id"])
        return states, ""
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"snapshot {path} has a bad layout ({type(exc).__name__}: {exc})"


def _state(buf: np.ndarray, base: int, end: int, entry: dict[str, Any]) -> TableState:
    arrays: dict[str, np.ndarray] = {}
    n = int(entry["items"])
    for spec in entry["arrays"]:
        dt, shape = np.dtype(spec["dtype"]), tuple(int(d) for d in spec["shape"])
        start = base + int(spec["offset"])
        count = int(np.prod(shape, dtype=np.int64))
        if not shape or shape[0] != n or start + count * dt.itemsize > end or dt.hasobject:
            raise ValueError(f"array {spec['name']!r} does not fit the file")
        arrays[spec["name"]] = np.frombuffer(buf, dt, count, start).reshape(shape)
    return TableState(
        ids=arrays["ids"], slots=arrays["slots"], priorities=arrays["priorities"],
        lineage={k[8:]: v for k, v in arrays.items() if k.startswith("lineage.")},
        columns={k[6:]: v for k, v in arrays.items() if k.startswith("field.")},
    )


def older_columns(ids: np.ndarray, rows: np.ndarray, older: TableState,
                  config: TableConfig) -> dict[str, np.ndarray]:
    """The field columns of present items `ids` (ascending): payloads of ids below
    ``older.next_item_id`` from `older` (a snapshot of this table taken earlier), the others
    from `rows` (the view's payload rows of exactly those, in id order).

    Raises:
        ValueError: an item the snapshot should hold is not in it, or the rows do not fit.
    """

    ids = np.asarray(ids, np.uint64)
    k = int(np.searchsorted(ids, np.uint64(older.next_item_id)))
    if rows.size != ids.size - k:
        raise ValueError(f"{rows.size} payload rows for {ids.size - k} newer items")
    pos = np.searchsorted(older.ids, ids[:k])
    if k and (pos.max() >= older.ids.size or not (older.ids[pos] == ids[:k]).all()):
        raise ValueError("an item present now is missing from the older snapshot")
    if k and int(pos[-1]) - int(pos[0]) == k - 1:  # ascending: a run, as nothing was evicted
        pos = slice(int(pos[0]), int(pos[-1]) + 1)
    out = {}
    for spec in config.signature:
        col = np.empty((ids.size, *spec.shape), spec.dtype)
        col[:k] = older.columns[spec.name][pos]
        col[k:] = rows[spec.name]
        out[spec.name] = col
    return out
