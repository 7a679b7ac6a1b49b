"""Export, lineage and Subscribe benchmark (issue 6, workload W2).

W2 (MuJoCo-like): obs float32[17], action float32[6], reward float32, next_obs float32[17],
done bool. One data dir is filled once (`--items`, default 1,000,000) and reused by every
measurement (and by later runs with `--data-dir DIR --keep-data`, if the fill parameters match):

  fill     table ``w2`` of capacity `--items`, prioritized; `--items` + 1% items in appends of
           `--append-batch` (so the fifo remover evicts the oldest 1%, logged as ItemsEvicted),
           each item with lineage (episode of 1,000 steps, model version per 10 appends, its
           own request id, an actor source); after every append a PrioritiesUpdated of 1,000
           random live items, after every 10th a RewardsCorrected of 100 and a draw of 256
           (ItemsSampled). That ends at LSN ``asof_lsn``. Then `--small-events` small events
           (PrioritiesUpdated of 8 items each), the tail a stream processor typically sees.
           The fill uses the log fsync policy ``none`` and an unsynced view (throughput of the
           fill is not what is measured here; `bench_engine.py` measures durable appends).
  export   `Engine.export` of table ``w2`` to npz and to Parquet, as of ``asof_lsn`` (the
           table is rebuilt from the log up to that LSN) and as of latest; each run in a fresh
           child process that opens the engine, resets its peak RSS (``/proc/self/clear_refs``),
           exports, and reports wall time and VmHWM minus VmRSS before the export (the
           engine's own RAM table, loaded on open, is the baseline, not the export's cost).
  lineage  `Engine.get_lineage(id)` on random ids, and the reverse queries `find_items` by
           request id, by episode (1,000 items) and by model version (up to `--version-limit`
           ids): p50/p99/max of `--queries` calls each, in process; `client.lineage(id)` over
           gRPC on a local server too.
  subscribe  `ReplayClient.subscribe(from_lsn, follow=False)` over gRPC to a local server:
           the whole log from LSN 1 (events/s and MB/s), and the small-event tail alone.

Every timed measurement is repeated `--runs` times (default 3); the table shows medians.

    .venv/bin/python bench/bench_export.py                       # full size (about 10 min)
    .venv/bin/python bench/bench_export.py --items 20000 --append-batch 2000 --small-events 200

Writes JSON (`--json`, default bench/out/export.json) with every parameter, machine info,
versions, all runs and the peak RSS per export, and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
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
    dist_versions, fmt, log, machine, median, peak_rss_mb, report_header, write_json,
)

SCHEMA_VERSION = 1
TABLE = "w2"
EPISODE_LEN = 1000
FILL_MARKER = "bench_export_fill.json"
GOALS = {"export_items_per_s": 500_000, "export_rss_delta_mib": 1024, "lineage_p99_ms": 5.0}


def w2_signature() -> dict[str, Any]:
    return {"obs": (np.float32, (17,)), "action": (np.float32, (6,)), "reward": np.float32,
            "next_obs": (np.float32, (17,)), "done": np.bool_}


def _fill_params(a: argparse.Namespace) -> dict[str, Any]:
    return {"items": a.items, "append_batch": a.append_batch, "small_events": a.small_events,
            "seed": a.seed, "schema": SCHEMA_VERSION}


# -- fill -------------------------------------------------------------------------------------


def fill(data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Fill `data_dir` (see the module docstring); returns what the measurements need."""

    from replaybuf.engine import Engine, EngineConfig
    from replaybuf.file_log import FileLogConfig
    from replaybuf.table_config import TableConfig

    items, batch = params["items"], params["append_batch"]
    rng = np.random.default_rng(params["seed"])
    total = items + items // 100
    cfg = EngineConfig(log=FileLogConfig(fsync="none"), view_sync=False)
    t0 = time.perf_counter()
    with Engine(data_dir, cfg) as e:
        e.create_table(TableConfig(TABLE, w2_signature(), capacity=items))
        done_at = 0
        k = 0
        next_id = 1
        while done_at < total:
            n = min(batch, total - done_at)
            step = (np.arange(done_at, done_at + n) % EPISODE_LEN).astype(np.uint64)
            obs = rng.standard_normal((n, 17), dtype=np.float32)
            data = {"obs": obs, "action": rng.standard_normal((n, 6), dtype=np.float32),
                    "reward": rng.standard_normal(n, dtype=np.float32),
                    "next_obs": obs + np.float32(0.01), "done": step == EPISODE_LEN - 1}
            ack = e.append(TABLE, data, priorities=rng.random(n) + 0.1, lineage={
                "episode_id": np.arange(done_at, done_at + n) // EPISODE_LEN,
                "step": step, "model_version": k // 10,
                "timestamp_ms": 1_700_000_000_000 + np.arange(done_at, done_at + n),
                "request_id": [f"req-{done_at + i:09d}" for i in range(n)],
                "source": f"actor-{k % 8}"})
            next_id = int(ack.item_ids[-1]) + 1
            lo = max(1, next_id - items)
            e.update_priorities(TABLE, rng.integers(lo, next_id, 1000), rng.random(1000) + 0.1)
            if k % 10 == 9:
                e.correct_rewards(TABLE, rng.integers(lo, next_id, 100),
                                  rng.standard_normal(100), source="human", reason="bench")
                e.sample(TABLE, 256, seed=k)
                e.flush_samples()
            done_at += n
            k += 1
        asof_lsn = e.applied_lsn
        fill_items_s = time.perf_counter() - t0
        lo = next_id - items
        for j in range(params["small_events"]):
            e.update_priorities(TABLE, rng.integers(lo, next_id, 8), rng.random(8) + 0.1)
        e.flush_samples()
        info = {"asof_lsn": asof_lsn, "last_lsn": e.applied_lsn, "present": e.describe_table(
            TABLE).size, "appended": total, "first_live_id": lo, "next_id": next_id,
            "batches": k, "fill_s": round(time.perf_counter() - t0, 2),
            "fill_items_s": round(fill_items_s, 2), "fsync": "none", "view_sync": False,
            "log_bytes": sum(f.stat().st_size for f in (data_dir / "log").glob("*.seg")),
            "params": params}
    (data_dir / FILL_MARKER).write_text(json.dumps(info, indent=2) + "\n")
    return info


