"""Helpers the benchmark scripts share: machine info, versions, medians, peak RSS, peer
availability, report header, JSON writing and the printed footer.

The scripts run as `python bench/<script>.py`, so `bench/` is on `sys.path` and they import this
module as `_common`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
INSTALL_HINT = (
    "install the peers with `bash bench/setup_peers_venv.sh` and run with "
    "`.bench-venv/bin/python bench/bench_sum_tree.py`"
)


class PeerUnavailable(Exception):
    """A peer library can't be imported here; the message says why and how to install it."""


def log(msg: str) -> None:
    """Progress line on stderr (stdout carries the report)."""
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Machine, versions, memory
# --------------------------------------------------------------------------------------------


def _proc_field(path: str, prefix: str) -> str | None:
    """The rest of the first line of /proc file `path` that starts with `prefix`."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line[len(prefix):]
    except OSError:
        pass
    return None


def cpu_model() -> str | None:
    rest = _proc_field("/proc/cpuinfo", "model name")
    return rest.split(":", 1)[1].strip() if rest is not None else None


def mem_total_kib() -> int | None:
    rest = _proc_field("/proc/meminfo", "MemTotal:")
    return int(rest.split()[0]) if rest is not None else None


def machine() -> dict[str, Any]:
    """CPU, memory, platform and the load average at start (add `loadavg_end` at the end)."""
    mem_kib = mem_total_kib()
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    return {
        "nproc": nproc,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model() or "unknown",
        "mem_total_mb": mem_kib // 1024 if mem_kib is not None else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "loadavg_start": list(os.getloadavg()),
    }


def run_text(cmd: list[str], cwd: Path | None = None) -> str | None:
    """stdout of `cmd`, or None if it can't run or fails."""
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str | None:
    out = run_text(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty", "--abbrev=12"])
    return out.strip() if out is not None else None


def dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def dist_versions(names: Iterable[str]) -> dict[str, str]:
    return {n: dist_version(n) for n in names}


def rss_mb() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB


def peak_rss_mb() -> float:
    return peak_rss_kib() / 1024


# --------------------------------------------------------------------------------------------
# Statistics and formatting
# --------------------------------------------------------------------------------------------


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None (an int stays an int); None if there are none."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    m = statistics.median(xs)
    return m if isinstance(m, int) else float(m)


def fmt(x: float | None, spec: str = ",.0f", missing: str = "-") -> str:
    return missing if x is None else format(x, spec)


# --------------------------------------------------------------------------------------------
# Peers and the report
# --------------------------------------------------------------------------------------------


def require_peer(what: str, module: str, *names: str) -> Any:
    """Import a peer's `module` and check it has `names`; PeerUnavailable (naming `what` and
    how to install the peers) when that fails."""
    try:
        mod = importlib.import_module(module)
        for name in names:
            if not hasattr(mod, name):
                raise ImportError(f"cannot import name {name!r} from {module!r}")
    except ImportError as err:
        raise PeerUnavailable(f"{what} not importable ({err}); {INSTALL_HINT}") from err
    return mod


def cpprb_version() -> str:
    require_peer("cpprb", "cpprb", "PrioritizedReplayBuffer")
    return dist_version("cpprb")


def probe_peers(names: Iterable[str], classes: Mapping[str, Any],
                describe: Callable[[Any], dict[str, Any]] | None = None,
                say: Callable[[str], None] = log,
                ) -> tuple[dict[str, dict[str, Any]], list[str], list[str]]:
    """Ask each peer class for its version: (peers info, available names, notes on skipped ones).

    `describe(cls)` adds fields to an available peer's entry after `available` and `version`.
    """
    info: dict[str, dict[str, Any]] = {}
    available: list[str] = []
    notes: list[str] = []
    for name in names:
        try:
            cls = classes[name]
            info[name] = {"available": True, "version": cls.version()}
            if describe is not None:
                info[name] |= describe(cls)
            available.append(name)
        except PeerUnavailable as err:
            info[name] = {"available": False, "reason": str(err)}
            notes.append(f"{name} skipped: {err}")
            say(f"NOTE: {name} skipped: {err}")
    return info, available, notes


def report_header(benchmark: str, schema_version: int, started: float) -> dict[str, Any]:
    """The fields every report starts with; `started` is a `time.time()`."""
    return {
        "benchmark": benchmark,
        "schema_version": schema_version,
        "argv": sys.argv,
        "git": git_commit(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 2),
    }


def write_json(path: Path | str, report: Mapping[str, Any]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return out


def print_footer(machine_info: Mapping[str, Any], peak_rss: float, rss_label: str,
                 notes: Iterable[str], out: Path) -> None:
    """Machine and load line, the notes as a list, and where the JSON went."""
    print(f"- machine: {machine_info['cpu_model']}, nproc {machine_info['nproc']}, load average "
          f"{machine_info['loadavg_start'][0]:.2f} at start, "
          f"{machine_info['loadavg_end'][0]:.2f} at end; {rss_label} {peak_rss:.0f} MB")
    for n in notes:
        print(f"- {n}")
    print(f"\nJSON: {out}")
