"""A job's scan in a child process (`EngineTarget(scan="process")`, the default) against the scan
in the engine's process (``scan="thread"``): the same plan, the same events; failures in the
child surface in the parent before any eviction."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pytest
from _jobs_helpers import (  # buffer_dir, engine: fixtures
    HOUR, NOW, buffer_dir, engine, events_after, job_file, open_engine,
)
from _polling import wait_until

from replaybuf.cli import main
from replaybuf.engine import Engine
from replaybuf.errors import InvalidArgumentError, ViewDamagedError
from replaybuf.jobs import EngineTarget, Plan, ScanProcessError, parse_job, run_job
from replaybuf.jobs.cli import EXIT_RETRAIN
from replaybuf.jobs.jobfile import JobSpec, tomllib
from replaybuf.jobs.scan_process import plan_in_process
from replaybuf.table_config import SelectorConfig, TableConfig
from replaybuf.v1 import events_pb2

#: Every policy, and drift on the reward and the obs features (payload features in the child).
ALL_POLICIES = """
[[evict]]
policy = "max_age"
max_age = "7d"
[[evict]]
policy = "model_version"
keep_newest = 3
[[evict]]
policy = "times_sampled"
at_least = 3
[[evict]]
policy = "low_priority"
below = 0.01
for = "45m"
[[evict]]
policy = "invalid_data"
reward_range = [-10, 10]
[[evict]]
policy = "duplicates"
[[evict]]
policy = "max_per_episode"
max_items = 2
[[evict]]
policy = "max_per_model_version"
max_items = 300
[drift]
features = ["reward", "obs"]
min_items = 2
"""


def _spec(body: str = ALL_POLICIES, job_id: str = "hygiene", table: str = "replay") -> JobSpec:
    return parse_job(tomllib.loads(
        f'[job]\nid = "{job_id}"\ntable = "{table}"\nnow = {NOW}\n{body}'))


def _plan_key(plan: Plan) -> tuple[Any, ...]:
    """Everything a plan decided (not how it was scanned: `Plan.scan`)."""

    return (plan.job_id, plan.table, plan.at_lsn, plan.now_ms, plan.items, plan.kind,
            [(e.policy, e.reason, e.detail, e.ids.dtype.str, e.ids.tolist())
             for e in plan.evictions],
            None if plan.drift is None else plan.drift.to_json(), plan.report())


def _comparable(events: list[tuple[str, Any]]) -> list[tuple[str, bytes]]:
    out = []
    for kind, body in events:
        if kind == "job_completed":
            body = events_pb2.JobCompleted.FromString(body.SerializeToString())
            body.duration_s = 0.0  # wall time of the run
        out.append((kind, body.SerializeToString(deterministic=True)))
    return out


def _children() -> list[int]:
    """Pids of this process's live children (from /proc; no psutil here)."""

    me, out = os.getpid(), []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat_line = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat_line[stat_line.rindex(")") + 2 :].split()
            if int(fields[1]) == me and fields[0] != "Z":
                out.append(int(d.name))
    return out


def _python_that_dies(tmp_path: Path) -> Path:
    """An "interpreter" for `sys.executable` that kills itself at once (SIGKILL)."""

    dies = tmp_path / "python-that-dies"
    dies.write_text("#!/bin/sh\nkill -KILL $$\n")
    dies.chmod(dies.stat().st_mode | stat.S_IXUSR)
    return dies


def test_process_and_thread_scans_plan_the_same_and_log_the_same_events(
        buffer_dir: Path, tmp_path: Path) -> None:
    spec = _spec()
    runs = {}
    for scan in ("thread", "process"):
        shutil.copytree(buffer_dir, tmp_path / scan)
        with open_engine(tmp_path / scan) as engine:
            base = engine.applied_lsn
            target = EngineTarget(engine, scan=scan)
            dry = run_job(spec, target, dry_run=True)
            assert dry.plan is not None and dry.plan.scan["mode"] == scan
            assert engine.applied_lsn == base  # a dry run logs nothing
            done = run_job(spec, target)
            assert done.status == "done" and done.plan is not None
            assert _plan_key(done.plan) == _plan_key(dry.plan)
            runs[scan] = (done, events_after(engine.log, base), base)
    (thread, t_events, t_base), (process, p_events, p_base) = runs["thread"], runs["process"]
    assert t_base == p_base == thread.plan.at_lsn == process.plan.at_lsn
    assert _plan_key(process.plan) == _plan_key(thread.plan)
    assert process.evicted_by_reason == thread.evicted_by_reason
    assert sum(thread.evicted_by_reason.values()) > 0
    assert _comparable(p_events) == _comparable(t_events)
    assert process.plan.scan["pid"] != os.getpid() and process.plan.scan["scan_s"] >= 0
    assert process.plan.scan["pid"] not in _children()  # reaped


