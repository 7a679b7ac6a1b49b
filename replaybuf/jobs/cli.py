"""``replaybuf jobs run`` and ``replaybuf report``.

Exit status: 0 success (also: the job id already ran, or a dry run), 1 the command failed,
2 bad usage, `EXIT_RETRAIN` (3) a drift check crossed a threshold: retraining recommended.

    replaybuf jobs run JOBFILE --data-dir DIR [--dry-run] [--scan process|thread]
    replaybuf jobs run JOBFILE --server HOST:PORT [--token-file F] [--dry-run]
    replaybuf report --data-dir DIR --table T --out DIR [--job FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from replaybuf.jobs.jobfile import load_job, parse_time_ms

__all__ = ["register_jobs_commands", "register_report_command", "EXIT_RETRAIN"]

#: Exit status when a drift check recommends retraining.
EXIT_RETRAIN = 3


def _open_engine(data_dir: str) -> Any:
    from replaybuf.engine import Engine

    if not Path(data_dir, "log").is_dir():
        from replaybuf.errors import FailedPreconditionError

        raise FailedPreconditionError(f"{data_dir} holds no replaybuf log (no {data_dir}/log)")
    return Engine(data_dir)


def _print_plan(result: Any, out: Any) -> None:
    plan = result.plan
    print(f"job {result.job_id!r} on table {plan.table!r} at LSN {plan.at_lsn}: "
          f"{plan.items} items", file=out)
    for ev in plan.evictions:
        print(f"  {ev.policy:<22} {ev.reason_name[len('EVICTION_REASON_'):].lower():<20} "
              f"{ev.ids.size:>8} items  ({ev.detail})", file=out)
    if plan.drift is not None:
        d = plan.drift
        print(f"  drift: {d.window}; {d.detail}", file=out)


def _cmd_jobs_run(args: argparse.Namespace) -> int:
    from replaybuf.jobs.runner import ClientTarget, EngineTarget, run_job

    spec = load_job(args.jobfile)
    now = None if args.now is None else parse_time_ms(args.now, "--now")
    kw = dict(job_id=args.job_id, dry_run=args.dry_run, now_ms=now,
              progress=not args.quiet and sys.stderr.isatty())
    if args.server:
        from replaybuf_client import ReplayClient

        token = Path(args.token_file).read_text().strip() if args.token_file else None
        with ReplayClient(args.server, token=token, timeout=args.timeout) as client:
            result = run_job(spec, ClientTarget(client), **kw)
    else:
        with _open_engine(args.data_dir) as engine:
            # A stopped data dir: no learner shares this process, so no pause between calls.
            result = run_job(spec, EngineTarget(engine, scan=args.scan, evict_duty=1.0), **kw)
    if result.status == "already-ran":
        print(f"job {result.job_id!r} already ran at LSN {result.at_lsn}; nothing to do")
        return 0
    _print_plan(result, sys.stdout)
    if args.json and result.plan is not None:
        print(json.dumps(result.plan.report(), sort_keys=True, default=str))
    if result.status == "dry-run":
        print("dry run: nothing was evicted or recorded")
    else:
        total = sum(result.evicted_by_reason.values())
        print(f"evicted {total} items {result.evicted_by_reason}; recorded job "
              f"{result.job_id!r} at LSNs {result.lsns[0]}..{result.lsns[1]}")
    if result.retrain:
        print("drift: RETRAIN RECOMMENDED")
        return EXIT_RETRAIN
    return 0


def register_jobs_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``replaybuf jobs run``."""

    jobs = commands.add_parser("jobs", help="run hygiene and drift jobs",
                               description="Run hygiene (eviction) and drift jobs from TOML "
                               "job files. Exit 3 when drift recommends retraining.")
    sub = jobs.add_subparsers(dest="jobs_command", metavar="SUBCOMMAND", required=True)
    run = sub.add_parser("run", help="run one job file once",
                         description="Run a job file once, on a stopped data dir (in-process) "
                         "or on a running server. A job id that already ran is a no-op "
                         "(exit 0). Exit 3: drift recommends retraining.")
    run.add_argument("jobfile", metavar="JOBFILE", help="TOML job file")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", metavar="DIR", help="a stopped server's data directory")
    where.add_argument("--server", metavar="HOST:PORT", help="a running server")
    run.add_argument("--token-file", metavar="F", help="file holding the bearer token")
    run.add_argument("--timeout", type=float, default=60.0, help="seconds per RPC (default 60)")
    run.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    run.add_argument("--job-id", help="the run's id (default: [job] id of the file)")
    run.add_argument("--now", help="reference time, ISO-8601 (default: [job] now, else now)")
    run.add_argument("--json", action="store_true", help="also print the plan as JSON")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--scan", choices=("process", "thread"), default="process",
                     help="with --data-dir: scan the view in a child process (default) or in "
                     "this one")
    run.set_defaults(func=_cmd_jobs_run)


def _cmd_report(args: argparse.Namespace) -> int:
    from replaybuf.jobs.report import build_report

    spec = load_job(args.job) if args.job else None
    now = None if args.now is None else parse_time_ms(args.now, "--now")
    with _open_engine(args.data_dir) as engine:
        result = build_report(engine, args.table, args.out, spec=spec, now_ms=now,
                              progress=sys.stderr.isatty())
    r = result.report
    print(f"report of table {args.table!r} at LSN {r['at_lsn']}: {r['items']} items -> "
          f"{result.out}/report.json and {len(r['plots'])} plots")
    if result.drift is not None:
        print(f"drift: {result.drift.window}; {result.drift.detail}")
    if result.retrain:
        print(f"RETRAIN RECOMMENDED ({result.recorded} as job {r.get('retrain_job_id')!r})")
        return EXIT_RETRAIN
    return 0


def register_report_command(commands: argparse._SubParsersAction) -> None:
    """Register ``replaybuf report``."""

    rep = commands.add_parser("report", help="buffer health report: JSON, plots, drift",
                              description="Write report.json and PNG plots of one table of a "
                              "stopped data dir. With --job FILE and a [drift] section, check "
                              "drift; exit 3 when it recommends retraining.")
    rep.add_argument("--data-dir", required=True, metavar="DIR", help="data directory")
    rep.add_argument("--table", required=True, help="table name")
    rep.add_argument("--out", required=True, metavar="DIR", help="output directory")
    rep.add_argument("--job", metavar="FILE", help="job file with [drift] thresholds")
    rep.add_argument("--now", help="reference time for ages, ISO-8601 (default: now)")
    rep.set_defaults(func=_cmd_report)
