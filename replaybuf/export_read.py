"""Reading exports back, for ``replaybuf import``: npz and Parquet files and local Minari
datasets (`read_export`). pyarrow and minari are imported lazily, only for their formats."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from replaybuf.export_chunk import NUMERIC_LINEAGE, STRING_LINEAGE
from replaybuf.export_minari import MINARI_FIELDS

__all__ = ["ImportedData", "read_export"]


@dataclass
class ImportedData:
    """Items read back from an export, for ``replaybuf import``."""

    columns: dict[str, np.ndarray]
    lineage: dict[str, Any]
    priorities: np.ndarray | None
    manifest: dict[str, Any] | None = None
    fields: dict[str, tuple[np.dtype, tuple[int, ...]]] = field(default_factory=dict)


def read_export(source: str | Path) -> ImportedData:
    """Read an npz or Parquet export file, or a Minari dataset id, whole (O(size) RAM)."""

    src = str(source)
    mp = Path(src + ".manifest.json")
    manifest = json.loads(mp.read_text()) if mp.is_file() else None
    if src.endswith(".npz") or (manifest and manifest.get("format") == "npz"):
        with np.load(src, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return _imported(arrays, manifest)
    if src.endswith(".parquet") or (manifest and manifest.get("format") == "parquet"):
        import pyarrow.parquet as pq

        t = pq.read_table(src)
        fmeta = json.loads((t.schema.metadata or {}).get(b"replaybuf.fields", b"{}"))
        arrays = {}
        for name in t.column_names:
            col = t.column(name).combine_chunks()
            if name in fmeta:
                dt, shape = np.dtype(fmeta[name]["dtype"]), tuple(fmeta[name]["shape"])
                flat = col
                for _ in shape:
                    flat = flat.flatten()
                arrays[name] = np.asarray(flat.to_numpy(zero_copy_only=False), dt).reshape(
                    (len(col), *shape))
            elif name.startswith("lineage.") and name[8:] in STRING_LINEAGE:
                arrays[name] = np.asarray(col.to_pylist(), dtype=str)
            else:
                arrays[name] = col.to_numpy()
        return _imported(arrays, manifest)
    return _read_minari(src)


def _imported(arrays: dict[str, np.ndarray], manifest: dict[str, Any] | None) -> ImportedData:
    cols = {k: v for k, v in arrays.items() if "." not in k}
    lineage: dict[str, Any] = {k: arrays[f"lineage.{k}"] for k, _ in NUMERIC_LINEAGE
                               if f"lineage.{k}" in arrays}
    lineage.update({k: [str(s) for s in arrays[f"lineage.{k}"]] for k in STRING_LINEAGE
                    if f"lineage.{k}" in arrays})
    fields = {k: (v.dtype, tuple(v.shape[1:])) for k, v in cols.items()}
    if manifest:
        order = list(manifest["fields"])
        fields = {k: (np.dtype(manifest["fields"][k]["dtype"]),
                      tuple(manifest["fields"][k]["shape"])) for k in order}
    return ImportedData(cols, lineage, arrays.get("meta.priority"), manifest, fields)


def _read_minari(dataset_id: str) -> ImportedData:
    import minari

    ds = minari.load_dataset(dataset_id)
    parts: dict[str, list[np.ndarray]] = {f: [] for f in MINARI_FIELDS}
    ep_ids: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    for e in ds.iterate_episodes():
        t = len(e.actions)
        parts["obs"].append(np.asarray(e.observations)[:t])
        parts["next_obs"].append(np.asarray(e.observations)[1 : t + 1])
        parts["action"].append(np.asarray(e.actions))
        parts["reward"].append(np.asarray(e.rewards))
        parts["done"].append(np.asarray(e.terminations))
        infos = e.infos or {}
        ep_ids.append(np.asarray(infos.get("episode_id", np.full(t, e.id))[:t], np.uint64))
        steps.append(np.asarray(infos.get("step", np.arange(t))[:t], np.uint64))
    cols = {f: np.concatenate(v) for f, v in parts.items()} if ep_ids else {}
    lineage: dict[str, Any] = {}
    if ep_ids:
        lineage = {"episode_id": np.concatenate(ep_ids), "step": np.concatenate(steps)}
    fields = {k: (v.dtype, tuple(v.shape[1:])) for k, v in cols.items()}
    return ImportedData(cols, lineage, None, None, fields)
