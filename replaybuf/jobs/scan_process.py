"""A job's snapshot scan and plan in a child process, beside an engine serving learners.

Why: the scan of a large table (`replaybuf.jobs.snapshot.from_view`) holds the interpreter's
GIL for each chunk's LMDB cursor walk, payload NaN/inf check and hot-metadata fill. Run in the
engine's process (``replaybuf serve --jobs``), that made a concurrent learner's p99 sample
latency 2.4-3.2x its idle p99 (bench/RESULTS.md, hygiene). A child process has its own GIL:
it opens the LMDB view read-only (LMDB serves readers in other processes; each commit of the
engine is visible to a read transaction begun after it), scans it in one read transaction,
plans, and sends back only the plan: the evicted ids per policy as compact ``uint64`` arrays
and the drift result. The engine's process then evicts in batches as before.

Consistency: the child's read transaction is a snapshot of the view as of its
``applied_lsn``, which the plan records (`Plan.at_lsn`), exactly as the in-process scan's
transaction is; pending hot metadata (the ``draws`` database) is read in that transaction by
the same `View.fill_hot`. Same view state, same code: the same plan.

Failure: the child never writes. If it raises, the parent raises the same replaybuf error
class (else `ScanProcessError`) with the child's message and traceback; if it dies (killed,
out of memory), the parent raises `ScanProcessError` naming its exit status. Either way before
any eviction: a failed scan evicts nothing. The child's reader slot is freed by LMDB when the
child exits cleanly, and by the ``reader_check`` of the next open when it was killed.

The child is started with `subprocess` (fork + exec of ``sys.executable``: safe in a process
with gRPC threads, unlike a bare fork) and talks over a pipe. Startup costs about a second of
imports, on a core that the engine's threads do not hold.

Example::

    plan = plan_in_process(engine.view.path, spec, job_id="evict-1", now_ms=now)
"""

from __future__ import annotations

import os
import pickle
import resource
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

import replaybuf
from replaybuf import errors
from replaybuf.jobs.jobfile import JobSpec
from replaybuf.jobs.plan import Plan, plan_job, snapshot_needs

__all__ = ["SCAN_NICE", "SEND_IDS", "ScanProcessError", "plan_in_process"]

#: Default niceness of the scan process (`os.nice`). The scan is background work: at 10 the
#: kernel gives the engine's threads (learners sampling) a CPU first when all are busy, which
#: is what keeps their latency on a machine with few cores; the scan takes what is left.
SCAN_NICE = 10

#: Ids per message when the child sends a policy's ids (512 KiB): each piece is one short
#: copy on the parent's side, so receiving millions of ids never holds its GIL for long.
SEND_IDS = 1 << 16

_CHILD = "from replaybuf.jobs.scan_process import _child_main; _child_main()"


class ScanProcessError(errors.ReplayError):
    """The job's scan process failed or died before sending its plan. Nothing was evicted."""

    grpc_status = "INTERNAL"


