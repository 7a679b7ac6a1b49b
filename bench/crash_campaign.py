#!/usr/bin/env python
"""Long SIGKILL crash campaign for the file event log, with a progress bar and a summary.

Runs the same trials as ``tests/test_log_crash.py`` (see `tests/_crash_child.py` for the child
and the oracle), as many as you ask for: each trial starts a writer child in a fresh directory,
SIGKILLs it ``--rounds`` times at seeded random moments (a share of them inside segment rolls),
and checks the recovered log after each kill. Failed trials keep their directory and print the
seed that reproduces them.

Usage::

    .venv/bin/python bench/crash_campaign.py --trials 2000 --policy group
    .venv/bin/python bench/crash_campaign.py --trials 300 --policy all --json bench/out/crash.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _crash_child import CRASH_POINTS, run_trial  # noqa: E402

POLICIES = ("always", "group", "interval", "none")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=100, help="number of kills in total")
    p.add_argument("--policy", default="group",
                   help=f"fsync policy, a comma list, or 'all' ({', '.join(POLICIES)})")
    p.add_argument("--rounds", type=int, default=2, help="kills per log directory")
    p.add_argument("--writers", type=int, default=4, help="writer threads in the child")
    p.add_argument("--segment-bytes", type=int, default=256 << 10)
    p.add_argument("--max-acks", type=int, default=120,
                   help="a child is killed after a random 1..N acks")
    p.add_argument("--roll-crash-fraction", type=float, default=0.2,
                   help="share of trials killed inside a segment roll instead of at random")
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--dir", type=Path, default=REPO / "bench" / "out" / "crash")
    p.add_argument("--stop-on-failure", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="write the summary as JSON here")
    p.add_argument("--verbose", action="store_true",
                   help="show the log's recovery warnings (torn tails cut, segments removed)")
    a = p.parse_args(argv)
    if not a.verbose:  # recovery warns on every torn tail; they would break the progress bar
        logging.getLogger("replaybuf").setLevel(logging.ERROR)
    policies = list(POLICIES) if a.policy == "all" else [x.strip() for x in a.policy.split(",")]
    bad = [x for x in policies if x not in POLICIES]
    if bad:
        p.error(f"unknown policy {bad}; choose from {POLICIES} or 'all'")
    n_trials = max(1, -(-a.trials // a.rounds))
    run_dir = a.dir / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{a.seed}"
    run_dir.mkdir(parents=True, exist_ok=True)

    totals = {"kills": 0, "acks": 0, "records": 0, "in_flight_found": 0,
              "in_flight_below_last_ack": 0, "retries_checked": 0, "crash_points_fired": 0,
              "dropped_segments": 0, "torn_tails": 0}
    per_policy = {pol: {"trials": 0, "kills": 0, "failures": 0} for pol in policies}
    failures: list[dict[str, object]] = []
    t0 = time.perf_counter()
    bar = tqdm(range(n_trials), unit="trial", dynamic_ncols=True)
    for i in bar:
        rng = random.Random(f"{a.seed}/{i}")
        policy = policies[i % len(policies)]
        seed = a.seed * 1_000_003 + i
        kwargs: dict[str, object] = {}
        if rng.random() < a.roll_crash_fraction:
            point = rng.choice(CRASH_POINTS)
            kwargs = {"crash_point": point, "crash_after": rng.randint(1, 5 if point != "torn-write" else 40),
                      "drop_unsynced_segment": point == "dir-fsync"
                      and policy in ("always", "group") and rng.random() < 0.5}
        directory = run_dir / f"t{i:06d}-{policy}"
        per_policy[policy]["trials"] += 1
        try:
            rep = run_trial(directory, seed=seed, policy=policy, rounds=a.rounds,
                            writers=a.writers, segment_bytes=a.segment_bytes,
                            max_acks=a.max_acks, **kwargs)  # type: ignore[arg-type]
        except Exception as e:  # noqa: BLE001 - every failure is reported, CampaignFailure or not
            per_policy[policy]["failures"] += 1
            failures.append({"trial": i, "seed": seed, "policy": policy, "dir": str(directory),
                             "options": kwargs, "error": f"{type(e).__name__}: {e}"})
            tqdm.write(f"FAIL trial {i} seed={seed} policy={policy} {kwargs}: {e}")
            if a.stop_on_failure:
                break
            continue
        per_policy[policy]["kills"] += rep.kills
        totals["kills"] += rep.kills
        totals["acks"] += rep.acks
        totals["records"] += rep.records
        totals["in_flight_found"] += rep.in_flight_found
        totals["in_flight_below_last_ack"] += rep.in_flight_below_last_ack
        totals["retries_checked"] += rep.retries_checked
        totals["crash_points_fired"] += len(rep.crash_points_fired)
        totals["dropped_segments"] += len(rep.dropped_segments)
        totals["torn_tails"] += rep.torn_tails
        shutil.rmtree(directory, ignore_errors=True)
        for f in directory.parent.glob(f"{directory.name}.child*.stderr"):
            f.unlink()
        bar.set_postfix(kills=totals["kills"], fail=len(failures))
    bar.close()
    elapsed = time.perf_counter() - t0

    print(f"\nCrash campaign: seed {a.seed}, {n_trials} trials x {a.rounds} kills, policies "
          f"{','.join(policies)}, {a.writers} writers, segments {a.segment_bytes} B, "
          f"{elapsed:.1f} s")
    print("| policy | trials | kills | failures |\n|---|---:|---:|---:|")
    for pol, c in per_policy.items():
        print(f"| {pol} | {c['trials']} | {c['kills']} | {c['failures']} |")
    print("\n" + ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in totals.items()))
    if failures:
        print(f"\n{len(failures)} FAILED trial(s); directories kept under {run_dir}:")
        for f in failures:
            print(f"  trial {f['trial']} seed={f['seed']} policy={f['policy']} {f['options']}\n"
                  f"    {str(f['error'])[:500]}")
    else:
        print("\nall trials passed")
        try:
            run_dir.rmdir()
        except OSError:
            pass
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({
            "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
            "machine": {"nproc": os.cpu_count(), "kernel": platform.release()},
            "elapsed_s": elapsed, "per_policy": per_policy, "totals": totals,
            "failures": failures}, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
