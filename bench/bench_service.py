"""Service benchmark over loopback gRPC (issue 5): replaybuf's server vs DeepMind Reverb 0.14.

Workloads (one transition = one item, priority table, FIFO removal, table size --items):
  W2  obs float32[17], action float32[6], reward float32, next_obs float32[17], done bool
  W3  obs/next_obs uint8[4,84,84], action int64, reward float32, done bool
Per workload, system and number of concurrent clients (--clients), each run measures
  insert  transitions/s: every client adds one transition at a time for --seconds, then flushes
          (time until the last ack). ours: `ReplayClient.writer(max_batch=256, max_in_flight=4)
          .add(...)`, durable (event log with fsync policy `group`). reverb: `TrajectoryWriter`
          (num_keep_alive_refs=1, so chunks of length 1), `append` + `create_item(priority 1.0)`
          per step, at most 1024 unconfirmed items (`flush(block_until_num_items=1024)`), in RAM.
  sample  transitions/s and per-batch latency p50/p99 (wall time of each `next()`), batch
          --batch (256), and the items the server drew meanwhile (ours). ours:
          `ReplayClient.sampler(batch, beta=0.4, prefetch=--prefetch)` (one SampleStream: at
          most that many batches drawn and not yet consumed; default 2; W3 batches come
          through the client's shared-memory ring, its default over loopback, and a second
          phase "sample in messages" repeats it with shared_memory=False). reverb: `TrajectoryDataset.from_table_signature(max_in_flight_samples_per_
          worker=2*batch).batch(batch).prefetch(2)` (its C++ tf.data path, the fastest Python
          path; `--reverb-sample client` uses `reverb.Client.sample` instead).
Clients are separate processes (multiprocessing, spawn): one interpreter and GIL per client.
Both servers stay up together for a workload and the systems alternate phase by phase, run by
run (the order flips each run), so they see the same machine load.

Ours runs in the interpreter running this script (the project venv); Reverb runs in
`.reverb-venv` (`bash bench/setup_reverb_venv.sh` builds it; Reverb is never a replaybuf
dependency). Each side is driven by bench/_service_worker.py under its own interpreter; this
driver collects their JSON, prints one Markdown table with ratios and writes JSON (--json,
default bench/out/service.json) with every parameter, versions, machine info, all runs and RSS
(servers: VmRSS/VmHWM of the server process; the driver: its own peak RSS).

    .venv/bin/python bench/bench_service.py              # full run: W2+W3, 1 and 4 clients
    .venv/bin/python bench/bench_service.py --quick      # smoke run (< 90 s on 2 idle cores)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from _common import (  # noqa: E402
    dist_versions, fmt, log, machine, peak_rss_mb, print_footer, report_header, write_json,
)
from _service_worker import WORKLOADS, transition_bytes  # noqa: E402

SCHEMA_VERSION = 1
WORKER = BENCH_DIR / "_service_worker.py"
REVERB_PY = REPO_ROOT / ".reverb-venv" / "bin" / "python"
REVERB_PYTHON = [str(REVERB_PY)]  # set from --reverb-python
ALL_SYSTEMS = ("ours", "reverb")
DEFAULT_ITEMS = {"W2": 200_000, "W3": 20_000}
QUICK_ITEMS = {"W2": 5_000, "W3": 1_000}
SETUP_HINT = ("build it with `bash bench/setup_reverb_venv.sh` (dm-reverb 0.14.0 + tensorflow-cpu "
              "2.15.1, Python 3.11, ~1.3 GB)")
# Goals from issue 5: ours / reverb (higher is better), and p99 below Reverb's.
GOALS = {"W2": {"insert": 5.0, "sample": 3.0}, "W3": {"insert": 1.0, "sample": 2.0}}


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def _proc_mem_mb(pid: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {"rss_mb": None, "hwm_mb": None}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mb"] = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                out["hwm_mb"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def _wait_line(proc: subprocess.Popen, prefix: str, timeout: float, what: str) -> str:
    """First stdout line of `proc` starting with `prefix` (other lines are skipped)."""

    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{what} exited (rc {proc.poll()}) before printing {prefix!r}")
        if line.startswith(prefix):
            return line.strip()
    raise RuntimeError(f"{what} did not print {prefix!r} within {timeout:.0f} s")


class Server:
    def __init__(self, system: str, workload: str, items: int, data_root: Path, fsync: str) -> None:
        self.system = system
        self.data_dir: Path | None = None
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        if system == "ours":
            self.data_dir = Path(tempfile.mkdtemp(prefix=f"service-{workload}-", dir=data_root))
            cmd = [sys.executable, "-m", "replaybuf_server", "--data-dir", str(self.data_dir),
                   "--port", "0", "--fsync", fsync, "--log-level", "WARNING"]
            prefix = "replaybuf serving on "
        else:
            cmd = [REVERB_PYTHON[0], str(WORKER), "serve", "--workload", workload, "--items", str(items)]
            prefix = "reverb serving on "
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL if system == "reverb" else None,
                                     text=True, env=env, cwd=REPO_ROOT)
        self._prefix = prefix
        self.address = ""
        self.versions: dict[str, str] = {}

    def wait_ready(self) -> None:
        """Wait for the "serving on" line (servers start concurrently, then are waited for)."""

        line = _wait_line(self.proc, self._prefix, 300, f"{self.system} server")
        self.address = line[len(self._prefix):]
        if self.system == "reverb":
            self.versions = json.loads(_wait_line(self.proc, "{", 30, "reverb server"))["versions"]

    def mem(self) -> dict[str, float | None]:
        return _proc_mem_mb(self.proc.pid)

    def disk_mb(self) -> float | None:
        if self.data_dir is None:
            return None
        return sum(p.stat().st_size for p in self.data_dir.rglob("*") if p.is_file()) / 2**20

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.system == "ours":
                self.proc.send_signal(signal.SIGTERM)
            else:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class Clients:
    """A worker process holding `procs` client processes of one system."""

    def __init__(self, system: str, procs: int, args: argparse.Namespace) -> None:
        py = sys.executable if system == "ours" else REVERB_PYTHON[0]
        cmd = [py, str(WORKER), "clients", "--system", system, "--procs", str(procs), "--pool", str(args.pool),
               "--seed", str(args.seed), "--frames", args.frames, "--reverb-sample", args.reverb_sample,
               "--prefetch", str(args.prefetch)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL if system == "reverb" else None,
                                     text=True, env=env, cwd=REPO_ROOT)
        self.system = system
        self.pids: list[int] = []

    def wait_ready(self) -> None:
        if not self.pids:
            self.pids = json.loads(_wait_line(self.proc, "{", 300, f"{self.system} clients"))["pids"]

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client worker exited (rc {self.proc.poll()}) during {cmd['op']}")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"{cmd['op']}: {out['error']}")
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call(op="quit")
            except (RuntimeError, OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def run_workload(workload: str, systems: list[str], clients: dict[str, Clients],
                 args: argparse.Namespace) -> dict[str, Any]:
    items = args.items_for[workload]
    max_clients = max(args.client_list)
    data_root = Path(args.dir)
    data_root.mkdir(parents=True, exist_ok=True)
    servers: dict[str, Server] = {}
    connected: list[str] = []
    out: dict[str, Any] = {"workload": workload, "items": items, "transition_bytes": transition_bytes(workload),
                           "systems": {}}
    try:
        t0 = time.perf_counter()
        log(f"[{workload}] starting {', '.join(systems)} servers ...")
        for s in systems:  # start everything at once: interpreter/TF start-up overlaps
            servers[s] = Server(s, workload, items, data_root, args.fsync)
        for s in systems:
            servers[s].wait_ready()
        for s in systems:
            clients[s].wait_ready()
            clients[s].call(op="connect", address=servers[s].address, workload=workload)
            connected.append(s)
        log(f"[{workload}] servers up and {max_clients} client processes each connected in "
            f"{time.perf_counter() - t0:.1f} s")
        for s in systems:
            clients[s].call(op="setup", items=items)
            log(f"[{workload}] {s}: filling {items:,} items ...")
            fill = clients[s].call(op="fill", n=items)
            out["systems"][s] = {
                "address": servers[s].address,
                "server_versions": servers[s].versions,
                "fill": {"items": fill["n"], "s": fill["s"], "items_per_s": fill["n"] / fill["s"]},
                "server_mem_after_fill": servers[s].mem(),
                "runs": {},
            }
        for run in range(args.runs):
            order = systems if run % 2 == 0 else systems[::-1]
            for k in args.client_list:
                for op in ("insert", "sample", "sample_msg"):
                    for s in order:
                        if op == "sample_msg" and (s != "ours" or not args.compare_messages):
                            continue
                        cmd: dict[str, Any] = {"op": op, "clients": k, "seconds": args.seconds, "run": run}
                        if op != "insert":
                            cmd.update(op="sample", batch=args.batch)
                            if s == "ours":  # default: a shared ring when it pays (loopback)
                                cmd["shared_memory"] = False if op == "sample_msg" else None
                        r = clients[s].call(**cmd)
                        r["items_per_s"] = r["n"] / r["wall_s"]
                        if r.get("items_drawn") is not None:
                            r["drawn_per_s"] = r["items_drawn"] / r["wall_s"]
                        out["systems"][s]["runs"].setdefault(f"{op}/{k}", []).append(r)
                        extra = (f", p50 {r['lat_ms_p50']:.1f} ms, p99 {r['lat_ms_p99']:.1f} ms"
                                 if op != "insert" and r.get("lat_ms_p50") is not None else "")
                        if r.get("shared_batches") is not None:
                            extra += f", {r['shared_batches']} batches via shared memory"
                        if r.get("drawn_per_s") is not None:
                            extra += f", server drew {r['drawn_per_s']:,.0f}/s"
                        log(f"[{workload}] run {run + 1}/{args.runs} {s:<6} {op:<10} clients={k}: "
                            f"{r['items_per_s']:,.0f} transitions/s{extra}")
        for s in systems:
            out["systems"][s]["server_mem_end"] = servers[s].mem()
            out["systems"][s]["server_disk_mb"] = servers[s].disk_mb()
    finally:
        for s in connected:
            try:
                clients[s].call(op="disconnect")
            except RuntimeError as err:
                log(f"[{workload}] {s} disconnect: {err}")
        for srv in servers.values():
            srv.stop()
    return out


def summarize(results: list[dict[str, Any]], systems: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for wl in results:
        for k in args.client_list:
            for s in systems:
                if s not in wl["systems"]:
                    continue
                sysres = wl["systems"][s]
                ins = sysres["runs"].get(f"insert/{k}", [])
                smp = sysres["runs"].get(f"sample/{k}", [])
                msg = sysres["runs"].get(f"sample_msg/{k}", [])
                med = lambda xs: float(np.median(xs)) if xs else None  # noqa: E731
                mem = sysres.get("server_mem_end") or {}
                rows.append({
                    "workload": wl["workload"], "clients": k, "system": s,
                    "insert_per_s": med([r["items_per_s"] for r in ins]),
                    "sample_per_s": med([r["items_per_s"] for r in smp]),
                    "sample_drawn_per_s": med([r["drawn_per_s"] for r in smp if r.get("drawn_per_s") is not None]),
                    "sample_p50_ms": med([r["lat_ms_p50"] for r in smp if r.get("lat_ms_p50") is not None]),
                    "sample_p99_ms": med([r["lat_ms_p99"] for r in smp if r.get("lat_ms_p99") is not None]),
                    "sample_shared_batches": sum(r.get("shared_batches", 0) for r in smp) if smp else None,
                    "sample_msg_per_s": med([r["items_per_s"] for r in msg]),
                    "sample_msg_p99_ms": med([r["lat_ms_p99"] for r in msg if r.get("lat_ms_p99") is not None]),
                    "server_rss_mb": mem.get("rss_mb"),
                    "server_hwm_mb": mem.get("hwm_mb"),
                })
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["workload"], r["clients"], r["system"]): r for r in rows}
    out = []
    for (wl, k, s), ours in by.items():
        rev = by.get((wl, k, "reverb"))
        if s != "ours" or rev is None:
            continue

        def div(a: float | None, b: float | None) -> float | None:
            return a / b if a and b else None

        ri = div(ours["insert_per_s"], rev["insert_per_s"])
        rs = div(ours["sample_per_s"], rev["sample_per_s"])
        rp = div(ours["sample_p99_ms"], rev["sample_p99_ms"])
        goal = GOALS.get(wl, {})
        out.append({
            "workload": wl, "clients": k,
            "insert_ours_over_reverb": ri, "sample_ours_over_reverb": rs, "p99_ours_over_reverb": rp,
            "sample_msg_ours_over_reverb": div(ours.get("sample_msg_per_s"), rev["sample_per_s"]),
            "goal_insert": goal.get("insert"), "goal_sample": goal.get("sample"),
            "meets_goals": (None if None in (ri, rs, rp) else
                            bool(ri >= goal.get("insert", 0) and rs >= goal.get("sample", 0) and rp < 1.0)),
        })
    return out


def _fmt(v: float | None, spec: str) -> str:
    return fmt(v, spec, missing="n/a")


def markdown(rows: list[dict[str, Any]], rat: list[dict[str, Any]]) -> str:
    lines = ["| workload | clients | system | insert transitions/s | sample transitions/s | "
             "batches via shared memory | drawn by server/s | sample p50 ms | sample p99 ms | "
             "sample in messages tr/s (p99 ms) | server RSS MiB (peak) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        msg = (f"{_fmt(r.get('sample_msg_per_s'), ',.0f')} ({_fmt(r.get('sample_msg_p99_ms'), '.1f')})"
               if r.get("sample_msg_per_s") else "n/a")
        lines.append(
            f"| {r['workload']} | {r['clients']} | {r['system']} | {_fmt(r['insert_per_s'], ',.0f')} | "
            f"{_fmt(r['sample_per_s'], ',.0f')} | {_fmt(r.get('sample_shared_batches'), ',.0f')} | "
            f"{_fmt(r.get('sample_drawn_per_s'), ',.0f')} | "
            f"{_fmt(r['sample_p50_ms'], '.1f')} | "
            f"{_fmt(r['sample_p99_ms'], '.1f')} | {msg} | {_fmt(r['server_rss_mb'], ',.0f')} "
            f"({_fmt(r['server_hwm_mb'], ',.0f')}) |")
    if rat:
        lines += ["", "| workload | clients | insert ours/reverb (goal) | sample ours/reverb (goal) | "
                  "p99 ours/reverb (goal < 1) | meets goals | sample in messages ours/reverb |",
                  "|---|---:|---:|---:|---:|---|---:|"]
        for r in rat:
            meets = {None: "n/a", True: "yes", False: "no"}[r["meets_goals"]]
            lines.append(
                f"| {r['workload']} | {r['clients']} | {_fmt(r['insert_ours_over_reverb'], '.2f')}x "
                f"(>= {r['goal_insert']}) | {_fmt(r['sample_ours_over_reverb'], '.2f')}x "
                f"(>= {r['goal_sample']}) | {_fmt(r['p99_ours_over_reverb'], '.2f')} | {meets} | "
                f"{_fmt(r.get('sample_msg_ours_over_reverb'), '.2f')}x |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="W2,W3", help="comma list of W2,W3 (default both)")
    p.add_argument("--items", default=None,
                   help="table size and prefill: one int for all, or W2=N,W3=M "
                        f"(default {DEFAULT_ITEMS}; --quick {QUICK_ITEMS})")
    p.add_argument("--clients", default="1,4", help="comma list of concurrent client processes")
    p.add_argument("--seconds", type=float, default=None, help="length of each timed phase (default 5; --quick 1)")
    p.add_argument("--runs", type=int, default=None, help="runs per configuration, median reported (default 3; --quick 1)")
    p.add_argument("--systems", default="ours,reverb", help="comma list of ours,reverb")
    p.add_argument("--batch", type=int, default=256, help="sample batch size")
    p.add_argument("--prefetch", type=int, default=2,
                   help="ours: the sampler's prefetch, batches drawn and not yet consumed (default 2)")
    p.add_argument("--fsync", default="group", help="our server's fsync policy (default group: durable)")
    p.add_argument("--no-compare-messages", dest="compare_messages", action="store_false",
                   help="ours: skip the extra sample phase with shared_memory=False (batches in "
                        "the gRPC messages), run by default beside the default transport")
    p.add_argument("--frames", choices=("blocky", "noise"), default="blocky",
                   help="W3 frame content: blocky (21x21 grid upsampled, compressible) or noise")
    p.add_argument("--reverb-sample", choices=("dataset", "client"), default="dataset",
                   help="Reverb's sample path: TrajectoryDataset (default) or Client.sample")
    p.add_argument("--reverb-python", default=str(REVERB_PY),
                   help="interpreter with dm-reverb (default .reverb-venv/bin/python)")
    p.add_argument("--pool", type=int, default=256, help="distinct pre-built transitions per client")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", default=str(BENCH_DIR / "out" / "service-data"),
                   help="where our server's data directories go (on the disk under test)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: items W2 5k / W3 1k, 1 run of 1 s per phase")
    p.add_argument("--json", default=str(BENCH_DIR / "out" / "service.json"), help="output path")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.seconds is None:
        args.seconds = 1.0 if args.quick else 5.0
    args.workload_list = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.client_list = [int(c) for c in args.clients.split(",") if c.strip()]
    args.system_list = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = sorted(set(args.workload_list) - set(WORKLOADS)) + sorted(set(args.system_list) - set(ALL_SYSTEMS))
    if bad:
        p.error(f"unknown workload/system {bad}; workloads {sorted(WORKLOADS)}, systems {ALL_SYSTEMS}")
    if not args.client_list or min(args.client_list) < 1 or args.runs < 1 or args.seconds <= 0:
        p.error("--clients must be ints >= 1, --runs >= 1, --seconds > 0")
    base = QUICK_ITEMS if args.quick else DEFAULT_ITEMS
    args.items_for = dict(base)
    if args.items:
        if "=" in args.items:
            for part in args.items.split(","):
                k, v = part.split("=")
                args.items_for[k.strip()] = int(v)
        else:
            args.items_for = {w: int(args.items) for w in WORKLOADS}
    if min(args.items_for[w] for w in args.workload_list) < args.batch:
        p.error(f"--items must be >= --batch ({args.batch})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    mach = machine()
    notes: list[str] = []
    systems = list(args.system_list)
    unavailable: dict[str, str] = {}
    REVERB_PYTHON[0] = args.reverb_python
    if "reverb" in systems and not Path(args.reverb_python).exists():
        unavailable["reverb"] = f"{args.reverb_python} not found; {SETUP_HINT}"
        systems.remove("reverb")
        log(f"NOTE: reverb skipped: {unavailable['reverb']}")
        notes.append(f"reverb skipped: {unavailable['reverb']}")
    if not systems:
        log("nothing to run")
        return 1

    results = []
    # Client processes start once (TensorFlow's import is slow) and serve every workload.
    clients = {s: Clients(s, max(args.client_list), args) for s in systems}
    try:
        for wl in args.workload_list:
            results.append(run_workload(wl, systems, clients, args))
    finally:
        for c in clients.values():
            c.close()
    rows = summarize(results, systems, args)
    rat = ratios(rows)
    mach["loadavg_end"] = list(os.getloadavg())
    reverb_versions = next((r["systems"]["reverb"]["server_versions"] for r in results if "reverb" in r["systems"]), {})
    notes += [
        "insert = one transition per add/append call from each client process, ending with a "
        "flush (time includes the last ack); ours durable (fsync policy "
        f"{args.fsync}), Reverb in RAM",
        "sample latency = wall time of each next() on the client's batch iterator (ours prefetch "
        f"{args.prefetch} batches; Reverb 2 batches in flight per worker plus tf.data prefetch 2), "
        "pooled over clients; p50/p99 are medians over runs",
        "drawn by server/s = items the server drew from the table during the sample window "
        "(ours: the table's sampled-items count, read by the clients at its start and end); "
        "below sample transitions/s when the sampler consumed batches drawn ahead before the window",
        "server RSS = VmRSS of the server process after the last phase (peak VmHWM in brackets)",
        f"W3 frames: {args.frames}; Reverb compresses chunks (zstd), ours stores raw bytes",
        "ours samples with the client's default transport: over loopback a batch of 1 MiB or "
        "more is written into a shared-memory ring the client offers (only SampleInfo travels "
        "in the gRPC message; 'batches via shared memory' counts them); 'sample in messages' is "
        "the same phase with shared_memory=False, every batch inside the gRPC messages",
    ]
    report = {
        **report_header("service_grpc", SCHEMA_VERSION, started),
        "params": {
            "workloads": args.workload_list,
            "workload_fields": {w: [[n, d, list(s)] for n, d, s in WORKLOADS[w]] for w in args.workload_list},
            "items": {w: args.items_for[w] for w in args.workload_list},
            "clients": args.client_list,
            "seconds": args.seconds,
            "runs": args.runs,
            "systems_requested": args.system_list,
            "batch": args.batch,
            "prefetch": args.prefetch,
            "alpha": 0.6,
            "beta": 0.4,
            "fsync": args.fsync,
            "compare_messages": args.compare_messages,
            "frames": args.frames,
            "reverb_sample": args.reverb_sample,
            "pool": args.pool,
            "reverb_python": args.reverb_python,
            "seed": args.seed,
            "quick": args.quick,
        },
        "machine": mach,
        "versions": {"ours": dist_versions(("replaybuf", "grpcio", "protobuf", "numpy")), "reverb": reverb_versions},
        "unavailable": unavailable,
        "results": results,
        "summary": rows,
        "ratios": rat,
        "goals": GOALS,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "notes": notes,
    }
    out = write_json(args.json, report)

    label = " (quick)" if args.quick else ""
    print(f"## Service over gRPC{label}: batch {args.batch}, median of {args.runs} run(s) x "
          f"{args.seconds:g} s per phase\n")
    print(markdown(rows, rat))
    print()
    print_footer(mach, report["peak_rss_mb"], "driver peak RSS", notes, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
