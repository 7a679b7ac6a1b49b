"""Hygiene jobs: policies (table-driven), runs offline and online, idempotence, dry runs."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _jobs_helpers import (  # buffer_dir, engine: fixtures
    HOUR, NOW, SIG, buffer_dir, engine, event_clock, events_after, job_file,
    open_engine,
)

from replaybuf.cli import main
from replaybuf.engine import Engine
from replaybuf.errors import (
    AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, TableNotFoundError,
)
from replaybuf.events import decode_event
from replaybuf.jobs import (
    ClientTarget, EngineTarget, from_events, from_view, load_job, parse_job, plan_job, run_job,
)
from replaybuf.jobs.jobfile import JobSpec, parse_duration_ms
from replaybuf.table_config import TableConfig
from replaybuf.v1 import events_pb2
from replaybuf.view import FLAG_EVICTED


@dataclass(frozen=True)
class Case:
    """A job file's [[evict]] tables -> the exact items evicted, with their reasons."""

    name: str
    policies: str
    expected: dict[int, str]


CASES = [
    Case("max_age", 'policy = "max_age"\nmax_age = "7d"', {1: "AGE"}),
    Case("model_version_keep_newest", 'policy = "model_version"\nkeep_newest = 2',
         {1: "MODEL_VERSION", 2: "MODEL_VERSION", 3: "MODEL_VERSION"}),
    Case("model_version_below", 'policy = "model_version"\nbelow = 2',
         {1: "MODEL_VERSION", 2: "MODEL_VERSION"}),
    Case("times_sampled", 'policy = "times_sampled"\nat_least = 3',
         {1: "TIMES_SAMPLED", 2: "TIMES_SAMPLED"}),
    # Priorities last set 2 h ago, item 2's 0.5 h ago (see build_buffer).
    Case("low_priority", 'policy = "low_priority"\nbelow = 0.01\nfor = "45m"',
         {7: "LOW_PRIORITY", 10: "LOW_PRIORITY"}),
    Case("low_priority_counts_from_the_last_priority_update",
         'policy = "low_priority"\nbelow = 0.01\nfor = "20m"',
         {2: "LOW_PRIORITY", 7: "LOW_PRIORITY", 10: "LOW_PRIORITY"}),
    Case("invalid_data_with_reward_range",
         'policy = "invalid_data"\nreward_range = [-10, 10]',
         {5: "INVALID_DATA", 6: "INVALID_DATA", 8: "INVALID_DATA"}),
    Case("invalid_data", 'policy = "invalid_data"', {5: "INVALID_DATA", 8: "INVALID_DATA"}),
    Case("duplicates", 'policy = "duplicates"', {3: "DUPLICATE", 10: "DUPLICATE"}),
    Case("max_per_episode", 'policy = "max_per_episode"\nmax_items = 2',
         {1: "EPISODE_LIMIT", 4: "EPISODE_LIMIT", 5: "EPISODE_LIMIT", 6: "EPISODE_LIMIT"}),
    Case("max_per_model_version", 'policy = "max_per_model_version"\nmax_items = 1',
         {i: "MODEL_VERSION_LIMIT" for i in (1, 4, 5, 6, 7)}),
    Case("first_policy_in_file_order_names_the_reason",
         'policy = "max_age"\nmax_age = "7d"\n[[evict]]\npolicy = "times_sampled"\n'
         'at_least = 3\n[[evict]]\npolicy = "duplicates"',
         {1: "AGE", 2: "TIMES_SAMPLED", 3: "DUPLICATE", 10: "DUPLICATE"}),
    Case("reversed_order_gives_the_other_reason",
         'policy = "times_sampled"\nat_least = 3\n[[evict]]\npolicy = "max_age"\nmax_age = "7d"',
         {1: "TIMES_SAMPLED", 2: "TIMES_SAMPLED"}),
]


def _spec(policies: str, job_id: str = "hygiene") -> JobSpec:
    from replaybuf.jobs.jobfile import tomllib

    return parse_job(tomllib.loads(
        f'[job]\nid = "{job_id}"\ntable = "replay"\nnow = {NOW}\n[[evict]]\n{policies}'))


