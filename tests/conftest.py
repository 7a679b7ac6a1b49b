"""Fixtures shared by the test modules: real replaybuf servers and a failing network between.

- `make_replay_server` / `replay_server`: a real `ReplayServer` (engine, file log, LMDB) in this
  process, on 127.0.0.1:0 and a tmp data dir, with ``fsync="none"`` unless durability is the
  point; `LocalServer.restart` brings it back on the same port and data dir.
- `make_server_process`: the same server in a child process (``python -m replaybuf_server``),
  for crash tests: `ServerProcess.kill` sends SIGKILL, `ServerProcess.start` restarts it on the
  same port and data dir, where recovery replays the log.
- `make_proxy`: a `TcpProxy` (tests/_tcp_proxy.py) to cut, refuse or hold connections for real.
- `signature` / `transitions`: the table signature and numbered batches the client tests write.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _tcp_proxy import TcpProxy

REPO = Path(__file__).resolve().parents[1]

SIGNATURE = {"obs": (np.float32, (3,)), "action": np.int32, "reward": np.float32, "done": np.bool_}


def make_transitions(n: int, start: int = 0) -> dict[str, np.ndarray]:
    """n transitions of `SIGNATURE` numbered start, start + 1, ... in ``obs[:, 0]`` and ``action``."""

    obs = np.zeros((n, 3), np.float32)
    obs[:, 0] = np.arange(start, start + n)
    return {
        "obs": obs,
        "action": np.arange(start, start + n, dtype=np.int32),
        "reward": np.ones(n, np.float32),
        "done": np.zeros(n, np.bool_),
    }


@pytest.fixture(scope="session")
def signature() -> dict[str, Any]:
    """``{"obs": float32 (3,), "action": int32, "reward": float32, "done": bool}``."""

    return dict(SIGNATURE)


@pytest.fixture(scope="session")
def transitions() -> Callable[..., dict[str, np.ndarray]]:
    """``transitions(n, start=0)``: n numbered transitions of the `signature` fixture."""

    return make_transitions


# -- in-process servers ------------------------------------------------------------------------


class LocalServer:
    """A real `ReplayServer` in this process on 127.0.0.1, restartable on its port and data dir."""

    def __init__(self, data_dir: Path, engine: Any = None, **config: Any) -> None:
        from replaybuf_server.config import ServerConfig

        config.setdefault("port", 0)
        config.setdefault("fsync", "none")
        config.setdefault("grace", 1.0)
        self.data_dir = data_dir
        self.config = ServerConfig(data_dir=str(data_dir), **config)
        self._engine = engine
        self.server: Any = None
        self.start()

    def start(self) -> LocalServer:
        """Serve again (on the port bound first, so clients reconnect to the same address)."""

        from replaybuf_server.server import ReplayServer

        self.server = ReplayServer(self.config, engine=self._engine).start()
        self.config = self.config.replace(port=self.server.port)
        return self

    def stop(self, grace: float | None = 0) -> None:
        if self.server is not None:
            self.server.stop(grace=grace)

    def restart(self) -> None:
        """Stop (open streams end with UNAVAILABLE) and serve again on the same port and data."""

        self.stop()
        self.start()

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def port(self) -> int:
        return int(self.server.port)

    @property
    def engine(self) -> Any:
        return self.server.engine

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"


class _ServerFactory:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.servers: list[LocalServer] = []

    def __call__(self, engine: Any = None, **config: Any) -> LocalServer:
        data_dir = Path(config.pop("data_dir", self.base / f"server{len(self.servers)}"))
        server = LocalServer(data_dir, engine=engine, **config)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def make_replay_server(tmp_path: Path) -> Iterator[Callable[..., LocalServer]]:
    """``make_replay_server(engine=None, **ServerConfig fields)``: a started `LocalServer` on
    127.0.0.1:0 with its own data dir under tmp_path and fsync="none" by default; stopped at
    teardown."""

    factory = _ServerFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def replay_server(make_replay_server: Callable[..., LocalServer]) -> LocalServer:
    """One started `LocalServer` (no tables)."""

    return make_replay_server()


@pytest.fixture(scope="module")
def module_replay_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """One `LocalServer` shared by a module's tests (give each test its own table names)."""

    factory = _ServerFactory(tmp_path_factory.mktemp("module-server"))
    yield factory()
    factory.stop_all()


# -- server processes ----------------------------------------------------------------------------

# The server embedded as an application would (the default on_fatal keeps the process up and
# answers DurabilityError), with SIGXFSZ ignored so a write past RLIMIT_FSIZE fails with EFBIG.
_EMBEDDED = r"""
import signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from replaybuf_server import ReplayServer, ServerConfig
config = ServerConfig(data_dir=sys.argv[1], port=int(sys.argv[2]), fsync=sys.argv[3])
with ReplayServer(config) as server:
    print(f"replaybuf serving on {server.address}", flush=True)
    sys.stdin.read()
"""


class ServerProcess:
    """A real replaybuf server in a child process, killable with SIGKILL and restartable.

    ``embedded=False`` runs ``python -m replaybuf_server`` (which exits with status 70 on a
    fatal log error); ``embedded=True`` runs a `ReplayServer` with the default ``on_fatal``.
    """

    def __init__(self, data_dir: Path, *, fsync: str = "group", embedded: bool = False) -> None:
        self.data_dir = data_dir
        self.fsync = fsync
        self.embedded = embedded
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self._stderr = data_dir.with_name(data_dir.name + ".stderr")

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Start on `port` (0 the first time) and wait until it serves."""

        if self.embedded:
            argv = ["-c", _EMBEDDED, str(self.data_dir), str(self.port), self.fsync]
            stderr: Any = subprocess.DEVNULL  # no regular file: RLIMIT_FSIZE would cap it too
        else:
            argv = ["-m", "replaybuf_server", "--data-dir", str(self.data_dir),
                    "--port", str(self.port), "--fsync", self.fsync, "--grace", "1"]
            stderr = open(self._stderr, "a")  # noqa: SIM115 - the child owns it from here
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, *argv], cwd=REPO, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        )
        if stderr is not subprocess.DEVNULL:
            stderr.close()
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith("replaybuf serving on "):
                    self.port = int(line.rsplit(":", 1)[1])
                    return self
                if not line:
                    break
        self.kill()
        raise AssertionError(f"the server process did not start: {self.stderr_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync; the next start recovers from the log."""

        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        code = self.proc.wait(timeout)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        return code

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    def stderr_text(self) -> str:
        return self._stderr.read_text() if self._stderr.exists() else "(stderr not kept)"


@pytest.fixture
def make_server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``make_server_process(fsync="group", embedded=False)``: a started `ServerProcess` with its
    own data dir under tmp_path; killed at teardown."""

    procs: list[ServerProcess] = []

    def make(**kwargs: Any) -> ServerProcess:
        proc = ServerProcess(tmp_path / f"proc{len(procs)}", **kwargs)
        procs.append(proc)
        return proc.start()

    yield make
    for proc in procs:
        proc.kill()


# -- proxies -------------------------------------------------------------------------------------


@pytest.fixture
def make_proxy() -> Iterator[Callable[[str], TcpProxy]]:
    """``make_proxy(target_address)``: a started `TcpProxy` on 127.0.0.1:0; closed at teardown."""

    proxies: list[TcpProxy] = []

    def make(target: str) -> TcpProxy:
        proxy = TcpProxy(target)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()
