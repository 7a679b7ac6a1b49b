"""The tables' snapshot file: used after a clean close, never when it is stale or damaged."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from _engine_helpers import SIG, batch, sample_summary, snapshot
from replaybuf.engine import Engine, EngineConfig
from replaybuf.table_config import SelectorConfig, TableConfig
from replaybuf.table_snapshot import SNAPSHOT_NAME, Gathered, TableState, read_snapshot

CONFIG = EngineConfig.for_tests()
TABLES = [
    TableConfig("per", SIG, 50, sampler=SelectorConfig("prioritized", alpha=0.7)),
    TableConfig("fifo", SIG, 20, sampler=SelectorConfig("fifo"), max_times_sampled=3),
    TableConfig("img", {"x": (np.uint8, (2, 3, 4)), "reward": np.float32}, 10),
]


def _fill(path: Path) -> dict:
    """An engine with every kind of change, closed cleanly; its state."""

    with Engine(path, CONFIG) as engine:
        for cfg in TABLES:
            engine.create_table(cfg, exist_ok=True)
        for name in ("per", "fifo"):
            engine.append(name, batch(np.arange(12)), priorities=np.arange(12) + 1.0,
                          lineage={"episode_id": 3, "step": np.arange(12),
                                   "request_id": "r", "model_version": -2, "source": name})
        engine.append("img", {"x": np.arange(3 * 24, dtype=np.uint8).reshape(3, 2, 3, 4),
                              "reward": np.ones(3, np.float32)})
        engine.sample("per", 5, seed=1)
        engine.sample("fifo", 4, seed=2)
        engine.update_priorities("per", [2, 3], [7.0, 0.5])
        engine.correct_rewards("fifo", [14, 15], [9.0, 8.0])
        engine.evict("per", [4, 5], reason="manual")
        engine.flush_samples()
        return snapshot(engine)


def test_clean_close_writes_a_snapshot_that_reopens_to_the_same_state(tmp_path):
    path = tmp_path / "db"
    state = _fill(path)
    assert (path / "view" / SNAPSHOT_NAME).exists()
    with Engine(path, CONFIG) as engine:
        assert engine.loaded_from == "snapshot"
        assert snapshot(engine) == state
        drawn = sample_summary(engine, "per", seed=9)
    shutil.copytree(path, tmp_path / "scan", ignore=shutil.ignore_patterns("LOCK"))
    (tmp_path / "scan" / "view" / SNAPSHOT_NAME).unlink()
    with Engine(tmp_path / "scan", CONFIG) as engine:
        assert engine.loaded_from == "scan"
        assert sample_summary(engine, "per", seed=9) == drawn


def _flip_byte_at(offset_from_end: int):
    def damage(view: Path, other: Path) -> None:
        f = view / SNAPSHOT_NAME
        raw = bytearray(f.read_bytes())
        raw[len(raw) - offset_from_end] ^= 0x40
        f.write_bytes(bytes(raw))
    return damage


def _truncate(view: Path, other: Path) -> None:
    f = view / SNAPSHOT_NAME
    f.write_bytes(f.read_bytes()[:-100])


def _header_edit(key: str, value: object):
    """Rewrite one header field (the checksum then fails too, unless it is recomputed: here
    the header check must catch it before)."""

    def damage(view: Path, other: Path) -> None:
        f = view / SNAPSHOT_NAME
        raw = f.read_bytes()
        magic, fmt, hlen = struct.unpack_from("<8sII", raw)
        header = json.loads(raw[16 : 16 + hlen])
        header[key] = value
        new = json.dumps(header).encode().ljust(hlen)[:hlen]
        f.write_bytes(raw[:16] + new + raw[16 + hlen :])
    return damage


def _from_another_view(view: Path, other: Path) -> None:
    # the same events in another engine: the same LSN and content, another view identity
    shutil.copy(other / "view" / SNAPSHOT_NAME, view / SNAPSHOT_NAME)


@pytest.mark.parametrize("damage", [
    _flip_byte_at(50), _flip_byte_at(5), _truncate, _header_edit("applied_lsn", 1),
    _header_edit("view_id", "0" * 32), _from_another_view,
], ids=["body-byte", "crc-byte", "truncated", "other-lsn", "other-view-id", "other-view"])
def test_a_damaged_or_foreign_snapshot_is_not_used(tmp_path, damage):
    path = tmp_path / "db"
    state = _fill(path)
    _fill(tmp_path / "other")
    damage(path / "view", tmp_path / "other")
    with Engine(path, CONFIG) as engine:
        assert engine.loaded_from == "scan"
        assert engine.rebuild_reason is None
        assert snapshot(engine) == state


def test_an_older_snapshot_gives_only_the_payloads_it_still_holds(tmp_path):
    path = tmp_path / "db"
    _fill(path)
    old = (path / "view" / SNAPSHOT_NAME).read_bytes()
    with Engine(path, CONFIG) as engine:  # later changes to old items, and new items
        engine.correct_rewards("per", [1, 2], [-1.0, -2.0])
        engine.update_priorities("per", [3], [0.25])
        engine.evict("per", [6], reason="manual")
        engine.append("per", batch([70, 71]), lineage={"episode_id": 4})
        engine.append("img", {"x": np.full((2, 2, 3, 4), 9, np.uint8),
                              "reward": np.zeros(2, np.float32)})
        engine.sample("fifo", 3, seed=4)
        engine.flush_samples()
        state = snapshot(engine)
    (path / "view" / SNAPSHOT_NAME).write_bytes(old)  # as if the process had been killed
    shutil.copytree(path, tmp_path / "scan", ignore=shutil.ignore_patterns("LOCK"))
    (tmp_path / "scan" / "view" / SNAPSHOT_NAME).unlink()
    with Engine(path, CONFIG) as engine, Engine(tmp_path / "scan", CONFIG) as scanned:
        assert engine.loaded_from == "scan+snapshot" and scanned.loaded_from == "scan"
        assert snapshot(engine) == snapshot(scanned) == state
        assert sample_summary(engine, "per", seed=3) == sample_summary(scanned, "per", seed=3)


def test_read_snapshot_names_why_it_is_not_used(tmp_path):
    path = tmp_path / "db"
    _fill(path)
    with Engine(path, CONFIG) as engine:
        key = engine.view.snapshot_key()
        configs = {rec.index: rec.config for rec in engine.view.tables()}
    states, why = read_snapshot(path / "view", key, configs)
    assert states is not None and why == ""
    assert states[0].ids.tolist() == sorted(set(range(1, 13)) - {4, 5})
    configs[0] = TableConfig("per", SIG, 51)
    assert "other tables" in read_snapshot(path / "view", key, configs)[1]
    (path / "view" / SNAPSHOT_NAME).unlink()
    assert "no snapshot" in read_snapshot(path / "view", key, configs)[1]


def test_gathered_columns_are_written_piece_by_piece_as_the_gather(tmp_path):
    src = np.arange(40 * 6, dtype=np.float32).reshape(40, 6)
    idx = np.array([5, 1, 39, 0, 7])
    g = Gathered(src, idx)
    assert g.shape == (5, 6) and g.nbytes == 5 * 24
    assert np.array_equal(np.concatenate(list(g.pieces())), src[idx])
    state = TableState(ids=np.arange(1, 6, dtype=np.uint64), slots=idx, priorities=np.ones(5),
                       lineage={}, columns={"x": g})
    assert [n for n, _ in state.arrays()] == ["ids", "slots", "priorities", "field.x"]
