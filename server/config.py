"""`ServerConfig`: every setting of ``replaybuf serve``, as one frozen, validated dataclass.

Settings come from keyword arguments, a TOML file (:meth:`ServerConfig.from_toml`, keys are
the field names) or both (keyword arguments win), and the command line builds on that.

Example::

    config = ServerConfig(data_dir="/var/lib/replaybuf", port=0)
    config = ServerConfig.from_toml("serve.toml", port=7070)

A TOML file::

    data_dir = "/var/lib/replaybuf"
    host = "0.0.0.0"
    port = 50051
    tls_cert = "/etc/replaybuf/server.pem"
    tls_key = "/etc/replaybuf/server.key"
    tls_client_ca = "/etc/replaybuf/clients-ca.pem"   # mTLS: clients must present a cert
    admin_tokens = ["..."]
    writer_token_file = "/etc/replaybuf/writer.tokens" # one token per line
    metrics_port = 9464
    fsync = "group"
    view_sync = false                                  # the log is fsynced; the view need not be
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from replaybuf.errors import InvalidArgumentError
from replaybuf.log import FSYNC_POLICIES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["ServerConfig", "ROLES", "format_address", "is_loopback", "read_token_file"]

#: The roles a bearer token can carry (see `replaybuf_server.auth` for what each may call).
ROLES = ("admin", "writer", "sampler")

_MIN_MESSAGE_BYTES = 64 * 1024
_MAX_MESSAGE_BYTES = 2**31 - 1  # gRPC lengths are int32
_TOKEN = re.compile(r"^[\x21-\x7e]{16,4096}$")  # printable ASCII, no spaces (HTTP/2 header safe)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, ``localhost``).

    Host names other than ``localhost`` count as non-loopback: they may resolve anywhere.
    """

    name = host.strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def read_token_file(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Tokens from a file: one per line; blank lines and lines starting with ``#`` are skipped."""

    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read token file {os.fspath(path)!r}: {exc}") from exc
    return tuple(s.strip() for s in lines if s.strip() and not s.strip().startswith("#"))


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class ServerConfig:
    """Settings of a replaybuf gRPC server. Validated on construction.

    Example::

        ServerConfig(data_dir="data", host="0.0.0.0", tls_cert="s.pem", tls_key="s.key")
    """

    data_dir: str
    """Directory of the engine's event log and LMDB view (created if missing). One server owns
    it at a time."""

    host: str = "127.0.0.1"
    """Address to bind. The loopback default is reachable from this machine only. Any other
    address (e.g. ``"0.0.0.0"``) needs TLS (`tls_cert`, `tls_key`) or `insecure`."""

    port: int = 50051
    """TCP port; 0 picks a free one (the server prints the bound address)."""

    max_message_bytes: int = 64 * 2**20
    """Largest request (and response) message, in bytes. Larger requests are refused by gRPC
    with RESOURCE_EXHAUSTED before they are decoded; a sample batch that would encode larger
    fails with RESOURCE_EXHAUSTED naming this setting. Raise it for big observations, or send
    smaller batches. Clients need a matching ``grpc.max_receive_message_length``."""

    workers: int = 32
    """Threads serving RPCs. A stream (Append, Sample, SampleStream, Subscribe) holds one for
    its lifetime; at most this many RPCs run at once, more are refused with
    RESOURCE_EXHAUSTED."""

    tls_cert: str | None = None
    """PEM file of the server certificate chain; with `tls_key`, serve TLS only."""

    tls_key: str | None = None
    """PEM file of the server's private key."""

    tls_client_ca: str | None = None
    """PEM file of the CA(s) that sign client certificates. Set it for mutual TLS: clients
    without a certificate from these CAs are refused during the handshake."""

    admin_tokens: tuple[str, ...] = ()
    """Bearer tokens of the ``admin`` role (every RPC). When no token of any role is set, the
    server does not check tokens at all."""

    writer_tokens: tuple[str, ...] = ()
    """Bearer tokens of the ``writer`` role (Append, UpdatePriorities, CorrectRewards and the
    table metadata RPCs)."""

    sampler_tokens: tuple[str, ...] = ()
    """Bearer tokens of the ``sampler`` role (Sample, SampleStream and every read-only RPC). A learner that
    also updates priorities uses a token listed under both ``writer`` and ``sampler``."""

    metrics_port: int = 0
    """Port of the Prometheus ``/metrics`` HTTP endpoint on `host`; 0 = no endpoint. The
    endpoint is unauthenticated: keep it on loopback or a private network."""

    fsync: str = "group"
    """The event log's fsync policy (``always``, ``group``, ``interval``, ``none``). ``group``
    (default) acks appends once fsynced, surviving power loss, at about one fdatasync per
    group of concurrent appends; ``interval`` acks before the fsync (a power loss may lose the
    last ~50 ms of acks; a process crash loses nothing); ``none`` is for tests."""

    view_sync: bool = False
    """fsync every commit of the LMDB view too (`EngineConfig.view_sync`). Off by default: the
    log is the source of truth and is fsynced; a view left open across an OS crash or power
    loss is rebuilt from the log at the next start. On: no such rebuild, slower appends."""

    insecure: bool = False
    """Allow plaintext on a non-loopback `host`. Anyone on the network can then read the data
    and the bearer tokens; use only on a trusted network."""

    grace: float = 10.0
    """Seconds that a graceful shutdown (SIGTERM, SIGINT, `ReplayServer.stop`) gives in-flight
    RPCs to finish before they are cancelled. Streams are told to end at once; an append that
    is being written always completes and is fsynced before the engine closes."""

    jobs: tuple[str, ...] = ()
    """Job files or directories of them (``*.toml``) to run on their ``[schedule] every`` in
    the server process (`replaybuf.jobs.scheduler`); each file needs a ``[schedule]``."""

    def __post_init__(self) -> None:
        if not isinstance(self.data_dir, (str, os.PathLike)) or not os.fspath(self.data_dir):
            raise InvalidArgumentError(
                f"ServerConfig.data_dir={self.data_dir!r} must be a directory path "
                "(--data-dir DIR), where the event log and view live"
            )
        object.__setattr__(self, "data_dir", os.fspath(self.data_dir))
        if not isinstance(self.host, str) or not self.host:
            raise InvalidArgumentError(
                f"ServerConfig.host={self.host!r} must be an address such as '127.0.0.1' or '0.0.0.0'"
            )
        if not _is_int(self.port) or not 0 <= self.port <= 65535:
            raise InvalidArgumentError(
                f"ServerConfig.port={self.port!r} must be an int in [0, 65535] (0 = any free port)"
            )
        if not _is_int(self.max_message_bytes) or not (
            _MIN_MESSAGE_BYTES <= self.max_message_bytes <= _MAX_MESSAGE_BYTES
        ):
            raise InvalidArgumentError(
                f"ServerConfig.max_message_bytes={self.max_message_bytes!r} must be an int in "
                f"[{_MIN_MESSAGE_BYTES}, {_MAX_MESSAGE_BYTES}] (the default is 64 MiB)"
            )
        if not _is_int(self.workers) or not 1 <= self.workers <= 4096:
            raise InvalidArgumentError(
                f"ServerConfig.workers={self.workers!r} must be an int in [1, 4096]; each open "
                "stream holds one worker, so allow for every actor, learner and subscriber"
            )
        for name in ("tls_cert", "tls_key", "tls_client_ca"):
            value = getattr(self, name)
            if value is None:
                continue
            value = os.fspath(value)
            object.__setattr__(self, name, value)
            if not os.path.isfile(value):
                raise InvalidArgumentError(
                    f"ServerConfig.{name}={value!r} is not a readable file; give a PEM file path"
                )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidArgumentError(
                "ServerConfig.tls_cert and tls_key go together: give both (--tls-cert, --tls-key) "
                f"or neither (got tls_cert={self.tls_cert!r}, tls_key={self.tls_key!r})"
            )
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise InvalidArgumentError(
                f"ServerConfig.tls_client_ca={self.tls_client_ca!r} needs TLS: give tls_cert and "
                "tls_key too (mutual TLS is TLS plus client certificates)"
            )
        for role in ROLES:
            name = f"{role}_tokens"
            tokens = getattr(self, name)
            if isinstance(tokens, str) or not isinstance(tokens, Sequence):
                raise InvalidArgumentError(
                    f"ServerConfig.{name} must be a list of token strings, got {type(tokens).__name__}"
                )
            tokens = tuple(tokens)
            for i, token in enumerate(tokens):
                if not isinstance(token, str) or not _TOKEN.match(token):
                    raise InvalidArgumentError(
                        f"ServerConfig.{name}[{i}] is not a valid token: tokens are 16 to 4096 "
                        "printable ASCII characters without spaces (e.g. `openssl rand -hex 32`)"
                    )
            object.__setattr__(self, name, tokens)
        if not _is_int(self.metrics_port) or not 0 <= self.metrics_port <= 65535:
            raise InvalidArgumentError(
                f"ServerConfig.metrics_port={self.metrics_port!r} must be an int in [0, 65535] "
                "(0 = no metrics endpoint)"
            )
        if self.fsync not in FSYNC_POLICIES:
            raise InvalidArgumentError(
                f"ServerConfig.fsync={self.fsync!r} is not a known policy; use one of "
                f"{FSYNC_POLICIES} ('group' for durable acks at low cost)"
            )
        for name in ("insecure", "view_sync"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgumentError(
                    f"ServerConfig.{name}={getattr(self, name)!r} must be a bool")
        if (
            not isinstance(self.grace, (int, float))
            or isinstance(self.grace, bool)
            or not math.isfinite(self.grace)
            or not 0 <= self.grace <= 3600
        ):
            raise InvalidArgumentError(
                f"ServerConfig.grace={self.grace!r} must be seconds in [0, 3600]"
            )
        if not self.tls and not self.insecure and not is_loopback(self.host):
            raise InvalidArgumentError(
                f"refusing to serve plaintext on non-loopback address {self.host!r}: anyone on "
                "the network could read the data and tokens. Give --tls-cert and --tls-key, "
                "bind 127.0.0.1, or pass --insecure on a trusted network"
            )

    @property
    def tls(self) -> bool:
        """True when the server serves TLS."""

        return self.tls_cert is not None

    @property
    def auth_enabled(self) -> bool:
        """True when at least one bearer token is configured (then every RPC needs one)."""

        return bool(self.admin_tokens or self.writer_tokens or self.sampler_tokens)

    @property
    def address(self) -> str:
        """``host:port`` as gRPC wants it (IPv6 hosts in brackets)."""

        return format_address(self.host, self.port)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "config") -> ServerConfig:
        """Build from a mapping of field names (e.g. a parsed TOML file).

        Besides the fields, ``admin_token_file``, ``writer_token_file`` and
        ``sampler_token_file`` name files of tokens (one per line) added to that role.
        Relative paths are taken as they are (relative to the working directory).
        """

        names = {f.name for f in dataclasses.fields(cls)}
        token_files = {f"{role}_token_file" for role in ROLES}
        unknown = sorted(set(values) - names - token_files)
        if unknown:
            raise InvalidArgumentError(
                f"{source}: unknown setting(s) {unknown}; known settings are "
                f"{sorted(names | token_files)}"
            )
        kwargs: dict[str, Any] = {k: v for k, v in values.items() if k in names}
        for role in ROLES:
            path = values.get(f"{role}_token_file")
            if path is not None:
                kwargs[f"{role}_tokens"] = tuple(kwargs.get(f"{role}_tokens", ())) + read_token_file(path)
        for role in ROLES:
            name = f"{role}_tokens"
            if name in kwargs and isinstance(kwargs[name], list):
                kwargs[name] = tuple(kwargs[name])
        if "data_dir" not in kwargs:
            raise InvalidArgumentError(f"{source}: data_dir is required (or --data-dir DIR)")
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], **overrides: Any) -> ServerConfig:
        """Load settings from a TOML file (keys = field names); ``overrides`` win over it."""

        try:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read config file {os.fspath(path)!r}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgumentError(f"config file {os.fspath(path)!r} is not valid TOML: {exc}") from exc
        values.update(overrides)
        return cls.from_mapping(values, source=os.fspath(path))

    def replace(self, **changes: Any) -> ServerConfig:
        """A copy with some fields changed (validated again)."""

        return dataclasses.replace(self, **changes)


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 addresses in brackets."""

    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"

