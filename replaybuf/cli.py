"""The ``replaybuf`` command line.

Each command group registers itself with one function that takes the top-level subparsers
(see :func:`register_log_commands`); add new groups (``serve``, ``export``, ``rebuild``, ...) to
``_COMMAND_GROUPS``. Every leaf command sets ``func``: a function of the parsed arguments that
returns the exit status.

Exit status: 0 success, 1 the command ran and found a problem (or failed), 2 bad usage.

    replaybuf log verify DIR
    replaybuf log dump DIR --from 100 --to 200 --limit 20
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Callable, Sequence

from replaybuf.errors import ReplayError
from replaybuf.log_format import NO_PRODUCER, iter_log_records, verify_log

__all__ = ["main", "build_parser", "register_log_commands", "describe_payload"]

_PREVIEW_BYTES = 16


def describe_payload(payload: bytes) -> str:
    """A one-line description: the replaybuf event it holds, else its leading bytes.

    Records that are not replaybuf events (other tools may share the log format) are shown as
    hex and printable text.
    """

    if not payload:
        return "(empty)"
    from replaybuf.errors import DataLossError
    from replaybuf.events import decode_event, describe_event

    try:
        return describe_event(decode_event(payload))
    except DataLossError:
        pass
    head = payload[:_PREVIEW_BYTES]
    more = "…" if len(payload) > _PREVIEW_BYTES else ""
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in head)
    return f"{head.hex(' ', -4)}{more} |{text}|"


def _format_time(timestamp_ms: int) -> str:
    t = datetime.datetime.fromtimestamp(timestamp_ms / 1000, tz=datetime.timezone.utc)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _format_producer(producer_id: bytes, producer_seq: int) -> str:
    if producer_seq == 0 and producer_id == NO_PRODUCER:
        return "-"
    return f"…{producer_id.hex()[-8:]}#{producer_seq}"


def _lsn(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1 (LSNs start at 1)")
    return value


def _cmd_log_verify(args: argparse.Namespace) -> int:
    report = verify_log(args.directory)
    print(report.summary())
    for problem in report.problems:
        print(f"  problem: {problem}")
    if not report.ok:
        print(
            "The log was not modified. Restore damaged segments from a backup or replica; "
            "`replaybuf log dump` reads the records before the damage."
        )
    return 0 if report.ok else 1


def _cmd_log_dump(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.directory):
        print(f"replaybuf log dump: {args.directory}: no such directory", file=sys.stderr)
        return 1
    if args.to_lsn is not None and args.to_lsn < args.from_lsn:
        return 0
    shown = 0
    for rec in iter_log_records(args.directory, args.from_lsn, args.to_lsn):
        if args.limit is not None and shown >= args.limit:
            break
        print(
            f"{rec.lsn:>10}  {_format_time(rec.timestamp_ms)}  "
            f"{_format_producer(rec.producer_id, rec.producer_seq):<14}  "
            f"{len(rec.payload):>9} B  {describe_payload(rec.payload)}"
        )
        shown += 1
    return 0


def register_log_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``replaybuf log verify`` and ``replaybuf log dump``."""

    log = commands.add_parser(
        "log",
        help="inspect an embedded event log directory (read-only)",
        description="Inspect an embedded event log directory. These commands never modify it.",
    )
    sub = log.add_subparsers(dest="log_command", metavar="SUBCOMMAND", required=True)

    verify = sub.add_parser(
        "verify",
        help="check every CRC and LSN; exit 1 naming each problem",
        description="Check every segment header, frame CRC-32C and LSN continuity. Exits 0 "
        "when the log is sound (a torn tail, which opening the log truncates, is only noted), "
        "1 naming the file, byte offset and LSN of each problem otherwise.",
    )
    verify.add_argument("directory", metavar="DIR", help="the log directory")
    verify.set_defaults(func=_cmd_log_verify)

    dump = sub.add_parser(
        "dump",
        help="print records: LSN, frame time, producer, size, preview",
        description="Print one line per record: LSN, frame time (UTC), producer "
        "(id prefix#sequence, '-' for none), payload size and a preview.",
    )
    dump.add_argument("directory", metavar="DIR", help="the log directory")
    dump.add_argument("--from", dest="from_lsn", type=_lsn, default=1, metavar="LSN",
                      help="first LSN to print (default 1)")
    dump.add_argument("--to", dest="to_lsn", type=_lsn, default=None, metavar="LSN",
                      help="last LSN to print (default: the end)")
    dump.add_argument("--limit", type=_lsn, default=None, metavar="N",
                      help="print at most N records")
    dump.set_defaults(func=_cmd_log_dump)


def register_serve_command(commands: argparse._SubParsersAction) -> None:
    """``replaybuf serve``: the gRPC service. Imported lazily: the engine never imports grpc."""

    from replaybuf_server.cli import add_serve_parser

    add_serve_parser(commands)


def register_audit_commands(commands: argparse._SubParsersAction) -> None:
    """``replaybuf lineage``, ``find`` and ``diff`` (`replaybuf.audit_cli`)."""

    from replaybuf.audit_cli import register_audit_commands as register

    register(commands)


def register_export_commands(commands: argparse._SubParsersAction) -> None:
    """``replaybuf export`` / ``replaybuf import`` (`replaybuf.export_cli`)."""

    from replaybuf.export_cli import register_export_commands as register

    register(commands)


def register_jobs_commands(commands: argparse._SubParsersAction) -> None:
    """``replaybuf jobs run`` (hygiene and drift jobs, `replaybuf.jobs`)."""

    from replaybuf.jobs.cli import register_jobs_commands as register

    register(commands)


def register_report_command(commands: argparse._SubParsersAction) -> None:
    """``replaybuf report`` (JSON + plots + drift, `replaybuf.jobs.report`)."""

    from replaybuf.jobs.cli import register_report_command as register

    register(commands)


_COMMAND_GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [
    register_log_commands,
    register_export_commands,
    register_audit_commands,
    register_serve_command,
    register_jobs_commands,
    register_report_command,
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command group registered."""

    parser = argparse.ArgumentParser(
        prog="replaybuf", description="replaybuf: event-sourced experience replay."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _COMMAND_GROUPS:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (the console script passes it to sys.exit)."""

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.func(args))
    except ReplayError as exc:
        print(f"replaybuf: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `replaybuf log dump DIR | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
