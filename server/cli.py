"""``replaybuf serve``: run the gRPC server until SIGTERM or SIGINT.

Wire it into the main CLI with :func:`add_serve_parser` (it sets ``func=run_serve``), or run
it standalone: ``python -m replaybuf_server --data-dir DIR --port 0``.

Settings come from ``--config FILE.toml`` (keys = `ServerConfig` fields), overridden by the
flags given. Once bound, the server prints ``replaybuf serving on HOST:PORT`` (and
``replaybuf metrics on http://HOST:PORT/metrics``) on stdout and flushes, for scripts to parse.

Exit status: 0 after a clean shutdown, 1 when the server could not start, 2 for bad settings,
70 after a fatal log write/fsync error (restart it: recovery truncates to what is on disk).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from replaybuf.errors import ReplayError
from replaybuf.log import FSYNC_POLICIES

from .config import ROLES, ServerConfig, read_token_file

__all__ = ["add_serve_parser", "add_serve_arguments", "run_serve", "config_from_args", "main"]

_logger = logging.getLogger("replaybuf_server")

#: Exit status after a fatal log error (EX_SOFTWARE): restart to recover from the log.
_EXIT_FATAL = 70


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` flags to ``parser``. Every flag defaults to "not given" (None)."""

    p = parser
    p.add_argument(
        "--config", metavar="FILE.toml",
        help="read settings from this TOML file; flags override it",
    )
    p.add_argument(
        "--data-dir", metavar="DIR",
        help="directory of the event log and view (created if missing)",
    )
    p.add_argument(
        "--host",
        help="address to bind (default 127.0.0.1; others need TLS or --insecure)",
    )
    p.add_argument("--port", type=int, help="TCP port (default 50051; 0 = any free port)")
    p.add_argument(
        "--max-message-bytes", type=int, metavar="N",
        help="largest request/response (default 64 MiB)",
    )
    p.add_argument(
        "--workers", type=int, metavar="N",
        help="RPC threads = most concurrent RPCs and streams (default 32)",
    )
    p.add_argument("--tls-cert", metavar="PEM", help="server certificate chain (enables TLS)")
    p.add_argument("--tls-key", metavar="PEM", help="server private key")
    p.add_argument(
        "--tls-client-ca", metavar="PEM",
        help="CA of client certificates (enables mutual TLS)",
    )
    for role in ROLES:
        p.add_argument(
            f"--{role}-token-file",
            metavar="FILE",
            help=f"file of {role} bearer tokens, one per line (not flags: argv shows in ps)",
        )
    p.add_argument(
        "--metrics-port", type=int, metavar="PORT",
        help="serve Prometheus /metrics on this port (0 = off)",
    )
    p.add_argument("--fsync", choices=FSYNC_POLICIES, help="log fsync policy (default group)")
    p.add_argument(
        "--view-sync", action="store_true", default=None,
        help="also fsync every LMDB view commit (default off: the log is the source of truth, "
        "and a view left open across a power loss is rebuilt from it)",
    )
    p.add_argument(
        "--insecure", action="store_true", default=None,
        help="allow plaintext on a non-loopback --host",
    )
    p.add_argument(
        "--grace", type=float, metavar="SECONDS",
        help="shutdown grace for in-flight RPCs (default 10)",
    )
    p.add_argument(
        "--jobs", nargs="+", metavar="PATH",
        help="job files or directories of *.toml to run on their [schedule] every",
    )
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def add_serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``serve`` on the main CLI's subparsers; the parsed args carry ``func=run_serve``."""

    parser = subparsers.add_parser(
        "serve",
        help="run the gRPC replay service",
        description="Run the replaybuf gRPC service on a data directory until SIGTERM/SIGINT, "
        "then shut down gracefully (in-flight appends finish and are fsynced).",
    )
    add_serve_arguments(parser)
    parser.set_defaults(func=run_serve)
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Build the config: the TOML file (if any), then every flag that was given."""

    overrides: dict[str, Any] = {}
    for name in (
        "data_dir", "host", "port", "max_message_bytes", "workers", "tls_cert", "tls_key",
        "tls_client_ca", "metrics_port", "fsync", "view_sync", "insecure", "grace",
    ):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "jobs", None):
        overrides["jobs"] = tuple(args.jobs)
    for role in ROLES:
        path = getattr(args, f"{role}_token_file", None)
        if path is not None:
            overrides[f"{role}_tokens"] = read_token_file(path)
    if args.config:
        return ServerConfig.from_toml(args.config, **overrides)
    return ServerConfig.from_mapping(overrides, source="command line")


def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""

    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "INFO")).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_args(args)
    except ReplayError as exc:
        print(f"replaybuf serve: {exc}", file=sys.stderr)
        return 2

    from .server import ReplayServer  # grpc and the engine load only when serving

    stop_requested = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        stop_requested.set()

    def on_fatal(exc: BaseException) -> None:
        # fsyncgate: after a failed write or fsync nothing may be acked again; restart and let
        # recovery truncate to what is really on disk.
        print(f"replaybuf serve: fatal log error, exiting: {exc}", file=sys.stderr, flush=True)
        os._exit(_EXIT_FATAL)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    server = ReplayServer(config, on_fatal=on_fatal)
    try:
        try:
            server.start()
        except ReplayError as exc:
            print(f"replaybuf serve: {exc}", file=sys.stderr)
            return 1
        except Exception:
            _logger.exception("replaybuf serve: the server could not start")
            return 1
        print(f"replaybuf serving on {server.address}", flush=True)
        if server.metrics_port is not None:
            print(f"replaybuf metrics on http://{server.metrics_address}/metrics", flush=True)
        while not stop_requested.wait(0.5):
            if server.wait(timeout=0):
                break  # stopped from elsewhere (e.g. a fatal engine error)
        if received:
            _logger.info(
                "received %s, shutting down (grace %.1f s)",
                signal.Signals(received[0]).name, config.grace,
            )
        server.stop()
        _logger.info("replaybuf server stopped cleanly")
        return 0
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m replaybuf_server [flags]``: the ``serve`` command on its own."""

    parser = argparse.ArgumentParser(
        prog="python -m replaybuf_server",
        description="Run the replaybuf gRPC service (same flags as `replaybuf serve`).",
    )
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))