def ensure_filled(data_dir: Path, params: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Reuse `data_dir` if a fill with the same parameters completed there; else fill it."""

    marker = data_dir / FILL_MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("params") == params:
            return info, True
        log(f"{data_dir} was filled with other parameters; refilling")
    if data_dir.exists():
        shutil.rmtree(data_dir)
    return fill(data_dir, params), False


# -- export in a child process ------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_export(args: list[str]) -> None:
    """``--child-export DIR FORMAT LSN|latest OUT [PROFILE]``: one export, JSON on stdout."""

    from replaybuf.engine import Engine, EngineConfig
    from replaybuf.file_log import FileLogConfig

    data_dir, fmt_, lsn_text, out = args[:4]
    fmt_, _, codec = fmt_.partition(":")  # "parquet:zstd": a codec other than the default
    prof_path = args[4] if len(args) > 4 else ""
    lsn = None if lsn_text == "latest" else int(lsn_text)
    t0 = time.perf_counter()
    engine = Engine(data_dir, EngineConfig(log=FileLogConfig(fsync="none"), view_sync=False))
    open_s = time.perf_counter() - t0
    try:
        import pyarrow.parquet  # noqa: F401 - imported before the baseline, like numpy

        try:  # reset VmHWM to VmRSS: the export's peak, not the engine open's
            Path("/proc/self/clear_refs").write_text("5")
            reset = True
        except OSError:
            reset = False
        base = _status_kib("VmRSS")
        # CPU time, not wall time: on a shared machine the wall clock mostly measures waiting.
        prof = cProfile.Profile(time.process_time) if prof_path else None
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        if prof is not None:
            prof.enable()
        manifest = engine.export(TABLE, out, as_of_lsn=lsn, format=fmt_,
                                 compression=codec or None)
        if prof is not None:
            prof.disable()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        hwm = _status_kib("VmHWM")
    finally:
        engine.close()
    if prof is not None:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(40)
        Path(prof_path).write_text(s.getvalue())
    size = Path(out).stat().st_size
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "open_s": open_s, "items": manifest["item_count"],
                      "as_of_lsn": manifest["as_of_lsn"], "sha256": manifest["content_sha256"],
                      "baseline_rss_mib": base / 1024, "peak_rss_mib": hwm / 1024,
                      "rss_delta_mib": (hwm - base) / 1024 if reset else None,
                      "hwm_reset": reset, "file_mib": size / 2**20}))


def run_export(data_dir: Path, fmt_: str, lsn: int | str, out: Path,
               profile: Path | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-export", str(data_dir),
           fmt_, str(lsn), str(out)] + ([str(profile)] if profile else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"export child failed:\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["items_per_s"] = res["items"] / res["wall_s"]
    return res


# -- lineage and subscribe ---------------------------------------------------------------------


def _percentiles(lat_s: list[float]) -> dict[str, float]:
    ms = np.asarray(lat_s) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max())}


def _timed(call: Any, args: list[Any]) -> dict[str, float]:
    for x in args[:20]:
        call(x)  # warm the page cache and the code paths
    lat = []
    for x in args:
        s = time.perf_counter()
        call(x)
        lat.append(time.perf_counter() - s)
    return _percentiles(lat)


def lineage_runs(engine: Any, client: Any, info: dict[str, Any], queries: int,
                 version_limit: int, seed: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    lo, hi = info["first_live_id"], info["next_id"]
    ids = [int(i) for i in rng.integers(1, hi, queries)]  # evicted ids too (the first 1%)
    live = [int(i) for i in rng.integers(lo, hi, queries)]
    episodes = sorted({(i - 1) // EPISODE_LEN for i in live})
    versions = max(1, info["batches"] // 10)
    return {
        "get_lineage": _timed(engine.get_lineage, ids),
        "find_by_request_id": _timed(
            lambda i: engine.find_items(TABLE, request_id=f"req-{i - 1:09d}",
                                        include_evicted=True), ids),
        "find_by_episode": _timed(
            lambda ep: engine.find_items(TABLE, episode_id=ep, include_evicted=True),
            [episodes[j % len(episodes)] for j in range(queries)]),
        "find_by_model_version": _timed(
            lambda v: engine.find_items(TABLE, model_version=v, include_evicted=True,
                                        limit=version_limit),
            [int(v) for v in rng.integers(0, versions, queries)]),
        "client_lineage_grpc": _timed(client.lineage, live),
    }


def subscribe_run(client: Any, from_lsn: int, to_lsn: int) -> dict[str, float]:
    n = size = 0
    t0 = time.perf_counter()
    with client.subscribe(from_lsn, follow=False) as sub:
        for lsn, ev in sub:
            n += 1
            size += ev.ByteSize()
            if lsn >= to_lsn:
                break
    wall = time.perf_counter() - t0
    return {"events": n, "wall_s": wall, "events_per_s": n / wall, "mb_per_s": size / wall / 1e6}


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-export":
        child_export(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--append-batch", type=int, default=10_000)
    p.add_argument("--small-events", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--version-limit", type=int, default=10_000,
                   help="limit of find_items by model version (a version has 100k items)")
    p.add_argument("--formats", nargs="+", default=["npz", "parquet"],
                   choices=["npz", "parquet", "parquet:zstd", "parquet:lz4", "parquet:none"],
                   help="parquet:CODEC exports with that codec instead of the default (snappy)")
    p.add_argument("--profile", action="store_true",
                   help="also one cProfiled export per format and LSN (top functions in JSON)")
    p.add_argument("--exports-only", action="store_true",
                   help="skip the lineage and Subscribe measurements")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None,
                   help="data dir (default: under bench/out/); reused if filled alike")
    p.add_argument("--keep-data", action="store_true", help="keep the data dir afterwards")
    p.add_argument("--json", default=str(BENCH_DIR / "out" / "export.json"))
    a = p.parse_args()
    started = time.time()
    mach = machine()
    data_dir = Path(a.data_dir or BENCH_DIR / "out" / f"export-data-{a.items}")
    params = vars(a) | {"data_dir": str(data_dir)}
    notes: list[str] = []
    log(f"fill {data_dir} ...")
    info, reused = ensure_filled(data_dir, _fill_params(a))
    log(f"fill {'reused' if reused else 'done'}: {info}")
    scratch = Path(tempfile.mkdtemp(prefix="bench-export-", dir=data_dir.parent))
    exports: list[dict[str, Any]] = []
    profiles: dict[str, str] = {}
    try:
        for fmt_ in a.formats:
            tag = fmt_.replace(":", "-")  # in file names
            for label, lsn in (("asof", info["asof_lsn"]), ("latest", "latest")):
                runs = []
                for r in range(a.runs):
                    out = scratch / f"{label}-{r}.{tag}"
                    res = run_export(data_dir, fmt_, lsn, out)
                    log(f"export {fmt_} {label} run {r}: {res['items_per_s']:,.0f} items/s, "
                        f"+{res['rss_delta_mib']} MiB")
                    runs.append(res)
                    if r:
                        out.unlink()
                        Path(str(out) + ".manifest.json").unlink()
                same = len({x["sha256"] for x in runs}) == 1
                first = scratch / f"asof-0.{tag}"
                exports.append({
                    "format": fmt_, "as_of": label, "lsn": runs[0]["as_of_lsn"],
                    "items": runs[0]["items"], "file_mib": runs[0]["file_mib"],
                    "items_per_s_median": median(x["items_per_s"] for x in runs),
                    "wall_s_median": median(x["wall_s"] for x in runs),
                    "cpu_s_median": median(x["cpu_s"] for x in runs),
                    "rss_delta_mib_max": max((x["rss_delta_mib"] or 0) for x in runs),
                    "baseline_rss_mib_median": median(x["baseline_rss_mib"] for x in runs),
                    "open_s_median": median(x["open_s"] for x in runs),
                    "same_content_every_run": same, "runs": runs})
                if a.profile:
                    prof = scratch / f"profile-{tag}-{label}.txt"
                    run_export(data_dir, fmt_, lsn, scratch / f"prof.{tag}", prof)
                    profiles[f"{fmt_}-{label}"] = prof.read_text()
            if first.exists():
                latest = scratch / f"latest-0.{tag}"
                same_bytes = first.read_bytes() == latest.read_bytes() if (
                    info["asof_lsn"] == info["last_lsn"]) else None
                if same_bytes is False:
                    notes.append(f"{fmt_}: as-of and latest exports differ at the same LSN")
        lineage, subscribe = ({}, {}) if a.exports_only else _service_part(data_dir, info, a)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mach["loadavg_end"] = list(os.getloadavg())
    report = report_header("export", SCHEMA_VERSION, started) | {
        "params": params, "machine": mach,
        "versions": dist_versions(["numpy", "lmdb", "protobuf", "pyarrow", "grpcio"]),
        "fill": info | {"reused": reused}, "export": exports, "lineage": lineage,
        "subscribe": subscribe, "goals": GOALS, "profiles": profiles,
        "peak_rss_mb": peak_rss_mb(), "notes": notes}
    out = write_json(a.json, report)
    md = markdown(report)
    print(md)
    Path(a.json).with_suffix(".md").write_text(md + "\n")
    if not a.keep_data:
        shutil.rmtree(data_dir, ignore_errors=True)
    log(f"JSON: {out}")


def _service_part(data_dir: Path, info: dict[str, Any], a: argparse.Namespace
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Lineage (in process and over gRPC) and Subscribe on a local server of the data dir."""

    from replaybuf_client import ReplayClient
    from replaybuf_server.config import ServerConfig
    from replaybuf_server.server import ReplayServer

    server = ReplayServer(ServerConfig(data_dir=str(data_dir), port=0, fsync="none")).start()
    try:
        with ReplayClient(server.address, timeout=600) as client:
            lin_runs = [lineage_runs(server.engine, client, info, a.queries, a.version_limit,
                                     a.seed + r) for r in range(a.runs)]
            sub_all = [subscribe_run(client, 1, info["last_lsn"]) for _ in range(a.runs)]
            sub_tail = [subscribe_run(client, info["asof_lsn"] + 1, info["last_lsn"])
                        for _ in range(a.runs)] if info["last_lsn"] > info["asof_lsn"] else []
    finally:
        server.stop(grace=0)
    lineage = {q: {k: median(r[q][k] for r in lin_runs) for k in lin_runs[0][q]}
               | {"runs": [r[q] for r in lin_runs]} for q in lin_runs[0]}

    def summary(runs: list[dict[str, float]]) -> dict[str, Any]:
        if not runs:
            return {}
        return {"events": runs[0]["events"],
                "events_per_s_median": median(r["events_per_s"] for r in runs),
                "mb_per_s_median": median(r["mb_per_s"] for r in runs), "runs": runs}

    return lineage, {"whole_log": summary(sub_all), "small_event_tail": summary(sub_tail)}


def markdown(r: dict[str, Any]) -> str:
    f = r["fill"]
    lines = [f"W2, {f['present']:,} items present ({f['appended']:,} appended), log "
             f"{f['log_bytes'] / 2**20:,.0f} MiB, as-of LSN {f['asof_lsn']:,}, last LSN "
             f"{f['last_lsn']:,}; medians of {r['params']['runs']} runs", "",
             "| export | as of | items | items/s | wall s | CPU s | items per CPU s | peak RSS "
             "above baseline MiB (max) | file MiB | goal |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for e in r["export"]:
        ok = (e["items_per_s_median"] >= GOALS["export_items_per_s"]
              and e["rss_delta_mib_max"] < GOALS["export_rss_delta_mib"])
        lines.append(f"| {e['format']} | {e['as_of']} (LSN {e['lsn']:,}) | {e['items']:,} | "
                     f"{fmt(e['items_per_s_median'])} | {e['wall_s_median']:.2f} | "
                     f"{e['cpu_s_median']:.2f} | {fmt(e['items'] / e['cpu_s_median'])} | "
                     f"{e['rss_delta_mib_max']:.0f} | {e['file_mib']:.0f} | "
                     f"{'met' if ok else 'missed'} |")
    lines += ["", "| query | p50 ms | p99 ms | max ms | goal p99 < 5 ms |",
              "|---|---:|---:|---:|---|"]
    for q, v in r["lineage"].items():
        lines.append(f"| {q} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} | {v['max_ms']:.3f} | "
                     f"{'met' if v['p99_ms'] < GOALS['lineage_p99_ms'] else 'missed'} |")
    lines += ["", "| subscribe (gRPC, follow=false) | events | events/s | MB/s |",
              "|---|---:|---:|---:|"]
    for name, s in r["subscribe"].items():
        if s:
            lines.append(f"| {name} | {s['events']:,} | {fmt(s['events_per_s_median'])} | "
                         f"{s['mb_per_s_median']:.1f} |")
    m = r["machine"]
    lines += ["", f"- machine: {m['cpu_model']}, nproc {m['nproc']}, load average "
              f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end; fill "
              f"{f['fill_s']:.0f} s (fsync {f['fsync']}, {'reused' if f['reused'] else 'new'})"]
    lines += [f"- {n}" for n in r["notes"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