def _random_buffer(engine: Engine, seed: int) -> None:
    """Two tables appended in turns (so the scan's chunks mix them), over several scan chunks
    (`CHUNK_ITEMS`); random priority updates, samples, reward corrections, NaN/inf payloads
    and evictions, some hot metadata folded and some still pending in ``draws``."""

    rng = np.random.default_rng(seed)
    sig = {"obs": (np.float32, (3,)), "reward": np.float32}
    for name in ("replay", "other"):
        engine.create_table(TableConfig(name, sig, capacity=100_000,
                                        sampler=SelectorConfig("uniform")))
    engine.view.fold_min = 4_000  # fold some of the draws; the last ones stay pending
    ids: dict[str, list[int]] = {"replay": [], "other": []}
    for k in range(8):
        for name in ("replay", "other"):
            n = int(rng.integers(2_000, 4_000))
            obs = rng.standard_normal((n, 3), dtype=np.float32)
            obs[rng.random(n) < 0.01, 1] = np.inf
            reward = rng.normal(k, 3, n).astype(np.float32)
            reward[rng.random(n) < 0.01] = np.nan
            res = engine.append(name, {"obs": obs, "reward": reward},
                                priorities=rng.random(n) * rng.choice([1, 1e-3], n), lineage={
                "episode_id": rng.integers(0, 400, n), "step": np.arange(n),
                "model_version": np.full(n, k // 2),
                "timestamp_ms": NOW - rng.integers(0, 10 * 24, n) * HOUR,
                "request_id": [f"r{int(x)}" for x in rng.integers(0, 5_000, n)]})
            ids[name].extend(int(i) for i in res.item_ids)
        for name in ("replay", "other"):
            have = np.asarray(ids[name])
            pick = rng.choice(have, 500, replace=False)
            engine.update_priorities(name, pick, rng.random(500) * 0.02)
            engine.correct_rewards(name, pick[:50], rng.normal(0, 20, 50), source="model")
            for s in range(3):
                engine.sample(name, 256, seed=seed * 100 + k * 10 + s)
            gone = rng.choice(have, 100, replace=False)
            engine.evict(name, gone, reason="manual")
            ids[name] = [i for i in ids[name] if i not in set(gone.tolist())]
    engine.flush_samples()


@pytest.mark.parametrize("seed", [1, 2])
def test_process_scan_equals_thread_scan_on_a_random_multi_chunk_buffer(
        tmp_path: Path, seed: int) -> None:
    spec = _spec(ALL_POLICIES + "bins = 5\n")
    with open_engine(tmp_path / "data") as engine:
        _random_buffer(engine, seed)
        assert engine.describe_table("replay").size > 16_384  # more than one scan chunk
        thread = EngineTarget(engine, scan="thread").plan(spec, job_id="j", now_ms=NOW)
        process = EngineTarget(engine, scan="process").plan(spec, job_id="j", now_ms=NOW)
    assert _plan_key(process) == _plan_key(thread)
    assert sum(e.ids.size for e in thread.evictions) > 1_000
    assert thread.drift is not None and thread.drift.to_json()


def test_the_plan_is_as_of_the_lsn_the_scan_process_saw(engine: Engine) -> None:
    spec = _spec('[[evict]]\npolicy = "max_age"\nmax_age = "7d"')
    first = EngineTarget(engine).plan(spec, job_id="a", now_ms=NOW)
    engine.append("replay", {"obs": np.zeros((3, 2), np.float32),
                             "reward": np.zeros(3, np.float32)},
                  lineage={"timestamp_ms": NOW - 1000 * HOUR})
    second = EngineTarget(engine).plan(spec, job_id="b", now_ms=NOW)
    assert second.at_lsn == first.at_lsn + 1 == engine.applied_lsn
    assert second.items == first.items + 3
    assert second.evictions[0].ids.size == first.evictions[0].ids.size + 3


def test_a_replaybuf_error_in_the_scan_process_is_raised_as_the_same_class(
        buffer_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(buffer_dir, tmp_path / "data")
    view = tmp_path / "data" / "view"
    env = lmdb.open(str(view), max_dbs=64)
    with env.begin(write=True) as txn:  # item 3's metadata record cut short
        txn.put((3).to_bytes(8, "big"), b"\x01\x02\x03", db=env.open_db(b"item_meta", txn=txn))
    env.close()
    with pytest.raises(ViewDamagedError, match=r"item_meta holds a record of the wrong size "
                                               r"\(in the scan process \d+ of job 'j'\)"):
        plan_in_process(view, _spec(), job_id="j", now_ms=NOW)


def test_another_error_in_the_scan_process_is_raised_with_its_traceback(tmp_path: Path) -> None:
    with pytest.raises(ScanProcessError) as info:
        plan_in_process(tmp_path / "no-view", _spec(), job_id="j", now_ms=NOW)
    text = str(info.value)
    assert "in the scan process" in text and "Traceback" in text and "lmdb" in text


def test_a_scan_process_that_dies_at_start_fails_the_run_before_any_eviction(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dies = _python_that_dies(tmp_path)
    spec = _spec()
    before = engine.applied_lsn
    with monkeypatch.context() as mp:
        mp.setattr(sys, "executable", str(dies))
        with pytest.raises(ScanProcessError, match=r"was killed by signal 9 before sending its "
                                                   r"plan .*nothing was evicted"):
            run_job(spec, EngineTarget(engine))
    assert engine.applied_lsn == before and engine.get_job("hygiene") is None
    assert run_job(spec, EngineTarget(engine)).status == "done"  # the re-run does the work


def test_a_scan_process_killed_while_it_runs_fails_the_run_before_any_eviction(
        engine: Engine) -> None:
    before, outcome = engine.applied_lsn, {}
    spec = _spec()

    def run() -> None:
        try:
            outcome["result"] = run_job(spec, EngineTarget(engine))
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome["error"] = exc

    others = set(_children())
    thread = threading.Thread(target=run)
    thread.start()
    found: list[int] = []
    # The child takes hundreds of ms to import numpy and replaybuf: killed long before it sends.
    wait_until(lambda: bool(found.extend(set(_children()) - others) or found))
    os.kill(found[0], signal.SIGKILL)
    thread.join()
    assert isinstance(outcome.get("error"), ScanProcessError), outcome
    assert "killed by signal 9" in str(outcome["error"])
    assert engine.applied_lsn == before and engine.get_job("hygiene") is None
    assert found[0] not in _children()


def test_engine_target_rejects_unknown_scan_settings(engine: Engine) -> None:
    with pytest.raises(InvalidArgumentError, match=r"scan is 'fork'; use one of 'process', "
                                                   r"'thread'"):
        EngineTarget(engine, scan="fork")
    with pytest.raises(InvalidArgumentError, match="scan_nice is 20"):
        EngineTarget(engine, scan_nice=20)
    with pytest.raises(InvalidArgumentError, match="nice is -1"):
        plan_in_process(engine.view.path, _spec(), job_id="j", now_ms=NOW, nice=-1)


def test_cli_scan_thread_and_process_print_the_same_plan(
        buffer_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(buffer_dir, tmp_path / "data")
    jf = job_file(tmp_path / "job.toml", ALL_POLICIES)
    printed = []
    for scan in ("thread", "process"):
        assert main(["jobs", "run", str(jf), "--data-dir", str(tmp_path / "data"), "--dry-run",
                     "--json", "--quiet", "--scan", scan]) == EXIT_RETRAIN  # the obs drifted
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and "dry run: nothing was evicted" in printed[0]
    assert "RETRAIN RECOMMENDED" in printed[0]


def test_scheduled_runs_scan_in_a_child_and_a_dead_child_counts_as_a_failed_run(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from replaybuf.jobs.scheduler import JobScheduler, load_scheduled_jobs

    path = job_file(tmp_path / "dup.toml", '[[evict]]\npolicy = "duplicates"\n'
                    '[schedule]\nevery = "10m"\n', job_id="dedup")
    specs = load_scheduled_jobs([path])
    clock = [NOW / 1000]
    sched = JobScheduler(engine, specs, clock=lambda: clock[0])
    dies = _python_that_dies(tmp_path)
    before = engine.applied_lsn
    clock[0] += 600
    with monkeypatch.context() as mp:
        mp.setattr(sys, "executable", str(dies))
        assert sched.run_due() == []  # logged, counted, the schedule goes on
    assert sched.metrics("replay")["job_failures"] == 1 and engine.applied_lsn == before
    clock[0] += 600
    (result,) = sched.run_due()
    assert result.plan is not None and result.plan.scan["mode"] == "process"
    assert result.evicted_by_reason == {"EVICTION_REASON_DUPLICATE": 2}
    threaded = JobScheduler(engine, specs, clock=lambda: clock[0], scan="thread")
    clock[0] += 600
    (again,) = threaded.run_due()
    assert again.plan is not None and again.plan.scan["mode"] == "thread"
    assert again.evicted_by_reason == {}  # the duplicates are gone already
    with pytest.raises(InvalidArgumentError, match="scan is 'fork'"):
        JobScheduler(engine, specs, scan="fork")
