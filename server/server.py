"""`ReplayServer`: the gRPC server around one engine, with health, reflection, auth and metrics.

Example::

    with ReplayServer(ServerConfig(data_dir="data", port=0)) as server:
        channel = grpc.insecure_channel(server.address)
        ...                      # serve until the block ends, then shut down gracefully

Shutdown (`stop`, also on SIGTERM/SIGINT in ``replaybuf serve``): health turns NOT_SERVING,
open streams are told to end (an Append stream finishes the batch it is writing, acks it, and
ends with UNAVAILABLE), new RPCs are refused, in-flight RPCs get `ServerConfig.grace` seconds,
then every engine call still running is waited for and the engine is closed (log synced, LMDB
closed). Every acknowledged append is therefore in the log when `stop` returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from replaybuf.errors import ClosedError
from replaybuf.v1 import service_pb2

from .auth import SERVICE, TokenAuthInterceptor
from .config import ServerConfig, format_address
from .metrics import ServerMetrics
from .servicer import ReplayServicer, add_servicer_to_server, engine_snapshot, open_engine

__all__ = ["ReplayServer"]

_logger = logging.getLogger("replaybuf_server")


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class ReplayServer:
    """Serves ``replaybuf.v1.ReplayService`` on one engine.

    Args:
        config: the settings.
        engine: an open `replaybuf.engine.Engine` to serve; the server then leaves it open on
            `stop` (its owner closes it). By default the server opens one on
            ``config.data_dir`` at `start` and closes it on `stop`.

        on_fatal: called (from the failing thread) when the engine's log cannot write or
            fsync; the engine then refuses every call, so the process should exit and recover
            from the log on restart. ``replaybuf serve`` exits with status 70. By default the
            server logs the error and turns its health to NOT_SERVING.

    `start`, `stop` and `wait` may be called from any thread; `stop` is idempotent.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        engine: Any = None,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.config = config
        self._on_fatal = on_fatal
        self._engine = engine
        self._owns_engine = engine is None
        self._server: grpc.Server | None = None
        self._servicer: ReplayServicer | None = None
        self._health: health.HealthServicer | None = None
        self._metrics: ServerMetrics | None = None
        self._port: int | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._started = False
        self._jobs: Any = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> ReplayServer:
        """Open the engine (unless given), bind and start serving. Returns self.

        Raises:
            ClosedError: the server was already stopped (a server starts once).
            UnavailableError: the address could not be bound.
        """

        with self._lock:
            if self._stopped.is_set():
                raise ClosedError("this ReplayServer was stopped; create a new one to serve again")
            if self._started:
                return self
            try:
                self._start_locked()
            except BaseException:
                self._teardown(grace=0)
                raise
            self._started = True
        return self

    def _start_locked(self) -> None:
        cfg = self.config
        if self._engine is None:
            self._engine = open_engine(cfg, on_fatal=self._fatal)
        engine = self._engine
        if cfg.jobs:  # before binding: a bad job file stops the start
            from replaybuf.jobs.scheduler import JobScheduler, load_scheduled_jobs

            self._jobs = JobScheduler(engine, load_scheduled_jobs(cfg.jobs))
            engine.add_table_metrics(self._jobs.metrics)
        self._metrics = ServerMetrics(lambda: engine_snapshot(engine))
        self._servicer = ReplayServicer(
            engine, metrics=self._metrics, max_message_bytes=cfg.max_message_bytes
        )
        interceptors = []
        if cfg.auth_enabled:
            interceptors.append(
                TokenAuthInterceptor(
                    {
                        "admin": cfg.admin_tokens,
                        "writer": cfg.writer_tokens,
                        "sampler": cfg.sampler_tokens,
                    },
                    on_denied=lambda method, code: self._metrics.observe(method, code, None)
                    if self._metrics
                    else None,
                )
            )
        options = [
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            # One server per port: never share the port with a stale process (SO_REUSEPORT).
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="replaybuf-rpc"),
            interceptors=interceptors,
            options=options,
            maximum_concurrent_rpcs=cfg.workers,
        )
        add_servicer_to_server(self._servicer, server)
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (
                service_pb2.DESCRIPTOR.services_by_name["ReplayService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        address = format_address(cfg.host, cfg.port)
        try:
            if cfg.tls:
                assert cfg.tls_cert is not None and cfg.tls_key is not None
                creds = grpc.ssl_server_credentials(
                    [(_read(cfg.tls_key), _read(cfg.tls_cert))],
                    root_certificates=_read(cfg.tls_client_ca) if cfg.tls_client_ca else None,
                    require_client_auth=cfg.tls_client_ca is not None,
                )
                port = server.add_secure_port(address, creds)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
            from replaybuf.errors import UnavailableError

            raise UnavailableError(f"cannot bind {address}: {exc}; is the port in use?") from exc
        self._server = server
        self._port = port
        server.start()
        for name in ("", SERVICE):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if cfg.metrics_port:
            self._metrics.serve_http(cfg.host, cfg.metrics_port)
        if self._jobs is not None:
            self._jobs.start()
        _logger.info(
            "replaybuf serving on %s (tls=%s, mtls=%s, auth=%s, fsync=%s, data_dir=%s)",
            self.address, cfg.tls, cfg.tls_client_ca is not None, cfg.auth_enabled,
            cfg.fsync, cfg.data_dir,
        )

    def _fatal(self, exc: BaseException) -> None:
        _logger.critical("the event log failed (%s); the engine refuses every call now", exc)
        if self._health is not None:
            self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            self._health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._on_fatal is not None:
            self._on_fatal(exc)

    def stop(self, grace: float | None = None) -> None:
        """Shut down gracefully (see the module doc) and return when everything is closed.

        Args:
            grace: seconds in-flight RPCs may take; default `ServerConfig.grace`.
        """

        with self._lock:
            if self._stopped.is_set():
                return
            try:
                self._teardown(self.config.grace if grace is None else grace)
            finally:
                self._stopped.set()

    def _teardown(self, grace: float) -> None:
        if self._jobs is not None:
            self._jobs.stop()
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        if self._servicer is not None:
            self._servicer.begin_shutdown()
        if self._server is not None:
            self._server.stop(grace).wait()
        if self._servicer is not None:
            # Handlers cancelled by the grace period may still be inside the engine.
            if not self._servicer.drain(timeout=max(5.0, grace)):
                _logger.warning("engine calls still running after shutdown; closing anyway")
        if self._metrics is not None:
            self._metrics.close()
        if self._owns_engine and self._engine is not None:
            self._engine.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped; returns False on timeout."""

        return self._stopped.wait(timeout)

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the real one when the config said 0)."""

        if self._port is None:
            raise ClosedError("the server is not started; call start() first")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` of the bound address."""

        return format_address(self.config.host, self.port)

    @property
    def metrics_port(self) -> int | None:
        """Port of the ``/metrics`` endpoint, or None when it is off."""

        return self._metrics.http_port if self._metrics is not None else None

    @property
    def metrics_address(self) -> str | None:
        port = self.metrics_port
        return None if port is None else format_address(self.config.host, port)

    @property
    def engine(self) -> Any:
        """The engine served."""

        return self._engine

    @property
    def metrics(self) -> ServerMetrics | None:
        return self._metrics
