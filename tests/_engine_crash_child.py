"""Child process of the engine SIGKILL test: appends (and samples, updates, evicts) until killed.

Usage: ``python _engine_crash_child.py DATA_DIR FSYNC SEED [sync|nosync]`` (the last: whether
view commits are fsynced, `EngineConfig.view_sync`; default nosync, the engine's default). It reports on stdout, one
``os.write`` per line:

    O <applied_lsn>                            the engine is open
    A <first_id> <last_id> <first_tag> <lsn>   an append was acknowledged (ids first..last
                                               carry tags first_tag, first_tag + 1, ...)
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np

from _engine_helpers import SIG, batch
from replaybuf.engine import Engine, EngineConfig
from replaybuf.file_log import FileLogConfig
from replaybuf.table_config import TableConfig


def main() -> None:
    data_dir, fsync, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    view_sync = len(sys.argv) > 4 and sys.argv[4] == "sync"
    rng = random.Random(seed)
    # A small initial map so that growth (abort, grow, retry) happens while being killed.
    config = EngineConfig(log=FileLogConfig(fsync=fsync), map_size=2**17,
                          view_sync=view_sync)
    engine = Engine(data_dir, config)
    engine.create_table(TableConfig("t", SIG, capacity=1_000_000), exist_ok=True)
    os.write(1, f"O {engine.applied_lsn}\n".encode())
    tag = seed * 10**9
    while True:
        n = rng.randint(1, 40)
        tags = np.arange(tag, tag + n)
        ack = engine.append("t", batch(tags), lineage={
            "episode_id": seed, "request_id": [f"r{t}" for t in tags.tolist()]})
        os.write(1, f"A {ack.item_ids[0]} {ack.item_ids[-1]} {tag} {ack.last_lsn}\n".encode())
        tag += n
        r = rng.random()
        if r < 0.3:
            s = engine.sample("t", 4)
            engine.update_priorities("t", s.info.item_ids, np.full(4, rng.random() + 0.1))
        elif r < 0.35:
            engine.correct_rewards("t", ack.item_ids[:1], [1.5])


if __name__ == "__main__":
    main()