def plan_in_process(view_path: str | Path, spec: JobSpec, *, job_id: str, now_ms: int,
                    progress: bool = False, nice: int = SCAN_NICE) -> Plan:
    """`plan_job` on a `from_view` snapshot of the view at `view_path`, computed in a child
    process (module docstring). Blocks the calling thread until the plan arrives, mostly
    without the GIL (it waits in ``read``).

    Args:
        nice: added to the child's niceness (`SCAN_NICE`; 0 keeps this process's).

    Raises:
        ScanProcessError: the child could not start, crashed, or failed with a non-replaybuf
            error (its traceback is in the message).
        ReplayError: the child raised this replaybuf error (e.g. `TableNotFoundError`,
            `ViewDamagedError`); same class, the child's message.
    """

    if not 0 <= nice <= 19:
        raise errors.InvalidArgumentError(
            f"nice is {nice!r}; give 0 (the engine's priority) to 19 (the lowest)")
    request = {"view_path": str(view_path), "spec": spec, "job_id": job_id,
               "now_ms": int(now_ms), "progress": bool(progress), "nice": int(nice)}
    read_fd, write_fd = os.pipe()
    env = dict(os.environ)
    root = str(Path(replaybuf.__file__).resolve().parent.parent)  # the parent's replaybuf
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    started = time.perf_counter()
    try:
        # stdout to /dev/null: this process's stdout may carry output of its own (`jobs run
        # --json`, a benchmark's JSON); stderr is shared (progress bars, a crash's message).
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(write_fd)],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                pass_fds=(write_fd,), env=env, close_fds=True)
    except OSError as exc:
        os.close(read_fd)
        raise ScanProcessError(
            f"could not start the scan process of job {job_id!r} ({sys.executable}: {exc}); "
            f"run the job with scan='thread' (EngineTarget(engine, scan='thread'), "
            f"`replaybuf jobs run --scan thread`)") from exc
    finally:
        os.close(write_fd)  # the child holds its copy: EOF here once it exits
    conn = Connection(read_fd, writable=False)
    try:
        try:
            assert proc.stdin is not None
            pickle.dump(request, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died at once: reported below from its exit status
        plan = _receive(conn, proc, job_id)
        proc.wait()
    finally:
        conn.close()
        if proc.poll() is None:  # we are failing (or interrupted): leave no scan behind
            proc.kill()
            proc.wait()
    plan.scan["wall_s"] = time.perf_counter() - started
    return plan


def _receive(conn: Connection, proc: subprocess.Popen[bytes], job_id: str) -> Plan:
    """The plan the child sends (header, then each policy's ids in pieces), or its error."""

    try:
        head = conn.recv()
        if head[0] == "error":
            _, cls_name, message, tb = head
            cls = errors.error_class_for(cls_name)
            where = f" (in the scan process {proc.pid} of job {job_id!r})"
            if cls.__name__ == cls_name:
                raise cls(f"{message}{where}")
            raise ScanProcessError(f"{cls_name}: {message}{where}; its traceback:\n{tb}")
        _, plan, sizes = head
        for ev, size in zip(plan.evictions, sizes):
            ids = np.empty(size, np.uint64)
            raw = memoryview(ids).cast("B")
            for start in range(0, size, SEND_IDS):
                conn.recv_bytes_into(raw, start * ids.itemsize)
            ev.ids = ids
        return plan  # type: ignore[no-any-return]
    except (EOFError, OSError) as exc:
        code = proc.wait()
        how = (f"was killed by signal {-code}" if code < 0 else f"exited with status {code}")
        raise ScanProcessError(
            f"the scan process {proc.pid} of job {job_id!r} {how} before sending its plan "
            f"(out of memory? killed?); nothing was evicted. Run the job again, or with "
            f"scan='thread' to scan in the engine's process") from exc


# -- the child ---------------------------------------------------------------------------------


def _open_reader(path: str) -> Any:
    """A `replaybuf.view.View` on a read-only LMDB environment (writes fail in LMDB)."""

    import lmdb

    from replaybuf.view import View

    env = lmdb.open(path, readonly=True, lock=True, subdir=True, max_dbs=64, map_size=0)
    try:
        env.reader_check()  # free the slots of killed earlier scans
        view = View(Path(path), env, 0)
        view._load_meta()  # tables and pending draws, as `View.open` reads them
    except BaseException:
        env.close()
        raise
    return view


def _scan_and_plan(request: dict[str, Any]) -> Plan:
    from replaybuf.jobs.snapshot import from_view

    spec: JobSpec = request["spec"]
    if request["nice"]:
        os.nice(request["nice"])
    view = _open_reader(request["view_path"])
    try:
        needs = snapshot_needs(spec)
        t0 = time.perf_counter()
        snap = from_view(view, spec.table, request_ids=needs["request_ids"],
                         payload=needs["payload"], features=needs["features"],
                         progress=request["progress"])
        t1 = time.perf_counter()
        anon = _rss_anon_mb()
        plan = plan_job(spec, snap, job_id=request["job_id"], now_ms=request["now_ms"])
        after = _rss_anon_mb()  # the snapshot and the plan's temporaries
        anon = None if anon is None or after is None else max(anon, after)
        del snap
        plan.scan = {"mode": "process", "pid": os.getpid(), "nice": request["nice"],
                     "scan_s": t1 - t0, "plan_s": time.perf_counter() - t1,
                     "anon_mb": anon}
    finally:
        view.close()
    return plan


def _rss_anon_mb() -> float | None:
    """This process's anonymous RSS (its own memory, not the LMDB pages it maps), MiB."""

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _child_main() -> None:
    out = Connection(int(sys.argv[1]), readable=False)
    try:
        plan = _scan_and_plan(pickle.load(sys.stdin.buffer))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        out.send(("error", type(exc).__name__, str(exc), traceback.format_exc()))
        out.close()
        sys.exit(1)
    # Peak RSS counts the view's pages the scan mapped in (page cache shared with the engine).
    plan.scan["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ids = [np.ascontiguousarray(ev.ids, np.uint64) for ev in plan.evictions]
    head = replace(plan, evictions=[replace(ev, ids=np.empty(0, np.uint64))
                                    for ev in plan.evictions])
    out.send(("plan", head, [a.size for a in ids]))
    for a in ids:
        for start in range(0, a.size, SEND_IDS):
            out.send_bytes(memoryview(a[start : start + SEND_IDS]).cast("B"))
    out.close()
