"""Helpers of the server tests: raw generated stubs, tables, batches, TLS files."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from _polling import settled, wait_until
import numpy as np
from replaybuf.table_config import TableConfig
from replaybuf.tensors import to_batch
from replaybuf.v1 import service_pb2, service_pb2_grpc

ADMIN = "admin-token-0123456789abcdef"
WRITER = "writer-token-0123456789abcdef"
SAMPLER = "sampler-token-0123456789abcdef"
LEARNER = "learner-token-0123456789abcdef"  # listed as writer and sampler

OBS = (3,)


def table_config(name: str = "replay", capacity: int = 1000, **kwargs: Any) -> TableConfig:
    return TableConfig(
        name, {"obs": (np.float32, OBS), "action": np.int64, "reward": np.float32},
        capacity=capacity, **kwargs,
    )


def batch(n: int, start: float = 0.0) -> dict[str, np.ndarray]:
    return {
        "obs": (np.arange(n * 3, dtype=np.float32).reshape(n, 3) + start),
        "action": np.arange(n, dtype=np.int64),
        "reward": np.full(n, 0.5, np.float32),
    }


def append_request(table: str = "replay", n: int = 4, **kwargs: Any) -> service_pb2.AppendRequest:
    return service_pb2.AppendRequest(table=table, data=to_batch(batch(n)), **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Client:
    """A raw stub plus the metadata to send with every call."""

    channel: grpc.Channel
    stub: service_pb2_grpc.ReplayServiceStub
    metadata: tuple[tuple[str, str], ...] = ()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("metadata", self.metadata)
            kwargs.setdefault("timeout", 30)
            return method(request, **kwargs)

        return call


def connect(address: str, token: str | None = None, credentials: grpc.ChannelCredentials | None = None,
            **options: Any) -> Client:
    opts = [("grpc.max_receive_message_length", 256 * 2**20)] + list(options.items())
    if credentials is None:
        channel = grpc.insecure_channel(address, options=opts)
    else:
        channel = grpc.secure_channel(address, credentials, options=opts)
    md = (("authorization", f"Bearer {token}"),) if token else ()
    return Client(channel, service_pb2_grpc.ReplayServiceStub(channel), md)


def error_name(err: grpc.RpcError) -> str | None:
    for key, value in err.trailing_metadata() or ():
        if key == "replaybuf-error":
            return value
    return None


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_leaf(d: Path, name: str, ca: str, ext: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
             cwd=d)


def make_tls_files(d: Path) -> TlsFiles:
    """A throwaway CA with a server cert (localhost, 127.0.0.1) and a client cert, plus a
    second CA with its own client cert (which the server must refuse under mTLS)."""

    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _make_leaf(d, "server", "ca",
               "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _make_leaf(d, "client", "ca", "extendedKeyUsage=clientAuth\n")
    _make_leaf(d, "intruder", "other-ca", "extendedKeyUsage=clientAuth\n")
    return TlsFiles(
        ca=d / "ca.pem", server_cert=d / "server.pem", server_key=d / "server.key",
        client_cert=d / "client.pem", client_key=d / "client.key", other_ca=d / "other-ca.pem",
        other_client_cert=d / "intruder.pem", other_client_key=d / "intruder.key",
    )
