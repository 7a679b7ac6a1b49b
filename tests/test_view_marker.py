"""Unsynced view commits (the default): trusted after a process crash, rebuilt after a reboot.

The machine cannot be rebooted in a test, so a reboot is what it looks like to the next open:
the marker left by a SIGKILLed engine names a boot id that is not the running kernel's.
"""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest

from _engine_helpers import SIG, batch, check_acked, run_crash_child, snapshot
from replaybuf import view_marker
from replaybuf.engine import Engine, EngineConfig
from replaybuf.file_log import FileLogConfig
from replaybuf.table_config import TableConfig

DURABLE = EngineConfig(log=FileLogConfig(fsync="group"), map_size=2**30)


def _marker(path):
    return path / "view" / view_marker.MARKER


def test_default_is_unsynced_and_a_clean_close_leaves_no_marker(tmp_path):
    assert EngineConfig().view_sync is False
    with Engine(tmp_path / "db", DURABLE) as engine:
        engine.create_table(TableConfig("t", SIG, capacity=100))
        engine.append("t", batch(np.arange(10)))
        assert _marker(tmp_path / "db").exists()  # written before the first commit
        state = snapshot(engine)
    assert not _marker(tmp_path / "db").exists()
    with Engine(tmp_path / "db", DURABLE) as engine:
        assert engine.rebuild_reason is None
        assert snapshot(engine) == state


@pytest.mark.slow
def test_view_of_a_killed_process_is_trusted_in_the_same_boot(tmp_path):
    path = tmp_path / "db"
    acked = run_crash_child(path, "group", 3, kill_after=random.Random(3).randint(5, 30))
    assert _marker(path).read_text().strip() == (view_marker.boot_id() or "unknown")
    if view_marker.boot_id() is None:  # pragma: no cover - not Linux: always rebuilt
        pytest.skip("no boot id on this system")
    with Engine(path, DURABLE) as engine:
        assert engine.rebuild_reason is None  # caught up, not rebuilt
        assert engine.loaded_from == "scan"
        check_acked(engine, acked)


@pytest.mark.slow
def test_view_left_open_across_a_reboot_is_rebuilt_and_loses_no_acked_item(tmp_path):
    path = tmp_path / "db"
    acked = run_crash_child(path, "group", 4, kill_after=random.Random(4).randint(5, 30))
    _marker(path).write_text("a-boot-before-this-one\n")  # what a reboot leaves behind
    with Engine(path, DURABLE) as engine:
        assert engine.rebuild_reason is not None
        assert "cannot be trusted" in engine.rebuild_reason
        assert "a-boot-before-this-one" in engine.rebuild_reason
        check_acked(engine, acked)
        state = snapshot(engine)
    assert not _marker(path).exists()
    copy = tmp_path / "rebuilt"
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns("LOCK", "view"))
    with Engine(copy, DURABLE) as rebuilt:  # the same as a rebuild from the log alone
        assert snapshot(rebuilt) == state


@pytest.mark.slow
def test_synced_session_after_an_unsynced_crash_syncs_and_drops_the_marker(tmp_path):
    path = tmp_path / "db"
    acked = run_crash_child(path, "group", 5, kill_after=10)
    assert _marker(path).exists()
    synced = EngineConfig(log=FileLogConfig(fsync="group"), map_size=2**30, view_sync=True)
    with Engine(path, synced) as engine:
        assert engine.rebuild_reason is None
        assert not _marker(path).exists()  # every earlier commit synced at open
        check_acked(engine, acked)
    # a synced view that was killed leaves no marker, so a reboot needs no rebuild
    acked += run_crash_child(path, "group", 6, kill_after=10, view_sync=True)
    assert not _marker(path).exists()
    with Engine(path, DURABLE) as engine:
        assert engine.rebuild_reason is None
        check_acked(engine, acked)


def test_unreadable_marker_means_rebuild(tmp_path):
    with Engine(tmp_path / "db", DURABLE) as engine:
        engine.create_table(TableConfig("t", SIG, capacity=100))
        engine.append("t", batch(np.arange(5)))
        state = snapshot(engine)
    _marker(tmp_path / "db").write_bytes(b"\xff\xfe not ascii")
    with Engine(tmp_path / "db", DURABLE) as engine:
        assert "unreadable" in (engine.rebuild_reason or "")
        assert snapshot(engine) == state


def test_distrust_names_both_boots(tmp_path):
    assert view_marker.distrust(tmp_path) is None
    view_marker.mark(tmp_path)
    assert view_marker.distrust(tmp_path) is None or view_marker.boot_id() is None
    (tmp_path / view_marker.MARKER).write_text("old-boot\n")
    why = view_marker.distrust(tmp_path)
    assert why is not None and "old-boot" in why
    view_marker.clear(tmp_path)
    view_marker.clear(tmp_path)  # idempotent
    assert view_marker.distrust(tmp_path) is None