def _evicted(engine: Engine, after: int) -> dict[int, str]:
    out = {}
    for kind, body in events_after(engine.log, after):
        if kind == "items_evicted":
            for i in body.item_ids:
                out[i] = events_pb2.EvictionReason.Name(body.reason)[len("EVICTION_REASON_"):]
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_policy_evicts_exactly_the_expected_items(engine: Engine, case: Case) -> None:
    spec = _spec(case.policies, job_id=case.name)
    snap = from_view(engine.view, "replay", request_ids=True, payload=True)
    plan = plan_job(spec, snap, job_id=case.name, now_ms=NOW)
    planned = {int(i): ev.reason_name[len("EVICTION_REASON_"):]
               for ev in plan.evictions for i in ev.ids}
    assert planned == case.expected

    before = engine.applied_lsn
    result = run_job(spec, EngineTarget(engine))
    assert result.status == "done"
    assert _evicted(engine, before) == case.expected
    for kind, body in events_after(engine.log, before):
        if kind == "items_evicted":
            assert body.job_id == case.name and body.detail
    job = engine.get_job(case.name)
    assert job is not None and job.at_lsn == before
    assert sum(job.evicted_by_reason.values()) == len(case.expected)


@pytest.fixture(scope="module")
def priority_history_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Table "replay", items 1-9 appended at NOW - 4 h, then priority updates at known event
    times (threshold 0.01 in the cases below):

    ====  ========  ==================================================  ========  ===========
    id    appended  updates (hours before NOW: new priority)            now       unchanged h
    ====  ========  ==================================================  ========  ===========
    1     0.001     (none)                                              0.001     4
    2     1         2 h: 0.001                                          0.001     2
    3     0.001     0.5 h: 0.002 (stays below: the clock restarts)      0.002     0.5
    4     1         2 h: 0.001, 1 h: 1 (back above)                     1         1
    5     0.001     0.5 h: 0.001 (same value: the clock restarts too)   0.001     0.5
    6     0.5       (none)                                              0.5       4
    7     0.01      (none; not below: the threshold is strict)          0.01      4
    8     1         1 h: 0.001 (exactly the period of the "1h" cases)   0.001     1
    9     1         after NOW (+1 h): 0.001                             0.001     -1
    ====  ========  ==================================================  ========  ===========
    """

    path = tmp_path_factory.mktemp("priority-history")
    with open_engine(path) as engine, event_clock(NOW - 4 * HOUR) as clock:
        engine.create_table(TableConfig("replay", SIG, capacity=100))
        prios = np.array([0.001, 1, 0.001, 1, 0.001, 0.5, 0.01, 1, 1])
        n = prios.size
        engine.append("replay", {"obs": np.zeros((n, 2), np.float32),
                                 "reward": np.zeros(n, np.float32)},
                      priorities=prios, lineage={"timestamp_ms": NOW - 4 * HOUR})
        for hours_before, ids, values in ((2, [2, 4], [0.001, 0.001]), (1, [4, 8], [1, 0.001]),
                                          (0.5, [3, 5], [0.002, 0.001]), (-1, [9], [0.001])):
            clock.set(NOW - int(hours_before * HOUR))
            engine.update_priorities("replay", ids, values)
    return path


LOW_PRIORITY_CASES = [
    # (below, for, items evicted)
    (0.01, "0s", {1, 2, 3, 5, 8}),
    (0.01, "30m", {1, 2, 3, 5, 8}),
    (0.01, "31m", {1, 2, 8}),
    (0.01, "1h", {1, 2, 8}),  # at least the period: item 8, unchanged for exactly 1 h, is in
    (0.01, "1h1ms", {1, 2}),
    (0.01, "2h", {1, 2}),
    (0.01, "3h", {1}),
    (0.01, "4h1ms", set()),
    (0.002, "0s", {1, 2, 5, 8}),  # item 3 (0.002) is not below 0.002
    (1.0, "3h", {1, 6, 7}),
]


@pytest.mark.parametrize("below, period, expected", LOW_PRIORITY_CASES,
                         ids=[f"below_{b}_for_{p}" for b, p, _ in LOW_PRIORITY_CASES])
def test_low_priority_evicts_items_whose_priority_stayed_low_for_the_period(
        priority_history_dir: Path, tmp_path: Path, below: float, period: str,
        expected: set[int]) -> None:
    shutil.copytree(priority_history_dir, tmp_path / "data")
    spec = _spec(f'policy = "low_priority"\nbelow = {below}\nfor = "{period}"')
    with open_engine(tmp_path / "data") as engine:
        replayed = from_events(((r.lsn, decode_event(r.payload)) for r in engine.log.read(1)),
                               "replay")
        viewed = from_view(engine.view, "replay")
        np.testing.assert_array_equal(viewed.priority_ms, replayed.priority_ms)
        before = engine.applied_lsn
        result = run_job(spec, EngineTarget(engine))
        assert result.status == "done"
        assert _evicted(engine, before) == {i: "LOW_PRIORITY" for i in expected}


def test_snapshots_carry_the_time_of_each_items_last_priority_change(
        priority_history_dir: Path) -> None:
    with open_engine(priority_history_dir) as engine:
        snap = from_view(engine.view, "replay")
    hours = (NOW - snap.priority_ms) / HOUR
    np.testing.assert_array_equal(hours, [4, 2, 0.5, 1, 0.5, 4, 4, 1, -1])
    np.testing.assert_array_equal(snap.timestamp_ms, NOW - 4 * HOUR)  # item time: unchanged


def test_evicted_items_leave_sampling_and_the_tree_at_once_but_stay_in_the_log(
        engine: Engine) -> None:
    t = engine.table("replay")
    mass = t.total_priority()
    before = engine.applied_lsn
    run_job(_spec('policy = "max_age"\nmax_age = "7d"\n[[evict]]\npolicy = "duplicates"'),
            EngineTarget(engine))
    gone = np.array([1, 3, 10], np.uint64)
    assert not t.present(gone).any()
    assert t.total_priority() < mass
    for seed in range(20):
        drawn = engine.sample("replay", 3, seed=seed).info.item_ids
        assert not np.isin(drawn, gone).any()
    records = engine.view.records(gone)
    assert all(int(records[int(i)]["flags"]) & FLAG_EVICTED for i in gone)
    assert sorted(_evicted(engine, before)) == [1, 3, 10]
    appended = [decode_event(r.payload) for r in engine.log.read(1, before)]
    assert any(1 in e.items_appended.item_ids for e in appended)
    history = engine.get_lineage(1)  # lineage still tells why the item left
    evictions = [e for _, e in history.entries if e.WhichOneof("body") == "items_evicted"]
    assert [(e.items_evicted.job_id, e.items_evicted.reason) for e in evictions] == [
        ("hygiene", events_pb2.EVICTION_REASON_AGE)]


def test_dry_run_evicts_and_records_nothing(engine: Engine) -> None:
    before = engine.applied_lsn
    result = run_job(_spec('policy = "duplicates"'), EngineTarget(engine), dry_run=True)
    assert result.status == "dry-run"
    assert result.evicted_by_reason == {"EVICTION_REASON_DUPLICATE": 2}
    assert engine.applied_lsn == before
    assert engine.get_job("hygiene") is None


def test_second_run_of_the_same_job_id_changes_nothing(engine: Engine) -> None:
    spec = _spec('policy = "times_sampled"\nat_least = 1')
    first = run_job(spec, EngineTarget(engine))
    engine.sample("replay", 2, seed=9)
    engine.flush_samples()  # new draws: a fresh run would evict again
    lsn = engine.applied_lsn
    again = run_job(spec, EngineTarget(engine))
    assert again.status == "already-ran" and again.at_lsn == first.plan.at_lsn
    assert engine.applied_lsn == lsn


def test_record_job_refuses_a_recorded_id_and_survives_a_rebuild(tmp_path: Path,
                                                                 buffer_dir: Path) -> None:
    shutil.copytree(buffer_dir, tmp_path / "data")
    job = events_pb2.JobCompleted(job_id="j1", table="replay", at_lsn=3, kind="evict")
    with open_engine(tmp_path / "data") as engine:
        engine.record_job(job)
        with pytest.raises(AlreadyExistsError, match="already recorded"):
            engine.record_job(job)
        with pytest.raises(TableNotFoundError):
            engine.record_job(events_pb2.JobCompleted(job_id="j2", table="nope"))
    shutil.rmtree(tmp_path / "data" / "view")
    with open_engine(tmp_path / "data") as engine:
        assert engine.rebuild_reason is not None
        assert engine.get_job("j1") == job
        assert engine.get_job("j2") is None


def test_online_and_offline_runs_log_the_same_events(buffer_dir: Path, tmp_path: Path,
                                                     make_replay_server: Any) -> None:
    from replaybuf_client import ReplayClient

    spec = _spec('policy = "max_age"\nmax_age = "7d"\n[[evict]]\npolicy = "invalid_data"\n'
                 'reward_range = [-10, 10]\n[[evict]]\npolicy = "low_priority"\n'
                 'below = 0.01\nfor = "45m"\n[[evict]]\npolicy = "duplicates"\n[[evict]]\n'
                 'policy = "max_per_episode"\nmax_items = 2')
    shutil.copytree(buffer_dir, tmp_path / "offline")
    shutil.copytree(buffer_dir, tmp_path / "online")
    with open_engine(tmp_path / "offline") as engine:
        base = engine.applied_lsn
        offline = run_job(spec, EngineTarget(engine))
        off_events = events_after(engine.log, base)
    server = make_replay_server(data_dir=tmp_path / "online")
    with ReplayClient(server.address) as client:
        online = run_job(spec, ClientTarget(client))
        assert run_job(spec, ClientTarget(client)).status == "already-ran"
    on_events = events_after(server.engine.log, base)
    assert offline.plan.at_lsn == online.plan.at_lsn == base

    def comparable(events: list[tuple[str, Any]]) -> list[tuple[Any, ...]]:
        out = []
        for kind, body in events:
            if kind == "job_completed":
                out.append((kind, body.job_id, body.table, body.at_lsn, body.kind,
                            dict(body.evicted_by_reason)))
            else:
                out.append((kind, body.SerializeToString(deterministic=True)))
        return out

    assert comparable(on_events) == comparable(off_events)
    assert [k for k, _ in off_events].count("items_evicted") == 5
    assert offline.evicted_by_reason["EVICTION_REASON_LOW_PRIORITY"] == 2  # items 7 and 10


def test_view_and_log_replay_give_the_same_snapshot(engine: Engine) -> None:
    kw = dict(request_ids=True, payload=True, features=("obs",))
    a = from_view(engine.view, "replay", **kw)
    b = from_events(((r.lsn, decode_event(r.payload)) for r in engine.log.read(1)), "replay",
                    **kw)
    assert a.lsn == b.lsn == engine.applied_lsn
    for name, col in a.columns().items():
        np.testing.assert_array_equal(col, b.columns()[name], err_msg=name)
    assert a.request_id.tolist() == b.request_id.tolist()
    np.testing.assert_array_equal(a.nonfinite, b.nonfinite)
    np.testing.assert_array_equal(a.features["obs"], b.features["obs"])


def test_cli_runs_once_then_reports_already_ran(buffer_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(buffer_dir, tmp_path / "data")
    path = job_file(tmp_path / "job.toml", '[[evict]]\npolicy = "duplicates"\n')
    args = ["jobs", "run", str(path), "--data-dir", str(tmp_path / "data"), "--quiet"]
    assert main([*args, "--dry-run"]) == 0
    assert "dry run" in capsys.readouterr().out
    assert main(args) == 0
    assert "evicted 2 items" in capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "already ran at LSN" in out


def test_record_and_get_job_through_the_client(replay_server: Any) -> None:
    from replaybuf_client import ReplayClient

    with ReplayClient(replay_server.address) as client:
        client.create_table("t", {"reward": np.float32}, capacity=10)
        assert client.get_job("j") is None
        job = events_pb2.JobCompleted(job_id="j", table="t", kind="drift")
        retrain = events_pb2.RetrainRecommended(table="t", job_id="j", detail="x",
                                                statistics={"reward.ks": 0.5})
        first, last = client.record_job(job, retrain)
        assert last == first + 1
        assert client.get_job("j") == job
        with pytest.raises(AlreadyExistsError):
            client.record_job(job)


@pytest.mark.parametrize("doc, match", [
    ('[[evict]]\npolicy = "nope"', "use one of"),
    ('[[evict]]\npolicy = "max_age"', "max_age"),
    ('[[evict]]\npolicy = "max_age"\nmax_age = "7d"\nextra = 1', "unknown keys"),
    ('[[evict]]\npolicy = "model_version"', "keep_newest"),
    ('[schedule]\nevery = "soon"', "every"),
])
def test_bad_job_files_are_refused_with_the_reason(tmp_path: Path, doc: str, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        load_job(job_file(tmp_path / "bad.toml", doc))


def test_durations_parse() -> None:
    assert parse_duration_ms("1h30m", "x") == 5_400_000
    assert parse_duration_ms(90, "x") == 90_000
    assert parse_duration_ms("7d", "x") == 7 * 86_400_000


def test_scheduler_runs_due_jobs_with_timestamped_ids_and_reports_metrics(
        engine: Engine, tmp_path: Path) -> None:
    from replaybuf.jobs.scheduler import JobScheduler, load_scheduled_jobs

    path = job_file(tmp_path / "dup.toml", '[[evict]]\npolicy = "duplicates"\n'
                    '[schedule]\nevery = "10m"\n', job_id="dedup")
    clock = [NOW / 1000]
    sched = JobScheduler(engine, load_scheduled_jobs([tmp_path]), clock=lambda: clock[0])
    engine.add_table_metrics(sched.metrics)
    assert sched.run_due() == []
    clock[0] += 600
    (result,) = sched.run_due()
    assert result.job_id == "dedup@2027-01-15T08:10:00.000Z"
    assert result.evicted_by_reason == {"EVICTION_REASON_DUPLICATE": 2}
    assert engine.get_job(result.job_id) is not None
    metrics = engine.describe_table("replay").metrics
    assert metrics["job_runs"] == 1 and metrics["job_evicted_duplicate"] == 2
    assert metrics["job_last_run_timestamp_s"] == clock[0]
    assert sched.run_due() == []  # not due again for 10 minutes
    assert "job_runs" not in engine.describe_table("other").metrics


def test_scheduled_job_files_need_a_schedule(tmp_path: Path) -> None:
    from replaybuf.jobs.scheduler import load_scheduled_jobs

    with pytest.raises(InvalidArgumentError, match=r"\[schedule\]"):
        load_scheduled_jobs([job_file(tmp_path / "j.toml", '[[evict]]\npolicy = "duplicates"')])


def test_server_runs_scheduled_jobs_visible_in_describe_table_and_prometheus(
        buffer_dir: Path, tmp_path: Path, make_replay_server: Any) -> None:
    import time

    from prometheus_client import generate_latest

    from replaybuf_client import ReplayClient

    shutil.copytree(buffer_dir, tmp_path / "data")
    path = job_file(tmp_path / "dup.toml", '[[evict]]\npolicy = "duplicates"\n'
                    '[schedule]\nevery = "0.2s"\n', job_id="dedup")
    server = make_replay_server(data_dir=tmp_path / "data", jobs=(str(path),))
    with ReplayClient(server.address) as client:
        deadline = time.monotonic() + 30
        while client.describe_table("replay").metrics.get("job_runs", 0) < 2:
            assert time.monotonic() < deadline, "scheduled job never ran twice"
            time.sleep(0.05)
        metrics = client.describe_table("replay").metrics
    assert metrics["job_evicted_duplicate"] == 2  # the second run found nothing left
    text = generate_latest(server.server.metrics.registry).decode()
    assert 'replaybuf_table_job_runs{table="replay"}' in text


def test_online_snapshots_from_export_and_from_the_log_match_the_view(
        buffer_dir: Path, tmp_path: Path, make_replay_server: Any) -> None:
    from replaybuf_client import ReplayClient

    shutil.copytree(buffer_dir, tmp_path / "data")
    server = make_replay_server(data_dir=tmp_path / "data")
    kw = dict(request_ids=True, payload=True, features=("obs",))
    want = from_view(server.engine.view, "replay", **kw)
    with ReplayClient(server.address) as client:
        target = ClientTarget(client)
        exported = target.snapshot("replay", append_lsn=False, priority_ms=False, **kw)
        replayed = target.snapshot("replay", append_lsn=False, priority_ms=True, **kw)
    assert exported.priority_ms is None  # not in the Export stream
    with pytest.raises(FailedPreconditionError, match="priority time"):
        _spec('policy = "low_priority"\nbelow = 0.01').policies[0].select(exported, NOW)
    for snap, skip in ((exported, {"append_lsn", "priority_ms"}), (replayed, set())):
        assert snap.lsn == want.lsn
        for name, col in want.columns().items():
            if name not in skip:
                np.testing.assert_array_equal(getattr(snap, name), col, err_msg=name)
        assert snap.request_id.tolist() == want.request_id.tolist()
        np.testing.assert_array_equal(snap.nonfinite, want.nonfinite)
        np.testing.assert_array_equal(snap.features["obs"], want.features["obs"])


def test_serve_takes_job_files(tmp_path: Path) -> None:
    from replaybuf.cli import build_parser
    from replaybuf_server.cli import config_from_args

    args = build_parser().parse_args(["serve", "--data-dir", str(tmp_path), "--jobs", "a.toml",
                                      "jobs/"])
    assert config_from_args(args).jobs == ("a.toml", "jobs/")


def test_cli_runs_a_job_on_a_server(buffer_dir: Path, tmp_path: Path, make_replay_server: Any,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(buffer_dir, tmp_path / "data")
    server = make_replay_server(data_dir=tmp_path / "data")
    path = job_file(tmp_path / "job.toml", '[[evict]]\npolicy = "max_age"\nmax_age = "7d"\n')
    args = ["jobs", "run", str(path), "--server", server.address, "--quiet"]
    assert main(args) == 0
    assert "evicted 1 items" in capsys.readouterr().out
    assert main(args) == 0
    assert "already ran at LSN" in capsys.readouterr().out
    assert not server.engine.table("replay").present(np.array([1], np.uint64)).any()
