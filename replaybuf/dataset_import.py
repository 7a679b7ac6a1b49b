"""``replaybuf import``: append an exported dataset (npz, Parquet, Minari) to a table.

Items are appended through `Engine.append`, so they are logged as ``ItemsAppended`` like any
other data and get new item ids. Their lineage keeps the file's episode ids, steps, model
versions, timestamps and request ids; the source becomes ``import:NAME`` (NAME: the file name
or Minari dataset id) so every imported item names the dataset it came from. Priorities are
taken from the file when it has them (npz/Parquet exports do).

A missing table is created only with ``create=True``: from the manifest's table config when
the file has one (``PATH.manifest.json``), else from the data's dtypes and shapes with a
capacity of the item count. Cost: O(file) memory (the file is read whole), appends in
batches of up to 4096 items.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from replaybuf.engine import Engine
from replaybuf.errors import InvalidArgumentError, TableNotFoundError
from replaybuf.export import ImportedData, read_export
from replaybuf.table_config import TableConfig
from replaybuf.v1 import table_pb2

__all__ = ["import_dataset"]

_BATCH = 4096


def _config_for(table: str, data: ImportedData) -> TableConfig:
    if data.manifest is not None:
        from google.protobuf import json_format

        msg = json_format.ParseDict(data.manifest["config"], table_pb2.TableConfig())
        msg.name = table
        return TableConfig.from_proto(msg)
    n = len(next(iter(data.columns.values()))) if data.columns else 0
    sig = {k: (dt, shape) for k, (dt, shape) in data.fields.items()}
    return TableConfig(table, sig, capacity=max(n, 1))


def import_dataset(engine: Engine, table: str, source: str | Path, *,
                   create: bool = False) -> dict[str, Any]:
    """Append every item of `source` to `table`; returns ``{"items", "first_lsn",
    "last_lsn", "source"}``.

    Raises:
        TableNotFoundError: the table does not exist and `create` is False.
        SignatureMismatchError: the data does not fit the table's signature.
    """

    data = read_export(source)
    name = Path(str(source)).name if Path(str(source)).exists() else str(source)
    if table not in {t.config.name for t in engine.list_tables()}:
        if not create:
            raise TableNotFoundError(
                f"table {table!r} does not exist; create it first or pass --create to build it "
                f"from {name}'s manifest")
        engine.create_table(_config_for(table, data))
    cfg = engine.describe_table(table).config
    missing = [s.name for s in cfg.signature if s.name not in data.columns]
    if missing:
        raise InvalidArgumentError(f"{name} lacks fields {missing} of table {table!r}")
    cols = {s.name: np.asarray(data.columns[s.name]).astype(s.dtype, copy=False)
            for s in cfg.signature}
    n = len(next(iter(cols.values()))) if cols else 0
    step = max(1, min(_BATCH, cfg.capacity))
    first = last = 0
    for start in range(0, n, step):
        sl = slice(start, min(n, start + step))
        lin: dict[str, Any] = {k: np.asarray(v[sl]) for k, v in data.lineage.items()
                               if k in ("episode_id", "step", "model_version", "timestamp_ms")}
        if "request_id" in data.lineage:
            lin["request_id"] = list(data.lineage["request_id"][sl])
        lin["source"] = f"import:{name}"
        prios = None if data.priorities is None else np.asarray(data.priorities[sl])
        ack = engine.append(table, {k: v[sl] for k, v in cols.items()}, priorities=prios,
                            lineage=lin)
        first = first or ack.first_lsn
        last = ack.last_lsn
    return {"items": n, "first_lsn": first, "last_lsn": last, "source": f"import:{name}"}
