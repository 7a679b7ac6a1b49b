"""Per-system worker of bench/bench_service.py (issue 5). Not a benchmark on its own.

Runs under the interpreter of the system it drives: the project venv for `ours`
(replaybuf_client), `.reverb-venv` for `reverb` (dm-reverb + tensorflow). It imports only numpy at
module level so the driver can import WORKLOADS from it under either venv.

Modes:
  serve   (reverb only) start a reverb.Server with one Prioritized(0.6)/Fifo table of --items,
          print "reverb serving on localhost:PORT", serve until stdin closes.
  clients start --procs client processes (multiprocessing, spawn; each its own interpreter and
          GIL, each one client/connection), print one JSON line {"ready": ...}, then answer JSON
          commands read line by line from stdin with one JSON line each (the processes outlive
          workloads: start-up, which is slow for TensorFlow, is paid once):
            {"op": "connect", "address": A, "workload": W}   every process connects to A
            {"op": "disconnect"}                     every process drops its connection
            {"op": "setup"}                          create the table (ours; reverb: no-op)
            {"op": "fill", "n": N}                   untimed-ish fill by client 0 (items/s reported)
            {"op": "insert", "clients": k, "seconds": s}
            {"op": "sample", "clients": k, "seconds": s, "batch": b}
            {"op": "quit"}
Timed phases: every active client prepares (opens its writer / sample stream and takes one warm-up
batch), then all start at one wall-clock instant and stop at start + seconds. Inserts count the
transitions added before the stop and end with a flush (acks included in the time). Samples count
whole batches; latency = wall time of each `next()` (what a learner waits per batch). For ours,
each client also reads the table's sampled-items count (DescribeTable) at the start and the end of
the window, so the driver can report the items the server drew in the window: a sampler that draws
ahead during the pause before the window would otherwise look faster than the server draws.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from typing import Any

import numpy as np

TABLE = "bench"
ALPHA = 0.6
BETA = 0.4
PRIORITY = 1.0

# name -> [(field, dtype, shape)]
WORKLOADS: dict[str, list[tuple[str, str, tuple[int, ...]]]] = {
    "W2": [
        ("obs", "float32", (17,)),
        ("action", "float32", (6,)),
        ("reward", "float32", ()),
        ("next_obs", "float32", (17,)),
        ("done", "bool", ()),
    ],
    "W3": [
        ("obs", "uint8", (4, 84, 84)),
        ("action", "int64", ()),
        ("reward", "float32", ()),
        ("next_obs", "uint8", (4, 84, 84)),
        ("done", "bool", ()),
    ],
}


def transition_bytes(workload: str) -> int:
    return sum(int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize for _, d, s in WORKLOADS[workload])


def make_pool(workload: str, n: int, seed: int, frames: str) -> list[dict[str, Any]]:
    """n distinct transitions (numpy arrays; scalars as 0-d numpy values), built before timing.

    frames="blocky": uint8 frames are a random 21x21 grid upsampled 4x (compressible, like game
    screens); "noise": i.i.d. uniform bytes (incompressible; worst case for Reverb's zstd chunks).
    """

    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(n):
        row: dict[str, Any] = {}
        for name, dtype, shape in WORKLOADS[workload]:
            dt = np.dtype(dtype)
            if dt == np.uint8:
                if frames == "noise":
                    v = rng.integers(0, 256, size=shape, dtype=np.uint8)
                else:
                    grid = rng.integers(0, 8, size=shape[:-2] + (21, 21), dtype=np.uint8) * 32
                    v = np.repeat(np.repeat(grid, 4, axis=-2), 4, axis=-1)
            elif dt == np.bool_:
                v = np.asarray(rng.random() < 0.01)
            elif dt.kind == "i":
                v = rng.integers(0, 18, size=shape).astype(dt)
            else:
                v = rng.standard_normal(size=shape).astype(dt)
            row[name] = v if shape else dt.type(v)
        pool.append(row)
    return pool


def columns_from_pool(pool: list[dict[str, Any]], start: int, n: int) -> dict[str, np.ndarray]:
    rows = [pool[(start + i) % len(pool)] for i in range(n)]
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


# ------------------------------------------------------------------------------------------
# Systems: each gives the same four operations to a client process.
# ------------------------------------------------------------------------------------------


class OursSystem:
    def __init__(self, address: str, workload: str, prefetch: int = 2) -> None:
        from replaybuf_client import ReplayClient

        self.client = ReplayClient(address, timeout=120.0)
        self.workload = workload
        self.prefetch = prefetch

    def setup(self, items: int) -> dict[str, Any]:
        sig = {n: (np.dtype(d), s) if s else np.dtype(d) for n, d, s in WORKLOADS[self.workload]}
        self.client.create_table(TABLE, sig, capacity=items, sampler={"kind": "prioritized", "alpha": ALPHA},
                                 remover="fifo", exist_ok=True)
        return {}

    def fill(self, pool: list[dict[str, Any]], n: int) -> None:
        with self.client.writer(TABLE, max_batch=256, max_in_flight=4) as w:
            for start in range(0, n, 256):
                w.extend(columns_from_pool(pool, start, min(256, n - start)))

    def insert_loop(self, pool: list[dict[str, Any]], start_at: float, end_at: float) -> int:
        w = self.client.writer(TABLE, max_batch=256, max_in_flight=4)
        _sleep_until(start_at)
        n, k = 0, len(pool)
        while True:
            for _ in range(64):
                w.add(pool[n % k])
                n += 1
            if time.time() >= end_at:
                break
        w.close()  # flushes: every added transition acked (fsynced, policy group)
        return n

    def sampler(self, batch: int, seed: int, shared_memory: bool | None = None) -> Any:
        s = self.client.sampler(TABLE, batch, beta=BETA, seed=seed, prefetch=self.prefetch,
                                shared_memory=shared_memory)
        self._closers = [s]
        return lambda: next(s)

    def close_sampler(self) -> dict[str, Any]:
        """Close the sampler; how many batches came through a shared ring."""

        shared = 0
        for s in getattr(self, "_closers", []):
            s.close()
            shared += s.shared_batches
        return {"shared_batches": shared}

    def items_drawn(self) -> int | None:
        """Items the server has drawn from the table so far (every draw counts)."""

        return int(self.client.describe_table(TABLE).rate_limiter.samples)

    def close(self) -> None:
        self.client.close()


class ReverbSystem:
    def __init__(self, address: str, workload: str, sample_path: str = "dataset") -> None:
        import reverb

        self.reverb = reverb
        self.address = address
        self.client = reverb.Client(address)
        self.workload = workload
        self.names = [n for n, _, _ in WORKLOADS[workload]]
        self.sample_path = sample_path

    def setup(self, items: int) -> dict[str, Any]:
        return {}

    def _writer(self) -> Any:
        # num_keep_alive_refs=1: the auto-tuned chunker then emits chunks of length 1.
        return self.client.trajectory_writer(num_keep_alive_refs=1)

    def _write(self, w: Any, row: dict[str, Any]) -> None:
        w.append(row)
        w.create_item(TABLE, priority=PRIORITY, trajectory={k: w.history[k][-1] for k in self.names})

    def fill(self, pool: list[dict[str, Any]], n: int) -> None:
        w = self._writer()
        for i in range(n):
            self._write(w, pool[i % len(pool)])
            if i % 256 == 255:
                w.flush(block_until_num_items=1024)
        w.flush()
        w.close()

    def insert_loop(self, pool: list[dict[str, Any]], start_at: float, end_at: float) -> int:
        w = self._writer()
        _sleep_until(start_at)
        n, k = 0, len(pool)
        while True:
            for _ in range(64):
                self._write(w, pool[n % k])
                n += 1
            # bound unconfirmed items like ours (max_in_flight 4 x max_batch 256)
            w.flush(block_until_num_items=1024)
            if time.time() >= end_at:
                break
        w.flush()
        w.close()
        return n

    def sampler(self, batch: int, seed: int) -> Any:
        if self.sample_path == "client":
            names = self.names

            def draw() -> dict[str, np.ndarray]:
                items = list(self.client.sample(TABLE, num_samples=batch, emit_timesteps=False))
                return {n: np.stack([it.data[i] for it in items]) for i, n in enumerate(names)}

            return draw
        ds = self.reverb.TrajectoryDataset.from_table_signature(
            self.address, TABLE, max_in_flight_samples_per_worker=2 * batch
        ).batch(batch, drop_remainder=True).prefetch(2)
        it = iter(ds)

        def draw() -> Any:
            s = next(it)
            return {k: v.numpy() for k, v in s.data.items()}

        return draw

    def close_sampler(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.client = None


def _sleep_until(t: float) -> None:
    while True:
        d = t - time.time()
        if d <= 0:
            return
        time.sleep(min(d, 0.05))


def _make_system(opts: dict[str, Any]) -> Any:
    if opts["system"] == "ours":
        return OursSystem(opts["address"], opts["workload"], opts.get("prefetch", 2))
    return ReverbSystem(opts["address"], opts["workload"], opts.get("reverb_sample", "dataset"))


def client_main(conn: Any, index: int, opts: dict[str, Any]) -> None:
    """One client process: builds its own connection and transition pool, then obeys `conn`."""

    system: Any = None
    pool: list[dict[str, Any]] = []
    try:
        if opts["system"] == "ours":
            import replaybuf_client  # noqa: F401  (import cost paid before any timing)
        else:
            import reverb  # noqa: F401
        conn.send({"ready": index, "pid": os.getpid()})
    except BaseException as exc:  # noqa: BLE001
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    while True:
        cmd = conn.recv()
        op = cmd["op"]
        try:
            if op == "quit":
                conn.send({"ok": True})
                return
            if op == "connect":
                opts = dict(opts, address=cmd["address"], workload=cmd["workload"])
                system = _make_system(opts)
                pool = make_pool(opts["workload"], opts["pool"], opts["seed"] + 1000 * index, opts["frames"])
                conn.send({"ok": True})
            elif op == "disconnect":
                system.close()
                system, pool = None, []
                conn.send({"ok": True})
            elif op == "setup":
                conn.send(system.setup(cmd["items"]))
            elif op == "fill":
                t0 = time.perf_counter()
                system.fill(pool, cmd["n"])
                conn.send({"n": cmd["n"], "s": time.perf_counter() - t0})
            elif op == "insert":
                conn.send({"prepared": True})
                start_at, end_at = conn.recv()
                n = system.insert_loop(pool, start_at, end_at)
                conn.send({"n": n, "done_at": time.time()})
            elif op == "sample":
                kw = {"shared_memory": cmd["shared_memory"]} if "shared_memory" in cmd else {}
                draw = system.sampler(cmd["batch"], opts["seed"] + 7919 * index + cmd.get("run", 0),
                                      **kw)
                draw()  # warm-up batch: stream open, first response decoded
                conn.send({"prepared": True})
                start_at, end_at = conn.recv()
                lat: list[float] = []
                counts = getattr(system, "items_drawn", lambda: None)
                _sleep_until(start_at)
                drawn0 = counts()
                while time.time() < end_at:
                    t = time.perf_counter()
                    draw()
                    lat.append(time.perf_counter() - t)
                done_at = time.time()
                drawn1 = counts()
                closed = system.close_sampler()
                conn.send({"n": len(lat) * cmd["batch"], "done_at": done_at, "lat": lat,
                           "drawn": None if drawn0 is None else (drawn0, drawn1), **closed})
            else:
                conn.send({"error": f"unknown op {op!r}"})
        except BaseException as exc:  # noqa: BLE001
            conn.send({"error": f"{type(exc).__name__}: {exc}"})


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _check(msg: dict[str, Any]) -> dict[str, Any]:
    if "error" in msg:
        raise RuntimeError(msg["error"])
    return msg


def run_clients(args: argparse.Namespace) -> int:
    ctx = mp.get_context("spawn")
    opts = {
        "system": args.system, "address": args.address, "workload": args.workload,
        "pool": args.pool, "seed": args.seed, "frames": args.frames, "reverb_sample": args.reverb_sample,
        "prefetch": args.prefetch,
    }
    conns, procs = [], []
    for i in range(args.procs):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=client_main, args=(child, i, opts), daemon=True)
        p.start()
        conns.append(parent)
        procs.append(p)
    try:
        pids = [_check(c.recv())["pid"] for c in conns]
        _reply({"ready": True, "pids": pids})
        for line in sys.stdin:
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "quit":
                for c in conns:
                    c.send({"op": "quit"})
                    c.recv()
                _reply({"ok": True})
                break
            try:
                if op in ("connect", "disconnect"):
                    for c in conns:
                        c.send(cmd)
                    for c in conns:
                        _check(c.recv())
                    _reply({"ok": True})
                    continue
                if op in ("setup", "fill"):
                    conns[0].send(cmd)
                    _reply(_check(conns[0].recv()))
                    continue
                active = conns[: cmd["clients"]]
                for c in active:
                    c.send(cmd)
                for c in active:
                    _check(c.recv())
                start_at = time.time() + 0.3
                end_at = start_at + cmd["seconds"]
                for c in active:
                    c.send((start_at, end_at))
                res = [_check(c.recv()) for c in active]
                out: dict[str, Any] = {
                    "n": sum(r["n"] for r in res),
                    "per_client_n": [r["n"] for r in res],
                    "wall_s": max(r["done_at"] for r in res) - start_at,
                }
                if op == "sample":
                    lat = np.concatenate([np.asarray(r["lat"], dtype=np.float64) for r in res]) * 1e3
                    out.update(batches=int(lat.size),
                               lat_ms_p50=float(np.percentile(lat, 50)) if lat.size else None,
                               lat_ms_p99=float(np.percentile(lat, 99)) if lat.size else None,
                               lat_ms_max=float(lat.max()) if lat.size else None)
                    drawn = [r["drawn"] for r in res if r.get("drawn") is not None]
                    if drawn:  # every client reads the same table: first read to last
                        out["items_drawn"] = max(d[1] for d in drawn) - min(d[0] for d in drawn)
                    if any("shared_batches" in r for r in res):
                        out["shared_batches"] = sum(r.get("shared_batches", 0) for r in res)
                _reply(out)
            except Exception as exc:  # noqa: BLE001
                _reply({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    return 0


def run_reverb_server(args: argparse.Namespace) -> int:
    import reverb
    import tensorflow as tf

    signature = {n: tf.TensorSpec(s, tf.as_dtype(np.dtype(d))) for n, d, s in WORKLOADS[args.workload]}
    table = reverb.Table(
        name=TABLE,
        sampler=reverb.selectors.Prioritized(ALPHA),
        remover=reverb.selectors.Fifo(),
        max_size=args.items,
        rate_limiter=reverb.rate_limiters.MinSize(1),
        signature=signature,
    )
    server = reverb.Server(tables=[table], port=None)
    print(f"reverb serving on localhost:{server.port}", flush=True)
    versions = {"reverb": _version("dm-reverb"), "tensorflow": tf.__version__, "numpy": np.__version__}
    print(json.dumps({"versions": versions}), flush=True)
    sys.stdin.read()  # serve until the driver closes our stdin
    server.stop()
    return 0


def _version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("serve", "clients"))
    p.add_argument("--system", choices=("ours", "reverb"), default="ours")
    p.add_argument("--address", default="")
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="W2")
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--pool", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", choices=("blocky", "noise"), default="blocky")
    p.add_argument("--reverb-sample", choices=("dataset", "client"), default="dataset")
    p.add_argument("--prefetch", type=int, default=2, help="ours: the sampler's prefetch")
    args = p.parse_args(argv)
    if args.mode == "serve":
        return run_reverb_server(args)
    return run_clients(args)


if __name__ == "__main__":
    sys.exit(main())
