"""`make demo`: a real off-policy RL loop through the replaybuf service, with a crash in the middle.

Run it as ``python -m replaybuf_client.demo`` (``--quick`` for a ~20 s smoke run). What happens:

1. ``replaybuf serve`` starts as a real subprocess on an embedded data dir (``.demo-data/``),
   and a prioritized table ``cartpole`` is created with a rate limiter: a minimum size, and a
   samples-per-insert ratio so that neither the learner nor the actors can run away.
2. Actor **processes** play Gymnasium CartPole-v1, epsilon-greedy over the newest published
   Q-network, and append every transition through a `Writer` with its lineage: episode id,
   step, inference request id (``actor{k}-{n}``), model version and source.
3. The learner (this process) trains a torch Double DQN on prioritized batches from
   ``client.sampler`` (Huber loss weighted by the importance weights), sends ``|TD error|``
   back with ``update_priorities``, and every `Settings.publish_every` updates publishes a new
   model version, a file written atomically (temp file + rename) that the actors pick up.
4. Part-way through, the server is killed with SIGKILL and restarted on the same data dir and
   port. Every acknowledged LSN is still there, and the actors' writers and the learner's
   sampler ride through on their retries (appends are deduplicated by producer id and sequence).
5. At the end: the greedy learned policy's return against a random policy's, one sampled
   item's lineage, and the LSN as of which the dataset can be re-materialized.

The actors run a numpy copy of the published Q-network (no torch in them: they start faster and
leave the two cores to the server and the learner). Everything lives under ``--data-dir``:
``replay/`` (the server's log and view), ``models/policy.npz``, ``server.log``.

Exit status: 0 when the loop ran and every check held, 1 with a message on stderr otherwise,
130 when interrupted. Learning quality is reported, never checked.
"""

from __future__ import annotations

import argparse
import collections
import io
import multiprocessing as mp
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

TABLE = "cartpole"
SIGNATURE = {
    "obs": (np.float32, (4,)),
    "action": np.int64,
    "reward": np.float32,
    "next_obs": (np.float32, (4,)),
    "done": np.bool_,
}
POLICY_FILE = "policy.npz"
HIDDEN = 128

#: What the demo writes into its data dir; a non-empty dir holding anything else is not wiped.
#: (``log``/``crash-log`` are the log-level demo's, ``python -m replaybuf.demo``.)
_OWN_ENTRIES = frozenset({"replay", "models", "server.log", "log", "crash-log"})


class DemoError(Exception):
    """A step of the demo failed; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    """Everything that shapes a run (picklable: the actor processes get a copy)."""

    seconds: float
    """Seconds of acting and learning (the clock starts once the table exists)."""
    actors: int
    data_dir: Path
    quick: bool
    crash: bool
    seed: int
    batch_size: int = 64
    capacity: int = 50_000
    min_size: int = 1_000
    samples_per_insert: float = 32.0
    """Items sampled per item inserted: with batches of 64, one update per 2 env steps."""
    error_buffer: float = 64.0 * 40
    """How far the ratio may drift: about 40 batches either way."""
    gamma: float = 0.99
    lr: float = 2e-3
    target_tau: float = 0.02
    publish_every: int = 100
    """Learner updates between model versions."""
    eps_decay_steps: int = 2_500
    """Per actor: epsilon goes from 1.0 to `eps_final` over this many env steps.

    Tuned on two busy cores (10-13k updates in 100 s): lr 2e-3, tau 0.02 and this decay gave a
    greedy return of 160-500 (of 500) on seeds 0-4; lr 1e-3, tau 0.01 and 6,000 gave 95-480."""
    eps_final: float = 0.05
    eval_episodes: int = 10
    crash_at: float = 0.45
    """When the server is killed, as a fraction of `seconds`."""


def _retry_policy() -> Any:
    from replaybuf_client import RetryPolicy

    # Patient enough to ride through a server restart (a few seconds), quick to reconnect.
    return RetryPolicy(max_attempts=120, initial_backoff=0.05, max_backoff=0.5)


# -- actors (separate processes, no torch) -----------------------------------------------------


class _NumpyPolicy:
    """The newest published Q-network, reloaded when the policy file is replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.version = -1
        self._stamp: tuple[int, int] | None = None
        self._weights: list[np.ndarray] = []
        self.refresh()

    def refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            with np.load(self.path) as f:  # the file is replaced whole (rename), never edited
                self._weights = [f[f"w{i}"] for i in range(6)]
                self.version = int(f["version"])
            self._stamp = stamp

    def q(self, obs: np.ndarray) -> np.ndarray:
        w1, b1, w2, b2, w3, b3 = self._weights
        h = np.maximum(obs @ w1 + b1, 0.0)
        h = np.maximum(h @ w2 + b2, 0.0)
        return h @ w3 + b3


