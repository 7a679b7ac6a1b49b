"""The engine's write pipeline (`replaybuf.write_pipeline`): appends released from the writer
lock before their fsync still behave like fully serialized ones, and frames that became durable
together are applied in one view transaction."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from replaybuf.engine import Engine, EngineConfig
from replaybuf.errors import FailedPreconditionError
from replaybuf.events import make_event
from replaybuf.file_log import FileLogConfig
from replaybuf.table_config import SelectorConfig, TableConfig
from replaybuf.v1 import events_pb2
from replaybuf.write_pipeline import InFlight, WritePipeline
from _engine_helpers import SIG, batch, snapshot


def _config() -> EngineConfig:
    # real fsyncs, so that appends do overlap in the pipeline
    return EngineConfig(log=FileLogConfig(fsync="group"), map_size=2**30, view_sync=False)


def _on_threads(fn, n: int, *, meanwhile=None) -> None:
    """fn(k) for k in range(n), each on its own thread, and ``meanwhile(stop)`` on one more
    thread until they end (then `stop` is set); the first error of any of them is raised."""

    errors: list[BaseException] = []
    stop = threading.Event()

    def guarded(target, *args) -> None:
        try:
            target(*args)
        except BaseException as exc:  # reported below
            errors.append(exc)

    side = threading.Thread(target=guarded, args=(meanwhile, stop)) if meanwhile else None
    ts = [threading.Thread(target=guarded, args=(fn, k)) for k in range(n)]
    for t in [*([side] if side else []), *ts]:
        t.start()
    for t in ts:
        t.join()
    stop.set()
    if side:
        side.join()
    assert not errors, errors[0]


def _events(engine: Engine) -> list[events_pb2.Event]:
    from replaybuf.events import decode_event

    return [decode_event(r.payload, lsn=r.lsn) for r in engine.log.read(1)]


@pytest.mark.parametrize("remover", ["fifo", "lowest_priority"])
def test_concurrent_appends_to_a_full_table_keep_serial_semantics(tmp_path, remover):
    capacity, threads, per_thread, n = 40, 6, 25, 3
    with Engine(tmp_path, _config()) as e:
        e.create_table(TableConfig("t", SIG, capacity=capacity,
                                   remover=SelectorConfig(remover)))
        acks: list = []
        lock = threading.Lock()

        def writer(k: int) -> None:
            for i in range(per_thread):
                tags = np.arange(n) + 1000 * k + 10 * i
                ack = e.append("t", batch(tags), priorities=np.full(n, 1.0 + (i % 3)))
                with lock:
                    acks.append(ack)

        _on_threads(writer, threads)
        live = snapshot(e)
        log_events = _events(e)

    # Ids: unique, contiguous, and in the order of their frames' LSNs.
    acks.sort(key=lambda a: a.first_lsn)
    ids = np.concatenate([a.item_ids for a in acks])
    assert ids.tolist() == list(range(1, threads * per_thread * n + 1))
    # Replaying the log serially (no pipeline) makes every choice the live engine made: the
    # events are the record, so the live state must equal the replayed one.
    present: list[int] = []
    prio: dict[int, float] = {}
    for ev in log_events:
        kind = ev.WhichOneof("body")
        if kind == "items_evicted":
            gone = set(ev.items_evicted.item_ids)
            assert gone <= set(present), "a victim was not present when its eviction applied"
            present = [i for i in present if i not in gone]
        elif kind == "items_appended":
            body = ev.items_appended
            present += list(body.item_ids)
            prio.update(zip(body.item_ids, body.priorities))
            assert len(present) <= capacity
            if remover == "fifo" and len(present) == capacity:
                assert present == sorted(present)  # FIFO: the oldest went first
    assert sorted(live["t"]["items"]) == sorted(present)
    if remover == "fifo":
        # a serial FIFO engine keeps exactly the newest `capacity` items
        assert sorted(present) == list(range(ids.size - capacity + 1, ids.size + 1))
    # The view written by the pipeline equals one rebuilt from the log.
    import shutil

    shutil.rmtree(tmp_path / "view")
    with Engine(tmp_path, _config()) as rebuilt:
        assert rebuilt.rebuild_reason is not None
        assert snapshot(rebuilt) == live


def test_other_changes_wait_for_appends_in_flight(tmp_path):
    """Priority updates, evictions and samples interleaved with concurrent appends: every
    change is applied after the frames logged before it, and the engine reopens equal."""

    with Engine(tmp_path, _config()) as e:
        e.create_table(TableConfig("t", SIG, capacity=60))

        def appender(k: int) -> None:
            for i in range(30):
                e.append("t", batch(np.arange(2) + 100 * k + 2 * i))

        def changer(stop: threading.Event) -> None:
            rng = np.random.default_rng(0)
            while not stop.is_set():
                ids = rng.integers(1, max(2, e.view.next_item_id), 4)
                e.update_priorities("t", ids, rng.random(4) + 0.1)
                e.evict("t", ids[:1])
                if e.describe_table("t").size:
                    e.sample("t", 2)

        _on_threads(appender, 4, meanwhile=changer)
        e.flush_samples()
        live = snapshot(e)
        assert e.describe_table("t").size <= 60
    with Engine(tmp_path, _config()) as again:
        assert snapshot(again) == live


def test_frames_durable_together_are_applied_in_one_view_transaction(tmp_path):
    """Three frames queued in order; while the first view write is held up, the other two
    callers become ready, and the next transaction applies both."""

    with Engine(tmp_path, _config()) as e:
        e.create_table(TableConfig("t", SIG, capacity=100))
        writes: list[list[int]] = []
        first_write = threading.Event()
        release = threading.Event()

        def write(records, columns):
            writes.append([lsn for lsn, _ in records])
            if len(writes) == 1:
                first_write.set()
                assert release.wait(10)
            return e._write_view(records, columns)

        pipe = WritePipeline(write, e._mirror, e._fail)
        entries = []
        with e._write_lock:
            for k in range(3):
                ev = make_event(priorities_updated=events_pb2.PrioritiesUpdated(table="t"))
                pending = e.log.begin_append([ev.SerializeToString()])
                entries.append(pipe.begin(InFlight(pending, [ev])))
        results: dict[int, tuple] = {}

        def finish(k: int) -> None:
            results[k] = pipe.finish(entries[k])

        t0 = threading.Thread(target=finish, args=(0,))
        t0.start()
        assert first_write.wait(10)
        rest = [threading.Thread(target=finish, args=(k,)) for k in (1, 2)]
        for t in rest:
            t.start()
        # both callers are ready (their frames are durable) before the first write ends
        deadline = threading.Event()
        for _ in range(1000):
            if all(en.ready for en in entries[1:]):
                break
            deadline.wait(0.01)
        assert all(en.ready for en in entries[1:])
        release.set()
        for t in [t0, *rest]:
            t.join(10)
        lsns = [en.pending.first_lsn for en in entries]
        assert writes == [[lsns[0]], [lsns[1], lsns[2]]]
        for k, en in enumerate(entries):
            ack, applied = results[k]
            assert ack.first_lsn == lsns[k] and [a.lsn for a in applied] == [lsns[k]]
        assert e.view.applied_lsn == lsns[2]
        assert not pipe.busy


def test_a_failed_view_write_fails_every_waiting_caller(tmp_path):
    with Engine(tmp_path, _config()) as e:
        e.create_table(TableConfig("t", SIG, capacity=100))
        failed: list[BaseException] = []

        def write(records, columns):
            raise OSError("disk gone")

        pipe = WritePipeline(write, e._mirror, failed.append)
        with e._write_lock:
            ev = make_event(priorities_updated=events_pb2.PrioritiesUpdated(table="t"))
            a = pipe.begin(InFlight(e.log.begin_append([ev.SerializeToString()]), [ev]))
            b = pipe.begin(InFlight(e.log.begin_append([ev.SerializeToString()]), [ev]))
        with pytest.raises(OSError, match="disk gone"):
            pipe.finish(a)
        assert a.done and isinstance(a.error, OSError)
        assert len(failed) == 1
        with pytest.raises(FailedPreconditionError, match="disk gone"):
            pipe.finish(b)  # queued behind the failed frame: never applied
        assert not b.done
        with pytest.raises(FailedPreconditionError, match="disk gone"):
            pipe.settle()


def test_inserts_are_counted_in_log_order_when_victims_come_from_frames_just_applied(tmp_path):
    """A frame's victims may be items of frames applied in the same view transaction: the
    rate limiter must count those inserts before the eviction's delete (it refuses a delete of
    more items than it counts, which would fail the engine)."""

    n = 64
    with Engine(tmp_path, _config()) as e:
        e.create_table(TableConfig("t", SIG, capacity=n))  # each append evicts the last

        def writer(k: int) -> None:
            for i in range(12):
                e.append("t", batch(np.arange(n) + 10_000 * k + 100 * i))

        _on_threads(writer, 4)
        info = e.describe_table("t")
        assert info.size == n
        rl = info.rate_limiter
        assert (rl.inserts, rl.deletes) == (4 * 12 * n, 4 * 12 * n - n)


def test_a_frame_applied_by_another_caller_has_its_reservation_committed_in_order(tmp_path):
    """The caller of a later frame applies the earlier one too: the earlier frame's limiter
    reservation is committed then, in LSN order, not when its own caller comes back."""

    with Engine(tmp_path, EngineConfig.for_tests()) as e:
        e.create_table(TableConfig("t", SIG, capacity=100))
        limiter = e.table("t").limiter
        pipe = WritePipeline(e._write_view, e._mirror, e._fail)
        committed_before: list[int] = []
        entries = []
        with e._write_lock:
            for k in range(2):
                res = limiter.reserve_insert(5)
                ev = make_event(priorities_updated=events_pb2.PrioritiesUpdated(table="t"))
                pending = e.log.begin_append([ev.SerializeToString()])
                entries.append(pipe.begin(InFlight(pending, [ev], reservation=res)))
        committed_before.append(limiter.stats().inserts)
        pipe.finish(entries[1])  # applies both frames
        assert entries[0].done and entries[0].reservation.done
        assert entries[1].reservation.done
        assert limiter.stats().inserts == committed_before[0] + 10
        ack, applied = pipe.finish(entries[0])  # its own caller: nothing left to do
        assert ack.first_lsn == entries[0].pending.first_lsn and not pipe.busy
