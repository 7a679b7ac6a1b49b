"""The Minari writer of `replaybuf.export.write_export`: a table's items as a local Minari
dataset (episodes rebuilt from episode id and step; see `write_minari`). minari and gymnasium
are imported lazily (``pip install 'replaybuf[export]'``)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from replaybuf.errors import InvalidArgumentError
from replaybuf.export_chunk import Chunk, ExportInfo

__all__ = ["MINARI_FIELDS", "write_minari", "minari_dir"]

#: Fields a table needs for a Minari export (the signature's conventional names).
MINARI_FIELDS = ("obs", "action", "reward", "next_obs", "done")


def minari_dir(dataset_id: str) -> Path:
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path(dataset_id))


def _box(dt: np.dtype, shape: tuple[int, ...]) -> Any:
    from gymnasium import spaces

    if dt.kind == "f":
        return spaces.Box(-np.inf, np.inf, shape, dt)
    if dt.kind == "b":
        return spaces.Box(0, 1, shape, np.int8)
    info = np.iinfo(dt)
    return spaces.Box(info.min, info.max, shape, dt)


def write_minari(chunks: Iterator[Chunk], dataset_id: str, info: ExportInfo) -> None:
    """Episodes are rebuilt from (episode id, step): items sorted by step, split where steps
    are not consecutive (an evicted middle). An episode piece whose last item is not ``done``
    (still running, or its tail evicted) is exported as *truncated*; observations are the
    items' ``obs`` plus the last item's ``next_obs``. The item ids of each piece go in the
    first step's info (``infos["item_id"]``) so an import keeps the order.

    Memory: the five fields stream to raw files in a temporary directory beside Minari's
    dataset root and are read back memory-mapped, one episode at a time, as Minari writes
    it; RAM holds the sort keys (24 bytes per item) and one episode."""

    import minari
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"{dataset_id!r} is not a Minari dataset id; use namespace/name-v0 ({exc})"
        ) from None
    specs = {n: (dt, s) for n, dt, s in info.fields}
    missing = [f for f in MINARI_FIELDS if f not in specs]
    if missing:
        raise InvalidArgumentError(
            f"a Minari export needs fields {list(MINARI_FIELDS)}; table {info.table!r} "
            f"lacks {missing} (or they were left out with fields=)")
    path = minari_dir(dataset_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        keys: dict[str, list[np.ndarray]] = {"ids": [], "episode_id": [], "step": []}
        files = {f: open(tmp / f"{f}.raw", "wb") for f in MINARI_FIELDS}
        n = 0
        try:
            for c in chunks:
                n += len(c)
                keys["ids"].append(np.asarray(c.ids, np.uint64))
                keys["episode_id"].append(np.asarray(c.lineage["episode_id"], np.uint64))
                keys["step"].append(np.asarray(c.lineage["step"], np.uint64))
                for f in MINARI_FIELDS:
                    files[f].write(np.ascontiguousarray(c.columns[f], specs[f][0]).data)
        finally:
            for fh in files.values():
                fh.close()
        col = {f: np.memmap(tmp / f"{f}.raw", specs[f][0], "r", shape=(n, *specs[f][1]))
               if n else np.empty((0, *specs[f][1]), specs[f][0]) for f in MINARI_FIELDS}
        ids, ep, step = (np.concatenate(keys[k]) if n else np.empty(0, np.uint64)
                         for k in ("ids", "episode_id", "step"))
        del keys
        if path.exists():
            shutil.rmtree(path)
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id, buffer=_minari_episodes(col, ids, ep, step),
            observation_space=_box(*specs["obs"]), action_space=_box(*specs["action"]),
            algorithm_name="replaybuf export", data_format="arrow",
            description=f"replaybuf table {info.table!r} as of LSN {info.as_of_lsn} "
                        f"(log {info.log_id})")
        col.clear()  # drop the memory maps before their files go
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _minari_episodes(col: Mapping[str, np.ndarray], ids: np.ndarray, ep: np.ndarray,
                     step: np.ndarray) -> Iterator[Any]:
    """Minari episode buffers, one per episode piece (see `write_minari`), made on demand
    (Minari writes each before asking for the next)."""

    from minari.data_collector import EpisodeBuffer

    order = np.lexsort((ids, step, ep))
    eo, so = ep[order], step[order]
    # a piece ends where the episode changes or the steps stop being consecutive
    cuts = np.flatnonzero((eo[1:] != eo[:-1]) | (so[1:] != so[:-1] + np.uint64(1))) + 1
    bounds = np.concatenate([[0], cuts, [order.size]]).tolist() if order.size else [0]
    for k, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        sel = order[start:end]
        done = np.asarray(col["done"][sel]).astype(bool).reshape(-1)
        term = done.copy()
        trunc = np.zeros_like(term)
        trunc[-1] = not term[-1]
        pad = np.concatenate([sel, sel[-1:]])  # infos have T + 1 entries, like observations
        yield EpisodeBuffer(
            id=k,
            observations=np.concatenate([col["obs"][sel], col["next_obs"][sel[-1:]]]),
            actions=np.asarray(col["action"][sel]),
            rewards=np.asarray(col["reward"][sel], np.float64).reshape(-1).tolist(),
            terminations=term.tolist(),
            truncations=trunc.tolist(),
            infos={"item_id": ids[pad].astype(np.int64).tolist(),
                   "episode_id": ep[pad].astype(np.int64).tolist(),
                   "step": step[pad].astype(np.int64).tolist()},
        )
