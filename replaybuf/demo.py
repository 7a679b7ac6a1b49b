"""`make demo`: a real event stream through the durable log, a crash, recovery and a summary.

What it does, on the embedded default data dir (``.demo-data/`` unless ``--data-dir``):

1. Four actor threads play Gymnasium CartPole with an epsilon-greedy linear policy whose
   version changes over time, and append their transitions as columnar ``ItemsAppended``
   events with lineage (episode, step, inference request id, model version), each batch with a
   producer id and sequence number, concurrently, under the ``group`` fsync policy.
2. A learner thread appends ``PrioritiesUpdated`` events, a reviewer ``RewardsCorrected``
   events, and a hygiene pass ``ItemsEvicted`` events with a reason and job id.
3. One batch is retried with the same producer sequence: the log returns the original LSNs.
4. A child process appends as fast as it can and is killed with SIGKILL mid-stream; the log is
   reopened and every acknowledged LSN is checked to be there.
5. The log is verified (CRCs, LSN continuity) and summarized.

Later releases grow this into the full service demo (server, DQN learner over gRPC).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from replaybuf.events import decode_event, describe_event, encode_event, event_kind, make_event
from replaybuf.file_log import FileLog, FileLogConfig, verify_log
from replaybuf.tensors import FieldSpec, to_batch
from replaybuf.v1 import events_pb2, table_pb2

TABLE = "cartpole"
SIGNATURE = [
    FieldSpec("obs", np.float32, (4,)),
    FieldSpec("action", np.int64),
    FieldSpec("reward", np.float32),
    FieldSpec("next_obs", np.float32, (4,)),
    FieldSpec("done", np.bool_),
]


class _Ids:
    """Item ids for the demo's events (the engine assigns them in the full service)."""

    def __init__(self) -> None:
        self._next = 1
        self._lock = threading.Lock()

    def take(self, n: int) -> list[int]:
        with self._lock:
            first, self._next = self._next, self._next + n
        return list(range(first, first + n))


def _actor(actor: int, log: FileLog, ids: _Ids, steps: int, batch: int, stats: dict, lock: threading.Lock) -> None:
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(actor)
    producer = uuid.UUID(int=actor + 1).bytes
    obs, _ = env.reset(seed=actor)
    episode, step, seq = actor * 1_000_000, 0, 0
    rows: dict[str, list] = collections.defaultdict(list)
    weights = rng.normal(size=4)

    def flush(seq: int) -> int:
        n = len(rows["obs"])
        data = {s.name: np.asarray(rows[s.name], dtype=s.dtype) for s in SIGNATURE}
        event = make_event(items_appended=events_pb2.ItemsAppended(
            table=TABLE,
            item_ids=ids.take(n),
            data=to_batch(data),
            priorities=[1.0] * n,
            lineage=table_pb2.Lineage(
                episode_id=rows["episode"], step=rows["step"], request_id=rows["request_id"],
                model_version=rows["model_version"], source=[f"actor-{actor}"],
            ),
        ))
        seq += 1
        ack = log.append([encode_event(event)], producer_id=producer, producer_seq=seq)
        with lock:
            stats["items"] += n
            stats["acks"].append(ack)
        rows.clear()
        return seq

    for t in range(steps):
        version = 1 + t // 500  # the "learner" publishes a new policy every 500 actor steps
        if t % 500 == 0:
            weights = weights + 0.1 * rng.normal(size=4)
        action = int(rng.integers(2)) if rng.random() < 0.1 else int(obs @ weights > 0)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for name, value in (("obs", obs), ("action", action), ("reward", reward),
                            ("next_obs", next_obs), ("done", terminated)):
            rows[name].append(value)
        rows["episode"].append(episode)
        rows["step"].append(step)
        rows["request_id"].append(f"a{actor}-r{t}")
        rows["model_version"].append(version)
        step += 1
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
            episode, step = episode + 1, 0
            with lock:
                stats["episodes"] += 1
        if len(rows["obs"]) == batch or (t == steps - 1 and rows):
            seq = flush(seq)


def _side_events(log: FileLog, ids: _Ids, stop: threading.Event, stats: dict, lock: threading.Lock) -> None:
    """Learner priority updates, human reward corrections and a hygiene eviction pass."""

    rng = np.random.default_rng(99)
    k = 0
    while not stop.wait(0.02):
        high = ids._next - 1
        if high < 64:
            continue
        k += 1
        picked = sorted(set(rng.integers(1, high + 1, size=32).tolist()))
        if k % 5 == 0:
            body = dict(rewards_corrected=events_pb2.RewardsCorrected(
                table=TABLE, item_ids=picked[:4], rewards=[0.0] * len(picked[:4]),
                source=events_pb2.FEEDBACK_SOURCE_HUMAN, fidelity_weight=1.0,
                reason="pole fell: reviewer marks the step as failure", author="reviewer-1"))
        elif k % 7 == 0:
            body = dict(items_evicted=events_pb2.ItemsEvicted(
                table=TABLE, item_ids=picked[:8], reason=events_pb2.EVICTION_REASON_MODEL_VERSION,
                job_id=f"hygiene-{k}", detail="model_version < newest - 2"))
        else:
            body = dict(priorities_updated=events_pb2.PrioritiesUpdated(
                table=TABLE, item_ids=picked, priorities=rng.gamma(2.0, 0.5, len(picked)).tolist(),
                source="learner"))
        log.append([encode_event(make_event(**body))])
        with lock:
            stats["side"] += 1


