"""Micro benchmark of in-process W2 sampling (issue 4): µs per sample of 256, wall and process
CPU (recorder thread included, flush at the end). Usage:
    .venv/bin/python bench/sample_micro.py [--items 200000] [--samples 2000] [--fsync group]
"""
import argparse, gc, shutil, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from replaybuf.engine import Engine, EngineConfig  # noqa: E402
from replaybuf.file_log import FileLogConfig  # noqa: E402
from replaybuf.table_config import SelectorConfig, TableConfig  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--items", type=int, default=200_000)
p.add_argument("--samples", type=int, default=2000)
p.add_argument("--fsync", default="group")
p.add_argument("--view-sync", action="store_true", help="also fsync every view commit (default: the engine's default, off)")
p.add_argument("--dir", default=str(Path(__file__).parent / "out" / "sample-micro"))
p.add_argument("--reps", type=int, default=3)
a = p.parse_args()
fields = {"obs": (np.float32, (17,)), "action": (np.float32, (6,)), "reward": (np.float32, ()),
          "next_obs": (np.float32, (17,)), "done": (np.bool_, ())}
shutil.rmtree(a.dir, ignore_errors=True)
rng = np.random.default_rng(0)
eng = Engine(a.dir, EngineConfig(log=FileLogConfig(fsync=a.fsync), map_size=2**36,
                                 view_sync=a.view_sync))
eng.create_table(TableConfig("w2", fields, capacity=a.items,
                             sampler=SelectorConfig("prioritized", alpha=0.6)))
B = 2048
for k in range(a.items // B):
    b = {"obs": rng.standard_normal((B, 17), np.float32), "action": rng.standard_normal((B, 6), np.float32),
         "reward": rng.standard_normal(B, np.float32), "next_obs": rng.standard_normal((B, 17), np.float32),
         "done": rng.random(B) < 0.01}
    eng.append("w2", b, priorities=rng.random(B) + 0.01,
               lineage={"episode_id": k, "step": np.arange(B),
                        "request_id": [f"req-{k}-{i}" for i in range(B)], "source": "actor-0"})
for _ in range(50):
    eng.sample("w2", 256, beta=0.4)
eng.flush_samples()
for rep in range(a.reps):
    gc.collect(); gc.disable()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(a.samples):
        eng.sample("w2", 256, beta=0.4)
    t1, c1 = time.perf_counter(), time.process_time()
    eng.flush_samples()
    t2, c2 = time.perf_counter(), time.process_time()
    gc.enable()
    n = a.samples
    print(f"rep {rep}: sample loop {1e6*(t1-t0)/n:.0f} us/sample wall; incl. flush "
          f"{1e6*(t2-t0)/n:.0f} us wall, {1e6*(c2-c0)/n:.0f} us CPU/sample "
          f"=> {256*n/(t2-t0)/1e6:.2f}M transitions/s")
eng.close()
shutil.rmtree(a.dir, ignore_errors=True)
