"""``replaybuf lineage``, ``replaybuf find`` and ``replaybuf diff``: audit a data directory.

Each command opens the engine on ``--data-dir`` (so it needs the directory to itself: stop the
server first, or use the client's ``lineage``/``find_items``/``diff`` against it), answers, and
closes it.

    replaybuf lineage 42 --data-dir DIR
    replaybuf find --data-dir DIR --table replay --request-id req-7 [--include-evicted]
    replaybuf diff --data-dir DIR --from 100 --to 200 [--table replay] [--json]
"""

from __future__ import annotations

import argparse
import datetime
import json

from replaybuf.v1 import events_pb2

__all__ = ["register_audit_commands", "describe_lineage_entry"]


def _time(ms: int) -> str:
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe_lineage_entry(lsn: int, ev: events_pb2.Event) -> str:
    """One line for one reduced lineage event."""

    from replaybuf.diff import reason_name, source_name

    kind = ev.WhichOneof("body")
    b = getattr(ev, kind)
    if kind == "items_appended":
        lin = b.lineage
        first = lambda col: col[0] if len(col) else ""  # noqa: E731
        what = (f"appended request={first(lin.request_id)!r} model_version="
                f"{first(lin.model_version)} episode={first(lin.episode_id)} step="
                f"{first(lin.step)} source={first(lin.source)!r} priority="
                f"{first(b.priorities)}")
    elif kind == "priorities_updated":
        what = f"priority -> {b.priorities[0] if b.priorities else '?'} source={b.source!r}"
    elif kind == "rewards_corrected":
        old = b.previous_rewards[0] if b.previous_rewards else "?"
        what = (f"reward {old} -> {b.rewards[0] if b.rewards else '?'} source="
                f"{source_name(b.source)} reason={b.reason!r} author={b.author!r}")
    elif kind == "items_evicted":
        what = f"evicted reason={reason_name(b.reason)} job={b.job_id!r} detail={b.detail!r}"
    elif kind == "items_flagged_for_review":
        what = f"flagged for review reason={b.reason!r} author={b.author!r}"
    elif kind == "label_applied":
        extra = "".join(f" {f}={getattr(b, f)}" for f in ("reward", "priority") if b.HasField(f))
        what = f"label {b.verdict!r}{extra} author={b.author!r} note={b.note!r}"
    else:
        what = kind
    return f"{lsn:>10}  {_time(ev.timestamp_ms)}  {what}"


def _open(data_dir: str):  # noqa: ANN202 - Engine, imported lazily
    from pathlib import Path

    from replaybuf.engine import Engine
    from replaybuf.errors import NotFoundError

    if not (Path(data_dir) / "log").is_dir():
        raise NotFoundError(f"{data_dir} holds no replaybuf log (no {data_dir}/log)")
    return Engine(data_dir)


def _cmd_lineage(args: argparse.Namespace) -> int:
    with _open(args.data_dir) as engine:
        h = engine.get_lineage(args.item_id)
        state = "present" if h.present else "evicted"
        print(f"item {h.item_id}  table {h.table!r}  {state}  times_sampled {h.times_sampled}")
        for lsn, ev in h.entries:
            print(describe_lineage_entry(lsn, ev))
    return 0


def _cmd_find(args: argparse.Namespace) -> int:
    with _open(args.data_dir) as engine:
        found = engine.find_items(args.table, request_id=args.request_id,
                                  model_version=args.model_version, episode_id=args.episode,
                                  include_evicted=args.include_evicted, limit=args.limit)
        for i in found.item_ids.tolist():
            print(i)
        if found.truncated:
            print(f"(truncated at {len(found.item_ids)}; raise --limit)")
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    with _open(args.data_dir) as engine:
        d = engine.diff(args.from_lsn, args.to_lsn, args.table)
    print(json.dumps(d.to_dict(), sort_keys=True) if args.json else d.table_text())
    return 0


def _nonneg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def register_audit_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``lineage``, ``find`` and ``diff``."""

    lin = commands.add_parser("lineage", help="every event that touched one item",
                              description="Print one line per event that touched the item, "
                              "in LSN order (append, priority changes, corrections, reviews, "
                              "eviction). Works for evicted items.")
    lin.add_argument("item_id", type=_nonneg, metavar="ID")
    lin.add_argument("--data-dir", required=True, metavar="DIR")
    lin.set_defaults(func=_cmd_lineage)

    find = commands.add_parser("find", help="item ids by request id, model version or episode")
    find.add_argument("--data-dir", required=True, metavar="DIR")
    find.add_argument("--table", required=True)
    crit = find.add_mutually_exclusive_group(required=True)
    crit.add_argument("--request-id")
    crit.add_argument("--model-version", type=int)
    crit.add_argument("--episode", type=_nonneg)
    find.add_argument("--include-evicted", action="store_true")
    find.add_argument("--limit", type=_nonneg, default=10_000)
    find.set_defaults(func=_cmd_find)

    diff = commands.add_parser("diff", help="what changed between two LSNs",
                               description="Counts of changes in (FROM, TO]: items appended, "
                               "evicted by reason, corrected by source, flagged, labelled, "
                               "priority updates, and the priority mass at FROM and TO.")
    diff.add_argument("--data-dir", required=True, metavar="DIR")
    diff.add_argument("--from", dest="from_lsn", type=_nonneg, required=True, metavar="LSN")
    diff.add_argument("--to", dest="to_lsn", type=_nonneg, default=0, metavar="LSN",
                      help="last LSN included (default: the end)")
    diff.add_argument("--table", default=None)
    diff.add_argument("--json", action="store_true", help="print JSON instead of a table")
    diff.set_defaults(func=_cmd_diff)