def _crash_child(directory: str) -> None:
    """Child mode: append as fast as possible and print each acked LSN range."""

    with FileLog(directory, FileLogConfig(fsync="group")) as log:
        payload = encode_event(make_event(priorities_updated=events_pb2.PrioritiesUpdated(
            table=TABLE, item_ids=list(range(1, 65)), priorities=[1.0] * 64, source="crash-child")))
        while True:
            ack = log.append([payload] * 8)
            print(ack.first_lsn, ack.last_lsn, flush=True)


def _crash_and_recover(directory: Path) -> tuple[int, int, float]:
    """SIGKILL a child mid-append; return (acked last LSN, recovered last LSN, recovery s)."""

    proc = subprocess.Popen(
        [sys.executable, "-m", "replaybuf.demo", "--crash-child", str(directory)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    acked = 0
    for i, line in enumerate(proc.stdout):
        acked = int(line.split()[1])
        if i == 300:
            proc.send_signal(signal.SIGKILL)
            break
    for line in proc.stdout:  # acks printed before the kill landed
        acked = int(line.split()[1])
    proc.wait()
    t0 = time.perf_counter()
    with FileLog(directory) as log:
        recovered = log.last_lsn
    return acked, recovered, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".demo-data/log-demo"))
    parser.add_argument("--actors", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5000, help="environment steps per actor")
    parser.add_argument("--batch", type=int, default=64, help="transitions per ItemsAppended event")
    parser.add_argument("--crash-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.crash_child:
        _crash_child(args.crash_child)
        return 0

    log_dir = args.data_dir / "log"
    shutil.rmtree(args.data_dir, ignore_errors=True)
    print(f"replaybuf demo: data dir {args.data_dir.resolve()}")
    print(f"[1/5] {args.actors} CartPole actors append transitions with lineage (fsync policy: group)")
    stats = {"items": 0, "episodes": 0, "side": 0, "acks": []}
    lock = threading.Lock()
    ids = _Ids()
    t0 = time.perf_counter()
    with FileLog(log_dir, FileLogConfig(fsync="group")) as log:
        config = table_pb2.TableConfig(
            name=TABLE, signature=[s.to_proto() for s in SIGNATURE], capacity=100_000,
            sampler=table_pb2.SelectorConfig(kind=table_pb2.SELECTOR_KIND_PRIORITIZED, alpha=0.6),
            remover=table_pb2.SelectorConfig(kind=table_pb2.SELECTOR_KIND_FIFO),
        )
        log.append([encode_event(make_event(table_created=events_pb2.TableCreated(config=config)))])
        stop = threading.Event()
        side = threading.Thread(target=_side_events, args=(log, ids, stop, stats, lock))
        side.start()
        actors = [
            threading.Thread(target=_actor, args=(a, log, ids, args.steps, args.batch, stats, lock))
            for a in range(args.actors)
        ]
        for t in actors:
            t.start()
        for t in actors:
            t.join()
        stop.set()
        side.join()
        elapsed = time.perf_counter() - t0
        acks = stats["acks"]
        print(f"      {stats['items']:,} transitions in {len(acks):,} durable appends "
              f"({stats['episodes']} episodes) + {stats['side']} learner/reviewer/hygiene events "
              f"in {elapsed:.2f} s: {stats['items'] / elapsed:,.0f} transitions/s; "
              f"all acks durable: {all(a.durable for a in acks)}")

        print("[2/5] a lost ack: actor 0 retries its batch #1 with the same producer sequence")
        retry = log.append([b"retry-with-different-bytes-is-still-a-duplicate"],
                           producer_id=uuid.UUID(int=1).bytes, producer_seq=1)
        print(f"      duplicate={retry.duplicate}, LSNs {retry.first_lsn}..{retry.last_lsn} "
              f"(the original ack; nothing new was written)")
        last_lsn = log.last_lsn

    print("[3/5] reopen: recovery scans the log")
    t1 = time.perf_counter()
    with FileLog(log_dir) as log:
        reopened_last = log.last_lsn
        counts: collections.Counter[str] = collections.Counter()
        samples = {}
        for rec in log.read(1):
            ev = decode_event(rec.payload, lsn=rec.lsn)
            kind = event_kind(ev)
            counts[kind] += 1
            samples.setdefault(kind, (rec.lsn, describe_event(ev)))
    print(f"      recovered LSNs 1..{reopened_last} in {time.perf_counter() - t1:.2f} s "
          f"(before close: {last_lsn}); nothing lost: {reopened_last == last_lsn}")

    print("[4/5] crash test: a child appends under group commit and is killed with SIGKILL")
    acked, recovered, rec_s = _crash_and_recover(args.data_dir / "crash-log")
    print(f"      last acknowledged LSN {acked}, recovered through LSN {recovered} in {rec_s:.2f} s: "
          f"{'every acknowledged append survived' if recovered >= acked else 'ACKED DATA LOST'}")

    print("[5/5] verify and summarize")
    report = verify_log(log_dir)
    size = sum(p.stat().st_size for p in log_dir.iterdir())
    print(f"      verify: {'sound' if report.ok else 'DAMAGED: ' + '; '.join(report.problems)}; "
          f"{size / 2**20:.1f} MiB on disk")
    for kind, n in counts.most_common():
        lsn, text = samples[kind]
        print(f"      {n:6,d} x {kind:<20s} e.g. LSN {lsn}: {text}")
    print(f"\nInspect it yourself:  .venv/bin/replaybuf log verify {log_dir}\n"
          f"                      .venv/bin/replaybuf log dump {log_dir} --from {max(1, reopened_last - 5)}")
    ok = report.ok and reopened_last == last_lsn and recovered >= acked
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
