"""``replaybuf export`` and ``replaybuf import`` (registered by `replaybuf.cli`).

Both open the engine on a data dir directly, so the dir must not be served at the same time:
the log's ``DIR/log/LOCK`` (an exclusive flock) makes a second opener fail, and the command
then says so. Export through a running server with ``ReplayClient.export`` instead.

    replaybuf export --data-dir DIR --table T --as-of 1234|latest --format npz --out t.npz
    replaybuf export --data-dir DIR --table T --format parquet --compression zstd --out t.parquet
    replaybuf import --data-dir DIR --table T --from t.npz [--create]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from replaybuf.errors import FailedPreconditionError
from replaybuf.export_parquet import PARQUET_CODECS, PARQUET_DEFAULT_CODEC

__all__ = ["register_export_commands"]


def _as_of(text: str) -> int | None:
    if text == "latest":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an LSN or 'latest'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1 (LSNs start at 1)")
    return value


def _open(data_dir: str, command: str, *, must_exist: bool = True):  # type: ignore[no-untyped-def]
    from replaybuf.engine import Engine

    if must_exist and not (Path(data_dir) / "log").is_dir():
        raise FailedPreconditionError(f"{data_dir} holds no replaybuf log (no {data_dir}/log)")
    try:
        return Engine(data_dir)
    except FailedPreconditionError as exc:
        if "already open" not in str(exc):
            raise
        raise FailedPreconditionError(
            f"data dir {data_dir} is in use: a running server (or another process) holds "
            f"{data_dir}/log/LOCK. Stop it first, or run {command} through the server "
            f"(ReplayClient.export)") from None


def _cmd_export(args: argparse.Namespace) -> int:
    from replaybuf.export import write_export

    with _open(args.data_dir, "the export") as engine, engine.as_of(args.table,
                                                                     args.as_of) as m:
        # Engine.export's steps, plus the Parquet codec
        manifest = write_export(m.chunks(fields=args.fields), args.out, args.format,
                                info=m.info(args.fields), total=m.count,
                                progress=not args.quiet, compression=args.compression)
    print(f"exported {manifest['item_count']} items of table {args.table!r} as of LSN "
          f"{manifest['as_of_lsn']} to {args.out} ({args.format}); sha256 "
          f"{manifest['content_sha256']}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from replaybuf.dataset_import import import_dataset

    with _open(args.data_dir, "the import", must_exist=False) as engine:
        result = import_dataset(engine, args.table, args.source, create=args.create)
    print(json.dumps(result))
    return 0


def register_export_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``replaybuf export`` and ``replaybuf import``."""

    exp = commands.add_parser(
        "export", help="write a table as of an LSN to npz, Parquet or a Minari dataset",
        description="Materialize a table exactly as it stood at an LSN (replaying the log) "
        "and write it with a manifest (OUT.manifest.json). The data dir must not be served.")
    exp.add_argument("--data-dir", required=True, metavar="DIR")
    exp.add_argument("--table", required=True, metavar="T")
    exp.add_argument("--as-of", type=_as_of, default=None, metavar="LSN|latest",
                     help="LSN to export at (default latest: the applied LSN)")
    exp.add_argument("--format", choices=("npz", "parquet", "minari"), default="npz")
    exp.add_argument("--out", required=True, metavar="PATH",
                     help="output file (for minari: the dataset id, e.g. ns/name-v0)")
    exp.add_argument("--fields", nargs="+", default=None, help="fields to export (default all)")
    exp.add_argument("--compression", choices=sorted(PARQUET_CODECS), default=None,
                     help=f"Parquet codec (default {PARQUET_DEFAULT_CODEC}: fastest, read "
                     "everywhere; zstd: smaller files, about 1 CPU s more per million rows)")
    exp.add_argument("--quiet", action="store_true", help="no progress bar")
    exp.set_defaults(func=_cmd_export)

    imp = commands.add_parser(
        "import", help="append an npz/Parquet export or a Minari dataset to a table",
        description="Append the items of an export file (npz, Parquet) or a local Minari "
        "dataset id as ItemsAppended events whose lineage source is import:NAME.")
    imp.add_argument("--data-dir", required=True, metavar="DIR")
    imp.add_argument("--table", required=True, metavar="T")
    imp.add_argument("--from", dest="source", required=True, metavar="PATH",
                     help="an .npz or .parquet export, or a Minari dataset id")
    imp.add_argument("--create", action="store_true",
                     help="create the table if missing (from the manifest, else the data)")
    imp.set_defaults(func=_cmd_import)