def _actor_main(k: int, address_q: Any, model_dir: str, settings: Settings,
                stop: Any, events: Any) -> None:
    """Actor process ``k``: CartPole, epsilon-greedy, every transition appended with lineage.

    Started while the server boots: it imports, then waits for the server's address (sent once
    the table exists and model version 0 is published). Reports acks, episodes and its final
    counters on ``events``.
    """

    try:
        import gymnasium as gym

        from replaybuf_client import ReplayClient

        address = address_q.get()
        if address is None:  # the demo failed before the table existed
            return
        policy = _NumpyPolicy(Path(model_dir) / POLICY_FILE)
        while policy.version < 0:
            time.sleep(0.05)
            policy.refresh()
        rng = np.random.default_rng(settings.seed * 1000 + k)
        env = gym.make("CartPole-v1")
        client = ReplayClient(address, retry=_retry_policy())

        def on_ack(ack: Any) -> None:
            events.put(("ack", k, len(ack.item_ids), ack.last_lsn))

        writer = client.writer(TABLE, max_batch=32, flush_interval=0.1, max_in_flight=8,
                               on_ack=on_ack)
        obs = env.reset(seed=settings.seed * 1000 + k)[0].astype(np.float32)
        episode, step, total, ret = k * 1_000_000, 0, 0, 0.0
        decay = (1.0 - settings.eps_final) / settings.eps_decay_steps
        while not stop.is_set():
            if total % 25 == 0:
                policy.refresh()
            eps = max(settings.eps_final, 1.0 - total * decay)
            if rng.random() < eps:
                action = int(rng.integers(2))
            else:
                action = int(np.argmax(policy.q(obs)))
            next_obs, reward, terminated, truncated, _ = env.step(action)
            next_obs = next_obs.astype(np.float32)
            writer.add(
                obs=obs, action=action, reward=float(reward), next_obs=next_obs,
                done=bool(terminated),  # a time-limit truncation still bootstraps
                lineage={
                    "episode_id": episode,
                    "step": step,
                    "request_id": f"actor{k}-{total}",
                    "model_version": policy.version,
                    "source": f"actor{k}",
                },
            )
            ret += float(reward)
            step += 1
            total += 1
            obs = next_obs
            if terminated or truncated:
                events.put(("episode", k, ret))
                obs = env.reset()[0].astype(np.float32)
                episode, step, ret = episode + 1, 0, 0.0
        writer.close()  # flushes: every transition added is acknowledged
        stats = writer.stats
        client.close()
        events.put(("done", k, total, stats.items_acked, stats.reconnects, stats.duplicates))
    except KeyboardInterrupt:
        return  # Ctrl-C reaches the whole process group; the main process reports it
    except BaseException as exc:  # noqa: BLE001 - reported to the main process
        events.put(("error", k, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        raise SystemExit(1) from None


# -- the server subprocess ---------------------------------------------------------------------


class ServerProcess:
    """``python -m replaybuf_server`` as a child process; its stderr goes to ``server.log``."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.port = 0
        self._launched = 0.0
        self._lines: queue.Queue[str | None] = queue.Queue()

    def launch(self, port: int = 0) -> None:
        """Start the child (returns at once; `wait_ready` waits for its address)."""

        self._launched = time.monotonic()
        cmd = [sys.executable, "-m", "replaybuf_server", "--data-dir", str(self.data_dir),
               "--port", str(port), "--fsync", "group", "--log-level", "WARNING"]
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        self._lines = lines = queue.Queue()
        proc = self.proc

        def pump() -> None:  # keep reading stdout so the child never blocks on a full pipe
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, name="demo-server-stdout", daemon=True).start()

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait for ``replaybuf serving on HOST:PORT``; returns the seconds since `launch`."""

        assert self.proc is not None
        while True:
            left = timeout - (time.monotonic() - self._launched)
            try:
                line = self._lines.get(timeout=max(0.01, left))
            except queue.Empty:
                line = None
            if line is not None and line.startswith("replaybuf serving on "):
                self.address = line.split()[-1]
                self.port = int(self.address.rsplit(":", 1)[1])
                return time.monotonic() - self._launched
            if line is None:  # exited, or no address in time
                self.kill()
                raise DemoError(
                    f"the server did not start within {timeout:g} s (exit status "
                    f"{self.proc.poll()}); {self.log_path} ends with:\n{self.log_tail()}"
                )

    def start(self, port: int = 0) -> float:
        self.launch(port)
        return self.wait_ready()

    def log_tail(self, n: int = 15) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-n:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the clean shutdown; returns the exit status."""

        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return -signal.SIGKILL
        return self.proc.returncode


# -- the learner -------------------------------------------------------------------------------


class DQNLearner:
    """Double DQN with a Polyak-averaged target network, on importance-weighted batches."""

    def __init__(self, settings: Settings) -> None:
        import torch
        import torch.nn as nn

        torch.set_num_threads(1)  # two cores for server, actors and learner together
        torch.manual_seed(settings.seed)
        self._torch = torch
        self.s = settings

        def mlp() -> Any:
            return nn.Sequential(nn.Linear(4, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN),
                                 nn.ReLU(), nn.Linear(HIDDEN, 2))

        self.net, self.target = mlp(), mlp()
        self.target.load_state_dict(self.net.state_dict())
        self._online = list(self.net.parameters())
        self._targets = list(self.target.parameters())
        self.opt = torch.optim.Adam(self._online, lr=settings.lr, fused=True)
        self.updates = 0
        self.version = 0

    def update(self, batch: Any) -> np.ndarray:
        """One gradient step on a torch `Sample`; returns the new priorities ``|TD| + eps``."""

        torch = self._torch
        F = torch.nn.functional
        data = batch.data
        weights = torch.as_tensor(batch.info.weights, dtype=torch.float32)
        obs, next_obs = data["obs"], data["next_obs"]
        reward, done = data["reward"], data["done"].float()
        q = self.net(obs).gather(1, data["action"].long()[:, None]).squeeze(1)
        with torch.no_grad():  # Double DQN: the online net picks, the target net values
            best = self.net(next_obs).argmax(1, keepdim=True)
            next_q = self.target(next_obs).gather(1, best).squeeze(1)
            y = reward + self.s.gamma * (1.0 - done) * next_q
        loss = (weights * F.smooth_l1_loss(q, y, reduction="none")).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self._online, 10.0)
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._targets, self._online, self.s.target_tau)
        self.updates += 1
        return (y - q).detach().abs().numpy().astype(np.float64) + 1e-3

    def publish(self, model_dir: Path) -> int:
        """Write the weights as the next model version, atomically; returns the version."""

        layers = [m for m in self.net if hasattr(m, "weight")]
        arrays: dict[str, np.ndarray] = {"version": np.int64(self.version)}
        for i, layer in enumerate(layers):
            arrays[f"w{2 * i}"] = layer.weight.detach().numpy().T.copy()
            arrays[f"w{2 * i + 1}"] = layer.bias.detach().numpy().copy()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        tmp = model_dir / f".{POLICY_FILE}.tmp"
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, model_dir / POLICY_FILE)  # readers see the old file or the new one
        self.version += 1
        return self.version - 1

    def greedy(self, obs: np.ndarray) -> int:
        with self._torch.no_grad():
            return int(self.net(self._torch.as_tensor(obs, dtype=self._torch.float32)).argmax())


class PriorityUpdater:
    """Sends ``update_priorities`` from a background thread so the learner never waits for it.

    Updates that queue up meanwhile are merged into one call (the newest value of an id wins,
    which also folds an item drawn twice in one batch). ``retry=True`` is safe here: this is
    the only learner writing priorities, so a retried update cannot overwrite a newer one.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._q: queue.Queue[Any] = queue.Queue()
        self.calls = 0
        self.last_lsn = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="demo-priorities", daemon=True)
        self._thread.start()

    def put(self, ids: np.ndarray, priorities: np.ndarray) -> None:
        self._check()
        self._q.put((ids, priorities))

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(60)
        self._check()

    def _check(self) -> None:
        if self.error is not None:
            raise DemoError(f"update_priorities failed: {type(self.error).__name__}: {self.error}")

    def _run(self) -> None:
        while True:
            parts = [self._q.get()]
            while True:
                try:
                    parts.append(self._q.get_nowait())
                except queue.Empty:
                    break
            last = parts[-1] is None
            parts = [p for p in parts if p is not None]
            if parts:
                ids = np.concatenate([p[0] for p in parts])[::-1]
                prio = np.concatenate([p[1] for p in parts])[::-1]
                ids, first = np.unique(ids, return_index=True)  # newest first, so newest wins
                try:
                    result = self._client.update_priorities(TABLE, ids, prio[first], retry=True)
                except BaseException as exc:  # noqa: BLE001 - raised by the next put/close
                    self.error = exc
                    return
                self.calls += 1
                self.last_lsn = max(self.last_lsn, result.lsn)
            if last:
                return


class BatchStream:
    """Prioritized batches from one endless ``client.sampler`` stream.

    The sampler's flow control keeps the server at most ``prefetch`` batches ahead of the
    learner, so the learner trains on fresh draws and the rate limiter counts only draws the
    learner uses. When the rate limiter holds a batch back for a second the stream ends with
    `RateLimitTimeoutError`; the next call opens a new one, continuing the seeds
    ``seed, seed + 1, ...``.
    """

    PREFETCH = 2

    def __init__(self, client: Any, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._seed = settings.seed
        self._current: Any = None

    def _open(self) -> Any:
        return self._client.sampler(
            TABLE, self._settings.batch_size, beta=0.4, seed=self._seed, prefetch=self.PREFETCH,
            timeout=1.0,  # wakes the learner's loop when the rate limiter holds it back
            as_torch=True,
        )

    def next(self) -> Any:
        """The next batch, or None when the rate limiter held it back for a second."""

        from replaybuf.errors import RateLimitTimeoutError

        if self._current is None:
            self._current = self._open()
        try:
            batch = next(self._current)
        except RateLimitTimeoutError:
            self._current.close()
            self._current = None
            return None
        self._seed = (batch.info.seed + 1) % (1 << 64)
        return batch

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None


def _evaluate(policy: Any, episodes: int, seed: int) -> list[float]:
    """Returns of ``policy(obs) -> action`` on CartPole-v1 (None: uniformly random actions)."""

    import gymnasium as gym

    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            action = int(rng.integers(2)) if policy is None else policy(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


# -- progress ----------------------------------------------------------------------------------


class Progress:
    """Counters fed by the actors' events and the learner; prints the live progress line."""

    def __init__(self, settings: Settings) -> None:
        self.started = time.monotonic()
        self.returns: collections.deque[float] = collections.deque(maxlen=20)
        self.episodes = 0
        self.acked_items = 0
        self.acked_lsn = 0  # the highest LSN an actor has seen acknowledged
        self.done: dict[int, tuple[Any, ...]] = {}
        self.errors: list[str] = []
        self.learner_steps = 0
        self.items_sampled = 0
        self.version = 0
        self.table_size = 0
        self._tty = sys.stdout.isatty()
        self._every = 1.0 if self._tty else (2.0 if settings.quick else 5.0)
        self._last_print = 0.0
        self._mark = (self.started, 0, 0)
        self._rates = (0.0, 0.0)
        self._width = 0

    def drain(self, events: Any) -> None:
        while True:
            try:
                ev = events.get_nowait()
            except queue.Empty:
                return
            if ev[0] == "ack":
                self.acked_items += ev[2]
                self.acked_lsn = max(self.acked_lsn, ev[3])
            elif ev[0] == "episode":
                self.episodes += 1
                self.returns.append(ev[2])
            elif ev[0] == "done":
                self.done[ev[1]] = ev
            elif ev[0] == "error":
                self.errors.append(f"actor {ev[1]}: {ev[2]}")

    def maybe_print(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_print < self._every:
            return
        t0, items0, sampled0 = self._mark
        if now - t0 > 0.2:
            dt = now - t0
            self._rates = ((self.acked_items - items0) / dt, (self.items_sampled - sampled0) / dt)
            self._mark = (now, self.acked_items, self.items_sampled)
        self._last_print = now
        ret = f"{np.mean(self.returns):5.1f}" if self.returns else "    -"
        line = (
            f"[{now - self.started:5.1f}s] learner steps {self.learner_steps:6d} | "
            f"appended {self.acked_items:6d} ({self._rates[0]:4.0f}/s) | "
            f"sampled {self._rates[1]:5.0f}/s | return(last 20) {ret} | "
            f"model v{self.version} | table {self.table_size}"
        )
        if self._tty:  # one line rewritten in place: never wider than the terminal
            line = line[: shutil.get_terminal_size().columns - 1]
            sys.stdout.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def say(self, text: str) -> None:
        """Print a line of its own (ending the live line on a terminal)."""

        if self._tty and self._width:
            sys.stdout.write("\n")
            self._width = 0
        print(text, flush=True)


# -- the run -----------------------------------------------------------------------------------


def _describe_for_item(event: Any, item_id: int) -> str:
    """One log event of an item's lineage, with this item's values where the event has them."""

    from replaybuf.events import describe_event, event_kind

    kind = event_kind(event)
    body = getattr(event, kind)
    ids = list(getattr(body, "item_ids", ()))
    if item_id not in ids:
        return describe_event(event)
    i = ids.index(item_id)
    if kind == "items_appended":
        lin = body.lineage
        version = lin.model_version[i if len(lin.model_version) > 1 else 0] if lin.model_version else "?"
        prio = f", initial priority {body.priorities[i]:.3f}" if len(body.priorities) == len(ids) else ""
        return f"ItemsAppended to {body.table!r} (model version {version}{prio})"
    if kind == "priorities_updated" and len(body.priorities) == len(ids):
        return f"PrioritiesUpdated -> {body.priorities[i]:.3f}"
    if kind == "rewards_corrected" and len(body.rewards) == len(ids):
        return f"RewardsCorrected -> {body.rewards[i]:.3f} ({describe_event(event)})"
    return describe_event(event)


def _prepare_data_dir(data_dir: Path) -> None:
    if data_dir.exists():
        if not data_dir.is_dir():
            raise DemoError(f"--data-dir {data_dir} is not a directory")
        foreign = sorted(p.name for p in data_dir.iterdir() if p.name not in _OWN_ENTRIES)
        if foreign:
            raise DemoError(
                f"--data-dir {data_dir} holds files the demo did not write ({', '.join(foreign[:5])}); "
                "the demo wipes its data dir first, so pass a new or empty directory"
            )
        shutil.rmtree(data_dir)
    (data_dir / "models").mkdir(parents=True)


def _crash_and_restart(server: ServerProcess, client: Any, progress: Progress,
                       events: Any, learner_lsn: int) -> None:
    """SIGKILL the server, restart it on the same dir and port, check nothing acked was lost."""

    before = client.describe_table(TABLE)
    progress.drain(events)
    acked = max(progress.acked_lsn, learner_lsn)
    pid = server.proc.pid if server.proc else 0
    server.kill()
    progress.say(
        f"  >> SIGKILL server (pid {pid}): table size {before.size}, highest acknowledged LSN "
        f"{acked}"
    )
    took = server.start(port=server.port)
    after = client.describe_table(TABLE)  # retried until the restarted server answers
    if after.durable_lsn < acked or after.size < before.size:
        raise DemoError(
            f"after the restart the log ends at LSN {after.durable_lsn} with {after.size} items, "
            f"but LSN {acked} had been acknowledged and {before.size} items were in the table "
            "before the SIGKILL: acknowledged data was lost"
        )
    progress.say(
        f"  >> restarted on {server.address} in {took:.1f} s: table size {after.size}, log "
        f"durable through LSN {after.durable_lsn} >= {acked}: nothing acknowledged was lost; "
        "actors and learner reconnect and go on"
    )


def run(settings: Settings) -> int:
    wall = time.monotonic()
    data_dir = settings.data_dir
    _prepare_data_dir(data_dir)
    model_dir = data_dir / "models"
    server = ServerProcess(data_dir / "replay", data_dir / "server.log")
    print(f"replaybuf demo: data dir {data_dir.resolve()} ({settings.actors} actor processes, "
          f"{settings.seconds:g} s of acting and learning{', quick' if settings.quick else ''})",
          flush=True)

    ctx = mp.get_context("spawn")  # fork would copy the learner's gRPC channel and torch state
    stop, events, address_q = ctx.Event(), ctx.Queue(), ctx.Queue()
    actors: list[Any] = []
    client: Any = None
    stream: BatchStream | None = None
    released = False
    progress = Progress(settings)
    try:
        # The server, the actors' imports and torch each take seconds to start: overlap them.
        server.launch()
        for k in range(settings.actors):
            actor = ctx.Process(target=_actor_main, name=f"replaybuf-demo-actor{k}", daemon=True,
                                args=(k, address_q, str(model_dir), settings, stop, events))
            actor.start()
            actors.append(actor)

        from replaybuf.errors import UnimplementedError
        from replaybuf_client import ReplayClient

        learner = DQNLearner(settings)
        took = server.wait_ready()
        print(f"server: python -m replaybuf_server --data-dir {server.data_dir} --fsync group, "
              f"serving on {server.address} (ready in {took:.1f} s)", flush=True)
        client = ReplayClient(server.address, retry=_retry_policy())
        info = client.create_table(
            TABLE, SIGNATURE, settings.capacity,
            sampler={"kind": "prioritized", "alpha": 0.6},
            remover="fifo",
            min_size_to_sample=settings.min_size,
            samples_per_insert=settings.samples_per_insert,
            error_buffer=settings.error_buffer,
            description="CartPole-v1 transitions of the replaybuf demo's actors",
        )
        print(f"table {info.name!r}: prioritized (alpha {info.alpha:g}), capacity {info.capacity}, "
              f"sampling from {settings.min_size} items at {settings.samples_per_insert:g} "
              f"samples per insert (one update of {settings.batch_size} per "
              f"{settings.batch_size / settings.samples_per_insert:g} env steps)", flush=True)
        learner.publish(model_dir)  # version 0, before any actor acts
        for _ in actors:
            address_q.put(server.address)
        released = True

        stream = BatchStream(client, settings)
        updater = PriorityUpdater(client)
        loop_start = time.monotonic()
        crash_at = loop_start + settings.seconds * settings.crash_at if settings.crash else None
        stop_at = loop_start + settings.seconds
        stopping = False
        last_describe = 0.0
        last_batch = None
        while True:
            now = time.monotonic()
            progress.drain(events)
            if progress.errors:
                raise DemoError("an actor failed:\n" + "\n".join(progress.errors))
            dead = [a for a in actors if a.exitcode not in (None, 0)]
            if dead:
                raise DemoError(f"actor process {dead[0].name} exited with status {dead[0].exitcode}")
            if crash_at is not None and now >= crash_at and progress.acked_items and learner.updates:
                crash_at = None
                _crash_and_restart(server, client, progress, events, updater.last_lsn)
            if not stopping and now >= stop_at:
                if crash_at is None:
                    # The actors stop and flush; the learner goes on sampling meanwhile, so
                    # that the rate limiter lets their last batches in.
                    stop.set()
                    stopping = True
                elif now - stop_at > 60:  # the crash waits for the first ack and update
                    raise DemoError(
                        f"after {now - loop_start:.0f} s the actors had {progress.acked_items} "
                        f"transitions acknowledged and the learner {learner.updates} updates; "
                        "the machine is too busy or something is stuck (see "
                        f"{server.log_path})"
                    )
            if stopping and all(a.exitcode is not None for a in actors):
                break
            if stopping and now - stop_at > 60:
                raise DemoError("the actors did not finish flushing within 60 s")
            if now - last_describe > 1.0:
                progress.table_size = client.describe_table(TABLE).size
                last_describe = now

            batch = stream.next()
            if batch is not None:
                updater.put(batch.info.item_ids, learner.update(batch))
                last_batch = batch
                progress.learner_steps = learner.updates
                progress.items_sampled += len(batch)
                if learner.updates % settings.publish_every == 0:
                    progress.version = learner.publish(model_dir)
            progress.maybe_print()

        progress.maybe_print(force=True)
        progress.say("")
        stream.close()
        stream = None
        updater.close()
        for actor in actors:
            actor.join(5)
        progress.drain(events)
        if len(progress.done) != settings.actors:
            raise DemoError(
                f"only {len(progress.done)} of {settings.actors} actors reported a clean finish"
            )
        if last_batch is None:
            raise DemoError("the learner never received a batch")

        # -- summary ------------------------------------------------------------------------
        info = client.describe_table(TABLE)
        steps = sum(d[2] for d in progress.done.values())
        acked = sum(d[3] for d in progress.done.values())
        reconnects = sum(d[4] for d in progress.done.values())
        duplicates = sum(d[5] for d in progress.done.values())
        limiter = info.rate_limiter
        print("== summary ==")
        print(f"actors : {steps} env steps in {progress.episodes} episodes, {acked} transitions "
              f"acknowledged; {reconnects} writer reconnect(s), {duplicates} resent batch(es) "
              "answered as duplicates")
        print(f"learner: {learner.updates} Double DQN updates of {settings.batch_size}, "
              f"{updater.calls} update_priorities calls, model versions 0..{learner.version - 1}")
        print(f"table  : {info.size} items; rate limiter {limiter.inserts} inserts, "
              f"{limiter.samples} items sampled ({limiter.samples / max(1, limiter.inserts):.1f} "
              "per insert)")
        eval_seed = 10_000 + settings.seed
        learned = _evaluate(learner.greedy, settings.eval_episodes, eval_seed)
        randoms = _evaluate(None, settings.eval_episodes, eval_seed)
        labels = (f"learned policy (greedy, model v{learner.version - 1})", "random policy")
        width = max(map(len, labels))
        for label, returns in zip(labels, (learned, randoms)):
            print(f"{label:<{width}}: mean return {np.mean(returns):6.1f} +- "
                  f"{np.std(returns):5.1f} over {len(returns)} episodes")

        # One item of the last batch (the one from the newest model version): its lineage.
        lin = last_batch.info.lineage
        i = int(np.argmax(lin.model_version)) if lin.model_version is not None else 0
        item_id = int(last_batch.info.item_ids[i])

        def col(name: str) -> Any:
            values = getattr(lin, name)
            return None if values is None else values[i]

        print(f"lineage of sampled item {item_id}: episode {col('episode_id')}, step "
              f"{col('step')}, request id {col('request_id')!r}, model version "
              f"{col('model_version')}, source {col('source')!r}; drawn at LSN "
              f"{last_batch.info.lsn} with priority {last_batch.info.priorities[i]:.3f} "
              f"(sampled {int(last_batch.info.times_sampled[i])}x by then)")
        try:
            history = client.lineage(item_id)
        except UnimplementedError:
            print("  (from the batch's SampleInfo; the GetLineage RPC, with every event that "
                  "touched the item, arrives with issue 6)")
        else:
            entries = history.entries
            shown = entries if len(entries) <= 6 else (*entries[:3], None, *entries[-2:])
            print(f"  GetLineage: {len(entries)} event(s) touched it:")
            for entry in shown:
                if entry is None:
                    print(f"    ... {len(entries) - 5} more")
                else:
                    print(f"    LSN {entry.lsn}: {_describe_for_item(entry.event, item_id)}")
        print(f"dataset re-materializable as of LSN {info.applied_lsn} (the log is durable "
              f"through LSN {info.durable_lsn})")
        client.close()
        client = None
        status = server.stop()
        if status != 0:
            raise DemoError(f"the server exited with status {status} after SIGTERM:\n{server.log_tail()}")
        print(f"server stopped cleanly; the demo took {time.monotonic() - wall:.0f} s", flush=True)
        return 0
    finally:
        stop.set()
        if not released:
            for _ in actors:
                address_q.put(None)
        if stream is not None:
            stream.close()
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - already failing; the first error is reported
                pass
        for actor in actors:
            actor.join(5)
            if actor.exitcode is None:
                actor.kill()
                actor.join(2)
        server.stop(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m replaybuf_client.demo",
        description="replaybuf end to end: CartPole actor processes append to a replaybuf server; "
        "a torch DQN learner samples prioritized batches over gRPC; the server is SIGKILLed "
        "and restarted in the middle.",
    )
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds of acting and learning (default 100; 10 with --quick)")
    parser.add_argument("--data-dir", type=Path, default=Path(".demo-data"),
                        help="the demo's data dir, wiped first (default .demo-data)")
    parser.add_argument("--actors", type=int, default=2, help="actor processes (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="a ~20 s smoke run (too short to claim anything about learning)")
    parser.add_argument("--no-crash", action="store_true", help="do not SIGKILL the server")
    parser.add_argument("--seed", type=int, default=0, help="seed of actors, learner, sampling")
    args = parser.parse_args(argv)
    if args.actors < 1:
        parser.error("--actors must be >= 1")
    if args.seconds is not None and args.seconds <= 0:
        parser.error("--seconds must be > 0")
    settings = Settings(
        seconds=args.seconds if args.seconds is not None else (10.0 if args.quick else 100.0),
        actors=args.actors, data_dir=args.data_dir, quick=args.quick, crash=not args.no_crash,
        seed=args.seed,
    )
    if args.quick:
        settings = replace(settings, min_size=300, eval_episodes=3)
    try:
        return run(settings)
    except DemoError as exc:
        print(f"\nreplaybuf demo FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nreplaybuf demo interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - the traceback, then one clear last line
        traceback.print_exc()
        print(f"\nreplaybuf demo FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
