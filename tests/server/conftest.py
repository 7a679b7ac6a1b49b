"""Fixtures of the server tests: real servers on 127.0.0.1:0, clients, TLS files."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from server_helpers import Client, TlsFiles, connect, make_tls_files, table_config

from replaybuf.v1 import service_pb2
from replaybuf_server.config import ServerConfig
from replaybuf_server.server import ReplayServer


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ReplayServer]]:
    """``make_server(**config)``: a started server on 127.0.0.1:0 (stopped at teardown)."""

    servers: list[ReplayServer] = []

    def make(engine: Any = None, **kwargs: Any) -> ReplayServer:
        kwargs.setdefault("data_dir", str(tmp_path / f"data{len(servers)}"))
        kwargs.setdefault("port", 0)
        kwargs.setdefault("fsync", "none")
        kwargs.setdefault("grace", 2.0)
        server = ReplayServer(ServerConfig(**kwargs), engine=engine)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop(grace=0)


@pytest.fixture
def server(make_server: Callable[..., ReplayServer]) -> ReplayServer:
    """A started server with table ``replay`` created."""

    srv = make_server()
    client = connect(srv.address)
    client.CreateTable(service_pb2.CreateTableRequest(config=table_config().to_proto()))
    client.channel.close()
    return srv


@pytest.fixture
def client(server: ReplayServer) -> Iterator[Client]:
    c = connect(server.address)
    yield c
    c.channel.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    try:
        return make_tls_files(tmp_path_factory.mktemp("tls"))
    except (OSError, subprocess.CalledProcessError) as exc:  # pragma: no cover
        pytest.skip(f"openssl cannot make test certificates: {exc}")
