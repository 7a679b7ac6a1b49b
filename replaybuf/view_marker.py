"""The view's "unsynced" marker: when may an LMDB view written without fsync be trusted?

By default the view's commits are not fsynced (`EngineConfig.view_sync` False): the event log
is the source of truth and is fsynced before every durable ack, and the view is derived data
that can be rebuilt from it (DESIGN.md, invariant 1). Skipping the view's fsync halves the
synced bytes of every append (each payload is in the log and in the view).

What that risks, and how this module bounds it:

* A **process crash** (SIGKILL, OOM kill, segfault) loses nothing: LMDB wrote every committed
  page with ``write()``, and the kernel's page cache outlives the process. The view is exactly
  as committed.
* An **OS crash or power loss** may leave the view inconsistent: pages of later transactions
  may have reached the disk while the meta page that makes them reachable did not, or the
  reverse (py-lmdb: "a system crash can corrupt the database"). The view cannot be trusted
  then, and opening a damaged LMDB file can fail in ways no check catches.

So before the first unsynced commit, `mark` writes a marker file into the view's directory
holding the kernel's boot id (``/proc/sys/kernel/random/boot_id``, new at every boot), and
fsyncs it and the directory. A clean close syncs the environment and then `clear`s the
marker. On the next open, `distrust` compares: no marker (clean close, or a view that was
always synced) or the same boot id (only the process died) means the view is trusted; a
marker from another boot means the machine went down with unsynced commits, and the view is
rebuilt from the log. Where the boot id cannot be read (not Linux), any marker left behind
counts as another boot: a crash then always costs a rebuild, never a wrong view.
"""

from __future__ import annotations

import os
from pathlib import Path

from replaybuf.segment import fsync_dir

__all__ = ["MARKER", "boot_id", "mark", "clear", "distrust"]

#: File name of the marker inside the view's directory.
MARKER = "unsynced"

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str | None:
    """The running kernel's boot id (changes at every boot), or None where there is none."""

    try:
        value = _BOOT_ID.read_text().strip()
    except OSError:
        return None
    return value or None


def mark(view_dir: Path) -> None:
    """Record, durably, that the view in `view_dir` takes unsynced commits from this boot."""

    path = view_dir / MARKER
    tmp = view_dir / (MARKER + ".tmp")
    with open(tmp, "w", encoding="ascii") as f:
        f.write((boot_id() or "unknown") + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(view_dir)


def clear(view_dir: Path) -> None:
    """Remove the marker once every commit of the view is synced (after ``env.sync(True)``)."""

    try:
        os.unlink(view_dir / MARKER)
    except FileNotFoundError:
        return
    fsync_dir(view_dir)


def distrust(view_dir: Path) -> str | None:
    """Why the view in `view_dir` must be rebuilt because of unsynced commits, or None.

    None when there is no marker or it names the running boot; else a sentence for the log.
    """

    try:
        recorded = (view_dir / MARKER).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        return f"its unsynced-commits marker is unreadable ({exc})"
    now = boot_id()
    if now is not None and recorded == now:
        return None
    return (
        f"it took unsynced commits during boot {recorded!r} and was not closed cleanly; the "
        f"machine has restarted since (boot {now or 'unknown'!r}), so an OS crash or power "
        "loss may have left it inconsistent"
    )
