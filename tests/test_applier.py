"""The applier (`replaybuf.applier`) through real engines: a catch-up applies many events in
one view transaction, and must give what applying them one by one (live) gives."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from _engine_helpers import SIG, batch, snapshot
from replaybuf.engine import Engine, EngineConfig
from replaybuf.table_config import TableConfig

CONFIG = EngineConfig.for_tests()


def _pending(engine: Engine, table: str) -> list[tuple[int, str, str]]:
    return [(r.item_id, r.reason, r.author) for r in engine.list_pending_reviews(table)]


def test_rebuild_keeps_review_flags_of_items_appended_in_the_same_transaction(
        tmp_path: Path) -> None:
    path = tmp_path / "db"
    with Engine(path, CONFIG) as engine:
        engine.create_table(TableConfig("t", SIG, 8))
        engine.append("t", batch(np.arange(3)))
        engine.flag_for_review("t", [1, 3], reason="odd", author="me")
        live, state = _pending(engine, "t"), snapshot(engine)
    assert [i for i, _, _ in live] == [1, 3]
    shutil.rmtree(path / "view")
    # The whole log in one view transaction: the flags see the items appended before them.
    with Engine(path, replace(CONFIG, catch_up_events=1000)) as rebuilt:
        assert _pending(rebuilt, "t") == live
        assert snapshot(rebuilt) == state
