"""replaybuf_server: the gRPC service around the replaybuf engine.

Serve a data directory from Python::

    from replaybuf_server import ReplayServer, ServerConfig

    with ReplayServer(ServerConfig(data_dir="data", port=0)) as server:
        print(server.address)  # connect clients here; leaving the block shuts down gracefully

or from the shell: ``replaybuf serve --data-dir data --port 50051`` (``python -m
replaybuf_server`` takes the same flags). Modules load lazily, so ``--help`` and config errors
do not wait for grpc and numba to import.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "ReplayServer": "replaybuf_server.server",
    "ServerConfig": "replaybuf_server.config",
    "ReplayServicer": "replaybuf_server.servicer",
    "ServerMetrics": "replaybuf_server.metrics",
    "TokenAuthInterceptor": "replaybuf_server.auth",
    "RPC_ROLES": "replaybuf_server.auth",
    "ERROR_TRAILER": "replaybuf_server.status",
    "add_serve_parser": "replaybuf_server.cli",
    "run_serve": "replaybuf_server.cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'replaybuf_server' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
