"""Job files: the TOML that names a hygiene/drift job, its eviction policies, drift checks and
schedule (see README.md, "Hygiene jobs and drift").

Example::

    [job]
    id = "evict-stale"          # job id; a scheduled run appends "@<UTC time>"
    table = "replay"
    now = "2026-11-22T10:00:00Z" # optional reference time (default: the wall clock at start)

    [[evict]]                   # policies apply in file order: the first match names the reason
    policy = "max_age"
    max_age = "7d"

    [drift]
    ks = 0.2
    psi = 0.25

    [schedule]
    every = "10m"
"""

from __future__ import annotations

import datetime
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replaybuf.errors import InvalidArgumentError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["JobSpec", "DriftSpec", "load_job", "parse_job", "parse_duration_ms", "parse_time_ms"]

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration_ms(value: object, what: str) -> int:
    """``"90s"``, ``"10m"``, ``"1h30m"``, ``"7d"`` or a number of seconds -> milliseconds."""

    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return int(round(float(value) * 1000))
    if isinstance(value, str):
        text = value.replace(" ", "")
        parts = _PART.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return int(round(sum(float(n) * _UNITS[u] for n, u in parts)))
    raise InvalidArgumentError(
        f"{what} is {value!r}; give a duration like \"90s\", \"10m\", \"1h30m\", \"7d\" or a "
        f"number of seconds"
    )


def parse_time_ms(value: object, what: str) -> int:
    """An ISO-8601 time (``"2026-11-22T10:00:00Z"``), a TOML datetime or ms since the epoch."""

    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return int(round(value.timestamp() * 1000))
    raise InvalidArgumentError(
        f"{what} is {value!r}; give an ISO-8601 time like \"2026-11-22T10:00:00Z\" or ms since "
        f"the epoch"
    )


@dataclass(frozen=True)
class DriftSpec:
    """The ``[drift]`` section: which windows to compare and when to recommend retraining."""

    ks: float = 0.2
    """Kolmogorov-Smirnov statistic at or above which a feature has drifted."""
    psi: float = 0.25
    """Population stability index at or above which a feature has drifted."""
    bins: int = 10
    """PSI bins (quantiles of the reference window)."""
    reference_lsn: tuple[int, int] | None = None
    """Inclusive append-LSN range of the reference window."""
    recent_lsn: tuple[int, int] | None = None
    """Inclusive append-LSN range of the recent window."""
    reference_time: tuple[int, int] | None = None
    """Inclusive item-time range (ms) of the reference window."""
    recent_time: tuple[int, int] | None = None
    """Inclusive item-time range (ms) of the recent window."""
    recent_fraction: float = 0.5
    """Without ranges: the newest fraction of items is recent, the rest the reference."""
    features: tuple[str, ...] = ("reward", "obs")
    """``"reward"`` and/or float signature fields; each element of a field is one feature."""
    min_items: int = 20
    """Windows smaller than this are reported but never recommend retraining."""

    def __post_init__(self) -> None:
        if not 0 < self.ks <= 1 or not self.psi > 0:
            raise InvalidArgumentError(
                f"[drift] ks={self.ks!r} must be in (0, 1] and psi={self.psi!r} > 0")
        if not isinstance(self.bins, int) or self.bins < 2:
            raise InvalidArgumentError(f"[drift] bins={self.bins!r} must be an integer >= 2")
        if not 0 < self.recent_fraction < 1:
            raise InvalidArgumentError(
                f"[drift] recent_fraction={self.recent_fraction!r} must be in (0, 1)")


@dataclass(frozen=True)
class JobSpec:
    """A parsed job file."""

    name: str
    """Job id of a manual run (``[job] id``); scheduled runs append ``@<time>``."""
    table: str
    """Table the job runs on."""
    policies: tuple[Any, ...] = ()
    """Eviction policies (`replaybuf.jobs.policies`), in file order."""
    drift: DriftSpec | None = None
    """Drift checks, when the file has a ``[drift]`` section."""
    every_ms: int | None = None
    """``[schedule] every``: how often ``replaybuf serve --jobs`` runs it."""
    now_ms: int | None = None
    """Reference time of age-based policies (None: the wall clock when the run starts)."""
    path: str = ""
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _pair(value: object, what: str, conv: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise InvalidArgumentError(f"[drift] {what} is {value!r}; give [first, last]")
    return conv(value[0], what), conv(value[1], what)


def _int(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidArgumentError(f"{what} is {value!r}; give an integer")


def parse_job(doc: dict[str, Any], path: str = "") -> JobSpec:
    """Build a `JobSpec` from a parsed TOML document."""

    from replaybuf.jobs.policies import parse_policy

    where = path or "job file"
    known = {"job", "evict", "drift", "schedule"}
    extra = sorted(set(doc) - known)
    if extra:
        raise InvalidArgumentError(f"{where}: unknown sections {extra}; use {sorted(known)}")
    job = doc.get("job", {})
    name, table = job.get("id"), job.get("table")
    if not isinstance(name, str) or not name or not isinstance(table, str) or not table:
        raise InvalidArgumentError(f"{where}: [job] needs id = \"...\" and table = \"...\"")
    evict = doc.get("evict", [])
    if not isinstance(evict, list):
        raise InvalidArgumentError(f"{where}: write each policy as an [[evict]] table")
    policies = tuple(parse_policy(p, f"{where} [[evict]] #{i + 1}") for i, p in enumerate(evict))
    drift = None
    if "drift" in doc:
        d = dict(doc["drift"])
        kw: dict[str, Any] = {}
        for key in ("ks", "psi", "recent_fraction"):
            if key in d:
                kw[key] = float(d.pop(key))
        for key in ("bins", "min_items"):
            if key in d:
                kw[key] = _int(d.pop(key), f"[drift] {key}")
        for key in ("reference_lsn", "recent_lsn"):
            if key in d:
                kw[key] = _pair(d.pop(key), key, _int)
        for key in ("reference_time", "recent_time"):
            if key in d:
                kw[key] = _pair(d.pop(key), key, parse_time_ms)
        if "features" in d:
            kw["features"] = tuple(str(f) for f in d.pop("features"))
        if d:
            raise InvalidArgumentError(f"{where}: unknown [drift] keys {sorted(d)}")
        drift = DriftSpec(**kw)
    every = None
    if "schedule" in doc:
        every = parse_duration_ms(doc["schedule"].get("every"), f"{where} [schedule] every")
        if every <= 0:
            raise InvalidArgumentError(f"{where}: [schedule] every must be > 0")
    now = job.get("now")
    return JobSpec(name=name, table=table, policies=policies, drift=drift, every_ms=every,
                   now_ms=None if now is None else parse_time_ms(now, "[job] now"),
                   path=path, source=doc)


def load_job(path: str | Path) -> JobSpec:
    """Read and parse a TOML job file."""

    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise InvalidArgumentError(f"job file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgumentError(f"job file {p} is not valid TOML ({exc})") from None
    return parse_job(doc, str(p))
